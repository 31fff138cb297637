"""The cluster's brain: the store plus the controllers, run level-triggered to a fixpoint.

Everything here is pure and deterministic given the clock and the seed: no kernel calls.
The daemon feeds in what the data plane observes (node up/down, pod started, probe results)
through the store and calls :meth:`Cluster.reconcile`; the data plane reads the result.
"""
from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from netemu.control import (
    workqueue, daemonsets, disruption, endpoints, ingress_addon, jobs, kubeadm, metallb, metallb_bgp, metallb_l2, nodes,
    podnet, scheduler,
    services, workloads,
)
from netemu.control.pods import is_terminal, is_terminating
from netemu.control.store import NotFound, Store, key_of, rfc3339
from netemu.spec.models import NAMESPACED, Deployment, K8sModel, Lab, Namespace, ObjectMeta, Pod

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NAMESPACE_SETTLE = 1.0  # seconds before the namespace controller empties a Terminating namespace

# controllers in the order one pass runs them; each is level-triggered and safe to repeat
CONTROLLERS: tuple[Callable[["Cluster"], None], ...] = (
    nodes.reconcile,
    workloads.reconcile_deployments,
    workloads.reconcile_replicasets,
    daemonsets.reconcile,
    jobs.reconcile,
    scheduler.reconcile,
    podnet.reconcile,
    kubeadm.reconcile,  # kube-system as kubeadm leaves it: mirror pods, kube-proxy pods, ServiceAccounts
    endpoints.reconcile,
    disruption.reconcile,  # PodDisruptionBudgets' status, which eviction reads
    ingress_addon.reconcile,  # the ingress-nginx addon when wanted, and Ingress status
    metallb.reconcile,
    metallb_l2.reconcile,
    metallb_bgp.reconcile,  # BGP mode: what each node's FRR announces to each peer
)


# the kinds a controller reads: a pass skips it when none of them changed since it last ran, so that a
# change elsewhere (a ConfigMap, an event) costs no walk over every pod. A listed controller with a timer
# asks for its run with wake_at(t, controller); controllers not listed (node eviction...) always run.
READS: dict[Callable, tuple[str, ...]] = {
    podnet.reconcile: ("Pod", "Node"),
    scheduler.reconcile: scheduler.READS,
    metallb.reconcile: metallb.READS,
    ingress_addon.reconcile: ingress_addon.READS,
}

# controllers fed by work queues (netemu.control.workqueue): the kinds each watches, and the keys a change of
# one queues; a pass hands each the keys queued since its last run, and skips it when there are none
QUEUED: dict[Callable, dict] = {
    workloads.reconcile_deployments: workloads.DEPLOYMENT_WATCHES,
    workloads.reconcile_replicasets: workloads.REPLICASET_WATCHES,
    endpoints.reconcile: endpoints.WATCHES,
}


class AdmissionError(ValueError):
    """An object the API server would refuse (e.g. a nodePort already taken)."""


@dataclass
class ClusterEvent:
    kind: str
    namespace: str
    name: str
    type: str
    reason: str
    message: str
    source: str
    first: float
    last: float
    count: int = 1
    uid: str = ""  # the involved object's
    rv: int = 0  # set by the API's watch feed


@dataclass
class ApplyResult:
    obj: K8sModel
    action: str  # created | configured | unchanged

    def __str__(self) -> str:
        return f"{resource_name(self.obj.kind)}/{self.obj.metadata.name} {self.action}"


def resource_name(kind: str) -> str:
    """kubectl's `<resource>.<group>` prefix, as in `deployment.apps/np-pods created` (the table of kinds)."""
    from netemu.spec import registry

    res = registry.by_kind(kind)
    return res.resource_name() if res is not None else kind.lower()


