"""`netemu dns --server <IPv6>`: the query goes out on an IPv6 socket (in the pod's or node's namespace) to
[addr]:53; IPv4 servers as before. The whole command against a small DNS server on ::1 / 127.0.0.1 (the
namespace switch replaced by a plain socket)."""
from __future__ import annotations

import socket
import threading
from types import SimpleNamespace

import pytest

from netemu.cli import dns_cmds
from netemu.cli.dns_cmds import server_address


def test_server_address():
    assert server_address("10.96.0.10") == (socket.AF_INET, ("10.96.0.10", 53), "10.96.0.10:53")
    assert server_address("fd00:10:96::a") == (socket.AF_INET6, ("fd00:10:96::a", 53, 0, 0), "[fd00:10:96::a]:53")
    assert server_address("[FD00:10:96:0::A]") == (socket.AF_INET6, ("fd00:10:96::a", 53, 0, 0),
                                                    "[fd00:10:96::a]:53")
    assert server_address(" ::1 ", 5353)[1:] == (("::1", 5353, 0, 0), "[::1]:5353")
    # not an address: left as it was (an IPv4 socket)
    assert server_address("dns.example") == (socket.AF_INET, ("dns.example", 53), "dns.example:53")


def _loopback6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class _FakeClient:
    def __init__(self, lab):
        pass

    def call(self, op, **kw):
        if op == "lab":
            return {"spec": {"clusterDNS": "10.96.0.10", "clusterDomain": "cluster.local"}}
        if op == "node_netns":
            return "ne-x-m-k8s"
        raise AssertionError(op)


def _answer_once(family: int, host: str) -> tuple[socket.socket, threading.Thread]:
    from dnslib import AAAA, QTYPE, RR, DNSRecord

    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(5)

    def serve():
        data, peer = sock.recvfrom(4096)
        q = DNSRecord.parse(data)
        reply = q.reply()
        reply.add_answer(RR(q.q.qname, QTYPE.AAAA, rdata=AAAA("fd00:10:96::1"), ttl=30))
        sock.sendto(reply.pack(), peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return sock, t


@pytest.mark.parametrize("family,host", [(socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")])
def test_dns_command_asks_an_ipv6_server(monkeypatch, capsys, family, host):
    pytest.importorskip("dnslib")
    if family == socket.AF_INET6 and not _loopback6():
        pytest.skip("no IPv6 loopback here")
    sock, t = _answer_once(family, host)
    port = sock.getsockname()[1]
    made = []

    def socket_in(netns, fam, type_):
        made.append((netns, fam))
        return socket.socket(fam, type_)

    from netemu.dataplane import nsutil

    monkeypatch.setattr(nsutil, "socket_in", socket_in)
    monkeypatch.setattr(dns_cmds, "Client", _FakeClient)
    monkeypatch.setattr(dns_cmds, "pick_lab", lambda lab: "x")
    # the server's port is 53 in a lab; here the test server's
    real = dns_cmds.server_address
    monkeypatch.setattr(dns_cmds, "server_address", lambda server: real(server, port))
    args = SimpleNamespace(lab=None, server=host, namespace=None, from_pod=None, node=None, type="AAAA",
                           name="kubernetes.default.svc.cluster.local.", search=True, timeout=3.0, verbose=False)
    try:
        assert dns_cmds.cmd_dns(args) == 0
    finally:
        t.join(5)
        sock.close()
    out = capsys.readouterr().out
    shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    assert f";; node m-k8s -> {shown}, " in out and "status: NOERROR" in out
    assert "fd00:10:96::1" in out
    assert made == [("/run/netns/ne-x-m-k8s", family)]
