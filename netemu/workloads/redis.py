"""A small in-memory Redis for pods of the `redis` image when redis-server is not installed.

Enough for the counter app, `redis-cli` and `telnet redis 6379`: PING, ECHO, SET (EX, PX,
NX, XX, KEEPTTL, GET), GET, MGET, MSET, INCR, INCRBY, DECR, DECRBY, DEL, EXISTS, TYPE,
EXPIRE, TTL, KEYS pattern, DBSIZE, FLUSHALL, FLUSHDB, SELECT 0, INFO, QUIT, and polite
answers to the CLIENT/COMMAND/CONFIG calls that clients make on connecting. Pipelined and
inline (telnet) commands work. Nothing is persisted, as with `--save "" --appendonly no`.
"""
from __future__ import annotations

import fnmatch
import os
import threading
import time
from typing import Callable, Optional

from netemu.workloads import resp
from netemu.workloads.listeners import Loop
from netemu.workloads.model import WorkloadContext, tcp_ports

VERSION = "7.0.0"
INT64 = (-(1 << 63), (1 << 63) - 1)
OK = resp.simple("OK")
NOT_INTEGER = resp.error("ERR value is not an integer or out of range")
SYNTAX = resp.error("ERR syntax error")


class Store:
    """The keyspace: string values with optional expiry times, behind one lock."""

    def __init__(self, port: int = 6379):
        self.port = port
        self.values: dict[bytes, bytes] = {}
        self.expiry: dict[bytes, float] = {}  # key -> time.monotonic() deadline
        self.lock = threading.Lock()
        self.started = time.monotonic()

    def execute(self, args: list[bytes]) -> bytes:
        name = args[0].decode("latin-1").lower()
        spec = COMMANDS.get(name)
        if spec is None:
            first = " ".join(f"'{a.decode('latin-1')[:64]}'" for a in args[1:4])
            return resp.error(f"ERR unknown command '{args[0].decode('latin-1')[:64]}', "
                              f"with args beginning with: {first}")
        handler, arity = spec
        if (arity >= 0 and len(args) != arity) or (arity < 0 and len(args) < -arity):
            return resp.error(f"ERR wrong number of arguments for '{name}' command")
        with self.lock:
            return handler(self, args[1:])

    # the helpers below run with the lock held
    def live(self, key: bytes) -> Optional[bytes]:
        deadline = self.expiry.get(key)
        if deadline is not None and deadline <= time.monotonic():
            self.delete(key)
        return self.values.get(key)

    def delete(self, key: bytes) -> bool:
        self.expiry.pop(key, None)
        return self.values.pop(key, None) is not None

    def live_keys(self) -> list[bytes]:
        now = time.monotonic()
        for key in [k for k, t in self.expiry.items() if t <= now]:
            self.delete(key)
        return list(self.values)

    def add(self, key: bytes, delta: int) -> bytes:
        current = self.live(key)
        try:
            value = int(current) if current is not None else 0
        except ValueError:
            return NOT_INTEGER
        value += delta
        if not INT64[0] <= value <= INT64[1]:
            return resp.error("ERR increment or decrement would overflow")
        self.values[key] = b"%d" % value
        return resp.integer(value)


# ------------------------------------------------------------------------------ commands
def _int(raw: bytes) -> Optional[int]:
    try:
        return int(raw)
    except ValueError:
        return None


def cmd_ping(s: Store, a: list[bytes]) -> bytes:
    return resp.bulk(a[0]) if a else resp.simple("PONG")


def cmd_echo(s: Store, a: list[bytes]) -> bytes:
    return resp.bulk(a[0])


