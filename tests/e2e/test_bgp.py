"""MetalLB's BGP mode with real FRR: a lab router peering with every node's speaker, ECMP to the nodes,
failover by BFD and by the hold timer, the host's route to the pool via the router."""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from conftest import TestLab, _free_index, _netns, curl, netemu

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
  addresses: ["{pool}"]
  avoidBuggyIPs: true
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
apiVersion: apps/v1
kind: Deployment
metadata: {{name: one}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: one}}}}
  template:
    metadata: {{labels: {{app: one}}}}
    spec:
      containers: [{{name: c, image: sysnet4admin/echo-hname, ports: [{{containerPort: 80}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: one-lb}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {{app: one}}
  ports: [{{port: 80}}]
"""

NO_BFD_PEER = """\
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: r1, namespace: metallb-system}}
spec: {{myASN: 64512, peerASN: 64500, peerAddress: "{router}", holdTime: 3s}}
"""


def _pool(index: int) -> str:
    return f"10.{200 + index % 50}.7.0/24"


@pytest.fixture(scope="module")
def bgp_lab(tmp_path_factory):
    lab = TestLab(f"bgp{uuid.uuid4().hex[:6]}", _free_index())
    net = ipaddress.ip_network(lab.network)
    lab.router_ip = str(net.network_address + 254)
    lab.pool = _pool(lab.index)
    lab.default_spec = {"routers": f"[{{name: r1, ip: {lab.router_ip}, asn: 64500}}]"}
    lab.tmp = tmp_path_factory.mktemp("bgp")
    try:
        lab.up(MANIFESTS.format(pool=lab.pool, router=lab.router_ip), tmp_path=lab.tmp)
        yield lab
    finally:
        lab.down()
    assert not [n for n in _netns() if n.startswith(f"ne-{lab.name}")], "namespaces left after down"
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"/run/frr/ne-{lab.name}_" not in ps, "FRR daemons left after down"
    assert not os.path.isdir("/run/frr") or not [d for d in os.listdir("/run/frr") if d.startswith(f"ne-{lab.name}_")]
    routes = subprocess.run(["ip", "route", "show", lab.pool], capture_output=True, text=True).stdout
    assert routes.strip() == "", f"the host still routes the pool: {routes}"


def router_route(lab, ip: str) -> set[str]:
    """The next hops r1's kernel has for ip."""
    out = subprocess.run(["ip", "-n", lab.node_netns("r1"), "route", "show", ip], capture_output=True,
                         text=True).stdout
    return {w[w.index("via") + 1] for w in (line.split() for line in out.splitlines()) if "via" in w}


def sessions(lab) -> dict:
    return json.loads(lab.run("bgp", "-o", "json").stdout)


def established(lab) -> bool:
    inst = sessions(lab)
    peers = ((inst.get("r1") or {}).get("summary") or {}).get("ipv4Unicast", {}).get("peers", {})
    return len(peers) == 4 and all(p.get("state") == "Established" for p in peers.values())


def lb_ip(lab, svc: str) -> str:
    return lab.wait_for(lambda: (lab.get("svc", svc)[0]["status"]["loadBalancer"].get("ingress") or [{}])[0]
                        .get("ip"), what="an EXTERNAL-IP")


def test_sessions_ecmp_and_traffic(bgp_lab):
    lab = bgp_lab
    lab.run("expose", "deployment", "web", "--type=LoadBalancer", "--name=web-lb", "--port=80")
    ip = lb_ip(lab, "web-lb")
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(lab.pool)
    lab.wait_for(lambda: established(lab), timeout=20, what="r1's four sessions Established")
    workers = {lab.node_ips[n] for n in ("w1-k8s", "w2-k8s", "w3-k8s")}
    # one next hop per announcing node; not the control plane (exclude-from-external-load-balancers)
    lab.wait_for(lambda: router_route(lab, ip) == workers, timeout=15, what="three ECMP next hops on r1")
    table = lab.run("bgp").stdout
    assert "Established" in table and "r1" in table
    shown = netemu("--lab", lab.name, "exec", "r1", "--", "vtysh", "-c", "show ip bgp").stdout
    assert f"{ip}/32" in shown and "64512" in shown
    detail = netemu("--lab", lab.name, "exec", "r1", "--", "vtysh", "-c",
                    f"show ip bgp {ip}/32").stdout
    assert "64512:100" in detail  # the advertisement's community
    assert netemu("check-route", ip).returncode == 0
    answers = {curl(lab, ip, 80) for _ in range(12)}
    assert len({a for a in answers if a.startswith("web-")}) >= 2, answers
    desc = lab.run("describe", "svc", "web-lb").stdout
    assert 'announcing from node "w1-k8s" with protocol "bgp"' in desc
    # the speaker's kill ends its session at once: the kernel closes bgpd's socket
    lab.run("speaker", "kill", "w3-k8s")
    lab.wait_for(lambda: lab.node_ips["w3-k8s"] not in router_route(lab, ip), timeout=3, interval=0.05,
                 what="r1 to drop w3's next hop")
    lab.run("speaker", "start", "w3-k8s")
    lab.wait_for(lambda: router_route(lab, ip) == workers, timeout=15, what="w3 back")


def test_local_policy_announces_from_endpoint_nodes_only(bgp_lab):
    lab = bgp_lab
    ip = lb_ip(lab, "one-lb")
    node = lab.pods("app=one")[0]["spec"]["nodeName"]
    lab.wait_for(lambda: router_route(lab, ip) == {lab.node_ips[node]}, timeout=15,
                 what=f"one next hop, {node}'s")
    assert curl(lab, ip, 80).startswith("one-")
    lab.run("delete", "svc", "one-lb")
    lab.wait_for(lambda: not router_route(lab, ip), timeout=10, what="the route withdrawn with the Service")


def _withdrawn_after(lab, ip: str, node: str, limit: float) -> float:
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "netemu", "node", "down", node, "--lab", lab.name],
                            stdout=subprocess.DEVNULL)
    gone = None
    while time.monotonic() - t0 < limit + 5:
        if lab.node_ips[node] not in router_route(lab, ip):
            gone = time.monotonic() - t0
            break
        time.sleep(0.01)
    proc.wait(30)
    assert gone is not None, f"{node}'s next hop still on r1 after {limit + 5:.1f}s"
    return gone


