"""What kube-proxy's appliers send to a node, through a fake runner (no root, no kernel): the exact
commands and inputs of a full and a partial sync in iptables and nftables mode, adopting a node's
rules after a restart, and KubeProxy's per-node loop (stale UDP conntrack entries). IPVS mode's
applier: test_proxy_ipvs_apply.py."""
from __future__ import annotations

import asyncio
import json
import types

import pytest

from netemu.dataplane.proxy.iptables.apply import IptablesBackend
from netemu.dataplane.proxy.iptables.render import base_payload
from netemu.dataplane.proxy.iptables.render import render as iptables_render
from netemu.dataplane.proxy.kubeproxy import KubeProxy
from netemu.dataplane.proxy.nftables.apply import NftablesBackend
from netemu.dataplane.proxy.nftables.render import render as nftables_render
from netemu.dataplane.proxy.runner import FakeRunner, RunError
from netemu.dataplane.proxy.view import build_view
from netemu.spec.models import EndpointSlice, Service

NETNS = "ne-lab-w1-k8s"
RESTORE = ("iptables-nft-restore", "--noflush", "-w")
NFT = ("nft", "-f", "-")


def objects(endpoints=("172.16.1.10", "172.16.1.11"), protocol="TCP"):
    svc = Service.model_validate({"metadata": {"namespace": "default", "name": "np-svc"}, "spec": {
        "type": "NodePort", "clusterIP": "10.96.0.50",
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30000, "protocol": protocol}]}})
    sl = EndpointSlice.model_validate({
        "metadata": {"namespace": "default", "name": "np-svc-x", "labels": {"kubernetes.io/service-name": "np-svc"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": protocol}],
        "endpoints": [{"addresses": [ip], "nodeName": "w1-k8s"} for ip in endpoints]})
    return [svc], [sl]


def view(endpoints=("172.16.1.10", "172.16.1.11")):
    return build_view(*objects(endpoints), node_name="w1-k8s", node_ips=["192.168.1.101"],
                      cluster_cidr="172.16.0.0/16")


def lab(mode="iptables"):
    return types.SimpleNamespace(spec=types.SimpleNamespace(
        proxy_mode=mode, iptables_backend="nft", service_cidr="10.96.0.0/12", pod_cidr="172.16.0.0/16",
        ipvs_scheduler="rr"))


# --------------------------------------------------------------------------- iptables
def test_iptables_full_sync_is_one_restore_with_the_base_chains():
    runner = FakeRunner()
    backend = IptablesBackend(lab(), runner)
    v = view()
    payload = base_payload() + iptables_render(v).payload()
    assert backend.apply(NETNS, v, None) == (True, payload.count("\n"))
    assert [(c.netns, c.argv, c.stdin) for c in runner.calls] == [(NETNS, RESTORE, payload)]
    assert payload.startswith("*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n*filter\n")


def test_iptables_partial_sync_sends_the_changed_chains_only():
    runner = FakeRunner()
    backend = IptablesBackend(lab(), runner)
    backend.apply(NETNS, view(), None)
    runner.calls.clear()
    assert backend.apply(NETNS, view(), {"default/np-svc"}) == (False, 0)   # nothing changed: nothing sent
    assert runner.calls == []
    assert backend.apply(NETNS, view(("172.16.1.10",)), {"default/np-svc"}) == (False, 7)
    assert runner.sent() == [(RESTORE, (
        "*nat\n"
        ":KUBE-SEP-R2KQSYWG6DTQQ5T5 - [0:0]\n"
        ":KUBE-SVC-DUCBKF5X6SF6MMTH - [0:0]\n"
        '-A KUBE-SVC-DUCBKF5X6SF6MMTH -m comment --comment "default/np-svc:http cluster IP" -m tcp -p tcp '
        "-d 10.96.0.50 --dport 80 ! -s 172.16.0.0/16 -j KUBE-MARK-MASQ\n"
        '-A KUBE-SVC-DUCBKF5X6SF6MMTH -m comment --comment "default/np-svc:http -> 172.16.1.10:8080" '
        "-j KUBE-SEP-LHEWB2O3D4JYWTAD\n"
        "-X KUBE-SEP-R2KQSYWG6DTQQ5T5\n"
        "COMMIT\n"))]


def test_iptables_a_refused_restore_makes_the_next_sync_full():
    runner = FakeRunner()
    backend = IptablesBackend(lab(), runner)
    backend.apply(NETNS, view(), None)
    runner.fail(RESTORE, "line 3 failed")
    with pytest.raises(RunError):
        backend.apply(NETNS, view(("172.16.1.10",)), {"default/np-svc"})
    del runner.answers[RESTORE]
    full, _ = backend.apply(NETNS, view(("172.16.1.10",)), {"default/np-svc"})
    assert full and not runner.calls[-1].stdin.startswith("*mangle")   # the base chains are there already


def test_iptables_adopt_and_rules():
    runner = FakeRunner({("iptables-nft-save", "-t", "nat"): "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-OLD - [0:0]\n",
                         ("iptables-nft-save",): "# everything\n"})
    backend = IptablesBackend(lab(), runner)
    backend.adopt(NETNS)
    assert runner.commands() == [("iptables-nft-save", "-t", "filter"), ("iptables-nft-save", "-t", "nat")]
    full, _ = backend.apply(NETNS, view(), None)
    payload = runner.calls[-1].stdin
    assert full and payload.startswith("*filter\n") and "-X KUBE-SVC-OLD\n" in payload
    assert backend.rules(NETNS) == "# everything\n"


# --------------------------------------------------------------------------- nftables
def test_nftables_full_sync_is_one_transaction():
    runner = FakeRunner()
    backend = NftablesBackend(lab("nftables"), runner)
    v = view()
    text = nftables_render(v, service_cidrs=("10.96.0.0/12",)).fast_text(fresh=True)
    assert backend.apply(NETNS, v, None) == (True, text.count("\n"))
    assert runner.sent() == [(NFT, text)]


def test_nftables_partial_sync_then_the_stale_chain_cleanup():
    runner = FakeRunner()
    backend = NftablesBackend(lab("nftables"), runner)
    backend.syncer.stale_chain_delay = -1.0   # stale chains go at the next sync
    backend.apply(NETNS, view(), None)
    runner.calls.clear()
    assert backend.apply(NETNS, view(("172.16.1.10",)), {"default/np-svc"}) == (False, 13)
    svc, ext = "service-II5TDOKT-default/np-svc/tcp/http", "external-II5TDOKT-default/np-svc/tcp/http"
    ep10 = "endpoint-XQE2S7N2-default/np-svc/tcp/http__172.16.1.10/8080"
    ep11 = "endpoint-QC6DA7P7-default/np-svc/tcp/http__172.16.1.11/8080"
    t = "ip kube-proxy"
    assert runner.sent() == [(NFT, "".join(line + "\n" for line in (
        f"add chain {t} {ep10}", f"flush chain {t} {ep10}",
        f"add chain {t} {svc}", f"flush chain {t} {svc}",
        f"add chain {t} {ext}", f"flush chain {t} {ext}",
        f"add rule {t} {svc} ip daddr 10.96.0.50 ip saddr != 172.16.0.0/16 jump mark-for-masquerade",
        f"add rule {t} {ext} jump mark-for-masquerade",
        f"add rule {t} {ext} goto {svc}",
        f"add rule {t} {svc} goto {ep10}",
        f"add rule {t} {ep10} ip saddr 172.16.1.10 jump mark-for-masquerade",
        f"add rule {t} {ep10} meta l4proto tcp dnat to 172.16.1.10:8080",
        f"flush chain {t} {ep11}")))]
    # the flushed chain is deleted by the next sync, in a transaction of its own; a failure to
    # delete it is not an error (it stays stale and is tried again)
    runner.calls.clear()
    runner.fail(NFT, "Device or resource busy")
    assert backend.apply(NETNS, view(("172.16.1.10",)), set()) == (False, 0)
    assert runner.sent() == [(NFT, f"delete chain {t} {ep11}\n")]
    assert ep11 in backend.syncer.stale_chains()


def test_nftables_adopt_and_rules():
    table = {"nftables": [{"table": {"name": "kube-proxy"}},
                          {"chain": {"name": "service-OLDOLDOL-default/old/tcp/http"}},
                          {"set": {"name": "affinity-OLDOLDOL-default/old/tcp/http__10.0.0.1/80"}}]}
    runner = FakeRunner({("nft", "-j", "list"): json.dumps(table), ("nft", "list"): "table ip kube-proxy {}\n"})
    backend = NftablesBackend(lab("nftables"), runner)
    backend.adopt(NETNS)
    backend.apply(NETNS, view(), None)
    text = runner.calls[-1].stdin
    assert "flush chain ip kube-proxy service-OLDOLDOL-default/old/tcp/http\n" in text
    assert "delete set ip kube-proxy affinity-OLDOLDOL-default/old/tcp/http__10.0.0.1/80\n" in text
    assert backend.rules(NETNS) == "table ip kube-proxy {}\n"
    assert runner.calls[-1].argv == ("nft", "list", "table", "ip", "kube-proxy")


# --------------------------------------------------------------------------- every node
class Store:
    def __init__(self, services, slices):
        self.objects = {"Service": services, "EndpointSlice": slices}
        self.generation = {"Service": 1, "EndpointSlice": 1}

    def list(self, kind):
        return list(self.objects[kind])

    def find(self, kind, namespace, name):
        return next((o for o in self.objects[kind] if (o.metadata.namespace, o.metadata.name) == (namespace, name)),
                    None)

    def select(self, kind, namespace, selector):
        return [o for o in self.objects[kind] if o.metadata.namespace == namespace
                and all((o.metadata.labels or {}).get(k) == v for k, v in selector.items())]


def kube_proxy(runner, mode="iptables"):
    nodes = {n: types.SimpleNamespace(name=n, ip=ip) for n, ip in (("w1-k8s", "192.168.1.101"),
                                                                   ("w2-k8s", "192.168.1.102"))}
    net = types.SimpleNamespace(nodes=nodes, node_netns=lambda n: f"ne-lab-{n}")
    return KubeProxy(lab(mode), net, runner)


def test_kube_proxy_syncs_every_node_and_clears_stale_udp_flows():
    runner = FakeRunner()
    kp = kube_proxy(runner)
    store = Store(*objects(protocol="UDP"))
    asyncio.run(kp.sync(store))
    # the first sync: flows set up before the Service had endpoints (never DNATed) are cleared too
    for netns in ("ne-lab-w1-k8s", "ne-lab-w2-k8s"):
        assert [c.argv for c in runner.calls if c.netns == netns] == [
            RESTORE,
            ("conntrack", "-D", "-p", "udp", "--orig-dst", "10.96.0.50", "--orig-port-dst", "80",
             "--reply-src", "10.96.0.50"),
            ("conntrack", "-D", "-p", "udp", "--orig-port-dst", "30000")]
    runner.calls.clear()
    store.objects["EndpointSlice"] = objects(("172.16.1.10",), "UDP")[1]
    store.generation["EndpointSlice"] += 1
    kp.note_change("EndpointSlice", "MODIFIED", store.objects["EndpointSlice"][0])
    runner.fail(("conntrack",), "0 flow entries have been deleted")   # ignored
    asyncio.run(kp.sync(store))
    w1 = [c.argv for c in runner.calls if c.netns == "ne-lab-w1-k8s"]
    assert w1 == [RESTORE,
                  ("conntrack", "-D", "-p", "udp", "--orig-dst", "10.96.0.50", "--orig-port-dst", "80",
                   "--reply-src", "172.16.1.11"),
                  ("conntrack", "-D", "-p", "udp", "--orig-port-dst", "30000", "--reply-src", "172.16.1.11")]
    assert all(n.syncs == 2 and n.failures == 0 for n in kp.nodes.values())


def test_kube_proxy_adopt_survives_a_node_without_rules():
    runner = FakeRunner({("nft", "-j", "list"): RunError("No such file or directory")})
    kp = kube_proxy(runner, "nftables")
    kp.adopt()
    assert [c.argv[:3] for c in runner.calls] == [("nft", "-j", "list")] * 2


def test_unknown_mode():
    with pytest.raises(ValueError, match="modes: iptables, nftables, ipvs"):
        kube_proxy(FakeRunner(), "userspace")
