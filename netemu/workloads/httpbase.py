"""The HTTP side shared by the stand-ins: HTTP/1.1 with keep-alive, and an nginx-style access log.

A stand-in subclasses `StandInHandler`, writes `route()` and answers with `self.reply(...)`;
`Site` holds what its connections share (the container's context, its hostname, any state), and
netemu.workloads.httpconn.serve_http puts them on a port of the stand-in's event loop. Each
request gets a handler of its own. A handler whose route may block (CPU work, another server, a
DNS query) says so with `runs_in_thread`/`in_thread()` and runs in a thread of its own, so it
stalls no other connection. Responses go out whole (headers and body in one send), so small
replies on a kept-alive connection never wait on Nagle's algorithm or a delayed ACK.
"""
from __future__ import annotations

import email.utils
import socket
import time
from http import HTTPStatus
from typing import Iterable, Optional
from urllib.parse import unquote

from netemu.workloads import podlog
from netemu.workloads.httpparse import BadBody, BadRequest, Request, RequestParser, error_response
from netemu.workloads.model import WorkloadContext

KEEPALIVE_TIMEOUT = 75  # seconds, nginx's default keepalive_timeout

HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json; charset=utf-8"


def pod_hostname(ctx: WorkloadContext) -> str:
    """The pod's UTS namespace carries its name as hostname; the context is the fallback."""
    try:
        name = socket.gethostname()
    except OSError:
        name = ""
    return name or ctx.pod_name


class _PerSecond:
    """A time format worked out once a second, not once a request."""

    def __init__(self, render):
        self.render = render
        self.second = -1
        self.text = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self.second:
            self.second, self.text = now, self.render(now)
        return self.text


# nginx's $time_local, e.g. 07/Feb/2018:16:05:05 +0000
time_local = _PerSecond(lambda now: time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now)))
# the Date header, e.g. Wed, 07 Feb 2018 16:05:05 GMT
http_date = _PerSecond(lambda now: email.utils.formatdate(now, usegmt=True))


class Peer:
    """The two ends of a connection, as handlers ask for them."""

    def __init__(self, sock: socket.socket, client_address: tuple):
        self.sock = sock
        self.client_address = client_address
        self._local: Optional[tuple[str, int]] = None

    @property
    def local_address(self) -> tuple[str, int]:
        if self._local is None:
            self._local = self.sock.getsockname()[:2]
        return self._local


class Site:
    """What every connection of one stand-in shares, on every port it serves."""
    server_header = "nginx"  # the Server header; empty for apps whose framework sends none

    def __init__(self, ctx: WorkloadContext):
        self.ctx = ctx
        self.hostname = pod_hostname(ctx)


class StandInHandler:
    """One request: what it asked (command, path, headers, body...) and the reply that answers it."""
    runs_in_thread = False  # route() may block: serve it in a thread of its own
    server: Site

    def __init__(self, request: Request, site: Site, peer: Peer):
        self.server = site
        self.peer = peer
        self.requestline = request.requestline
        self.command = request.command
        self.path = request.path
        self.request_version = request.request_version
        self.headers = request.headers
        self.body = request.body
        self.close_connection = request.close_connection
        target = request.path
        if target.startswith(("http://", "https://")):  # absolute-form (a proxy's request)
            slash = target.find("/", target.find("//") + 2)
            target = target[slash:] if slash >= 0 else "/"
        path, _, self.query = target.partition("?")
        self.path_only = unquote(path) or "/"
        self.output: list[bytes] = []

    # ------------------------------------------------------------------ to write in subclasses
    def route(self) -> None:
        self.reply(404, "404 page not found\n")

    def in_thread(self) -> bool:
        """Whether this request's route() may block; decided before it runs."""
        return self.runs_in_thread

    # ---------------------------------------------------------------------------- plumbing
    def handle(self) -> bytes:
        """route() the request; the bytes of its reply."""
        self.route()
        return b"".join(self.output)

    def reply(self, status: int, body: bytes | str = b"", content_type: str = TEXT,
              headers: Iterable[tuple[str, str]] = ()) -> None:
        if isinstance(body, str):
            body = body.encode()
        server = self.server.server_header
        head = (f"HTTP/1.1 {status} {_phrase(status)}\r\n" + (f"Server: {server}\r\n" if server else "")
                + f"Date: {http_date()}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers)
                + ("Connection: close\r\n\r\n" if self.close_connection else "Connection: keep-alive\r\n\r\n"))
        sent = b"" if self.command == "HEAD" else body
        self.output.append(head.encode("latin-1") + sent)
        self.log_access(status, len(sent))

    # ------------------------------------------------------------------------------- logging
    def log_access(self, status: int, size: int) -> None:
        log_access(self.peer.client_address[0], self.requestline, self.headers, status, size)

    # ------------------------------------------------------------------------------- helpers
    @property
    def client_address(self) -> tuple:
        return self.peer.client_address

    @property
    def client_ip(self) -> str:
        return self.peer.client_address[0]

    @property
    def local_address(self) -> tuple[str, int]:
        """The address this request arrived on (nginx's $server_addr:$server_port)."""
        return self.peer.local_address


def log_access(client_ip: str, requestline: str, headers, status: int, size: int) -> None:
    """nginx's combined format: client, time, request line, status, bytes, referer, agent."""
    referer = _quoted(headers.get("Referer") if headers else None)
    agent = _quoted(headers.get("User-Agent") if headers else None)
    podlog.buffer_line(f'{client_ip} - - [{time_local()}] "{_quoted(requestline)}" '
                       f'{status} {size} "{referer}" "{agent}"\n')


def answer(parser: RequestParser, handler: type[StandInHandler], site: Site, peer: Peer,
           ) -> tuple[Optional[StandInHandler], bytes, bool]:
    """The next request in `parser`: (its handler, to run; or None and bytes to send at once, and
    whether the connection ends after them). (None, b"", False) until a whole request is in."""
    try:
        request = parser.next()
    except BadRequest as e:  # http.server's error page, and the connection ends
        log_access(peer.client_address[0], e.request.requestline, e.request.headers, e.status, 0)
        return None, parser.take_interim() + error_response(e, site.server_header, http_date()), True
    except BadBody as e:
        h = handler(e.request, site, peer)
        h.close_connection = True
        h.reply(400, "400 Bad Request\n")
        return None, parser.take_interim() + b"".join(h.output), True
    except EOFError:  # a blank request line: http.server hung up
        return None, b"", True
    if request is None:
        return None, parser.take_interim(), False
    return handler(request, site, peer), parser.take_interim(), False


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _quoted(value: Optional[str]) -> str:
    if not value:
        return "-"
    return value.replace("\\", "\\x5C").replace('"', "\\x22")
