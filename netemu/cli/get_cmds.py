"""`get` and `describe`: thin clients of the lab's Kubernetes API. `get` prints the server's Tables
(as kubectl does) or the objects (-o json|yaml|name); `describe` reads the objects and their events."""
from __future__ import annotations

import sys
import time
from typing import Optional

from netemu.cli import tables
from netemu.cli.client import ApiCallError, CliError, Client, pick_lab
from netemu.cli.kinds import (TABLE, by_kind, find_object, get_object, list_objects, namespace_for, path,
                              split_ref)
from netemu.cli.output import print_objects, to_yaml
from netemu.wellknown import NODE_ROLE_PREFIX

ALL = ["pods", "services", "deployments", "replicasets"]  # `get all`
FORMATS = ("", "wide", "json", "yaml", "name")


def _client(args) -> Client:
    return Client(pick_lab(args.lab))


def _no_resources(namespace: Optional[str]) -> str:
    return f"No resources found in {namespace} namespace." if namespace else "No resources found"


def cmd_get(args) -> int:
    fmt = args.output or ""
    if fmt not in FORMATS:
        raise CliError(f"unknown output format {fmt!r}: use wide, json, yaml or name")
    client = _client(args)
    if getattr(args, "watch", False):
        return _watch(client, args)
    refs = ALL if args.resource == "all" else [r for r in args.resource.split(",") if r]
    targets = [split_ref(r, args.name, client) for r in refs]
    if fmt in ("json", "yaml", "name"):
        items: list[dict] = []
        for res, name in targets:
            ns = namespace_for(res, args)
            if name:
                obj = get_object(client, res, ns or "default", name)
                obj.setdefault("kind", res.kind)
                obj.setdefault("apiVersion", res.group_version)
                items.append(obj)
            else:
                items += list_objects(client, res, ns, args.selector)
        print_objects(items, fmt, single=len(targets) == 1 and bool(targets[0][1]))
        return 0
    wide = fmt == "wide"
    several = len({res for res, _ in targets}) > 1
    printed = False
    where = None
    for res, name in targets:
        ns = namespace_for(res, args)
        where = where or ns
        table = server_table(client, res, ns, name, args.selector)
        if not table.get("rows"):
            continue
        all_ns = bool(getattr(args, "all_namespaces", False)) and res.namespaced
        text = tables.print_table(table, wide, all_ns, res.resource_name() if several else "")
        if res.kind == "Service" and wide:
            text = _with_announcer(client, table, text)
        if printed:
            print()
        print(text)
        printed = True
    if not printed:
        print(_no_resources(where))
    return 0


def server_table(client: Client, res, namespace: Optional[str], name: Optional[str] = None,
                 selector: Optional[str] = None, fields: Optional[str] = None) -> dict:
    """The API's Table of a kind (a one-row Table for a name). Events come oldest first."""
    events = res.kind == "Event"
    query = {"labelSelector": selector, "fieldSelector": fields, "includeObject": "Object" if events else None}
    if name and res.namespaced:
        namespace = namespace or "default"
    table = client.rest("GET", path(res, namespace, name, query=query), accept=TABLE)
    if events:
        table["rows"] = sorted(table.get("rows") or [], key=lambda r: event_order(r.get("object") or {}))
    return table


def event_order(ev: dict) -> tuple[float, int]:
    """When an event last happened (its resourceVersion orders events of the same second)."""
    t = tables.parse_ts(ev.get("lastTimestamp")) or tables.parse_ts(ev.get("eventTime")) or \
        tables.parse_ts(ev.get("firstTimestamp")) or 0.0
    rv = str((ev.get("metadata") or {}).get("resourceVersion") or "0")
    return t, int(rv) if rv.isdigit() else 0


