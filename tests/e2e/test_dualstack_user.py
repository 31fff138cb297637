"""Issue 19's walk-through in a dual-stack lab, with the real kubectl: pods with both addresses, a
PreferDualStack NodePort over IPv6 from the host, AAAA and ip6.arpa answers from a pod, and an IPv6
LoadBalancer IP answered by NDP that moves on `node down`.

Traffic goes only to the lab's own addresses, and from the host only after the route is checked."""
from __future__ import annotations

import ipaddress
import json
import subprocess
import time
import uuid

import pytest

from conftest import KUBECTL, NP_PODS, TestLab, _free_index, _netns, kubectl, netemu
from test_dualstack_net import dual, pod_ip6

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    lab = TestLab(f"dsu{uuid.uuid4().hex[:6]}", _free_index())
    spec = dual(lab)
    net6 = ipaddress.ip_network(lab.network6)
    lab.pool6 = (str(net6.network_address + 0x240), str(net6.network_address + 0x24f))
    net4 = ipaddress.ip_network(lab.network)
    pool = f"""\
---
apiVersion: v1
kind: Namespace
metadata: {{name: metallb-system}}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: dual, namespace: metallb-system}}
spec: {{addresses: ["{net4.network_address + 240}-{net4.network_address + 250}", "{lab.pool6[0]}-{lab.pool6[1]}"]}}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {{name: l2, namespace: metallb-system}}
"""
    tmp = tmp_path_factory.mktemp("dsu")
    try:
        lab.up(NP_PODS.format(replicas=3) + pool, tmp_path=tmp, lab_spec=spec)
        kubeconfig = tmp / "kubeconfig"
        kubeconfig.write_text(netemu("kubeconfig", "--lab", lab.name).stdout)
        lab.kubeconfig = str(kubeconfig)
        yield lab
    finally:
        lab.down()
    assert not [n for n in _netns() if n.startswith(f"ne-{lab.name}")]
    routes = subprocess.run(["ip", "-6", "route", "show", lab.network6], capture_output=True, text=True).stdout
    assert routes.strip() == "", routes


def curl6(lab, address: str, port: int, timeout: float = 3) -> str:
    lab.host_safe(address)
    res = subprocess.run(["curl", "-s", "-g", "-m", str(timeout), f"http://[{address}]:{port}/"],
                         capture_output=True, text=True)
    return res.stdout if res.returncode == 0 else f"<curl rc={res.returncode}>"


def test_pods_services_and_nodeport_in_both_families(ds):
    pods = json.loads(kubectl(ds, "get", "pods", "-l", "app=np-pods", "-o", "json").stdout)["items"]
    for p in pods:
        ips = [a["ip"] for a in p["status"]["podIPs"]]
        assert len(ips) == 2 and ipaddress.ip_address(ips[0]).version == 4 and ips[0] == p["status"]["podIP"]
        assert ipaddress.ip_address(ips[1]) in ipaddress.ip_network(ds.pod_cidr6)
    kubectl(ds, "expose", "deployment", "np-pods", "--type=NodePort", "--name=np6", "--port=80",
            "--overrides", '{"apiVersion": "v1", "spec": {"ipFamilyPolicy": "PreferDualStack"}}')
    svc = json.loads(kubectl(ds, "get", "svc", "np6", "-o", "json").stdout)
    assert svc["spec"]["ipFamilies"] == ["IPv4", "IPv6"] and len(svc["spec"]["clusterIPs"]) == 2
    assert ipaddress.ip_address(svc["spec"]["clusterIPs"][1]) in ipaddress.ip_network(ds.service_cidr6)
    slices = json.loads(kubectl(ds, "get", "endpointslices", "-l", "kubernetes.io/service-name=np6",
                                "-o", "json").stdout)["items"]
    assert sorted(s["addressType"] for s in slices) == ["IPv4", "IPv6"]
    port = svc["spec"]["ports"][0]["nodePort"]
    names = {p["metadata"]["name"] for p in pods}
    w1 = ds.node_ips6["w1-k8s"]
    seen = set()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and seen != names:
        seen.add(curl6(ds, w1, port).strip())
        seen &= names | {""}
        seen.discard("")
    assert seen == names, seen  # every pod answers through the IPv6 NodePort


