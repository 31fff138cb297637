"""The EndpointSlice controller: Service selector x pods -> EndpointSlices.

Pods are grouped by the ports their targetPorts resolve to (a named targetPort may resolve to
different numbers in different pods), one slice per group (split at 100 endpoints, as the
controller does). Slices of Services without a selector are the user's and are left alone.

Each address family of the Service's ipFamilies has slices of its own (addressType IPv4 or IPv6,
holding the pods' addresses of that family; a pod without one is left out of them), as the
controller's reconciler does it per address type; a family the Service stops having loses its slices.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from netemu.control import labels, workqueue
from netemu.control import naming
from netemu.control.naming import generate_name
from netemu.control.pods import is_ready, is_terminal, is_terminating
from netemu.spec.families import IPV4, IPV6, family_of
from netemu.spec.models import (
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    ObjectMeta,
    ObjectReference,
    OwnerReference,
    Pod,
    Service,
)
from netemu.wellknown import ENDPOINTSLICE_CONTROLLER as MANAGED_BY
from netemu.wellknown import MANAGED_BY_LABEL, SERVICE_NAME_LABEL

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

MAX_ENDPOINTS_PER_SLICE = 100


def resolve_target_port(pod: Pod, port) -> Optional[int]:
    """A Service port's targetPort for one pod: a number, or a containerPort found by name."""
    target = port.target_port if port.target_port is not None else port.port
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for container in pod.spec.containers:
        for cp in container.ports or []:
            if cp.name == target and (cp.protocol or "TCP") == (port.protocol or "TCP"):
                return cp.container_port
    return None


def service_address_types(svc: Service) -> list[str]:
    """getAddressTypesForService: the Service's ipFamilies, in order; a Service without them (never
    admitted: an offline file's) gets its cluster IP's family, IPv4 when it has none."""
    fams = [f for f in svc.spec.ip_families or [] if f in (IPV4, IPV6)]
    if fams:
        return list(dict.fromkeys(fams))
    ip = svc.spec.cluster_ip or ""
    return [IPV6 if ip != "None" and ":" in ip else IPV4]


def pod_addresses(pod: Pod, address_type: str = IPV4) -> list[str]:
    """getEndpointAddresses: the pod's addresses of that family (podIP is the IPv4 one, podIPs has both
    in a dual-stack lab)."""
    if address_type == IPV4:
        ip = pod.status.pod_ip
        if ip and family_of(ip) == IPV4:
            return [ip]
    return [p.ip for p in pod.status.pod_ips or [] if p.ip and family_of(p.ip) == address_type][:1]


def _endpoint(pod: Pod, svc: Service, addresses: Optional[list[str]] = None) -> Endpoint:
    ready = is_ready(pod) and not is_terminating(pod)
    publish = bool(svc.spec.publish_not_ready_addresses)
    hostname = None
    if pod.spec.hostname and pod.spec.subdomain == svc.metadata.name:
        hostname = pod.spec.hostname
    return Endpoint(
        addresses=addresses if addresses is not None else [pod.status.pod_ip],
        conditions=EndpointConditions(ready=ready or (publish and not is_terminating(pod)),
                                      serving=is_ready(pod), terminating=is_terminating(pod)),
        hostname=hostname,
        node_name=pod.spec.node_name,
        target_ref=ObjectReference(kind="Pod", namespace=pod.metadata.namespace, name=pod.metadata.name,
                                   uid=pod.metadata.uid),
    )


def desired_slices(svc: Service, pods: list[Pod], address_type: str = IPV4) -> dict[tuple, list[Endpoint]]:
    """Endpoints of one address family grouped by their resolved port tuple, in pod name order."""
    groups: dict[tuple, list[Endpoint]] = {}
    for pod in sorted(pods, key=lambda p: p.metadata.name):
        if not pod.status.pod_ip or is_terminal(pod):
            continue
        if not labels.matches_map(svc.spec.selector, pod.metadata.labels):
            continue
        addresses = pod_addresses(pod, address_type)
        if not addresses:
            continue  # no address of this family: not in its slices
        ports = []
        for sp in svc.spec.ports or []:
            n = resolve_target_port(pod, sp)
            if n is not None:
                ports.append((sp.name or "", sp.protocol or "TCP", n, sp.app_protocol))
        key = tuple(ports)
        groups.setdefault(key, []).append(_endpoint(pod, svc, addresses))
    return groups


