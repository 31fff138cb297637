"""The scheduler: kube-scheduler's default profile (v1.32), for what labs use.

Queue: pending pods by priority, then age (PrioritySort). For each pod, the filters in the default
profile's order, each node stopping at its first failure:

  NodeUnschedulable, NodeName, TaintToleration, NodeAffinity (nodeSelector and required node
  affinity), NodePorts, NodeResourcesFit (requests, init containers and overhead included; pod
  count), PodTopologySpread (DoNotSchedule constraints), InterPodAffinity (required affinity and
  anti-affinity, the existing pods' anti-affinity too)

then, among the feasible nodes, the scores with their default weights: TaintToleration 3
(PreferNoSchedule), NodeAffinity 2 (preferred terms), NodeResourcesFit 1 (LeastAllocated),
PodTopologySpread 2 (ScheduleAnyway constraints, or the system default spreading over Services and
ReplicaSets), InterPodAffinity 2 (preferred terms, both ways), NodeResourcesBalancedAllocation 1;
ties are broken at random from the lab's seed. A pod that fits nowhere gets PodScheduled=False and
the FailedScheduling event worded as kube-scheduler words it, DefaultPreemption's verdict included
(a pod of higher priority evicts lower-priority victims and is nominated to their node); it is
tried again when the cluster changes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Optional

from netemu.control.labels import matches_map
from netemu.control.nodes import UNSCHEDULABLE_TAINT
from netemu.control.pods import controller_of, is_terminal, is_terminating, set_condition
from netemu.spec.models import LabelSelector, Node, Pod, Taint, Toleration
from netemu.spec.podresources import CPU, EPHEMERAL, MEMORY, PODS, amount, pod_requests
from netemu.wellknown import HOSTNAME_LABEL as HOSTNAME
from netemu.wellknown import ZONE_LABEL as ZONE

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

DEFAULT_SCHEDULER = "default-scheduler"
MAX_NODE_SCORE = 100
HARD_POD_AFFINITY_WEIGHT = 1
UNSCHEDULABLE = "Unschedulable"
UNRESOLVABLE = "UnschedulableAndUnresolvable"
RESCHEDULE_EVENT_EVERY = 300.0  # podMaxInUnschedulablePodsDuration: an unschedulable pod is tried (and told) again
# the kinds whose changes may change a verdict: pods and nodes, Namespaces (their labels, for namespaceSelector),
# Services and ReplicaSets (the default spreading); the cluster runs the scheduler when one of them changed
READS = ("Pod", "Node", "Service", "ReplicaSet", "Namespace")

# the filter plugins' reasons, as kube-scheduler writes them
R_UNSCHEDULABLE = "node(s) were unschedulable"
R_NODE_NAME = "node(s) didn't match the requested node name"
R_NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
R_NODE_PORTS = "node(s) didn't have free ports for the requested pod ports"
R_SPREAD = "node(s) didn't match pod topology spread constraints"
R_SPREAD_LABEL = R_SPREAD + " (missing required label)"
R_AFFINITY = "node(s) didn't match pod affinity rules"
R_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
R_EXISTING_ANTI = "node(s) didn't satisfy existing pods anti-affinity rules"
R_NO_VICTIMS = "No preemption victims found for incoming pod"
R_NOT_HELPFUL = "Preemption is not helpful for scheduling"

WEIGHTS = {"TaintToleration": 3, "NodeAffinity": 2, "NodeResourcesFit": 1, "PodTopologySpread": 2,
           "InterPodAffinity": 2, "NodeResourcesBalancedAllocation": 1}
# PodTopologySpread's system default constraints (scheduler config's defaultingType: System)
SYSTEM_DEFAULT_SPREAD = ((HOSTNAME, 3), (ZONE, 5))


# ============================================================================ tolerations and taints
def toleration_matches(t: Toleration, taint: Taint) -> bool:
    """Toleration.ToleratesTaint."""
    if t.effect and t.effect != taint.effect:
        return False
    if t.key and t.key != taint.key:
        return False
    if t.operator in (None, "", "Equal"):
        return (t.value or "") == (taint.value or "")
    return t.operator == "Exists"


def tolerates(tolerations: Optional[list[Toleration]], taint: Taint) -> bool:
    return any(toleration_matches(t, taint) for t in tolerations or [])


def untolerated(taints: Iterable[Taint], tolerations: Optional[list[Toleration]],
                effects: tuple[str, ...] = ("NoSchedule", "NoExecute")) -> Optional[Taint]:
    """FindMatchingUntoleratedTaint: the first taint of these effects no toleration tolerates."""
    for taint in taints:
        if taint.effect in effects and not tolerates(tolerations, taint):
            return taint
    return None


def node_ready(node: Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


# ============================================================================ selectors
@dataclass(frozen=True)
class Sel:
    """A compiled label selector: requirements (key, operator, values); nothing=True selects nothing."""
    reqs: tuple = ()
    nothing: bool = False

    @classmethod
    def of(cls, sel: Optional[LabelSelector], labels_for_keys: Optional[dict] = None,
           match_keys: Iterable[str] = (), mismatch_keys: Iterable[str] = ()) -> "Sel":
        if sel is None:
            return cls(nothing=True)
        reqs = [(k, "In", (v,)) for k, v in sorted((sel.match_labels or {}).items())]
        for r in sel.match_expressions or []:
            reqs.append((r.key, r.operator, tuple(sorted(r.values or ()))))
        for k in match_keys:  # matchLabelKeys: the owning pod's value of the key, merged in
            if labels_for_keys is not None and k in labels_for_keys:
                reqs.append((k, "In", (labels_for_keys[k],)))
        for k in mismatch_keys:
            if labels_for_keys is not None and k in labels_for_keys:
                reqs.append((k, "NotIn", (labels_for_keys[k],)))
        return cls(tuple(sorted(reqs)))

    @classmethod
    def of_map(cls, m: Optional[dict]) -> "Sel":
        return cls(tuple(sorted((k, "In", (v,)) for k, v in (m or {}).items())))

    def matches(self, labels: Optional[dict]) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        for key, op, values in self.reqs:
            has = key in labels
            if op == "In":
                if not has or labels[key] not in values:
                    return False
            elif op == "NotIn":
                if has and labels[key] in values:
                    return False
            elif op == "Exists":
                if not has:
                    return False
            elif op == "DoesNotExist":
                if has:
                    return False
            else:
                return False
        return True

    def empty(self) -> bool:
        return not self.nothing and not self.reqs


def _node_requirement(r, value: Optional[str]) -> bool:
    has = value is not None
    vals = r.values or []
    if r.operator == "In":
        return has and value in vals
    if r.operator == "NotIn":
        return not has or value not in vals
    if r.operator == "Exists":
        return has
    if r.operator == "DoesNotExist":
        return not has
    if r.operator in ("Gt", "Lt") and has and len(vals) == 1:
        try:
            a, b = int(value), int(vals[0])
        except ValueError:
            return False
        return a > b if r.operator == "Gt" else a < b
    return False


def node_term_matches(term, node: Node) -> bool:
    """A NodeSelectorTerm: its expressions and fields ANDed; an empty term matches nothing."""
    if term is None or not (term.match_expressions or term.match_fields):
        return False
    labels = node.metadata.labels or {}
    for r in term.match_expressions or []:
        if not _node_requirement(r, labels.get(r.key)):
            return False
    for r in term.match_fields or []:
        if not _node_requirement(r, node.metadata.name if r.key == "metadata.name" else None):
            return False
    return True


def required_node_affinity(pod: Pod, node: Node) -> bool:
    """nodeSelector AND requiredDuringSchedulingIgnoredDuringExecution (its terms ORed)."""
    if not matches_map(pod.spec.node_selector, node.metadata.labels):
        return False
    na = pod.spec.affinity.node_affinity if pod.spec.affinity else None
    req = na.required_during_scheduling_ignored_during_execution if na else None
    if req is not None:
        return any(node_term_matches(t, node) for t in req.node_selector_terms or [])
    return True


# ============================================================================ pods and nodes as the scheduler sees them
@dataclass(frozen=True)
class Term:
    """A pod (anti-)affinity term, compiled: selector, namespaces (None = any), topology key."""
    sel: Sel
    namespaces: Optional[frozenset]
    ns_sel: Optional[Sel]
    topology_key: str

    def matches(self, pi: "PodInfo", ns_labels: dict) -> bool:
        in_ns = (self.namespaces is not None and pi.namespace in self.namespaces) or (
            self.ns_sel is not None and self.ns_sel.matches(ns_labels.get(pi.namespace)))
        return in_ns and self.sel.matches(pi.labels)


def _terms(pod: Pod, raw, weighted: bool) -> tuple:
    out = []
    for item in raw or []:
        term = item.pod_affinity_term if weighted else item
        ns = set(term.namespaces or ())
        ns_sel = Sel.of(term.namespace_selector) if term.namespace_selector is not None else None
        if not ns and ns_sel is None:
            ns.add(pod.metadata.namespace or "default")
        t = Term(Sel.of(term.label_selector, pod.metadata.labels or {}, term.match_label_keys or (),
                        term.mismatch_label_keys or ()),
                 frozenset(ns) if ns else None, ns_sel, term.topology_key)
        out.append((item.weight, t) if weighted else t)
    return tuple(out)


class PodInfo:
    """What the scheduler needs of a pod, computed once per pod (its spec does not change)."""
    __slots__ = ("pod", "name", "namespace", "uid", "labels", "priority", "requests", "non_zero", "ports",
                 "req_aff", "req_anti", "pref_aff", "pref_anti", "terminating", "start", "affinity_key")

    def __init__(self, pod: Pod):
        self.pod = pod
        self.name = pod.metadata.name
        self.namespace = pod.metadata.namespace or "default"
        self.uid = pod.metadata.uid
        self.labels = pod.metadata.labels or {}
        self.priority = pod.spec.priority or 0
        self.requests = pod_requests(pod.spec)
        nz = pod_requests(pod.spec, non_zero=True)
        self.non_zero = (nz.get(CPU, 0), nz.get(MEMORY, 0))
        self.ports = tuple((p.host_ip or "0.0.0.0", p.protocol or "TCP", p.host_port)
                           for c in [*pod.spec.containers, *(pod.spec.init_containers or [])]
                           for p in c.ports or [] if p.host_port)
        aff = pod.spec.affinity
        pa, paa = (aff.pod_affinity, aff.pod_anti_affinity) if aff else (None, None)
        self.req_aff = _terms(pod, pa.required_during_scheduling_ignored_during_execution, False) if pa else ()
        self.pref_aff = _terms(pod, pa.preferred_during_scheduling_ignored_during_execution, True) if pa else ()
        self.req_anti = _terms(pod, paa.required_during_scheduling_ignored_during_execution, False) if paa else ()
        self.pref_anti = _terms(pod, paa.preferred_during_scheduling_ignored_during_execution, True) if paa else ()
        self.terminating = is_terminating(pod)
        self.start = pod.status.start_time or pod.metadata.creation_timestamp or ""
        na = aff.node_affinity if aff else None
        req = na.required_during_scheduling_ignored_during_execution if na else None
        # what the pod's required node affinity is made of: pods of one template share the verdicts
        self.affinity_key = (tuple(sorted((pod.spec.node_selector or {}).items())),
                             repr(req.dump()) if req is not None else None)

    def refresh(self, pod: Pod) -> "PodInfo":
        self.pod = pod
        self.labels = pod.metadata.labels or {}
        self.terminating = is_terminating(pod)
        return self

    @property
    def has_affinity(self) -> bool:
        return bool(self.req_aff or self.req_anti or self.pref_aff or self.pref_anti)


class NodeInfo:
    __slots__ = ("node", "name", "labels", "allocatable", "allowed_pods", "requested", "non_zero", "pods", "ports")

    def __init__(self, node: Node):
        self.node = node
        self.name = node.metadata.name
        self.labels = node.metadata.labels or {}
        alloc = {k: amount(k, v) for k, v in (node.status.allocatable or {}).items()}
        self.allowed_pods = alloc.pop(PODS, 0)
        self.allocatable = alloc
        self.requested: dict[str, int] = {}
        self.non_zero = [0, 0]
        self.pods: list[PodInfo] = []
        self.ports: list[tuple] = []

    def add(self, pi: PodInfo) -> None:
        self.pods.append(pi)
        for k, v in pi.requests.items():
            self.requested[k] = self.requested.get(k, 0) + v
        self.non_zero[0] += pi.non_zero[0]
        self.non_zero[1] += pi.non_zero[1]
        self.ports.extend(pi.ports)

    def without(self, victims: set) -> "NodeInfo":
        n = NodeInfo(self.node)
        for pi in self.pods:
            if pi.uid not in victims:
                n.add(pi)
        return n


@dataclass
class SchedulerState:
    """What the scheduler keeps between passes: pods' compiled facts, and when it last tried the
    pods that fit nowhere (they are tried again when the cluster changes)."""
    infos: dict = field(default_factory=dict)  # pod uid -> PodInfo
    fingerprint: Optional[tuple] = None
    told: dict = field(default_factory=dict)  # pod uid -> (message, when the event was last recorded)


def _state(c: "Cluster") -> SchedulerState:
    st = c.__dict__.get("_scheduler_state")
    if st is None:
        st = c.__dict__["_scheduler_state"] = SchedulerState()
    return st


def pod_info(c: "Cluster", pod: Pod) -> PodInfo:
    st = _state(c)
    pi = st.infos.get(pod.metadata.uid)
    if pi is None:
        pi = st.infos[pod.metadata.uid] = PodInfo(pod)
        return pi
    return pi.refresh(pod)


class Snapshot:
    """The nodes with their pods, and counts of pods per node by selector (kept up to date as pods are
    bound, so that one pass costs what it schedules, not pods x pods)."""

    def __init__(self, c: "Cluster"):
        self.c = c
        self.nodes = [NodeInfo(n) for n in sorted(c.store.list("Node"), key=lambda n: n.metadata.name)]
        self.by_name = {n.name: n for n in self.nodes}
        self.ns_labels = {ns.metadata.name: ns.metadata.labels or {} for ns in c.store.list("Namespace")}
        # the existing pods' affinity terms, grouped: (kind, weight, term) -> pods holding it, per node
        self.term_groups: dict[tuple, dict[str, int]] = {}
        self._counts: dict[tuple, tuple] = {}  # key -> (predicate, {node: count})
        self._node_affinity: dict[tuple, bool] = {}  # (pod's affinity key, node) -> verdict
        for p in c.store.list("Pod"):
            n = self.by_name.get(p.spec.node_name or "")
            if n is None or is_terminal(p):
                continue
            pi = pod_info(c, p)
            n.add(pi)
            self._group_terms(pi, n)

    def _group_terms(self, pi: PodInfo, node: NodeInfo) -> None:
        if not pi.has_affinity:
            return
        groups = [("req_aff", HARD_POD_AFFINITY_WEIGHT, t) for t in pi.req_aff] + \
                 [("req_anti", 0, t) for t in pi.req_anti] + \
                 [("pref_aff", w, t) for w, t in pi.pref_aff] + [("pref_anti", w, t) for w, t in pi.pref_anti]
        for g in groups:
            per_node = self.term_groups.setdefault(g, {})
            per_node[node.name] = per_node.get(node.name, 0) + 1

    def add(self, pi: PodInfo, node: NodeInfo) -> None:
        node.add(pi)
        self._group_terms(pi, node)
        for pred, counts in self._counts.values():
            if pred(pi):
                counts[node.name] = counts.get(node.name, 0) + 1

    def counts_by(self, key: tuple, pred) -> dict[str, int]:
        """Pods for which pred holds, per node (cached under key)."""
        got = self._counts.get(key)
        if got is None:
            counts: dict[str, int] = {}
            for n in self.nodes:
                k = sum(1 for pi in n.pods if pred(pi))
                if k:
                    counts[n.name] = k
            got = self._counts[key] = (pred, counts)
        return got[1]

    def counts(self, sel: Sel, namespaces: Optional[frozenset], skip_terminating: bool) -> dict[str, int]:
        """Pods matching the selector in these namespaces (None: all), per node."""
        def pred(pi: PodInfo) -> bool:
            return (namespaces is None or pi.namespace in namespaces) and sel.matches(pi.labels) and not (
                skip_terminating and pi.terminating)
        return self.counts_by(("sel", sel, namespaces, skip_terminating), pred)

    def node_affinity(self, pi: PodInfo, node: "NodeInfo") -> bool:
        """required_node_affinity(pod, node), once per pod template and node in a pass."""
        key = (pi.affinity_key, node.name)
        got = self._node_affinity.get(key)
        if got is None:
            got = self._node_affinity[key] = required_node_affinity(pi.pod, node.node)
        return got

    def term_counts(self, term: Term) -> dict[str, int]:
        """Pods a term of the pod being scheduled matches, per node."""
        namespaces = set(term.namespaces or ())
        if term.ns_sel is not None:
            namespaces |= {ns for ns, labels in self.ns_labels.items() if term.ns_sel.matches(labels)}
        return self.counts(term.sel, frozenset(namespaces), False)

    def all_terms_counts(self, terms: tuple) -> dict[str, int]:
        """Pods matching every one of these terms, per node (required affinity counts those)."""
        ns_labels = self.ns_labels
        return self.counts_by(("all", terms), lambda pi: all(t.matches(pi, ns_labels) for t in terms))


# ============================================================================ filters
@dataclass
class Status:
    code: str
    reasons: tuple[str, ...]
    plugin: str


@dataclass
class Cycle:
    """One scheduling attempt's pre-computed state (the PreFilter extension point)."""
    pod: Pod
    pi: PodInfo
    spread: list = field(default_factory=list)  # (constraint, sel, per-pair counts, min per key, domains)
    affinity_counts: dict = field(default_factory=dict)
    anti_counts: dict = field(default_factory=dict)
    existing_anti: dict = field(default_factory=dict)


