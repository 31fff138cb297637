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

It prints a table and writes a PNG plot (connect latency against the number of Services, one line
per mode). IPVS needs the kernel's ip_vs: where it is missing, the IPVS row says so (the IPVS data
path is tested in a VM, see tests/e2e/test_ipvs_vm.py, but timings under emulation would not
compare with these).

Run as root: .venv/bin/python scripts/bench_modes.py [--sizes 10,1000,5000,10000] [--out bench-out]
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

from netemu.dataplane.proxy.iptables.apply import IptablesBackend  # noqa: E402
from netemu.dataplane.proxy.nftables.apply import NftablesBackend  # noqa: E402
from netemu.dataplane.proxy.view import build_view  # noqa: E402
from netemu.spec.models import EndpointSlice, Lab, Service  # noqa: E402

P = "ne-benchmode"
NODE, CLIENT, PODS = f"{P}-node", f"{P}-client", (f"{P}-pod1", f"{P}-pod2")
GW, POD_IPS, CLIENT_IP = "10.244.7.1", ("10.244.7.11", "10.244.7.12"), "10.244.7.50"  # outside SERVICE_CIDR
NODE_IP = "192.168.97.10"
SERVICE_CIDR = "10.96.0.0/12"


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


def topology() -> list[subprocess.Popen]:
    """node (bridge cni0, forwarding, bridge-nf) + two pods serving HTTP + a client pod."""
    for ns in (NODE, CLIENT, *PODS):
        sh("ip", "netns", "add", ns)
    node = ["link set lo up", "link add cni0 type bridge", f"addr add {GW}/24 dev cni0", "link set cni0 up",
            "link add eth0 type veth peer name peer0", f"addr add {NODE_IP}/24 dev eth0", "link set eth0 up",
            "link set peer0 up", f"route add {SERVICE_CIDR} dev eth0"]
    for i, ns in enumerate((*PODS, CLIENT)):
        node += [f"link add v{i} type veth peer name eth0 netns {ns}", f"link set v{i} master cni0 up",
                 f"link set dev v{i} type bridge_slave hairpin on"]
    sh("ip", "-n", NODE, "-batch", "-", input="\n".join(node) + "\n")
    for ns, ip in ((PODS[0], POD_IPS[0]), (PODS[1], POD_IPS[1]), (CLIENT, CLIENT_IP)):
        sh("ip", "-n", ns, "-batch", "-", input=f"link set lo up\naddr add {ip}/24 dev eth0\nlink set eth0 up\n"
                                                 f"route add default via {GW}\n")
    for k, v in (("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1"),
                 ("net/ipv4/icmp_ratelimit", "0")):
        sh("ip", "netns", "exec", NODE, "sh", "-c", f"echo {v} > /proc/sys/{k}")
    servers = []
    code = ("import sys; from netemu.workloads import run_builtin, WorkloadContext, PortSpec; "
            "run_builtin('generic', WorkloadContext(pod_name=sys.argv[1], namespace='default', pod_ip='', "
            "node_name='node', image='bench', container_name='c', ports=[PortSpec(8080)]))")
    for ns in PODS:
        servers.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code, ns],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.time() + 15
    for ip in POD_IPS:
        while sh("ip", "netns", "exec", CLIENT, "curl", "-s", "-m", "1", f"http://{ip}:8080/", check=False).returncode:
            if time.time() > deadline:
                raise SystemExit("the pod servers did not start")
            time.sleep(0.1)
    return servers


