#!/usr/bin/env python3
"""Soak benchmark (issue 13): churn a lab for a while under a bounded curl loop through a NodePort.

The churn, one action every --interval seconds, through netemu's verbs (the lab's API): scale 3 -> 8
and back, delete a pod, take a node down and bring it back, add a Service and remove it. Meanwhile
one curl at a time (each with a 2 s limit, a short pause between) asks the NodePort of the lab's own
node addresses, only nodes that are up, and only after checking that the route goes into the lab
(`netemu check-route` and `ip route get` through the lab's host link; the run stops if that guard
cannot be loaded or fails). Each request is put down to the action that was last started before it.

Reported: requests and failures per kind of action; the control process's RSS, descriptors and CPU
at the start and the end of the churn (and the launcher's); restarts of the control process; and the
kernel objects, files and processes of the lab left after `down`. Targets: 0 failed on scale-up and
node up, 0 leaks, RSS growth < 10 MB. Scale-down and deletion figures are given without and with a
preStop hook (`--prestop`: `sleep 2` before SIGTERM, so the endpoints go before the process does).

Run as root:  .venv/bin/python scripts/bench_soak.py [--duration 600] [--interval 3] [--prestop] [--json F]
"""
from __future__ import annotations

import argparse
import collections
import ipaddress
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from netemu.procutil import alive  # noqa: E402

NETEMU = [sys.executable, "-m", "netemu"]
NODEPORT = 30080

POD_TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: soak}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: soak}}}}
  template:
    metadata: {{labels: {{app: soak}}}}
    spec:
      containers:
      - name: echo
        image: sysnet4admin/echo-hname
        ports: [{{containerPort: 80}}]
{lifecycle}---
apiVersion: v1
kind: Service
metadata: {{name: soak}}
spec:
  type: NodePort
  selector: {{app: soak}}
  ports: [{{port: 80, targetPort: 80, nodePort: {nodeport}}}]
"""
PRESTOP = "        lifecycle: {preStop: {exec: {command: [sleep, '2']}}}\n"
ACTIONS = ["scale-up", "delete-pod", "service-add", "scale-down", "node-down", "service-remove", "node-up",
           "delete-pod"]


def netemu(*args: str, lab: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    argv = NETEMU + list(args) + (["--lab", lab] if lab else [])
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and res.returncode != 0:
        raise RuntimeError(f"netemu {' '.join(args)}: {res.stderr.strip() or res.stdout.strip()}")
    return res


# ---------------------------------------------------------------------------- the lab
def free_ranges() -> tuple[str, str, str]:
    """A /24, a pod /16 and a service /16 that no lab and no route of this host uses."""
    from netemu import locks, paths

    used = set()
    for name in paths.running_labs():
        spec = (locks.read_claim(name) or {}).get("spec") or {}
        used |= {spec.get("network"), spec.get("podCIDR"), spec.get("serviceCIDR")}
    out = subprocess.run(["ip", "-j", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    used |= {r.get("dst") for r in json.loads(out or "[]")}
    nets = []
    for u in used:
        try:
            n = ipaddress.ip_network(u, strict=False)
            if n.version == 4 and n.prefixlen > 0:
                nets.append(n)
        except (ValueError, TypeError):
            pass
    for i in range(150, 200):
        mine = [ipaddress.ip_network(f"192.168.{i}.0/24"), ipaddress.ip_network(f"172.{i % 16 + 16}.0.0/16"),
                ipaddress.ip_network(f"10.{i}.0.0/16")]
        if not any(m.overlaps(n) for m in mine for n in nets):
            return tuple(str(m) for m in mine)  # type: ignore[return-value]
    raise SystemExit("no free address ranges for the soak lab")


def lab_file(name: str, prestop: bool) -> tuple[str, dict[str, str]]:
    net, pods, svcs = free_ranges()
    n = ipaddress.ip_network(net)
    ips = {"m-k8s": str(n.network_address + 10), "w1-k8s": str(n.network_address + 101),
           "w2-k8s": str(n.network_address + 102), "w3-k8s": str(n.network_address + 103)}
    nodes = "\n".join(f"  - {{name: {k}, ip: {v}{', role: control-plane' if k == 'm-k8s' else ''}}}"
                      for k, v in ips.items())
    s = ipaddress.ip_network(svcs)
    doc = (f"apiVersion: netemu.dev/v1alpha1\nkind: Lab\nmetadata: {{name: {name}}}\nspec:\n"
           f"  network: {net}\n  gateway: {n.network_address + 1}\n  podCIDR: {pods}\n  serviceCIDR: {svcs}\n"
           f"  clusterDNS: {s.network_address + 10}\n  podEvictionTimeoutSeconds: 2\n  restartBackoffSeconds: 1\n"
           f"  nodes:\n{nodes}\n---\n" + POD_TEMPLATE.format(lifecycle=PRESTOP if prestop else "", nodeport=NODEPORT))
    return doc, ips


# ---------------------------------------------------------------------------- the guard
class Guard:
    """Traffic only to the lab's own node addresses, routed into the lab through its host link."""

    def __init__(self, lab: str, ips: dict[str, str]):
        try:
            from netemu.dataplane import names
        except Exception as e:  # noqa: BLE001
            raise SystemExit(f"the route guard cannot be loaded ({e}): not sending anything")
        self.link = names.host_link(lab)
        self.ips = ips
        self.lab = lab

    def check(self, ip: str) -> None:
        if ip not in self.ips.values():
            raise SystemExit(f"refusing to send to {ip}: not one of the lab's node addresses")
        res = subprocess.run(NETEMU + ["check-route", ip], capture_output=True, text=True, cwd=REPO)
        if res.returncode != 0:
            raise SystemExit(f"refusing to send to {ip}: {res.stderr.strip() or res.stdout.strip()}")
        route = json.loads(subprocess.run(["ip", "-j", "route", "get", ip], capture_output=True,
                                          text=True).stdout or "[]")
        if not route or route[0].get("dev") != self.link:
            raise SystemExit(f"refusing to send to {ip}: it would leave through {route}")


