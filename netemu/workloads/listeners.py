"""One event loop per stand-in: TCP listeners, their connections and UDP responders on a single
selector, in the main thread.

A stream listener's connections live on the loop itself (the HTTP stand-ins: netemu.workloads.
httpconn), and those idle longer than their keep-alive are closed by a sweep once a second. A
plain TCP listener's connections get a thread each for as long as they live (the built-in redis,
TLS), the thread ending with its connection, so an idle stand-in has only its main thread. UDP
datagrams are answered inline. Threads hand work back with `call_soon_threadsafe`; `call_later`
runs something on the loop after a delay. The pod log's buffered lines go out when the loop has
nothing to do (podlog), and before the process dies of SIGTERM, SIGINT or SIGHUP.

A stand-in listening on every address (0.0.0.0) in a pod with IPv6 (a dual-stack lab's) listens on
:: too, with a second, IPv6-only socket per port: IPv4 clients still meet the IPv4 socket and are
seen with their plain IPv4 address (a dual :: socket would show them as ::ffff:a.b.c.d).
"""
from __future__ import annotations

import collections
import heapq
import itertools
import os
import selectors
import signal
import socket
import struct
import threading
import time
from typing import Callable, NoReturn, Optional, Protocol

from netemu.workloads import podlog

MAX_CONNECTIONS = 1024  # nginx's default worker_connections
LISTEN_BACKLOG = 511  # nginx's default; the kernel caps it at somaxconn
ACCEPT_BATCH = 64  # connections taken per wake-up when many arrive at once
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; the socket module lacks it
_PKTINFO = struct.Struct("i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
_PKTINFO6 = struct.Struct("16sI")  # struct in6_pktinfo: addr, ifindex
ANY4, ANY6 = "0.0.0.0", "::"

SWEEP_INTERVAL = 1.0  # seconds between looks for stream connections idle too long
EXIT_FLUSH_WAIT = 1.0  # seconds a dying stand-in waits for the log to be free to flush it

# serve(connection, client address); runs in the connection's own thread
ConnectionServer = Callable[[socket.socket, tuple], None]


class StreamConnection(Protocol):
    """A connection served on the loop: it registers its socket itself and calls
    Loop.connection_closed(self) once closed."""

    def close(self) -> None: ...

    def idle_too_long(self, now: float) -> bool: ...


# open(non-blocking connection, client address) -> the connection, on the loop's thread
StreamOpener = Callable[[socket.socket, tuple], StreamConnection]
# answer(payload, client address, local address) -> reply or None
DatagramAnswer = Callable[[bytes, tuple, tuple], Optional[bytes]]


class StartError(Exception):
    """The stand-in cannot start (a port is taken, say); the message is for the pod's log."""


class Loop:
    def __init__(self, bind_address: str = "0.0.0.0"):
        self.bind_address = bind_address
        self.selector = selectors.DefaultSelector()
        self.endpoints: list[str] = []  # "TCP 0.0.0.0:80", for the start-up line
        self._active = 0
        self._count_lock = threading.Lock()
        self.streams: set[StreamConnection] = set()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []  # a heap by due time
        self._timer_order = itertools.count()
        self._calls: collections.deque[Callable[[], None]] = collections.deque()
        self._wakeup: Optional[tuple[socket.socket, socket.socket]] = None

    # ----------------------------------------------------------------------------- set-up
    def add_tcp(self, port: int, serve: ConnectionServer) -> socket.socket:
        """Each connection served by `serve` in a thread of its own."""
        return self._listen(port, lambda conn, client: self._start_thread(conn, client, serve))

    def add_stream(self, port: int, open_connection: StreamOpener) -> socket.socket:
        """Each connection served on the loop: `open_connection` takes it, non-blocking."""
        self._wakeup_pair()  # before run_forever: its threads may want the loop
        return self._listen(port, lambda conn, client: self._start_stream(conn, client, open_connection))

    def _listen(self, port: int, start: Callable[[socket.socket, tuple], None]) -> socket.socket:
        first = None
        for sock in self._bound_all(socket.SOCK_STREAM, port):
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, lambda _events, s=sock: self._accept(s, start))
            self.endpoints.append(f"TCP {_where(sock)}")
            first = first or sock
        return first

    def add_udp(self, port: int, answer: DatagramAnswer) -> socket.socket:
        first = None
        for sock in self._bound_all(socket.SOCK_DGRAM, port):
            # learn each datagram's destination address, and answer from that same address
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, lambda _events, s=sock: self._datagram(s, answer))
            self.endpoints.append(f"UDP {_where(sock)}")
            first = first or sock
        return first

    def _bound_all(self, kind: int, port: int) -> list[socket.socket]:
        """The port on the loop's address; listening on every IPv4 address in a namespace with IPv6,
        on every IPv6 address too (the same port, as taken by the first socket when port is 0)."""
        first = self._bound(kind, port, socket.AF_INET, self.bind_address)
        if self.bind_address != ANY4 or not ipv6_enabled():
            return [first]
        try:
            return [first, self._bound(kind, port or first.getsockname()[1], socket.AF_INET6, ANY6)]
        except StartError:
            first.close()
            raise

    def _bound(self, kind: int, port: int, family: int = socket.AF_INET,
               address: Optional[str] = None) -> socket.socket:
        address = self.bind_address if address is None else address
        sock = socket.socket(family, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # IPv4 has a socket of its own
        try:
            sock.bind((address, port))
        except OSError as e:
            sock.close()
            proto = "TCP" if kind == socket.SOCK_STREAM else "UDP"
            shown = f"[{address}]" if family == socket.AF_INET6 else address
            raise StartError(f"bind() to {shown}:{port}/{proto} failed "
                             f"({e.errno}: {e.strerror})") from None
        return sock

    # ------------------------------------------------------------------------------ run
    def run_forever(self) -> NoReturn:
        _flush_log_before_dying()
        if not self.selector.get_map():
            while True:
                signal.pause()
        select = self.selector.select
        while True:
            timeout = self._run_timers()
            if podlog.pending():  # lines wait: out with them as soon as nothing else does
                events = select(0)
                if not events:
                    podlog.flush()
                    continue
            else:
                events = select(timeout)
            for key, mask in events:
                key.data(mask)
            if podlog.due():
                podlog.flush()

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run `fn` on the loop in `delay` seconds (from the loop's own thread only)."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_order), fn))

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the loop as soon as it can, from any thread."""
        self._calls.append(fn)
        try:
            self._wakeup_pair()[1].send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full of wake-ups already

    def connection_closed(self, conn: StreamConnection) -> None:
        self.streams.discard(conn)
        with self._count_lock:
            self._active -= 1

    def _run_timers(self) -> Optional[float]:
        """Run what is due; seconds until the next timer, or None for none."""
        while self._timers:
            due, _, fn = self._timers[0]
            wait = due - time.monotonic()
            if wait > 0:
                return wait
            heapq.heappop(self._timers)
            fn()
        return None

    def _wakeup_pair(self) -> tuple[socket.socket, socket.socket]:
        if self._wakeup is None:
            self._wakeup = socket.socketpair()
            for end in self._wakeup:
                end.setblocking(False)
            self.selector.register(self._wakeup[0], selectors.EVENT_READ, self._run_calls)
        return self._wakeup

    def _run_calls(self, _events: int) -> None:
        try:
            while self._wakeup[0].recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while self._calls:
            self._calls.popleft()()

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self.streams if c.idle_too_long(now)]:
            conn.close()
        if self.streams:
            self.call_later(SWEEP_INTERVAL, self._sweep)

    # ------------------------------------------------------------------------ connections
    def _accept(self, listener: socket.socket, start: Callable[[socket.socket, tuple], None]) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, client = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ECONNABORTED, EMFILE and the like: keep serving the others
                return
            with self._count_lock:
                if self._active >= MAX_CONNECTIONS:
                    conn.close()
                    continue
                self._active += 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            start(conn, client)

    def _start_stream(self, conn: socket.socket, client: tuple, open_connection: StreamOpener) -> None:
        conn.setblocking(False)
        try:
            stream = open_connection(conn, client)
        except Exception:  # a connection that cannot be set up is refused; the loop goes on
            self._release(conn)
            return
        if not self.streams:
            self.call_later(SWEEP_INTERVAL, self._sweep)
        self.streams.add(stream)

    def _start_thread(self, conn: socket.socket, client: tuple, serve: ConnectionServer) -> None:
        try:
            threading.Thread(target=self._serve, args=(conn, client, serve), daemon=True).start()
        except RuntimeError:  # cannot start a thread: refuse the connection
            self._release(conn)

    def _serve(self, conn: socket.socket, client: tuple, serve: ConnectionServer) -> None:
        try:
            serve(conn, client)
        except Exception:  # a client that went away mid-request is not the stand-in's problem
            pass
        finally:
            self._release(conn)

    def _release(self, conn: socket.socket) -> None:
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        conn.close()
        with self._count_lock:
            self._active -= 1

    @staticmethod
    def _datagram(sock: socket.socket, answer: DatagramAnswer) -> None:
        try:
            data, ancdata, _flags, client = sock.recvmsg(65535, socket.CMSG_SPACE(_PKTINFO.size))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # e.g. ICMP unreachable reported on the socket
            return
        local_ip, ancillary = sock.getsockname()[0], []
        for level, kind, blob in ancdata:
            if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(blob) >= _PKTINFO.size:
                _ifindex, _spec_dst, dst = _PKTINFO.unpack_from(blob)
                local_ip = socket.inet_ntoa(dst)
                ancillary = [(socket.IPPROTO_IP, _IP_PKTINFO, _PKTINFO.pack(0, dst, b"\0" * 4))]
            elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(blob) >= _PKTINFO6.size:
                dst, _ifindex = _PKTINFO6.unpack_from(blob)
                local_ip = socket.inet_ntop(socket.AF_INET6, dst)
                ancillary = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, _PKTINFO6.pack(dst, 0))]
        reply = answer(data, client, (local_ip, sock.getsockname()[1]))
        if reply is None:
            return
        try:
            sock.sendmsg([reply], ancillary, 0, client)
        except OSError:
            pass


def ipv6_enabled() -> bool:
    """Whether this process's network namespace has IPv6 on (/proc/sys/net follows the namespace of
    whoever reads it): a pod of a dual-stack lab has, an IPv4 lab's pods have it switched off."""
    try:
        with open("/proc/sys/net/ipv6/conf/all/disable_ipv6") as f:
            return f.read().strip() == "0"
    except OSError:
        return False


def _where(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


def _flush_log_before_dying() -> None:
    """Signals that end the stand-in first write out the log lines still waiting (a stand-in's own
    handler, such as ingress-nginx's, is left alone: its write_log flushes them)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _flush_and_die)


def _flush_and_die(signum: int, _frame) -> None:
    podlog.flush(EXIT_FLUSH_WAIT)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # dies of the signal, as it would have without this handler
