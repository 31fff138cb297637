"""Resource requests and limits, enforced on the pod's cgroup as kubelet does for the pod-level cgroup.

kubelet (pkg/kubelet/cm, ResourceConfigForPod) sums the containers' requests and limits (an init
container counts when it asks for more than all app containers together), then writes:

    cpu request   -> cpu.shares = MilliCPUToShares (v1; 2..262144)   cpu.weight (v2, from the shares)
    cpu limit     -> CFS quota over a 100 ms period: cpu.cfs_quota_us + cpu.cfs_period_us (v1)
                                                       cpu.max "quota period" (v2)
    memory limit  -> memory.limit_in_bytes (v1)      memory.max (v2)

A limit is only applied when every container declares it (else the pod is unbounded for that
resource); a BestEffort pod (no requests or limits at all) gets the minimum shares. A request left
out defaults to the limit, as the API server does. Swap is kept out of a limited pod
(memory.memsw.limit_in_bytes / memory.swap.max), like kubelet's NoSwap, so that a pod over its
memory limit is OOM-killed instead of swapped. pids are not limited.

netemu has one cgroup per pod (no per-container cgroups): the limits of a pod's containers are
enforced on the pod as a whole.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Optional

from netemu.spec.autoscaling import QuantityError, milli_value, parse_quantity, value
from netemu.spec.models import Container, Pod, PodSpec
from netemu.spec.podresources import qos_class  # the API server's, as the pod's status has it

CPU_PERIOD_US = 100_000  # kubelet's default --cpu-cfs-quota-period
MIN_QUOTA_US = 1000  # MinQuotaPeriod
MIN_SHARES = 2
MAX_SHARES = 262_144
SHARES_PER_CPU = 1024
UNLIMITED_V1 = -1


class ResourceError(RuntimeError):
    """Writing a pod's limits to its cgroup failed."""


# --------------------------------------------------------------------------- per container
def container_requests(c: Container) -> dict:
    """Requests with the API server's default: a resource with a limit and no request asks for the limit."""
    res = c.resources
    limits = dict(res.limits or {}) if res else {}
    requests = dict(res.requests or {}) if res else {}
    return {**limits, **requests}


def container_limits(c: Container) -> dict:
    res = c.resources
    return dict(res.limits or {}) if res and res.limits else {}


# --------------------------------------------------------------------------- per pod
def _positive(q) -> bool:
    try:
        return parse_quantity(q) > 0
    except QuantityError:
        return False


def _pod_total(spec: PodSpec, pick, resource: str, unit) -> Optional[int]:
    """max(sum over app containers, max over init containers) of one resource; None if no
    container names it."""
    app = [pick(c).get(resource) for c in spec.containers]
    init = [pick(c).get(resource) for c in spec.init_containers or []]
    named = [q for q in app + init if q is not None]
    if not named:
        return None
    total = sum(unit(q) for q in app if q is not None)
    return max([total] + [unit(q) for q in init if q is not None])


def pod_cpu_request_milli(spec: PodSpec) -> int:
    return _pod_total(spec, container_requests, "cpu", milli_value) or 0


def pod_memory_request_bytes(spec: PodSpec) -> int:
    return _pod_total(spec, container_requests, "memory", value) or 0


def _declared(spec: PodSpec, resource: str) -> bool:
    """Every container (init containers too) sets a non-zero limit for `resource`."""
    return all(_positive(container_limits(c).get(resource, 0))
               for c in [*spec.containers, *(spec.init_containers or [])])