# ------------------------------------------------------------------------------ get -w
def _watch(client: Client, args) -> int:
    """`get -w`: the table, then a line each time an object changes or goes (the API's watch)."""
    res, name = split_ref(args.resource, args.name, client)
    ns = namespace_for(res, args)
    wide = args.output == "wide"
    all_ns = bool(getattr(args, "all_namespaces", False)) and res.namespaced
    fields = f"metadata.name={name}" if name else None
    table = server_table(client, res, ns, None, args.selector, fields)
    rv = (table.get("metadata") or {}).get("resourceVersion") or ""
    hdr = tables.table_header(table, wide, all_ns)
    rows = tables.table_rows(table, wide, all_ns)
    widths = [max([len(h)] + [len(r[i]) for r in rows if i < len(r)]) for i, h in enumerate(hdr)]
    print(_line(hdr, widths))
    seen: dict[tuple, list[str]] = {}
    for row, text in zip(table.get("rows") or [], rows):
        print(_line(text, widths))
        seen[tables.row_key(row)] = text
    sys.stdout.flush()
    watcher = Client(client.lab, timeout=None)
    columns = table
    try:
        while True:
            query = {"watch": "true", "resourceVersion": rv, "labelSelector": args.selector, "fieldSelector": fields,
                     "allowWatchBookmarks": "true"}
            relist = False
            for ev in watcher.rest_lines(path(res, ns, query=query), accept=TABLE):
                kind, obj = ev.get("type"), ev.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:  # our resourceVersion is too old: start again from now
                        relist = True
                        break
                    raise CliError(f"Error from server ({obj.get('reason', 'Error')}): {obj.get('message', '')}")
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                if kind == "BOOKMARK":
                    continue
                if obj.get("columnDefinitions"):
                    columns = obj
                for row in obj.get("rows") or []:
                    one = dict(columns, rows=[row])
                    text = tables.table_rows(one, wide, all_ns)[0]
                    key = tables.row_key(row)
                    old = seen.get(key)
                    if kind == "DELETED":
                        seen.pop(key, None)
                    elif old is not None and _without_age(old, hdr) == _without_age(text, hdr):
                        continue  # AGE alone changing is not news
                    else:
                        seen[key] = text
                    print(_line(text, widths), flush=True)
            if relist:
                table = server_table(client, res, ns, None, args.selector, fields)
                rv = (table.get("metadata") or {}).get("resourceVersion") or ""
    except KeyboardInterrupt:
        return 0


def _without_age(r: list[str], hdr: list[str]) -> list[str]:
    return [c for c, h in zip(r, hdr) if h not in ("AGE", "RESTARTS")] + [
        c.split(" ")[0] for c, h in zip(r, hdr) if h == "RESTARTS"]


def _line(cells: list[str], widths: list[int]) -> str:
    return "   ".join(c.ljust(widths[i]) if i < len(widths) else c for i, c in enumerate(cells)).rstrip()


def _with_announcer(client: Client, table: dict, text: str) -> str:
    """-o wide for Services: which node's speaker answers ARP for each LoadBalancer IP."""
    try:
        services = client.call("announcements")["services"]
    except CliError:
        return text
    lines = text.splitlines()
    col = ["ANNOUNCED-BY"] + [
        (services.get("{}/{}".format(*tables.row_key(row))) or {}).get("node") or "<none>"
        for row in table.get("rows") or []]
    width = max(len(line) for line in lines)
    return "\n".join(line.ljust(width) + "   " + c for line, c in zip(lines, col))


# ------------------------------------------------------------------------------ describe
def cmd_describe(args) -> int:
    client = _client(args)
    res, name = split_ref(args.resource, args.name, client)
    ns = namespace_for(res, args)
    if name:
        obj = find_object(client, res, ns, name)
        if obj is not None:
            items = [obj]
        else:  # as kubectl: the objects whose names start with it
            items = [o for o in list_objects(client, res, ns, args.selector) if o["metadata"]["name"].startswith(name)]
            if not items:
                get_object(client, res, ns, name)  # the API's NotFound
    else:
        items = list_objects(client, res, ns, args.selector)
        if not items:
            print(_no_resources(ns))
            return 0
    for i, obj in enumerate(items):
        if i:
            print()
        describer = DESCRIBERS.get(res.kind, _describe_generic)
        print(describer(obj, client).rstrip())
        print(_events_block(events_of(client, obj, res.namespaced)))
    return 0


def events_of(client: Client, obj: dict, namespaced: bool) -> list[dict]:
    """The events about an object, oldest first."""
    meta = obj["metadata"]
    fields = f"involvedObject.kind={obj.get('kind', '')},involvedObject.name={meta['name']}"
    try:
        events = list_objects(client, by_kind("Event"), meta.get("namespace") if namespaced else None, fields=fields)
    except ApiCallError:
        return []
    return sorted(events, key=event_order)


def _kv(lines: list[str], key: str, value, indent: int = 0) -> None:
    pad = " " * indent
    width = max(len(key) + 2, 20 - indent)
    lines.append(f"{pad}{key + ':':<{width}}{'' if value is None else value}")


def _map(m) -> str:
    if not m:
        return "<none>"
    return "\n                    ".join(f"{k}={v}" for k, v in m.items())


