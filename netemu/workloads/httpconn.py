"""One HTTP connection served by the stand-in's event loop: no thread of its own.

Bytes are read when the socket is readable and fed to a RequestParser; each whole request is
answered in turn (pipelined ones wait in the parser), the replies of one pass go out in one send,
and what the socket cannot take yet waits for it to become writable (reading stops meanwhile, so
a client that does not read cannot make the stand-in buffer without end). A request whose
handler may block runs in a thread of its own; the connection reads nothing more until its reply
is back on the loop, so replies keep their order. Idle connections end after KEEPALIVE_TIMEOUT
(the loop's sweep asks `idle_too_long`).
"""
from __future__ import annotations

import selectors
import socket
import threading
import time
from typing import Optional

from netemu.workloads import podlog
from netemu.workloads.httpbase import KEEPALIVE_TIMEOUT, Peer, Site, StandInHandler, answer
from netemu.workloads.httpparse import RequestParser
from netemu.workloads.listeners import Loop

READ_SIZE = 65536


def serve_http(loop: Loop, port: int, handler: type[StandInHandler], site: Site) -> None:
    loop.add_stream(port, lambda conn, client: HttpConnection(loop, conn, client, handler, site))


def serve_blocking(conn: socket.socket, client: tuple, handler: type[StandInHandler], site: Site) -> None:
    """The same HTTP over a blocking socket (a TLS one, say), in the connection's own thread."""
    conn.settimeout(KEEPALIVE_TIMEOUT)
    parser, peer = RequestParser(), Peer(conn, client)
    while True:
        data = conn.recv(65536)
        if not data:
            return
        parser.feed(data)
        while True:
            h, out, closing = answer(parser, handler, site, peer)
            if h is not None:
                out += h.handle()
                closing = h.close_connection
            if out:
                conn.sendall(out)
            podlog.flush()
            if closing:
                return
            if h is None:
                break


class HttpConnection:
    def __init__(self, loop: Loop, sock: socket.socket, client: tuple, handler: type[StandInHandler], site: Site):
        self.loop = loop
        self.sock = sock
        self.handler = handler
        self.site = site
        self.peer = Peer(sock, client)
        self.parser = RequestParser()
        self.out = bytearray()
        self.busy = False  # a handler runs in a thread; its reply comes back through the loop
        self.closing = False  # end the connection once `out` is sent
        self.eof = False  # the client sent everything it will
        self.events = 0  # what the selector watches for
        self.last_active = time.monotonic()
        self._watch(selectors.EVENT_READ)

    # ------------------------------------------------------------------------------ events
    def on_event(self, mask: int) -> None:
        self.last_active = time.monotonic()
        if mask & selectors.EVENT_WRITE:
            self._send()
        elif mask & selectors.EVENT_READ:
            self._receive()

    def _receive(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if data:
            self.parser.feed(data)
        else:
            self.eof = True
        self._serve()

    def _serve(self) -> None:
        """Answer every whole request waiting, in order, then send the replies."""
        while not (self.busy or self.closing):
            try:
                handler, out, closing = answer(self.parser, self.handler, self.site, self.peer)
            except Exception:  # whatever a request does wrong ends its connection only
                self.close()
                return
            self.out += out
            if closing:
                self.closing = True
            elif handler is None:
                if self.eof:
                    self.closing = True
                break
            elif handler.in_thread():
                try:
                    threading.Thread(target=self._handle_in_thread, args=(handler,), daemon=True).start()
                except RuntimeError:  # no thread to be had: this connection ends, the others go on
                    self.close()
                    return
                self.busy = True
            else:
                try:
                    self.out += handler.handle()
                except Exception:
                    self.close()
                    return
                self.closing = handler.close_connection
        self._send()

    def _handle_in_thread(self, handler: StandInHandler) -> None:
        try:
            out: Optional[bytes] = handler.handle()
        except Exception:
            out = None
        self.loop.call_soon_threadsafe(lambda: self._handled(handler, out))

    def _handled(self, handler: StandInHandler, out: Optional[bytes]) -> None:
        self.busy = False
        if out is None or self.sock.fileno() < 0:
            self.close()
            return
        self.out += out
        self.closing = handler.close_connection
        self.last_active = time.monotonic()
        self._serve()

    def _send(self) -> None:
        if self.out:
            try:
                sent = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.close()
                return
            del self.out[:sent]
        if self.out:
            self._watch(selectors.EVENT_WRITE)
        elif self.closing:
            self.close()
        elif self.busy or self.eof:
            self._watch(0)
        else:
            self._watch(selectors.EVENT_READ)

    def _watch(self, events: int) -> None:
        if events == self.events:
            return
        if not events:
            self.loop.selector.unregister(self.sock)
        elif not self.events:
            self.loop.selector.register(self.sock, events, self.on_event)
        else:
            self.loop.selector.modify(self.sock, events, self.on_event)
        self.events = events

    # ------------------------------------------------------------------------------- ending
    def close(self) -> None:
        if self.sock.fileno() < 0:
            return
        self._watch(0)
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.sock.close()
        self.loop.connection_closed(self)

    def idle_too_long(self, now: float) -> bool:
        return not self.busy and now - self.last_active > KEEPALIVE_TIMEOUT
