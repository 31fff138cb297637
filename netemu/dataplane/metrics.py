"""Pod and node usage from the pods' cgroups, as metrics-server serves it to `top` and the HPA.

Every `resolution` seconds (metrics-server's --metric-resolution, 15 s; shorter in a lab that
wants to see the HPA react quickly) the collector reads a few files per pod:

    cpu     v1 cpuacct.usage (ns)                 v2 cpu.stat usage_usec
    memory  v1 memory.usage_in_bytes and .stat    v2 memory.current and memory.stat

A pod's cpu is the rate between its last two samples (so the window is the time between them, and
a pod has no metrics until it has been sampled twice); its memory is the working set at the last
sample, usage minus inactive_file (total_inactive_file on v1), as cAdvisor computes it. A node's
usage is the sum of its pods' (a lab node runs nothing else).

`read` only reads files and may run in a worker thread; `commit` updates the collector and runs on
the daemon's event loop, so readers never see half a sample.
"""
from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass
from typing import Iterable, Optional

from netemu.control.hpa import PodMetrics
from netemu.spec.autoscaling import QuantityError, milli_value, value

DEFAULT_RESOLUTION = 15.0


@dataclass(frozen=True)
class PodRef:
    """A running pod, as the kubelet knows it."""
    namespace: str
    name: str
    uid: str  # its cgroup id
    node: str


@dataclass(frozen=True)
class Reading:
    t: float
    cpu_ns: int  # cumulative cpu time of every process the pod ever ran
    working_set: int  # bytes


def pod_refs(kubelet) -> list[PodRef]:
    """The kubelet's running pods (not the ones being stopped)."""
    if kubelet is None:
        return []
    return [PodRef(rt.namespace, rt.name, rt.cgroup_id, rt.node) for rt in list(kubelet.pods.values())
            if not rt.stopping]


class MetricsCollector:
    def __init__(self, cgroups, resolution: float = DEFAULT_RESOLUTION, clock=time.time):
        self.cgroups = cgroups
        self.resolution = float(resolution)
        self.clock = clock
        self.last_sample: Optional[float] = None
        self._snapshot: Optional[dict[tuple[str, str], PodMetrics]] = None
        # (namespace, name) -> (uid, node, previous reading, latest reading)
        self._pods: dict[tuple[str, str], tuple[str, str, Optional[Reading], Reading]] = {}

    # ------------------------------------------------------------------ sampling
    def due(self, now: Optional[float] = None) -> bool:
        now = self.clock() if now is None else now
        return self.last_sample is None or now >= self.last_sample + self.resolution

    @property
    def next_due(self) -> float:
        return (self.last_sample or 0.0) + self.resolution

    def read(self, refs: Iterable[PodRef], now: Optional[float] = None) -> dict[PodRef, Reading]:
        """Read every pod's counters now (files only; safe in a worker thread). Each reading is
        stamped with the time it was taken (`now` for all of them, in tests)."""
        out = {}
        for ref in refs:
            r = read_pod(self.cgroups, ref.uid, self.clock() if now is None else now)
            if r is not None:
                out[ref] = r
        return out

    def commit(self, readings: dict[PodRef, Reading], now: Optional[float] = None) -> None:
        """Take a round of readings; pods not in it are gone."""
        self.last_sample = self.clock() if now is None else now
        pods = {}
        for ref, r in readings.items():
            key = (ref.namespace, ref.name)
            old = self._pods.get(key)
            prev = old[3] if old is not None and old[0] == ref.uid else None
            pods[key] = (ref.uid, ref.node, prev, r)
        self._pods = pods
        self._snapshot = None

    def sample(self, refs: Iterable[PodRef], now: Optional[float] = None) -> None:
        self.commit(self.read(list(refs), now), now)

    async def sample_async(self, refs: Iterable[PodRef]) -> None:
        refs = list(refs)
        readings = await asyncio.to_thread(self.read, refs)
        self.commit(readings)

    # ------------------------------------------------------------------ the views
    def snapshot(self) -> dict[tuple[str, str], PodMetrics]:
        """(namespace, pod) -> usage, for pods sampled at least twice (what the HPA reads).
        Computed once per round of samples."""
        if self._snapshot is None:
            out = {}
            for key, (_, _, prev, cur) in self._pods.items():
                m = _pod_metrics(prev, cur)
                if m is not None:
                    out[key] = m
            self._snapshot = out
        return self._snapshot

    def node_usage(self) -> dict[str, tuple[int, int, float, float]]:
        """node -> (cpu millicores, memory bytes, timestamp, window) summed over its pods."""
        nano: dict[str, float] = {}
        mem: dict[str, int] = {}
        ts: dict[str, float] = {}
        win: dict[str, float] = {}
        for key, (_, node, prev, cur) in self._pods.items():
            if prev is None or cur.t <= prev.t:
                continue
            nano[node] = nano.get(node, 0.0) + max(0, cur.cpu_ns - prev.cpu_ns) / (cur.t - prev.t)
            mem[node] = mem.get(node, 0) + cur.working_set
            ts[node] = max(ts.get(node, 0.0), cur.t)
            win[node] = max(win.get(node, 0.0), cur.t - prev.t)
        return {n: (math.ceil(nano[n] / 1e6), mem[n], ts[n], win[n]) for n in nano}


