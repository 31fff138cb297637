"""Where the lab's API server listens, besides the root-only Unix socket: TLS on a free loopback port
of the host (as kind publishes its API server) and TLS at the control-plane node's address, port 6443,
inside the lab (behind the `kubernetes` Service). Both with the lab's own CA (netemu.api.pki)."""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket

from netemu import paths
from netemu.control.addons import API_SERVER_PORT as API_PORT
from netemu.dataplane.nsutil import netns_path

log = logging.getLogger("netemu.listeners")


def pki_dir(lab: str) -> str:
    return os.path.join(paths.lab_dir(lab), "pki")


def info_file(lab: str) -> str:
    return os.path.join(paths.lab_dir(lab), "apiserver.json")


def control_plane(lab):
    """The lab's (first) control-plane node, if it has one."""
    return next((n for n in lab.spec.nodes or [] if n.role == "control-plane"), None)


def control_plane_ip(lab) -> str | None:
    cp = control_plane(lab)
    return cp.ip if cp else None


def kubernetes_service_ip(lab) -> str:
    return str(ipaddress.ip_network(lab.spec.service_cidr, strict=False)[1])


async def serve_host(daemon, server, reuse: bool = False) -> None:
    """Make the lab's certificates and listen on 127.0.0.1:<free port> (never on another host address).
    reuse: a restarted control process keeps the lab's CA, certificates and port (kubeconfigs, tokens
    and in-cluster clients stay valid); what is missing is made anew."""
    from netemu.api import pki as pki_mod

    lab = daemon.lab
    name = daemon.name
    cp_ip = control_plane_ip(lab)
    ips = ["127.0.0.1", kubernetes_service_ip(lab)] + ([cp_ip] if cp_ip else [])
    domain = lab.spec.cluster_domain
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
           f"kubernetes.default.svc.{domain}"] + ([n.name for n in lab.spec.nodes or [] if n.role == "control-plane"])
    pki = None
    if reuse:
        try:
            pki = pki_mod.load(pki_dir(name))
        except (OSError, ValueError) as e:
            log.error("the lab's certificates cannot be read again (%s): making new ones; kubeconfigs and "
                      "tokens made before are no longer valid", e)
    if pki is None:
        pki = pki_mod.make_pki(name, ips, dns)
        pki_mod.save(pki, pki_dir(name))
    daemon.api_pki = server.pki = pki
    server.ssl_context = pki_mod.server_ssl_context(pki, pki_dir(name))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port = _saved_port(name) if reuse else 0
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as e:
        if not port:
            raise
        log.error("the API server's port %d is taken (%s): listening on another; kubeconfigs need "
                  "`netemu kubeconfig` again", port, e)
        sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    sock.setblocking(False)
    server.host_port = sock.getsockname()[1]
    await server.serve_tls(sock, server.ssl_context)
    tmp = info_file(name) + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"server": f"https://127.0.0.1:{server.host_port}", "port": server.host_port}, f)
    os.replace(tmp, info_file(name))
    log.info("API server on https://127.0.0.1:%d", server.host_port)


def _saved_port(lab: str) -> int:
    try:
        with open(info_file(lab)) as f:
            return int(json.load(f)["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


async def serve_in_lab(daemon, server) -> None:
    """Listen at the control-plane node's address inside its namespace, so that pods reach the API
    through https://kubernetes.default.svc (10.96.0.1:443 -> <cp>:6443 by kube-proxy's rules)."""
    cp = control_plane(daemon.lab)
    if cp is None or cp.ip is None or daemon.net is None:
        return
    sock = socket_in_netns(netns_path(daemon.net.node_netns(cp.name)), cp.ip, API_PORT)
    await server.serve_tls(sock, server.ssl_context)
    log.info("API server on https://%s:%d inside node %s", cp.ip, API_PORT, cp.name)


def socket_in_netns(netns_path: str, ip: str, port: int) -> socket.socket:
    """A listening socket that belongs to another network namespace: made there (nsutil.socket_in moves
    only this thread, and back), bound and served from here."""
    from netemu.dataplane.nsutil import socket_in

    s = socket_in(netns_path, socket.AF_INET6 if ":" in ip else socket.AF_INET)  # an IPv6-only lab's node
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        s.listen(256)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s