def _services_of_pod(store, pod: Pod):
    """The Services a pod's change may concern: those selecting it now, and those whose slices hold it
    (its labels may have just stopped matching)."""
    ns = pod.metadata.namespace
    keys = [("Service", ns, svc.metadata.name) for svc in store.services_selecting(ns, pod.metadata.labels)]
    for sl in store.slices_holding(ns, pod.metadata.name):
        keys.extend(_service_of_slice(store, sl))
    return keys


def _service_of_slice(store, sl: EndpointSlice):
    labels_ = sl.metadata.labels or {}
    if labels_.get(MANAGED_BY_LABEL) != MANAGED_BY:
        return ()
    return (("Service", sl.metadata.namespace, labels_.get(SERVICE_NAME_LABEL, "")),)


WATCHES = {"Service": workqueue.itself, "Pod": _services_of_pod, "EndpointSlice": _service_of_slice}


def reconcile(c: "Cluster", keys=None) -> None:
    """keys: the queued Services (None: every one, and slices whose Service is gone)."""
    if keys is None:
        names = [(s.metadata.namespace, (s.metadata.labels or {}).get(SERVICE_NAME_LABEL, ""))
                 for s in c.store.list("EndpointSlice") if _service_of_slice(c.store, s)]
        keys = {("Service", ns, name) for ns, name in names} | {
            ("Service", svc.metadata.namespace, svc.metadata.name) for svc in c.store.list("Service")}
    for _, ns, name in sorted(keys):
        existing = [s for s in c.store.select("EndpointSlice", ns, {SERVICE_NAME_LABEL: name})
                    if _service_of_slice(c.store, s)]
        svc = c.store.find("Service", ns, name)
        if svc is None or not svc.spec.selector or svc.spec.type == "ExternalName":
            for s in existing:  # the Service is gone, or its slices are not the controller's to keep
                c.store.delete("EndpointSlice", ns, s.metadata.name)
            continue
        pods = c.store.select("Pod", ns, svc.spec.selector)
        types = service_address_types(svc)
        for address_type in types:
            want: list[tuple[tuple, list[Endpoint]]] = []
            # the IPv4 call is the two-argument one that the work counters (and every caller) know
            groups = desired_slices(svc, pods) if address_type == IPV4 else desired_slices(svc, pods, address_type)
            for key, eps in groups.items():
                for i in range(0, len(eps), MAX_ENDPOINTS_PER_SLICE):
                    want.append((key, eps[i:i + MAX_ENDPOINTS_PER_SLICE]))
            if not want:
                want = [((), [])]  # a Service with no endpoints still has one (empty) slice per family
            _apply(c, svc, [s for s in existing if s.address_type == address_type], want, address_type)
        for s in existing:
            if s.address_type not in types:  # a family the Service no longer has
                c.store.delete("EndpointSlice", ns, s.metadata.name)


