"""The HTTP side shared by the stand-ins: HTTP/1.1 with keep-alive, and an nginx-style access log.

A stand-in subclasses `StandInHandler`, writes `route()` and answers with `self.reply(...)`;
`Site` holds what its connections share (the container's context, its hostname, any state).
Every response goes out in one write (headers and body together) so that small replies
on a kept-alive connection never wait on Nagle's algorithm or a delayed ACK.
"""
from __future__ import annotations

import socket
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Iterable, Optional
from urllib.parse import unquote

from netemu.workloads.listeners import Loop, write_log
from netemu.workloads.model import WorkloadContext

MAX_BODY = 1 << 20  # request bodies larger than this end the connection instead
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


def time_local() -> str:
    """nginx's $time_local, e.g. 07/Feb/2018:16:05:05 +0000."""
    return time.strftime("%d/%b/%Y:%H:%M:%S %z")


class Site:
    """What every connection of one stand-in shares, on every port it serves."""
    server_header = "nginx"  # the Server header; empty for apps whose framework sends none

    def __init__(self, ctx: WorkloadContext):
        self.ctx = ctx
        self.hostname = pod_hostname(ctx)


def serve_http(loop: Loop, port: int, handler: type["StandInHandler"], site: Site) -> None:
    loop.add_tcp(port, lambda conn, client: handler(conn, client, site))


class StandInHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as load tools expect
    timeout = KEEPALIVE_TIMEOUT
    server: Site  # BaseRequestHandler calls its third argument "server"
    headers = None  # set by parse_request; absent when a request line is malformed
    command = ""
    body = b""
    path_only = "/"
    query = ""

    # ------------------------------------------------------------------ to write in subclasses
    def route(self) -> None:
        self.reply(404, "404 page not found\n")

    # ---------------------------------------------------------------------------- plumbing
    def _dispatch(self) -> None:
        try:
            self.body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self.reply(400, "400 Bad Request\n")
            return
        target = self.path
        if target.startswith(("http://", "https://")):  # absolute-form (a proxy's request)
            slash = target.find("/", target.find("//") + 2)
            target = target[slash:] if slash >= 0 else "/"
        path, _, self.query = target.partition("?")
        self.path_only = unquote(path) or "/"
        self.route()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def _read_body(self) -> bytes:
        coding = self.headers.get("Transfer-Encoding", "").strip().lower()
        if coding and coding != "identity":
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        n = int(length)
        if n < 0 or n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n)

    def _read_chunked(self) -> bytes:
        parts, total = [], 0
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise ValueError("body too large")
            parts.append(self.rfile.read(size))
            self.rfile.readline(3)

    def reply(self, status: int, body: bytes | str = b"", content_type: str = TEXT,
              headers: Iterable[tuple[str, str]] = ()) -> None:
        if isinstance(body, str):
            body = body.encode()
        lines = [f"HTTP/1.1 {status} {_phrase(status)}"]
        if self.server.server_header:
            lines.append(f"Server: {self.server.server_header}")
        lines += [f"Date: {self.date_time_string()}",
                  f"Content-Type: {content_type}",
                  f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines.append("Connection: close" if self.close_connection else "Connection: keep-alive")
        sent = b"" if self.command == "HEAD" else body
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + sent)
        self.log_access(status, len(sent))

    # ------------------------------------------------------------------------------- logging
    def log_access(self, status: int, size: int) -> None:
        """nginx's combined format: client, time, request line, status, bytes, referer, agent."""
        referer = _quoted(self.headers.get("Referer") if self.headers else None)
        agent = _quoted(self.headers.get("User-Agent") if self.headers else None)
        write_log(f'{self.client_address[0]} - - [{time_local()}] "{_quoted(self.requestline)}" '
                  f'{status} {size} "{referer}" "{agent}"\n')

    def log_request(self, code="-", size="-") -> None:  # reached only through send_error
        try:
            status = int(code)  # an HTTPStatus
        except (TypeError, ValueError):
            status = 0
        self.log_access(status, 0)

    def log_message(self, format, *args) -> None:  # no stderr chatter per request
        pass

    def version_string(self) -> str:
        return self.server.server_header

    # ------------------------------------------------------------------------------- helpers
    @property
    def client_ip(self) -> str:
        return self.client_address[0]

    @property
    def local_address(self) -> tuple[str, int]:
        """The address this request arrived on (nginx's $server_addr:$server_port)."""
        host, port = self.connection.getsockname()[:2]
        return host, port


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _quoted(value: Optional[str]) -> str:
    if not value:
        return "-"
    return value.replace("\\", "\\x5C").replace('"', "\\x22")
