#!/usr/bin/env python3
"""Cluster DNS benchmark (issue 4): netemu's resolver against dnsmasq, same A records, one run.

N ClusterIP Services become a zone; netemu's server (the code the CoreDNS pods run) serves it on
127.0.0.1, and dnsmasq serves the same names and addresses from a hosts file. dnsperf then
measures each: the maximum queries per second (no rate limit, 10 concurrent clients), and the
latency distribution at a fixed rate (p50/p99 from dnsperf's per-query report).

Run as root or not: .venv/bin/python scripts/bench_dns.py [--services 1000] [--rate 20000]
Needs dnsperf and dnsmasq (Debian packages dnsperf, dnsmasq-base); installs them if missing.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in (("dnsperf", "dnsperf"), ("dnsmasq", "dnsmasq-base")) if not shutil.which(tool)]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def records(n: int) -> list[tuple[str, str]]:
    base = int(ipaddress.ip_address("10.96.0.0")) + 16
    return [(f"svc{i}.ns{i % 20}.svc.cluster.local", str(ipaddress.ip_address(base + i))) for i in range(n)]


def start_netemu(recs, port: int) -> int:
    """The resolver in its own process, as in a DNS pod."""
    pid = os.fork()
    if pid:
        return pid
    try:
        from netemu.dns import ZoneFeed, serve
        from netemu.dns.zone import ClusterZone
        from netemu.spec.models import Service

        svcs = []
        for name, ip in recs:
            svc, ns = name.split(".")[:2]
            svcs.append(Service.model_validate({
                "metadata": {"name": svc, "namespace": ns, "resourceVersion": "1"},
                "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80, "protocol": "TCP"}]}}))
        zone = ClusterZone.build(svcs, [], [], namespaces=[f"ns{i}" for i in range(20)])
        serve("127.0.0.1", ZoneFeed(zone), port=port, metrics_port=None, health_port=None, ready_port=None)
        while True:
            signal.pause()
    finally:
        os._exit(0)


def start_dnsmasq(recs, port: int, tmp: str) -> subprocess.Popen:
    hosts = os.path.join(tmp, "hosts")
    with open(hosts, "w") as f:
        for name, ip in recs:
            f.write(f"{ip} {name}\n")
    return subprocess.Popen(["dnsmasq", "-k", "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}",
                             "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={port}",
                             "--cache-size=10000", "--local=/cluster.local/", "--user=root", "--pid-file="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_answering(port: int, name: str) -> None:
    from dnslib import DNSRecord

    q = DNSRecord.question(name).pack()
    deadline = time.time() + 20
    while time.time() < deadline:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.2)
        try:
            s.sendto(q, ("127.0.0.1", port))
            if s.recvfrom(4096):
                return
        except OSError:
            pass
        finally:
            s.close()
    raise SystemExit(f"nothing answers on 127.0.0.1:{port}")


def dnsperf(port: int, qfile: str, seconds: int, rate: int | None) -> tuple[float, list[float]]:
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", qfile, "-l", str(seconds), "-c", "10", "-q", "200"]
    if rate:
        argv += ["-Q", str(rate), "-v"]
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    qps = float(m.group(1)) if m else 0.0
    lat = [float(x) * 1000 for x in re.findall(r"^> \S+ \S+ \S+ ([\d.]+)", out, re.M)] if rate else []
    return qps, lat


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=20000, help="queries per second for the latency runs")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    ensure_tools()
    recs = records(args.services)
    results: dict[str, dict[str, list]] = {"netemu": {"qps": [], "lat": []}, "dnsmasq": {"qps": [], "lat": []}}
    with tempfile.TemporaryDirectory() as tmp:
        qfile = os.path.join(tmp, "queries")
        with open(qfile, "w") as f:
            for name, _ in recs:
                f.write(f"{name} A\n")
        p1, p2 = free_port(), free_port()
        npid = start_netemu(recs, p1)
        dm = start_dnsmasq(recs, p2, tmp)
        try:
            wait_answering(p1, recs[0][0])
            wait_answering(p2, recs[0][0])
            for _ in range(args.rounds):  # interleaved, so both see the same machine
                for label, port in (("netemu", p1), ("dnsmasq", p2)):
                    qps, _ = dnsperf(port, qfile, args.seconds, None)
                    results[label]["qps"].append(qps)
                    _, lat = dnsperf(port, qfile, args.seconds, args.rate)
                    results[label]["lat"] += lat
                    print(f"{label:>8}: {qps:,.0f} qps max; {len(lat)} timed queries at {args.rate}/s", flush=True)
        finally:
            os.kill(npid, signal.SIGKILL)
            os.waitpid(npid, 0)
            dm.kill()
            dm.wait()
    print()
    print(f"{'server':<10}{'max QPS (best)':>16}{'max QPS (mean)':>16}{'p50 ms':>9}{'p99 ms':>9}   at {args.rate:,} qps")
    for label, r in results.items():
        print(f"{label:<10}{max(r['qps']):>16,.0f}{statistics.mean(r['qps']):>16,.0f}"
              f"{pct(r['lat'], 50):>9.3f}{pct(r['lat'], 99):>9.3f}")
    ratio = statistics.mean(results["netemu"]["qps"]) / max(1.0, statistics.mean(results["dnsmasq"]["qps"]))
    print(f"\nnetemu / dnsmasq mean max QPS: {ratio:.2f}x   "
          f"(targets: at least dnsmasq's QPS, p99 under 1 ms); {args.services} A records")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
