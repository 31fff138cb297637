"""kube-proxy over IPv6 in a dual-stack lab, with real traffic, in iptables and nftables modes: a
PreferDualStack NodePort Service answers on its IPv6 ClusterIP and on the nodes' IPv6 addresses (and still on
IPv4), an IPv6-only Service on its IPv6 ClusterIP; the IPv6 rules are ip6tables' (of the lab's backend) or
table `ip6 kube-proxy`; a scale-down reaches the IPv6 rules; nothing is left after `down` (the nodes'
namespaces, and with them every rule, go; the fixture checks).

IPVS mode's IPv6 half is not applied on this machine (no ip_vs in its kernel): `netemu render ipvs` shows it.

Traffic goes from the lab's node namespaces to lab addresses, and from the host only after the route is
checked to go into the lab."""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess

import pytest

from conftest import NP_PODS

DUAL_SVC = """\
---
apiVersion: v1
kind: Service
metadata:
  name: np6
spec:
  type: NodePort
  ipFamilyPolicy: PreferDualStack
  selector: {app: np-pods}
  ports:
  - {name: http, port: 80, targetPort: 80, nodePort: 30000}
---
apiVersion: v1
kind: Service
metadata:
  name: only6
spec:
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv6]
  selector: {app: np-pods}
  ports:
  - {name: http, port: 8080, targetPort: 80}
"""


@pytest.fixture(params=["iptables", "nftables"])
def lab(make_lab, request):
    lab = make_lab()
    lab.mode = request.param
    lab.default_spec = {"proxyMode": request.param, **lab.dual_stack()}
    return lab


def pod_ip6(pod: dict) -> str | None:
    return next((a["ip"] for a in pod["status"].get("podIPs") or [] if ":" in a["ip"]), None)


def from_node(lab, node: str, url: str) -> str:
    res = lab.node_exec(node, "curl", "-s", "-g", "-m", "3", url, check=False)
    return res.stdout.strip() if res.returncode == 0 else f"<curl rc={res.returncode}>"


def seen(lab, node: str, url: str, n: int) -> collections.Counter:
    return collections.Counter(from_node(lab, node, url) for _ in range(n))


