"""Server-side printing: the meta.k8s.io/v1 Table that kube-apiserver answers `kubectl get` with.

kubectl (since 1.11) asks for `application/json;as=Table;g=meta.k8s.io;v=v1` and prints the cells it
gets back, so the columns, their order and the cell texts are decided here, the way Kubernetes 1.32
decides them:

* built-in kinds: the printers of pkg/printers/internalversion/printers.go. The server always calls
  them with Wide=true, so every row carries every cell; kubectl hides the columns of priority > 0
  unless `-o wide`.
* kinds served from a CustomResourceDefinition: the CRD's additionalPrinterColumns (apiextensions'
  tableconvertor), or a single `Age` column when it declares none. MetalLB's kinds are built into
  the lab but a real cluster serves them from MetalLB's CRDs, so they print MetalLB's columns.
* anything else: the generic server's default table, `Name` and `Created At` (RFC 3339).

Objects are the JSON dicts the API serves. Where a real API server would have defaulted a field on
write (a Deployment's replicas, a Service's type, a CronJob's suspend, ...) the printers assume that
default, so a lab object that lacks it prints as the defaulted object would on a real cluster.
"""
from __future__ import annotations

import calendar
import copy
import json
import math
import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Optional

from netemu.spec import registry
from netemu.wellknown import NODE_ROLE_PREFIX

TABLE_API_VERSION = "meta.k8s.io/v1"

# metav1.ObjectMeta's swagger text for the two columns every table has
_NAME_DOC = ("Name must be unique within a namespace. Is required when creating resources, although some "
             "resources may allow a client to request the generation of an appropriate name automatically. "
             "Name is primarily intended for creation idempotence and configuration definition. Cannot be "
             "updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names")
_AGE_DOC = ("CreationTimestamp is a timestamp representing the server time when this object was created. It "
            "is not guaranteed to be set in happens-before order across separate operations. Clients may not "
            "set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. "
            "Read-only. Null for lists. More info: "
            "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata")


