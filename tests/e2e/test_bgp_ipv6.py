"""MetalLB's BGP mode over IPv6 with real FRR, in a dual-stack lab: r1 has its ip6 on the segment, a BGPPeer
aimed at it gives every node an IPv6 session (address-family ipv6 unicast, BFD), a PreferDualStack
LoadBalancer Service's IPv6 address becomes an ECMP route on r1 with one next hop per announcing node, the
host routes the IPv6 pool via r1's ip6 through the lab's link, a node going down takes its path away, and
nothing of it is left after `down`."""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import uuid

import pytest

from conftest import TestLab, _free_index, _netns, netemu

pytestmark = pytest.mark.skipif(not os.access("/usr/lib/frr/bgpd", os.X_OK) or shutil.which("vtysh") is None,
                                reason="FRR is not installed (apt-get install frr)")

MANIFESTS = """\
apiVersion: v1
kind: Namespace
metadata: {{name: metallb-system}}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: bgp-pool, namespace: metallb-system}}
spec:
  addresses: ["{pool}", "{pool6}"]
---
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {{name: fast, namespace: metallb-system}}
spec: {{receiveInterval: 300, transmitInterval: 300, detectMultiplier: 3}}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: r1, namespace: metallb-system}}
spec: {{myASN: 64512, peerASN: 64500, peerAddress: "{router}", holdTime: 30s, bfdProfile: fast}}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: r1-v6, namespace: metallb-system}}
spec: {{myASN: 64512, peerASN: 64500, peerAddress: "{router6}", holdTime: 30s, bfdProfile: fast}}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: adv, namespace: metallb-system}}
spec: {{ipAddressPools: [bgp-pool], communities: ["64512:100"]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: c, image: sysnet4admin/echo-hname, ports: [{{containerPort: 80}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-lb}}
spec:
  type: LoadBalancer
  ipFamilyPolicy: PreferDualStack
  selector: {{app: web}}
  ports: [{{port: 80}}]
"""

WORKERS = ("w1-k8s", "w2-k8s", "w3-k8s")


def _host_routes6(prefix: str) -> str:
    return subprocess.run(["ip", "-6", "route", "show", "table", "all", prefix], capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def lab6(tmp_path_factory):
    lab = TestLab(f"bg6{uuid.uuid4().hex[:6]}", _free_index())
    spec = lab.dual_stack()
    net = ipaddress.ip_network(lab.network)
    lab.router_ip = str(net.network_address + 254)
    lab.router_ip6 = str(ipaddress.ip_network(lab.network6).network_address + 0x254)
    lab.pool = f"10.{200 + lab.index % 50}.6.0/24"
    lab.pool6 = f"fd00:10:{200 + lab.index % 50}:6::/120"  # not the host's fd00::/64: fd00:10:...
    lab.default_spec = {**spec, "routers": f'[{{name: r1, ip: {lab.router_ip}, ip6: "{lab.router_ip6}", asn: 64500}}]'}
    tmp = tmp_path_factory.mktemp("bgp6")
    try:
        lab.up(MANIFESTS.format(pool=lab.pool, pool6=lab.pool6, router=lab.router_ip, router6=lab.router_ip6),
               tmp_path=tmp)
        yield lab
    finally:
        lab.down()
    assert not [n for n in _netns() if n.startswith(f"ne-{lab.name}")], "namespaces left after down"
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"/run/frr/ne-{lab.name}_" not in ps, "FRR daemons left after down"
    assert _host_routes6(lab.pool6) == "", "the host still routes the IPv6 pool"


def router_route(lab, ip: str) -> set[str]:
    """The next hops r1's kernel has for ip (either family)."""
    six = ["-6"] if ":" in ip else []  # (without -6, ip shows IPv4 routes only)
    out = subprocess.run(["ip", "-n", lab.node_netns("r1"), *six, "route", "show", ip], capture_output=True,
                         text=True).stdout
    return {w[w.index("via") + 1] for w in (line.split() for line in out.splitlines()) if "via" in w}


def curl6(lab, address: str) -> str:
    """curl -g from the host to [address]:80, only after checking the route goes into the lab."""
    lab.host_safe(address)
    res = subprocess.run(["curl", "-s", "-g", "-m", "3", f"http://[{address}]:80/"], capture_output=True, text=True)
    return res.stdout if res.returncode == 0 else f"<curl rc={res.returncode}>"


def test_ipv6_lb_ip_over_ipv6_sessions_ecmp_host_route_and_node_down(lab6):
    lab = lab6

    def ingress() -> list[str]:
        return [i["ip"] for i in lab.get("svc", "web-lb")[0]["status"]["loadBalancer"].get("ingress") or []]

    ips = lab.wait_for(lambda: ingress() if len(ingress()) == 2 else None, what="both families' EXTERNAL-IPs")
    ip4, ip6 = ips
    assert ipaddress.ip_address(ip6) in ipaddress.ip_network(lab.pool6)
    workers6 = {lab.node_ips6[n] for n in WORKERS}
    # one IPv6 next hop per announcing node (the nodes' global addresses), the IPv4 route beside it
    lab.wait_for(lambda: router_route(lab, ip6) == workers6, timeout=20, what="three IPv6 ECMP next hops on r1")
    lab.wait_for(lambda: router_route(lab, ip4) == {lab.node_ips[n] for n in WORKERS}, timeout=10,
                 what="three IPv4 next hops on r1")
    vtysh = ["vtysh", "--vty_socket", f"/run/frr/{lab.node_netns('r1')}"]
    detail = subprocess.run([*vtysh, "-c", f"show bgp ipv6 unicast {ip6}/128"], capture_output=True, text=True).stdout
    assert "64512:100" in detail, detail  # the advertisement's community on the IPv6 route

    def ipv6_sessions() -> dict:
        out = subprocess.run([*vtysh, "-c", "show bgp ipv6 unicast summary json"], capture_output=True, text=True)
        return {a: p.get("state") for a, p in (json.loads(out.stdout or "{}").get("peers") or {}).items()}

    # every node has its IPv6 session (the control plane too: it announces nothing)
    lab.wait_for(lambda: ipv6_sessions() == {ip: "Established" for ip in lab.node_ips6.values()}, timeout=10,
                 what="r1's four IPv6 sessions Established")
    bfd = subprocess.run([*vtysh, "-c", "show bfd peers brief"], capture_output=True, text=True).stdout
    assert lab.node_ips6["w1-k8s"] in bfd and "up" in bfd
    assert lab.node_ips6["w1-k8s"] in lab.run("bgp").stdout  # `netemu bgp` lists the IPv6 sessions
    # the host: a static IPv6 route to the pool via r1's ip6, through the lab's link only
    host = _host_routes6(lab.pool6)
    assert f"via {lab.router_ip6} dev ne-{lab.name}" in host, host
    assert netemu("check-route", ip6).returncode == 0
    answers = {curl6(lab, ip6) for _ in range(12)}
    assert len({a for a in answers if a.startswith("web-")}) >= 2, answers
    # a node's cable goes: BFD (300 ms x 3) takes its IPv6 path away
    lab.run("node", "down", "w2-k8s")
    lab.wait_for(lambda: router_route(lab, ip6) == workers6 - {lab.node_ips6["w2-k8s"]}, timeout=5, interval=0.05,
                 what="r1 to drop w2's IPv6 next hop")
    assert curl6(lab, ip6).startswith("web-")
