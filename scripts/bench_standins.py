#!/usr/bin/env python3
"""Stand-in benchmark (issue 15): requests per second and latency of the echo-hname stand-in next
to real nginx in a pod answering the same way, by pod IP and through a ClusterIP, in one run.

Brings up a lab of its own (name `standin-bench`, 192.168.236.0/24, pods 10.236.0.0/16, services
10.237.0.0/16) with one worker: an echo-hname pod (the stand-in) and a pod running the host's nginx
(`worker_processes 1`, `return 200 "$hostname\\n"` as text/html, an access log line per request
to stdout, as the image's nginx does), each behind a ClusterIP Service. wrk runs in the worker
node's network namespace (ClusterIPs are not reachable from the host), in alternating rounds:

  standin-pod   http://<echo-hname pod IP>/      standin-svc   http://<its ClusterIP>/
  nginx-pod     http://<nginx pod IP>/           nginx-svc     http://<its ClusterIP>/

Each round: wrk -t THREADS -c CONNECTIONS -d DURATION --latency, on kept-alive connections and
again with a new connection for each request (`Connection: close`, as bench_modes measures); the
figures are medians over rounds, and the stand-in's req/s as a ratio of nginx's on the same path.
The lab is torn down at the end (also on failure or Ctrl-C).

Run as root, one benchmark at a time on a shared machine:
  flock /tmp/netemu-bench.lock .venv/bin/python scripts/bench_standins.py [--duration 5] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_ingress import ensure_wrk, run, wrk  # noqa: E402

LAB = "standin-bench"
NET = "192.168.236"
NODE_NS = f"ne-{LAB}_w1-k8s"
NETEMU = [sys.executable, "-m", "netemu"]
NGINX_CONF = """\
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr;
events { worker_connections 1024; }
http {
  access_log /dev/stdout;
  client_body_temp_path /tmp/body; proxy_temp_path /tmp/proxy; fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi; scgi_temp_path /tmp/scgi;
  server { listen 80; location / { default_type text/html; return 200 "$hostname\\n"; } }
}
"""
MANIFEST = f"""\
apiVersion: netemu.dev/v1alpha1
kind: Lab
metadata: {{name: {LAB}}}
spec:
  network: {NET}.0/24
  gateway: {NET}.1
  podCIDR: 10.236.0.0/16
  serviceCIDR: 10.237.0.0/16
  clusterDNS: 10.237.0.10
  nodes:
  - {{name: m-k8s, ip: {NET}.10, role: control-plane}}
  - {{name: w1-k8s, ip: {NET}.101}}
---
apiVersion: v1
kind: Pod
metadata: {{name: standin, labels: {{app: standin}}}}
spec:
  containers: [{{name: c, image: sysnet4admin/echo-hname, ports: [{{containerPort: 80}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: nginx, labels: {{app: nginx}}}}
spec:
  containers:
  - name: c
    image: sysnet4admin/echo-hname
    command: [sh, -c, "printenv NGINX_CONF > /tmp/nginx.conf && exec nginx -c /tmp/nginx.conf -g 'daemon off;'"]
    env: [{{name: NGINX_CONF, value: {json.dumps(NGINX_CONF)}}}]
    ports: [{{containerPort: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: standin}}
spec: {{selector: {{app: standin}}, ports: [{{port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: nginx}}
spec: {{selector: {{app: nginx}}, ports: [{{port: 80}}]}}
"""


def netemu(*args: str) -> str:
    return run(NETEMU + list(args) + ["--lab", LAB]).stdout


def in_node(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run in the worker node's network namespace: the lab's own addresses only."""
    return run(["ip", "netns", "exec", NODE_NS, *argv], check=check, timeout=timeout)


def targets() -> dict[str, str]:
    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in json.loads(netemu("get", "pods", "-o", "json"))["items"]}
    svcs = {s["metadata"]["name"]: s["spec"]["clusterIP"] for s in json.loads(netemu("get", "svc", "-o", "json"))["items"]}
    return {"standin-pod": f"http://{pods['standin']}/", "nginx-pod": f"http://{pods['nginx']}/",
            "standin-svc": f"http://{svcs['standin']}/", "nginx-svc": f"http://{svcs['nginx']}/"}


def wait_answers(url: str, expected: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if in_node("curl", "-s", "-m", "2", url, check=False).stdout == expected + "\n":
            return
        time.sleep(0.2)
    raise SystemExit(f"{url} does not answer {expected!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per target (default 3)")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", default="keep-alive,close", help="keep-alive, close or both (default)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    binary = ensure_wrk()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(MANIFEST)
    results: dict[str, list[dict]] = {}
    try:
        t0 = time.perf_counter()
        run(NETEMU + ["up", "-q", f.name])
        print(f"lab {LAB} up in {time.perf_counter() - t0:.1f}s")
        urls = targets()
        # a new connection per request runs the node out of ports within seconds (TIME_WAIT) unless
        # it may reuse them, as load generators are set up to
        in_node("sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65535")
        for name, url in urls.items():
            wait_answers(url, name.split("-")[0])
            in_node(binary, "-t", "1", "-c", "4", "-d", "1s", url)  # warm-up
        modes = args.modes.split(",")
        results = {(mode, k): [] for mode in modes for k in urls}
        for r in range(args.rounds):
            for (mode, name), url in ((key, urls[key[1]]) for key in results):
                res = wrk(binary, url, args.threads, args.connections, args.duration,
                          prefix=("ip", "netns", "exec", NODE_NS),
                          headers=("Connection: close",) if mode == "close" else ())
                results[mode, name].append(res)
                print(f"round {r + 1} {mode:<10} {name:<12} {res['rps']:>9.0f} req/s  p50 {res['p50']:.2f} ms  "
                      f"p99 {res['p99']:.2f} ms" + (f"  socket errors: {res['errors']}" if res["errors"] else "")
                      + (f"  non-2xx: {res['non2xx']}" if res["non2xx"] else ""), flush=True)
    finally:
        run(NETEMU + ["down", LAB], check=False)
        os.unlink(f.name)
    report(results, args)
    return 0


def report(results: dict[tuple[str, str], list[dict]], args) -> None:
    print()
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s from node w1-k8s, median of "
          f"{args.rounds} rounds; host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99")}
           for name, rs in results.items() if rs}
    print(f"{'connections':<13}{'path':<10}{'stand-in req/s':>16}{'nginx req/s':>13}{'ratio':>8}"
          f"{'p50 ms (s / n)':>18}{'p99 ms (s / n)':>18}")
    for mode in dict.fromkeys(m for m, _ in med):
        for path in ("pod", "svc"):
            s, n = med.get((mode, f"standin-{path}")), med.get((mode, f"nginx-{path}"))
            if not (s and n):
                continue
            label = "pod IP" if path == "pod" else "ClusterIP"
            print(f"{mode:<13}{label:<10}{s['rps']:>16.0f}{n['rps']:>13.0f}{s['rps'] / n['rps']:>7.2f}x"
                  f"{s['p50']:>9.2f} / {n['p50']:<6.2f}{s['p99']:>9.2f} / {n['p99']:<6.2f}")


if __name__ == "__main__":
    sys.exit(main())
