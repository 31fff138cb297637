"""netemu's IPVS applier (ipvsapply.IpvsBackend) against a fake node namespace, and `render ipvs`.

The real kernel side is exercised in the throwaway VM (tests/e2e/test_ipvs_vm.py); here the
commands the backend would run are recorded and the kernel's answers are canned.
"""
from __future__ import annotations

import types

import pytest

from netemu.dataplane import ipvsapply
from netemu.dataplane.proxy.ipvs import IpvsSettings, render_text
from netemu.dataplane.proxy.view import build_view
from netemu.spec.models import EndpointSlice, Service

LIST_HEAD = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
"""


def service(endpoints=("172.16.1.10", "172.16.1.11")):
    svc = Service.model_validate({"metadata": {"namespace": "default", "name": "np-svc"}, "spec": {
        "type": "NodePort", "clusterIP": "10.96.0.50",
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30000}]}})
    sl = EndpointSlice.model_validate({
        "metadata": {"namespace": "default", "name": "np-svc-x", "labels": {"kubernetes.io/service-name": "np-svc"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "nodeName": "w1-k8s"} for ip in endpoints]})
    return build_view([svc], [sl], node_name="w1-k8s", node_ips=["192.168.1.101"], cluster_cidr="172.16.0.0/16")


class FakeNode:
    """Answers the read commands the backend runs; records every command."""

    def __init__(self):
        self.calls: list[tuple[tuple, object]] = []
        self.conns = ""

    def __call__(self, netns, argv, stdin=None, timeout=120):
        argv = tuple(argv)
        self.calls.append((argv, stdin))
        if argv == ("ip", "-o", "address", "show"):
            return ("1: lo    inet 127.0.0.1/8 scope host lo\n"
                    "2: eth0    inet 192.168.1.101/24 brd 192.168.1.255 scope global eth0\n"
                    "3: cni0    inet 172.16.1.1/24 scope global cni0\n"
                    "3: cni0    inet6 fe80::1/64 scope link\n")
        if argv[:5] == ("ip", "-o", "address", "show", "dev"):
            raise ipvsapply.IpvsApplyError('Device "kube-ipvs0" does not exist.')
        if argv == ("ipvsadm", "-L", "-n"):
            return LIST_HEAD + self.conns
        return ""

    def commands(self):
        return [a for a, _ in self.calls]


@pytest.fixture
def node(monkeypatch):
    fake = FakeNode()
    monkeypatch.setattr(ipvsapply, "run_in_netns", fake)
    return fake


def lab(**spec):
    return types.SimpleNamespace(spec=types.SimpleNamespace(**{"iptables_backend": "nft", "ipvs_scheduler": "rr",
                                                               **spec}))


def test_first_sync_observes_then_applies(node):
    backend = ipvsapply.IpvsBackend(lab())
    full, lines = backend.apply("ne-lab-w1-k8s", service(), None)
    assert full and lines > 30
    cmds = node.commands()
    assert cmds[:5] == [("ip", "-o", "address", "show"), ("ipvsadm-save", "-n"),
                        ("ip", "-o", "address", "show", "dev", "kube-ipvs0"), ("ipset", "save"), ("iptables-nft-save",)]
    assert cmds[5:] == [("ip", "-batch", "-"), ("ipset", "-exist", "restore"), ("ipvsadm", "-R"),
                        cmds[8], ("iptables-nft-restore", "--noflush", "-w")]
    assert cmds[8][:3] == ("sysctl", "-q", "-w")
    ipvs = dict(node.calls)[("ipvsadm", "-R")]
    # NodePort virtual servers on every node address kube-proxy would list: eth0's and cni0's
    assert "-A -t 192.168.1.101:30000 -s rr\n" in ipvs and "-A -t 172.16.1.1:30000 -s rr\n" in ipvs
    assert "-A -t 127.0.0.1:30000" not in ipvs


def test_incremental_sync_and_graceful_reap(node):
    backend = ipvsapply.IpvsBackend(lab())
    backend.apply("n", service(), None)
    node.calls.clear()
    assert backend.apply("n", service(), {"default/np-svc"}) == (False, 0)
    assert node.calls == []
    # 172.16.1.11 leaves: weight 0, then reaped where it has no connection left
    node.conns = ("TCP  10.96.0.50:80 rr\n  -> 172.16.1.10:8080 Masq 1 0 0\n  -> 172.16.1.11:8080 Masq 0 1 3\n"
                  "TCP  192.168.1.101:30000 rr\n  -> 172.16.1.11:8080 Masq 0 0 0\n"
                  "TCP  172.16.1.1:30000 rr\n  -> 172.16.1.11:8080 Masq 0 0 0\n")
    full, lines = backend.apply("n", service(("172.16.1.10",)), {"default/np-svc"})
    assert not full
    stdins = [s for a, s in node.calls if a == ("ipvsadm", "-R")]
    assert stdins[0].count("-m -w 0\n") == 3
    assert stdins[1] == ("-d -t 172.16.1.1:30000 -r 172.16.1.11:8080\n"
                         "-d -t 192.168.1.101:30000 -r 172.16.1.11:8080\n")
    assert backend.syncer.graceful == {(("TCP", "10.96.0.50", 80), ("172.16.1.11", 8080))}
    # later: rate-limited to once a minute unless forced
    node.calls.clear()
    assert backend.reap("n") == 0 and node.calls == []
    node.conns = "TCP  10.96.0.50:80 rr\n  -> 172.16.1.11:8080 Masq 0 0 0\n"
    assert backend.reap("n", force=True) == 2
    assert backend.syncer.graceful == frozenset()


def test_failure_makes_the_next_sync_observe_again(node, monkeypatch):
    backend = ipvsapply.IpvsBackend(lab())

    def broken(netns, argv, stdin=None, timeout=120):
        if argv[0] == "ipvsadm" and argv[1] == "-R":
            raise ipvsapply.IpvsApplyError("Memory allocation problem")
        return node(netns, argv, stdin, timeout)
    monkeypatch.setattr(ipvsapply, "run_in_netns", broken)
    with pytest.raises(ipvsapply.IpvsApplyError):
        backend.apply("n", service(), None)
    assert backend.syncer.state is None
    monkeypatch.setattr(ipvsapply, "run_in_netns", node)
    node.calls.clear()
    full, _ = backend.apply("n", service(), {"default/np-svc"})
    assert full and ("ipvsadm-save", "-n") in node.commands()


def test_scheduler_and_legacy_iptables_from_the_lab(node):
    backend = ipvsapply.IpvsBackend(lab(ipvs_scheduler="lc", iptables_backend="legacy"))
    backend.apply("n", service(), None)
    assert "-A -t 10.96.0.50:80 -s lc\n" in dict(node.calls)[("ipvsadm", "-R")]
    assert ("iptables-legacy-restore", "--noflush", "-w") in node.commands()


def test_rules_text(node):
    text = ipvsapply.IpvsBackend(lab()).rules("n")
    assert text.startswith("# ipvsadm-save -n\n")
    assert "# ip address show kube-ipvs0\n# " in text   # the error of the missing link, as a comment
    assert "# ipset save\n" in text and "# iptables-nft-save\n" in text


def test_unavailable_message_names_the_modes_that_work():
    msg = ipvsapply.unavailable_message(["no IP Virtual Server (ip_vs)"])
    assert "proxy mode ipvs cannot run on this kernel" in msg
    assert "Modes that work here: iptables, nftables" in msg
    assert ipvsapply.unavailable_message([]) is None


def test_ipvs_available_answers_fast_on_this_machine():
    assert isinstance(ipvsapply.ipvs_available(), bool)


def test_render_text_sections():
    text = render_text(service(), IpvsSettings(scheduler="wrr"), jumps=True)
    assert text.startswith("# kube-ipvs0 (ip -batch -): 1 service addresses")
    assert "address add 10.96.0.50/32 dev kube-ipvs0\n" in text
    assert "-A -t 10.96.0.50:80 -s wrr\n-a -t 10.96.0.50:80 -r 172.16.1.10:8080 -m -w 1\n" in text
    assert '# iptables -t filter -I INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER' in text
    assert text.rstrip().endswith("net.ipv4.conf.all.arp_announce=2")