def _spread_constraints(pod: Pod, pi: PodInfo, when: str) -> list[tuple]:
    out = []
    for cons in pod.spec.topology_spread_constraints or []:
        if cons.when_unsatisfiable != when:
            continue
        sel = Sel.of(cons.label_selector, pi.labels, cons.match_label_keys or ())
        out.append((cons, sel))
    return out


def _includes(cons, pod: Pod, node: NodeInfo, snap: Optional["Snapshot"] = None, pi: Optional[PodInfo] = None) -> bool:
    """matchNodeInclusionPolicies: nodeAffinityPolicy Honor (default), nodeTaintsPolicy Ignore (default)."""
    if (cons.node_affinity_policy or "Honor") == "Honor" and not (
            snap.node_affinity(pi, node) if snap is not None else required_node_affinity(pod, node.node)):
        return False
    if (cons.node_taints_policy or "Ignore") == "Honor" and untolerated(node.node.spec.taints or [],
                                                                       pod.spec.tolerations) is not None:
        return False
    return True


def prefilter(snap: Snapshot, pod: Pod, pi: PodInfo) -> Cycle:
    cyc = Cycle(pod, pi)
    # PodTopologySpread: matching pods per topology pair over the nodes the constraints include
    hard = _spread_constraints(pod, pi, "DoNotSchedule")
    if hard:
        keys = [cons.topology_key for cons, _ in hard]
        for cons, sel in hard:
            counts = snap.counts(sel, frozenset((pi.namespace,)), True)
            pairs: dict[str, int] = {}
            for n in snap.nodes:
                if not all(k in n.labels for k in keys) or not _includes(cons, pod, n, snap, pi):
                    continue
                v = n.labels[cons.topology_key]
                pairs[v] = pairs.get(v, 0) + counts.get(n.name, 0)
            lowest = min(pairs.values()) if pairs else 0
            cyc.spread.append((cons, sel, pairs, lowest, len(pairs)))
    # InterPodAffinity: the existing pods' required anti-affinity towards this pod, and this pod's terms
    for (kind, _, term), per_node in snap.term_groups.items():
        if kind != "req_anti" or not term.matches(pi, snap.ns_labels):
            continue
        for name, k in per_node.items():
            labels = snap.by_name[name].labels
            if term.topology_key in labels:
                pair = (term.topology_key, labels[term.topology_key])
                cyc.existing_anti[pair] = cyc.existing_anti.get(pair, 0) + k
    if pi.req_aff:
        for name, k in snap.all_terms_counts(pi.req_aff).items():
            labels = snap.by_name[name].labels
            for t in pi.req_aff:
                if t.topology_key in labels:
                    pair = (t.topology_key, labels[t.topology_key])
                    cyc.affinity_counts[pair] = cyc.affinity_counts.get(pair, 0) + k
    for t in pi.req_anti:
        for name, k in snap.term_counts(t).items():
            labels = snap.by_name[name].labels
            if t.topology_key in labels:
                pair = (t.topology_key, labels[t.topology_key])
                cyc.anti_counts[pair] = cyc.anti_counts.get(pair, 0) + k
    return cyc


