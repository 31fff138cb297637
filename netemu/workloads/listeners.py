"""One event loop per stand-in: TCP listeners and UDP responders on a single selector.

The main thread waits on every listening socket at once; an accepted TCP connection gets a
thread of its own for as long as it lives (keep-alive included) and the thread ends with it,
so an idle stand-in has only its main thread. UDP datagrams are answered inline.
"""
from __future__ import annotations

import os
import selectors
import signal
import socket
import struct
import threading
from typing import Callable, NoReturn, Optional

MAX_CONNECTIONS = 1024  # nginx's default worker_connections
LISTEN_BACKLOG = 511  # nginx's default; the kernel caps it at somaxconn
ACCEPT_BATCH = 64  # connections taken per wake-up when many arrive at once
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; the socket module lacks it
_PKTINFO = struct.Struct("i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr

# serve(connection, client address); runs in the connection's own thread
ConnectionServer = Callable[[socket.socket, tuple], None]
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

    # ----------------------------------------------------------------------------- set-up
    def add_tcp(self, port: int, serve: ConnectionServer) -> socket.socket:
        sock = self._bound(socket.SOCK_STREAM, port)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, lambda: self._accept(sock, serve))
        self.endpoints.append(f"TCP {self.bind_address}:{sock.getsockname()[1]}")
        return sock

    def add_udp(self, port: int, answer: DatagramAnswer) -> socket.socket:
        sock = self._bound(socket.SOCK_DGRAM, port)
        # learn each datagram's destination address, and answer from that same address
        sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, lambda: self._datagram(sock, answer))
        self.endpoints.append(f"UDP {self.bind_address}:{sock.getsockname()[1]}")
        return sock

    def _bound(self, kind: int, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.bind_address, port))
        except OSError as e:
            sock.close()
            proto = "TCP" if kind == socket.SOCK_STREAM else "UDP"
            raise StartError(f"bind() to {self.bind_address}:{port}/{proto} failed "
                             f"({e.errno}: {e.strerror})") from None
        return sock

    # ------------------------------------------------------------------------------ run
    def run_forever(self) -> NoReturn:
        if not self.selector.get_map():
            while True:
                signal.pause()
        while True:
            for key, _ in self.selector.select():
                key.data()

    def _accept(self, listener: socket.socket, serve: ConnectionServer) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, client = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ECONNABORTED, EMFILE and the like: keep serving the others
                return
            self._start(conn, client, serve)

    def _start(self, conn: socket.socket, client: tuple, serve: ConnectionServer) -> None:
        with self._count_lock:
            if self._active >= MAX_CONNECTIONS:
                conn.close()
                return
            self._active += 1
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
        reply = answer(data, client, (local_ip, sock.getsockname()[1]))
        if reply is None:
            return
        try:
            sock.sendmsg([reply], ancillary, 0, client)
        except OSError:
            pass


def write_log(line: str) -> None:
    """One line to the pod's log (fd 1) in a single write, so threads never interleave."""
    try:
        os.write(1, line.encode("utf-8", "replace"))
    except OSError:
        pass