def milli_cpu_to_shares(milli: int) -> int:
    if milli == 0:
        return MIN_SHARES
    return max(MIN_SHARES, min(MAX_SHARES, milli * SHARES_PER_CPU // 1000))


def milli_cpu_to_quota(milli: int, period_us: int = CPU_PERIOD_US) -> int:
    if milli == 0:
        return 0
    return max(MIN_QUOTA_US, milli * period_us // 1000)


def shares_to_weight(shares: int) -> int:
    """cgroup v2 cpu.weight for v1 shares (runc's ConvertCPUSharesToCgroupV2Value)."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


@dataclass(frozen=True)
class PodResources:
    """What kubelet sets on a pod's cgroup. None: left unlimited."""
    qos: str
    cpu_shares: int
    cpu_quota_us: Optional[int] = None
    cpu_period_us: int = CPU_PERIOD_US
    memory_limit_bytes: Optional[int] = None
    cpu_request_milli: int = 0
    cpu_limit_milli: Optional[int] = None

    def files(self, v2: bool) -> list[tuple[str, str]]:
        """(cgroup file, value) in the order they must be written."""
        if v2:
            out = [("cpu.weight", str(shares_to_weight(self.cpu_shares)))]
            quota = str(self.cpu_quota_us) if self.cpu_quota_us else "max"
            out.append(("cpu.max", f"{quota} {self.cpu_period_us}"))
            if self.memory_limit_bytes is not None:
                out += [("memory.max", str(self.memory_limit_bytes)), ("memory.swap.max", "0")]
            else:
                out.append(("memory.max", "max"))
            return out
        out = [("cpu.shares", str(self.cpu_shares)), ("cpu.cfs_period_us", str(self.cpu_period_us)),
               ("cpu.cfs_quota_us", str(self.cpu_quota_us) if self.cpu_quota_us else str(UNLIMITED_V1))]
        if self.memory_limit_bytes is not None:
            # memsw >= memory is required: the memory limit first, then swap kept at zero
            out += [("memory.limit_in_bytes", str(self.memory_limit_bytes)),
                    ("memory.memsw.limit_in_bytes", str(self.memory_limit_bytes))]
        return out


def pod_resources(spec: PodSpec) -> PodResources:
    """ResourceConfigForPod, for one pod spec."""
    qos = qos_class(spec)
    if qos == "BestEffort":
        return PodResources(qos=qos, cpu_shares=MIN_SHARES)
    cpu_request = pod_cpu_request_milli(spec)
    shares = milli_cpu_to_shares(cpu_request)
    quota = limit = memory = None
    if _declared(spec, "cpu"):
        limit = _pod_total(spec, container_limits, "cpu", milli_value)
        quota = milli_cpu_to_quota(limit or 0) or None
    if _declared(spec, "memory"):
        memory = _pod_total(spec, container_limits, "memory", value)
    return PodResources(qos=qos, cpu_shares=shares, cpu_quota_us=quota, memory_limit_bytes=memory,
                        cpu_request_milli=cpu_request, cpu_limit_milli=limit)


# (validation of requests and limits: netemu.spec.autoscaling.resource_problems)


# --------------------------------------------------------------------------- the kernel side
def _controller_dirs(cgroups, pod_id: str) -> dict[str, str]:
    """controller ('' on v2) -> the pod's directory for it."""
    return {ctrl: os.path.join(base, pod_id) for ctrl, base in cgroups.bases.items()}


def _where(cgroups, pod_id: str) -> dict[str, str]:
    """cgroup file prefix -> the directory that holds it."""
    dirs = _controller_dirs(cgroups, pod_id)
    if cgroups.v2:
        d = dirs.get("")
        return {"cpu": d, "memory": d} if d else {}
    out = {}
    for ctrl in ("cpu", "memory"):
        if ctrl in dirs:
            out[ctrl] = dirs[ctrl]
    return out


def apply_pod_resources(cgroups, pod_id: str, pod: Pod) -> Optional[PodResources]:
    """Write a pod's requests and limits to its (just created) cgroup; returns what was set.
    Raises ResourceError when the kernel refuses a value."""
    if not getattr(cgroups, "available", False):
        return None
    res = pod_resources(pod.spec)
    where = _where(cgroups, pod_id)
    for fname, val in res.files(cgroups.v2):
        d = where.get(fname.split(".", 1)[0])
        if d is None:
            continue
        path = os.path.join(d, fname)
        if not os.path.exists(path):
            if fname in ("memory.memsw.limit_in_bytes", "memory.swap.max"):
                continue  # no swap accounting on this kernel: nothing to keep out
            raise ResourceError(f"cannot set {fname}: {path} does not exist (is the controller enabled?)")
        try:
            with open(path, "w") as f:
                f.write(val)
        except OSError as e:
            raise ResourceError(f"cannot set {fname}={val} on the pod's cgroup: {e.strerror or e}") from None
    return res


def oom_kills(cgroups, pod_id: str) -> int:
    """How many processes the kernel's OOM killer has killed in the pod's cgroup (v1: the
    oom_kill line of memory.oom_control, kernel >= 4.13; v2: memory.events)."""
    dirs = _controller_dirs(cgroups, pod_id)
    if cgroups.v2:
        path = os.path.join(dirs.get("", ""), "memory.events")
    elif "memory" in dirs:
        path = os.path.join(dirs["memory"], "memory.oom_control")
    else:
        return 0
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k == "oom_kill":
                    return int(v)
    except (OSError, ValueError):
        pass
    return 0


def read_settings(cgroups, pod_id: str) -> dict[str, str]:
    """What the pod's cgroup holds now, for `describe` and tests."""
    out = {}
    where = _where(cgroups, pod_id)
    names = (("cpu.weight", "cpu.max", "memory.max") if cgroups.v2 else
             ("cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us", "memory.limit_in_bytes"))
    for fname in names:
        d = where.get(fname.split(".", 1)[0])
        if d is None:
            continue
        try:
            with open(os.path.join(d, fname)) as f:
                out[fname] = f.read().strip()
        except OSError:
            pass
    return out


def describe_limits(res: PodResources) -> Iterable[str]:
    """Human lines: `cpu: 50m (quota 5000us/100000us)`."""
    if res.cpu_limit_milli is not None:
        yield f"cpu limit {res.cpu_limit_milli}m: cfs quota {res.cpu_quota_us}us per {res.cpu_period_us}us"
    if res.memory_limit_bytes is not None:
        yield f"memory limit {res.memory_limit_bytes} bytes"
    yield f"cpu shares {res.cpu_shares} ({res.qos})"