def fits_resources(pi: PodInfo, node: NodeInfo) -> list[str]:
    """NodeResourcesFit's reasons (empty when the pod fits)."""
    out = []
    if len(node.pods) + 1 > node.allowed_pods:
        out.append("Too many pods")
    req = pi.requests
    if not any(req.values()):
        return out
    for name in (CPU, MEMORY, EPHEMERAL):
        want = req.get(name, 0)
        if want > 0 and want > node.allocatable.get(name, 0) - node.requested.get(name, 0):
            out.append(f"Insufficient {name}")
    for name, want in req.items():
        if name in (CPU, MEMORY, EPHEMERAL, PODS) or want <= 0:
            continue
        if want > node.allocatable.get(name, 0) - node.requested.get(name, 0):
            out.append(f"Insufficient {name}")
    return out


def _ports_conflict(wanted: tuple, used: list) -> bool:
    for ip, proto, port in wanted:
        for uip, uproto, uport in used:
            if port == uport and proto == uproto and (ip == uip or "0.0.0.0" in (ip, uip)):
                return True
    return False


def run_filters(cyc: Cycle, node: NodeInfo, snap: Snapshot) -> Optional[Status]:
    """The default profile's filters in order; the first failure is the node's status."""
    pod, pi = cyc.pod, cyc.pi
    n = node.node
    tolerations = pod.spec.tolerations
    # NodeUnschedulable
    if n.spec.unschedulable and not tolerates(tolerations, Taint(key=UNSCHEDULABLE_TAINT, effect="NoSchedule")):
        return Status(UNRESOLVABLE, (R_UNSCHEDULABLE,), "NodeUnschedulable")
    # NodeName
    if pod.spec.node_name and pod.spec.node_name != node.name:
        return Status(UNRESOLVABLE, (R_NODE_NAME,), "NodeName")
    # TaintToleration
    taint = untolerated(n.spec.taints or [], tolerations)
    if taint is not None:
        return Status(UNRESOLVABLE, (f"node(s) had untolerated taint {{{taint.key}: {taint.value or ''}}}",),
                      "TaintToleration")
    # NodeAffinity
    if not snap.node_affinity(pi, node):
        return Status(UNRESOLVABLE, (R_NODE_AFFINITY,), "NodeAffinity")
    # NodePorts
    if pi.ports and _ports_conflict(pi.ports, node.ports):
        return Status(UNSCHEDULABLE, (R_NODE_PORTS,), "NodePorts")
    # NodeResourcesFit
    insufficient = fits_resources(pi, node)
    if insufficient:
        return Status(UNSCHEDULABLE, tuple(insufficient), "NodeResourcesFit")
    # PodTopologySpread
    for cons, sel, pairs, lowest, domains in cyc.spread:
        if cons.topology_key not in node.labels:
            return Status(UNRESOLVABLE, (R_SPREAD_LABEL,), "PodTopologySpread")
    for cons, sel, pairs, lowest, domains in cyc.spread:
        minimum = 0 if cons.min_domains and domains < cons.min_domains else lowest
        skew = pairs.get(node.labels[cons.topology_key], 0) + (1 if sel.matches(pi.labels) else 0) - minimum
        if skew > cons.max_skew:
            return Status(UNSCHEDULABLE, (R_SPREAD,), "PodTopologySpread")
    # InterPodAffinity
    if pi.req_aff:
        exist = True
        for t in pi.req_aff:
            if t.topology_key not in node.labels:
                return Status(UNRESOLVABLE, (R_AFFINITY,), "InterPodAffinity")
            if cyc.affinity_counts.get((t.topology_key, node.labels[t.topology_key]), 0) <= 0:
                exist = False
        if not exist and not (not cyc.affinity_counts and all(t.matches(pi, snap.ns_labels) for t in pi.req_aff)):
            return Status(UNRESOLVABLE, (R_AFFINITY,), "InterPodAffinity")
    if cyc.anti_counts:
        for t in pi.req_anti:
            value = node.labels.get(t.topology_key)
            if value is not None and cyc.anti_counts.get((t.topology_key, value), 0) > 0:
                return Status(UNSCHEDULABLE, (R_ANTI_AFFINITY,), "InterPodAffinity")
    if cyc.existing_anti:
        for k, v in node.labels.items():
            if cyc.existing_anti.get((k, v), 0) > 0:
                return Status(UNSCHEDULABLE, (R_EXISTING_ANTI,), "InterPodAffinity")
    return None