def _events_block(events: list[dict]) -> str:
    if not events:
        return "Events:             <none>"
    now = time.time()
    rows = []
    for e in events:
        last = tables.parse_ts(e.get("lastTimestamp")) or tables.parse_ts(e.get("eventTime")) or now
        first = tables.parse_ts(e.get("firstTimestamp")) or last
        age = tables.human_duration(now - last)
        count = e.get("count") or 1
        if count > 1:
            age = f"{age} (x{count} over {tables.human_duration(last - first)})"
        source = (e.get("source") or {}).get("component") or e.get("reportingComponent") or ""
        rows.append([e.get("type") or "", e.get("reason") or "", age, source, e.get("message") or ""])
    headers = ["Type", "Reason", "Age", "From", "Message"]
    body = tables.render(headers, [["-" * len(h) for h in headers]] + rows).splitlines()
    return "Events:\n" + "\n".join("  " + line for line in body)


def _describe_pod(pod: dict, client: Client) -> str:
    meta, spec, st = pod["metadata"], pod["spec"], pod.get("status", {})
    lines: list[str] = []
    _kv(lines, "Name", meta["name"])
    _kv(lines, "Namespace", meta.get("namespace"))
    _kv(lines, "Node", f"{spec.get('nodeName') or '<none>'}/{st.get('hostIP') or ''}".rstrip("/"))
    _kv(lines, "Start Time", st.get("startTime") or "<unset>")
    _kv(lines, "Labels", _map(meta.get("labels")))
    _kv(lines, "Annotations", _map(meta.get("annotations")))
    _kv(lines, "Status", tables.pod_status(pod))
    _kv(lines, "IP", st.get("podIP") or "")
    refs = meta.get("ownerReferences") or []
    if refs:
        _kv(lines, "Controlled By", f"{refs[0]['kind']}/{refs[0]['name']}")
    lines.append("Containers:")
    statuses = {c["name"]: c for c in st.get("containerStatuses") or []}
    for c in spec.get("containers", []):
        cs = statuses.get(c["name"], {})
        lines.append(f"  {c['name']}:")
        _kv(lines, "Image", c.get("image"), 4)
        ports = ", ".join(f"{p['containerPort']}/{p.get('protocol', 'TCP')}" for p in c.get("ports") or [])
        _kv(lines, "Port", ports or "<none>", 4)
        if c.get("command"):
            _kv(lines, "Command", " ".join(c["command"]), 4)
        if c.get("args"):
            _kv(lines, "Args", " ".join(c["args"]), 4)
        state = cs.get("state", {})
        if "running" in state:
            _kv(lines, "State", "Running", 4)
            _kv(lines, "  Started", state["running"].get("startedAt"), 4)
        elif "waiting" in state:
            _kv(lines, "State", "Waiting", 4)
            _kv(lines, "  Reason", state["waiting"].get("reason"), 4)
        elif "terminated" in state:
            _kv(lines, "State", "Terminated", 4)
            _kv(lines, "  Reason", state["terminated"].get("reason"), 4)
            _kv(lines, "  Exit Code", state["terminated"].get("exitCode"), 4)
        last = (cs.get("lastState") or {}).get("terminated")
        if last:
            _kv(lines, "Last State", "Terminated", 4)
            _kv(lines, "  Reason", last.get("reason"), 4)
            _kv(lines, "  Exit Code", last.get("exitCode"), 4)
        _kv(lines, "Ready", str(cs.get("ready", False)), 4)
        _kv(lines, "Restart Count", cs.get("restartCount", 0), 4)
        for kind in ("liveness", "readiness", "startup"):
            p = c.get(f"{kind}Probe")
            if p:
                _kv(lines, kind.capitalize(), _probe_text(p), 4)
        env = c.get("env") or []
        if env:
            lines.append("    Environment:")
            for e in env:
                lines.append(f"      {e['name']}:  {e.get('value', '<set by valueFrom>')}")
    lines.append("Conditions:")
    lines.append("  Type                        Status")
    for cond in st.get("conditions") or []:
        lines.append(f"  {cond['type']:<28}{cond['status']}")
    return "\n".join(lines)


def _probe_text(p: dict) -> str:
    if p.get("httpGet"):
        h = p["httpGet"]
        what = f"http-get {h.get('scheme', 'HTTP').lower()}://:{h['port']}{h.get('path', '/')}"
    elif p.get("tcpSocket"):
        what = f"tcp-socket :{p['tcpSocket']['port']}"
    else:
        what = "exec [" + " ".join((p.get("exec") or {}).get("command", [])) + "]"
    return (f"{what} delay={p.get('initialDelaySeconds', 0)}s timeout={p.get('timeoutSeconds', 1)}s "
            f"period={p.get('periodSeconds', 10)}s #success={p.get('successThreshold', 1)} "
            f"#failure={p.get('failureThreshold', 3)}")