# --------------------------------------------------------------------------------- time
def service_ports(svc: dict) -> str:
    """makePortString plus "<none>", exactly: `80:30000/TCP,443/TCP`."""
    out = []
    for p in (svc.get("spec") or {}).get("ports") or []:
        s = str(p["port"])
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        out.append(f"{s}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration, with the "<invalid>" of a clock skewed by 2s or more and
    the `3y120d` form between 2 and 8 years."""
    s = math.trunc(seconds)  # Go's int(d.Seconds()) truncates toward zero
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y{dy}d" if dy else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


_RFC3339 = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)$")


def parse_time(s: Any) -> Optional[float]:
    """An RFC 3339 time (metav1.Time, or a MicroTime's `.000000Z`, or with an offset) as epoch seconds;
    None for unset; ValueError for anything else."""
    if not s or not isinstance(s, str):
        return None
    m = _RFC3339.match(s.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 time: {s!r}")
    y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
    t = float(calendar.timegm((y, mo, d, h, mi, sec, 0, 0, 0)))
    if m.group(7):
        t += float("0" + m.group(7))
    tz = m.group(8)
    if tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        t -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return t


def _t(s: Any) -> Optional[float]:
    try:
        return parse_time(s)
    except ValueError:
        return None  # a malformed stored time prints as unset rather than failing the whole list


def since(ts: Any, now: float) -> str:
    """translateTimestampSince: "<unknown>" for an unset time."""
    t = _t(ts)
    return "<unknown>" if t is None else human_duration(now - t)


def _age(obj: dict, now: float) -> str:
    return since(_meta(obj).get("creationTimestamp"), now)


def _rfc3339(t: Optional[float]) -> str:
    """time.Time.UTC().Format(time.RFC3339); the zero time for unset, as Go prints it."""
    if t is None:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(math.floor(t), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------- helpers
def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _name(obj: dict) -> str:
    return _meta(obj).get("name") or ""


def _spec(obj: dict) -> dict:
    return obj.get("spec") or {}


def _status(obj: dict) -> dict:
    return obj.get("status") or {}


def _col(name: str, type_: str = "string", desc: str = "", priority: int = 0, fmt: str = "") -> dict:
    return {"name": name, "type": type_, "format": fmt, "description": desc, "priority": priority}


def _name_col() -> dict:
    return _col("Name", fmt="name", desc=_NAME_DOC)


def _age_col() -> dict:
    return _col("Age", desc=_AGE_DOC)


def format_labels(m: Optional[dict]) -> str:
    """labels.FormatLabels: sorted `k=v` pairs, "<none>" when empty."""
    return ",".join(sorted(f"{k}={v}" for k, v in (m or {}).items())) or "<none>"


def selector_string(sel: Optional[dict]) -> str:
    """LabelSelectorAsSelector(sel).String(): requirements sorted by key, values sorted, "" for
    a nil or empty selector."""
    if not sel:
        return ""
    reqs: list[tuple[str, str]] = []
    for k, v in (sel.get("matchLabels") or {}).items():
        reqs.append((k, f"{k}={v}"))
    for e in sel.get("matchExpressions") or []:
        key, op, values = e.get("key", ""), e.get("operator"), sorted(e.get("values") or [])
        if op == "In":
            text = f"{key} in ({','.join(values)})"
        elif op == "NotIn":
            text = f"{key} notin ({','.join(values)})"
        elif op == "Exists":
            text = key
        elif op == "DoesNotExist":
            text = "!" + key
        else:
            return "<invalid>"
        reqs.append((key, text))
    return ",".join(text for _, text in sorted(reqs, key=lambda r: r[0]))


def format_label_selector(sel: Optional[dict]) -> str:
    """metav1.FormatLabelSelector: the selector string, "<none>" when empty."""
    s = selector_string(sel)
    return s or "<none>"


def _containers(template: Optional[dict]) -> tuple[str, str]:
    """layoutContainerCells: container names and images, comma separated."""
    cs = ((template or {}).get("spec") or {}).get("containers") or []
    return ",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)


def _quantity(q: Any) -> str:
    """resource.Quantity.String() (canonical form) for what a printer shows as a quantity."""
    if q is None:
        return "0"
    try:
        from netemu.spec.autoscaling import format_quantity

        return format_quantity(q)
    except (ValueError, ImportError):
        return str(q)


def _int(v: Any, default: int = 0) -> int:
    if isinstance(v, bool) or v is None:
        return default
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _int_or_string(v: Any) -> str:
    return str(v)


def _cond(conds: Optional[list], type_: str) -> Optional[dict]:
    for c in conds or []:
        if c.get("type") == type_:
            return c
    return None


def _more(items: list[str], count: int, max_: int = 3, empty: str = "<unset>") -> str:
    """listWithMoreString."""
    ret = ",".join(items)
    if count > max_:
        return f"{ret} + {count - max_} more..."
    return ret or empty


def _join_host_port(host: str, port: Any) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------------- Pod
def _restartable(container: Optional[dict]) -> bool:
    """podutil.IsRestartableInitContainer: a sidecar (init container with restartPolicy Always)."""
    return bool(container) and container.get("restartPolicy") == "Always"


def _finished_at(cs: dict) -> Optional[float]:
    return _t(((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))


def pod_cells(pod: dict, now: float) -> list:
    """printPod, 1.32: Name, Ready, Status, Restarts, Age, IP, Node, Nominated Node, Readiness Gates."""
    spec, st, meta = _spec(pod), _status(pod), _meta(pod)
    restarts = 0
    sidecar_restarts = 0
    total = len(spec.get("containers") or [])
    ready = 0
    last_restart: Optional[float] = None
    last_sidecar_restart: Optional[float] = None

    phase = st.get("phase") or "Pending"  # the API server sets Pending on create
    reason = st.get("reason") or phase
    for c in st.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    inits = {c.get("name"): c for c in spec.get("initContainers") or []}
    total += sum(1 for c in inits.values() if _restartable(c))

    def later(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return b if b is not None and (a is None or a < b) else a

    initializing = False
    init_statuses = st.get("initContainerStatuses") or []
    for i, cs in enumerate(init_statuses):
        restarts += _int(cs.get("restartCount"))
        last_restart = later(last_restart, _finished_at(cs))
        sidecar = _restartable(inits.get(cs.get("name")))
        if sidecar:
            sidecar_restarts += _int(cs.get("restartCount"))
            last_sidecar_restart = later(last_sidecar_restart, _finished_at(cs))
        state = cs.get("state") or {}
        term, wait = state.get("terminated"), state.get("waiting")
        if term is not None and _int(term.get("exitCode")) == 0:
            continue
        if sidecar and cs.get("started"):
            if cs.get("ready"):
                ready += 1
            continue
        if term is not None:
            if not term.get("reason"):
                reason = (f"Init:Signal:{term['signal']}" if _int(term.get("signal"))
                          else f"Init:ExitCode:{_int(term.get('exitCode'))}")
            else:
                reason = "Init:" + term["reason"]
        elif wait is not None and wait.get("reason") and wait["reason"] != "PodInitializing":
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        initializing = True
        break  # the first init container that has not finished decides

    initialized = (_cond(st.get("conditions"), "Initialized") or {}).get("status") == "True"
    if not initializing or initialized:
        # restarts of finished (non-sidecar) init containers no longer count
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        has_running = False
        for cs in reversed(st.get("containerStatuses") or []):  # the first container's state wins
            restarts += _int(cs.get("restartCount"))
            last_restart = later(last_restart, _finished_at(cs))
            state = cs.get("state") or {}
            wait, term = state.get("waiting"), state.get("terminated")
            if wait is not None and wait.get("reason"):
                reason = wait["reason"]
            elif term is not None and term.get("reason"):
                reason = term["reason"]
            elif term is not None:
                reason = (f"Signal:{term['signal']}" if _int(term.get("signal"))
                          else f"ExitCode:{_int(term.get('exitCode'))}")
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            pod_ready = (_cond(st.get("conditions"), "Ready") or {}).get("status") == "True"
            reason = "Running" if pod_ready else "NotReady"

    if meta.get("deletionTimestamp") and st.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_str = str(restarts)
    if restarts and last_restart is not None:
        restarts_str = f"{restarts} ({human_duration(now - last_restart)} ago)"

    ips = st.get("podIPs") or []
    pod_ip = (ips[0].get("ip") if ips else st.get("podIP")) or "<none>"
    gates = "<none>"
    if spec.get("readinessGates"):
        true = 0
        for gate in spec["readinessGates"]:
            c = _cond(st.get("conditions"), gate.get("conditionType"))
            if c is not None and c.get("status") == "True":
                true += 1
        gates = f"{true}/{len(spec['readinessGates'])}"
    return [_name(pod), f"{ready}/{total}", reason, restarts_str, _age(pod, now),
            pod_ip, spec.get("nodeName") or "<none>", st.get("nominatedNodeName") or "<none>", gates]


def pod_row_conditions(pod: dict) -> Optional[list]:
    """The row conditions printPod sets for finished pods."""
    phase = _status(pod).get("phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "Succeeded",
                 "message": "The pod has completed successfully."}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]
    return None


# --------------------------------------------------------------------------------- workloads
def _replicas(spec: dict) -> int:
    return _int(spec.get("replicas"), 1)  # the API server defaults replicas to 1


def deployment_cells(d: dict, now: float) -> list:
    spec, st = _spec(d), _status(d)
    names, images = _containers(spec.get("template"))
    return [_name(d), f"{_int(st.get('readyReplicas'))}/{_replicas(spec)}", _int(st.get("updatedReplicas")),
            _int(st.get("availableReplicas")), _age(d, now), names, images, selector_string(spec.get("selector"))]


def replicaset_cells(rs: dict, now: float) -> list:
    spec, st = _spec(rs), _status(rs)
    names, images = _containers(spec.get("template"))
    return [_name(rs), _replicas(spec), _int(st.get("replicas")), _int(st.get("readyReplicas")), _age(rs, now),
            names, images, format_label_selector(spec.get("selector"))]


def rc_cells(rc: dict, now: float) -> list:
    spec, st = _spec(rc), _status(rc)
    names, images = _containers(spec.get("template"))
    return [_name(rc), _replicas(spec), _int(st.get("replicas")), _int(st.get("readyReplicas")), _age(rc, now),
            names, images, format_labels(spec.get("selector"))]


def daemonset_cells(ds: dict, now: float) -> list:
    spec, st = _spec(ds), _status(ds)
    names, images = _containers(spec.get("template"))
    node_sel = ((spec.get("template") or {}).get("spec") or {}).get("nodeSelector")
    return [_name(ds), _int(st.get("desiredNumberScheduled")), _int(st.get("currentNumberScheduled")),
            _int(st.get("numberReady")), _int(st.get("updatedNumberScheduled")), _int(st.get("numberAvailable")),
            format_labels(node_sel), _age(ds, now), names, images, format_label_selector(spec.get("selector"))]


def statefulset_cells(ss: dict, now: float) -> list:
    spec, st = _spec(ss), _status(ss)
    names, images = _containers(spec.get("template"))
    return [_name(ss), f"{_int(st.get('readyReplicas'))}/{_replicas(spec)}", _age(ss, now), names, images]


def job_cells(job: dict, now: float) -> list:
    spec, st, meta = _spec(job), _status(job), _meta(job)
    succeeded = _int(st.get("succeeded"))
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{_int(spec['completions'])}"
    else:
        parallelism = _int(spec.get("parallelism"))
        completions = f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"
    start, done = _t(st.get("startTime")), _t(st.get("completionTime"))
    duration = "" if start is None else human_duration((now if done is None else done) - start)
    conds = st.get("conditions")

    def has(t: str) -> bool:
        c = _cond(conds, t)
        return c is not None and c.get("status") == "True"

    if has("Complete"):
        status = "Complete"
    elif has("Failed"):
        status = "Failed"
    elif meta.get("deletionTimestamp"):
        status = "Terminating"
    elif has("Suspended"):
        status = "Suspended"
    elif has("FailureTarget"):
        status = "FailureTarget"
    else:
        status = "Running"
    names, images = _containers(spec.get("template"))
    return [_name(job), status, completions, duration, _age(job, now), names, images,
            format_label_selector(spec.get("selector"))]


def cronjob_cells(cj: dict, now: float) -> list:
    spec, st = _spec(cj), _status(cj)
    last = "<none>" if not st.get("lastScheduleTime") else since(st["lastScheduleTime"], now)
    suspend = spec.get("suspend", False)  # defaulted to false by the API server
    jt = (spec.get("jobTemplate") or {}).get("spec") or {}
    names, images = _containers(jt.get("template"))
    return [_name(cj), spec.get("schedule", ""), spec.get("timeZone") or "<none>",
            "<unset>" if suspend is None else ("True" if suspend else "False"),
            len(st.get("active") or []), last, _age(cj, now), names, images,
            format_label_selector(jt.get("selector"))]


def pod_template_cells(pt: dict, now: float) -> list:
    tmpl = pt.get("template") or {}
    names, images = _containers(tmpl)
    return [_name(pt), names, images, format_labels((tmpl.get("metadata") or {}).get("labels"))]


def controller_revision_cells(cr: dict, now: float) -> list:
    controller = "<none>"
    for ref in _meta(cr).get("ownerReferences") or []:
        if ref.get("controller"):
            group = (ref.get("apiVersion") or "").rpartition("/")[0]
            gk = f"{ref.get('kind', '')}.{group}" if group else ref.get("kind", "")
            controller = f"{gk.lower()}/{ref.get('name', '')}" if gk else ref.get("name", "")
            break
    return [_name(cr), controller, _int(cr.get("revision")), _age(cr, now)]


# --------------------------------------------------------------------------------- services
def _lb_ingress(status: dict) -> list[str]:
    """loadBalancerStatusStringer with wide=true (the server never clips): sorted, unique."""
    out = set()
    for ing in (status.get("loadBalancer") or {}).get("ingress") or []:
        if ing.get("ip"):
            out.add(ing["ip"])
        elif ing.get("hostname"):
            out.add(ing["hostname"])
    return sorted(out)


def service_external_ip(svc: dict) -> str:
    """getServiceExternalIP."""
    spec = _spec(svc)
    stype = spec.get("type") or "ClusterIP"
    ext = list(spec.get("externalIPs") or [])
    if stype in ("ClusterIP", "NodePort"):
        return ",".join(ext) if ext else "<none>"
    if stype == "LoadBalancer":
        lb = _lb_ingress(_status(svc))
        if ext:
            return ",".join(lb + ext)
        return ",".join(lb) if lb else "<pending>"
    if stype == "ExternalName":
        return spec.get("externalName", "")
    return "<unknown>"


def service_cells(svc: dict, now: float) -> list:
    spec = _spec(svc)
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [_name(svc), spec.get("type") or "ClusterIP", ips[0] if ips else "<none>", service_external_ip(svc),
            service_ports(svc), _age(svc, now), format_labels(spec.get("selector"))]


def endpoints_text(ep: dict) -> str:
    """formatEndpoints: ready addresses of every port, the first three then `+ N more...`."""
    subsets = ep.get("subsets") or []
    if not subsets:
        return "<none>"
    out: list[str] = []
    max_, more, count = 3, False, 0
    for ss in subsets:
        addrs = ss.get("addresses") or []
        ports = ss.get("ports") or []
        if not ports:
            count += len(addrs)  # headless services may have no ports
            for a in addrs:
                if len(out) == max_:
                    more = True
                    break
                out.append(a.get("ip", ""))
            continue
        for port in ports:
            count += len(addrs)
            for a in addrs:
                if len(out) == max_:
                    more = True
                    break
                out.append(_join_host_port(a.get("ip", ""), port.get("port")))
    ret = ",".join(out)
    return f"{ret} + {count - max_} more..." if more else ret


def endpoints_cells(ep: dict, now: float) -> list:
    return [_name(ep), endpoints_text(ep), _age(ep, now)]


def endpointslice_cells(s: dict, now: float) -> list:
    ports = s.get("ports") or []
    shown = []
    for p in ports[:3]:
        if p.get("port") is not None:
            shown.append(str(p["port"]))
        elif p.get("name") is not None:
            shown.append(p["name"])
        else:
            shown.append("*")
    addrs = [a for ep in s.get("endpoints") or [] for a in ep.get("addresses") or []]
    return [_name(s), s.get("addressType", ""), _more(shown, len(ports)), _more(addrs[:3], len(addrs)),
            _age(s, now)]


def ingress_hosts(rules: list) -> str:
    """formatHosts."""
    out: list[str] = []
    max_, more = 3, False
    for rule in rules:
        if len(out) == max_:
            more = True
        if not more and rule.get("host"):
            out.append(rule["host"])
    if not out:
        return "*"
    ret = ",".join(out)
    return f"{ret} + {len(rules) - max_} more..." if more else ret


def ingress_cells(ing: dict, now: float) -> list:
    spec = _spec(ing)
    return [_name(ing), spec.get("ingressClassName") or "<none>", ingress_hosts(spec.get("rules") or []),
            ",".join(_lb_ingress(_status(ing))), "80, 443" if spec.get("tls") else "80", _age(ing, now)]


def ingress_class_cells(ic: dict, now: float) -> list:
    spec = _spec(ic)
    params = "<none>"
    p = spec.get("parameters")
    if p:
        params = p.get("kind", "") + (f".{p['apiGroup']}" if p.get("apiGroup") else "") + "/" + p.get("name", "")
    return [_name(ic), spec.get("controller", ""), params, _age(ic, now)]


def network_policy_cells(np_: dict, now: float) -> list:
    return [_name(np_), format_label_selector(_spec(np_).get("podSelector") or {}), _age(np_, now)]


# --------------------------------------------------------------------------------- cluster
def node_cells(node: dict, now: float) -> list:
    st, spec = _status(node), _spec(node)
    ready = _cond(st.get("conditions"), "Ready")
    status = ["Unknown"] if ready is None else ["Ready" if ready.get("status") == "True" else "NotReady"]
    if spec.get("unschedulable"):
        status.append("SchedulingDisabled")
    roles = set()
    for k, v in (_meta(node).get("labels") or {}).items():
        if k.startswith(NODE_ROLE_PREFIX) and k[len(NODE_ROLE_PREFIX):]:
            roles.add(k[len(NODE_ROLE_PREFIX):])
        elif k == "kubernetes.io/role" and v:
            roles.add(v)
    info = st.get("nodeInfo") or {}

    def address(t: str) -> str:
        return next((a.get("address") for a in st.get("addresses") or [] if a.get("type") == t), "<none>")

    return [_name(node), ",".join(status), ",".join(sorted(roles)) or "<none>", _age(node, now),
            info.get("kubeletVersion", ""), address("InternalIP"), address("ExternalIP"),
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


def namespace_cells(ns: dict, now: float) -> list:
    return [_name(ns), _status(ns).get("phase") or "Active", _age(ns, now)]


def configmap_cells(cm: dict, now: float) -> list:
    return [_name(cm), len(cm.get("data") or {}) + len(cm.get("binaryData") or {}), _age(cm, now)]


def secret_cells(s: dict, now: float) -> list:
    # the API server folds stringData into data on write
    keys = set(s.get("data") or {}) | set(s.get("stringData") or {})
    return [_name(s), s.get("type") or "Opaque", len(keys), _age(s, now)]


def service_account_cells(sa: dict, now: float) -> list:
    return [_name(sa), len(sa.get("secrets") or []), _age(sa, now)]


def component_status_cells(cs: dict, now: float) -> list:
    status, message, error = "Unknown", "", ""
    for c in cs.get("conditions") or []:
        if c.get("type") == "Healthy":
            status = "Healthy" if c.get("status") == "True" else "Unhealthy"
            message, error = c.get("message", ""), c.get("error", "")
            break
    return [_name(cs), status, message, error]


def lease_cells(lease: dict, now: float) -> list:
    return [_name(lease), _spec(lease).get("holderIdentity") or "", _age(lease, now)]


def priority_class_cells(pc: dict, now: float) -> list:
    return [_name(pc), _int(pc.get("value")), bool(pc.get("globalDefault", False)), _age(pc, now),
            pc.get("preemptionPolicy") or "PreemptLowerPriority"]


def runtime_class_cells(rc: dict, now: float) -> list:
    return [_name(rc), rc.get("handler", ""), _age(rc, now)]


def resource_quota_cells(rq: dict, now: float) -> list:
    st = _status(rq)
    hard, used = st.get("hard") or {}, st.get("used") or {}
    req, lim = [], []
    for res in sorted(hard):
        text = f"{res}: {_quantity(used.get(res))}/{_quantity(hard[res])}"
        parts = res.split(".")
        (lim if len(parts) > 1 and parts[0] == "limits" else req).append(text)
    return [_name(rq), ", ".join(req), ", ".join(lim), _age(rq, now)]


def pdb_cells(pdb: dict, now: float) -> list:
    spec = _spec(pdb)
    min_a = "N/A" if spec.get("minAvailable") is None else _int_or_string(spec["minAvailable"])
    max_u = "N/A" if spec.get("maxUnavailable") is None else _int_or_string(spec["maxUnavailable"])
    return [_name(pdb), min_a, max_u, _int(_status(pdb).get("disruptionsAllowed")), _age(pdb, now)]


def _webhook_cells(w: dict, now: float) -> list:
    return [_name(w), len(w.get("webhooks") or []), _age(w, now)]


def csr_cells(csr: dict, now: float) -> list:
    spec, st = _spec(csr), _status(csr)
    types = {c.get("type") for c in st.get("conditions") or []}
    status = "Denied" if "Denied" in types else "Approved" if "Approved" in types else "Pending"
    if "Failed" in types:
        status += ",Failed"
    if st.get("certificate"):
        status += ",Issued"
    dur = "<none>" if spec.get("expirationSeconds") is None else human_duration(_int(spec["expirationSeconds"]))
    return [_name(csr), _age(csr, now), spec.get("signerName") or "<none>", spec.get("username", ""), dur, status]


def flow_schema_cells(fs: dict, now: float) -> list:
    spec = _spec(fs)
    dm = spec.get("distinguisherMethod")
    dangling = _cond(_status(fs).get("conditions"), "Dangling")
    return [_name(fs), (spec.get("priorityLevelConfiguration") or {}).get("name", ""),
            _int(spec.get("matchingPrecedence")), (dm or {}).get("type") if dm else "<none>",
            _age(fs, now), dangling.get("status", "") if dangling else "?"]


def priority_level_cells(pl: dict, now: float) -> list:
    spec = _spec(pl)
    ncs = queues = hand = qll = "<none>"
    limited = spec.get("limited")
    if limited is not None:
        ncs = _int(limited.get("nominalConcurrencyShares"))
        q = (limited.get("limitResponse") or {}).get("queuing")
        if q is not None:
            queues, hand, qll = _int(q.get("queues")), _int(q.get("handSize")), _int(q.get("queueLengthLimit"))
    return [_name(pl), spec.get("type", ""), ncs, queues, hand, qll, _age(pl, now)]


def apiservice_cells(a: dict, now: float) -> list:
    """kube-aggregator's APIService table."""
    svc = _spec(a).get("service")
    service = f"{svc.get('namespace', '')}/{svc.get('name', '')}" if svc else "Local"
    c = _cond(_status(a).get("conditions"), "Available")
    status = "Unknown"
    if c is not None:
        if c.get("status") == "True":
            status = "True"
        elif c.get("reason"):
            status = f"{c.get('status')} ({c['reason']})"
        else:
            status = str(c.get("status"))
    return [_name(a), service, status, _age(a, now)]


# --------------------------------------------------------------------------------- storage
_STORAGE_CLASS_ANN = "volume.beta.kubernetes.io/storage-class"


def _access_modes(modes: Optional[list]) -> str:
    """helper.GetAccessModesAsString."""
    modes = modes or []
    out = [short for mode, short in (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"),
                                     ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")) if mode in modes]
    return ",".join(out)


def pvc_cells(pvc: dict, now: float) -> list:
    spec, st, meta = _spec(pvc), _status(pvc), _meta(pvc)
    phase = "Terminating" if meta.get("deletionTimestamp") else (st.get("phase") or "Pending")
    capacity = access = ""
    if spec.get("volumeName"):
        access = _access_modes(st.get("accessModes"))
        capacity = _quantity((st.get("capacity") or {}).get("storage"))
    klass = (meta.get("annotations") or {}).get(_STORAGE_CLASS_ANN) or spec.get("storageClassName") or ""
    return [_name(pvc), phase, spec.get("volumeName", ""), capacity, access, klass,
            spec.get("volumeAttributesClassName") or "<unset>", _age(pvc, now),
            spec.get("volumeMode") or "Filesystem"]


def pv_cells(pv: dict, now: float) -> list:
    spec, st, meta = _spec(pv), _status(pv), _meta(pv)
    ref = spec.get("claimRef")
    claim = f"{ref.get('namespace', '')}/{ref.get('name', '')}" if ref else ""
    phase = "Terminating" if meta.get("deletionTimestamp") else (st.get("phase") or "Pending")
    klass = (meta.get("annotations") or {}).get(_STORAGE_CLASS_ANN) or spec.get("storageClassName") or ""
    return [_name(pv), _quantity((spec.get("capacity") or {}).get("storage")), _access_modes(spec.get("accessModes")),
            spec.get("persistentVolumeReclaimPolicy") or "Retain", phase, claim, klass,
            spec.get("volumeAttributesClassName") or "<unset>", st.get("reason", ""), _age(pv, now),
            spec.get("volumeMode") or "Filesystem"]


def storage_class_cells(sc: dict, now: float) -> list:
    ann = _meta(sc).get("annotations") or {}
    name = _name(sc)
    if ann.get("storageclass.kubernetes.io/is-default-class") == "true" or \
            ann.get("storageclass.beta.kubernetes.io/is-default-class") == "true":
        name += " (default)"
    return [name, sc.get("provisioner", ""), sc.get("reclaimPolicy") or "Delete",
            sc.get("volumeBindingMode") or "Immediate", bool(sc.get("allowVolumeExpansion", False)), _age(sc, now)]


def csi_driver_cells(d: dict, now: float) -> list:
    spec = _spec(d)
    tokens = spec.get("tokenRequests")
    modes = spec.get("volumeLifecycleModes")
    if modes is None:
        modes = ["Persistent"]  # the API server's default
    return [_name(d), bool(spec.get("attachRequired", True)), bool(spec.get("podInfoOnMount", False)),
            bool(spec.get("storageCapacity", False)),
            "<unset>" if tokens is None else ",".join(t.get("audience", "") for t in tokens),
            bool(spec.get("requiresRepublish", False)), ",".join(modes) or "<none>", _age(d, now)]


# --------------------------------------------------------------------------------- rbac
def _subjects(subjects: Optional[list]) -> tuple[str, str, str]:
    users, groups, sas = [], [], []
    for s in subjects or []:
        if s.get("kind") == "ServiceAccount":
            sas.append(f"{s.get('namespace', '')}/{s.get('name', '')}")
        elif s.get("kind") == "User":
            users.append(s.get("name", ""))
        elif s.get("kind") == "Group":
            groups.append(s.get("name", ""))
    return ", ".join(users), ", ".join(groups), ", ".join(sas)


def role_binding_cells(rb: dict, now: float) -> list:
    ref = rb.get("roleRef") or {}
    return [_name(rb), f"{ref.get('kind', '')}/{ref.get('name', '')}", _age(rb, now), *_subjects(rb.get("subjects"))]


# --------------------------------------------------------------------------------- events
def _event_view(ev: dict, group: str) -> dict:
    """An events.k8s.io/v1 Event in core/v1's field names (both are one internal type upstream)."""
    if group != "events.k8s.io":
        return ev
    return {
        "metadata": ev.get("metadata") or {}, "type": ev.get("type", ""), "reason": ev.get("reason", ""),
        "message": ev.get("note", ""), "involvedObject": ev.get("regarding") or {},
        "source": ev.get("deprecatedSource") or {}, "firstTimestamp": ev.get("deprecatedFirstTimestamp"),
        "lastTimestamp": ev.get("deprecatedLastTimestamp"), "count": ev.get("deprecatedCount"),
        "eventTime": ev.get("eventTime"), "series": ev.get("series"),
        "reportingComponent": ev.get("reportingController", ""), "reportingInstance": ev.get("reportingInstance", ""),
    }


def event_cells(ev: dict, now: float) -> list:
    """printEvent: Last Seen, Type, Reason, Object, Subobject, Source, Message, First Seen, Count, Name."""
    first_t = _t(ev.get("firstTimestamp"))
    first = since(ev.get("eventTime"), now) if first_t is None else human_duration(now - first_t)
    last_t = _t(ev.get("lastTimestamp"))
    last = first if last_t is None else human_duration(now - last_t)
    count = _int(ev.get("count"))
    series = ev.get("series")
    if series:
        last = since(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1  # singleton events carry no count in the new API
    inv = ev.get("involvedObject") or {}
    kind = (inv.get("kind") or "").lower()
    target = f"{kind}/{inv['name']}" if inv.get("name") else kind
    src = ev.get("source") or {}
    component = src.get("component") or ev.get("reportingComponent") or ""
    host = src.get("host") or ev.get("reportingInstance") or ""
    source = f"{component}, {host}" if host else component
    return [last, ev.get("type", ""), ev.get("reason", ""), target, inv.get("fieldPath", ""), source,
            (ev.get("message") or "").strip(), first, count, _name(ev)]


# --------------------------------------------------------------------------------- autoscaling
def hpa_targets(specs: list, statuses: list) -> str:
    """formatHPAMetrics: the first two metrics as current/target, then `+ N more...`."""
    if not specs:
        return "<none>"
    out: list[str] = []

    def cur(i: int, key: str) -> Optional[dict]:
        if i < len(statuses) and statuses[i].get(key) is not None:
            return statuses[i][key].get("current") or {}
        return None

    for i, spec in enumerate(specs):
        t = spec.get("type")
        if t in ("External", "Object"):
            key = t.lower()
            target = (spec.get(key) or {}).get("target") or {}
            c = cur(i, key)
            if target.get("averageValue") is not None:
                current = _quantity(c["averageValue"]) if c and c.get("averageValue") is not None else "<unknown>"
                out.append(f"{current}/{_quantity(target['averageValue'])} (avg)")
            else:
                current = _quantity(c.get("value")) if c is not None else "<unknown>"
                out.append(f"{current}/{_quantity(target.get('value'))}")
        elif t == "Pods":
            c = cur(i, "pods")
            current = _quantity(c.get("averageValue")) if c is not None else "<unknown>"
            target = ((spec.get("pods") or {}).get("target") or {}).get("averageValue")
            out.append(f"{current}/{_quantity(target)}")
        elif t in ("Resource", "ContainerResource"):
            key = "resource" if t == "Resource" else "containerResource"
            src = spec.get(key) or {}
            target = src.get("target") or {}
            c = cur(i, key)
            if target.get("averageValue") is not None:
                current = _quantity(c.get("averageValue")) if c is not None else "<unknown>"
                out.append(f"{src.get('name', '')}: {current}/{_quantity(target['averageValue'])}")
            else:
                current = (f"{c['averageUtilization']}%" if c is not None and c.get("averageUtilization") is not None
                           else "<unknown>")
                goal = f"{target['averageUtilization']}%" if target.get("averageUtilization") is not None else "<auto>"
                out.append(f"{src.get('name', '')}: {current}/{goal}")
        else:
            out.append("<unknown type>")
    if len(out) > 2:
        return ", ".join(out[:2]) + f" + {len(out) - 2} more..."
    return ", ".join(out)


_DEFAULT_HPA_METRICS = [{"type": "Resource", "resource": {"name": "cpu", "target": {
    "type": "Utilization", "averageUtilization": 80}}}]


def hpa_cells(hpa: dict, now: float) -> list:
    spec, st = _spec(hpa), _status(hpa)
    metrics = spec.get("metrics")
    statuses = st.get("currentMetrics") or []
    if metrics is None and spec.get("targetCPUUtilizationPercentage") is not None:  # an autoscaling/v1 body
        metrics = [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": spec["targetCPUUtilizationPercentage"]}}}]
        if st.get("currentCPUUtilizationPercentage") is not None:
            statuses = [{"type": "Resource", "resource": {"name": "cpu", "current": {
                "averageUtilization": st["currentCPUUtilizationPercentage"]}}}]
    if not metrics:
        metrics = _DEFAULT_HPA_METRICS  # the API server's default: cpu at 80%
    ref = spec.get("scaleTargetRef") or {}
    min_pods = "1" if spec.get("minReplicas") is None else str(spec["minReplicas"])
    return [_name(hpa), f"{ref.get('kind', '')}/{ref.get('name', '')}", hpa_targets(metrics, statuses), min_pods,
            _int(spec.get("maxReplicas")), _int(st.get("currentReplicas")), _age(hpa, now)]


# --------------------------------------------------------------------------------- printers
_C = _col
_CONTAINERS = [_C("Containers", priority=1, desc="Names of each container in the template."),
               _C("Images", priority=1, desc="Images referenced by each container in the template.")]
_SELECTOR = _C("Selector", priority=1, desc="A label query over pods that should match the replica count.")


class Printer:
    def __init__(self, columns: list[dict], cells: Callable[[dict, float], list],
                 conditions: Optional[Callable[[dict], Optional[list]]] = None):
        self.columns, self.cells, self.conditions = columns, cells, conditions


def _p(cols: list, cells, conditions=None) -> Printer:
    return Printer(cols, cells, conditions)


_N, _A = _name_col, _age_col

# (group, kind) -> printer, as AddHandlers in printers.go registers them (1.32)
PRINTERS: dict[tuple[str, str], Printer] = {
    ("", "Pod"): _p([_N(), _C("Ready", desc="The aggregate readiness state of this pod for accepting traffic."),
                     _C("Status", desc="The aggregate status of the containers in this pod."),
                     _C("Restarts", desc="The number of times the containers in this pod have been restarted "
                                         "and when the last container in this pod has restarted."),
                     _A(), _C("IP", priority=1, desc="IP address allocated to the pod."),
                     _C("Node", priority=1, desc="NodeName is a request to schedule this pod onto a specific node."),
                     _C("Nominated Node", priority=1, desc="nominatedNodeName is set only when this pod preempts "
                                                           "other pods on the node."),
                     _C("Readiness Gates", priority=1, desc="If specified, all readiness gates will be evaluated "
                                                            "for pod readiness.")],
                    pod_cells, pod_row_conditions),
    ("", "PodTemplate"): _p([_N(), _C("Containers", desc="Names of each container in the template."),
                             _C("Images", desc="Images referenced by each container in the template."),
                             _C("Pod Labels", desc="The labels for the pod template.")], pod_template_cells),
    ("policy", "PodDisruptionBudget"): _p(
        [_N(), _C("Min Available", desc="The minimum number of pods that must be available."),
         _C("Max Unavailable", desc="The maximum number of pods that may be unavailable."),
         _C("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
         _A()], pdb_cells),
    ("", "ReplicationController"): _p([_N(), _C("Desired", "integer"), _C("Current", "integer"),
                                       _C("Ready", "integer"), _A(), *_CONTAINERS, _SELECTOR], rc_cells),
    ("apps", "ReplicaSet"): _p([_N(), _C("Desired", "integer"), _C("Current", "integer"), _C("Ready", "integer"),
                                _A(), *_CONTAINERS, _SELECTOR], replicaset_cells),
    ("apps", "DaemonSet"): _p([_N(), _C("Desired", "integer"), _C("Current", "integer"), _C("Ready", "integer"),
                               _C("Up-to-date", "integer"), _C("Available", "integer"), _C("Node Selector"), _A(),
                               *_CONTAINERS, _SELECTOR], daemonset_cells),
    ("batch", "Job"): _p([_N(), _C("Status", desc="Status of the job."), _C("Completions"),
                          _C("Duration", desc="Time required to complete the job."), _A(), *_CONTAINERS, _SELECTOR],
                         job_cells),
    ("batch", "CronJob"): _p([_N(), _C("Schedule"), _C("Timezone"), _C("Suspend", "boolean"),
                              _C("Active", "integer"), _C("Last Schedule"), _A(), *_CONTAINERS, _SELECTOR],
                             cronjob_cells),
    ("", "Service"): _p([_N(), _C("Type"), _C("Cluster-IP"), _C("External-IP"), _C("Port(s)"), _A(),
                         _C("Selector", priority=1)], service_cells),
    ("networking.k8s.io", "Ingress"): _p(
        [_N(), _C("Class", desc="The name of the IngressClass resource that should be used for additional "
                                "configuration"),
         _C("Hosts", desc="Hosts that incoming requests are matched against before the ingress rule"),
         _C("Address", desc="Address is a list containing ingress points for the load-balancer"),
         _C("Ports", desc="Ports of TLS configurations that open"), _A()], ingress_cells),
    ("networking.k8s.io", "IngressClass"): _p(
        [_N(), _C("Controller", desc="Controller that is responsible for handling this class"),
         _C("Parameters", desc="A reference to a resource with additional parameters"), _A()], ingress_class_cells),
    ("apps", "StatefulSet"): _p([_N(), _C("Ready", desc="Number of the pod with ready state"), _A(), *_CONTAINERS],
                                statefulset_cells),
    ("", "Endpoints"): _p([_N(), _C("Endpoints"), _A()], endpoints_cells),
    ("", "Node"): _p([_N(), _C("Status", desc="The status of the node"), _C("Roles", desc="The roles of the node"),
                      _A(), _C("Version"), _C("Internal-IP", priority=1), _C("External-IP", priority=1),
                      _C("OS-Image", priority=1), _C("Kernel-Version", priority=1),
                      _C("Container-Runtime", priority=1)], node_cells),
    ("", "Event"): _p([_C("Last Seen"), _C("Type"), _C("Reason"), _C("Object"), _C("Subobject", priority=1),
                       _C("Source", priority=1), _C("Message"), _C("First Seen", priority=1),
                       _C("Count", priority=1), _col("Name", priority=1, fmt="name", desc=_NAME_DOC)], event_cells),
    ("", "Namespace"): _p([_N(), _C("Status", desc="The status of the namespace"), _A()], namespace_cells),
    ("", "Secret"): _p([_N(), _C("Type"), _C("Data"), _A()], secret_cells),
    ("", "ServiceAccount"): _p([_N(), _C("Secrets"), _A()], service_account_cells),
    ("", "PersistentVolume"): _p([_N(), _C("Capacity"), _C("Access Modes"), _C("Reclaim Policy"), _C("Status"),
                                  _C("Claim"), _C("StorageClass", desc="StorageClass of the pv"),
                                  _C("VolumeAttributesClass", desc="VolumeAttributesClass of the pv"), _C("Reason"),
                                  _A(), _C("VolumeMode", priority=1)], pv_cells),
    ("", "PersistentVolumeClaim"): _p([_N(), _C("Status"), _C("Volume"), _C("Capacity"), _C("Access Modes"),
                                       _C("StorageClass", desc="StorageClass of the pvc"),
                                       _C("VolumeAttributesClass", desc="VolumeAttributesClass of the pvc"), _A(),
                                       _C("VolumeMode", priority=1)], pvc_cells),
    ("", "ComponentStatus"): _p([_N(), _C("Status", desc="Status of the component conditions"),
                                 _C("Message", desc="Message of the component conditions"),
                                 _C("Error", desc="Error of the component conditions")], component_status_cells),
    ("apps", "Deployment"): _p([_N(), _C("Ready", desc="Number of the pod with ready state"), _C("Up-to-date"),
                                _C("Available"), _A(), *_CONTAINERS, _SELECTOR], deployment_cells),
    ("autoscaling", "HorizontalPodAutoscaler"): _p([_N(), _C("Reference"), _C("Targets"), _C("MinPods"),
                                                    _C("MaxPods"), _C("Replicas"), _A()], hpa_cells),
    ("", "ConfigMap"): _p([_N(), _C("Data"), _A()], configmap_cells),
    ("networking.k8s.io", "NetworkPolicy"): _p([_N(), _C("Pod-Selector"), _A()], network_policy_cells),
    ("rbac.authorization.k8s.io", "RoleBinding"): _p(
        [_N(), _C("Role"), _A(), _C("Users", priority=1, desc="Users in the roleBinding"),
         _C("Groups", priority=1, desc="Groups in the roleBinding"),
         _C("ServiceAccounts", priority=1, desc="ServiceAccounts in the roleBinding")], role_binding_cells),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): _p(
        [_N(), _C("Role"), _A(), _C("Users", priority=1, desc="Users in the clusterRoleBinding"),
         _C("Groups", priority=1, desc="Groups in the clusterRoleBinding"),
         _C("ServiceAccounts", priority=1, desc="ServiceAccounts in the clusterRoleBinding")], role_binding_cells),
    ("certificates.k8s.io", "CertificateSigningRequest"): _p(
        [_N(), _A(), _C("SignerName"), _C("Requestor"), _C("RequestedDuration"), _C("Condition")], csr_cells),
    ("coordination.k8s.io", "Lease"): _p([_N(), _C("Holder"), _A()], lease_cells),
    ("storage.k8s.io", "StorageClass"): _p([_N(), _C("Provisioner"), _C("ReclaimPolicy"), _C("VolumeBindingMode"),
                                            _C("AllowVolumeExpansion"), _A()], storage_class_cells),
    ("apps", "ControllerRevision"): _p([_N(), _C("Controller", desc="Controller of the object"), _C("Revision"),
                                        _A()], controller_revision_cells),
    ("", "ResourceQuota"): _p([_N(), _C("Request"), _C("Limit"), _A()], resource_quota_cells),
    ("scheduling.k8s.io", "PriorityClass"): _p([_N(), _C("Value", "integer"), _C("Global-Default", "boolean"), _A(),
                                                _C("PreemptionPolicy")], priority_class_cells),
    ("node.k8s.io", "RuntimeClass"): _p([_N(), _C("Handler"), _A()], runtime_class_cells),
    ("discovery.k8s.io", "EndpointSlice"): _p([_N(), _C("AddressType"), _C("Ports"), _C("Endpoints"), _A()],
                                              endpointslice_cells),
    ("storage.k8s.io", "CSIDriver"): _p([_N(), _C("AttachRequired", "boolean"), _C("PodInfoOnMount", "boolean"),
                                         _C("StorageCapacity", "boolean"), _C("TokenRequests"),
                                         _C("RequiresRepublish", "boolean"), _C("Modes"), _A()], csi_driver_cells),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): _p(
        [_N(), _C("Webhooks", "integer"), _A()], _webhook_cells),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): _p(
        [_N(), _C("Webhooks", "integer"), _A()], _webhook_cells),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"): _p(
        [_N(), _C("PriorityLevel"), _C("MatchingPrecedence"), _C("DistinguisherMethod"), _A(), _C("MissingPL")],
        flow_schema_cells),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"): _p(
        [_N(), _C("Type"), _C("NominalConcurrencyShares"), _C("Queues"), _C("HandSize"), _C("QueueLengthLimit"),
         _A()], priority_level_cells),
    ("apiregistration.k8s.io", "APIService"): _p(
        [_N(), _C("Service", desc="The reference to the service that hosts this API endpoint."),
         _C("Available", desc="Whether this service is available."), _A()], apiservice_cells),
}
PRINTERS[("events.k8s.io", "Event")] = PRINTERS[("", "Event")]  # one storage, one printer upstream


# --------------------------------------------------------------------------------- CRD columns
def _pc(name: str, path: str, type_: str = "string", priority: int = 0) -> dict:
    return {"name": name, "jsonPath": path, "type": type_, **({"priority": priority} if priority else {})}


# MetalLB's CRDs (config/crd/bases, v0.14 to v0.16): a real cluster serves these kinds from them. None of
# them declares an Age column, and a CRD that declares columns gets no default one.
_ADV = [_pc("IPAddressPools", ".spec.ipAddressPools"), _pc("IPAddressPool Selectors", ".spec.ipAddressPoolSelectors")]
_PEER = [_pc("Address", ".spec.peerAddress"), _pc("ASN", ".spec.peerASN"), _pc("BFD Profile", ".spec.bfdProfile"),
         _pc("Multi Hops", ".spec.ebgpMultiHop")]
CRD_COLUMNS: dict[tuple[str, str], list[dict]] = {
    ("metallb.io", "IPAddressPool"): [_pc("Auto Assign", ".spec.autoAssign", "boolean"),
                                      _pc("Avoid Buggy IPs", ".spec.avoidBuggyIPs", "boolean"),
                                      _pc("Addresses", ".spec.addresses")],
    ("metallb.io", "L2Advertisement"): [*_ADV, _pc("Interfaces", ".spec.interfaces"),
                                        _pc("Node Selectors", ".spec.nodeSelectors", priority=10)],
    ("metallb.io", "BGPAdvertisement"): [*_ADV, _pc("Peers", ".spec.peers"),
                                         _pc("Node Selectors", ".spec.nodeSelectors", priority=10)],
    ("metallb.io", "BGPPeer"): _PEER,
    ("metallb.io", "BFDProfile"): [_pc("Passive Mode", ".spec.passiveMode", "boolean"),
                                   _pc("Transmit Interval", ".spec.transmitInterval", "integer"),
                                   _pc("Receive Interval", ".spec.receiveInterval", "integer"),
                                   _pc("Multiplier", ".spec.detectMultiplier", "integer")],
    ("metallb.io", "Community"): [],
    ("metallb.io", "ServiceL2Status"): [_pc("Allocated Node", ".status.node"),
                                        _pc("Service Name", ".status.serviceName"),
                                        _pc("Service Namespace", ".status.serviceNamespace")],
}

# schema defaults the API server writes into these CRDs' objects (so a real `get` shows them)
_CRD_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("metallb.io", "IPAddressPool"): {"autoAssign": True, "avoidBuggyIPs": False},
    ("metallb.io", "BGPAdvertisement"): {"aggregationLength": 32, "aggregationLengthV6": 128},
}

_DEFAULT_AGE_COLUMN = {"name": "Age", "type": "date", "description": _AGE_DOC,
                       "jsonPath": ".metadata.creationTimestamp"}

_PATH_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\d+|\*|'[^']*'|\"[^\"]*\")\]")