# ============================================================================ scores
def _default_normalize(scores: dict[str, int], reverse: bool) -> dict[str, int]:
    top = max(scores.values(), default=0)
    if top == 0:
        return {k: (MAX_NODE_SCORE if reverse else 0) for k in scores}
    out = {}
    for k, s in scores.items():
        s = MAX_NODE_SCORE * s // top
        out[k] = MAX_NODE_SCORE - s if reverse else s
    return out


def _round(x: float) -> int:
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def score_taints(pod: Pod, nodes: list[NodeInfo]) -> dict[str, int]:
    tols = [t for t in pod.spec.tolerations or [] if not t.effect or t.effect == "PreferNoSchedule"]
    raw = {n.name: sum(1 for t in n.node.spec.taints or [] if t.effect == "PreferNoSchedule"
                       and not any(toleration_matches(x, t) for x in tols)) for n in nodes}
    return _default_normalize(raw, True)


def score_node_affinity(pod: Pod, nodes: list[NodeInfo]) -> dict[str, int]:
    na = pod.spec.affinity.node_affinity if pod.spec.affinity else None
    prefs = na.preferred_during_scheduling_ignored_during_execution if na else None
    if not prefs:
        return {n.name: 0 for n in nodes}
    raw = {n.name: sum(p.weight for p in prefs if node_term_matches(p.preference, n.node)) for n in nodes}
    return _default_normalize(raw, False)


