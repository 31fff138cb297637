"""`expose`: a Service built from a Deployment, ReplicaSet, Pod or Service, as kubectl makes it.

Pure and light (plain dicts, as the API serves the objects): the CLI builds the Service and the API
validates it when it is created, like any other Service.
"""
from __future__ import annotations

from typing import Optional


class ExposeError(ValueError):
    pass


def _selector_and_ports(obj: dict) -> tuple[dict[str, str], list[tuple[int, str, Optional[str]]]]:
    kind, meta, spec = obj.get("kind"), obj.get("metadata") or {}, obj.get("spec") or {}
    name = meta.get("name")
    if kind in ("Deployment", "ReplicaSet"):
        sel = spec.get("selector") or {}
        if sel.get("matchExpressions"):
            raise ExposeError(f"cannot expose {kind.lower()} {name}: its selector uses matchExpressions, which a "
                              "Service selector cannot express")
        selector = dict(sel.get("matchLabels") or {})
        containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    elif kind == "Pod":
        selector = dict(meta.get("labels") or {})
        if not selector:
            raise ExposeError(f"cannot expose pod {name}: it has no labels to select it by")
        containers = spec.get("containers") or []
    elif kind == "Service":
        selector = dict(spec.get("selector") or {})
        return selector, [(p.get("port"), p.get("protocol") or "TCP", p.get("name")) for p in spec.get("ports") or []]
    else:
        raise ExposeError(f"cannot expose a {kind}")
    ports = [(p.get("containerPort"), p.get("protocol") or "TCP", p.get("name"))
             for c in containers for p in c.get("ports") or []]
    return selector, ports


def expose(obj: dict, *, name: Optional[str] = None, type_: str = "ClusterIP", port: Optional[int] = None,
           target_port: Optional[str] = None, protocol: Optional[str] = None, external_ip: Optional[str] = None,
           selector: Optional[dict[str, str]] = None, session_affinity: Optional[str] = None,
           cluster_ip: Optional[str] = None, load_balancer_ip: Optional[str] = None,
           labels: Optional[dict[str, str]] = None) -> dict:
    """The Service (a dict, ready to POST) that `kubectl expose` makes for `obj`."""
    meta = obj.get("metadata") or {}
    sel, found = _selector_and_ports(obj)
    if selector:
        sel = selector
    if port is not None:
        tp = target_port if target_port is not None else port
        tp_val = int(tp) if isinstance(tp, str) and tp.isdigit() else tp
        ports = [{"port": port, "protocol": protocol or "TCP", "targetPort": tp_val}]
    elif found:
        ports = []
        for i, (p, proto, pname) in enumerate(found):
            sp = {"port": p, "protocol": protocol or proto, "targetPort": p}
            if len(found) > 1:
                sp = {"name": pname or f"port-{i + 1}", **sp}
            ports.append(sp)
    else:
        raise ExposeError(f"couldn't find port via --port flag or introspection: {str(obj.get('kind')).lower()} "
                          f"{meta.get('name')} declares no containerPorts, so give --port")
    spec: dict = {"ports": ports, "selector": sel, "type": type_ or "ClusterIP"}
    if external_ip:
        spec["externalIPs"] = [x.strip() for x in external_ip.split(",") if x.strip()]
    if session_affinity:
        spec["sessionAffinity"] = session_affinity
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    if load_balancer_ip:
        spec["loadBalancerIP"] = load_balancer_ip
    svc_meta: dict = {"name": name or meta.get("name")}
    if meta.get("namespace"):
        svc_meta["namespace"] = meta["namespace"]
    meta_labels = labels if labels is not None else dict(meta.get("labels") or {})
    if meta_labels:
        svc_meta["labels"] = meta_labels
    return {"apiVersion": "v1", "kind": "Service", "metadata": svc_meta, "spec": spec}


def selector_map(text: Optional[str]) -> Optional[dict[str, str]]:
    """--selector key=value,...: the Service's selector."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if not sep:
            raise ExposeError(f"--selector {text!r}: expected key=value pairs")
        out[k.strip()] = v.strip()
    return out