def _describe_deployment(d: dict, client: Client) -> str:
    meta, spec, st = d["metadata"], d["spec"], d.get("status", {})
    lines: list[str] = []
    _kv(lines, "Name", meta["name"])
    _kv(lines, "Namespace", meta.get("namespace"))
    _kv(lines, "CreationTimestamp", meta.get("creationTimestamp"))
    _kv(lines, "Labels", _map(meta.get("labels")))
    _kv(lines, "Selector", tables._selector_text(spec.get("selector", {})))
    want = spec.get("replicas", 1)
    _kv(lines, "Replicas", f"{want} desired | {st.get('updatedReplicas', 0)} updated | {st.get('replicas', 0)} total | "
                           f"{st.get('availableReplicas', 0)} available | {st.get('unavailableReplicas', 0) or 0} unavailable")
    strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
    _kv(lines, "StrategyType", strategy)
    lines.append("Pod Template:")
    lines.append(f"  Labels:  {_map((spec['template'].get('metadata') or {}).get('labels'))}")
    for c in spec["template"]["spec"]["containers"]:
        lines.append(f"  {c['name']}:")
        _kv(lines, "Image", c.get("image"), 4)
        ports = ", ".join(f"{p['containerPort']}/{p.get('protocol', 'TCP')}" for p in c.get("ports") or [])
        _kv(lines, "Port", ports or "<none>", 4)
    lines.append("Conditions:")
    lines.append("  Type           Status  Reason")
    for cond in st.get("conditions") or []:
        lines.append(f"  {cond['type']:<15}{cond['status']:<8}{cond.get('reason', '')}")
    return "\n".join(lines)