def score_least_allocated(pi: PodInfo, nodes: list[NodeInfo]) -> dict[str, int]:
    out = {}
    for n in nodes:
        total = weights = 0
        for i, name in enumerate((CPU, MEMORY)):
            alloc = n.allocatable.get(name, 0)
            if alloc == 0:
                continue
            req = n.non_zero[i] + pi.non_zero[i]
            total += 0 if req > alloc else (alloc - req) * MAX_NODE_SCORE // alloc
            weights += 1
        out[n.name] = total // weights if weights else 0
    return out


def score_balanced(pi: PodInfo, nodes: list[NodeInfo]) -> dict[str, int]:
    out = {}
    for n in nodes:
        fractions = []
        for name in (CPU, MEMORY):
            alloc = n.allocatable.get(name, 0)
            if alloc == 0:
                continue
            fractions.append(min(1.0, (n.requested.get(name, 0) + pi.requests.get(name, 0)) / alloc))
        std = abs(fractions[0] - fractions[1]) / 2 if len(fractions) == 2 else 0.0
        out[n.name] = int((1 - std) * MAX_NODE_SCORE)
    return out


def default_spread_selector(c: "Cluster", pod: Pod, pi: PodInfo) -> Optional[Sel]:
    """helper.DefaultSelector: the selectors of the Services selecting the pod, and of its ReplicaSet."""
    merged: dict[str, str] = {}
    for svc in c.store.services_selecting(pi.namespace, pi.labels):
        merged.update(svc.spec.selector)
    reqs = set(Sel.of_map(merged).reqs)
    owner = controller_of(pod)
    if owner is not None and owner.kind == "ReplicaSet":
        rs = c.store.find("ReplicaSet", pi.namespace, owner.name)
        if rs is not None:
            reqs |= set(Sel.of(rs.spec.selector).reqs)
    if not reqs:
        return None
    return Sel(tuple(sorted(reqs)))


