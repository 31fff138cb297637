"""Semantic checks of pods and of the workloads that template them (Deployment, ReplicaSet)."""
from __future__ import annotations

import re
from typing import Optional, Union

from netemu.spec.autoscaling import check_container_resources
from netemu.spec.defaults import pod_addresses, pod_bits
from netemu.spec.errors import Location, Report, join_path
from netemu.spec.models import (
    Container, Deployment, Lab, LabelSelector, Pod, PodSpec, PodTemplateSpec, Probe, ReplicaSet,
)
from netemu.spec.rules import check_dns_label, check_label_key, check_label_value, check_port, check_port_name
from netemu.wellknown import JOB_UID_LABEL

IntOrString = Union[int, str]
_PERCENT = re.compile(r"^\d+%$")

# kube-system's mirror and kube-proxy pods (netemu.control.kubeadm): the control process is their
# program and they share their node's network; user pods cannot
CONTROL_PROCESS_ANNOTATION = "netemu.dev/run-by"
HOST_NETWORK_UNSUPPORTED = ("hostNetwork: true is not supported for pods here: every pod gets a network namespace "
                            "of its own (a node's namespace holds its address and kube-proxy's rules); remove it "
                            "and reach the pod through its own IP or a Service")


def is_control_process_pod(pod: Pod) -> bool:
    return (pod.metadata.annotations or {}).get(CONTROL_PROCESS_ANNOTATION) == "control-process"


def pod_capacity(lab: Lab) -> tuple[int, str]:
    """How many pods the lab can ever hold at once: every node's pod subnet (a /nodePodPrefix of podCIDR)
    without its network, bridge and broadcast addresses; and that reason in words."""
    spec = lab.spec
    nodes = len(spec.nodes or [])
    per_node = pod_addresses(spec.node_pod_prefix, pod_bits(spec))
    return nodes * per_node, (f"the lab's {nodes} node{'s' * (nodes != 1)} hold at most {nodes * per_node} pods: "
                              f"one /{spec.node_pod_prefix} of podCIDR {spec.pod_cidr} each (spec.nodePodPrefix), "
                              f"{per_node} pod addresses per node")


# --------------------------------------------------------------------------- labels and selectors
def check_labels(labels: Optional[dict[str, str]], path: str, loc: Location, report: Report) -> None:
    for key, value in (labels or {}).items():
        if (why := check_label_key(key)) is not None:
            report.error(loc, path, f"key {key!r} {why}")
        if (why := check_label_value(str(value))) is not None:
            report.error(loc, join_path(path, _key(key)), f"value {value!r} {why}")


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'["{key}"]'


def selector_matches(selector: LabelSelector, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.match_labels or {}).items()):
        return False
    for req in selector.match_expressions or []:
        present, value = req.key in labels, labels.get(req.key)
        ok = {"In": present and value in (req.values or []),
              "NotIn": not present or value not in (req.values or []),
              "Exists": present,
              "DoesNotExist": not present}[req.operator]
        if not ok:
            return False
    return True


def check_selector(selector: LabelSelector, path: str, loc: Location, report: Report) -> bool:
    """Syntax of a label selector; False when it is empty (which selects everything)."""
    check_labels(selector.match_labels, join_path(path, "matchLabels"), loc, report)
    for i, req in enumerate(selector.match_expressions or []):
        rpath = join_path(path, f"matchExpressions[{i}]")
        if (why := check_label_key(req.key)) is not None:
            report.error(loc, join_path(rpath, "key"), why)
        if req.operator in ("In", "NotIn") and not req.values:
            report.error(loc, join_path(rpath, "values"), f"must be non-empty for operator {req.operator}")
        if req.operator in ("Exists", "DoesNotExist") and req.values:
            report.error(loc, join_path(rpath, "values"), f"must be empty for operator {req.operator}")
    return bool(selector.match_labels or selector.match_expressions)


