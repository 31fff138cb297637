#!/usr/bin/env python3
"""API benchmark (issue 12): the lab's Kubernetes API against Kubernetes' own scalability SLOs.

Anchors (Kubernetes SIG Scalability SLOs): API call latency p99 <= 1 s for single objects, pod startup
p99 <= 5 s. netemu's targets: single-object p99 < 10 ms, LIST 1,000 pods < 100 ms, watch delivery
p99 < 20 ms, pod startup p99 < 1 s, `kubectl get pods` within 50 ms of kubectl's own start-up.

One lab (1,000 pods in namespace `bench`, a few in `default`), measured over HTTPS on 127.0.0.1 with
the lab's admin certificate, a kept-alive connection per client as client-go keeps them. Every
request goes to the API server's loopback address only; nothing is sent to a lab address.

Run as root:  .venv/bin/python scripts/bench_api.py [--pods 1000] [--rounds 200]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
NETEMU = [sys.executable, "-m", "netemu"]
LAB = "benchapi"

LAB_DOC = """\
apiVersion: netemu.dev/v1alpha1
kind: Lab
metadata: {{name: {name}}}
spec:
  network: 192.168.252.0/24
  gateway: 192.168.252.1
  podCIDR: 172.30.0.0/16
  nodePodPrefix: 21
  serviceCIDR: 10.252.0.0/16
  clusterDNS: 10.252.0.10
  nodes:
  - {{name: m-k8s, ip: 192.168.252.10, role: control-plane}}
  - {{name: w1-k8s, ip: 192.168.252.101}}
  - {{name: w2-k8s, ip: 192.168.252.102}}
  - {{name: w3-k8s, ip: 192.168.252.103}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: bench}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: many, namespace: bench}}
spec:
  replicas: {pods}
  selector: {{matchLabels: {{app: many}}}}
  template:
    metadata: {{labels: {{app: many}}}}
    spec:
      containers:
      - {{name: c, image: sysnet4admin/echo-hname}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: startup}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: startup}}}}
  template:
    metadata: {{labels: {{app: startup}}}}
    spec:
      containers:
      - {{name: c, image: sysnet4admin/echo-hname}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: probe}}
data: {{n: "0"}}
"""

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


class Api:
    """HTTPS to the lab's API server with its admin certificate, one kept-alive connection."""

    def __init__(self, lab: str):
        from netemu.api import pki

        d = f"/run/netemu/{lab}"
        info = json.load(open(f"{d}/apiserver.json"))
        assert info["server"].startswith("https://127.0.0.1:"), info  # loopback only
        self.port = info["port"]
        p = pki.load(f"{d}/pki")
        self.tmp = tempfile.mkdtemp(prefix="bench-api-")
        for name, data in (("crt", p.client_cert_pem), ("key", p.client_key_pem)):
            with open(os.path.join(self.tmp, name), "wb") as f:
                f.write(data)
        self.ctx = ssl.create_default_context(cadata=p.ca_cert_pem.decode())
        self.ctx.load_cert_chain(os.path.join(self.tmp, "crt"), os.path.join(self.tmp, "key"))
        self.conn = self.connect()

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=60)

    def request(self, method: str, path: str, body=None, accept="application/json",
                ctype="application/json") -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        self.conn.request(method, path, body=data, headers={"Accept": accept, "Content-Type": ctype})
        r = self.conn.getresponse()
        return r.status, r.read()

    def close(self) -> None:
        self.conn.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def watch_delivery(api: Api, rounds: int) -> list[float]:
    """Time from sending a change (PATCH of a ConfigMap) to its event reaching a watching client."""
    st, body = api.request("GET", "/api/v1/namespaces/default/configmaps/probe")
    rv = json.loads(body)["metadata"]["resourceVersion"]
    w = api.connect()
    w.request("GET", f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
                     "&fieldSelector=metadata.name%3Dprobe")
    resp = w.getresponse()
    seen: dict[str, float] = {}
    cond = threading.Condition()

    def reader():
        while True:
            line = resp.readline()
            if not line:
                return
            ev = json.loads(line)
            n = (ev["object"].get("data") or {}).get("n")
            with cond:
                seen[n] = time.perf_counter()
                cond.notify_all()

    threading.Thread(target=reader, daemon=True).start()
    lat = []
    for i in range(1, rounds + 1):
        t0 = time.perf_counter()
        api.request("PATCH", "/api/v1/namespaces/default/configmaps/probe", {"data": {"n": str(i)}},
                    ctype="application/merge-patch+json")
        with cond:
            cond.wait_for(lambda: str(i) in seen, timeout=5)
        if str(i) in seen:
            lat.append((seen[str(i)] - t0) * 1000)
    w.close()
    return lat