def score_spread(c: "Cluster", snap: Snapshot, pod: Pod, pi: PodInfo, nodes: list[NodeInfo]) -> dict[str, int]:
    soft = _spread_constraints(pod, pi, "ScheduleAnyway")
    require_all = True
    if not pod.spec.topology_spread_constraints:
        sel = default_spread_selector(c, pod, pi)
        if sel is None:
            return {n.name: 0 for n in nodes}
        soft = [(_Default(key, skew), sel) for key, skew in SYSTEM_DEFAULT_SPREAD]
        require_all = False
    if not soft:
        return {n.name: 0 for n in nodes}
    keys = [cons.topology_key for cons, _ in soft]
    ignored = {n.name for n in nodes if require_all and not all(k in n.labels for k in keys)}
    ns = frozenset((pi.namespace,))
    domain_counts: list[dict[str, int]] = []
    weights = []
    for cons, sel in soft:
        values = {n.labels.get(cons.topology_key, "") for n in nodes if n.name not in ignored}
        size = len(nodes) - len(ignored) if cons.topology_key == HOSTNAME else len(values)
        weights.append(math.log(size + 2))
        counts = snap.counts(sel, ns, True)
        per_value: dict[str, int] = {}
        if cons.topology_key != HOSTNAME:
            for n in snap.nodes:  # every node, filtered or not, counts towards its domain
                if require_all and not all(k in n.labels for k in keys):
                    continue
                if not _includes(cons, pod, n, snap, pi):
                    continue
                v = n.labels.get(cons.topology_key)
                if v is not None and v in values:
                    per_value[v] = per_value.get(v, 0) + counts.get(n.name, 0)
        domain_counts.append(per_value)
    raw: dict[str, int] = {}
    for n in nodes:
        if n.name in ignored:
            continue
        total = 0.0
        for i, (cons, sel) in enumerate(soft):
            if cons.topology_key not in n.labels:
                continue
            if cons.topology_key == HOSTNAME:
                cnt = snap.counts(sel, ns, True).get(n.name, 0)
            else:
                cnt = domain_counts[i].get(n.labels[cons.topology_key], 0)
            total += cnt * weights[i] + (cons.max_skew - 1)
        raw[n.name] = _round(total)
    lo = min(raw.values(), default=0)
    hi = max(raw.values(), default=0)
    out = {}
    for n in nodes:
        if n.name in ignored:
            out[n.name] = 0
        elif hi == 0:
            out[n.name] = MAX_NODE_SCORE
        else:
            out[n.name] = MAX_NODE_SCORE * (hi + lo - raw[n.name]) // hi
    return out


@dataclass(frozen=True)
class _Default:
    topology_key: str
    max_skew: int
    node_affinity_policy: Optional[str] = None
    node_taints_policy: Optional[str] = None


