"""`expose`: a Service built from a Deployment, ReplicaSet, Pod or Service, as kubectl makes it."""
from __future__ import annotations

from typing import Optional

from netemu.spec.defaults import apply_defaults
from netemu.spec.models import K8sModel, ObjectMeta, Service, ServicePort, ServiceSpec


class ExposeError(ValueError):
    pass


def _selector_and_ports(obj: K8sModel) -> tuple[dict[str, str], list[tuple[int, str, Optional[str]]]]:
    if obj.kind in ("Deployment", "ReplicaSet"):
        sel = obj.spec.selector
        if sel.match_expressions:
            raise ExposeError(f"cannot expose {obj.kind.lower()} {obj.metadata.name}: its selector uses "
                              "matchExpressions, which a Service selector cannot express")
        selector = dict(sel.match_labels or {})
        containers = obj.spec.template.spec.containers
    elif obj.kind == "Pod":
        selector = dict(obj.metadata.labels or {})
        if not selector:
            raise ExposeError(f"cannot expose pod {obj.metadata.name}: it has no labels to select it by")
        containers = obj.spec.containers
    elif obj.kind == "Service":
        selector = dict(obj.spec.selector or {})
        return selector, [(p.port, p.protocol or "TCP", p.name) for p in obj.spec.ports or []]
    else:
        raise ExposeError(f"cannot expose a {obj.kind}")
    ports = [(p.container_port, p.protocol or "TCP", p.name) for c in containers for p in c.ports or []]
    return selector, ports


def expose(obj: K8sModel, *, name: Optional[str] = None, type_: str = "ClusterIP", port: Optional[int] = None,
           target_port: Optional[str] = None, protocol: Optional[str] = None, external_ip: Optional[str] = None,
           selector: Optional[dict[str, str]] = None, session_affinity: Optional[str] = None,
           cluster_ip: Optional[str] = None, load_balancer_ip: Optional[str] = None,
           labels: Optional[dict[str, str]] = None) -> Service:
    sel, found = _selector_and_ports(obj)
    if selector:
        sel = selector
    if port is not None:
        tp = target_port if target_port is not None else port
        tp_val = int(tp) if isinstance(tp, str) and tp.isdigit() else tp
        ports = [ServicePort(port=port, protocol=protocol or "TCP", target_port=tp_val)]
    elif found:
        ports = []
        for i, (p, proto, pname) in enumerate(found):
            ports.append(ServicePort(name=(pname or f"port-{i + 1}") if len(found) > 1 else None,
                                     port=p, protocol=protocol or proto, target_port=p))
    else:
        raise ExposeError(f"couldn't find port via --port flag or introspection: {obj.kind.lower()} "
                          f"{obj.metadata.name} declares no containerPorts, so give --port")
    spec = ServiceSpec(type=type_, selector=sel, ports=ports)
    if external_ip:
        spec.external_ips = [x.strip() for x in external_ip.split(",") if x.strip()]
    if session_affinity:
        spec.session_affinity = session_affinity
    if cluster_ip:
        spec.cluster_ip = cluster_ip
    if load_balancer_ip:
        spec.load_balancer_ip = load_balancer_ip
    meta_labels = labels if labels is not None else dict(
        (obj.metadata.labels or {}) if obj.kind != "Pod" else (obj.metadata.labels or {}))
    svc = Service(metadata=ObjectMeta(name=name or obj.metadata.name, namespace=obj.metadata.namespace,
                                      labels=meta_labels or None), spec=spec)
    apply_defaults(svc)  # the same API defaults a loaded Service gets
    return svc