def test_dns_answers_aaaa_and_ip6_arpa_from_a_pod(ds):
    svc = json.loads(kubectl(ds, "get", "svc", "np6", "-o", "json").stdout)
    v4, v6 = svc["spec"]["clusterIPs"]
    pod = json.loads(kubectl(ds, "get", "pods", "-l", "app=np-pods", "-o", "json").stdout)["items"][0]
    name = pod["metadata"]["name"]

    def dig(*args):
        return kubectl(ds, "exec", name, "--", "dig", "+short", *args).stdout.split()

    fqdn = "np6.default.svc.cluster.local"
    assert dig("AAAA", fqdn) == [v6]
    assert dig("A", fqdn) == [v4]
    assert dig("-x", v6) == [f"{fqdn}."]
    other = pod_ip6(json.loads(kubectl(ds, "get", "pods", "-l", "app=np-pods", "-o", "json").stdout)["items"][1])
    dashed = other.replace(":", "-")
    assert dig("AAAA", f"{dashed}.default.pod.cluster.local") == [other]
    # the Service's IPv6 ClusterIP serves from the pod (kube-proxy's ip6 rules)
    out = kubectl(ds, "exec", name, "--", "curl", "-s", "-g", "-m", "3", f"http://[{v6}]/").stdout
    assert out.startswith("np-pods-"), out


def test_ipv6_loadbalancer_answered_by_ndp_moves_on_node_down(ds):
    kubectl(ds, "expose", "deployment", "np-pods", "--type=LoadBalancer", "--name=lb6", "--port=80",
            "--overrides", '{"apiVersion": "v1", "spec": {"ipFamilyPolicy": "PreferDualStack"}}')

    def ingress():
        svc = json.loads(kubectl(ds, "get", "svc", "lb6", "-o", "json").stdout)
        return [i["ip"] for i in svc["status"].get("loadBalancer", {}).get("ingress") or []]

    ips = ds.wait_for(lambda: len(ingress()) == 2 and ingress(), what="two LoadBalancer IPs")
    ip6 = ips[1]
    assert ipaddress.ip_address(ip6) in ipaddress.ip_network(ds.network6)
    assert curl6(ds, ip6, 80).startswith("np-pods-")
    neigh = subprocess.run(["ip", "-6", "neigh", "show", ip6, "dev", f"ne-{ds.name}"], capture_output=True,
                           text=True).stdout
    assert "lladdr" in neigh, neigh  # resolved by NDP on the lab link
    owner = json.loads(ds.run("get", "svc", "lb6", "-o", "json").stdout)
    node = ds.run("get", "svc", "lb6", "-o", "wide").stdout.splitlines()[1].split()[-1]
    assert node in ds.node_ips, owner
    ds.run("node", "down", node)
    try:
        t0 = time.monotonic()
        ok = ds.wait_for(lambda: curl6(ds, ip6, 80, timeout=0.5).startswith("np-pods-"), timeout=10,
                         what="the IPv6 LB IP served again after node down")
        assert ok and time.monotonic() - t0 < 5
        now = ds.run("get", "svc", "lb6", "-o", "wide").stdout.splitlines()[1].split()[-1]
        assert now != node
        neigh2 = subprocess.run(["ip", "-6", "neigh", "show", ip6, "dev", f"ne-{ds.name}"], capture_output=True,
                                text=True).stdout
        assert neigh2.split("lladdr")[1].split()[0] != neigh.split("lladdr")[1].split()[0], (neigh, neigh2)
    finally:
        ds.run("node", "up", node)
