"""`get` and `describe`."""
from __future__ import annotations

import time

from netemu.cli import tables
from netemu.cli.client import CliError, Client, pick_lab
from netemu.cli.kinds import CLUSTER_SCOPED, split_ref
from netemu.cli.output import print_objects, to_yaml


def _client(args) -> Client:
    return Client(pick_lab(args.lab))


def _namespace(args, kind: str):
    if kind in CLUSTER_SCOPED:
        return None
    if getattr(args, "all_namespaces", False):
        return None
    return args.namespace or "default"


def endpoints_row(ep: dict, wide: bool, now: float) -> list[str]:
    pairs = []
    for sub in ep.get("subsets") or []:
        for a in sub.get("addresses") or []:
            for p in sub.get("ports") or [{}]:
                pairs.append(f"{a['ip']}:{p['port']}" if p.get("port") else a["ip"])
    text = ",".join(pairs[:3]) + (f" + {len(pairs) - 3} more..." if len(pairs) > 3 else "")
    return [ep["metadata"]["name"], text or "<none>", tables.age(ep, now)]


tables.TABLES["Endpoints"] = (["NAME", "ENDPOINTS", "AGE"], [], endpoints_row)


def cmd_get(args) -> int:
    client = _client(args)
    if getattr(args, "watch", False):
        return _watch(client, args)
    refs = args.resource.split(",") if args.resource != "all" else ["pods", "services", "deployments", "replicasets"]
    fmt = args.output or ""
    first = True
    for ref in refs:
        kind, name = split_ref(ref, args.name)
        if kind == "Event":
            return _print_events(client, args)
        ns = _namespace(args, kind)
        items = client.call("get", kind=kind, namespace=ns, name=name, selector=args.selector)
        if fmt in ("json", "yaml", "name"):
            print_objects(items, fmt, single=bool(name))
            continue
        if fmt and fmt != "wide":
            raise CliError(f"unknown output format {fmt!r}: use wide, json, yaml or name")
        if not items:
            if len(refs) == 1:
                where = f" in {ns} namespace" if ns else ""
                print(f"No resources found{where}.")
            continue
        if not first:
            print()
        first = False
        out = tables.table(kind, items, wide=fmt == "wide",
                           all_namespaces=getattr(args, "all_namespaces", False) and kind not in CLUSTER_SCOPED)
        if kind == "Service" and fmt == "wide":
            out = _with_announcer(client, items, out)
        print(out)
    return 0


def _watch(client: Client, args) -> int:
    """`get -w`: the table, then a line each time an object changes or goes (like kubectl)."""
    kind, name = split_ref(args.resource, args.name)
    ns = _namespace(args, kind)
    wide = args.output == "wide"
    all_ns = getattr(args, "all_namespaces", False) and kind not in CLUSTER_SCOPED
    headers, wide_headers, row = tables.TABLES[kind]
    hdr = (["NAMESPACE"] if all_ns else []) + list(headers) + (wide_headers if wide else [])
    seen: dict[tuple, list[str]] = {}
    widths: list[int] = []
    first = True
    try:
        while True:
            now = time.time()
            items = client.call("get", kind=kind, namespace=ns, name=name, selector=args.selector)
            current = {}
            for o in items:
                key = (o["metadata"].get("namespace", ""), o["metadata"]["name"])
                r = row(o, wide, now)
                current[key] = (([key[0]] if all_ns else []) + r)
            if first:
                rows = list(current.values())
                widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(hdr)]
                print(_line(hdr, widths))
                for r in rows:
                    print(_line(r, widths))
                first = False
            else:
                for key, r in current.items():
                    old = seen.get(key)
                    # AGE alone changing is not news
                    if old is None or _without_age(old, hdr) != _without_age(r, hdr):
                        print(_line(r, widths), flush=True)
            seen = current
            time.sleep(0.2)
    except KeyboardInterrupt:
        return 0


def _without_age(r: list[str], hdr: list[str]) -> list[str]:
    return [c for c, h in zip(r, hdr) if h not in ("AGE", "RESTARTS")] + [
        c.split(" ")[0] for c, h in zip(r, hdr) if h == "RESTARTS"]


