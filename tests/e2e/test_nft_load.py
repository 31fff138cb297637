"""kube-proxy's nftables mode on a real kernel: load the rules, send real traffic (root only).

A throwaway node in namespaces of its own (names ne-tnft-<id>-*, addresses in 10.98.0.0/16,
nothing in the root namespace): a client 10.98.0.2 on the node's uplink 10.98.0.1, pods on the
node's bridge 10.98.1.0/24 serving their own name with `python3 -m http.server`. Services:

  web   ClusterIP 10.98.100.10:80 and NodePort 30080 -> 3 pods :8080
  api   ClusterIP 10.98.100.11:80 -> 2 pods :8080
  none  ClusterIP 10.98.100.12:80, no endpoints

Each form of the rules (netemu's fast form, kube-proxy's exact text) is loaded with `nft -f` and
checked with curl from the client: ClusterIP and NodePort traffic reaches every endpoint in about
equal shares, a Service without endpoints and an undefined port of a ClusterIP are refused at
once, an address of the Service CIDR that no Service has is dropped. Then partial syncs (an
endpoint removed, one added, endpoints for "none") apply cleanly and traffic follows them.
"""
from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from netemu.dataplane.proxy.nftables.render import FAST, KUBE_PROXY, NftSettings, render
from netemu.dataplane.proxy.nftables.sync import NftSyncer
from netemu.dataplane.proxy.view import build_view, refresh_view
from netemu.spec.models import EndpointSlice, Service

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="loads nftables rules into namespaces: run as root"),
    pytest.mark.skipif(not (shutil.which("nft") and shutil.which("curl")), reason="needs nft and curl"),
]

NODE_IP, CLIENT_IP, BRIDGE_IP = "10.98.0.1", "10.98.0.2", "10.98.1.1"
POD_CIDR, SERVICE_CIDR = "10.98.1.0/24", "10.98.100.0/24"
SETTINGS = NftSettings(service_cidrs=(SERVICE_CIDR,))
PODS = {f"pod{i}": f"10.98.1.{10 + i}" for i in range(1, 7)}   # pod6 is started but used only later