# --------------------------------------------------------------------------- pods
def check_pod_spec(spec: PodSpec, path: str, loc: Location, report: Report, *, node_names: list[str],
                   host_network_ok: bool = False) -> None:
    if spec.host_network and not host_network_ok:
        report.lab_refuses(loc, join_path(path, "hostNetwork"), HOST_NETWORK_UNSUPPORTED)
    for field, value in (("hostname", spec.hostname), ("subdomain", spec.subdomain)):
        if value and (why := check_dns_label(value)) is not None:
            report.error(loc, join_path(path, field), why)
    if not spec.containers:
        report.error(loc, join_path(path, "containers"), "must have at least one container")
    seen: dict[str, str] = {}
    groups = (("containers", spec.containers), ("initContainers", spec.init_containers or []))
    for group, containers in groups:
        for i, c in enumerate(containers):
            cpath = join_path(path, f"{group}[{i}]")
            if c.name in seen:
                report.error(loc, join_path(cpath, "name"),
                             f"duplicate container name {c.name!r} (also {seen[c.name]})")
            seen.setdefault(c.name, cpath)
            _check_container(c, cpath, loc, report)
    if spec.termination_grace_period_seconds is not None and spec.termination_grace_period_seconds < 0:
        report.error(loc, join_path(path, "terminationGracePeriodSeconds"),
                     f"must be >= 0, got {spec.termination_grace_period_seconds}")
    check_labels(spec.node_selector, join_path(path, "nodeSelector"), loc, report)
    from netemu.spec.validate_scheduling import check_scheduling

    check_scheduling(spec, path, loc, report)
    from netemu.spec.validate_security import check_security

    check_security(spec, path, loc, report)
    if spec.node_name and node_names and spec.node_name not in node_names:
        report.warn(loc, join_path(path, "nodeName"),
                    f"no node {spec.node_name!r} in this lab (nodes: {', '.join(node_names)}): the pod stays Pending")


def _check_container(c: Container, path: str, loc: Location, report: Report) -> None:
    if (why := check_dns_label(c.name)) is not None:
        report.error(loc, join_path(path, "name"), why)
    if not c.image:
        report.error(loc, join_path(path, "image"), "required field is missing")
    port_names: set[str] = set()
    for i, p in enumerate(c.ports or []):
        ppath = join_path(path, f"ports[{i}]")
        if (why := check_port(p.container_port)) is not None:
            report.error(loc, join_path(ppath, "containerPort"), why)
        if p.host_port is not None and (why := check_port(p.host_port)) is not None:
            report.error(loc, join_path(ppath, "hostPort"), why)
        if p.name is not None:
            if (why := check_port_name(p.name)) is not None:
                report.error(loc, join_path(ppath, "name"), why)
            elif p.name in port_names:
                report.error(loc, join_path(ppath, "name"), f"duplicate port name {p.name!r}")
            port_names.add(p.name)
    for i, env in enumerate(c.env or []):
        if env.value is not None and env.value_from is not None:
            report.error(loc, join_path(path, f"env[{i}]"), "may not have both value and valueFrom")
    for field, probe in (("readinessProbe", c.readiness_probe), ("livenessProbe", c.liveness_probe),
                         ("startupProbe", c.startup_probe)):
        if probe is not None:
            _check_probe(probe, join_path(path, field), field, port_names, loc, report)
    check_container_resources(c, path, loc, report)


def _check_probe(p: Probe, path: str, field: str, port_names: set[str], loc: Location, report: Report) -> None:
    handlers = [name for name, h in (("httpGet", p.http_get), ("tcpSocket", p.tcp_socket), ("exec", p.exec))
                if h is not None]
    if len(handlers) != 1:
        report.error(loc, path, "must have exactly one handler of httpGet, tcpSocket or exec"
                     + (f", got {' and '.join(handlers)}" if handlers else ", got none"))
    for name, action in (("httpGet", p.http_get), ("tcpSocket", p.tcp_socket)):
        if action is None:
            continue
        ppath = join_path(path, f"{name}.port")
        if isinstance(action.port, int):
            if (why := check_port(action.port)) is not None:
                report.error(loc, ppath, why)
        elif action.port.isdigit():
            report.error(loc, ppath, f"must be a number or a port name, got the string {action.port!r} (unquote it)")
        elif action.port not in port_names:
            known = ", ".join(sorted(port_names)) or "none"
            report.error(loc, ppath, f"no container port named {action.port!r} (named ports: {known})")
    if p.exec is not None and not p.exec.command:
        report.error(loc, join_path(path, "exec.command"), "must not be empty")
    minimums = (("initialDelaySeconds", p.initial_delay_seconds, 0), ("periodSeconds", p.period_seconds, 1),
                ("timeoutSeconds", p.timeout_seconds, 1), ("failureThreshold", p.failure_threshold, 1),
                ("successThreshold", p.success_threshold, 1))
    for name, value, low in minimums:
        if value is not None and value < low:
            report.error(loc, join_path(path, name), f"must be >= {low}, got {value}")
    if field != "readinessProbe" and p.success_threshold not in (None, 1):
        report.error(loc, join_path(path, "successThreshold"), f"must be 1 for a {field}, got {p.success_threshold}")


# --------------------------------------------------------------------------- workloads
def _show_labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in labels.items()) + "}"