def _describe_service(svc: dict, client: Client) -> str:
    meta, spec = svc["metadata"], svc["spec"]
    lines: list[str] = []
    _kv(lines, "Name", meta["name"])
    _kv(lines, "Namespace", meta.get("namespace"))
    _kv(lines, "Labels", _map(meta.get("labels")))
    _kv(lines, "Annotations", _map(meta.get("annotations")))
    _kv(lines, "Selector", ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items()) or "<none>")
    _kv(lines, "Type", spec.get("type", "ClusterIP"))
    _kv(lines, "IP Family Policy", spec.get("ipFamilyPolicy", "SingleStack"))
    _kv(lines, "IP Families", "IPv4")
    _kv(lines, "IP", spec.get("clusterIP"))
    _kv(lines, "IPs", ",".join(spec.get("clusterIPs") or []) or "<none>")
    ing = (svc.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
    if ing:
        _kv(lines, "LoadBalancer Ingress", ", ".join(i.get("ip") or i.get("hostname") for i in ing))
    if spec.get("externalIPs"):
        _kv(lines, "External IPs", ",".join(spec["externalIPs"]))
    ep = find_object(client, by_kind("Endpoints"), meta.get("namespace") or "default", meta["name"])
    eps = [ep] if ep else []
    for p in spec.get("ports") or []:
        pname = p.get("name") or "<unset>"
        _kv(lines, "Port", f"{pname}  {p['port']}/{p.get('protocol', 'TCP')}")
        _kv(lines, "TargetPort", f"{p.get('targetPort', p['port'])}/{p.get('protocol', 'TCP')}")
        if p.get("nodePort"):
            _kv(lines, "NodePort", f"{pname}  {p['nodePort']}/{p.get('protocol', 'TCP')}")
        addrs = [tables.host_port(a["ip"], sp["port"]) for e in eps for sub in e.get("subsets") or []
                 for sp in sub.get("ports") or [] if (sp.get("name") or "") == (p.get("name") or "")
                 for a in sub.get("addresses") or []]
        _kv(lines, "Endpoints", ",".join(addrs) or "<none>")
    _kv(lines, "Session Affinity", spec.get("sessionAffinity", "None"))
    if spec.get("type") in ("NodePort", "LoadBalancer"):
        _kv(lines, "External Traffic Policy", spec.get("externalTrafficPolicy", "Cluster"))
    _kv(lines, "Internal Traffic Policy", spec.get("internalTrafficPolicy", "Cluster"))
    return "\n".join(lines)


def _describe_node(node: dict, client: Client) -> str:
    meta, spec, st = node["metadata"], node.get("spec", {}), node.get("status", {})
    lines: list[str] = []
    roles = sorted(k.split("/", 1)[1] for k in meta.get("labels") or {} if k.startswith(NODE_ROLE_PREFIX))
    _kv(lines, "Name", meta["name"])
    _kv(lines, "Roles", ",".join(roles) or "<none>")
    _kv(lines, "Labels", _map(meta.get("labels")))
    _kv(lines, "CreationTimestamp", meta.get("creationTimestamp"))
    taints = spec.get("taints") or []
    _kv(lines, "Taints", "\n                    ".join(
        f"{t['key']}{'=' + t['value'] if t.get('value') else ''}:{t['effect']}" for t in taints) or "<none>")
    _kv(lines, "Unschedulable", str(bool(spec.get("unschedulable"))).lower())
    lines.append("Conditions:")
    for c in st.get("conditions") or []:
        lines.append(f"  {c['type']:<8}{c['status']:<8}{c.get('reason', '')}  {c.get('message', '')}")
    lines.append("Addresses:")
    for a in st.get("addresses") or []:
        lines.append(f"  {a['type']}:  {a['address']}")
    for part in ("capacity", "allocatable"):
        lines.append(f"{part.capitalize()}:")
        values = st.get(part) or {}
        width = max((len(k) for k in values), default=0) + 2
        for k in sorted(values):
            lines.append(f"  {k + ':':<{width}}{values[k]}")
    _kv(lines, "PodCIDR", spec.get("podCIDR"))
    pods = list_objects(client, by_kind("Pod"), None, fields=f"spec.nodeName={meta['name']},"
                        "status.phase!=Succeeded,status.phase!=Failed")
    lines += _node_resources(st.get("allocatable") or {}, pods)
    return "\n".join(lines)


def _node_resources(allocatable: dict, pods: list[dict]) -> list[str]:
    """kubectl describe node's Non-terminated Pods and Allocated resources."""
    from netemu.spec.models import Pod
    from netemu.spec.podresources import amount, pod_limits, pod_requests

    alloc = {k: amount(k, v) for k, v in allocatable.items()}

    def show(name: str, v: int) -> str:
        text = _quantity(name, v)
        total = alloc.get(name, 0)
        return f"{text} ({int(v / total * 100) if total else 0}%)"

    out = [f"Non-terminated Pods:          ({len(pods)} in total)"]
    rows, req_total, lim_total = [], {}, {}
    for p in pods:
        model = Pod.model_validate(p)
        req, lim = pod_requests(model.spec), pod_limits(model.spec)
        for k, v in req.items():
            req_total[k] = req_total.get(k, 0) + v
        for k, v in lim.items():
            lim_total[k] = lim_total.get(k, 0) + v
        rows.append([p["metadata"].get("namespace", ""), p["metadata"]["name"], show("cpu", req.get("cpu", 0)),
                     show("cpu", lim.get("cpu", 0)), show("memory", req.get("memory", 0)),
                     show("memory", lim.get("memory", 0)), tables.age(p)])
    if rows:
        heads = ["Namespace", "Name", "CPU Requests", "CPU Limits", "Memory Requests", "Memory Limits", "Age"]
        out += ["  " + x for x in tables.render(heads, [["-" * len(h) for h in heads]] + rows).splitlines()]
    out += ["Allocated resources:", "  (Total limits may be over 100 percent, i.e., overcommitted.)"]
    names = ["cpu", "memory", "ephemeral-storage"] + sorted(
        k for k in alloc if k not in ("cpu", "memory", "ephemeral-storage", "pods"))
    res = [["Resource", "Requests", "Limits"], ["--------", "--------", "------"]]
    res += [[k, show(k, req_total.get(k, 0)), show(k, lim_total.get(k, 0))] for k in names]
    out += ["  " + x for x in tables.render(res[0], res[1:]).splitlines()]
    return out


def _quantity(name: str, v: int) -> str:
    """A summed quantity as kubectl prints it: cpu in cores or m, sizes in the largest binary unit."""
    from netemu.spec.autoscaling import format_milli

    if name == "cpu":
        return format_milli(v)
    if v == 0:
        return "0"
    for suffix, size in (("Ei", 1 << 60), ("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20),
                         ("Ki", 1 << 10)):
        if v % size == 0:
            return f"{v // size}{suffix}"
    return str(v)


def _describe_generic(obj: dict, client: Client) -> str:
    return to_yaml(obj)


DESCRIBERS = {
    "Pod": _describe_pod,
    "Deployment": _describe_deployment,
    "Service": _describe_service,
    "Node": _describe_node,
}


from netemu.cli import top_cmds  # noqa: E402

DESCRIBERS["HorizontalPodAutoscaler"] = top_cmds.describe_hpa
