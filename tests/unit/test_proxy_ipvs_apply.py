"""netemu's IPVS applier (proxy.ipvs.apply.IpvsBackend) against a fake node namespace, and `render ipvs`.

The real kernel side is exercised in the throwaway VM (tests/e2e/test_ipvs_vm.py); here the
commands the backend would run are recorded and the kernel's answers are canned.
"""
from __future__ import annotations

import types

import pytest

from netemu.dataplane.proxy.ipvs.apply import IpvsBackend
from netemu.dataplane.proxy.ipvs.kernel import ipvs_available, unavailable_message
from netemu.dataplane.proxy.ipvs.render import IpvsSettings, render_text
from netemu.dataplane.proxy.runner import FakeRunner, RunError
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


class FakeNode(FakeRunner):
    """Answers the read commands the backend runs (a node without kube-ipvs0 yet); records every command."""

    def __init__(self):
        super().__init__({
            ("ip", "-o", "address", "show"): (
                "1: lo    inet 127.0.0.1/8 scope host lo\n"
                "2: eth0    inet 192.168.1.101/24 brd 192.168.1.255 scope global eth0\n"
                "3: cni0    inet 172.16.1.1/24 scope global cni0\n"
                "3: cni0    inet6 fe80::1/64 scope link\n"),
            ("ip", "-o", "address", "show", "dev"): RunError('Device "kube-ipvs0" does not exist.'),
        })
        self.conns = ""

    def run(self, netns, argv, stdin=None):
        self.answer(("ipvsadm", "-L", "-n"), LIST_HEAD + self.conns)
        return super().run(netns, argv, stdin)


@pytest.fixture
def node():
    return FakeNode()


def lab(**spec):
    return types.SimpleNamespace(spec=types.SimpleNamespace(**{"iptables_backend": "nft", "ipvs_scheduler": "rr",
                                                               **spec}))


def test_first_sync_observes_then_applies(node):
    backend = IpvsBackend(lab(), node)
    full, lines = backend.apply("ne-lab-w1-k8s", service(), None)
    assert full and lines == 83
    assert {c.netns for c in node.calls} == {"ne-lab-w1-k8s"}
    cmds = node.commands()
    assert cmds[:5] == [("ip", "-o", "address", "show"), ("ipvsadm-save", "-n"),
                        ("ip", "-o", "address", "show", "dev", "kube-ipvs0"), ("ipset", "save"), ("iptables-nft-save",)]
    assert cmds[5:] == [("ip", "-batch", "-"), ("ipset", "-exist", "restore"), ("ipvsadm", "-R"),
                        cmds[8], ("iptables-nft-restore", "--noflush", "-w")]
    assert cmds[8] == ("sysctl", "-q", "-w", "net.ipv4.vs.conntrack=1", "net.ipv4.vs.expire_nodest_conn=1",
                       "net.ipv4.vs.expire_quiescent_template=1", "net.ipv4.ip_forward=1",
                       "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2")
    sent = dict(node.sent())
    assert sent[("ip", "-batch", "-")] == "link add kube-ipvs0 type dummy\naddress add 10.96.0.50/32 dev kube-ipvs0\n"
    # NodePort virtual servers on every node address kube-proxy would list: eth0's and cni0's, not lo's
    assert sent[("ipvsadm", "-R")] == (
        "-A -t 10.96.0.50:80 -s rr\n"
        "-a -t 10.96.0.50:80 -r 172.16.1.10:8080 -m -w 1\n"
        "-a -t 10.96.0.50:80 -r 172.16.1.11:8080 -m -w 1\n"
        "-A -t 192.168.1.101:30000 -s rr\n"
        "-a -t 192.168.1.101:30000 -r 172.16.1.10:8080 -m -w 1\n"
        "-a -t 192.168.1.101:30000 -r 172.16.1.11:8080 -m -w 1\n"
        "-A -t 172.16.1.1:30000 -s rr\n"
        "-a -t 172.16.1.1:30000 -r 172.16.1.10:8080 -m -w 1\n"
        "-a -t 172.16.1.1:30000 -r 172.16.1.11:8080 -m -w 1\n")
    sets = sent[("ipset", "-exist", "restore")]
    assert sets.startswith("create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536\n"
                           "add KUBE-LOOP-BACK 172.16.1.10,tcp:8080,172.16.1.10\n")
    assert "add KUBE-CLUSTER-IP 10.96.0.50,tcp:80\n" in sets and "add KUBE-NODE-PORT-TCP 30000\n" in sets
    ipt = sent[("iptables-nft-restore", "--noflush", "-w")]
    assert ipt.startswith("*nat\n:KUBE-SERVICES - [0:0]\n") and ipt.endswith("-j REJECT\nCOMMIT\n")