def pod_startup(api: Api, n: int) -> list[float]:
    """Scale `startup` 0 -> n; per pod, first seen by a watch (created) -> seen Ready."""
    st, body = api.request("GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dstartup")
    rv = json.loads(body)["metadata"]["resourceVersion"]
    w = api.connect()
    w.request("GET", f"/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"
                     "&labelSelector=app%3Dstartup")
    resp = w.getresponse()
    created: dict[str, float] = {}
    ready: dict[str, float] = {}
    done = threading.Event()

    def reader():
        while not done.is_set():
            line = resp.readline()
            if not line:
                return
            ev = json.loads(line)
            now = time.perf_counter()
            name = ev["object"]["metadata"]["name"]
            created.setdefault(name, now)
            conds = (ev["object"].get("status") or {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                ready.setdefault(name, now)
                if len(ready) >= n:
                    done.set()

    threading.Thread(target=reader, daemon=True).start()
    api.request("PATCH", "/apis/apps/v1/namespaces/default/deployments/startup/scale", {"spec": {"replicas": n}},
                ctype="application/merge-patch+json")
    done.wait(120)
    w.close()
    return [(ready[k] - created[k]) * 1000 for k in ready]


def kubectl_times(kubeconfig: str, rounds: int) -> tuple[list[float], list[float]]:
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    kubectl = shutil.which("kubectl")
    subprocess.run([kubectl, "get", "pods"], env=env, capture_output=True)  # fills kubectl's discovery cache
    get, floor = [], []
    for _ in range(rounds):  # interleaved, so that load affects both alike
        t0 = time.perf_counter()
        subprocess.run([kubectl, "version", "--client"], env=env, capture_output=True, check=True)
        floor.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        subprocess.run([kubectl, "get", "pods"], env=env, capture_output=True, check=True)
        get.append((time.perf_counter() - t0) * 1000)
    return get, floor


def row(name: str, xs: list[float], target: str = "") -> None:
    print(f"| {name} | {len(xs)} | {pct(xs, 50):.2f} ms | {pct(xs, 99):.2f} ms | {max(xs):.2f} ms | {target} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--startup", type=int, default=100)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (it builds a lab)")
    tmp = tempfile.mkdtemp(prefix="bench-api-")
    path = os.path.join(tmp, "lab.yaml")
    with open(path, "w") as f:
        f.write(LAB_DOC.format(name=LAB, pods=args.pods))
    env = dict(os.environ, KUBECONFIG=os.path.join(tmp, "merged"))  # never the user's kubeconfig
    print(f"bringing up {args.pods} pods ...", flush=True)
    t0 = time.perf_counter()
    res = subprocess.run(NETEMU + ["up", "-q", path, "--timeout", "900"], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"netemu up failed:\n{res.stderr}")
    print(f"lab up in {time.perf_counter() - t0:.1f} s\n")
    api = Api(LAB)
    try:
        pod = json.loads(api.request("GET", "/api/v1/namespaces/bench/pods?limit=1")[1])["items"][0]["metadata"]["name"]
        get_one = timed(lambda: api.request("GET", f"/api/v1/namespaces/bench/pods/{pod}"), args.rounds)
        n = len(json.loads(api.request("GET", "/api/v1/namespaces/bench/pods")[1])["items"])
        list_json = timed(lambda: api.request("GET", "/api/v1/namespaces/bench/pods"), max(20, args.rounds // 5))
        list_table = timed(lambda: api.request("GET", "/api/v1/namespaces/bench/pods", accept=TABLE),
                           max(20, args.rounds // 5))
        watch = watch_delivery(api, args.rounds)
        startup = pod_startup(api, args.startup)
        kc = os.path.join(tmp, "kubeconfig")
        with open(kc, "w") as f:
            f.write(subprocess.run(NETEMU + ["kubeconfig", "--lab", LAB], capture_output=True, text=True,
                                   check=True).stdout)
        kget, kfloor = kubectl_times(kc, 20) if shutil.which("kubectl") else ([], [])
    finally:
        api.close()
        subprocess.run(NETEMU + ["down", LAB], capture_output=True, env=env)
        shutil.rmtree(tmp, ignore_errors=True)
    print("| measurement | n | p50 | p99 | max | target |")
    print("|---|---:|---:|---:|---:|---|")
    row("GET one pod", get_one, "p99 < 10 ms (SLO 1 s)")
    row(f"LIST {n} pods, JSON", list_json, "< 100 ms")
    row(f"LIST {n} pods, Table", list_table, "< 100 ms")
    row("watch delivery (PATCH -> event)", watch, "p99 < 20 ms")
    row(f"pod startup, 0 -> {args.startup} (watch: created -> Ready)", startup, "p99 < 1 s (SLO 5 s)")
    if kget:
        row("`kubectl get pods` (default ns)", kget, "")
        row("`kubectl version --client` (floor)", kfloor, "")
        print(f"\nkubectl get pods - floor: p50 {pct(kget, 50) - pct(kfloor, 50):+.1f} ms "
              f"(target: within 50 ms); ratio {pct(kget, 50) / pct(kfloor, 50):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