def _check_template(template: PodTemplateSpec, selector: LabelSelector, loc: Location, report: Report,
                    node_names: list[str], restart_policies: tuple[str, ...] = ("Always",),
                    host_network_ok: bool = False) -> None:
    labels = template.metadata.labels or {}
    check_labels(labels, "spec.template.metadata.labels", loc, report)
    if check_selector(selector, "spec.selector", loc, report):
        if not selector_matches(selector, labels):
            want = _show_labels(selector.match_labels or {}) if selector.match_labels else "its matchExpressions"
            report.error(loc, "spec.template.metadata.labels",
                         f"{_show_labels(labels)} do not match spec.selector ({want}): "
                         "the workload would never find its own pods")
    else:
        report.error(loc, "spec.selector", "must not be empty: give matchLabels (usually the template's labels)")
    check_pod_spec(template.spec, "spec.template.spec", loc, report, node_names=node_names,
                   host_network_ok=host_network_ok)
    if restart_policies == ("Always",):
        if template.spec.restart_policy not in (None, "Always"):
            report.error(loc, "spec.template.spec.restartPolicy",
                         f"must be Always for a workload's pods, got {template.spec.restart_policy!r}")
    elif template.spec.restart_policy not in restart_policies:
        report.error(loc, "spec.template.spec.restartPolicy",
                     "supported values: " + ", ".join(f'"{p}"' for p in restart_policies))


def _check_int_or_percent(value: IntOrString, path: str, loc: Location, report: Report) -> Optional[int]:
    """An absolute number or a percentage; returns the number (percent as-is) or None if invalid."""
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and _PERCENT.match(value):
        return int(value[:-1])
    report.error(loc, path, f"must be a number >= 0 or a percentage like '25%', got {value!r}")
    return None


def check_workload(obj: Union[Deployment, ReplicaSet], loc: Location, report: Report, node_names: list[str],
                   capacity: Optional[tuple[int, str]] = None) -> None:
    spec = obj.spec
    if spec.replicas is not None and spec.replicas < 0:
        report.error(loc, "spec.replicas", f"must be >= 0, got {spec.replicas}")
    elif spec.replicas is not None and capacity is not None and spec.replicas > capacity[0]:
        report.lab_refuses(loc, "spec.replicas", f"{spec.replicas} pods can never run here: {capacity[1]} "
                           "(give the Lab a larger podCIDR or a smaller nodePodPrefix, or more nodes)")
    if spec.min_ready_seconds is not None and spec.min_ready_seconds < 0:
        report.error(loc, "spec.minReadySeconds", f"must be >= 0, got {spec.min_ready_seconds}")
    _check_template(spec.template, spec.selector, loc, report, node_names)
    if isinstance(obj, Deployment):
        _check_deployment_extras(obj, loc, report)


def _check_deployment_extras(d: Deployment, loc: Location, report: Report) -> None:
    spec = d.spec
    for name, value in (("revisionHistoryLimit", spec.revision_history_limit),
                        ("progressDeadlineSeconds", spec.progress_deadline_seconds)):
        if value is not None and value < 0:
            report.error(loc, f"spec.{name}", f"must be >= 0, got {value}")
    if (spec.progress_deadline_seconds is not None and spec.min_ready_seconds is not None
            and spec.progress_deadline_seconds <= spec.min_ready_seconds):
        report.error(loc, "spec.progressDeadlineSeconds", "must be greater than minReadySeconds")
    strategy = spec.strategy
    if strategy is None:
        return
    if strategy.type == "Recreate" and strategy.rolling_update:
        report.error(loc, "spec.strategy.rollingUpdate", "may not be given when strategy type is Recreate")
    if strategy.type == "RollingUpdate" and strategy.rolling_update:
        got: dict[str, Optional[int]] = {}
        for key in ("maxSurge", "maxUnavailable"):
            if key in strategy.rolling_update:
                got[key] = _check_int_or_percent(strategy.rolling_update[key], f"spec.strategy.rollingUpdate.{key}",
                                                 loc, report)
        if got.get("maxSurge") == 0 and got.get("maxUnavailable") == 0:
            report.error(loc, "spec.strategy.rollingUpdate", "maxSurge and maxUnavailable may not both be 0")
        unavailable = strategy.rolling_update.get("maxUnavailable")
        if isinstance(unavailable, str) and got.get("maxUnavailable") is not None and got["maxUnavailable"] > 100:
            report.error(loc, "spec.strategy.rollingUpdate.maxUnavailable", "must not be more than 100%")



# --------------------------------------------------------------------------- DaemonSet, Job, PodDisruptionBudget
def _required(value, path: str, loc: Location, report: Report) -> bool:
    if value is None:
        report.error(loc, path, "required field is missing")
        return False
    return True


