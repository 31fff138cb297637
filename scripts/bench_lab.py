#!/usr/bin/env python3
"""Lab benchmark (issues 2, 15): wall time to all-Ready and memory per pod, side by side with
Mininet and the floor.

For the default lab (topologies/lab.yaml), and labs of 10, 100 and 1,000 pods, this runs
`netemu up` until every pod is Ready, measures memory, brings the lab down; runs Mininet 2.3 with
as many hosts in the same shape (scripts/mininet_anchor.py: LinuxBridge, no controller; the apt
package is installed when missing); and runs the bare `ip -batch` script that makes the same
namespaces and veth pairs (scripts/floor_ipbatch.sh).

memory per pod: PSS of every process the lab started (sandboxes, containers, the control
process and the launcher), read from the lab's cgroups, divided by the pods; and the drop of the
kernel's MemAvailable (namespaces, veths, page tables...) per pod, for both netemu and the floor.

Run as root:  .venv/bin/python scripts/bench_lab.py [--sizes 10,100,1000] [--repeat 3]
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
  nodes:  # 1,000 pods on three workers: past kubelet's default maxPods (110)
  - {{name: m-k8s, ip: 192.168.251.10, role: control-plane}}
  - {{name: w1-k8s, ip: 192.168.251.101, capacity: {{pods: "400"}}}}
  - {{name: w2-k8s, ip: 192.168.251.102, capacity: {{pods: "400"}}}}
  - {{name: w3-k8s, ip: 192.168.251.103, capacity: {{pods: "400"}}}}
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


MININET_PACKAGES = ["mininet", "bridge-utils", "iputils-ping"]  # LinuxBridge needs brctl; the check, ping
MININET_LINK = re.compile(r"^(mnb\d+|h\d+-eth\d+)(@|$)")  # the anchor's names in the root namespace


def ensure_mininet() -> None:
    """Mininet 2.3 from Debian (the lab does not need it, so setup.sh does not install it)."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import mininet.net"], capture_output=True)
    if probe.returncode == 0 and shutil.which("brctl") and shutil.which("ping"):
        return
    print("installing Mininet (apt-get install mininet)...", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *MININET_PACKAGES], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def mininet_leftovers() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = [line.split(": ")[1] for line in out.splitlines() if ": " in line]
    return [n for n in names if MININET_LINK.match(n)]


def run_mininet(hosts: int) -> dict:
    """Mininet's whole script as its own process (interpreter start and imports included): `up_s` when
    it says its hosts are up, `total_s` once it has stopped the net and exited."""
    settle()
    script = os.path.join(REPO, "scripts", "mininet_anchor.py")
    t0 = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/python3", script, str(hosts)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    up = None
    for line in proc.stdout:
        if line.strip() == "up":
            up = time.perf_counter() - t0
    err = proc.stderr.read()
    proc.wait()
    total = time.perf_counter() - t0
    left = mininet_leftovers()
    if left:  # a run that died half-way: Mininet's own cleanup
        print(f"Mininet left {len(left)} interfaces behind ({', '.join(left[:3])}...): mn -c", file=sys.stderr)
        subprocess.run(["mn", "-c"], capture_output=True)
    if proc.returncode != 0 or up is None:
        raise SystemExit(f"Mininet with {hosts} hosts failed:\n{err}")
    return {"up_s": up, "total_s": total}


def compile_netemu() -> None:
    """netemu's bytecode, as an installed netemu has it after its first run (and Mininet's Debian package
    ships it): otherwise every process of the lab compiles its modules from source at each start (with
    PYTHONDONTWRITEBYTECODE set, as in CI shells, nothing is ever cached)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(REPO, "netemu")], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100,1000", help="pod counts of the big labs (default 10,100,1000)")
    ap.add_argument("--skip-default", action="store_true")
    ap.add_argument("--no-mininet", action="store_true", help="leave the Mininet anchor out")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each (netemu, Mininet, floor in turn); "
                    "the medians are printed")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    if not args.no_mininet:
        ensure_mininet()
    compile_netemu()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        labs = [] if args.skip_default else [("default lab (4 nodes, 3 pods)", 3,
                                              os.path.join(REPO, "topologies", "lab.yaml"))]
        for size in [int(x) for x in args.sizes.split(",") if x]:
            path = os.path.join(tmp, f"lab{size}.yaml")
            with open(path, "w") as fh:
                fh.write(BIG_LAB.format(name=LAB, replicas=size))
            labs.append((f"{size} pods", size, path))
        for label, pods, path in labs:
            runs: dict[str, list[dict]] = {"netemu": [], "mininet": [], "floor": []}
            for _ in range(args.repeat):  # alternating, so that a slow spell of the box hits all three
                runs["netemu"].append(run_netemu(path, LAB, pods))
                if not args.no_mininet:
                    runs["mininet"].append(run_mininet(pods))
                runs["floor"].append(run_floor(pods))
            n, m, f = ({k: statistics.median(r[k] for r in rs) for k in rs[0]} if rs else None
                       for rs in runs.values())
            rows.append((label, pods, n, m, f))
    print()
    hdr = f"{'lab':<30} {'netemu Ready':>13} {'Mininet up':>11} {'Mininet all':>12} {'floor':>8} " \
          f"{'vs Mininet all':>15} {'vs floor':>9}"
    print(hdr)
    print("-" * len(hdr))
    for label, pods, n, m, f in rows:
        mn = (f"{m['up_s']:>10.2f}s {m['total_s']:>11.2f}s" if m else f"{'-':>11} {'-':>12}")
        vs = f"{n['ready_s'] / m['total_s']:>14.2f}x" if m else f"{'-':>15}"
        print(f"{label:<30} {n['ready_s']:>12.2f}s {mn} {f['ready_s']:>7.2f}s {vs} {n['ready_s'] / f['ready_s']:>8.1f}x")
    print()
    hdr = f"{'lab':<30} {'PSS/pod':>9} {'pods only':>10} {'kernel/pod':>11} {'floor kernel/pod':>17} {'down':>7}"
    print(hdr)
    print("-" * len(hdr))
    for label, pods, n, m, f in rows:
        print(f"{label:<30} {n['pss_kb_per_pod'] / 1024:>7.2f}MB {n['pod_pss_kb_per_pod'] / 1024:>8.2f}MB "
              f"{n['kernel_kb_per_pod'] / 1024:>9.2f}MB {f['kernel_kb_per_pod'] / 1024:>15.2f}MB {n['down_s']:>6.2f}s")
    print("\nnetemu Ready: wall time of `netemu up` until every pod is Ready, interpreter start included."
          "\nMininet up: its script (python3 started, Mininet imported) until N hosts on LinuxBridges are up and"
          " h1 pings hN; all: until the net is stopped and the process has exited."
          "\nPSS/pod: all the lab's processes (control process and launcher too) / pods; pods only: sandboxes"
          " and containers. kernel/pod: drop of MemAvailable / pods.")
    print("targets: default lab Ready < 1 s; 10 pods Ready faster than Mininet's whole script for 10 hosts; "
          "1,000 pods within 2x the floor; < 5 MB per pod")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
