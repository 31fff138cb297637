"""Small helpers over Pod objects shared by the controllers and the kubelet."""
from __future__ import annotations

from typing import Optional

from netemu.spec.models import Condition, OwnerReference, Pod


def condition(pod: Pod, ctype: str) -> Optional[Condition]:
    for c in pod.status.conditions or []:
        if c.type == ctype:
            return c
    return None


def is_ready(pod: Pod) -> bool:
    c = condition(pod, "Ready")
    return c is not None and c.status == "True"


def is_terminating(pod: Pod) -> bool:
    return pod.metadata.deletion_timestamp is not None


def is_terminal(pod: Pod) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def is_active(pod: Pod) -> bool:
    """Counts toward a ReplicaSet's replicas: not finished and not being deleted."""
    return not is_terminating(pod) and not is_terminal(pod)


def set_condition(pod: Pod, ctype: str, status: bool, now: str, reason: Optional[str] = None,
                  message: Optional[str] = None) -> bool:
    """Set a condition; returns True if anything changed. The transition time only moves when
    the status flips, as in Kubernetes."""
    value = "True" if status else "False"
    conds = pod.status.conditions = pod.status.conditions or []
    for c in conds:
        if c.type == ctype:
            if c.status == value and c.reason == reason and c.message == message:
                return False
            if c.status != value:
                c.last_transition_time = now
            c.status, c.reason, c.message = value, reason, message
            return True
    conds.append(Condition(type=ctype, status=value, reason=reason, message=message, last_transition_time=now))
    return True


def controller_of(obj) -> Optional[OwnerReference]:
    for ref in obj.metadata.owner_references or []:
        if ref.controller:
            return ref
    return None


def restarts(pod: Pod) -> int:
    return sum(cs.restart_count for cs in pod.status.container_statuses or [])
