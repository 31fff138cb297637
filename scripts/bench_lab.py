#!/usr/bin/env python3
"""Lab benchmark (issue 2): wall time to all-Ready and memory per pod, side by side with the floor.

For the default lab (topologies/lab.yaml), and labs of 100 and 1,000 pods, this runs
`netemu up` until every pod is Ready, measures memory, brings the lab down, and runs the bare
`ip -batch` script that makes the same namespaces and veth pairs (scripts/floor_ipbatch.sh).

memory per pod: PSS of every process the lab started (sandboxes, containers, the control
process and the launcher), read from the lab's cgroups, divided by the pods; and the drop of the
kernel's MemAvailable (namespaces, veths, page tables...) per pod, for both netemu and the floor.

Run as root:  .venv/bin/python scripts/bench_lab.py [--sizes 100,1000]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETEMU = [sys.executable, "-m", "netemu"]
LAB = "benchlab"

BIG_LAB = """\
apiVersion: netemu.dev/v1alpha1
kind: Lab
metadata: {{name: {name}}}
spec:
  network: 192.168.251.0/24
  gateway: 192.168.251.1
  podCIDR: 172.31.0.0/16
  nodePodPrefix: 21
  serviceCIDR: 10.251.0.0/16
  clusterDNS: 10.251.0.10
  nodes:
  - {{name: m-k8s, ip: 192.168.251.10, role: control-plane}}
  - {{name: w1-k8s, ip: 192.168.251.101}}
  - {{name: w2-k8s, ip: 192.168.251.102}}
  - {{name: w3-k8s, ip: 192.168.251.103}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: bench}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: bench}}}}
  template:
    metadata: {{labels: {{app: bench}}}}
    spec:
      containers:
      - name: echo-hname
        image: sysnet4admin/echo-hname
"""


def mem_available_kb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def _cpu_idle_fraction(seconds: float = 0.5) -> float:
    def snap():
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
        return vals[3] + vals[4], sum(vals)
    i0, t0 = snap()
    time.sleep(seconds)
    i1, t1 = snap()
    return (i1 - i0) / max(1, t1 - t0)


def settle(limit: float = 120.0) -> int:
    """MemAvailable once the machine is quiet again. Deleted namespaces are freed later by a
    kernel worker (cleanup_net), which would otherwise slow the next run down. Caches are not
    dropped: that would time cold Python imports, not the lab."""
    deadline = time.time() + limit
    while time.time() < deadline and _cpu_idle_fraction() < 0.9:
        pass
    return mem_available_kb()


def lab_pids(lab: str) -> list[int]:
    pids = []
    for base in ("/sys/fs/cgroup/pids/netemu", "/sys/fs/cgroup/netemu"):
        root = os.path.join(base, lab)
        for dirpath, _, files in os.walk(root):
            if "cgroup.procs" in files:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    pids += [int(x) for x in f.read().split()]
    return pids


def lab_pids_in(lab: str, sub: str) -> list[int]:
    for base in ("/sys/fs/cgroup/pids/netemu", "/sys/fs/cgroup/netemu"):
        try:
            with open(os.path.join(base, lab, sub, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            pass
    return []


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_netemu(path: str, name: str, pods: int) -> dict:
    before = settle()
    t0 = time.perf_counter()
    res = subprocess.run(NETEMU + ["up", "-q", path, "--name", name, "--timeout", "600"], capture_output=True,
                         text=True)
    ready = time.perf_counter() - t0  # wall time of the whole command, interpreter start included
    if res.returncode != 0:
        raise SystemExit(f"netemu up failed:\n{res.stderr}")
    pids = lab_pids(name)
    pss = sum(pss_kb(p) for p in pids)
    system = set(lab_pids_in(name, "system"))
    pod_pss = sum(pss_kb(p) for p in pids if p not in system)
    after = settle()
    t1 = time.perf_counter()
    subprocess.run(NETEMU + ["down", name], capture_output=True, check=True)
    down = time.perf_counter() - t1
    return {"ready_s": ready, "down_s": down, "pss_kb_per_pod": pss / max(pods, 1),
            "pod_pss_kb_per_pod": pod_pss / max(pods, 1),
            "kernel_kb_per_pod": (before - after) / max(pods, 1), "processes": len(pids)}


def run_floor(pods: int) -> dict:
    script = os.path.join(REPO, "scripts", "floor_ipbatch.sh")
    subprocess.run([script, "down", str(pods)], capture_output=True)
    before = settle()
    t0 = time.perf_counter()
    subprocess.run([script, "up", str(pods)], check=True)
    up = time.perf_counter() - t0
    after = settle()
    subprocess.run([script, "down", str(pods)], check=True)
    return {"ready_s": up, "kernel_kb_per_pod": (before - after) / max(pods, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000", help="pod counts of the big labs (default 100,1000)")
    ap.add_argument("--skip-default", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_default:
            default = os.path.join(REPO, "topologies", "lab.yaml")
            n = run_netemu(default, LAB, 3)
            f = run_floor(3)
            rows.append(("default lab (4 nodes, 3 pods)", 3, n, f))
        for size in [int(x) for x in args.sizes.split(",") if x]:
            path = os.path.join(tmp, f"lab{size}.yaml")
            with open(path, "w") as fh:
                fh.write(BIG_LAB.format(name=LAB, replicas=size))
            n = run_netemu(path, LAB, size)
            f = run_floor(size)
            rows.append((f"{size} pods", size, n, f))
    print()
    hdr = f"{'lab':<30} {'netemu Ready':>13} {'floor':>8} {'ratio':>6} {'PSS/pod':>9} {'pods only':>10} " \
          f"{'kernel/pod':>11} {'floor kernel/pod':>17} {'down':>7}"
    print(hdr)
    print("-" * len(hdr))
    for label, pods, n, f in rows:
        print(f"{label:<30} {n['ready_s']:>12.2f}s {f['ready_s']:>7.2f}s {n['ready_s'] / f['ready_s']:>5.1f}x "
              f"{n['pss_kb_per_pod'] / 1024:>7.2f}MB {n['pod_pss_kb_per_pod'] / 1024:>8.2f}MB "
              f"{n['kernel_kb_per_pod'] / 1024:>9.2f}MB "
              f"{f['kernel_kb_per_pod'] / 1024:>15.2f}MB {n['down_s']:>6.2f}s")
    print("\nnetemu Ready: wall time of `netemu up` until every pod is Ready, interpreter start included."
          "\nPSS/pod: all the lab's processes (control process and launcher too) / pods; pods only: sandboxes"
          " and containers. kernel/pod: drop of MemAvailable / pods.")
    print("targets: default lab Ready < 1 s; 1,000 pods within 2x the floor; < 5 MB per pod")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