def cmd_set(s: Store, a: list[bytes]) -> bytes:
    key, value, opts = a[0], a[1], [o.upper() for o in a[2:]]
    ttl: Optional[float] = None
    condition, keep_ttl, want_old, i = None, False, False, 0
    while i < len(opts):
        opt = opts[i]
        if opt in (b"NX", b"XX") and condition is None:
            condition = opt
        elif opt == b"KEEPTTL" and ttl is None:
            keep_ttl = True
        elif opt == b"GET":
            want_old = True
        elif opt in (b"EX", b"PX") and ttl is None and not keep_ttl and i + 1 < len(opts):
            amount = _int(opts[i + 1])
            if amount is None:
                return NOT_INTEGER
            if amount <= 0:
                return resp.error("ERR invalid expire time in 'set' command")
            ttl = amount if opt == b"EX" else amount / 1000
            i += 1
        else:
            return SYNTAX
        i += 1
    old = s.live(key)
    if (condition == b"NX" and old is not None) or (condition == b"XX" and old is None):
        return resp.bulk(old) if want_old else resp.bulk(None)
    s.values[key] = value
    if ttl is not None:
        s.expiry[key] = time.monotonic() + ttl
    elif not keep_ttl:
        s.expiry.pop(key, None)
    return resp.bulk(old) if want_old else OK


def cmd_get(s: Store, a: list[bytes]) -> bytes:
    return resp.bulk(s.live(a[0]))


def cmd_mget(s: Store, a: list[bytes]) -> bytes:
    return resp.array([s.live(k) for k in a])


def cmd_mset(s: Store, a: list[bytes]) -> bytes:
    if len(a) % 2:
        return resp.error("ERR wrong number of arguments for 'mset' command")
    for key, value in zip(a[::2], a[1::2]):
        s.values[key] = value
        s.expiry.pop(key, None)
    return OK


def _by(sign: int) -> Callable[[Store, list[bytes]], bytes]:
    def command(s: Store, a: list[bytes]) -> bytes:
        delta = _int(a[1])
        return NOT_INTEGER if delta is None else s.add(a[0], sign * delta)
    return command


def cmd_incr(s: Store, a: list[bytes]) -> bytes:
    return s.add(a[0], 1)


def cmd_decr(s: Store, a: list[bytes]) -> bytes:
    return s.add(a[0], -1)


def cmd_del(s: Store, a: list[bytes]) -> bytes:
    return resp.integer(sum(1 for k in a if s.live(k) is not None and s.delete(k)))


def cmd_exists(s: Store, a: list[bytes]) -> bytes:
    return resp.integer(sum(1 for k in a if s.live(k) is not None))


def cmd_type(s: Store, a: list[bytes]) -> bytes:
    return resp.simple("string" if s.live(a[0]) is not None else "none")


def cmd_expire(s: Store, a: list[bytes]) -> bytes:
    seconds = _int(a[1])
    if seconds is None:
        return NOT_INTEGER
    if s.live(a[0]) is None:
        return resp.integer(0)
    if seconds <= 0:
        s.delete(a[0])
    else:
        s.expiry[a[0]] = time.monotonic() + seconds
    return resp.integer(1)


def cmd_ttl(s: Store, a: list[bytes]) -> bytes:
    if s.live(a[0]) is None:
        return resp.integer(-2)
    deadline = s.expiry.get(a[0])
    return resp.integer(-1 if deadline is None else max(0, round(deadline - time.monotonic())))


def cmd_keys(s: Store, a: list[bytes]) -> bytes:
    pattern = a[0].decode("latin-1")
    return resp.array([k for k in s.live_keys() if fnmatch.fnmatchcase(k.decode("latin-1"), pattern)])


def cmd_dbsize(s: Store, a: list[bytes]) -> bytes:
    return resp.integer(len(s.live_keys()))


def cmd_flush(s: Store, a: list[bytes]) -> bytes:
    s.values.clear()
    s.expiry.clear()
    return OK


def cmd_select(s: Store, a: list[bytes]) -> bytes:
    if a[0] == b"0":
        return OK
    return resp.error("ERR DB index is out of range (netemu's built-in redis has only database 0)")


