#!/usr/bin/env python3
"""The seed 004 question (issue 6): do Service rules slow connections down as they grow, per mode?

For each proxy mode this kernel supports and 10 / 1,000 / 5,000 / 10,000 ClusterIP Services (2
endpoints each), on a node namespace built here: kube-proxy's rules are programmed with netemu's
own applier for that mode, two pod namespaces serve HTTP, and a client pod on the node's bridge
measures, against the last Service added:

  latency     new-connection time (TCP connect through the DNAT rules) and whole-request time,
              p50/p99 over many connections (curl -w, one connection per request)
  throughput  short requests per second with a new connection each (wrk, `Connection: close`)
  program     time to program the whole ruleset (render + apply), and its kernel memory (growth of
              unreclaimable slab + vmalloc)

With IPv6 among --families (the default: 4,6), everything is built in both families at once, as in
a dual-stack lab: the node and pods get IPv6 addresses too (nodad, no router advertisements taken,
forwarding on, cni0 the pod subnet's ::1), every Service is PreferDualStack with an IPv4 and an IPv6
clusterIP (fd00:10:96::/112) and an EndpointSlice per family, and each family's view is programmed
by its own backend (ip6tables-restore, table `ip6 kube-proxy`), both loaded side by side as
kube-proxy's two proxiers load them. The IPv4 and IPv6 clusterIPs of the last Service are then
measured in the same run, connection by connection in turn (with the first Service's, whose rule is
the first walked, and, after all else, a pod's own address: the family's cost apart from the walk
and apart from the Service), and a second table gives the IPv6 rows
next to the IPv4 ones with their ratio (issue 19's target: within 1.1x).

It prints a table and writes a PNG plot (connect latency against the number of Services, one line
per mode and family). IPVS needs the kernel's ip_vs: where it is missing, the IPVS row says so (the IPVS data
path is tested in a VM, see tests/e2e/test_ipvs_vm.py, but timings under emulation would not
compare with these).

Run as root: .venv/bin/python scripts/bench_modes.py [--sizes 10,1000,5000,10000] [--families 4,6] [--out bench-out]
Namespaces are named ne-benchmode-*; they are removed at the end.
"""
from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netemu.dataplane import nsutil  # noqa: E402
from netemu.dataplane.labnet import ipv6_on  # noqa: E402
from netemu.dataplane.proxy.addresses import IPV4, IPV6  # noqa: E402
from netemu.dataplane.proxy.iptables.apply import IptablesBackend  # noqa: E402
from netemu.dataplane.proxy.nftables.apply import NftablesBackend  # noqa: E402
from netemu.dataplane.proxy.view import build_view  # noqa: E402
from netemu.spec.models import EndpointSlice, Lab, Service  # noqa: E402

P = "ne-benchmode"
NODE, CLIENT, PODS = f"{P}-node", f"{P}-client", (f"{P}-pod1", f"{P}-pod2")
GW, POD_IPS, CLIENT_IP = "10.244.7.1", ("10.244.7.11", "10.244.7.12"), "10.244.7.50"  # outside SERVICE_CIDR
NODE_IP = "192.168.97.10"
SERVICE_CIDR = "10.96.0.0/12"
POD_CIDR = "10.244.7.0/24"
# the IPv6 twins, as a dual-stack lab numbers them (cni0 the subnet's ::1)
GW6, POD_IPS6, CLIENT_IP6 = "fd00:10:244:7::1", ("fd00:10:244:7::11", "fd00:10:244:7::12"), "fd00:10:244:7::50"
NODE_IP6 = "fd00:192:168:97::10"
SERVICE_CIDR6 = "fd00:10:96::/112"
POD_CIDR6 = "fd00:10:244:7::/64"
FAMILIES = {"4": IPV4, "6": IPV6}


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, input=input)


def cleanup() -> None:
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(P):
            for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", name, check=False)


