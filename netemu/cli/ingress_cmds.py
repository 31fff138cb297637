"""`describe ingress` and `describe ingressclass`, as kubectl prints them (`get ingress` prints the
API's Table). Importing this module registers the describers with netemu.cli.get_cmds.
"""
from __future__ import annotations

from netemu.cli import get_cmds, tables
from netemu.cli.kinds import by_kind, list_objects

LOAD_BALANCER_WIDTH = 16  # kubectl cuts ADDRESS there unless -o wide


def load_balancer_text(ing: dict, wide: bool) -> str:
    lb = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    text = ",".join(i.get("ip") or i.get("hostname") or "" for i in lb)
    if len(text) > LOAD_BALANCER_WIDTH and not wide:
        return text[:LOAD_BALANCER_WIDTH] + "..."
    return text


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
    for ep in list_objects(client, by_kind("Endpoints"), namespace):
        pairs = []
        for sub in ep.get("subsets") or []:
            for a in sub.get("addresses") or []:
                for p in sub.get("ports") or [{}]:
                    pairs.append(tables.host_port(a["ip"], p["port"]) if p.get("port") else a["ip"])
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
    get_cmds.DESCRIBERS["Ingress"] = describe_ingress
    get_cmds.DESCRIBERS["IngressClass"] = describe_ingressclass


register()
