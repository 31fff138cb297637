"""An IPv6-only lab for real: every address IPv6 (the segment, the host's gateway, the nodes, the pods,
the Services, kube-dns), kube-proxy's IPv6 proxier alone (ip6tables or table ip6 kube-proxy), no IPv4
address anywhere but loopback; pod to pod across nodes, a ClusterIP and a NodePort (from the host after
`netemu check-route`), AAAA from a pod, the API server through its IPv6 ClusterIP, an IPv6 LoadBalancer IP
answered by NDP; nothing left after `down`.

The lab's ranges are fd00:6:<index>::/64 and its pod and service ranges inside fd00:6:<index>:100::/56 and
:200::/112: apart from the dual-stack tests' (fd00:192:168:..., fd00:172:..., fd00:10:...) and never the
machine's own fd00::/64. Traffic goes only to the lab's addresses, from the host only after the route check."""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess

import pytest

from conftest import NP_PODS, NP_SVC, netemu


def _claimed_networks() -> list:
    """The IPv6 ranges running labs claimed (another run's IPv6-only labs must not share ours)."""
    from netemu import locks, paths

    out = []
    for name in paths.running_labs():
        spec = (locks.read_claim(name) or {}).get("spec") or {}
        for key in ("network", "podCIDR", "serviceCIDR", "network6", "podCIDR6", "serviceCIDR6"):
            try:
                net = ipaddress.ip_network(spec.get(key) or "", strict=False)
            except ValueError:
                continue
            if net.version == 6:
                out.append(net)
    return out


def ipv6_only(lab) -> None:
    """Make the test lab IPv6-only: its Lab document names IPv6 in the primary fields (quoted: a plain
    YAML scalar with colons is not safe in a flow mapping)."""
    taken = _claimed_networks()
    i = lab.index % 4096
    while any(ipaddress.ip_network(f"fd00:6:{i:x}::/48").overlaps(n) for n in taken):
        i = (i + 1) % 4096
    base = f"fd00:6:{i:x}"
    lab.network6 = f"{base}::/64"
    lab.gateway6 = f"{base}::1"
    lab.pod_cidr6 = f"{base}:100::/56"
    lab.service_cidr6 = f"{base}:200::/112"
    lab.dns6 = f"{base}:200::a"
    lab.node_ips6 = {"m-k8s": f"{base}::10", "w1-k8s": f"{base}::101", "w2-k8s": f"{base}::102",
                     "w3-k8s": f"{base}::103"}

    def lab_doc(**spec) -> str:
        nodes = "\n".join(f'  - {{name: {n}, ip: "{ip}"{", role: control-plane" if n == "m-k8s" else ""}}}'
                          for n, ip in lab.node_ips6.items())
        extra = "".join(f"  {k}: {v}\n" for k, v in spec.items())
        return (f"apiVersion: netemu.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: {lab.name}\nspec:\n"
                f'  network: "{lab.network6}"\n  gateway: "{lab.gateway6}"\n  podCIDR: "{lab.pod_cidr6}"\n'
                f'  serviceCIDR: "{lab.service_cidr6}"\n  clusterDNS: "{lab.dns6}"\n'
                f"  podEvictionTimeoutSeconds: 2\n  restartBackoffSeconds: 1\n  nodes:\n{nodes}\n{extra}")

    lab.lab_doc = lab_doc


