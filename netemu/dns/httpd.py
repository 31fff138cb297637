"""The small HTTP endpoints CoreDNS exposes next to DNS: ``/health`` (8080), ``/ready`` (8181)
and ``/metrics`` (9153). Each port serves its own path, as the three plugins do."""
from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

# path -> () -> (status, content type, body)
Route = Callable[[], tuple[int, str, str]]


def start_http(bind: str, port: int, path: str, route: Route) -> ThreadingHTTPServer:
    """Serve ``route`` at ``path`` on bind:port (0: any free port) from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?", 1)[0] != path:
                self.send_error(404)
                return
            status, ctype, body = route()
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args) -> None:  # probes every few seconds: keep quiet
            pass

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET

        def server_bind(self) -> None:
            if bind == "::":  # both families, as the DNS sockets beside it
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    server = Server((bind, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=f"dns-http{path}",
                     daemon=True).start()
    return server
