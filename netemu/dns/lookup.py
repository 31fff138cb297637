"""What a name in the cluster zone stands for: the backend half of CoreDNS's kubernetes plugin.

A lookup yields *hits*: an address or a name (ExternalName), the port it serves, and the name
that owns it (the target of an SRV record). ``NoSuchName`` means NXDOMAIN; an empty list means
the name exists with nothing to show (NODATA). The rules, quirks included, are CoreDNS's:

    [_port._proto. | endpoint.] service.namespace.svc.zone   services, endpoints, SRV
    a-b-c-d.namespace.pod.zone                               pods (``pods insecure``)
    dns-version.zone TXT                                     the schema version
"""
from __future__ import annotations

from typing import NamedTuple

from netemu.dns.names import ip_from_pod_label, ip_from_reverse, parse_ip
from netemu.dns.zone import EXTERNAL_NAME, HEADLESS, ClusterZone, Port

SCHEMA_VERSION = "1.1.0"  # Kubernetes DNS specification
SCHEMA_VERSION_TTL = 28800  # CoreDNS hard-codes it

Labels = tuple[str, ...]


class NoSuchName(Exception):
    """The name does not exist: NXDOMAIN."""


class Hit(NamedTuple):
    host: str      # an IP address, or a domain name (ExternalName)
    port: int      # -1: no port declared (no SRV record)
    owner: Labels  # the name this address belongs to (SRV target, NS name, ...)
    ttl: int
    text: str = ""  # TXT data


class Query(NamedTuple):
    """One name to look up, relative to the zone (apex) it was found in."""
    zone: ClusterZone
    name: Labels      # as asked (case kept: answers echo it)
    lower: Labels     # lowercase, for matching
    apex: Labels      # the zone's labels in the case the client used


def services(q: Query, qtype: str) -> list[Hit]:
    """Hits for a query type (CoreDNS's Services): TXT and NS special-cased, SRV without
    ExternalName targets."""
    base = q.lower[:len(q.lower) - len(q.apex)]
    if qtype == "TXT":
        if base == ("dns-version",):
            return [Hit("", 0, q.name, SCHEMA_VERSION_TTL, SCHEMA_VERSION)]
        # another type exists for the name: NODATA. Otherwise NXDOMAIN, even for names that
        # exist without records (CoreDNS answers TXT that way)
        if records(q):
            return []
        raise NoSuchName
    if qtype == "NS":
        return [Hit(ip, 0, owner + q.apex, q.zone.ttl) for owner, ip in q.zone.nameservers]
    if is_nameserver_name(q):
        want = 4 if qtype == "A" else 6 if qtype == "AAAA" else 0
        return [Hit(ip, 0, q.name, q.zone.ttl) for _, ip in q.zone.nameservers
                if (":" in ip and want == 6) or (":" not in ip and want == 4)]
    hits = records(q)
    if qtype == "SRV":
        hits = [h for h in hits if parse_ip(h.host) is not None]
    return hits


def is_nameserver_name(q: Query) -> bool:
    """'ns.dns.<zone>', CoreDNS's own name. Compared as CoreDNS does: the lowercased query
    against the zone as the client spelled it, so a mixed-case zone does not match."""
    return ".".join(q.lower) == "ns.dns." + ".".join(q.apex)


def records(q: Query) -> list[Hit]:
    """CoreDNS's Records: parse the name, then find the pod or the service."""
    base = q.lower[:len(q.lower) - len(q.apex)]
    if not base or base == ("svc",) or base == ("pod",):
        return []  # the apex and its two subtrees exist
    kind = base[-1]
    if kind not in ("svc", "pod"):
        raise NoSuchName
    namespace = base[-2]
    service = base[-3] if len(base) > 2 else ""
    rest = base[:-3]
    endpoint = port = protocol = ""
    if len(rest) == 1:
        endpoint = rest[0]
    elif len(rest) == 2:
        port, protocol = rest[0].removeprefix("_"), rest[1].removeprefix("_")
    elif len(rest) > 2:
        raise NoSuchName  # too long to mean anything
    if len(q.lower) > 2 and q.lower[-1] == "arpa" and q.lower[-2] in ("in-addr", "ip6"):
        raise NoSuchName  # service-shaped names under a reverse zone
    if namespace not in q.zone.namespaces:
        raise NoSuchName
    if kind == "pod":
        return _pod(q, namespace, service)
    return _service(q, namespace, service, endpoint, port, protocol)


def _pod(q: Query, namespace: str, label: str) -> list[Hit]:
    zone = q.zone
    if zone.pods_mode == "disabled":
        raise NoSuchName
    if not label:
        return []
    ip = ip_from_pod_label(label)
    owner = (label, namespace, "pod") + q.apex
    if zone.pods_mode == "insecure":
        # any well-formed name answers with the address it spells, pod or not
        if parse_ip(ip) is None:
            raise NoSuchName
        return [Hit(ip, 0, owner, zone.ttl)]
    if namespace in zone.pod_namespaces_by_ip.get(ip, ()):
        return [Hit(ip, 0, owner, zone.ttl)]
    raise NoSuchName


def _port_matches(p: Port, port: str, protocol: str) -> bool:
    return (not port or port == p.name) and (not protocol or protocol == p.protocol)


def _service(q: Query, namespace: str, name: str, endpoint: str, port: str, protocol: str) -> list[Hit]:
    if not name:
        return []  # 'namespace.svc.zone' exists
    zone = q.zone
    svc = zone.services.get((namespace, name))
    if svc is None:
        raise NoSuchName
    svc_owner = (svc.name, svc.namespace, "svc") + q.apex

    if svc.kind == EXTERNAL_NAME:
        # no endpoints and no ports under an ExternalName; an IP is not a name to alias
        if endpoint or port or protocol or parse_ip(svc.external_name) is not None or not svc.external_name:
            raise NoSuchName
        return [Hit(svc.external_name, 0, svc_owner, zone.ttl)]

    if svc.kind == HEADLESS or endpoint:
        # endpoints answer for headless services, and by hostname for any service
        hits = [Hit(addr.ip, p.number, (addr.hostname,) + svc_owner, zone.ttl)
                for group in svc.endpoints for addr in group.addresses
                if not endpoint or addr.hostname.lower() == endpoint
                for p in group.ports if _port_matches(p, port, protocol)]
        if not hits:
            raise NoSuchName  # a headless service without endpoints does not exist either
        return hits

    matching = [p for p in svc.ports if _port_matches(p, port, protocol)]
    if not matching:
        raise NoSuchName
    return [Hit(ip, p.number, svc_owner, zone.ttl) for p in matching for ip in svc.cluster_ips]


def reverse(q: Query) -> list[Labels]:
    """PTR targets for a reverse name (relative to the domain): the Service whose ClusterIP it
    is, else every endpoint with that address. Non-reverse names exist or not as usual."""
    ip = ip_from_reverse(q.lower)
    if not ip:
        records(q)  # raises NoSuchName when the name does not exist
        return []
    zone = q.zone
    svc = zone.service_ptr.get(ip)
    if svc is not None:
        return [svc]
    targets = zone.endpoint_ptr.get(ip)
    if not targets:
        raise NoSuchName
    return list(targets)