def topology(families: list[str]) -> list[subprocess.Popen]:
    """node (bridge cni0, forwarding, bridge-nf) + two pods serving HTTP + a client pod; with IPv6,
    the same in IPv6 too (a dual-stack lab's node and pods)."""
    v6 = IPV6 in families
    for ns in (NODE, CLIENT, *PODS):
        sh("ip", "netns", "add", ns)
        if v6:
            # before any link exists: every link made here (or moved in) takes the quiet defaults
            nsutil.write_sysctl_in(ns, ipv6_on())
    if v6:
        nsutil.write_sysctl_in(NODE, {"net.ipv6.conf.all.forwarding": "1",
                                      "net.bridge.bridge-nf-call-ip6tables": "1",
                                      "net.ipv6.icmp.ratelimit": "0"})
    node = ["link set lo up", "link add cni0 type bridge", f"addr add {GW}/24 dev cni0",
            *([f"addr add {GW6}/64 dev cni0 nodad"] if v6 else []), "link set cni0 up",
            "link add eth0 type veth peer name peer0", f"addr add {NODE_IP}/24 dev eth0",
            *([f"addr add {NODE_IP6}/64 dev eth0 nodad"] if v6 else []), "link set eth0 up",
            "link set peer0 up", f"route add {SERVICE_CIDR} dev eth0",
            *([f"route add {SERVICE_CIDR6} dev eth0"] if v6 else [])]
    for i, ns in enumerate((*PODS, CLIENT)):
        node += [f"link add v{i} type veth peer name eth0 netns {ns}",
                 # a bridge port needs no IPv6 address of its own (as the lab's pod ports)
                 *([f"link set v{i} addrgenmode none"] if v6 else []),
                 f"link set v{i} master cni0 up", f"link set dev v{i} type bridge_slave hairpin on"]
    sh("ip", "-n", NODE, "-batch", "-", input="\n".join(node) + "\n")
    for ns, ip, ip6 in ((PODS[0], POD_IPS[0], POD_IPS6[0]), (PODS[1], POD_IPS[1], POD_IPS6[1]),
                        (CLIENT, CLIENT_IP, CLIENT_IP6)):
        extra = f"addr add {ip6}/64 dev eth0 nodad\n" if v6 else ""
        route6 = f"route add ::/0 via {GW6} dev eth0\n" if v6 else ""
        sh("ip", "-n", ns, "-batch", "-", input=f"link set lo up\naddr add {ip}/24 dev eth0\n{extra}link set eth0 up\n"
                                                 f"route add default via {GW}\n{route6}")
    for k, v in (("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1"),
                 ("net/ipv4/icmp_ratelimit", "0")):
        sh("ip", "netns", "exec", NODE, "sh", "-c", f"echo {v} > /proc/sys/{k}")
    servers = []
    # the stand-in listens on :: too where its namespace has IPv6
    code = ("import sys; from netemu.workloads import run_builtin, WorkloadContext, PortSpec; "
            "run_builtin('generic', WorkloadContext(pod_name=sys.argv[1], namespace='default', pod_ip='', "
            "node_name='node', image='bench', container_name='c', ports=[PortSpec(8080)]))")
    for ns in PODS:
        servers.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code, ns],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.time() + 15
    for ip in (*POD_IPS, *(POD_IPS6 if v6 else ())):
        while sh("ip", "netns", "exec", CLIENT, "curl", "-s", "-g", "-m", "1", f"http://{host(ip)}:8080/",
                 check=False).returncode:
            if time.time() > deadline:
                raise SystemExit("the pod servers did not start")
            time.sleep(0.1)
    return servers


