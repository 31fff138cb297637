"""kubectl-like tables. Rows are built from the objects' JSON (what the API returns)."""
from __future__ import annotations

import calendar
import time
from typing import Callable, Optional


def parse_ts(s: Optional[str]) -> Optional[float]:
    if not s:
        return None
    try:
        return float(calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """kubectl's age format (apimachinery duration.HumanDuration)."""
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


def age(obj: dict, now: Optional[float] = None) -> str:
    t = parse_ts(obj.get("metadata", {}).get("creationTimestamp"))
    return "<unknown>" if t is None else human_duration((now or time.time()) - t)


def render(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to the widest cell plus three spaces, like kubectl's tabwriter."""
    widths = [len(h) for h in headers]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for r in [headers] + rows:
        lines.append("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
    return "\n".join(lines)


# ------------------------------------------------------------------------------- pods
def pod_status(pod: dict) -> str:
    """The STATUS column as kubectl computes it (printPod)."""
    meta, st = pod.get("metadata", {}), pod.get("status", {})
    if meta.get("deletionTimestamp"):
        return "Terminating"
    reason = st.get("reason") or st.get("phase", "Pending")
    for cs in st.get("containerStatuses") or []:
        state = cs.get("state", {})
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated"):
            t = state["terminated"]
            reason = t.get("reason") or (f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode')}")
    if reason == "Pending" and not pod.get("spec", {}).get("nodeName"):
        return "Pending"
    if reason == "Running" and not st.get("containerStatuses"):
        return "ContainerCreating"
    return reason


def pod_row(pod: dict, wide: bool, now: float) -> list[str]:
    st = pod.get("status", {})
    statuses = st.get("containerStatuses") or []
    total = len(pod.get("spec", {}).get("containers", []))
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(c.get("restartCount", 0) for c in statuses)
    last = max((parse_ts((c.get("lastState") or {}).get("terminated", {}).get("finishedAt")) or 0
                for c in statuses), default=0)
    restart_col = str(restarts) + (f" ({human_duration(now - last)} ago)" if restarts and last else "")
    row = [pod["metadata"]["name"], f"{ready}/{total}", pod_status(pod), restart_col, age(pod, now)]
    if wide:
        row += [st.get("podIP") or "<none>", pod.get("spec", {}).get("nodeName") or "<none>", "<none>", "<none>"]
    return row


POD_HEADERS = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
POD_WIDE = ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]


# ------------------------------------------------------------------------------- nodes
def node_row(node: dict, wide: bool, now: float) -> list[str]:
    conds = {c["type"]: c for c in node.get("status", {}).get("conditions") or []}
    ready = conds.get("Ready", {}).get("status")
    status = "Ready" if ready == "True" else "NotReady"
    if ready != "True" and conds.get("Ready", {}).get("reason") == "KubeletNotReady":
        status = "NotReady"
    if node.get("spec", {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    labels = node.get("metadata", {}).get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    info = node.get("status", {}).get("nodeInfo") or {}
    row = [node["metadata"]["name"], status, ",".join(roles) or "<none>", age(node, now),
           info.get("kubeletVersion", "")]
    if wide:
        addrs = {a["type"]: a["address"] for a in node.get("status", {}).get("addresses") or []}
        row += [addrs.get("InternalIP", "<none>"), addrs.get("ExternalIP", "<none>"), info.get("osImage", ""),
                info.get("kernelVersion", ""), info.get("containerRuntimeVersion", "")]
    return row


NODE_HEADERS = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
NODE_WIDE = ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]


# ------------------------------------------------------------------------------- workloads
def _selector_text(sel: dict) -> str:
    parts = [f"{k}={v}" for k, v in (sel.get("matchLabels") or {}).items()]
    for e in sel.get("matchExpressions") or []:
        parts.append(f"{e['key']} {e['operator'].lower()} ({','.join(e.get('values') or [])})")
    return ",".join(parts) or "<none>"


def _images(spec: dict) -> tuple[str, str]:
    cs = spec.get("template", {}).get("spec", {}).get("containers", [])
    return ",".join(c["name"] for c in cs), ",".join(c.get("image", "") for c in cs)


def deployment_row(d: dict, wide: bool, now: float) -> list[str]:
    spec, st = d.get("spec", {}), d.get("status", {})
    want = spec.get("replicas", 1)
    row = [d["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{want}", str(st.get("updatedReplicas", 0)),
           str(st.get("availableReplicas", 0)), age(d, now)]
    if wide:
        names, images = _images(spec)
        row += [names, images, _selector_text(spec.get("selector", {}))]
    return row


DEPLOY_HEADERS = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
DEPLOY_WIDE = ["CONTAINERS", "IMAGES", "SELECTOR"]


def replicaset_row(rs: dict, wide: bool, now: float) -> list[str]:
    spec, st = rs.get("spec", {}), rs.get("status", {})
    row = [rs["metadata"]["name"], str(spec.get("replicas", 0)), str(st.get("replicas", 0)),
           str(st.get("readyReplicas", 0)), age(rs, now)]
    if wide:
        names, images = _images(spec)
        row += [names, images, _selector_text(spec.get("selector", {}))]
    return row


RS_HEADERS = ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
RS_WIDE = ["CONTAINERS", "IMAGES", "SELECTOR"]


# ------------------------------------------------------------------------------- services
def service_ports(svc: dict) -> str:
    out = []
    for p in svc.get("spec", {}).get("ports") or []:
        s = str(p["port"])
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        out.append(f"{s}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def external_ip(svc: dict) -> str:
    spec = svc.get("spec", {})
    stype = spec.get("type", "ClusterIP")
    ext = list(spec.get("externalIPs") or [])
    if stype == "ExternalName":
        return spec.get("externalName", "<none>")
    if stype == "LoadBalancer":
        ing = [i.get("ip") or i.get("hostname") for i in (svc.get("status", {}).get("loadBalancer", {})
                                                          .get("ingress") or [])]
        ext = ing + ext
        return ",".join(ext) if ext else "<pending>"
    return ",".join(ext) if ext else "<none>"


def service_row(svc: dict, wide: bool, now: float) -> list[str]:
    spec = svc.get("spec", {})
    row = [svc["metadata"]["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP") or "<none>",
           external_ip(svc), service_ports(svc), age(svc, now)]
    if wide:
        sel = spec.get("selector") or {}
        row.append(",".join(f"{k}={v}" for k, v in sel.items()) or "<none>")
    return row


SVC_HEADERS = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
SVC_WIDE = ["SELECTOR"]


def endpoints_text(slices: list[dict]) -> str:
    """kubectl's ENDPOINTS column: ready ip:port pairs, the first three then `+ N more...`."""
    pairs = []
    for s in slices:
        ports = [p.get("port") for p in s.get("ports") or []] or [None]
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for addr in ep.get("addresses", []):
                for port in ports:
                    pairs.append(f"{addr}:{port}" if port else addr)
    if not pairs:
        return "<none>"
    if len(pairs) > 3:
        return ",".join(pairs[:3]) + f" + {len(pairs) - 3} more..."
    return ",".join(pairs)


def endpointslice_row(s: dict, wide: bool, now: float) -> list[str]:
    ports = ",".join(str(p.get("port", "<unset>")) for p in s.get("ports") or []) or "<unset>"
    addrs = [a for ep in s.get("endpoints") or [] for a in ep.get("addresses", [])]
    shown = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [s["metadata"]["name"], s.get("addressType", "IPv4"), ports, shown or "<unset>", age(s, now)]


SLICE_HEADERS = ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]


def namespace_row(ns: dict, wide: bool, now: float) -> list[str]:
    return [ns["metadata"]["name"], (ns.get("status") or {}).get("phase", "Active"), age(ns, now)]


def configmap_row(cm: dict, wide: bool, now: float) -> list[str]:
    return [cm["metadata"]["name"], str(len(cm.get("data") or {}) + len(cm.get("binaryData") or {})), age(cm, now)]


def secret_row(s: dict, wide: bool, now: float) -> list[str]:
    return [s["metadata"]["name"], s.get("type") or "Opaque", str(len(s.get("data") or {})), age(s, now)]


Row = Callable[[dict, bool, float], list[str]]

# kind -> (headers, wide headers, row function)
TABLES: dict[str, tuple[list[str], list[str], Row]] = {
    "Pod": (POD_HEADERS, POD_WIDE, pod_row),
    "Node": (NODE_HEADERS, NODE_WIDE, node_row),
    "Deployment": (DEPLOY_HEADERS, DEPLOY_WIDE, deployment_row),
    "ReplicaSet": (RS_HEADERS, RS_WIDE, replicaset_row),
    "Service": (SVC_HEADERS, SVC_WIDE, service_row),
    "EndpointSlice": (SLICE_HEADERS, [], endpointslice_row),
    "Namespace": (["NAME", "STATUS", "AGE"], [], namespace_row),
    "ConfigMap": (["NAME", "DATA", "AGE"], [], configmap_row),
    "Secret": (["NAME", "TYPE", "DATA", "AGE"], [], secret_row),
}


def table(kind: str, items: list[dict], wide: bool = False, all_namespaces: bool = False,
          now: Optional[float] = None) -> str:
    now = now or time.time()
    headers, wide_headers, row = TABLES[kind]
    hdr = list(headers) + (wide_headers if wide else [])
    rows = [row(o, wide, now) for o in items]
    if all_namespaces:
        hdr = ["NAMESPACE"] + hdr
        rows = [[o.get("metadata", {}).get("namespace", "")] + r for o, r in zip(items, rows)]
    return render(hdr, rows)
