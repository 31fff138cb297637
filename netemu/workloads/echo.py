"""sysnet4admin/echo-hname, sysnet4admin/echo-ip, and the generic page for unknown images.

The real echo images are nginx with a single `return 200` for every path (text/html):
echo-hname answers `$hostname\\n`; echo-ip answers
`request_method : GET | ip_dest: <server address>\\n`. Our echo-ip appends
` | ip_src: <client address>` before the newline, the client address being what netemu users
want to see (SNAT or not through a Service); the fields the image prints keep its format.

Declared UDP containerPorts answer any datagram with the same text (method "UDP" for echo-ip).
"""
from __future__ import annotations

from netemu.workloads.httpbase import HTML, TEXT, Site, StandInHandler
from netemu.workloads.httpconn import serve_http
from netemu.workloads.listeners import Loop
from netemu.workloads.model import WorkloadContext, tcp_ports, udp_ports


def echo_ip_line(method: str, server_ip: str, client_ip: str) -> str:
    return f"request_method : {method} | ip_dest: {server_ip} | ip_src: {client_ip}\n"


class HostnameHandler(StandInHandler):
    content_type = HTML

    def route(self) -> None:
        self.reply(200, self.server.hostname + "\n", self.content_type)


class GenericHandler(HostnameHandler):
    content_type = TEXT


class EchoIpHandler(StandInHandler):
    def route(self) -> None:
        self.reply(200, echo_ip_line(self.command, self.local_address[0], self.client_ip), HTML)


class GenericSite(Site):
    server_header = "netemu"


def start_echo_hname(ctx: WorkloadContext, loop: Loop) -> None:
    _start(ctx, loop, Site(ctx), HostnameHandler)


def start_generic(ctx: WorkloadContext, loop: Loop) -> None:
    _start(ctx, loop, GenericSite(ctx), GenericHandler)


def start_echo_ip(ctx: WorkloadContext, loop: Loop) -> None:
    site = Site(ctx)
    for port in tcp_ports(ctx, 80):
        serve_http(loop, port, EchoIpHandler, site)
    for port in udp_ports(ctx):
        loop.add_udp(port, lambda data, client, local: echo_ip_line("UDP", local[0], client[0]).encode())


def _start(ctx: WorkloadContext, loop: Loop, site: Site, handler: type[StandInHandler]) -> None:
    for port in tcp_ports(ctx, 80):
        serve_http(loop, port, handler, site)
    answer = (site.hostname + "\n").encode()
    for port in udp_ports(ctx):
        loop.add_udp(port, lambda data, client, local: answer)