def host_routes_into(network: str) -> list[dict]:
    net = ipaddress.ip_network(network)
    out = subprocess.run(["ip", "-j", "-6", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    hits = []
    for r in json.loads(out or "[]"):
        dst = r.get("dst")
        if not dst or dst == "default":
            continue
        try:
            rnet = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if rnet.version == 6 and rnet.overlaps(net):
            hits.append(r)
    return hits


def curl6(lab, address: str, port: int, timeout: float = 3) -> str:
    """curl from the host, only after checking that the route goes into this lab."""
    lab.host_safe(address)
    assert netemu("check-route", address, "--lab", lab.name).returncode == 0
    res = subprocess.run(["curl", "-s", "-g", "-m", str(timeout), f"http://[{address}]:{port}/"],
                         capture_output=True, text=True)
    return res.stdout if res.returncode == 0 else f"<curl rc={res.returncode}>"


def ready_pods(lab, count: int) -> list[dict]:
    def ok():
        pods = [p for p in lab.pods("app=np-pods") if p["status"].get("phase") == "Running"
                and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])]
        return pods if len(pods) == count else False

    return lab.wait_for(ok, timeout=60, what=f"{count} np-pods Running and Ready")


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_ipv6_only_lab_end_to_end(lab, tmp_path, mode):
    ipv6_only(lab)
    w1 = lab.node_ips6["w1-k8s"]
    # before the lab exists the host would send there through its own default route: refused
    assert netemu("check-route", w1, check=False).returncode != 0
    net = ipaddress.ip_network(lab.network6)
    pool = (str(net.network_address + 0x240), str(net.network_address + 0x24f))
    lb = f"""\
---
apiVersion: v1
kind: Namespace
metadata: {{name: metallb-system}}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: six, namespace: metallb-system}}
spec: {{addresses: ["{pool[0]}-{pool[1]}"]}}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {{name: l2, namespace: metallb-system}}
---
apiVersion: v1
kind: Service
metadata: {{name: lb6}}
spec:
  type: LoadBalancer
  selector: {{app: np-pods}}
  ports: [{{port: 80, targetPort: 80}}]
"""
    lab.up(NP_PODS.format(replicas=3) + NP_SVC + lb, tmp_path=tmp_path, lab_spec={"proxyMode": mode})
    link = f"ne-{lab.name}"

    # ---- the host: the IPv6 gateway on its lab link and no IPv4 address there; routes via that link only
    addrs = json.loads(subprocess.run(["ip", "-j", "addr", "show", "dev", link], capture_output=True,
                                      text=True).stdout)[0]["addr_info"]
    assert lab.gateway6 in [a["local"] for a in addrs if a["family"] == "inet6"]
    assert not [a for a in addrs if a["family"] == "inet"], addrs
    into = host_routes_into(lab.network6)
    assert into and all(r.get("dev") == link for r in into), into
    for key in ("accept_ra", "autoconf", "accept_redirects"):
        assert open(f"/proc/sys/net/ipv6/conf/{link}/{key}").read().strip() == "0"

    # ---- the objects: IPv6 alone everywhere
    nodes = {n["metadata"]["name"]: n for n in lab.get("nodes")}
    for name, ip6 in lab.node_ips6.items():
        n = nodes[name]
        assert [a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP"] == [ip6]
        (cidr,) = n["spec"]["podCIDRs"]
        assert cidr == n["spec"]["podCIDR"] and ipaddress.ip_network(cidr).prefixlen == 64
        assert ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network(lab.pod_cidr6))
    svc = lab.get("services", "np-svc")[0]["spec"]
    assert svc["ipFamilies"] == ["IPv6"] and svc["ipFamilyPolicy"] == "SingleStack"
    cluster_ip = svc["clusterIP"]
    assert svc["clusterIPs"] == [cluster_ip]
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(lab.service_cidr6)
    dns = lab.get("services", "kube-dns", "-n", "kube-system")[0]["spec"]
    assert dns["clusterIP"] == lab.dns6
    slices = lab.get("endpointslices", "-l", "kubernetes.io/service-name=np-svc")
    assert [s["addressType"] for s in slices] == ["IPv6"]
    pods = ready_pods(lab, 3)
    for p in pods:
        ip = p["status"]["podIP"]
        assert [a["ip"] for a in p["status"]["podIPs"]] == [ip]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(nodes[p["spec"]["nodeName"]]["spec"]["podCIDR"])
    assert sorted(a for s in slices for e in s["endpoints"] for a in e["addresses"]) == \
        sorted(p["status"]["podIP"] for p in pods)

    # ---- the wires: no IPv4 address but loopback, no default route in a node, kube-proxy's IPv6 rules only
    for name in lab.node_ips6:
        assert lab.node_exec(name, "ip", "-4", "addr", "show", "scope", "global").stdout.strip() == ""
        assert "default" not in lab.node_exec(name, "ip", "-6", "route").stdout
        assert lab.node_exec(name, "cat", "/proc/sys/net/ipv6/conf/all/forwarding").stdout.strip() == "1"
    if mode == "iptables":
        six = lab.node_exec("w1-k8s", "ip6tables-save", "-t", "nat").stdout
        assert "KUBE-SERVICES" in six and cluster_ip in six
        assert "KUBE-SERVICES" not in lab.node_exec("w1-k8s", "iptables-save", "-t", "nat").stdout
    else:
        tables = lab.node_exec("w1-k8s", "nft", "list", "tables").stdout
        assert "table ip6 kube-proxy" in tables and "table ip kube-proxy" not in tables, tables
    a = pods[0]["metadata"]["name"]
    assert lab.exec(a, "ip", "-4", "addr", "show", "dev", "eth0").stdout.strip() == ""
    assert lab.exec(a, "cat", "/etc/resolv.conf").stdout.splitlines()[1] == f"nameserver {lab.dns6}"

    # ---- pod to pod across nodes, a ClusterIP from a pod
    names = {p["metadata"]["name"] for p in pods}
    b = next(p for p in pods if p["spec"]["nodeName"] != pods[0]["spec"]["nodeName"])
    out = lab.exec(a, "curl", "-s", "-g", "-m", "5", f"http://[{b['status']['podIP']}]:80/").stdout
    assert out.strip() == b["metadata"]["name"]
    assert pods[0]["status"]["podIP"] in lab.run("logs", b["metadata"]["name"]).stdout  # no NAT between pods
    seen = {lab.exec(a, "curl", "-s", "-g", "-m", "5", f"http://[{cluster_ip}]:80/").stdout.strip()
            for _ in range(6)}
    assert seen and seen <= names, seen

    # ---- AAAA from a pod (kube-dns over IPv6, through its IPv6 ClusterIP)
    fqdn = "np-svc.default.svc.cluster.local"
    assert lab.exec(a, "dig", "+short", "+time=3", "AAAA", fqdn).stdout.split() == [cluster_ip]
    assert lab.exec(a, "dig", "+short", "+time=3", "A", fqdn).stdout.split() == []

    # ---- the NodePort from the host, after the route check; every node answers
    for node, ip6 in lab.node_ips6.items():
        got = curl6(lab, ip6, 30000).strip()
        assert got in names, (node, got)

    # ---- the in-cluster API server through default/kubernetes' IPv6 ClusterIP (the control plane's :6443)
    kube_ip = lab.get("services", "kubernetes")[0]["spec"]["clusterIP"]
    assert kube_ip == str(ipaddress.ip_network(lab.service_cidr6)[1])
    code = lab.exec(a, "curl", "-sk", "-g", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                    f"https://[{kube_ip}]:443/version").stdout
    assert code == "200", code

    # ---- a LoadBalancer IP from an IPv6 pool: resolved by NDP on the lab link (MetalLB's layer 2), served
    ingress = lab.wait_for(lambda: (lab.get("services", "lb6")[0].get("status", {}).get("loadBalancer", {})
                                    .get("ingress")), timeout=30, what="lb6's LoadBalancer IP")
    lb_ip = ingress[0]["ip"]
    assert ipaddress.ip_address(pool[0]) <= ipaddress.ip_address(lb_ip) <= ipaddress.ip_address(pool[1])
    assert curl6(lab, lb_ip, 80).strip() in names
    neigh = subprocess.run(["ip", "-6", "neigh", "show", lb_ip, "dev", link], capture_output=True, text=True).stdout
    assert "lladdr" in neigh, neigh
    if mode == "iptables":  # the announcing node goes down: another node's NA moves the address (once is enough)
        mac = neigh.split("lladdr")[1].split()[0]
        owner = next(n for n in ("w1-k8s", "w2-k8s", "w3-k8s")
                     if mac in lab.node_exec(n, "ip", "link", "show", "eth0").stdout)
        lab.run("node", "down", owner)

        def moved():
            text = subprocess.run(["ip", "-6", "neigh", "show", lb_ip, "dev", link], capture_output=True,
                                  text=True).stdout
            return "lladdr" in text and text.split("lladdr")[1].split()[0] != mac

        lab.wait_for(moved, timeout=20, what=f"{lb_ip} announced by another node")
        assert curl6(lab, lb_ip, 80).strip().startswith("np-pods-")
        lab.run("node", "up", owner)

    # ---- down: nothing left
    lab.down()
    assert not lab.netns()
    assert not os.path.exists(f"/sys/class/net/{link}")
    assert host_routes_into(lab.network6) == []
    assert not [n for n in os.listdir("/etc/netns") if n.startswith(f"ne-{lab.name}")] \
        if os.path.isdir("/etc/netns") else True
    assert netemu("check-route", w1, check=False).returncode != 0


