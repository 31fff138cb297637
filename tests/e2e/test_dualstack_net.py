"""A dual-stack lab's wires in the kernel: IPv6 on the lab segment, in the nodes and the pods, beside
IPv4; contained as IPv4 is (no IPv6 default route in a node, no router advertisement taken, the host's
route to network6 only through the lab's link); nothing of it left after `down`, a crash included.

Traffic goes only to the lab's own addresses, and from the host only after the route is checked."""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time


from conftest import NP_PODS, netemu


def dual(lab) -> dict:
    """The lab made dual-stack (conftest's TestLab.dual_stack): the Lab spec fields to give up."""
    return lab.dual_stack()


def host_routes6() -> list[dict]:
    out = subprocess.run(["ip", "-j", "-6", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    return json.loads(out or "[]")


def host_routes_into(network6: str) -> list[dict]:
    """The host's IPv6 routes (any table) that reach into `network6`, local ones included."""
    net = ipaddress.ip_network(network6)
    out = []
    for r in host_routes6():
        dst = r.get("dst")
        if not dst or dst == "default":
            continue
        try:
            rnet = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if rnet.version == 6 and rnet.overlaps(net):
            out.append(r)
    return out


def sysctl(lab, node: str, key: str) -> str:
    return lab.node_exec(node, "cat", "/proc/sys/" + key.replace(".", "/")).stdout.strip()


def pod_ip6(pod: dict) -> str | None:
    return next((a["ip"] for a in pod["status"].get("podIPs") or [] if ":" in a["ip"]), None)


def test_dual_stack_lab_carries_ipv6_contained_and_leaves_nothing(lab, tmp_path):
    spec = dual(lab)
    w1 = lab.node_ips6["w1-k8s"]
    # before the lab exists the host would send there through its own default route: refused
    assert netemu("check-route", w1, check=False).returncode != 0
    lab.up(NP_PODS.format(replicas=3), tmp_path=tmp_path, lab_spec=spec)
    link = f"ne-{lab.name}"

    # ---- the host: gateway6 on its lab link, the segment's IPv6 routes through that link only
    addrs = json.loads(subprocess.run(["ip", "-j", "-6", "addr", "show", "dev", link],
                                      capture_output=True, text=True).stdout)
    assert f"{lab.gateway6}" in [a["local"] for a in addrs[0]["addr_info"]]
    into = host_routes_into(lab.network6)
    assert into and all(r.get("dev") == link for r in into), into
    for key in ("accept_ra", "autoconf", "accept_redirects"):
        assert open(f"/proc/sys/net/ipv6/conf/{link}/{key}").read().strip() == "0"
    res = netemu("check-route", w1, "--lab", lab.name)
    assert link in res.stdout
    assert netemu("check-route", f"[{w1}]", "--lab", lab.name).returncode == 0
    lab.host_safe(w1)
    ping = subprocess.run(["ping", "-6", "-c", "1", "-W", "3", w1], capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    # ---- the nodes: their IPv6 address, forwarding, no IPv6 default route, nothing from RAs
    nodes = {n["metadata"]["name"]: n for n in lab.get("nodes")}
    for name, ip6 in lab.node_ips6.items():
        eth0 = lab.node_exec(name, "ip", "-6", "addr", "show", "dev", "eth0").stdout
        line = next(x for x in eth0.splitlines() if f"{ip6}/64" in x)
        assert "tentative" not in line and "nodad" in line, line  # usable at once
        routes = lab.node_exec(name, "ip", "-6", "route").stdout
        assert "default" not in routes, routes
        assert "default" not in lab.node_exec(name, "ip", "route").stdout
        assert sysctl(lab, name, "net.ipv6.conf.all.forwarding") == "1"
        for scope in ("all", "default", "eth0"):
            assert sysctl(lab, name, f"net.ipv6.conf.{scope}.accept_ra") == "0"
            assert sysctl(lab, name, f"net.ipv6.conf.{scope}.autoconf") == "0"
        cidrs6 = [c for c in nodes[name]["spec"].get("podCIDRs") or [] if ":" in c]
        if cidrs6:  # cni0 holds ::1 of the node's IPv6 pod subnet; the other nodes' are routed via their ip6
            first = str(next(ipaddress.ip_network(cidrs6[0]).hosts()))
            assert first in lab.node_exec(name, "ip", "-6", "addr", "show", "dev", "cni0").stdout
            for other, onode in nodes.items():
                o6 = [c for c in onode["spec"].get("podCIDRs") or [] if ":" in c]
                if other != name and o6:
                    assert f"{o6[0]} via {lab.node_ips6[other]} dev eth0" in routes
    # node to node over IPv6 on the segment
    lab.node_exec("w2-k8s", "ping", "-6", "-c", "1", "-W", "3", lab.node_ips6["w1-k8s"])

    # ---- the pods: their IPv6 address and default route via cni0's ::1; pod to pod across nodes
    pods = lab.pods()
    with_v6 = [p for p in pods if pod_ip6(p)]
    assert len(with_v6) == len(pods) == 3
    a, b = with_v6[0], next(p for p in with_v6 if p["spec"]["nodeName"] != with_v6[0]["spec"]["nodeName"])
    a_ip6, b_ip6 = pod_ip6(a), pod_ip6(b)
    assert a_ip6 in lab.exec(a["metadata"]["name"], "ip", "-6", "addr", "show", "dev", "eth0").stdout
    assert "default via" in lab.exec(a["metadata"]["name"], "ip", "-6", "route").stdout
    out = lab.exec(a["metadata"]["name"], "curl", "-s", "-g", "-m", "5", f"http://[{b_ip6}]:80/").stdout
    assert out.strip() == b["metadata"]["name"]
    # and IPv4 is as it was
    out = lab.exec(a["metadata"]["name"], "curl", "-s", "-m", "5", f"http://{b['status']['podIP']}:80/").stdout
    assert out.strip() == b["metadata"]["name"]
    # the stand-in sees the IPv6 client as itself (no NAT between pods)
    log = lab.run("logs", b["metadata"]["name"]).stdout
    assert a_ip6 in log, log

    # ---- down: nothing of IPv6 left on the host
    lab.down()
    assert not lab.netns()
    assert not os.path.exists(f"/sys/class/net/{link}")
    assert host_routes_into(lab.network6) == []
    assert netemu("check-route", w1, check=False).returncode != 0


def test_dual_stack_lab_whose_network6_the_host_routes_is_refused(lab, tmp_path):
    """As for IPv4: a lab whose IPv6 segment the host already reaches some other way must not start. A
    blackhole route stands for it (no interface, no traffic)."""
    spec = dual(lab)
    subprocess.run(["ip", "-6", "route", "add", "blackhole", lab.network6], check=True)
    try:
        res = lab.up(NP_PODS.format(replicas=1), tmp_path=tmp_path, check=False, lab_spec=spec)
        assert res.returncode != 0
        assert "already in use on this host" in res.stderr and lab.network6 in res.stderr, res.stderr
        assert not os.path.exists(f"/run/netemu/{lab.name}")
        assert not lab.netns()
    finally:
        subprocess.run(["ip", "-6", "route", "del", "blackhole", lab.network6])


def test_dual_stack_lab_killed_then_down_leaves_no_ipv6(lab, tmp_path):
    spec = dual(lab)
    lab.up(NP_PODS.format(replicas=1), tmp_path=tmp_path, lab_spec=spec)
    assert host_routes_into(lab.network6)
    # a crash for good: the supervisor first (a crash alone is restarted), then the control process
    os.kill(int(open(f"/run/netemu/{lab.name}/supervisor.pid").read()), signal.SIGKILL)
    os.kill(int(open(f"/run/netemu/{lab.name}/daemon.pid").read()), signal.SIGKILL)
    time.sleep(0.2)
    assert host_routes_into(lab.network6)  # still there: nobody took it down yet
    netemu("down", lab.name)
    assert not lab.netns()
    assert not os.path.exists(f"/sys/class/net/ne-{lab.name}")
    assert host_routes_into(lab.network6) == []


def test_a_restarted_control_process_keeps_wiring_pods_in_both_families(lab, tmp_path):
    """The control process dies and its supervisor starts another, which resumes the lab: the pods it
    makes afterwards are wired in IPv6 too (the lab's wires are rebuilt from the Lab document and Nodes)."""
    spec = dual(lab)
    lab.up(NP_PODS.format(replicas=1), tmp_path=tmp_path, lab_spec=spec)
    assert pod_ip6(lab.pods()[0])
    pidfile = f"/run/netemu/{lab.name}/daemon.pid"
    old = int(open(pidfile).read())
    os.kill(old, signal.SIGKILL)

    def resumed():
        try:
            new = int(open(pidfile).read())
        except (OSError, ValueError):
            return False
        return new != old and lab.run("get", "pods", check=False).returncode == 0

    lab.wait_for(resumed, timeout=60, interval=0.3, what="the control process restarted")
    lab.run("scale", "deployment", "np-pods", "--replicas=3")

    def running():
        pods = lab.pods()
        ok = [p for p in pods if p["status"].get("phase") == "Running" and pod_ip6(p)
              and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])]
        return ok if len(ok) == 3 == len(pods) else False

    pods = lab.wait_for(running, timeout=60, what="3 pods with IPv6 addresses")
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert len(nodes) >= 2
    a = pods[0]
    for b in pods[1:]:
        out = lab.exec(a["metadata"]["name"], "curl", "-s", "-g", "-m", "5", f"http://[{pod_ip6(b)}]:80/").stdout
        assert out.strip() == b["metadata"]["name"]
    lab.down()
    assert host_routes_into(lab.network6) == []