def test_clusterip_and_nodeport_over_ipv6(lab, tmp_path):
    lab.up(NP_PODS.format(replicas=2) + DUAL_SVC, tmp_path=tmp_path)
    pods = {p["metadata"]["name"]: p for p in lab.pods("app=np-pods")}
    assert all(pod_ip6(p) for p in pods.values()), pods
    names = set(pods)
    slices6 = lambda: [s for s in lab.get("endpointslices", "-l", "kubernetes.io/service-name=np6")  # noqa: E731
                       if s.get("addressType") == "IPv6" and len(s.get("endpoints") or []) == 2]
    lab.wait_for(slices6, timeout=15, what="np6's IPv6 EndpointSlice")

    svc = lab.get("svc", "np6")[0]["spec"]
    assert svc["ipFamilies"] == ["IPv4", "IPv6"], svc
    cip4, cip6 = svc["clusterIPs"]
    assert ":" in cip6 and ":" not in cip4
    only6 = lab.get("svc", "only6")[0]["spec"]
    assert only6["ipFamilies"] == ["IPv6"] and ":" in only6["clusterIP"]

    # IPv6 ClusterIP from a node: every pod answers; the IPv4 one still does
    lab.wait_for(lambda: set(seen(lab, "w2-k8s", f"http://[{cip6}]:80/", 20)) == names, timeout=20,
                 what="every pod behind the IPv6 ClusterIP")
    assert set(seen(lab, "w2-k8s", f"http://{cip4}:80/", 20)) == names
    assert set(seen(lab, "w3-k8s", f"http://[{only6['clusterIP']}]:8080/", 20)) == names
    # NodePort on the nodes' IPv6 addresses, from another node and from the node itself
    w1 = lab.node_ips6["w1-k8s"]
    assert set(seen(lab, "w2-k8s", f"http://[{w1}]:30000/", 20)) == names
    assert from_node(lab, "w1-k8s", f"http://[{w1}]:30000/") in names
    assert from_node(lab, "w3-k8s", f"http://{lab.node_ips['w1-k8s']}:30000/") in names
    # and from the host, as a user would (`netemu check-route` first)
    lab.host_safe(w1)
    res = lab.run("check-route", w1)
    assert f"ne-{lab.name}" in res.stdout
    out = subprocess.run(["curl", "-s", "-g", "-m", "3", f"http://[{w1}]:30000/"], capture_output=True, text=True)
    assert out.stdout.strip() in names, out

    # the IPv6 rules: ip6tables (the lab's nft backend) or table ip6 kube-proxy
    if lab.mode == "iptables":
        v6 = lab.node_exec("w1-k8s", "ip6tables-nft-save", "-t", "nat").stdout
        assert f"-d {cip6}/128" in v6 and "-j KUBE-SERVICES" in v6, v6
        assert cip4 not in v6
    else:
        v6 = lab.node_exec("w1-k8s", "nft", "list", "table", "ip6", "kube-proxy").stdout
        assert cip6 in v6 and "map service-ips" in v6, v6
        assert cip4 not in v6
    rules = lab.run("rules", "w1-k8s").stdout
    assert "# IPv6\n" in rules and cip6 in rules and cip4 in rules
    # `netemu trace` follows each address through the rules of its family
    doc = json.loads(lab.run("trace", "np6", "--node", "w1-k8s", "-o", "json").stdout)
    by_ip = {r["ip"]: r for r in doc["results"]}
    assert set(by_ip) == {cip4, cip6, lab.node_ips["w1-k8s"], w1}
    v6_targets = {f"[{pod_ip6(p)}]:80" for p in pods.values()}
    assert set(by_ip[cip6]["dnat"]) == set(by_ip[w1]["dnat"]) == v6_targets
    assert by_ip[w1]["src"] == lab.gateway6 and by_ip[w1]["masquerade"]
    text = lab.run("trace", "np6", "--node", "w1-k8s").stdout  # addresses as kubectl prints them
    assert f"[{cip6}]:80/tcp" in text and f"\n{cip4}:80/tcp" in text, text

    # the control process killed: the restarted one reads each family's rules from the nodes (ip6tables-save,
    # table ip6 kube-proxy) and its first sync rewrites them over what is there; IPv6 keeps answering
    pid = _control_pid(lab)
    os.kill(pid, signal.SIGKILL)
    lab.wait_for(lambda: (_control_pid(lab) or pid) != pid and lab.run("get", "pods", check=False).returncode == 0,
                 timeout=60, what="the control process back")
    assert set(seen(lab, "w2-k8s", f"http://[{cip6}]:80/", 20)) == names

    # a scale-down after the restart reaches the IPv6 rules
    lab.run("scale", "deployment", "np-pods", "--replicas=1")
    lab.wait_for(lambda: len(lab.pods("app=np-pods")) == 1, timeout=30, what="one pod left")
    left = {p["metadata"]["name"] for p in lab.pods("app=np-pods")}
    lab.wait_for(lambda: set(seen(lab, "w2-k8s", f"http://[{cip6}]:80/", 10)) == left, timeout=20,
                 what="only the pod left behind the IPv6 ClusterIP")
    assert set(seen(lab, "w2-k8s", f"http://[{w1}]:30000/", 10)) == left
    if lab.mode == "iptables":  # one set of kube-proxy's jumps, not a second one from the new process
        nat = lab.node_exec("w2-k8s", "ip6tables-nft-save", "-t", "nat").stdout
        assert nat.count('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES') == 1


def _control_pid(lab) -> int | None:
    try:
        pid = int(open(f"/run/netemu/{lab.name}/daemon.pid").read().strip())
    except (OSError, ValueError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None