def test_node_down_withdraws_within_bfd_then_hold_time(bgp_lab):
    lab = bgp_lab
    lab.run("expose", "deployment", "web", "--type=LoadBalancer", "--name=web-lb", "--port=80", check=False)
    ip = lb_ip(lab, "web-lb")
    workers = {lab.node_ips[n] for n in ("w1-k8s", "w2-k8s", "w3-k8s")}
    lab.wait_for(lambda: router_route(lab, ip) == workers, timeout=15, what="three next hops")
    # BFD 300 ms x 3: the router drops the path in about 0.9 s (the CLI's own start-up on top)
    took = _withdrawn_after(lab, ip, "w2-k8s", 1.5)
    assert took < 1.5, took
    lab.run("node", "up", "w2-k8s")
    lab.wait_for(lambda: router_route(lab, ip) == workers, timeout=20, what="w2 back")
    # without BFD, the hold time (3 s) does it
    path = lab.tmp / "peer.yaml"
    path.write_text(NO_BFD_PEER.format(router=lab.router_ip))
    lab.run("apply", "-f", str(path))
    lab.wait_for(lambda: established(lab) and router_route(lab, ip) == workers, timeout=20,
                 what="sessions again, without BFD")
    took = _withdrawn_after(lab, ip, "w1-k8s", 3.0 + 1.0)
    assert 2.0 < took < 4.0, took
    lab.run("node", "up", "w1-k8s")


LEGACY_BGP_POOL = """\
apiVersion: v1
kind: ConfigMap
metadata: {{name: config, namespace: metallb-system}}
data:
  config: |
    address-pools:
    - name: legacy-bgp
      protocol: bgp
      addresses:
      - {pool}
      bgp-advertisements:
      - communities: ["64512:200"]
---
apiVersion: v1
kind: Service
metadata:
  name: legacy-lb
  annotations: {{metallb.universe.tf/address-pool: legacy-bgp}}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports: [{{port: 80}}]
"""


def test_legacy_configmap_bgp_pool_gives_addresses_announced_to_the_router(bgp_lab):
    """MetalLB <= 0.12's ConfigMap form: a `protocol: bgp` pool's addresses are announced by the speakers
    (to every peer: here the BGPPeer r1) with its advertisement's community."""
    lab = bgp_lab
    pool = f"10.{200 + (lab.index + 25) % 50}.8.0/28"
    path = lab.tmp / "legacy.yaml"
    path.write_text(LEGACY_BGP_POOL.format(pool=pool))
    lab.run("apply", "-f", str(path))
    ip = lb_ip(lab, "legacy-lb")
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(pool)
    workers = {lab.node_ips[n] for n in ("w1-k8s", "w2-k8s", "w3-k8s")}
    lab.wait_for(lambda: router_route(lab, ip) == workers, timeout=20, what="r1's ECMP route to the legacy pool's IP")
    bgp = subprocess.run(["vtysh", "--vty_socket", f"/run/frr/{lab.node_netns('r1')}", "-c", f"show ip bgp {ip}/32"],
                         capture_output=True, text=True).stdout
    assert "64512:200" in bgp, bgp
    lab.run("delete", "svc", "legacy-lb")
    lab.wait_for(lambda: not router_route(lab, ip), timeout=20, what="the route withdrawn with the Service")
