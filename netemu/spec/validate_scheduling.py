"""Semantic checks of what steers a pod's scheduling and termination: tolerations, node and pod
(anti-)affinity, topology spread constraints, lifecycle hooks, init containers' restartPolicy, pod
overhead. The rules and their wording are the API server's (ValidateTolerations,
validateNodeSelectorRequirement, validatePodAffinityTerm, validateTopologySpreadConstraints, ...)."""
from __future__ import annotations

from typing import Optional

from netemu.spec.autoscaling import QuantityError, parse_quantity
from netemu.spec.errors import Location, Report, join_path
from netemu.spec.models import LabelSelector, LifecycleHandler, NodeSelectorTerm, PodSpec
from netemu.spec.rules import check_label_key, check_label_value

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
NODE_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")


def _supported(values: tuple[str, ...]) -> str:
    return "supported values: " + ", ".join(f'"{v}"' for v in values)


def check_tolerations(spec: PodSpec, path: str, loc: Location, report: Report) -> None:
    for i, t in enumerate(spec.tolerations or []):
        tpath = join_path(path, f"tolerations[{i}]")
        if t.key and (why := check_label_key(t.key)) is not None:
            report.error(loc, join_path(tpath, "key"), why)
        if not t.key and t.operator != "Exists":
            report.error(loc, join_path(tpath, "operator"),
                         'operator must be Exists when `key` is empty, which means "match all values and all keys"')
        if t.toleration_seconds is not None and t.effect != "NoExecute":
            report.error(loc, join_path(tpath, "effect"), "effect must be 'NoExecute' when `tolerationSeconds` is set")
        if t.operator in (None, "", "Equal"):
            if t.value and (why := check_label_value(t.value)) is not None:
                report.error(loc, join_path(tpath, "value"), why)
        elif t.operator == "Exists":
            if t.value:
                report.error(loc, join_path(tpath, "operator"), "value must be empty when `operator` is 'Exists'")
        else:
            report.error(loc, join_path(tpath, "operator"), _supported(("Equal", "Exists")))
        if t.effect and t.effect not in TAINT_EFFECTS:
            report.error(loc, join_path(tpath, "effect"), _supported(TAINT_EFFECTS))


def check_taint_list(taints, path: str, loc: Location, report: Report) -> None:
    seen: dict[tuple[str, str], int] = {}
    for i, t in enumerate(taints or []):
        tpath = join_path(path, f"[{i}]")
        if (why := check_label_key(t.key)) is not None:
            report.error(loc, join_path(tpath, "key"), why)
        if t.value and (why := check_label_value(t.value)) is not None:
            report.error(loc, join_path(tpath, "value"), why)
        if (t.key, t.effect) in seen:
            report.error(loc, tpath, f"taints must be unique by key and effect pair (also [{seen[(t.key, t.effect)]}])")
        seen.setdefault((t.key, t.effect), i)


