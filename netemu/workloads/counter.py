"""ghcr.io/subicura/counter: a hit counter kept in Redis, on port 3000.

Each `GET /` increments the key `count` in Redis at `$REDIS_HOST:$REDIS_PORT` (defaults
redis:6379) and answers the new value as a bare number (`curl localhost:3000` prints `1`, then
`2`...), which is what the real app (Node.js, fastify) shows in subicura's Kubernetes guide,
where `GET count` in redis then gives the same number. Other routes get fastify's JSON 404.

REDIS_HOST is looked up when a request needs a connection, not at start-up, so the app may
start before the Service or the cluster DNS exists; any failure (name, connection, redis
error) is a 500 whose message says what went wrong. One connection is kept open and shared.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Optional

from netemu.workloads import resp
from netemu.workloads.httpbase import JSON, TEXT, Site, StandInHandler
from netemu.workloads.httpconn import serve_http
from netemu.workloads.listeners import Loop
from netemu.workloads.podlog import write_log
from netemu.workloads.model import WorkloadContext, tcp_ports

COUNTER_KEY = b"count"
REDIS_TIMEOUT = 2.0  # seconds, to connect and for each reply


class CounterError(Exception):
    pass


class RedisLink:
    """One kept-open connection to Redis; requests take turns on it."""

    def __init__(self, host: str, port_setting: str):
        self.host = host
        self.port_setting = port_setting
        self.lock = threading.Lock()
        self.sock: Optional[socket.socket] = None
        self.stream = None

    def call(self, *args) -> resp.Reply:
        with self.lock:
            while True:
                reused = self.sock is not None
                if not reused:
                    self._connect()
                try:
                    self.sock.sendall(resp.command(*args))
                    return resp.read_reply(self.stream)
                except resp.ReplyError as e:
                    raise CounterError(f"redis at {self.host} answered an error: {e}") from None
                except (OSError, ValueError, resp.ProtocolError) as e:
                    self._close()
                    if not reused:  # a fresh connection failing is an answer; a stale one gets retried
                        raise CounterError(f"lost the connection to redis at {self.host}: {e}") from None

    def _connect(self) -> None:
        port = redis_port(self.port_setting)
        try:
            infos = socket.getaddrinfo(self.host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise CounterError(f"cannot resolve REDIS_HOST {self.host!r}: {e.strerror}") from None
        failure = "no address"
        for family, kind, proto, _name, address in infos:
            sock = socket.socket(family, kind, proto)
            sock.settimeout(REDIS_TIMEOUT)
            try:
                sock.connect(address)
            except OSError as e:
                sock.close()
                failure = f"{address[0]}:{address[1]}: {e.strerror or e}"
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock, self.stream = sock, sock.makefile("rb")
            return
        raise CounterError(f"cannot connect to redis at {self.host}:{port} ({failure})")

    def _close(self) -> None:
        for thing in (self.stream, self.sock):
            try:
                thing.close()
            except (OSError, AttributeError):
                pass
        self.sock = self.stream = None


def redis_port(setting: str) -> int:
    """REDIS_PORT as a number; Kubernetes' service link form `tcp://10.96.0.9:6379` works too."""
    text = setting.strip().rsplit(":", 1)[-1] if setting.startswith("tcp://") else setting.strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise CounterError(f"REDIS_PORT {setting!r} is not a port number")
    return int(text)


class CounterSite(Site):
    server_header = ""  # fastify sends none

    def __init__(self, ctx: WorkloadContext):
        super().__init__(ctx)
        self.redis = RedisLink(ctx.env.get("REDIS_HOST") or "redis", ctx.env.get("REDIS_PORT") or "6379")


class CounterHandler(StandInHandler):
    server: CounterSite
    runs_in_thread = True  # a request waits on redis (up to REDIS_TIMEOUT)

    def route(self) -> None:
        if self.path_only != "/" or self.command not in ("GET", "HEAD"):
            self._json(404, "Not Found", f"Route {self.command}:{self.path} not found")
            return
        try:
            count = self.server.redis.call("INCR", COUNTER_KEY)
        except CounterError as e:
            self._json(500, "Internal Server Error", str(e))
            return
        self.reply(200, str(count), TEXT)

    def _json(self, status: int, error: str, message: str) -> None:
        body = json.dumps({"statusCode": status, "error": error, "message": message})
        self.reply(status, body, JSON)


def start_counter(ctx: WorkloadContext, loop: Loop) -> None:
    site = CounterSite(ctx)
    for port in tcp_ports(ctx, 3000):
        serve_http(loop, port, CounterHandler, site)
        # the line the real app (fastify's logger) prints on start-up
        write_log(json.dumps({"level": 30, "time": int(time.time() * 1000), "pid": os.getpid(),
                              "hostname": site.hostname,
                              "msg": f"Server listening at http://{loop.bind_address}:{port}"}) + "\n")