def score_inter_pod_affinity(snap: Snapshot, pi: PodInfo, nodes: list[NodeInfo]) -> dict[str, int]:
    topo: dict[tuple[str, str], int] = {}

    def add(term: Term, per_node: dict[str, int], weight: int) -> None:
        for name, k in per_node.items():
            labels = snap.by_name[name].labels
            if term.topology_key in labels:
                pair = (term.topology_key, labels[term.topology_key])
                topo[pair] = topo.get(pair, 0) + weight * k

    # the pod's preferred terms against the pods there, and the pods' terms against this pod
    for w, t in pi.pref_aff:
        add(t, snap.term_counts(t), w)
    for w, t in pi.pref_anti:
        add(t, snap.term_counts(t), -w)
    for (kind, w, t), per_node in snap.term_groups.items():
        if kind == "req_anti" or not t.matches(pi, snap.ns_labels):
            continue
        add(t, per_node, -w if kind == "pref_anti" else w)
    if not topo:
        return {n.name: 0 for n in nodes}
    raw = {n.name: sum(topo.get((k, v), 0) for k, v in n.labels.items()) for n in nodes}
    lo, hi = min(raw.values()), max(raw.values())
    return {k: int(MAX_NODE_SCORE * (s - lo) / (hi - lo)) if hi > lo else 0 for k, s in raw.items()}


def score(c: "Cluster", snap: Snapshot, cyc: Cycle, nodes: list[NodeInfo]) -> dict[str, int]:
    pod, pi = cyc.pod, cyc.pi
    parts = {
        "TaintToleration": score_taints(pod, nodes),
        "NodeAffinity": score_node_affinity(pod, nodes),
        "NodeResourcesFit": score_least_allocated(pi, nodes),
        "PodTopologySpread": score_spread(c, snap, pod, pi, nodes),
        "InterPodAffinity": score_inter_pod_affinity(snap, pi, nodes),
        "NodeResourcesBalancedAllocation": score_balanced(pi, nodes),
    }
    return {n.name: sum(WEIGHTS[p] * s[n.name] for p, s in parts.items()) for n in nodes}


def select_host(scores: dict[str, int], order: list[str], rng) -> str:
    """selectHost: the highest total; ties broken uniformly at random (reservoir sampling)."""
    best, count, chosen = None, 0, order[0]
    for name in order:
        s = scores[name]
        if best is None or s > best:
            best, chosen, count = s, name, 1
        elif s == best:
            count += 1
            if rng.randrange(count) == 0:
                chosen = name
    return chosen


# ============================================================================ the FitError and preemption
def fit_error(total: int, statuses: dict[str, Status], absent: Optional[str] = None) -> str:
    """FitError.Error(): `0/N nodes are available: <count> <reason>, ...` sorted as strings."""
    hist: dict[str, int] = {}
    for st in statuses.values():
        for r in st.reasons:
            hist[r] = hist.get(r, 0) + 1
    if absent is not None and total > len(statuses):
        hist[absent] = hist.get(absent, 0) + total - len(statuses)
    msg = f"0/{total} nodes are available:"
    parts = sorted(f"{n} {r}" for r, n in hist.items())
    if parts:
        msg += " " + ", ".join(parts) + "."
    return msg


def preempt(c: "Cluster", snap: Snapshot, cyc: Cycle, statuses: dict[str, Status]) -> tuple[Optional[str], str]:
    """DefaultPreemption: (the nominated node, or None; the PostFilter message). Victims are lower-priority
    pods whose removal lets the pod fit; the chosen node has the lowest-priority, fewest victims."""
    pod, pi = cyc.pod, cyc.pi
    if pod.spec.preemption_policy == "Never":
        return None, "preemption: not eligible due to preemptionPolicy=Never."
    potential = [snap.by_name[name] for name, st in statuses.items() if st.code == UNSCHEDULABLE]
    results: dict[str, Status] = {}
    candidates = []
    for node in potential:
        victims = [v for v in node.pods if v.priority < pi.priority]
        if not victims:
            results[node.name] = Status(UNRESOLVABLE, (R_NO_VICTIMS,), "DefaultPreemption")
            continue
        st = statuses[node.name]
        if st.plugin not in ("NodeResourcesFit", "NodePorts"):
            results[node.name] = st  # removing pods would not change this filter's verdict here
            continue
        trial = node.without({v.uid for v in victims})
        why = fits_resources(pi, trial) or ([R_NODE_PORTS] if pi.ports and _ports_conflict(pi.ports, trial.ports)
                                            else [])
        if why:
            results[node.name] = Status(UNSCHEDULABLE, tuple(why), st.plugin)
            continue
        # reprieve as many as possible, the most important first
        kept: set = set()
        chosen = []
        for v in sorted(victims, key=lambda v: (-v.priority, v.start)):
            again = node.without({x.uid for x in victims if x.uid != v.uid and x.uid not in kept})
            if not fits_resources(pi, again) and not (pi.ports and _ports_conflict(pi.ports, again.ports)):
                kept.add(v.uid)
            else:
                chosen.append(v)
        if chosen:
            candidates.append((node, chosen))
        else:
            results[node.name] = Status(UNRESOLVABLE, (R_NO_VICTIMS,), "DefaultPreemption")
    if not candidates:
        return None, "preemption: " + fit_error(len(snap.nodes), results, R_NOT_HELPFUL)

    def rank(cand):
        node, victims = cand
        top = max(v.priority for v in victims)
        return (top, sum(v.priority for v in victims), len(victims), node.name)

    node, victims = min(candidates, key=rank)
    for v in victims:
        current = c.store.find("Pod", v.namespace, v.name)
        if current is None or is_terminating(current):
            continue
        c.event(current, "Preempted", f"Preempted by pod {pod.metadata.uid} on node {node.name}",
                source=DEFAULT_SCHEDULER)
        c.delete_pod(current)
    return node.name, ""


