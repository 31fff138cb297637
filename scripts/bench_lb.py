#!/usr/bin/env python3
"""LoadBalancer benchmark (issue 5): ARP reply latency and failover time, in one run.

Brings up a lab (its own name and addresses: 192.168.249.0/24), a 3-pod deployment behind a
LoadBalancer Service from a MetalLB pool, and a client namespace on the lab segment. Then:

  ARP      arping round trips from the client (p50/p99 over N requests): the LB IP, answered for
           the announcing node's speaker by that node's kernel (a proxy-ARP entry the speaker
           programs; see netemu/dataplane/speaker.py), against a node IP, answered by that node's
           kernel as its own address, interleaved in the same run
  failover `netemu node down <announcer>` until the first successful HTTP request from the
           client to the LB IP (the client's ARP cache is moved by the new owner's gratuitous ARP)

Run as root: .venv/bin/python scripts/bench_lb.py [--count 200] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

LAB = "benchlb"
NET = "192.168.249"
NETEMU = [sys.executable, "-m", "netemu"]
MANIFEST = f"""\
apiVersion: netemu.dev/v1alpha1
kind: Lab
metadata: {{name: {LAB}}}
spec:
  network: {NET}.0/24
  gateway: {NET}.1
  podCIDR: 172.29.0.0/16
  serviceCIDR: 10.249.0.0/16
  clusterDNS: 10.249.0.10
  podEvictionTimeoutSeconds: 30
  nodes:
  - {{name: m-k8s, ip: {NET}.10, role: control-plane}}
  - {{name: w1-k8s, ip: {NET}.101}}
  - {{name: w2-k8s, ip: {NET}.102}}
  - {{name: w3-k8s, ip: {NET}.103}}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: pool, namespace: metallb-system}}
spec: {{addresses: ["{NET}.11-{NET}.13"]}}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {{name: l2, namespace: metallb-system}}
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
  selector: {{app: web}}
  ports: [{{port: 80}}]
"""
CLIENT = f"ne-{LAB}_zclient"
LB_IP = f"{NET}.11"


def netemu(*args: str) -> str:
    return subprocess.run(NETEMU + [*args, "--lab", LAB] if args[0] not in ("up", "down") else NETEMU + list(args),
                          capture_output=True, text=True, check=True).stdout


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def client_up() -> None:
    sh("ip", "netns", "add", CLIENT)
    sh("ip", "-n", f"ne-{LAB}", "link", "add", "zclient", "type", "veth", "peer", "name", "eth0", "netns", CLIENT)
    sh("ip", "-n", f"ne-{LAB}", "link", "set", "zclient", "master", "br0", "up")
    sh("ip", "-n", CLIENT, "link", "set", "lo", "up")
    sh("ip", "-n", CLIENT, "addr", "add", f"{NET}.200/24", "dev", "eth0")
    sh("ip", "-n", CLIENT, "link", "set", "eth0", "up")


def arping(ip: str, count: int) -> list[float]:
    out = sh("ip", "netns", "exec", CLIENT, "arping", "-c", str(count), "-W", "0.01", "-w", "30", "-i", "eth0", ip,
             check=False).stdout
    return [float(x) * (1000.0 if unit == "sec" else 1.0 if unit == "msec" else 0.001)
            for x, unit in re.findall(r"time=([\d.]+) (sec|msec|usec)", out)]


def announcer() -> str:
    return netemu("get", "svc", "web-lb", "-o", "wide").splitlines()[1].split()[-1]


def http_ok(timeout: float) -> bool:
    return sh("ip", "netns", "exec", CLIENT, "curl", "-s", "-m", str(timeout), f"http://{LB_IP}/",
              check=False).returncode == 0


def pct(v: list[float], p: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(MANIFEST)
    try:
        netemu("up", "-q", f.name)
        client_up()
        speaker, kernel, failovers = [], [], []
        for _ in range(args.rounds):
            node = announcer()
            node_ip = {"w1-k8s": f"{NET}.101", "w2-k8s": f"{NET}.102", "w3-k8s": f"{NET}.103"}[node]
            speaker += arping(LB_IP, args.count)
            kernel += arping(node_ip, args.count)
            assert http_ok(2), "the LB IP does not answer"
            t0 = time.perf_counter()
            subprocess.run(NETEMU + ["node", "down", node, "--lab", LAB], capture_output=True, check=True)
            while not http_ok(0.2):
                if time.perf_counter() - t0 > 30:
                    raise SystemExit("no failover within 30 s")
            failovers.append(time.perf_counter() - t0)
            netemu("node", "up", node)
            time.sleep(1.5)
        print()
        print(f"{'ARP reply (ms)':<28}{'p50':>8}{'p99':>8}{'n':>7}")
        print(f"{'speaker (LB IP)':<28}{pct(speaker, 50):>8.3f}{pct(speaker, 99):>8.3f}{len(speaker):>7}")
        print(f"{'kernel (node IP)':<28}{pct(kernel, 50):>8.3f}{pct(kernel, 99):>8.3f}{len(kernel):>7}")
        print(f"ratio speaker/kernel: p50 {pct(speaker, 50) / pct(kernel, 50):.1f}x, "
              f"p99 {pct(speaker, 99) / pct(kernel, 99):.1f}x")
        print(f"\nfailover, `node down` to the first answered request: "
              f"{', '.join(f'{x:.3f}s' for x in failovers)} (median {statistics.median(failovers):.3f}s)")
        print("targets: ARP within 2x of the kernel's reply; failover under 1 s")
    finally:
        subprocess.run(NETEMU + ["down", LAB], capture_output=True)
        os.unlink(f.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
