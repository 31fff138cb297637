"""Cluster add-ons whose work the lab does itself, installed from their upstream manifests
(MetalLB's metallb-native.yaml, metrics-server's components.yaml): the lab allocates and announces
LoadBalancer IPs and serves metrics.k8s.io from its control process, so their pods need not run the
real programs. The stand-in answers what the manifests check: every declared port and every probe
port, over TLS where the probe says HTTPS (a self-signed certificate, as the real ones make), with
200 on /healthz, /livez, /readyz and /metrics, so the Deployment becomes Ready like the real one."""
from __future__ import annotations

import os
import ssl

from netemu.workloads.httpbase import TEXT, Site, StandInHandler
from netemu.workloads.httpconn import serve_blocking, serve_http
from netemu.workloads.listeners import Loop
from netemu.workloads.model import WorkloadContext, tcp_ports

class HealthHandler(StandInHandler):
    def route(self) -> None:
        if self.path_only == "/metrics":
            self.reply(200, "# netemu stand-in: no metrics of its own\n", TEXT)
        else:
            self.reply(200, "ok", TEXT)


def _tls_context() -> ssl.SSLContext:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "netemu-addon")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=365)).sign(key, hashes.SHA256()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # in memory (a read-only root has no room for files): ssl reads them through /proc/self/fd
    pem = (cert.public_bytes(serialization.Encoding.PEM)
           + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()))
    fd = os.memfd_create("netemu-addon-cert")
    try:
        os.write(fd, pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return ctx


def start_addon(ctx: WorkloadContext, loop: Loop) -> None:
    site = Site(ctx)
    tls = None
    for port in tcp_ports(ctx, 8080):
        if port in ctx.tls_ports:
            tls = tls or _tls_context()
            loop.add_tcp(port, lambda conn, client, t=tls: serve_blocking(
                t.wrap_socket(conn, server_side=True), client, HealthHandler, site))
        else:
            serve_http(loop, port, HealthHandler, site)