# ============================================================================ the loop
def unbound(store) -> list[Pod]:
    """Pods not bound to a node (an index: a pass over a big lab looks at these only)."""
    return store.indexed("pod-unbound", "Pod", lambda p: True if not p.spec.node_name else None, True)


def _pending(c: "Cluster") -> list[Pod]:
    out = []
    for p in sorted(unbound(c.store), key=lambda p: (p.metadata.namespace, p.metadata.name)):
        if p.spec.node_name is None and not is_terminating(p) and not is_terminal(p) and \
                (p.spec.scheduler_name or DEFAULT_SCHEDULER) == DEFAULT_SCHEDULER:
            out.append(p)
    return out


def _fingerprint(c: "Cluster") -> tuple:
    return tuple(c.store.generation[k] for k in READS)


def reconcile(c: "Cluster") -> None:
    pending = _pending(c)
    st = _state(c)
    if not pending:
        if len(st.infos) > c.store.count("Pod") or st.told:  # pods went: forget them
            live = {p.metadata.uid for p in c.store.list("Pod")}
            if len(st.infos) > len(live):
                st.infos = {u: pi for u, pi in st.infos.items() if u in live}
            st.told = {u: t for u, t in st.told.items() if u in live}
        return
    now = c.clock()
    fp = _fingerprint(c)
    unschedulable = {p.metadata.uid for p in pending if _unschedulable(p)}
    if fp == st.fingerprint and all(p.metadata.uid in unschedulable for p in pending):
        due = [t for _, t in (st.told.get(u, ("", now)) for u in unschedulable)]
        if not any(now - t >= RESCHEDULE_EVENT_EVERY for t in due):
            return  # nothing changed since every one of them was found not to fit
    snap = Snapshot(c)
    queue = sorted(pending, key=lambda p: (-(p.spec.priority or 0), p.metadata.creation_timestamp or "",
                                           p.metadata.name))
    for pod in queue:
        schedule_one(c, snap, pod, now)
    st.fingerprint = _fingerprint(c)


def _unschedulable(pod: Pod) -> bool:
    return any(x.type == "PodScheduled" and x.status == "False" for x in pod.status.conditions or [])


def schedule_one(c: "Cluster", snap: Snapshot, pod: Pod, now: float) -> Optional[str]:
    if pod.spec.scheduling_gates:
        if set_condition(pod, "PodScheduled", False, c.now_str(), "SchedulingGated",
                         "Scheduling is blocked due to non-empty scheduling gates"):
            c.store.update(pod)
        return None
    pi = pod_info(c, pod)
    cyc = prefilter(snap, pod, pi)
    feasible: list[NodeInfo] = []
    statuses: dict[str, Status] = {}
    for node in snap.nodes:
        st = run_filters(cyc, node, snap)
        if st is None:
            feasible.append(node)
        else:
            statuses[node.name] = st
    if not feasible:
        msg = fit_error(len(snap.nodes), statuses) if snap.nodes else "no nodes available to schedule pods"
        nominated, post = preempt(c, snap, cyc, statuses) if snap.nodes else (None, "")
        if post:
            msg += " " + post
        _unschedulable_pod(c, pod, msg, nominated, now)
        return None
    if len(feasible) == 1:
        chosen = feasible[0].name
    else:
        totals = score(c, snap, cyc, feasible)
        chosen = select_host(totals, [n.name for n in feasible], c.store.rng)
    bind(c, pod, chosen)
    snap.add(pi.refresh(pod), snap.by_name[chosen])
    _state(c).told.pop(pod.metadata.uid, None)
    return chosen


def _unschedulable_pod(c: "Cluster", pod: Pod, msg: str, nominated: Optional[str], now: float) -> None:
    st = _state(c)
    changed = set_condition(pod, "PodScheduled", False, c.now_str(), "Unschedulable", msg)
    if nominated is not None and pod.status.nominated_node_name != nominated:
        pod.status.nominated_node_name = nominated
        changed = True
    if changed:
        c.store.update(pod)
    last = st.told.get(pod.metadata.uid)
    if changed or last is None or last[0] != msg or now - last[1] >= RESCHEDULE_EVENT_EVERY:
        c.event(pod, "FailedScheduling", msg, type_="Warning", source=DEFAULT_SCHEDULER)
        st.told[pod.metadata.uid] = (msg, now)
    c.wake_at(now + RESCHEDULE_EVENT_EVERY, reconcile)  # run then even if nothing it reads changed


def bind(c: "Cluster", pod: Pod, node_name: str) -> None:
    pod.spec.node_name = node_name
    pod.status.nominated_node_name = None
    set_condition(pod, "PodScheduled", True, c.now_str())
    c.store.update(pod)
    c.event(pod, "Scheduled",
            f"Successfully assigned {pod.metadata.namespace}/{pod.metadata.name} to {node_name}",
            source=DEFAULT_SCHEDULER)