# ---------------------------------------------------------------------------- the curl loop
class Traffic(threading.Thread):
    def __init__(self, guard: Guard, nodes: list[str], pause: float):
        super().__init__(daemon=True)
        self.guard = guard
        self.up = {n: True for n in nodes}
        self.pause = pause
        self.results: list[tuple[float, bool, str]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.stopped_by_guard: str | None = None

    def set_node(self, node: str, up: bool) -> None:
        with self.lock:
            self.up[node] = up

    def run(self) -> None:
        checked = 0.0
        i = 0
        while not self.stop.is_set():
            with self.lock:
                nodes = [n for n, up in self.up.items() if up]
            node = nodes[i % len(nodes)]
            i += 1
            ip = self.guard.ips[node]
            if time.monotonic() - checked > 5:  # the guard again every few seconds
                try:
                    for n in nodes:
                        self.guard.check(self.guard.ips[n])
                except SystemExit as e:
                    self.stopped_by_guard = str(e)
                    return
                checked = time.monotonic()
            t = time.time()
            res = subprocess.run(["curl", "-s", "-m", "2", f"http://{ip}:{NODEPORT}/"], capture_output=True, text=True)
            ok = res.returncode == 0 and res.stdout.strip().startswith("soak-")
            self.results.append((t, ok, node if ok else f"{node} rc={res.returncode} {res.stdout.strip()[:40]}"))
            time.sleep(self.pause)


# ---------------------------------------------------------------------------- the control process
def _pid(lab: str, what: str) -> int | None:
    try:
        with open(f"/run/netemu/{lab}/{what}.pid") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def launcher_pid(lab: str, cp: int | None) -> int | None:
    if not cp:
        return None
    try:
        with open(f"/proc/{cp}/task/{cp}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        return None
    for k in kids:
        try:
            with open(f"/proc/{k}/cmdline", "rb") as f:
                if b"netemu.dataplane.launcher" in f.read():
                    return k
        except OSError:
            pass
    return None


def proc_stats(pid: int | None) -> dict:
    if not pid:
        return {}
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / tick
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return {"pid": pid, "rss_mb": round(rss / 1024, 1), "fds": fds, "cpu_s": round(cpu, 2)}
    except (OSError, StopIteration, ValueError, IndexError):
        return {"pid": pid}


def resource_version(lab: str) -> int | None:
    """The store's resourceVersion (how many changes the API's watch window has seen)."""
    out = netemu("get", "pods", "-o", "json", lab=lab, check=False).stdout
    try:
        return int(json.loads(out)["metadata"]["resourceVersion"])
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------- leaks
def leftovers(lab: str, pids: set[int]) -> dict:
    from netemu.dataplane import names

    out: dict = {}
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    out["netns"] = [line.split()[0] for line in ns if line.strip() and names.belongs_to(lab, line.split()[0])]
    try:
        out["etc_netns"] = [n for n in os.listdir("/etc/netns") if names.belongs_to(lab, n)]
    except FileNotFoundError:
        out["etc_netns"] = []
    out["cgroups"] = [d for d in (f"/sys/fs/cgroup/{c}/netemu/{lab}" for c in ("pids", "cpu", "cpuacct", "memory"))
                      if os.path.exists(d)] + ([f"/sys/fs/cgroup/netemu/{lab}"]
                                               if os.path.exists(f"/sys/fs/cgroup/netemu/{lab}") else [])
    out["host_link"] = [names.host_link(lab)] if os.path.exists(f"/sys/class/net/{names.host_link(lab)}") else []
    out["run_dir"] = [f"/run/netemu/{lab}"] if os.path.exists(f"/run/netemu/{lab}") else []
    # processes: any still in one of the lab's cgroups (found by cgroup path, so a pid reused since by
    # another program does not count), and the lab's own (supervisor, control process, launcher)
    mine = f"/netemu/{lab}/"
    procs = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cgroup") as f:
                if mine in f.read() and alive(int(d)):
                    procs.append(int(d))
        except OSError:
            continue
    for p in pids:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read()
        except OSError:
            continue
        if b"netemu" in argv and lab.encode() in argv and alive(p):
            procs.append(p)
    out["processes"] = sorted(set(procs))
    return out


def lab_pids(lab: str) -> set[int]:
    from netemu.dataplane.cgroups import LabCgroups

    try:
        return set(LabCgroups(lab).all_procs())
    except OSError:
        return set()


# ---------------------------------------------------------------------------- the churn
def running_pods(lab: str) -> list[str]:
    out = netemu("get", "pods", "-l", "app=soak", "-o", "json", lab=lab, check=False).stdout
    try:
        items = json.loads(out).get("items") or []
    except ValueError:
        return []
    return [p["metadata"]["name"] for p in items
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def act(lab: str, kind: str, state: dict, traffic: Traffic) -> str:
    if kind == "scale-up":
        netemu("scale", "deployment", "soak", "--replicas=8", lab=lab)
        return "replicas 8"
    if kind == "scale-down":
        netemu("scale", "deployment", "soak", "--replicas=3", lab=lab)
        return "replicas 3"
    if kind == "delete-pod":
        pods = running_pods(lab)
        if not pods:
            return "no pod"
        pod = random.choice(pods)
        netemu("delete", "pod", pod, lab=lab, check=False)
        return pod
    if kind == "node-down":
        node = random.choice(["w1-k8s", "w2-k8s", "w3-k8s"])
        traffic.set_node(node, False)  # a load balancer's health check takes it out first
        time.sleep(0.2)
        netemu("node", "down", node, lab=lab)
        state["down"] = node
        return node
    if kind == "node-up":
        node = state.pop("down", None)
        if node is None:
            return "none down"
        netemu("node", "up", node, lab=lab)
        state["back"] = (node, time.time())
        return node
    if kind == "service-add":
        state["svc"] = state.get("svc", 0) + 1
        name = f"extra-{state['svc']}"
        doc = (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: NodePort\n"
               f"  selector: {{app: soak}}\n  ports: [{{port: 8080, targetPort: 80}}]\n")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(doc)
        try:
            netemu("apply", "-f", f.name, lab=lab)
        finally:
            os.unlink(f.name)
        state.setdefault("svcs", []).append(name)
        return name
    if kind == "service-remove":
        svcs = state.get("svcs") or []
        if not svcs:
            return "none"
        name = svcs.pop(0)
        netemu("delete", "service", name, lab=lab)
        return name
    raise ValueError(kind)


def soak(args) -> dict:
    name = args.name
    doc, ips = lab_file(name, args.prestop)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, prefix=f"{name}-") as f:
        f.write(doc)
    env_kube = os.environ.setdefault("KUBECONFIG", os.path.join(tempfile.gettempdir(), f"{name}.kubeconfig"))
    t0 = time.time()
    netemu("up", f.name, "-q", timeout=300)
    os.unlink(f.name)
    report: dict = {"lab": name, "prestop": args.prestop, "duration_s": args.duration, "interval_s": args.interval,
                    "kubeconfig": env_kube, "up_s": round(time.time() - t0, 2)}
    guard = Guard(name, ips)
    for node in ("w1-k8s", "w2-k8s", "w3-k8s"):
        guard.check(ips[node])
    time.sleep(args.warmup)
    cp = _pid(name, "daemon")
    report["start"] = {"control": proc_stats(cp), "launcher": proc_stats(launcher_pid(name, cp))}
    report["start"]["resource_version"] = resource_version(name)
    samples: list[tuple[float, float]] = []  # (seconds into the churn, control process RSS MB)
    traffic = Traffic(guard, ["w1-k8s", "w2-k8s", "w3-k8s"], args.pause)
    traffic.start()
    actions: list[tuple[float, str, str]] = [(time.time(), "baseline", "")]
    state: dict = {}
    end = time.time() + args.duration
    step = 0
    errors: list[str] = []
    control_pids = {cp}
    t_churn = time.time()
    try:
        time.sleep(args.interval)
        while time.time() < end and traffic.is_alive():
            kind = ACTIONS[step % len(ACTIONS)]
            step += 1
            t = time.time()
            try:
                what = act(name, kind, state, traffic)
            except Exception as e:  # noqa: BLE001  (counted, and the churn goes on)
                what = f"error: {e}"
                errors.append(f"{kind}: {e}")
            actions.append((t, kind, what))
            if kind == "node-up" and "back" in state:
                node, _ = state.pop("back")
                time.sleep(0.5)
                traffic.set_node(node, True)
            control_pids.add(_pid(name, "daemon"))
            if not samples or t - t_churn - samples[-1][0] >= 60:
                samples.append((round(t - t_churn), proc_stats(_pid(name, "daemon")).get("rss_mb")))
            time.sleep(max(0.0, args.interval - (time.time() - t)))
        if state.get("down"):
            netemu("node", "up", state.pop("down"), lab=name, check=False)
    finally:
        traffic.stop.set()
        traffic.join(timeout=10)
    time.sleep(2)
    cp_end = _pid(name, "daemon")
    report["end"] = {"control": proc_stats(cp_end), "launcher": proc_stats(launcher_pid(name, cp_end))}
    report["end"]["resource_version"] = resource_version(name)
    report["rss_samples"] = samples
    report["control_process_restarts"] = len({p for p in control_pids if p}) - 1
    report["action_errors"] = errors
    report["guard"] = traffic.stopped_by_guard
    # requests put down to the action last started before them
    per: dict = collections.defaultdict(lambda: {"actions": 0, "requests": 0, "failed": 0, "examples": []})
    for _, kind, _ in actions:
        per[kind]["actions"] += 1
    starts = [a[0] for a in actions]
    import bisect

    for t, ok, info in traffic.results:
        i = bisect.bisect_right(starts, t) - 1
        kind = actions[max(i, 0)][1]
        per[kind]["requests"] += 1
        if not ok:
            per[kind]["failed"] += 1
            if len(per[kind]["examples"]) < 5:
                per[kind]["examples"].append(f"+{t - actions[max(i, 0)][0]:.2f}s after {actions[max(i, 0)][2]}: {info}")
    report["per_action"] = dict(per)
    report["requests"] = len(traffic.results)
    report["failed"] = sum(1 for r in traffic.results if not r[1])
    s, e = report["start"]["control"], report["end"]["control"]
    if s.get("rss_mb") is not None and e.get("rss_mb") is not None:
        report["rss_growth_mb"] = round(e["rss_mb"] - s["rss_mb"], 1)
        report["fd_growth"] = e["fds"] - s["fds"]
        report["cpu_s_during"] = round(e["cpu_s"] - s["cpu_s"], 1) if s.get("pid") == e.get("pid") else None
    own = {_pid(name, "supervisor"), _pid(name, "daemon"), launcher_pid(name, _pid(name, "daemon"))} - {None}
    t0 = time.time()
    netemu("down", name, timeout=120)
    report["down_s"] = round(time.time() - t0, 2)
    time.sleep(1)
    left = leftovers(name, own)
    report["leaks"] = {k: v for k, v in left.items() if v}
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600, help="seconds of churn (default 600)")
    ap.add_argument("--interval", type=float, default=3.0, help="seconds between actions (default 3)")
    ap.add_argument("--pause", type=float, default=0.02, help="seconds between two requests (default 0.02)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds after `up` before measuring")
    ap.add_argument("--prestop", action="store_true", help="pods get a preStop hook (sleep 2)")
    ap.add_argument("--name", default="soak")
    ap.add_argument("--json", help="also write the report here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root: the soak builds a real lab", file=sys.stderr)
        return 1
    report = soak(args)
    text = json.dumps(report, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    print(text)
    print()
    print(f"{'action':16} {'actions':>7} {'requests':>9} {'failed':>7}")
    for kind, v in sorted(report["per_action"].items()):
        print(f"{kind:16} {v['actions']:>7} {v['requests']:>9} {v['failed']:>7}")
    s, e = report["start"]["control"], report["end"]["control"]
    print(f"control process: RSS {s.get('rss_mb')} -> {e.get('rss_mb')} MB, fds {s.get('fds')} -> {e.get('fds')}, "
          f"CPU {s.get('cpu_s')} -> {e.get('cpu_s')} s; restarts {report['control_process_restarts']}")
    print(f"leaks after down: {report['leaks'] or 'none'}")
    ok = (report["per_action"].get("scale-up", {}).get("failed", 0) == 0
          and report["per_action"].get("node-up", {}).get("failed", 0) == 0
          and not report["leaks"] and (report.get("rss_growth_mb") or 0) < 10 and not report["guard"])
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
