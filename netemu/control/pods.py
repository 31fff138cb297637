"""Small helpers over Pod objects shared by the controllers and the kubelet."""
from __future__ import annotations

from typing import Optional

from netemu.spec.models import (
    Condition, ContainerState, ContainerStateWaiting, ContainerStatus, OwnerReference, Pod,
)


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


def set_creating(pod: Pod, now: str) -> None:
    """The kubelet's first status of a pod it admitted: Pending, its containers waiting in
    ContainerCreating (PodInitializing behind init containers), nothing ready yet."""
    st = pod.status
    st.phase = "Pending"
    st.start_time = st.start_time or now
    inits = pod.spec.init_containers or []

    def waiting(c, reason: str) -> ContainerStatus:
        return ContainerStatus(name=c.name, image=c.image or "", ready=False, started=False, restart_count=0,
                               state=ContainerState(waiting=ContainerStateWaiting(reason=reason)))

    st.init_container_statuses = [waiting(c, "PodInitializing") for c in inits] or None
    st.container_statuses = [waiting(c, "PodInitializing" if inits else "ContainerCreating")
                             for c in pod.spec.containers]
    names = " ".join(c.name for c in pod.spec.containers)
    set_condition(pod, "PodReadyToStartContainers", False, now)
    if inits:
        set_condition(pod, "Initialized", False, now, "ContainersNotInitialized",
                      "containers with incomplete status: [" + " ".join(c.name for c in inits) + "]")
    else:
        set_condition(pod, "Initialized", True, now)
    set_condition(pod, "Ready", False, now, "ContainersNotReady", f"containers with unready status: [{names}]")
    set_condition(pod, "ContainersReady", False, now, "ContainersNotReady", f"containers with unready status: [{names}]")
    order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
    st.conditions = sorted(st.conditions or [], key=lambda c: order.index(c.type) if c.type in order else 99)