def cmd_info(s: Store, a: list[bytes]) -> bytes:
    keys = len(s.live_keys())
    text = (f"# Server\r\nredis_version:{VERSION}\r\nredis_mode:standalone\r\n"
            f"executable:netemu built-in redis\r\nprocess_id:{os.getpid()}\r\ntcp_port:{s.port}\r\n"
            f"uptime_in_seconds:{int(time.monotonic() - s.started)}\r\n"
            f"\r\n# Persistence\r\nloading:0\r\n"
            f"\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"
            f"\r\n# Keyspace\r\n" + (f"db0:keys={keys},expires={len(s.expiry)},avg_ttl=0\r\n" if keys else ""))
    return resp.bulk(text.encode())


def cmd_client(s: Store, a: list[bytes]) -> bytes:
    sub = a[0].lower()
    if sub == b"getname":
        return resp.bulk(None)
    if sub == b"id":
        return resp.integer(threading.get_ident() & 0xFFFF)
    return OK  # SETNAME, SETINFO, NO-EVICT, ...: accepted and ignored


def cmd_command(s: Store, a: list[bytes]) -> bytes:
    if a and a[0].lower() == b"count":
        return resp.integer(len(COMMANDS))
    return resp.array([])  # COMMAND DOCS and friends: nothing to tell


def cmd_config(s: Store, a: list[bytes]) -> bytes:
    return resp.array([]) if a[0].lower() == b"get" else OK


def cmd_hello(s: Store, a: list[bytes]) -> bytes:
    return resp.error("NOPROTO this server speaks RESP2 only")


# name -> (handler, arity): arity counts the command name; negative means "at least"
COMMANDS: dict[str, tuple[Callable[[Store, list[bytes]], bytes], int]] = {
    "ping": (cmd_ping, -1), "echo": (cmd_echo, 2),
    "set": (cmd_set, -3), "get": (cmd_get, 2), "mget": (cmd_mget, -2), "mset": (cmd_mset, -3),
    "incr": (cmd_incr, 2), "incrby": (_by(1), 3), "decr": (cmd_decr, 2), "decrby": (_by(-1), 3),
    "del": (cmd_del, -2), "unlink": (cmd_del, -2), "exists": (cmd_exists, -2), "type": (cmd_type, 2),
    "expire": (cmd_expire, 3), "ttl": (cmd_ttl, 2),
    "keys": (cmd_keys, 2), "dbsize": (cmd_dbsize, 1),
    "flushall": (cmd_flush, -1), "flushdb": (cmd_flush, -1), "select": (cmd_select, 2),
    "info": (cmd_info, -1), "client": (cmd_client, -2), "command": (cmd_command, -1),
    "config": (cmd_config, -2), "hello": (cmd_hello, -1),
}


# ---------------------------------------------------------------------------- connections
def serve_connection(conn, store: Store) -> None:
    reader = resp.CommandReader()
    while True:
        data = conn.recv(16384)
        if not data:
            return
        reader.feed(data)
        replies, closing = [], False
        try:
            for args in reader.commands():
                if args[0].lower() == b"quit":
                    replies.append(OK)
                    closing = True
                    break
                replies.append(store.execute(args))
        except resp.ProtocolError as e:
            replies.append(resp.error(f"ERR Protocol error: {e}"))
            closing = True
        if replies:
            conn.sendall(b"".join(replies))
        if closing:
            return


def listen_port(ctx: WorkloadContext) -> int:
    """redis-server's `--port N` among the args wins; else the declared port, else 6379."""
    args = list(ctx.args)
    for i, arg in enumerate(args):
        if arg == "--port" and i + 1 < len(args) and args[i + 1].isdigit():
            return int(args[i + 1])
    return tcp_ports(ctx, 6379)[0]


def start_redis(ctx: WorkloadContext, loop: Loop) -> None:
    port = listen_port(ctx)
    store = Store(port)
    loop.add_tcp(port, lambda conn, client: serve_connection(conn, store))