def jsonpath_find(obj: Any, path: str) -> list:
    """The values a CRD column's simple JSONPath (`.spec.a.b`, `.status.x[0].y`, `['k']`, `[*]`) finds;
    [] when a key is missing (the column parser allows missing keys)."""
    p = path.strip()
    if p.startswith("{") and p.endswith("}"):
        p = p[1:-1]
    if p.startswith("$"):
        p = p[1:]
    values = [obj]
    pos = 0
    while pos < len(p):
        m = _PATH_TOKEN.match(p, pos)
        if not m:
            raise ValueError(f"unrecognized column definition {path!r}")
        pos = m.end()
        key, idx = m.group(1), m.group(2)
        nxt: list = []
        for v in values:
            if key is not None or (idx and idx[0] in "'\""):
                k = key if key is not None else idx[1:-1]
                if isinstance(v, dict) and k in v:
                    nxt.append(v[k])
            elif idx == "*":
                if isinstance(v, list):
                    nxt.extend(v)
                elif isinstance(v, dict):
                    nxt.extend(v.values())
            else:
                i = int(idx)
                if isinstance(v, list) and i < len(v):
                    nxt.append(v[i])
        values = nxt
    return values


def _go_float(f: float) -> str:
    """fmt.Sprint of a float64 (strconv 'g', shortest digits: exponent form below 1e-4 and from 1e6)."""
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if math.isnan(f):
        return "NaN"
    if f == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(f)).normalize().as_tuple()
    ds = "".join(map(str, digits))
    exp = len(ds) + exponent - 1  # the decimal exponent of the first digit
    neg = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return neg + format(Decimal(repr(abs(f))).normalize(), "f")