def _pod_metrics(prev: Optional[Reading], cur: Reading) -> Optional[PodMetrics]:
    if prev is None or cur.t <= prev.t:
        return None
    nanocores = max(0, cur.cpu_ns - prev.cpu_ns) / (cur.t - prev.t)
    # metrics-server reports nanocores; MilliValue() rounds up
    return PodMetrics(cpu_milli=math.ceil(nanocores / 1e6), memory_bytes=cur.working_set, timestamp=cur.t,
                      window=cur.t - prev.t)


# --------------------------------------------------------------------------- reading cgroup files
def read_pod(cgroups, pod_id: str, now: float) -> Optional[Reading]:
    """One reading of a pod's cgroup; None if it is gone (or cgroups are not available)."""
    if not getattr(cgroups, "available", False):
        return None
    try:
        if cgroups.v2:
            d = os.path.join(cgroups.bases[""], pod_id)
            cpu_ns = _stat_value(os.path.join(d, "cpu.stat"), "usage_usec") * 1000
            usage = _int_file(os.path.join(d, "memory.current"))
            inactive = _stat_value(os.path.join(d, "memory.stat"), "inactive_file")
        else:
            acct = cgroups.bases.get("cpuacct") or cgroups.bases.get("cpu")
            cpu_ns = _int_file(os.path.join(acct, pod_id, "cpuacct.usage"))
            md = os.path.join(cgroups.bases["memory"], pod_id)
            usage = _int_file(os.path.join(md, "memory.usage_in_bytes"))
            inactive = _stat_value(os.path.join(md, "memory.stat"), "total_inactive_file")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Reading(now, cpu_ns, max(0, usage - inactive))


def _read(path: str) -> bytes:
    # os-level reads: a sample reads thousands of small files, Python's file objects cost more than the read
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 8192)
    finally:
        os.close(fd)


def _int_file(path: str) -> int:
    return int(_read(path).split()[0])


def _stat_value(path: str, key: str) -> int:
    data = b"\n" + _read(path)
    at = data.find(b"\n" + key.encode() + b" ")
    if at < 0:
        return 0
    start = at + len(key) + 2
    end = data.find(b"\n", start)
    return int(data[start:end if end >= 0 else None])


# --------------------------------------------------------------------------- what `top` shows
def top_pods(collector: MetricsCollector, store, namespace: Optional[str] = None,
             name: Optional[str] = None) -> list[dict]:
    """PodMetrics as metrics.k8s.io shows them, for pods with metrics (sorted by namespace/name)."""
    snap = collector.snapshot()
    out = []
    for (ns, pod), m in sorted(snap.items()):
        if namespace is not None and ns != namespace:
            continue
        if name is not None and pod != name:
            continue
        if store is not None and store.find("Pod", ns, pod) is None:
            continue
        out.append({"namespace": ns, "name": pod, "cpu_milli": m.cpu_milli, "memory_bytes": m.memory_bytes,
                    "timestamp": m.timestamp, "window": m.window})
    return out


def top_nodes(collector: MetricsCollector, store, name: Optional[str] = None) -> list[dict]:
    """NodeMetrics with the node's allocatable, for every node (usage None when not known)."""
    usage = collector.node_usage()
    out = []
    for node in sorted(store.list("Node"), key=lambda n: n.metadata.name):
        n = node.metadata.name
        if name is not None and n != name:
            continue
        alloc = node.status.allocatable or node.status.capacity or {}
        u = usage.get(n)
        ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        if u is None and ready and collector.last_sample is not None and _pods_on(store, n) == 0:
            u = (0, 0, collector.last_sample, collector.resolution)  # nothing runs there: it uses nothing
        out.append({"name": n, "cpu_milli": u[0] if u and ready else None,
                    "memory_bytes": u[1] if u and ready else None,
                    "cpu_allocatable_milli": _q(alloc.get("cpu"), milli_value),
                    "memory_allocatable_bytes": _q(alloc.get("memory"), value)})
    return out


def _pods_on(store, node: str) -> int:
    return sum(1 for p in store.list("Pod") if p.spec.node_name == node and p.metadata.deletion_timestamp is None)


def _q(q, unit) -> Optional[int]:
    if q is None:
        return None
    try:
        return unit(q)
    except QuantityError:
        return None
