"""What a pod asks of its node: its effective requests (kube-scheduler's and kubelet's arithmetic),
its QoS class (the API server's), and node capacities as numbers.

Units: cpu in millicores, memory / ephemeral-storage / hugepages in bytes, pods and extended
resources in whole units, as kube-scheduler's framework.Resource holds them.
Pure: the scheduler, the describe-node view and the kubelet's admission all read it.
"""
from __future__ import annotations

import functools
from typing import Any, Iterable, Mapping, Optional

from netemu.spec.autoscaling import QuantityError, milli_value, value

CPU, MEMORY, PODS, EPHEMERAL = "cpu", "memory", "pods", "ephemeral-storage"
# kube-scheduler counts a container without requests as this much when it scores (not when it filters)
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024


@functools.lru_cache(maxsize=4096)
def _amount(name: str, q: Any) -> int:
    try:
        return milli_value(q) if name == CPU else value(q)
    except QuantityError:
        return 0


def amount(name: str, q: Any) -> int:
    """A quantity in the scheduler's unit for the resource (cpu: millicores, the rest: units)."""
    try:
        return _amount(name, q)
    except TypeError:  # not hashable: not a quantity either
        return 0


def resource_list(values: Optional[Mapping[str, Any]]) -> dict[str, int]:
    return {k: amount(k, v) for k, v in (values or {}).items()}


def _requests_of(container, with_limits: bool = True) -> dict[str, int]:
    """A container's requests, with the API server's default (requests = limits where unset)."""
    res = container.resources
    if res is None:
        return {}
    out = resource_list(res.requests)
    if with_limits:
        for k, v in (res.limits or {}).items():
            if k not in out:
                out[k] = amount(k, v)
    return out


def _add(total: dict[str, int], more: Mapping[str, int]) -> None:
    for k, v in more.items():
        total[k] = total.get(k, 0) + v


def _max(total: dict[str, int], more: Mapping[str, int]) -> None:
    for k, v in more.items():
        if v > total.get(k, 0):
            total[k] = v


def pod_requests(spec, non_zero: bool = False) -> dict[str, int]:
    """The pod's effective request (resourcehelper.PodRequests): the sum of its containers (and of its
    sidecars), or the largest init container if that is more, plus the pod's overhead. non_zero counts a
    container without a cpu / memory request as 100m / 200Mi (what kube-scheduler scores with)."""
    def reqs(c) -> dict[str, int]:
        r = _requests_of(c)
        if non_zero:  # only what is missing (an explicit 0 stays 0), as NonMissingContainerRequests
            r.setdefault(CPU, DEFAULT_MILLI_CPU_REQUEST)
            r.setdefault(MEMORY, DEFAULT_MEMORY_REQUEST)
        return r

    total: dict[str, int] = {}
    for c in spec.containers or []:
        _add(total, reqs(c))
    # init containers run one after the other: the pod needs the largest of them, counting the
    # sidecars (restartPolicy Always) started before each, which keep running with the app containers
    sidecars: dict[str, int] = {}
    init_max: dict[str, int] = {}
    for c in spec.init_containers or []:
        r = reqs(c)
        if c.restart_policy == "Always":
            _add(sidecars, r)
            step = dict(sidecars)
        else:
            step = dict(sidecars)
            _add(step, r)
        _max(init_max, step)
    _add(total, sidecars)
    _max(total, init_max)
    if spec.overhead:
        _add(total, resource_list(spec.overhead))
    return total


def pod_limits(spec) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in spec.containers or []:
        if c.resources is not None:
            _add(total, resource_list(c.resources.limits))
    init_max: dict[str, int] = {}
    for c in spec.init_containers or []:
        if c.resources is not None:
            _max(init_max, resource_list(c.resources.limits))
    _max(total, init_max)
    if spec.overhead and total:
        _add(total, {k: v for k, v in resource_list(spec.overhead).items() if k in total})
    return total


def qos_class(spec) -> str:
    """The API server's QoS class of a pod (ComputePodQOS): BestEffort, Guaranteed or Burstable."""
    requests: dict[str, int] = {}
    limits: dict[str, int] = {}
    guaranteed = True
    for c in [*(spec.containers or []), *(spec.init_containers or [])]:
        res = c.resources
        req = {k: v for k, v in _requests_of(c).items() if k in (CPU, MEMORY) and v > 0} if res else {}
        lim = {k: v for k, v in resource_list(res.limits if res else None).items() if k in (CPU, MEMORY) and v > 0}
        _add(requests, req)
        _add(limits, lim)
        if not {CPU, MEMORY} <= set(lim):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(limits.get(k) == v for k, v in requests.items()) and len(requests) == len(limits):
        return "Guaranteed"
    return "Burstable"


def default_requests(containers: Iterable) -> None:
    """The API server's pod defaulting: a container with limits but no request for that resource gets
    the limit as its request (pods only, not templates)."""
    for c in containers:
        res = c.resources
        if res is None or not res.limits:
            continue
        requests = dict(res.requests or {})
        for k, v in res.limits.items():
            requests.setdefault(k, v)
        res.requests = requests