def sh(*argv: str, check: bool = True, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    res = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


class Node:
    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:6]
        self.node = f"ne-tnft-{self.id}-node"
        self.client = f"ne-tnft-{self.id}-client"
        self.pods = {name: f"ne-tnft-{self.id}-{name}" for name in PODS}
        self.procs: list[subprocess.Popen] = []
        self.dirs: list[str] = []

    def namespaces(self) -> list[str]:
        return [self.node, self.client, *self.pods.values()]

    def in_ns(self, ns: str, *argv: str, **kw) -> subprocess.CompletedProcess:
        return sh("nsenter", f"--net=/run/netns/{ns}", "--", *argv, **kw)

    def build(self) -> None:
        for ns in self.namespaces():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        n, c = self.node, self.client
        # every link is made inside the node's namespace: nothing touches the root namespace
        sh("ip", "-n", n, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", c)
        sh("ip", "-n", n, "addr", "add", f"{NODE_IP}/24", "dev", "up0")
        sh("ip", "-n", n, "link", "set", "up0", "up")
        sh("ip", "-n", c, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
        sh("ip", "-n", c, "link", "set", "eth0", "up")
        sh("ip", "-n", c, "route", "add", SERVICE_CIDR, "via", NODE_IP)
        sh("ip", "-n", c, "route", "add", POD_CIDR, "via", NODE_IP)
        sh("ip", "-n", n, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", n, "addr", "add", f"{BRIDGE_IP}/24", "dev", "br0")
        sh("ip", "-n", n, "link", "set", "br0", "up")
        # the Service CIDR is routed, as on a lab node: packets to a ClusterIP nothing DNATs
        # reach the forward hook (and kube-proxy's reject/drop) instead of "no route"
        sh("ip", "-n", n, "route", "add", SERVICE_CIDR, "dev", "up0", "src", NODE_IP)
        self.in_ns(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # kube-proxy's `reject` answers with ICMP port unreachable; on this machine's kernel the
        # per-destination ICMP rate limit of a namespace refuses even the first error to a host
        # (IcmpOutRateLimitHost counts them), so a rejected connection would look like a timeout
        self.in_ns(n, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0")
        for i, (name, ip) in enumerate(PODS.items()):
            pod = self.pods[name]
            sh("ip", "-n", n, "link", "add", f"vp{i}", "type", "veth", "peer", "name", "eth0", "netns", pod)
            sh("ip", "-n", n, "link", "set", f"vp{i}", "master", "br0", "up")
            sh("ip", "-n", pod, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", pod, "link", "set", "eth0", "up")
            sh("ip", "-n", pod, "route", "add", "default", "via", BRIDGE_IP)
            d = tempfile.mkdtemp(prefix=f"ne-tnft-{name}-")
            self.dirs.append(d)
            with open(os.path.join(d, "whoami"), "w") as f:
                f.write(name)
            self.procs.append(subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{pod}", "--", sys.executable, "-m", "http.server", "8080",
                 "--bind", ip, "--directory", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 30
        for name, ip in PODS.items():
            while self.curl(f"http://{ip}:8080/whoami", ns=self.node) != name:
                assert time.time() < deadline, f"{name} did not start serving"
                time.sleep(0.1)

    def destroy(self) -> None:
        for p in self.procs:       # our own processes, by PID
            p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for ns in self.namespaces():
            sh("ip", "netns", "del", ns, check=False)
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)

    # ---------------------------------------------------------------- traffic and rules
    def curl(self, url: str, ns: str | None = None, timeout: float = 2.0) -> str | None:
        res = self.in_ns(ns or self.client, "curl", "-s", "--max-time", str(timeout), url, check=False)
        return res.stdout if res.returncode == 0 else None

    def curl_rc(self, url: str, timeout: float = 3.0) -> tuple[int, float]:
        t0 = time.perf_counter()
        res = self.in_ns(self.client, "curl", "-s", "--max-time", str(timeout), url, check=False)
        return res.returncode, time.perf_counter() - t0

    def spread(self, url: str, n: int) -> collections.Counter:
        """n new connections (one curl each), counted by the pod that answered."""
        script = f'for i in $(seq {n}); do curl -s --max-time 2 {url}; echo; done'
        out = self.in_ns(self.client, "sh", "-c", script, timeout=120).stdout
        return collections.Counter(line.strip() for line in out.splitlines())

    def nft(self, text: str) -> None:
        self.in_ns(self.node, "nft", "-f", "-", input=text)

    def clear(self) -> None:
        self.in_ns(self.node, "nft", "delete", "table", "ip", "kube-proxy", check=False)
        self.in_ns(self.node, "conntrack", "-F", check=False)


def service(name: str, ip: str, node_port: int | None = None) -> Service:
    p = {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    spec = {"type": "NodePort" if node_port else "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": [p]}
    if node_port:
        p["nodePort"] = node_port
    return Service.model_validate({"metadata": {"name": name, "namespace": "default"}, "spec": spec})


def endpoints(name: str, pods: list[str]) -> EndpointSlice:
    return EndpointSlice.model_validate({
        "metadata": {"name": f"{name}-x", "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [PODS[p]], "nodeName": "node", "conditions": {"ready": True}} for p in pods],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})


SERVICES = [service("web", "10.98.100.10", 30080), service("api", "10.98.100.11"), service("none", "10.98.100.12")]
SLICES = {"web": endpoints("web", ["pod1", "pod2", "pod3"]), "api": endpoints("api", ["pod4", "pod5"])}


def view_of(services, slices):
    return build_view(services, slices, node_name="node", node_ips=[NODE_IP], cluster_cidr=POD_CIDR)


@pytest.fixture(scope="module")
def node():
    n = Node()
    try:
        n.build()
        yield n
    finally:
        n.destroy()


def balanced(counts: collections.Counter, pods: list[str], n: int) -> bool:
    # each of k endpoints expects n/k answers; fewer than a third of that is ~6 sigma away
    return set(counts) == set(pods) and sum(counts.values()) == n and min(counts.values()) >= n / len(pods) / 3


@pytest.mark.parametrize("form", [FAST, KUBE_PROXY])
def test_full_load_balances_and_refuses(node, form):
    node.clear()
    view = view_of(SERVICES, SLICES.values())
    if form == FAST:
        syncer = NftSyncer(FAST, SETTINGS)
        syncer.reset(fresh=True)
        node.nft(syncer.sync(view).payload)
    else:
        node.nft(render(view, SETTINGS).text())

    n = 60
    web = node.spread("http://10.98.100.10/whoami", n)
    assert balanced(web, ["pod1", "pod2", "pod3"], n), web
    np_ = node.spread(f"http://{NODE_IP}:30080/whoami", n)
    assert balanced(np_, ["pod1", "pod2", "pod3"], n), np_
    api = node.spread("http://10.98.100.11/whoami", 40)
    assert balanced(api, ["pod4", "pod5"], 40), api

    # no endpoints: rejected at once (ICMP port unreachable -> "connection refused", curl exit 7)
    rc, dt = node.curl_rc("http://10.98.100.12/whoami")
    assert rc == 7 and dt < 1.0, (rc, dt)
    # an undefined port of a ClusterIP: rejected by cluster-ips-check
    rc, dt = node.curl_rc("http://10.98.100.10:81/whoami")
    assert rc == 7 and dt < 1.0, (rc, dt)
    # an address of the Service CIDR no Service has: dropped (curl times out)
    rc, dt = node.curl_rc("http://10.98.100.99/whoami", timeout=1.5)
    assert rc == 28, (rc, dt)


@pytest.mark.parametrize("form", [FAST, KUBE_PROXY])
def test_partial_syncs_apply_cleanly(node, form):
    node.clear()
    syncer = NftSyncer(form, SETTINGS)
    syncer.reset(fresh=True)
    slices = dict(SLICES)
    view = view_of(SERVICES, slices.values())
    now = 0.0
    node.nft(syncer.sync(view, now=now).payload)

    def change(name: str, pods: list[str]):
        nonlocal view, now
        now += 0.5
        slices[name] = endpoints(name, pods)
        key = f"default/{name}"
        view = refresh_view(view, [key], SERVICES, slices.values())
        res = syncer.sync(view, [key], now=now)
        assert not res.full
        if res.cleanup:
            node.nft(res.cleanup)
        node.nft(res.payload)
        node.in_ns(node.node, "conntrack", "-F", check=False)
        return res

    change("api", ["pod4"])                       # an endpoint removed
    assert node.spread("http://10.98.100.11/whoami", 10) == collections.Counter({"pod4": 10})
    change("api", ["pod4", "pod6"])               # another added
    api = node.spread("http://10.98.100.11/whoami", 40)
    assert balanced(api, ["pod4", "pod6"], 40), api
    change("none", ["pod5"])                      # endpoints for a Service that had none
    assert node.spread("http://10.98.100.12/whoami", 5) == collections.Counter({"pod5": 5})
    now += 2.0                                    # stale chains are deleted a second later
    res = change("web", ["pod1", "pod2"])
    assert res.cleanup_operations >= 1           # api's endpoint chain for pod5, stale since 0.5
    web = node.spread("http://10.98.100.10/whoami", 40)
    assert balanced(web, ["pod1", "pod2"], 40), web
    rc, _ = node.curl_rc("http://10.98.100.12:81/whoami")
    assert rc == 7
    # the table is what a full load of the same view gives (stale chains aside)
    listed = node.in_ns(node.node, "nft", "list", "chains", "ip").stdout
    stale = set(syncer.stale_chains())
    for p in render(view, SETTINGS).chain_names():
        assert p in listed, p
    assert all(c in listed for c in stale)


# --------------------------------------------------------------------------- every payload, in the kernel
def _random_services(rng, n: int):
    services, slices = {}, {}
    for i in range(n):
        name = f"r{i}"
        kind = rng.choice(["ClusterIP", "NodePort", "LoadBalancer"])
        p = {"name": "http", "port": 80, "protocol": "TCP"}
        spec: dict = {"type": kind, "clusterIP": f"10.98.101.{i + 1}", "ports": [p]}
        if kind != "ClusterIP":
            p["nodePort"] = 31000 + i
        status = {}
        if kind == "LoadBalancer":
            status = {"loadBalancer": {"ingress": [{"ip": f"10.98.102.{i + 1}"}]}}
            if rng.random() < 0.5:
                spec["loadBalancerSourceRanges"] = ["10.98.0.0/24", "203.0.113.0/25"]
            if rng.random() < 0.5:
                spec["externalTrafficPolicy"] = "Local"
        if rng.random() < 0.3:
            spec["sessionAffinity"] = "ClientIP"
        services[name] = Service.model_validate({"metadata": {"name": name, "namespace": "rnd"}, "spec": spec,
                                                 "status": status})
        slices[name] = _random_slice(rng, name)
    return services, slices


def _random_slice(rng, name: str) -> EndpointSlice:
    eps = [{"addresses": [f"10.98.{rng.randrange(1, 4)}.{rng.randrange(2, 60)}"],
            "nodeName": rng.choice(["node", "other"]),
            "conditions": {"ready": rng.random() < 0.8, "serving": True, "terminating": rng.random() < 0.2}}
           for _ in range(rng.randrange(0, 4))]
    return EndpointSlice.model_validate({
        "metadata": {"name": f"{name}-x", "namespace": "rnd", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})


def _listing(node: Node) -> tuple:
    import json
    data = json.loads(node.in_ns(node.node, "nft", "-j", "list", "table", "ip", "kube-proxy").stdout)
    chains, rules, elems = set(), collections.Counter(), {}
    for o in data["nftables"]:
        if "chain" in o:
            chains.add(o["chain"]["name"])
        if "rule" in o:
            rules[o["rule"]["chain"]] += 1
        for kind in ("set", "map"):
            if kind in o:
                elems[o[kind]["name"]] = len(o[kind].get("elem", []))
    return chains, rules, elems


def _model_listing(model) -> tuple:
    t = model.only_table()
    return (set(t.chains), collections.Counter({c: len(ch.rules) for c, ch in t.chains.items() if ch.rules}),
            {n: len(s.elements) for n, s in t.sets.items()})


@pytest.mark.parametrize("form", [FAST, KUBE_PROXY])
def test_random_partial_syncs_load_in_the_kernel_as_modelled(node, form):
    """Thirty partial syncs of random changes (endpoints, affinity, deletions, stale chains aged
    out), each payload applied by nft: the kernel takes every one, and ends with the chains,
    rules and elements NftModel predicts."""
    import random

    from netemu.dataplane.proxy.nftables.model import NftModel

    node.clear()
    rng = random.Random(5)
    services, slices = _random_services(rng, 12)
    all_services = dict(services)
    syncer = NftSyncer(form, SETTINGS)
    syncer.reset(fresh=True)
    model = NftModel()
    view = view_of(list(services.values()), list(slices.values()))
    payload = syncer.sync(view, now=0).payload
    node.nft(payload)
    model.apply(payload)
    now = 0.0
    for _ in range(30):
        now += rng.choice([0.3, 2.0])
        names = rng.sample(sorted(all_services), rng.randrange(1, 4))
        for name in names:
            if name not in services:
                services[name] = all_services[name]      # deleted earlier: back again
            elif rng.random() < 0.7:
                slices[name] = _random_slice(rng, name)
            else:
                services.pop(name)
        keys = [f"rnd/{n}" for n in names]
        view = refresh_view(view, keys, services.values(), slices.values())
        res = syncer.sync(view, keys, now=now)
        for text in (res.cleanup, res.payload):
            if text:
                node.nft(text)
                model.apply(text)
    assert _listing(node) == _model_listing(model)
    node.clear()
