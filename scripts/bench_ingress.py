#!/usr/bin/env python3
"""Ingress benchmark (issue 7): requests per second and latency through the NGINX Ingress controller
against the same pods reached directly through a NodePort, in one run.

Brings up a lab of its own (name `benching`, 192.168.240.0/24, pods 10.241.0.0/16, services
10.242.0.0/16): a deployment of echo-hname pods behind a ClusterIP Service, a NodePort Service on the
same pods (30090), an Ingress to the ClusterIP Service, and the seed's NodePort Service in front of the
controller (30100 HTTP, 30101 HTTPS). From the host, after `netemu check-route` says the node's address
goes into the lab, wrk (Debian package wrk, installed if missing) measures, in alternating rounds:

  direct    http://<node>:30090/    kube-proxy NodePort -> a pod
  ingress   http://<node>:30100/    kube-proxy NodePort -> controller pod (nginx) -> a pod
  ingress-tls https://<node>:30101/ the same with TLS ended by nginx (the controller's certificate)

Each round: wrk -t THREADS -c CONNECTIONS -d DURATION --latency (kept-alive connections), and the
figures are the median over rounds of requests/s and of the p50/p99 latency wrk reports. The lab is
torn down at the end (also on failure or Ctrl-C).

Run as root: .venv/bin/python scripts/bench_ingress.py [--duration 10] [--rounds 3] [--connections 32]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

LAB = "benching"
NET = "192.168.240"
NODE = f"{NET}.101"
NETEMU = [sys.executable, "-m", "netemu"]
TARGETS = {
    "direct": f"http://{NODE}:30090/",
    "ingress": f"http://{NODE}:30100/",
    "ingress-tls": f"https://{NODE}:30101/",
}
MANIFEST = f"""\
apiVersion: netemu.dev/v1alpha1
kind: Lab
metadata: {{name: {LAB}}}
spec:
  network: {NET}.0/24
  gateway: {NET}.1
  podCIDR: 10.241.0.0/16
  serviceCIDR: 10.242.0.0/16
  clusterDNS: 10.242.0.10
  nodes:
  - {{name: m-k8s, ip: {NET}.10, role: control-plane}}
  - {{name: w1-k8s, ip: {NET}.101}}
  - {{name: w2-k8s, ip: {NET}.102}}
  - {{name: w3-k8s, ip: {NET}.103}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {{replicas}}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: c, image: sysnet4admin/echo-hname, ports: [{{containerPort: 80}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-np}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{name: http, port: 80, nodePort: 30090}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web}}
spec:
  ingressClassName: nginx
  rules:
  - http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: nginx-ingress-controller, namespace: ingress-nginx}}
spec:
  type: NodePort
  selector: {{app.kubernetes.io/name: ingress-nginx}}
  ports:
  - {{name: http, port: 80, targetPort: 80, nodePort: 30100}}
  - {{name: https, port: 443, targetPort: 443, nodePort: 30101}}
"""


def run(argv: list[str], check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def ensure_wrk() -> str:
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("wrk")


def check_route(address: str) -> None:
    """Nothing goes out unless the host routes the address into this lab."""
    res = run(NETEMU + ["check-route", address, "--lab", LAB], check=False)
    if res.returncode != 0:
        raise SystemExit(f"refusing to send traffic: {res.stderr.strip() or res.stdout.strip()}")


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if run(["curl", "-sk", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}", url], check=False).stdout == "200":
            return
        time.sleep(0.2)
    raise SystemExit(f"{url} does not answer 200")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(binary: str, url: str, threads: int, connections: int, duration: int, prefix: tuple = (),
        headers: tuple = ()) -> dict:
    """`prefix` runs wrk through another command (`ip netns exec <ns>`); `headers` go with each request."""
    out = run([*prefix, binary, *(a for h in headers for a in ("-H", h)), "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency", url],
              timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M)}
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": lat.get("50"), "p99": lat.get("99"), "errors": errors.group(1) if errors else "",
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per target (default 3)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--replicas", type=int, default=3, help="echo-hname pods (default 3)")
    ap.add_argument("--no-tls", action="store_true", help="skip the HTTPS target")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    binary = ensure_wrk()
    targets = {k: v for k, v in TARGETS.items() if not (args.no_tls and k == "ingress-tls")}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(MANIFEST.replace("{replicas}", str(args.replicas)))
    results: dict[str, list[dict]] = {k: [] for k in targets}
    try:
        t0 = time.perf_counter()
        run(NETEMU + ["up", "-q", f.name])
        print(f"lab {LAB} up in {time.perf_counter() - t0:.1f}s; {args.replicas} echo-hname pods, "
              f"ingress-nginx controller (real nginx {_nginx_version()})")
        check_route(NODE)
        for url in targets.values():
            wait_http(url)
            run([binary, "-t", "1", "-c", "4", "-d", "2s", url])  # warm-up: keep-alive pools, TLS sessions
        for r in range(args.rounds):
            for name, url in targets.items():
                res = wrk(binary, url, args.threads, args.connections, args.duration)
                results[name].append(res)
                print(f"round {r + 1} {name:<12} {res['rps']:>9.0f} req/s  p50 {res['p50']:.2f} ms  "
                      f"p99 {res['p99']:.2f} ms" + (f"  socket errors: {res['errors']}" if res["errors"] else "")
                      + (f"  non-2xx: {res['non2xx']}" if res["non2xx"] else ""), flush=True)
    finally:
        run(NETEMU + ["down", LAB], check=False)
        os.unlink(f.name)
    print()
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, median of {args.rounds} rounds; "
          f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'target':<14}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}  path")
    paths = {"direct": "NodePort 30090 -> pod", "ingress": "NodePort 30100 -> nginx -> pod",
             "ingress-tls": "NodePort 30101 (TLS) -> nginx -> pod"}
    med = {}
    for name, rs in results.items():
        med[name] = {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99")}
        m = med[name]
        print(f"{name:<14}{m['rps']:>10.0f}{m['p50']:>10.2f}{m['p99']:>10.2f}  {paths[name]}")
    if "direct" in med and "ingress" in med:
        print(f"ingress / direct: {med['ingress']['rps'] / med['direct']['rps']:.2f}x requests/s, "
              f"p99 {med['ingress']['p99'] - med['direct']['p99']:+.2f} ms")
    return 0


def _nginx_version() -> str:
    res = run(["nginx", "-v"], check=False)
    m = re.search(r"nginx/(\S+)", res.stderr + res.stdout)
    return m.group(1) if m else "?"


if __name__ == "__main__":
    sys.exit(main())