def _apply(c: "Cluster", svc: Service, existing: list[EndpointSlice], want, address_type: str = IPV4) -> None:
    ns = svc.metadata.namespace
    pool = sorted(existing, key=lambda s: s.metadata.name)
    for key, eps in want:
        ports = [EndpointPort(name=n, protocol=proto, port=port, app_protocol=app) for n, proto, port, app in key]
        # reuse a slice with the same ports first, so names stay stable across changes
        match = next((s for s in pool if _port_key(s) == key), None) or (pool[0] if pool else None)
        if match is not None:
            pool.remove(match)
            new_dump = [e.dump() for e in eps], [p.dump() for p in ports]
            if ([e.dump() for e in match.endpoints], [p.dump() for p in match.ports or []]) != new_dump:
                match.endpoints, match.ports = eps, ports
                c.store.update(match)
            continue
        taken = naming.Taken(lambda name: c.store.find("EndpointSlice", ns, name) is not None)
        sl = EndpointSlice(
            metadata=ObjectMeta(
                name=generate_name(f"{svc.metadata.name}-", c.store.rng, taken),
                generate_name=f"{svc.metadata.name}-",
                namespace=ns,
                labels={SERVICE_NAME_LABEL: svc.metadata.name, MANAGED_BY_LABEL: MANAGED_BY},
                owner_references=[OwnerReference(api_version="v1", kind="Service", name=svc.metadata.name,
                                                 uid=svc.metadata.uid or "", controller=True)],
            ),
            address_type=address_type,
            endpoints=eps,
            ports=ports,
        )
        c.store.create(sl)
    for s in pool:
        c.store.delete("EndpointSlice", ns, s.metadata.name)


def _port_key(s: EndpointSlice) -> tuple:
    return tuple((p.name or "", p.protocol or "TCP", p.port, p.app_protocol) for p in s.ports or [])


def endpoints_view(svc: Service, slices: list[EndpointSlice]) -> dict:
    """The classic v1 Endpoints object, derived from the Service's slices (as the
    endpoints mirroring controller keeps it): ready addresses, not-ready ones, and ports."""
    subsets: dict[tuple, dict] = {}
    primary = service_address_types(svc)[0]  # the Endpoints controller gives the primary family only
    for s in slices:
        if s.address_type != primary:
            continue
        ports = tuple((p.name or "", p.port, p.protocol or "TCP") for p in s.ports or [])
        sub = subsets.setdefault(ports, {"addresses": [], "notReadyAddresses": [],
                                         "ports": [{"name": n, "port": p, "protocol": pr} if n else
                                                   {"port": p, "protocol": pr} for n, p, pr in ports]})
        for ep in s.endpoints:
            for addr in ep.addresses:
                entry = {"ip": addr}
                if ep.hostname:
                    entry["hostname"] = ep.hostname
                if ep.node_name:
                    entry["nodeName"] = ep.node_name
                if ep.target_ref:
                    entry["targetRef"] = ep.target_ref.dump()
                ready = ep.conditions.ready is not False
                sub["addresses" if ready else "notReadyAddresses"].append(entry)
    out_subsets = []
    for sub in subsets.values():
        if not sub["addresses"] and not sub["notReadyAddresses"]:
            continue
        sub["addresses"].sort(key=lambda a: a["ip"])
        sub = {k: v for k, v in sub.items() if v}
        out_subsets.append(sub)
    meta = {"name": svc.metadata.name, "namespace": svc.metadata.namespace,
            "creationTimestamp": svc.metadata.creation_timestamp}
    if svc.metadata.labels:
        meta["labels"] = dict(svc.metadata.labels)
    obj = {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta}
    if out_subsets:
        obj["subsets"] = out_subsets
    return obj


def slices_from_pods(services: list[Service], pods: list[Pod]) -> list[EndpointSlice]:
    """EndpointSlices for Services and Pods given in a file (for offline rendering): the same
    grouping as the controller, named `<service>-<n>`."""
    out = []
    for svc in services:
        if not svc.spec.selector or svc.spec.type == "ExternalName":
            continue
        ns = svc.metadata.namespace or "default"
        mine = [p for p in pods if (p.metadata.namespace or "default") == ns]
        groups = [(t, key, eps) for t in service_address_types(svc)
                  for key, eps in desired_slices(svc, mine, t).items()]
        for i, (address_type, key, eps) in enumerate(groups):
            out.append(EndpointSlice(
                metadata=ObjectMeta(name=f"{svc.metadata.name}-{i}", namespace=ns,
                                    labels={SERVICE_NAME_LABEL: svc.metadata.name, MANAGED_BY_LABEL: MANAGED_BY}),
                address_type=address_type,
                endpoints=eps,
                ports=[EndpointPort(name=n, protocol=proto, port=port, app_protocol=app) for n, proto, port, app in key]))
    return out