def test_incremental_sync_and_graceful_reap(node):
    backend = IpvsBackend(lab(), node)
    backend.apply("n", service(), None)
    node.calls.clear()
    assert backend.apply("n", service(), {"default/np-svc"}) == (False, 0)
    assert node.calls == []
    # 172.16.1.11 leaves: weight 0, then reaped where it has no connection left
    node.conns = ("TCP  10.96.0.50:80 rr\n  -> 172.16.1.10:8080 Masq 1 0 0\n  -> 172.16.1.11:8080 Masq 0 1 3\n"
                  "TCP  192.168.1.101:30000 rr\n  -> 172.16.1.11:8080 Masq 0 0 0\n"
                  "TCP  172.16.1.1:30000 rr\n  -> 172.16.1.11:8080 Masq 0 0 0\n")
    assert backend.apply("n", service(("172.16.1.10",)), {"default/np-svc"}) == (False, 9)
    assert node.sent() == [
        (("ipset", "-exist", "restore"), "del KUBE-LOOP-BACK 172.16.1.11,tcp:8080,172.16.1.11\n"),
        (("ipvsadm", "-R"), "-e -t 10.96.0.50:80 -r 172.16.1.11:8080 -m -w 0\n"
                            "-e -t 192.168.1.101:30000 -r 172.16.1.11:8080 -m -w 0\n"
                            "-e -t 172.16.1.1:30000 -r 172.16.1.11:8080 -m -w 0\n"),
        (("ipvsadm", "-L", "-n"), None),
        (("ipvsadm", "-R"), "-d -t 172.16.1.1:30000 -r 172.16.1.11:8080\n"
                            "-d -t 192.168.1.101:30000 -r 172.16.1.11:8080\n"),
    ]
    assert backend.syncer.graceful == {(("TCP", "10.96.0.50", 80), ("172.16.1.11", 8080))}
    # later: rate-limited to once a minute unless forced
    node.calls.clear()
    assert backend.reap("n") == 0 and node.calls == []
    node.conns = "TCP  10.96.0.50:80 rr\n  -> 172.16.1.11:8080 Masq 0 0 0\n"
    assert backend.reap("n", force=True) == 2
    assert backend.syncer.graceful == frozenset()


def test_failure_makes_the_next_sync_observe_again(node):
    backend = IpvsBackend(lab(), node)
    node.fail(("ipvsadm", "-R"), "Memory allocation problem")
    with pytest.raises(RunError):
        backend.apply("n", service(), None)
    assert backend.syncer.state is None
    del node.answers[("ipvsadm", "-R")]
    node.calls.clear()
    full, _ = backend.apply("n", service(), {"default/np-svc"})
    assert full and ("ipvsadm-save", "-n") in node.commands()


def test_scheduler_and_legacy_iptables_from_the_lab(node):
    backend = IpvsBackend(lab(ipvs_scheduler="lc", iptables_backend="legacy"), node)
    backend.apply("n", service(), None)
    assert "-A -t 10.96.0.50:80 -s lc\n" in dict(node.sent())[("ipvsadm", "-R")]
    assert ("iptables-legacy-restore", "--noflush", "-w") in node.commands()


def test_rules_text(node):
    text = IpvsBackend(lab(), node).rules("n")
    assert text.startswith("# ipvsadm-save -n\n")
    assert "# ip address show kube-ipvs0\n# " in text   # the error of the missing link, as a comment
    assert "# ipset save\n" in text and "# iptables-nft-save\n" in text


def test_unavailable_message_names_the_modes_that_work():
    msg = unavailable_message(["no IP Virtual Server (ip_vs)"])
    assert "proxy mode ipvs cannot run on this kernel" in msg
    assert "Modes that work here: iptables, nftables" in msg
    assert unavailable_message([]) is None


def test_ipvs_available_answers_fast_on_this_machine():
    assert isinstance(ipvs_available(), bool)


def test_render_text_sections():
    text = render_text(service(), IpvsSettings(scheduler="wrr"), jumps=True)
    assert text.startswith("# kube-ipvs0 (ip -batch -): 1 service addresses")
    assert "address add 10.96.0.50/32 dev kube-ipvs0\n" in text
    assert "-A -t 10.96.0.50:80 -s wrr\n-a -t 10.96.0.50:80 -r 172.16.1.10:8080 -m -w 1\n" in text
    assert '# iptables -t filter -I INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER' in text
    assert text.rstrip().endswith("net.ipv4.conf.all.arp_announce=2")
