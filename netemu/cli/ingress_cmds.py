"""`get ingress`, `get ingressclass` and `describe ingress`, as kubectl prints them.

Importing this module registers the resource names (ingresses, ingress, ing, ingressclasses,
ingressclass), the tables and the describer with the CLI's registries (netemu.cli.kinds,
netemu.cli.tables, netemu.cli.get_cmds).

    NAME            CLASS    HOSTS   ADDRESS         PORTS   AGE
    ingress-nginx   <none>   *       192.168.1.102   80      2m
"""
from __future__ import annotations

from netemu.cli import get_cmds, kinds, tables

LOAD_BALANCER_WIDTH = 16  # kubectl cuts ADDRESS there unless -o wide


def format_hosts(rules: list[dict]) -> str:
    """kubectl's formatHosts: the first three hosts, `*` when no rule has one."""
    hosts: list[str] = []
    more = False
    for rule in rules or []:
        if len(hosts) == 3:
            more = True
        if not more and rule.get("host"):
            hosts.append(rule["host"])
    if not hosts:
        return "*"
    text = ",".join(hosts)
    return f"{text} + {len(rules) - 3} more..." if more else text


def load_balancer_text(ing: dict, wide: bool) -> str:
    lb = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    text = ",".join(i.get("ip") or i.get("hostname") or "" for i in lb)
    if len(text) > LOAD_BALANCER_WIDTH and not wide:
        return text[:LOAD_BALANCER_WIDTH] + "..."
    return text


def ingress_row(ing: dict, wide: bool, now: float) -> list[str]:
    spec = ing.get("spec") or {}
    return [ing["metadata"]["name"], spec.get("ingressClassName") or "<none>", format_hosts(spec.get("rules") or []),
            load_balancer_text(ing, wide), "80, 443" if spec.get("tls") else "80", tables.age(ing, now)]


def ingressclass_row(ic: dict, wide: bool, now: float) -> list[str]:
    spec = ic.get("spec") or {}
    params = spec.get("parameters")
    ptext = "<none>"
    if params:
        group = params.get("apiGroup")
        kind = f"{params.get('kind')}.{group}" if group else params.get("kind")
        ptext = f"{kind}/{params.get('name')}"
    return [ic["metadata"]["name"], spec.get("controller") or "", ptext, tables.age(ic, now)]


INGRESS_HEADERS = ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
INGRESSCLASS_HEADERS = ["NAME", "CONTROLLER", "PARAMETERS", "AGE"]


# ------------------------------------------------------------------------------- describe
def _backend_text(b: dict, endpoints: dict) -> str:
    svc = (b or {}).get("service")
    if not svc:
        res = (b or {}).get("resource") or {}
        return f"{res.get('kind', '')}/{res.get('name', '')}" if res else "<default>"
    port = svc.get("port") or {}
    ptext = port.get("number") if port.get("number") is not None else port.get("name", "")
    eps = endpoints.get(svc.get("name"))
    if eps is None:
        shown = f'<error: services "{svc.get("name")}" not found>'
    else:
        shown = ",".join(eps[:3]) + (f" + {len(eps) - 3} more..." if len(eps) > 3 else "") if eps else "<none>"
    return f"{svc.get('name')}:{ptext} ({shown})"


def _endpoints_by_service(client, namespace: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ep in client.call("get", kind="Endpoints", namespace=namespace):
        pairs = []
        for sub in ep.get("subsets") or []:
            for a in sub.get("addresses") or []:
                for p in sub.get("ports") or [{}]:
                    pairs.append(f"{a['ip']}:{p['port']}" if p.get("port") else a["ip"])
        out[ep["metadata"]["name"]] = pairs
    return out


def describe_ingress(ing: dict, client) -> str:
    meta, spec = ing["metadata"], ing.get("spec") or {}
    endpoints = _endpoints_by_service(client, meta.get("namespace") or "default")
    lines: list[str] = []
    kv = get_cmds._kv
    kv(lines, "Name", meta["name"])
    kv(lines, "Labels", get_cmds._map(meta.get("labels")))
    kv(lines, "Namespace", meta.get("namespace"))
    kv(lines, "Address", load_balancer_text(ing, True))
    kv(lines, "Ingress Class", spec.get("ingressClassName") or "<none>")
    kv(lines, "Default backend", _backend_text(spec["defaultBackend"], endpoints) if spec.get("defaultBackend")
       else "<default>")
    if spec.get("tls"):
        lines.append("TLS:")
        for t in spec["tls"]:
            hosts = ",".join(t.get("hosts") or [])
            name = t.get("secretName")
            lines.append(f"  {name} terminates {hosts}" if name else f"  SNI routes {hosts}")
    lines.append("Rules:")
    rows = []
    for rule in spec.get("rules") or []:
        rows.append([rule.get("host") or "*", "", ""])
        http = rule.get("http") or {}
        for p in http.get("paths") or []:
            rows.append(["", p.get("path") or "", _backend_text(p.get("backend"), endpoints)])
    if not spec.get("rules"):
        rows.append(["*", "*", _backend_text(spec.get("defaultBackend"), endpoints)])
    body = tables.render(["Host", "Path", "Backends"], rows).splitlines()
    sep = ["----", "----", "--------"]
    widths = [max(len(r[i]) for r in rows + [["Host", "Path", "Backends"]]) for i in range(3)]
    lines.append("  " + body[0])
    lines.append("  " + "   ".join(s.ljust(widths[i]) for i, s in enumerate(sep)).rstrip())
    lines += ["  " + b for b in body[1:]]
    kv(lines, "Annotations", get_cmds._map(meta.get("annotations")))
    return "\n".join(lines)


def describe_ingressclass(ic: dict, client) -> str:
    meta, spec = ic["metadata"], ic.get("spec") or {}
    lines: list[str] = []
    kv = get_cmds._kv
    kv(lines, "Name", meta["name"])
    kv(lines, "Labels", get_cmds._map(meta.get("labels")))
    kv(lines, "Annotations", get_cmds._map(meta.get("annotations")))
    kv(lines, "Controller", spec.get("controller") or "")
    params = spec.get("parameters")
    if params:
        lines.append("Parameters:")
        for k in ("apiGroup", "kind", "name", "namespace", "scope"):
            if params.get(k):
                kv(lines, k[0].upper() + k[1:], params[k], 2)
    return "\n".join(lines)


# ------------------------------------------------------------------------------- registration
def register() -> None:
    for name in ("ingresses", "ingress", "ing", "ingresses.networking.k8s.io", "ingress.networking.k8s.io"):
        kinds.ALIASES[name] = "Ingress"
    for name in ("ingressclasses", "ingressclass", "ingressclasses.networking.k8s.io",
                 "ingressclass.networking.k8s.io"):
        kinds.ALIASES[name] = "IngressClass"
    kinds.CLUSTER_SCOPED.add("IngressClass")
    tables.TABLES["Ingress"] = (INGRESS_HEADERS, [], ingress_row)
    tables.TABLES["IngressClass"] = (INGRESSCLASS_HEADERS, [], ingressclass_row)
    get_cmds.DESCRIBERS["Ingress"] = describe_ingress
    get_cmds.DESCRIBERS["IngressClass"] = describe_ingressclass


register()
