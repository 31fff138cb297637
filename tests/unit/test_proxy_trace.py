"""`netemu trace` through one path for every proxy mode (netemu.dataplane.proxy.trace, the control
process's `trace` op): the lab's mode picks the tracer over the node's rules, every mode answers in the
same shape, with the node's conntrack entries. No kernel: the node's iptables-save comes through a fake
runner, its addresses and conntrack entries are stubbed."""
from __future__ import annotations

import asyncio
import types

import pytest

from netemu.dataplane import capture
from netemu.dataplane.proxy import trace as trace_mod
from netemu.dataplane.proxy.iptables.render import base_payload
from netemu.dataplane.proxy.iptables.render import render as iptables_render
from netemu.dataplane.proxy.kubeproxy import KubeProxy
from netemu.dataplane.proxy.runner import FakeRunner
from netemu.dataplane.proxy.view import build_view
from netemu.spec.models import EndpointSlice, Service

NODE, NODE_IP, HOST = "w1-k8s", "192.168.1.101", "192.168.1.1"
ENDPOINTS = ("172.16.1.10", "172.16.1.11")
NODEPORT = {"via": "NodePort 30000 (port http)", "ip": NODE_IP, "port": 30000, "proto": "tcp"}
CONNTRACK = (f"tcp      6 117 TIME_WAIT src={HOST} dst={NODE_IP} sport=51234 dport=30000 "
             f"src=172.16.1.11 dst={NODE_IP} sport=8080 dport=4711 [ASSURED] mark=0 use=1\n")


def objects():
    svc = Service.model_validate({"metadata": {"namespace": "default", "name": "np-svc"}, "spec": {
        "type": "NodePort", "clusterIP": "10.96.0.50",
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30000, "protocol": "TCP"}]}})
    sl = EndpointSlice.model_validate({
        "metadata": {"namespace": "default", "name": "np-svc-x", "labels": {"kubernetes.io/service-name": "np-svc"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "nodeName": NODE} for ip in ENDPOINTS]})
    return [svc], [sl]


class Store:
    def __init__(self):
        services, slices = objects()
        self.objects = {"Service": services, "EndpointSlice": slices}
        self.generation = {"Service": 1, "EndpointSlice": 1}

    def list(self, kind):
        return list(self.objects[kind])


def kube_proxy(mode: str, synced: bool = True) -> KubeProxy:
    lab = types.SimpleNamespace(spec=types.SimpleNamespace(
        proxy_mode=mode, iptables_backend="nft", service_cidr="10.96.0.0/12", pod_cidr="172.16.0.0/16",
        ipvs_scheduler="rr"))
    net = types.SimpleNamespace(nodes={NODE: types.SimpleNamespace(name=NODE, ip=NODE_IP)},
                                node_netns=lambda n: f"ne-lab_{n}")
    view = build_view(*objects(), node_name=NODE, node_ips=[NODE_IP], cluster_cidr="172.16.0.0/16")
    runner = FakeRunner({("iptables-nft-save",): base_payload() + iptables_render(view).payload()})
    kp = KubeProxy(lab, net, runner)
    if synced and mode != "ipvs":
        asyncio.run(kp.sync(Store()))
    return kp


@pytest.fixture
def node_kernel(monkeypatch):
    """The node's addresses and conntrack table, as `ip addr` and `conntrack -L` would give them."""
    asked = []

    def conntrack(netns, dst=None, dport=None, proto="tcp"):
        asked.append((netns, dst, dport, proto))
        return capture.parse_conntrack(CONNTRACK)
    monkeypatch.setattr(capture, "local_addresses", lambda netns: {NODE_IP, "127.0.0.1"})
    monkeypatch.setattr(capture, "conntrack_entries", conntrack)
    return asked


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_every_mode_is_traced_by_one_call_in_one_shape(node_kernel, mode):
    doc = trace_mod.trace(kube_proxy(mode), NODE, mode, HOST, [NODEPORT])
    assert (doc["node"], doc["netns"], doc["mode"], doc["src"]) == (NODE, f"ne-lab_{NODE}", mode, HOST)
    r, = doc["results"]
    assert set(r) >= {"via", "ip", "port", "proto", "src", "entry", "nat", "filter", "chains", "dnat", "verdicts",
                      "masquerade", "conntrack"}
    assert r["conntrack"] == [{"src": f"{HOST}:51234", "dst": f"{NODE_IP}:30000", "state": "TIME_WAIT",
                               "dnat": "172.16.1.11:8080", "snat": f"{NODE_IP}:4711", "flags": ["ASSURED"],
                               "raw": CONNTRACK.strip()}]
    assert node_kernel == [(f"ne-lab_{NODE}", NODE_IP, 30000, "tcp")]
    if mode == "ipvs":  # no rule walk: the kernel's choice is in conntrack
        assert r["no_walk"] and r["nat"] == [] and r["dnat"] == [] and not r["masquerade"]
        return
    assert sorted(r["dnat"]) == [f"{ip}:8080" for ip in ENDPOINTS] and r["masquerade"]
    if mode == "iptables":
        assert r["entry"] == "PREROUTING" and r["nat"][0]["rule"].startswith("-A KUBE-SERVICES")
        assert any(c.startswith("KUBE-SVC-") for c in r["chains"]) and any(c.startswith("KUBE-SEP-")
                                                                         for c in r["chains"])
    else:
        assert r["entry"] == "prerouting" and "nat-prerouting" in {m["chain"] for m in r["nat"]}
        assert any(c.startswith("service-") for c in r["chains"]) and any(c.startswith("endpoint-")
                                                                        for c in r["chains"])


def test_a_node_that_cannot_be_traced_yet_says_why(node_kernel, monkeypatch):
    with pytest.raises(trace_mod.TraceError, match="kube-proxy on w1-k8s has not synced yet"):
        trace_mod.trace(kube_proxy("nftables", synced=False), NODE, "nftables", HOST, [NODEPORT])

    def no_namespace(netns):
        raise capture.CaptureError(f"ip -n {netns} addr: Cannot open network namespace")
    monkeypatch.setattr(capture, "local_addresses", no_namespace)
    with pytest.raises(trace_mod.TraceError, match="Cannot open network namespace"):
        trace_mod.trace(kube_proxy("iptables"), NODE, "iptables", HOST, [NODEPORT])