def check_daemonset(ds, loc: Location, report: Report, node_names: list[str]) -> None:
    spec = ds.spec
    ok = _required(spec.selector, "spec.selector", loc, report)
    ok = _required(spec.template, "spec.template", loc, report) and ok
    if ok:
        # hostNetwork is warned about, not refused: upstream installers (MetalLB's speaker) apply whole,
        # and the DaemonSet controller says what becomes of such pods
        _check_template(spec.template, spec.selector, loc, report, node_names, host_network_ok=True)
        if spec.template.spec.host_network:
            report.warn(loc, "spec.template.spec.hostNetwork", "pods here have a network namespace of their own: "
                        "the lab runs such a DaemonSet's pods only for add-ons whose work it does itself "
                        "(MetalLB's speaker); others get no pods")
    if spec.min_ready_seconds is not None and spec.min_ready_seconds < 0:
        report.error(loc, "spec.minReadySeconds", f"must be >= 0, got {spec.min_ready_seconds}")
    st = spec.update_strategy
    if st is None:
        return
    if st.type not in (None, "RollingUpdate", "OnDelete"):
        report.error(loc, "spec.updateStrategy.type", 'supported values: "OnDelete", "RollingUpdate"')
    ru = st.rolling_update
    if ru is not None:
        got = {}
        for key, v in (("maxUnavailable", ru.max_unavailable), ("maxSurge", ru.max_surge)):
            if v is not None:
                got[key] = _check_int_or_percent(v, f"spec.updateStrategy.rollingUpdate.{key}", loc, report)
        if got.get("maxUnavailable") == 0 and got.get("maxSurge") == 0:
            report.error(loc, "spec.updateStrategy.rollingUpdate.maxUnavailable", "may not be 0 when `maxSurge` is 0")


def check_job(job, loc: Location, report: Report, node_names: list[str]) -> None:
    spec = job.spec
    if not _required(spec.template, "spec.template", loc, report):
        return
    for name, v in (("parallelism", spec.parallelism), ("completions", spec.completions),
                    ("backoffLimit", spec.backoff_limit), ("ttlSecondsAfterFinished", spec.ttl_seconds_after_finished)):
        if v is not None and v < 0:
            report.error(loc, f"spec.{name}", "must be greater than or equal to 0")
    if spec.active_deadline_seconds is not None and spec.active_deadline_seconds <= 0:
        report.error(loc, "spec.activeDeadlineSeconds", "must be greater than 0")
    if spec.completion_mode not in (None, "NonIndexed", "Indexed"):
        report.error(loc, "spec.completionMode", 'supported values: "NonIndexed", "Indexed"')
    if spec.completion_mode == "Indexed" and spec.completions is None:
        report.error(loc, "spec.completions", "Required value: when completion mode is Indexed")
    if spec.selector is not None and not spec.manual_selector and not (spec.selector.match_labels or {}).get(
            JOB_UID_LABEL):
        report.error(loc, "spec.selector", "`selector` not auto-generated (set spec.manualSelector: true to give "
                     "one, or leave it out)")
    selector = spec.selector if spec.selector is not None else LabelSelector(
        match_labels=dict(spec.template.metadata.labels or {}) or {"job-name": job.metadata.name or ""})
    labels = spec.template.metadata.labels
    if spec.selector is None:  # the API server adds the selector's labels to the template
        spec.template.metadata.labels = {**(labels or {}), **(selector.match_labels or {})}
    _check_template(spec.template, selector, loc, report, node_names, restart_policies=("OnFailure", "Never"))
    spec.template.metadata.labels = labels


def check_pdb(pdb, loc: Location, report: Report) -> None:
    spec = pdb.spec
    if spec.min_available is not None and spec.max_unavailable is not None:
        report.error(loc, "spec", "minAvailable and maxUnavailable cannot be both set")
    for name, v in (("minAvailable", spec.min_available), ("maxUnavailable", spec.max_unavailable)):
        if v is None:
            continue
        n = _check_int_or_percent(v, f"spec.{name}", loc, report)
        if n is not None and isinstance(v, str) and n > 100:
            report.error(loc, f"spec.{name}", "must not be greater than 100%")
    if spec.selector is not None:
        check_selector(spec.selector, "spec.selector", loc, report)
    if spec.unhealthy_pod_eviction_policy not in (None, "IfHealthyBudget", "AlwaysAllow"):
        report.error(loc, "spec.unhealthyPodEvictionPolicy", 'supported values: "AlwaysAllow", "IfHealthyBudget"')