def objects(n: int) -> tuple[list[Service], list[EndpointSlice]]:
    base = int(ipaddress.ip_address("10.96.0.0")) + 16
    svcs, slices = [], []
    for i in range(n):
        ip = str(ipaddress.ip_address(base + i))
        svcs.append(Service.model_validate({
            "metadata": {"name": f"svc{i}", "namespace": "bench", "resourceVersion": "1"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}))
        slices.append(EndpointSlice.model_validate({
            "metadata": {"name": f"svc{i}-x", "namespace": "bench", "resourceVersion": "1",
                         "labels": {"kubernetes.io/service-name": f"svc{i}"}},
            "endpoints": [{"addresses": [a], "conditions": {"ready": True, "serving": True, "terminating": False},
                           "nodeName": "node"} for a in POD_IPS],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
    return svcs, slices


def kernel_rule_memory() -> int:
    """kB the kernel holds for rules: unreclaimable slab (nftables rules, sets, chains) plus vmalloc
    (the xtables blobs). Steadier than MemAvailable, which moves with the page cache."""
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return info["SUnreclaim"] + info["VmallocUsed"]


def program(mode: str, n: int) -> tuple[float, float, str]:
    lab = Lab()
    lab.spec.service_cidr = SERVICE_CIDR
    backend = {"iptables": IptablesBackend, "nftables": NftablesBackend}[mode](lab)
    svcs, slices = objects(n)
    gc.collect()
    gc.freeze()
    time.sleep(0.5)
    before = kernel_rule_memory()
    t0 = time.perf_counter()
    view = build_view(svcs, slices, node_name="node", node_ips=[NODE_IP], cluster_cidr="10.244.7.0/24")
    backend.apply(NODE, view, None)
    dt = time.perf_counter() - t0
    time.sleep(0.5)
    mem_mb = (kernel_rule_memory() - before) / 1024
    gc.unfreeze()
    return dt, mem_mb, svcs[-1].spec.cluster_ip


PROBE = r"""
import socket, sys, time
ip, n = sys.argv[1], int(sys.argv[2])
for _ in range(n):
    s = socket.socket()
    s.settimeout(3)
    t0 = time.perf_counter()
    try:
        s.connect((ip, 80))
        t1 = time.perf_counter()
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
        t2 = time.perf_counter()
        print(f"{(t1 - t0) * 1000:.4f} {(t2 - t0) * 1000:.4f}")
    except OSError:
        print("fail")
    finally:
        s.close()
"""


def latencies(ip: str, count: int) -> tuple[list[float], list[float]]:
    """New connections, one request each, from the client pod: connect time and request time."""
    out = sh("ip", "netns", "exec", CLIENT, sys.executable, "-c", PROBE, ip, str(count), check=False).stdout
    pairs = [tuple(float(x) for x in line.split()) for line in out.splitlines() if line and line != "fail"]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def throughput(ip: str, seconds: int) -> float:
    if not shutil.which("wrk"):
        return float("nan")
    out = sh("ip", "netns", "exec", CLIENT, "wrk", "-t", "2", "-c", "8", "-d", f"{seconds}s", "-H",
             "Connection: close", f"http://{ip}/", check=False).stdout
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
    for mode in sorted({r["mode"] for r in rows}):
        pts = [(r["services"], r["connect_p50"], r["connect_p99"]) for r in rows if r["mode"] == mode]
        xs = [p[0] for p in pts]
        (line,) = ax.plot(xs, [p[1] for p in pts], marker="o", label=f"{mode} p50")
        ax.plot(xs, [p[2] for p in pts], marker="x", linestyle="--", color=line.get_color(), label=f"{mode} p99")
    ax.set_xscale("log")
    ax.set_xlabel("ClusterIP Services (2 endpoints each)")
    ax.set_ylabel("new-connection time to the last Service (ms)")
    ax.set_title("kube-proxy modes on this kernel (netemu)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,1000,5000,10000")
    ap.add_argument("--modes", default="iptables,nftables,ipvs")
    ap.add_argument("--connections", type=int, default=400)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
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
        # TIME_WAIT sockets from the one before
        for n in sizes:
            for mode in modes:
                servers = topology()
                try:
                    prog, mem, ip = program(mode, n)
                    connect, total = latencies(ip, args.connections)
                    rps = throughput(ip, args.seconds)
                finally:
                    for s in servers:
                        s.kill()
                    cleanup()
                row = {"mode": mode, "services": n, "program_s": prog, "ruleset_mb": mem,
                       "connect_p50": pct(connect, 50), "connect_p99": pct(connect, 99),
                       "request_p50": pct(total, 50), "request_p99": pct(total, 99), "rps": rps,
                       "ok": len(connect)}
                rows.append(row)
                print(f"{mode:>9} {n:>6}: program {prog:.2f}s, connect p50 {row['connect_p50']:.3f} ms "
                      f"p99 {row['connect_p99']:.3f} ms, {rps:,.0f} req/s", flush=True)
    finally:
        cleanup()
    rows.sort(key=lambda r: (r["mode"], r["services"]))
    print()
    hdr = (f"{'mode':<10}{'services':>9}{'program':>9}{'ruleset':>9}{'connect p50':>12}{'p99':>8}"
           f"{'request p50':>12}{'p99':>8}{'req/s':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['mode']:<10}{r['services']:>9}{r['program_s']:>8.2f}s{r['ruleset_mb']:>7.1f}MB"
              f"{r['connect_p50']:>10.3f}ms{r['connect_p99']:>6.3f}ms{r['request_p50']:>10.3f}ms"
              f"{r['request_p99']:>6.3f}ms{r['rps']:>9,.0f}")
    for s in skipped:
        print(s)
    with open(os.path.join(args.out, "bench_modes.json"), "w") as f:
        json.dump(rows, f, indent=1)
    plot(rows, os.path.join(args.out, "bench_modes.png"))
    by = {}
    for r in rows:
        by.setdefault(r["mode"], {})[r["services"]] = r
    for mode, m in by.items():
        lo, hi = min(m), max(m)
        print(f"{mode}: connect p50 {m[lo]['connect_p50']:.3f} ms at {lo} services -> {m[hi]['connect_p50']:.3f} ms at "
              f"{hi} ({m[hi]['connect_p50'] / m[lo]['connect_p50']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