def test_ipv6_only_lab_whose_network_the_host_routes_is_refused(lab, tmp_path):
    """A lab whose IPv6 network the host reaches some other way must not start (the host's IPv6 routes
    are checked for an IPv6-only lab). A blackhole route stands for it: no interface, no traffic."""
    ipv6_only(lab)
    subprocess.run(["ip", "-6", "route", "add", "blackhole", lab.network6], check=True)
    try:
        res = lab.up(NP_PODS.format(replicas=1), tmp_path=tmp_path, check=False)
        assert res.returncode != 0
        assert "already in use on this host" in res.stderr and lab.network6 in res.stderr, res.stderr
        assert not os.path.exists(f"/run/netemu/{lab.name}")
        assert not lab.netns()
    finally:
        subprocess.run(["ip", "-6", "route", "del", "blackhole", lab.network6])


def test_a_restarted_control_process_resumes_an_ipv6_only_lab(lab, tmp_path):
    """The control process dies and its supervisor starts another: it rebuilds the lab's wires and
    kube-proxy from the Lab document (IPv6 in the primary fields) and the pods it makes afterwards are
    wired and served in IPv6."""
    ipv6_only(lab)
    lab.up(NP_PODS.format(replicas=1) + NP_SVC, tmp_path=tmp_path)
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
    pods = ready_pods(lab, 3)
    names = {p["metadata"]["name"] for p in pods}
    a = pods[0]
    for b in pods[1:]:
        out = lab.exec(a["metadata"]["name"], "curl", "-s", "-g", "-m", "5", f"http://[{b['status']['podIP']}]:80/")
        assert out.stdout.strip() == b["metadata"]["name"]
    seen = {curl6(lab, lab.node_ips6["w2-k8s"], 30000).strip() for _ in range(6)}
    assert seen <= names and seen, seen
    lab.down()
    assert host_routes_into(lab.network6) == []
