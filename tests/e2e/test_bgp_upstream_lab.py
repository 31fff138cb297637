"""A lab router's upstream session with real FRR: the host's own bgpd (no zebra, on the lab's gateway only)
peers with r1, and the host's route to a LoadBalancer IP is what it learned there (proto bgp, via r1),
gone with the Service and after `down`."""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import uuid

import pytest

from conftest import TestLab, _free_index, curl, netemu

from netemu.dataplane import names

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
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: r1, namespace: metallb-system}}
spec: {{myASN: 64512, peerASN: 64500, peerAddress: "{router}", holdTime: 9s}}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: adv, namespace: metallb-system}}
spec: {{ipAddressPools: [bgp-pool]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: c, image: sysnet4admin/echo-hname, ports: [{{containerPort: 80}}]}}]
"""


def _pool(index: int) -> str:
    return f"10.{200 + index % 50}.9.0/24"


def _processes() -> str:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def _host_routes(prefix: str) -> list[dict]:
    out = subprocess.run(["ip", "-j", "route", "show", "table", "all", "match", prefix], capture_output=True,
                         text=True).stdout
    net = ipaddress.ip_network(prefix)
    return [r for r in json.loads(out or "[]")
            if r.get("dst") not in (None, "default") and ipaddress.ip_network(r["dst"], strict=False).subnet_of(net)]


@pytest.fixture(scope="module")
def up_lab(tmp_path_factory):
    lab = TestLab(f"bgu{uuid.uuid4().hex[:6]}", _free_index())
    net = ipaddress.ip_network(lab.network)
    lab.router_ip = str(net.network_address + 254)
    lab.pool = _pool(lab.index)
    lab.default_spec = {"routers": f"[{{name: r1, ip: {lab.router_ip}, asn: 64500, upstream: true}}]"}
    lab.tmp = tmp_path_factory.mktemp("bgpup")
    lab.host_dir = f"/run/frr/ne-{lab.name}__host"
    try:
        lab.up(MANIFESTS.format(pool=lab.pool, router=lab.router_ip), tmp_path=lab.tmp)
        yield lab
    finally:
        lab.down()
    ps = _processes()
    assert f"/run/frr/ne-{lab.name}_" not in ps, "FRR daemons left after down"
    assert not os.path.exists(lab.host_dir), "the host's FRR directory left after down"
    assert _host_routes(lab.pool) == [], "the host still routes (part of) the pool"
    listen = subprocess.run(["ss", "-Htln", f"src {lab.gateway}"], capture_output=True, text=True).stdout
    assert listen.strip() == "", f"something still listens on the gateway: {listen}"


def host_session(lab) -> dict:
    inst = json.loads(lab.run("bgp", "-o", "json").stdout)
    host = inst.get("host") or {}
    assert host.get("kind") == "host", inst.keys()
    return ((host.get("summary") or {}).get("ipv4Unicast") or {}).get("peers") or {}


def learned_route(lab, ip: str) -> list[dict]:
    out = subprocess.run(["ip", "-j", "route", "show", f"{ip}/32"], capture_output=True, text=True).stdout
    return json.loads(out or "[]")


def test_the_hosts_bgpd_listens_on_the_gateway_only_and_peers_with_r1(up_lab):
    lab = up_lab
    lab.wait_for(lambda: (host_session(lab).get(lab.router_ip) or {}).get("state") == "Established", timeout=30,
                 what="the host's session with r1 Established")
    assert list(host_session(lab)) == [lab.router_ip]  # one neighbor: r1
    pid = int(open(os.path.join(lab.host_dir, "bgpd.pid")).read())
    argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    assert b"-Z" in argv and argv[argv.index(b"-l") + 1] == lab.gateway.encode()
    assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")  # the host's namespace
    sockets = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True).stdout
    mine = [line for line in sockets.splitlines() if f"pid={pid}," in line]
    assert mine and all(f"{lab.gateway}:179" in line for line in mine), mine
    # the table shows the host's session next to r1's and the nodes'
    table = lab.run("bgp").stdout
    assert any(line.split()[:2] == ["host", "host"] and lab.router_ip in line and "Established" in line
               for line in table.splitlines()), table
    # r1 has the host as a neighbor too
    r1 = netemu("--lab", lab.name, "exec", "r1", "--", "vtysh", "-c", f"show bgp neighbor {lab.gateway} json").stdout
    assert json.loads(r1)[lab.gateway]["bgpState"] == "Established"


def test_the_hosts_route_to_a_lb_ip_is_learned_via_r1_and_goes_with_the_service(up_lab):
    lab = up_lab
    lab.run("expose", "deployment", "web", "--type=LoadBalancer", "--name=web-lb", "--port=80")
    ip = lab.wait_for(lambda: (lab.get("svc", "web-lb")[0]["status"]["loadBalancer"].get("ingress") or [{}])[0]
                      .get("ip"), what="an EXTERNAL-IP")
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(lab.pool)
    routes = lab.wait_for(lambda: learned_route(lab, ip), timeout=30, what="the host's learned route")
    assert routes[0]["gateway"] == lab.router_ip and routes[0]["protocol"] == "bgp", routes
    assert routes[0]["dev"] == names.host_link(lab.name)
    # no static route to the pool: only what BGP brought
    assert [r for r in _host_routes(lab.pool) if r.get("protocol") != "bgp"] == []
    shown = subprocess.run(["ip", "route", "show", f"{ip}/32"], capture_output=True, text=True).stdout
    assert f"via {lab.router_ip}" in shown and "proto bgp" in shown, shown
    assert netemu("check-route", ip).returncode == 0
    assert curl(lab, ip, 80).startswith("web-")
    lab.run("delete", "svc", "web-lb")
    lab.wait_for(lambda: not learned_route(lab, ip), timeout=15, what="the learned route gone with the Service")
    assert _host_routes(lab.pool) == []


def _control_pid(lab) -> int | None:
    try:
        pid = int(open(f"/run/netemu/{lab.name}/daemon.pid").read().strip())
    except (OSError, ValueError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None


def test_a_restarted_control_process_keeps_the_hosts_session_and_routes(up_lab):
    """The control process is SIGKILLed: its successor adopts the host's bgpd (the same pid) and the
    learned routes, and goes on following the session (a deleted Service's route goes)."""
    lab = up_lab
    lab.run("expose", "deployment", "web", "--type=LoadBalancer", "--name=web-lb2", "--port=80")
    ip = lab.wait_for(lambda: (lab.get("svc", "web-lb2")[0]["status"]["loadBalancer"].get("ingress") or [{}])[0]
                      .get("ip"), what="an EXTERNAL-IP")
    lab.wait_for(lambda: learned_route(lab, ip), timeout=30, what="the host's learned route")
    bgpd = int(open(os.path.join(lab.host_dir, "bgpd.pid")).read())
    pid = _control_pid(lab)
    os.kill(pid, signal.SIGKILL)
    lab.wait_for(lambda: (p := _control_pid(lab)) and p != pid, timeout=60, what="a new control process")
    lab.wait_for(lambda: lab.run("get", "svc", "web-lb2", check=False).returncode == 0, timeout=60,
                 what="the API back")
    assert int(open(os.path.join(lab.host_dir, "bgpd.pid")).read()) == bgpd  # adopted, not restarted
    assert learned_route(lab, ip)[0]["gateway"] == lab.router_ip
    lab.host_safe(ip)
    assert curl(lab, ip, 80).startswith("web-")
    lab.run("delete", "svc", "web-lb2")
    lab.wait_for(lambda: not learned_route(lab, ip), timeout=20, what="the learned route gone with the Service")