@dataclass
class Cluster:
    lab: Lab
    clock: Callable[[], float] = time.time
    store: Store = field(init=False)
    events: collections.deque = field(default_factory=lambda: collections.deque(maxlen=2000))
    _event_index: dict = field(default_factory=dict)
    event_listeners: list = field(default_factory=list)  # called with each new or repeated event
    _ns_deleting: dict = field(default_factory=dict)  # Terminating namespace -> when it started
    _ran_at: dict = field(default_factory=dict)  # controller -> the change counters of its inputs when it ran
    _due: dict = field(default_factory=dict)  # controller -> when it runs again, whatever changed (its timer)
    node_transitions: dict[str, float] = field(default_factory=dict)
    _wake: Optional[float] = None
    queues: dict = field(default_factory=dict)  # queued controller -> its WorkQueue
    # called between controllers: the control process tells its supervisor a long pass is moving on
    progress: Callable[[], None] = field(default=lambda: None)
    # garbage collection's queue: uids of deleted objects (their dependents go) and of objects created with an
    # owner already gone; None: look at every dependent (a fresh or reloaded store)
    _gc_uids: Optional[set] = None

    def __post_init__(self) -> None:
        self.store = Store(self.clock, seed=self.lab.spec.seed)
        self.queues = {ctrl: workqueue.WorkQueue(watches) for ctrl, watches in QUEUED.items()}
        self.store.listeners.append(self._enqueue)

    def _enqueue(self, kind: str, event: str, obj: K8sModel) -> None:
        for q in self.queues.values():
            q.note(self.store, kind, obj)
        if self._gc_uids is not None:
            if event == "DELETED":
                self._gc_uids.add(obj.metadata.uid)
            elif event == "ADDED" and obj.metadata.owner_references:
                self._gc_uids.update(r.uid for r in obj.metadata.owner_references if r.controller)

    # ------------------------------------------------------------------ time
    def now_str(self) -> str:
        return rfc3339(self.clock())

    def wake_at(self, t: float, controller: Optional[Callable] = None) -> None:
        """Ask the daemon to reconcile again at time t (eviction timers and the like); controller: one of
        READS, to be run then even if none of the kinds it reads changed."""
        if t <= self.clock():
            return
        if self._wake is None or t < self._wake:
            self._wake = t
        if controller is not None and t < self._due.get(controller, math.inf):
            self._due[controller] = t

    def take_wake(self) -> Optional[float]:
        t, self._wake = self._wake, None
        return t

    # ------------------------------------------------------------------ bootstrap
    def bootstrap(self) -> None:
        for ns in SYSTEM_NAMESPACES:
            self.store.create(Namespace(metadata=ObjectMeta(name=ns)))
        for node in nodes.nodes_from_lab(self.lab, self.now_str()):
            self.store.create(node)

    # ------------------------------------------------------------------ events
    def event(self, obj: K8sModel, reason: str, message: str, type_: str = "Normal", source: str = "") -> None:
        kind, ns, name = key_of(obj)
        self.record_event(kind, ns, name, reason, message, type_, source, obj.metadata.uid or "")

    def record_event(self, kind: str, ns: str, name: str, reason: str, message: str, type_: str = "Normal",
                     source: str = "", uid: str = "") -> ClusterEvent:
        now = self.clock()
        key = (kind, ns, name, reason, message)
        ev = self._event_index.get(key)
        if ev is not None and ev.count > 0:  # the same event again: count it, like the API server
            ev.count += 1
            ev.last = now
            for fn in self.event_listeners:
                fn(ev)
            return ev
        if len(self.events) == self.events.maxlen:
            old = self.events[0]
            self._event_index.pop((old.kind, old.namespace, old.name, old.reason, old.message), None)
        ev = ClusterEvent(kind, ns, name, type_, reason, message, source or _default_source(kind), now, now, uid=uid)
        self.events.append(ev)
        self._event_index[key] = ev
        for fn in self.event_listeners:
            fn(ev)
        return ev

    def events_for(self, kind: str, namespace: str, name: str) -> list[ClusterEvent]:
        ns = namespace if kind in NAMESPACED else ""
        return [e for e in self.events if (e.kind, e.namespace, e.name) == (kind, ns, name)]

    # ------------------------------------------------------------------ API verbs
    def apply(self, objs: list[K8sModel]) -> list[ApplyResult]:
        """kubectl apply: create what is new, replace the spec of what exists. Namespaces first."""
        ordered = sorted(objs, key=lambda o: 0 if o.kind == "Namespace" else 1)
        results = []
        for obj in ordered:
            if obj.kind in NAMESPACED:
                ns = obj.metadata.namespace or "default"
                obj.metadata.namespace = ns
                if self.store.find("Namespace", "", ns) is None:
                    self.store.create(Namespace(metadata=ObjectMeta(name=ns)))
            results.append(self._apply_one(obj))
        return results

    def _apply_one(self, obj: K8sModel) -> ApplyResult:
        kind, ns, name = key_of(obj)
        current = self.store.find(kind, ns, name)
        if current is None:
            services.admit(self, obj, None)
            self.store.create(obj)
            return ApplyResult(obj, "created")
        services.admit(self, obj, current)
        changed = False
        for part in ("spec", "data", "string_data", "binary_data", "type", "address_type", "endpoints", "ports"):
            if part in type(obj).model_fields and part != "status":
                new, old = getattr(obj, part), getattr(current, part)
                if _dump(new) != _dump(old):
                    setattr(current, part, new)
                    changed = True
        for meta in ("labels", "annotations"):
            new = getattr(obj.metadata, meta)
            if new != getattr(current.metadata, meta):
                setattr(current.metadata, meta, new)
                changed = True
        if not changed:
            return ApplyResult(current, "unchanged")
        if current.metadata.generation is not None:
            current.metadata.generation += 1
        self.store.update(current)
        return ApplyResult(current, "configured")

    def delete(self, kind: str, namespace: str, name: str) -> K8sModel:
        obj = self.store.get(kind, namespace, name)
        if kind == "Pod":
            self.delete_pod(obj)
        elif kind == "Namespace":
            if name in SYSTEM_NAMESPACES:
                raise AdmissionError(f'namespace "{name}" is a system namespace and cannot be deleted')
            # as the API server does: the namespace is Terminating, and the namespace controller
            # (reconcile_namespaces) empties it and then removes it
            if not obj.metadata.deletion_timestamp:
                obj.metadata.deletion_timestamp = self.now_str()
                obj.status = {"phase": "Terminating"}
                self.store.update(obj)
        else:
            self.store.delete(kind, namespace, name)
            self._collect_garbage()
        return obj

    def delete_pod(self, pod: Pod, grace: Optional[int] = None) -> None:
        """Graceful deletion: mark the pod; its kubelet stops it and then removes it. A pod that
        never started anywhere goes at once."""
        if is_terminating(pod):
            return
        if not pod.spec.node_name or not pod.status.pod_ip or is_terminal(pod):
            # never started (or finished) anywhere: nothing to stop, it goes at once (as the API server
            # deletes an unscheduled pod, and kubelet a terminated one)
            self.store.delete("Pod", pod.metadata.namespace, pod.metadata.name)
            return
        g = grace if grace is not None else pod.spec.termination_grace_period_seconds
        g = 30 if g is None else max(0, int(g))
        # as the API server marks it: deletionTimestamp is when the grace period ends
        pod.metadata.deletion_timestamp = rfc3339(self.clock() + g)
        pod.metadata.deletion_grace_period_seconds = g
        if pod.metadata.annotations is None:
            pod.metadata.annotations = {}
        pod.metadata.annotations["netemu.dev/grace-seconds"] = str(g)
        self.store.update(pod)

    def finalize_pod(self, pod: Pod) -> None:
        """The kubelet has stopped the pod: it leaves the API."""
        try:
            self.store.delete("Pod", pod.metadata.namespace, pod.metadata.name)
        except NotFound:
            pass

    def scale(self, kind: str, namespace: str, name: str, replicas: int) -> K8sModel:
        if replicas < 0:
            raise AdmissionError("replicas must be >= 0")
        obj = self.store.get(kind, namespace, name)
        if not isinstance(obj, Deployment) and kind != "ReplicaSet":
            raise AdmissionError(f"{kind.lower()} cannot be scaled")
        obj.spec.replicas = replicas
        self.store.update(obj)
        return obj

    def _collect_garbage(self) -> None:
        """Delete dependents whose controlling owner is gone (cascading delete): those of the owners deleted
        since the last collection (each deletion queues its uid, so a cascade goes on by itself)."""
        if self._gc_uids is None:
            self._gc_uids = {uid for uid, _ in self.store.dependents()}
        while self._gc_uids:
            uid = self._gc_uids.pop()
            if self.store.has_uid(uid):
                continue
            for obj in self.store.owned_by(uid):
                if self.store.find(*key_of(obj)) is not obj:
                    continue
                if obj.kind == "Pod":
                    self.delete_pod(obj)
                else:
                    self.store.delete(*key_of(obj))

    # ------------------------------------------------------------------ the loop
    def reconcile_namespaces(self) -> None:
        """Empty Terminating namespaces, then remove them once nothing is left in them. Like the real
        namespace controller, it gets to work a moment later (NAMESPACE_SETTLE): a `kubectl delete -f`
        that names the namespace first still finds the objects listed after it."""
        for ns in self.store.list("Namespace"):
            if not ns.metadata.deletion_timestamp:
                continue
            name = ns.metadata.name
            since = self._ns_deleting.setdefault(name, self.clock())
            if self.clock() < since + NAMESPACE_SETTLE:
                self.wake_at(since + NAMESPACE_SETTLE)
                continue
            for o in self.store.in_namespace(name):
                if self.store.find(*key_of(o)) is None:
                    continue
                if o.kind == "Pod":
                    self.delete_pod(o)
                else:
                    self.store.delete(*key_of(o))
            if not self.store.in_namespace(name):
                self.store.delete("Namespace", "", name)
                self._ns_deleting.pop(name, None)

    def reconcile(self, max_passes: int = 20) -> int:
        """Run every controller until nothing changes. Returns the number of passes."""
        for n in range(1, max_passes + 1):
            before = self.store.generation["*"]
            for ctrl in CONTROLLERS:
                queue = self.queues.get(ctrl)
                if queue is not None:
                    if queue.pending():
                        ctrl(self, queue.take())
                        self.progress()
                    continue
                kinds = READS.get(ctrl)
                if kinds is not None:
                    stamp = tuple(self.store.generation[k] for k in kinds)
                    if self._ran_at.get(ctrl) == stamp and self.clock() < self._due.get(ctrl, math.inf):
                        continue
                    self._ran_at[ctrl] = stamp
                    self._due.pop(ctrl, None)
                ctrl(self)
                self.progress()
            self.reconcile_namespaces()
            self._collect_garbage()
            if self.store.generation["*"] == before:
                return n
        return max_passes


def _dump(v):
    if v is None:
        return None
    if isinstance(v, list):
        return [_dump(x) for x in v]
    if hasattr(v, "dump"):
        return v.dump()
    return v


def _default_source(kind: str) -> str:
    return {"Deployment": "deployment-controller", "ReplicaSet": "replicaset-controller",
            "DaemonSet": "daemonset-controller", "Job": "job-controller", "PodDisruptionBudget": "controllermanager",
            "Pod": "kubelet", "Node": "kubelet", "Service": "service-controller",
            "HorizontalPodAutoscaler": "horizontal-pod-autoscaler"}.get(kind, "netemu")