def host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def objects(n: int, families: list[str]) -> tuple[list[Service], list[EndpointSlice]]:
    """n Services, 2 endpoints each. IPv4 alone: as before (no ipFamilies). With IPv6: a clusterIP of
    each family (PreferDualStack, or SingleStack IPv6) and one slice per family, as the apiserver and
    the EndpointSlice controller make them."""
    bases = {IPV4: int(ipaddress.ip_address("10.96.0.0")) + 16, IPV6: int(ipaddress.ip_address("fd00:10:96::")) + 16}
    backends = {IPV4: POD_IPS, IPV6: POD_IPS6}
    svcs, slices = [], []
    for i in range(n):
        ips = [str(ipaddress.ip_address(bases[f] + i)) for f in families]
        spec = {"clusterIP": ips[0], "clusterIPs": ips, "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
        if families != [IPV4]:
            spec.update(ipFamilies=list(families),
                        ipFamilyPolicy="PreferDualStack" if len(families) > 1 else "SingleStack")
        svcs.append(Service.model_validate({
            "metadata": {"name": f"svc{i}", "namespace": "bench", "resourceVersion": "1"}, "spec": spec}))
        for fam in families:
            slices.append(EndpointSlice.model_validate({
                "metadata": {"name": f"svc{i}-x" if fam == IPV4 else f"svc{i}-x6", "namespace": "bench",
                             "resourceVersion": "1", "labels": {"kubernetes.io/service-name": f"svc{i}"}},
                "addressType": fam,
                "endpoints": [{"addresses": [a], "conditions": {"ready": True, "serving": True, "terminating": False},
                               "nodeName": "node"} for a in backends[fam]],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
    return svcs, slices


def kernel_rule_memory() -> int:
    """kB the kernel holds for rules: unreclaimable slab (nftables rules, sets, chains) plus vmalloc
    (the xtables blobs). Steadier than MemAvailable, which moves with the page cache."""
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return info["SUnreclaim"] + info["VmallocUsed"]


def program(mode: str, family: str, svcs: list[Service], slices: list[EndpointSlice]) -> tuple[float, float, str]:
    """One family's kube-proxy rules (its own backend: the IPv6 one beside the IPv4 one, as kube-proxy's
    two proxiers): time to render + apply, kernel memory, the last Service's clusterIP of the family."""
    lab = Lab()
    lab.spec.service_cidr = SERVICE_CIDR
    lab.spec.service_cidr6 = SERVICE_CIDR6
    backend = {"iptables": IptablesBackend, "nftables": NftablesBackend}[mode](lab, ip_family=family)
    node_ip, cidr = (NODE_IP, POD_CIDR) if family == IPV4 else (NODE_IP6, POD_CIDR6)
    gc.collect()
    gc.freeze()
    time.sleep(0.5)
    before = kernel_rule_memory()
    t0 = time.perf_counter()
    view = build_view(svcs, slices, node_name="node", node_ips=[node_ip], cluster_cidr=cidr, ip_family=family)
    backend.apply(NODE, view, None)
    dt = time.perf_counter() - t0
    time.sleep(0.5)
    mem_mb = (kernel_rule_memory() - before) / 1024
    gc.unfreeze()
    return dt, mem_mb, cluster_ip(svcs[-1], family)


def cluster_ip(svc: Service, family: str) -> str:
    spec = svc.spec
    return spec.cluster_ips[spec.ip_families.index(family)] if spec.ip_families else spec.cluster_ip


PROBE = r"""
import random, socket, sys, time
ips, n = sys.argv[2:], int(sys.argv[1])
order, rnd = list(range(len(ips))), random.Random(1)
for r in range(n):
    # the targets in turn, connection by connection, in a new order every round: drift on the
    # machine meets all alike, and none is always first (or always after the same one)
    rnd.shuffle(order)
    for k in order:
        ip, port = ips[k].rsplit("/", 1)
        s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
        s.settimeout(3)
        t0 = time.perf_counter()
        try:
            s.connect((ip, int(port)))
            t1 = time.perf_counter()
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: close\r\n\r\n")
            while s.recv(65536):
                pass
            t2 = time.perf_counter()
            print(f"{k} {(t1 - t0) * 1000:.4f} {(t2 - t0) * 1000:.4f}")
        except OSError:
            print(f"{k} fail")
        finally:
            s.close()
"""


def latencies(ips: list[str], count: int, port: int = 80) -> list[tuple[list[float], list[float]]]:
    """New connections, one request each, from the client pod, to each address in turn: per address,
    connect times and request times."""
    out = sh("ip", "netns", "exec", CLIENT, sys.executable, "-c", PROBE, str(count),
             *(f"{ip}/{port}" for ip in ips), check=False).stdout
    res: list[tuple[list[float], list[float]]] = [([], []) for _ in ips]
    for line in out.splitlines():
        f = line.split()
        if len(f) == 3:
            res[int(f[0])][0].append(float(f[1]))
            res[int(f[0])][1].append(float(f[2]))
    return res


def throughput(ip: str, seconds: int) -> float:
    if not shutil.which("wrk"):
        return float("nan")
    out = sh("ip", "netns", "exec", CLIENT, "wrk", "-t", "2", "-c", "8", "-d", f"{seconds}s", "-H",
             "Connection: close", f"http://{host(ip)}/", check=False).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return float("nan")


def pct(v: list[float], p: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")


def plot(rows, path: str) -> None:
    try:
        import matplotlib
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=False)
        try:
            import matplotlib
        except ImportError:
            print("matplotlib is not available: no plot")
            return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    families = sorted({r["family"] for r in rows})
    colors = {}
    for mode in sorted({r["mode"] for r in rows}):
        for fam in families:
            pts = [(r["services"], r["connect_p50"], r["connect_p99"]) for r in rows
                   if r["mode"] == mode and r["family"] == fam]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            # one colour per mode; IPv4 solid (p99 dashed) as before, IPv6 dotted (p99 dash-dot)
            name = mode if fam == IPV4 else f"{mode} IPv6"
            solid, dashed, mark, mark99 = ("-", "--", "o", "x") if fam == IPV4 else (":", "-.", "s", "+")
            (line,) = ax.plot(xs, [p[1] for p in pts], marker=mark, linestyle=solid, color=colors.get(mode),
                              label=f"{name} p50")
            colors[mode] = line.get_color()
            ax.plot(xs, [p[2] for p in pts], marker=mark99, linestyle=dashed, color=colors[mode], label=f"{name} p99")
    ax.set_xscale("log")
    ax.set_xlabel("ClusterIP Services (2 endpoints each)")
    ax.set_ylabel("new-connection time to the last Service (ms)")
    ax.set_title("kube-proxy modes on this kernel (netemu)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def table(rows: list[dict]) -> None:
    hdr = (f"{'mode':<10}{'services':>9}{'program':>9}{'ruleset':>9}{'connect p50':>12}{'p99':>8}"
           f"{'request p50':>12}{'p99':>8}{'req/s':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['mode']:<10}{r['services']:>9}{r['program_s']:>8.2f}s{r['ruleset_mb']:>7.1f}MB"
              f"{r['connect_p50']:>10.3f}ms{r['connect_p99']:>6.3f}ms{r['request_p50']:>10.3f}ms"
              f"{r['request_p99']:>6.3f}ms{r['rps']:>9,.0f}")


def ratio_table(rows: list[dict]) -> None:
    """IPv6 next to IPv4, row by row (same mode, same size, same run), with IPv6/IPv4."""
    v4 = {(r["mode"], r["services"]): r for r in rows if r["family"] == IPV4}
    pairs = [(v4[(r["mode"], r["services"])], r) for r in rows
             if r["family"] == IPV6 and (r["mode"], r["services"]) in v4]
    if not pairs:
        return
    cols = (("connect_p50", "connect p50"), ("connect_p99", "connect p99"),
            ("request_p50", "request p50"), ("request_p99", "request p99"))
    print()
    print("IPv6 next to IPv4 (ms: IPv4 / IPv6, and IPv6/IPv4)")
    hdr = f"{'mode':<10}{'services':>9}" + "".join(f"{name:>23}" for _, name in cols) + f"{'req/s v4 / v6':>19}"
    print(hdr)
    print("-" * len(hdr))
    for a, b in pairs:
        cells = "".join(f"{a[k]:>8.3f} /{b[k]:>6.3f}{b[k] / a[k]:>6.2f}x" for k, _ in cols)
        print(f"{a['mode']:<10}{a['services']:>9}{cells}{a['rps']:>10,.0f} / {b['rps']:>7,.0f}")
    print()
    print("where it comes from (connect p50, IPv4 / IPv6): straight to a pod (no routing, no DNAT), the first Service "
          "(its rule walked first), the walk down to the last")
    hdr = (f"{'mode':<10}{'services':>9}{'pod, no Service (ms)':>25}{'first Service (ms)':>25}"
           f"{'walk per Service (ns)':>27}")
    print(hdr)
    print("-" * len(hdr))
    for a, b in pairs:
        n = a["services"]
        pa, pb = a["pod_connect_p50"], b["pod_connect_p50"]
        fa, fb = a["first_connect_p50"], b["first_connect_p50"]
        line = f"{a['mode']:<10}{n:>9}{pa:>10.3f} /{pb:>6.3f}{pb / pa:>6.2f}x{fa:>10.3f} /{fb:>6.3f}{fb / fa:>6.2f}x"
        if n >= 100:  # below that, the walk is lost in the noise
            wa, wb = ((r["connect_p50"] - r["first_connect_p50"]) / (n - 1) * 1e6 for r in (a, b))
            line += f"{wa:>10.1f} /{wb:>6.1f}" + (f"{wb / wa:>6.2f}x" if wa > 0.5 else "       -")
        print(line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,1000,5000,10000")
    ap.add_argument("--modes", default="iptables,nftables,ipvs")
    ap.add_argument("--families", default="4,6", help="IP families measured side by side: 4, 6 or 4,6")
    ap.add_argument("--connections", type=int, default=400, help="new connections per family and row")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    try:
        families = [FAMILIES[f.strip().removeprefix("ipv").removeprefix("IPv")]
                    for f in args.families.split(",") if f.strip()]
    except KeyError:
        raise SystemExit(f"--families: 4, 6 or 4,6 (not {args.families})") from None
    families = [f for f in (IPV4, IPV6) if f in families]  # IPv4 first, as a dual-stack lab's order
    if not families:
        raise SystemExit("--families: 4, 6 or 4,6")
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    if IPV6 in families and not os.path.isdir("/proc/sys/net/ipv6"):
        raise SystemExit("this kernel has IPv6 switched off (ipv6.disable=1): run with --families 4")
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    os.makedirs(args.out, exist_ok=True)
    rows, skipped = [], []
    # a stopped run (SIGTERM, Ctrl-C) still goes through the finally below and removes its namespaces
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cleanup()
    sizes = [int(x) for x in args.sizes.split(",")]
    modes = []
    for mode in args.modes.split(","):
        if mode != "ipvs":
            modes.append(mode)
        elif not os.path.exists("/proc/net/ip_vs"):
            skipped.append("ipvs: this kernel has no ip_vs (IPVS is exercised in a VM by "
                           "tests/e2e/test_ipvs_vm*.py; emulated timings would not compare)")
        else:
            skipped.append("ipvs: not benchmarked by this script yet")
    try:
        # sizes outside, modes inside: both modes meet the machine in the same state; and a fresh
        # node, pods and client for every row, so that no row inherits conntrack entries or
        # TIME_WAIT sockets from the one before. Both families share the row's node: IPv4's rules
        # loaded first, then IPv6's beside them, and the two measured connection by connection in turn
        for n in sizes:
            svcs, slices = objects(n, families)
            for mode in modes:
                servers = topology(families)
                try:
                    progs = {fam: program(mode, fam, svcs, slices) for fam in families}
                    # the first Service too (its rule is the first one walked): what a family costs
                    # apart from the walk down the ruleset to the last
                    firsts = [cluster_ip(svcs[0], fam) for fam in families]
                    lat = latencies([progs[fam][2] for fam in families] + firsts, args.connections)
                    rps = {fam: throughput(progs[fam][2], args.seconds) for fam in families}
                    # last: straight to a pod on the same bridge (no routing, no DNAT), what the kernel's
                    # own path costs in each family (in iptables mode its first packet still walks
                    # KUBE-SERVICES: bridged traffic meets the node's nat PREROUTING). Last, because a Service connection that reuses the
                    # 4-tuple of an earlier direct one (the same client port, DNATed to the same pod)
                    # waits about 10 ms here: 1-3 % of them, enough to spoil the p99s measured after
                    pods = [POD_IPS[0] if fam == IPV4 else POD_IPS6[0] for fam in families]
                    direct = latencies(pods, min(args.connections, 500), port=8080)
                finally:
                    for s in servers:
                        s.kill()
                    cleanup()
                for fam, (connect, total), (connect0, _), (connect_pod, _) in zip(
                        families, lat, lat[len(families):], direct):
                    prog, mem, _ = progs[fam]
                    row = {"mode": mode, "family": fam, "services": n, "program_s": prog, "ruleset_mb": mem,
                           "connect_p50": pct(connect, 50), "connect_p99": pct(connect, 99),
                           "request_p50": pct(total, 50), "request_p99": pct(total, 99), "rps": rps[fam],
                           "ok": len(connect), "first_connect_p50": pct(connect0, 50),
                           "pod_connect_p50": pct(connect_pod, 50)}
                    rows.append(row)
                    what = "" if fam == IPV4 else " (IPv6)"
                    print(f"{mode:>9} {n:>6}{what}: program {prog:.2f}s, connect p50 {row['connect_p50']:.3f} ms "
                          f"p99 {row['connect_p99']:.3f} ms, {rps[fam]:,.0f} req/s", flush=True)
                    if len(connect) < args.connections:
                        print(f"  {args.connections - len(connect)} of {args.connections} connections failed")
            del svcs, slices
    finally:
        cleanup()
    rows.sort(key=lambda r: (r["family"], r["mode"], r["services"]))
    for fam in families:
        print()
        if fam != IPV4:
            print(f"{fam} (the same rows' IPv6 clusterIPs, ip6tables / table ip6 kube-proxy):")
        table([r for r in rows if r["family"] == fam])
    ratio_table(rows)
    for s in skipped:
        print(s)
    with open(os.path.join(args.out, "bench_modes.json"), "w") as f:
        json.dump(rows, f, indent=1)
    plot(rows, os.path.join(args.out, "bench_modes.png"))
    for fam in families:
        by = {}
        for r in rows:
            if r["family"] == fam:
                by.setdefault(r["mode"], {})[r["services"]] = r
        for mode, m in by.items():
            lo, hi = min(m), max(m)
            name = mode if fam == IPV4 else f"{mode} ({fam})"
            print(f"{name}: connect p50 {m[lo]['connect_p50']:.3f} ms at {lo} services -> {m[hi]['connect_p50']:.3f} ms "
                  f"at {hi} ({m[hi]['connect_p50'] / m[lo]['connect_p50']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