def _check_requirements(reqs, path: str, fields: bool, loc: Location, report: Report) -> None:
    for i, r in enumerate(reqs or []):
        rpath = join_path(path, f"[{i}]")
        values = r.values or []
        if r.operator in ("In", "NotIn"):
            if not values:
                report.error(loc, join_path(rpath, "values"),
                             "Required value: must be specified when `operator` is 'In' or 'NotIn'")
        elif r.operator in ("Exists", "DoesNotExist"):
            if values:
                report.error(loc, join_path(rpath, "values"),
                             "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        elif r.operator in ("Gt", "Lt"):
            if len(values) != 1:
                report.error(loc, join_path(rpath, "values"),
                             "Required value: must be specified single value when `operator` is 'Lt' or 'Gt'")
            elif not values[0].lstrip("-").isdigit():
                report.error(loc, join_path(rpath, "values[0]"), "must be an integer for operator Gt or Lt")
        else:
            report.error(loc, join_path(rpath, "operator"), "not a valid selector operator")
        if fields:
            if r.key != "metadata.name":
                report.error(loc, join_path(rpath, "key"), "not a valid field selector key")
            elif r.operator not in ("In", "NotIn") or len(values) != 1:
                report.error(loc, join_path(rpath, "values"), "must be only one value when `operator` is 'In' or "
                             "'NotIn' for node field selector")
        elif (why := check_label_key(r.key)) is not None:
            report.error(loc, join_path(rpath, "key"), why)


def _check_term(term: Optional[NodeSelectorTerm], path: str, loc: Location, report: Report) -> None:
    if term is None:
        return
    _check_requirements(term.match_expressions, join_path(path, "matchExpressions"), False, loc, report)
    _check_requirements(term.match_fields, join_path(path, "matchFields"), True, loc, report)


def _check_weight(weight: int, path: str, loc: Location, report: Report) -> None:
    if not 1 <= weight <= 100:
        report.error(loc, path, "must be in the range 1-100")


def check_label_selector(sel: Optional[LabelSelector], path: str, loc: Location, report: Report) -> None:
    from netemu.spec.validate_pods import check_selector

    if sel is not None:
        check_selector(sel, path, loc, report)


def _check_pod_term(term, path: str, loc: Location, report: Report) -> None:
    if not term.topology_key:
        report.error(loc, join_path(path, "topologyKey"), "Required value: can not be empty")
    elif (why := check_label_key(term.topology_key)) is not None:
        report.error(loc, join_path(path, "topologyKey"), why)
    check_label_selector(term.label_selector, join_path(path, "labelSelector"), loc, report)
    check_label_selector(term.namespace_selector, join_path(path, "namespaceSelector"), loc, report)
    for key in term.match_label_keys or []:
        if (why := check_label_key(key)) is not None:
            report.error(loc, join_path(path, "matchLabelKeys"), f"key {key!r} {why}")


def check_affinity(spec: PodSpec, path: str, loc: Location, report: Report) -> None:
    aff = spec.affinity
    if aff is None:
        return
    apath = join_path(path, "affinity")
    na = aff.node_affinity
    if na is not None:
        npath = join_path(apath, "nodeAffinity")
        req = na.required_during_scheduling_ignored_during_execution
        rpath = join_path(npath, "requiredDuringSchedulingIgnoredDuringExecution")
        if req is not None:
            if not req.node_selector_terms:
                report.error(loc, join_path(rpath, "nodeSelectorTerms"),
                             "Required value: must have at least one node selector term")
            for i, term in enumerate(req.node_selector_terms or []):
                _check_term(term, join_path(rpath, f"nodeSelectorTerms[{i}]"), loc, report)
        for i, pref in enumerate(na.preferred_during_scheduling_ignored_during_execution or []):
            ppath = join_path(npath, f"preferredDuringSchedulingIgnoredDuringExecution[{i}]")
            _check_weight(pref.weight, join_path(ppath, "weight"), loc, report)
            _check_term(pref.preference, join_path(ppath, "preference"), loc, report)
    for name, pa in (("podAffinity", aff.pod_affinity), ("podAntiAffinity", aff.pod_anti_affinity)):
        if pa is None:
            continue
        ppath = join_path(apath, name)
        for i, term in enumerate(pa.required_during_scheduling_ignored_during_execution or []):
            _check_pod_term(term, join_path(ppath, f"requiredDuringSchedulingIgnoredDuringExecution[{i}]"), loc, report)
        for i, w in enumerate(pa.preferred_during_scheduling_ignored_during_execution or []):
            wpath = join_path(ppath, f"preferredDuringSchedulingIgnoredDuringExecution[{i}]")
            _check_weight(w.weight, join_path(wpath, "weight"), loc, report)
            _check_pod_term(w.pod_affinity_term, join_path(wpath, "podAffinityTerm"), loc, report)


def check_topology_spread(spec: PodSpec, path: str, loc: Location, report: Report) -> None:
    seen: set[tuple[str, str]] = set()
    for i, c in enumerate(spec.topology_spread_constraints or []):
        cpath = join_path(path, f"topologySpreadConstraints[{i}]")
        if c.max_skew <= 0:
            report.error(loc, join_path(cpath, "maxSkew"), "must be greater than zero")
        if not c.topology_key:
            report.error(loc, join_path(cpath, "topologyKey"), "Required value: can not be empty")
        elif (why := check_label_key(c.topology_key)) is not None:
            report.error(loc, join_path(cpath, "topologyKey"), why)
        if c.when_unsatisfiable not in ("DoNotSchedule", "ScheduleAnyway"):
            report.error(loc, join_path(cpath, "whenUnsatisfiable"), _supported(("DoNotSchedule", "ScheduleAnyway")))
        if c.min_domains is not None:
            if c.min_domains <= 0:
                report.error(loc, join_path(cpath, "minDomains"), "must be greater than 0")
            elif c.when_unsatisfiable != "DoNotSchedule":
                report.error(loc, join_path(cpath, "minDomains"),
                             f"can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {c.when_unsatisfiable}")
        for field, value in (("nodeAffinityPolicy", c.node_affinity_policy),
                             ("nodeTaintsPolicy", c.node_taints_policy)):
            if value is not None and value not in ("Honor", "Ignore"):
                report.error(loc, join_path(cpath, field), _supported(("Honor", "Ignore")))
        pair = (c.topology_key, c.when_unsatisfiable)
        if pair in seen:
            report.error(loc, cpath, f'Duplicate value: "{{{c.topology_key}, {c.when_unsatisfiable}}}"')
        seen.add(pair)
        check_label_selector(c.label_selector, join_path(cpath, "labelSelector"), loc, report)


def _check_handler(h: Optional[LifecycleHandler], path: str, port_names: set[str], loc: Location,
                   report: Report) -> None:
    if h is None:
        return
    handlers = [n for n, a in (("exec", h.exec), ("httpGet", h.http_get), ("tcpSocket", h.tcp_socket),
                                ("sleep", h.sleep)) if a is not None]
    if not handlers:
        report.error(loc, path, "Required value: must specify a handler type")
    elif len(handlers) > 1:
        report.error(loc, join_path(path, handlers[1]), "Forbidden: may not specify more than 1 handler type")
    if h.exec is not None and not h.exec.command:
        report.error(loc, join_path(path, "exec.command"), "Required value")
    if h.sleep is not None and h.sleep.seconds <= 0:
        report.error(loc, join_path(path, "sleep.seconds"), "must be greater than 0")
    for name, action in (("httpGet", h.http_get), ("tcpSocket", h.tcp_socket)):
        if action is not None and isinstance(action.port, str) and not action.port.isdigit() \
                and action.port not in port_names:
            report.error(loc, join_path(path, f"{name}.port"), f"no container port named {action.port!r}")


def check_lifecycle(spec: PodSpec, path: str, loc: Location, report: Report) -> None:
    groups = (("containers", spec.containers or [], False), ("initContainers", spec.init_containers or [], True))
    for group, containers, init in groups:
        for i, c in enumerate(containers):
            cpath = join_path(path, f"{group}[{i}]")
            ports = {p.name for p in c.ports or [] if p.name}
            if c.lifecycle is not None:
                if init and c.restart_policy != "Always":
                    report.error(loc, join_path(cpath, "lifecycle"), "Forbidden: may not be set for init containers "
                                 "without restartPolicy=Always")
                _check_handler(c.lifecycle.pre_stop, join_path(cpath, "lifecycle.preStop"), ports, loc, report)
                _check_handler(c.lifecycle.post_start, join_path(cpath, "lifecycle.postStart"), ports, loc, report)
            if c.restart_policy is not None:
                if not init:
                    report.error(loc, join_path(cpath, "restartPolicy"), "Forbidden: may not be set for non-init "
                                 "containers")
                elif c.restart_policy != "Always":
                    report.error(loc, join_path(cpath, "restartPolicy"), _supported(("Always",)))
            if init and c.restart_policy != "Always":
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    if getattr(c, {"readinessProbe": "readiness_probe", "livenessProbe": "liveness_probe",
                                   "startupProbe": "startup_probe"}[probe]) is not None:
                        report.error(loc, join_path(cpath, probe), "Forbidden: may not be set for init containers "
                                     "without restartPolicy=Always")


def check_overhead(spec: PodSpec, path: str, loc: Location, report: Report) -> None:
    for name, q in (spec.overhead or {}).items():
        try:
            if parse_quantity(q) < 0:
                report.error(loc, join_path(path, f"overhead.{name}"), "must be greater than or equal to 0")
        except QuantityError as e:
            report.error(loc, join_path(path, f"overhead.{name}"), str(e))


def check_scheduling(spec: PodSpec, path: str, loc: Location, report: Report) -> None:
    """Everything of this module, for a pod spec at ``path`` ("spec" or "spec.template.spec")."""
    check_tolerations(spec, path, loc, report)
    check_affinity(spec, path, loc, report)
    check_topology_spread(spec, path, loc, report)
    check_lifecycle(spec, path, loc, report)
    check_overhead(spec, path, loc, report)
    for i, g in enumerate(spec.scheduling_gates or []):
        if (why := check_label_key(g.name)) is not None:
            report.error(loc, join_path(path, f"schedulingGates[{i}].name"), why)
    if spec.preemption_policy is not None and spec.preemption_policy not in ("PreemptLowerPriority", "Never"):
        report.error(loc, join_path(path, "preemptionPolicy"), _supported(("PreemptLowerPriority", "Never")))
