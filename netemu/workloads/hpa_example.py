"""registry.k8s.io/hpa-example (k8s.gcr.io/hpa-example): the php-apache server of the Kubernetes
HPA walkthrough, which burns CPU on every request.

The image is php:5-apache with one index.php:

    $x = 0.0001; for ($i = 0; $i <= 1000000; $i++) { $x += sqrt($x); } echo "OK!";

This stand-in runs the same loop (1,000,001 square roots) for `/` and `/index.php` and answers
`OK!` (text/html, Apache's headers); other paths get Apache's 404 page. In CPython the loop costs
about 45-85 ms of CPU per request on a current server core, so a pod with `limits.cpu: 500m`
serves about 6-10 requests per second and a `wget` loop drives it to its limit, as in the
walkthrough. Each request's loop runs in a thread of its own, so requests are served
concurrently and the pod's cgroup, not the server, is what caps its CPU; the event loop goes on
answering (404s, new connections) meanwhile.

The number of iterations can be changed with the container argument `--iterations N` (not an
option of the real image; handy to make each request cheaper or dearer).

Every other stand-in (echo-hname, nginx, ...) costs only what the HTTP exchange costs (tens of
microseconds on a kept-alive connection, more with a new connection each time), still enough for
the seed's experiment (requests 10m, limits 50m, a curl loop) to drive its pods above 50% of their
request.
"""
from __future__ import annotations

import math

from netemu.workloads.httpbase import HTML, Site, StandInHandler
from netemu.workloads.httpconn import serve_http
from netemu.workloads.listeners import Loop
from netemu.workloads.model import WorkloadContext, tcp_ports

ITERATIONS = 1_000_000  # the loop runs for $i = 0 .. 1000000 inclusive
NOT_FOUND = ('<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n<title>404 Not Found</title>\n'
             '</head><body>\n<h1>Not Found</h1>\n<p>The requested URL {path} was not found on this server.</p>\n'
             '<hr>\n<address>Apache/2.4.10 (Debian) Server at {host} Port {port}</address>\n</body></html>\n')


def burn(iterations: int = ITERATIONS) -> float:
    """index.php's loop."""
    x = 0.0001
    sqrt = math.sqrt
    for _ in range(iterations + 1):
        x += sqrt(x)
    return x


class HpaExampleSite(Site):
    server_header = "Apache/2.4.10 (Debian)"

    def __init__(self, ctx: WorkloadContext):
        super().__init__(ctx)
        self.iterations = _iterations(ctx.args)


class HpaExampleHandler(StandInHandler):
    server: HpaExampleSite
    runs_in_thread = True  # burn() takes tens of milliseconds

    def route(self) -> None:
        if self.path_only in ("/", "/index.php"):
            burn(self.server.iterations)
            self.reply(200, "OK!", HTML, headers=[("X-Powered-By", "PHP/5.6.40")])
            return
        host, port = self.local_address
        self.reply(404, NOT_FOUND.format(path=self.path_only, host=host, port=port),
                   "text/html; charset=iso-8859-1")


def _iterations(args: list[str]) -> int:
    for i, a in enumerate(args):
        if a == "--iterations" and i + 1 < len(args) and args[i + 1].isdigit():
            return int(args[i + 1])
        if a.startswith("--iterations=") and a.split("=", 1)[1].isdigit():
            return int(a.split("=", 1)[1])
    return ITERATIONS


def start_hpa_example(ctx: WorkloadContext, loop: Loop) -> None:
    site = HpaExampleSite(ctx)
    for port in tcp_ports(ctx, 80):
        serve_http(loop, port, HpaExampleHandler, site)