def _line(cells: list[str], widths: list[int]) -> str:
    return "   ".join(c.ljust(widths[i]) if i < len(widths) else c for i, c in enumerate(cells)).rstrip()


def _with_announcer(client: Client, items: list[dict], table: str) -> str:
    """-o wide for Services: which node's speaker answers ARP for each LoadBalancer IP."""
    try:
        services = client.call("announcements")["services"]
    except CliError:
        return table
    lines = table.splitlines()
    col = ["ANNOUNCED-BY"] + [
        (services.get(f"{o['metadata'].get('namespace')}/{o['metadata']['name']}") or {}).get("node") or "<none>"
        for o in items]
    width = max(len(line) for line in lines)
    return "\n".join(line.ljust(width) + "   " + c for line, c in zip(lines, col))


def _print_events(client: Client, args) -> int:
    events = client.call("events", namespace=None if args.all_namespaces else (args.namespace or "default"))
    if not events:
        print("No events found.")
        return 0
    now = time.time()
    rows = [[tables.human_duration(now - e["last"]), e["type"], e["reason"],
             f"{e['kind'].lower()}/{e['name']}", e["message"]] for e in events]
    print(tables.render(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], rows))
    return 0


# ------------------------------------------------------------------------------ describe
def cmd_describe(args) -> int:
    client = _client(args)
    kind, name = split_ref(args.resource, args.name)
    ns = _namespace(args, kind) or "default"
    items = client.call("get", kind=kind, namespace=ns if kind not in CLUSTER_SCOPED else None, name=name,
                        selector=args.selector)
    for i, obj in enumerate(items):
        if i:
            print()
        events = client.call("events", kind=kind, name=obj["metadata"]["name"],
                             namespace=obj["metadata"].get("namespace"))
        describer = DESCRIBERS.get(kind, _describe_generic)
        print(describer(obj, client).rstrip())
        print(_events_block(events))
    return 0


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
        age = tables.human_duration(now - e["last"])
        if e["count"] > 1:
            age = f"{age} (x{e['count']} over {tables.human_duration(e['last'] - e['first'])})"
        rows.append([e["type"], e["reason"], age, e["source"], e["message"]])
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
    eps = client.call("get", kind="Endpoints", namespace=meta.get("namespace"), name=meta["name"])
    for p in spec.get("ports") or []:
        pname = p.get("name") or "<unset>"
        _kv(lines, "Port", f"{pname}  {p['port']}/{p.get('protocol', 'TCP')}")
        _kv(lines, "TargetPort", f"{p.get('targetPort', p['port'])}/{p.get('protocol', 'TCP')}")
        if p.get("nodePort"):
            _kv(lines, "NodePort", f"{pname}  {p['nodePort']}/{p.get('protocol', 'TCP')}")
        addrs = [f"{a['ip']}:{sp['port']}" for e in eps for sub in e.get("subsets") or []
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
    roles = sorted(k.split("/", 1)[1] for k in meta.get("labels") or {} if k.startswith("node-role.kubernetes.io/"))
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
    _kv(lines, "PodCIDR", spec.get("podCIDR"))
    pods = [p for p in client.call("get", kind="Pod", namespace=None) if p["spec"].get("nodeName") == meta["name"]]
    lines.append(f"Non-terminated Pods:          ({len(pods)} in total)")
    rows = [[p["metadata"].get("namespace", ""), p["metadata"]["name"], tables.age(p)] for p in pods]
    if rows:
        lines += ["  " + x for x in tables.render(["Namespace", "Name", "Age"], rows).splitlines()]
    return "\n".join(lines)


def _describe_generic(obj: dict, client: Client) -> str:
    return to_yaml(obj)


DESCRIBERS = {
    "Pod": _describe_pod,
    "Deployment": _describe_deployment,
    "Service": _describe_service,
    "Node": _describe_node,
}


from netemu.cli import top_cmds  # noqa: E402  (registers the `get hpa` table)

DESCRIBERS["HorizontalPodAutoscaler"] = top_cmds.describe_hpa