def _go_json(v: Any) -> str:
    """encoding/json.Marshal: compact, map keys sorted, <>& escaped."""
    s = json.dumps(v, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _crd_cell(type_: str, value: Any, now: float) -> Any:
    """One additional column's cell, as apiextensions' tableconvertor computes it."""
    if value is None:
        return None
    if type_ == "string":
        # jsonpath PrintResults: JSON for maps and lists, fmt.Sprint for scalars
        if isinstance(value, (dict, list)):
            return _go_json(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return _go_float(value)
        return str(value)
    if type_ == "integer":
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return int(value)
        return None
    if type_ == "number":
        if isinstance(value, bool):
            return None
        return float(value) if isinstance(value, (int, float)) else None
    if type_ == "boolean":
        return value if isinstance(value, bool) else None
    if type_ == "date":
        if not isinstance(value, str):
            return None
        if value == "":
            return "<unknown>"
        try:
            t = parse_time(value)
        except ValueError:
            return "<invalid>"
        return "<unknown>" if t is None else human_duration(now - t)
    return None


def _crd_printer(columns: list[dict], defaults: Optional[dict] = None) -> Printer:
    cols = [_name_col()]
    paths = []
    for c in columns or [_DEFAULT_AGE_COLUMN]:  # serveDefaultColumnsIfEmpty
        cols.append(_col(c["name"], c.get("type", "string"),
                         c.get("description") or f"Custom resource definition column (in JSONPath format): "
                                                  f"{c.get('jsonPath', '')}",
                         int(c.get("priority") or 0), c.get("format") or ""))
        paths.append(c.get("jsonPath", ""))

    def cells(obj: dict, now: float) -> list:
        if defaults:
            obj = {**obj, "spec": {**defaults, **(obj.get("spec") or {})}}
        out: list = [_name(obj)]
        for col, path in zip(cols[1:], paths):
            try:
                found = jsonpath_find(obj, path)
            except ValueError:
                found = []
            out.append(_crd_cell(col["type"], found[0], now) if found else None)
        return out

    return Printer(cols, cells)


def crd_columns(crd: dict, version: Optional[str] = None) -> list[dict]:
    """A CRD version's additionalPrinterColumns (the storage version's when no version is named)."""
    versions = (crd.get("spec") or {}).get("versions") or []
    chosen = next((v for v in versions if v.get("name") == version), None) if version else None
    if chosen is None:
        chosen = next((v for v in versions if v.get("storage")), versions[0] if versions else {})
    return list(chosen.get("additionalPrinterColumns") or [])


# --------------------------------------------------------------------------------- default
def _default_cells(obj: dict, now: float) -> list:
    return [_name(obj), _rfc3339(_t(_meta(obj).get("creationTimestamp")))]


# rest.defaultTableConvertor: the generic server's table for a kind without a printer
DEFAULT_PRINTER = Printer([_name_col(), _col("Created At", "date", _AGE_DOC)], _default_cells)


def printer_for(kind: str, group: str, extra: Optional[dict] = None) -> Printer:
    """The convertor a real cluster uses for (group, kind)."""
    extra = extra or {}
    if extra.get("printerColumns") is not None or extra.get("crd") is not None:
        cols = extra.get("printerColumns")
        if cols is None:
            cols = crd_columns(extra["crd"], extra.get("version")) if isinstance(extra["crd"], dict) else []
        return _crd_printer(cols, _CRD_DEFAULTS.get((group, kind)))
    if (group, kind) in CRD_COLUMNS:
        return _crd_printer(CRD_COLUMNS[(group, kind)], _CRD_DEFAULTS.get((group, kind)))
    if (group, kind) in PRINTERS:
        return PRINTERS[(group, kind)]
    # served from a CRD (a kind of no built-in entry) that declares no columns: Name and Age
    if any(r.kind == kind and r.group == group for r in registry.all_resources()) and \
            not any(r.kind == kind and r.group == group for r in registry.BUILTIN):
        return _crd_printer([])
    return DEFAULT_PRINTER


# --------------------------------------------------------------------------------- the Table
_INCLUDE = {"": "Metadata", "Metadata": "Metadata", "Object": "Object", "None": "None"}


def _row_object(kind: str, group: str, obj: dict, include: str) -> Optional[dict]:
    if include == "None":
        return None
    if include == "Metadata":
        return {"kind": "PartialObjectMetadata", "apiVersion": TABLE_API_VERSION,
                "metadata": copy.deepcopy(_meta(obj))}
    out = copy.deepcopy(obj)
    if "kind" not in out or "apiVersion" not in out:
        res = next((r for r in registry.all_resources() if r.kind == kind and r.group == group), None)
        out.setdefault("kind", kind)
        if res is not None:
            out.setdefault("apiVersion", res.group_version)
    return out


def _check_include(include_object: Optional[str]) -> str:
    inc = _INCLUDE.get(include_object or "")
    if inc is None:
        # the API server's 400: handlers/response.go asTable
        raise ValueError(f'unrecognized includeObject value: "{include_object}"')
    return inc


def _rows(printer: Printer, kind: str, group: str, objs: list[dict], now: float, include: str) -> list[dict]:
    rows = []
    view = (lambda o: _event_view(o, group)) if kind == "Event" else (lambda o: o)
    items = list(objs)
    if (group, kind) == ("flowcontrol.apiserver.k8s.io", "FlowSchema"):
        # printFlowSchemaList sorts by matchingPrecedence, then name
        items.sort(key=lambda o: (_int(_spec(o).get("matchingPrecedence")), _name(o)))
    for obj in items:
        row: dict[str, Any] = {"cells": printer.cells(view(obj), now)}
        if printer.conditions is not None:
            conds = printer.conditions(obj)
            if conds:
                row["conditions"] = conds
        o = _row_object(kind, group, obj, include)
        if o is not None:
            row["object"] = o
        rows.append(row)
    return rows


def table(kind: str, group: str, objs: list[dict], now: float, include_object: str = "Metadata",
          extra: Optional[dict] = None) -> dict:
    """The Table for `objs` (a list, or one object as a one-item list) of (group, kind).

    include_object: "Metadata" (the default; each row's object is a PartialObjectMetadata), "Object"
    (the whole object) or "None" (no object); anything else raises ValueError (a 400 upstream).
    extra (all optional): "resourceVersion", "continue", "remainingItemCount" for the list metadata;
    "noHeaders": True to leave columnDefinitions out (TableOptions.noHeaders); for kinds served from a
    CRD, "printerColumns" (that version's additionalPrinterColumns) or "crd" (the CRD object, with an
    optional "version").
    """
    include = _check_include(include_object)
    extra = extra or {}
    printer = printer_for(kind, group, extra)
    meta: dict[str, Any] = {"resourceVersion": str(extra.get("resourceVersion") or "")}
    if extra.get("continue"):
        meta["continue"] = extra["continue"]
    if extra.get("remainingItemCount") is not None:
        meta["remainingItemCount"] = extra["remainingItemCount"]
    out: dict[str, Any] = {"kind": "Table", "apiVersion": TABLE_API_VERSION, "metadata": meta}
    # the server prints with Wide=true: every column is defined, kubectl hides priority > 0
    out["columnDefinitions"] = [] if extra.get("noHeaders") else copy.deepcopy(printer.columns)
    out["rows"] = _rows(printer, kind, group, objs, now, include)
    return out


def table_row_event(kind: str, group: str, obj: dict, now: float, include_object: str = "Metadata",
                    extra: Optional[dict] = None) -> dict:
    """The Table a watch event carries for one object: one row, the object's resourceVersion, and
    the column definitions on every event (kubectl reprints headers only when they change)."""
    ex = dict(extra or {})
    ex.setdefault("resourceVersion", _meta(obj).get("resourceVersion") or "")
    return table(kind, group, [obj], now, include_object, ex)
