"""An immutable, indexed view of the cluster as the DNS server needs it.

Rebuilt whole on every change and swapped in atomically, so lookups never see a half-updated
cluster and need no locks. Indexed: services by namespace/name, each with its serving endpoints
(found by hostname with a scan of the service's slices, as CoreDNS does: that only happens on an
answer cache miss); reverse maps from IP to names (derived on the first PTR query); pod IPs (for
``pods verified``); the addresses of the DNS server itself (for ``NS``).

Rebuilds are incremental: given the previous zone, a Service whose resourceVersion and whose
slices' resourceVersions are unchanged keeps its entry. The control store bumps resourceVersion
on every write, so a change to one Service costs about one Service's work. Pods are only read
when they matter: for ``pods verified``, for namespaces not given, and to lend hostnames to
endpoints of slices the EndpointSlice controller does not manage (it does that itself).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property, partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Iterable, Literal, Mapping, NamedTuple, Optional, Sequence, Union

from netemu.dns.names import canonical_ip, dashed
from netemu.wellknown import ENDPOINTSLICE_CONTROLLER, MANAGED_BY_LABEL, SERVICE_NAME_LABEL

if TYPE_CHECKING:  # the DNS pod's process unpickles zones without pydantic
    from netemu.spec.models import EndpointSlice, Namespace, Pod, Service

PodsMode = Literal["disabled", "insecure", "verified"]

# namespaces a cluster always has, even before any object lives in them
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")

CLUSTER_IP = "ClusterIP"
HEADLESS = "Headless"
EXTERNAL_NAME = "ExternalName"

NameLabels = tuple[str, ...]


class Port(NamedTuple):
    name: str      # lowercase; '' when unnamed
    protocol: str  # lowercase ('tcp', 'udp', 'sctp')
    number: int    # -1 when the object declares no ports at all (CoreDNS's sentinel)


# an object without ports still yields one record per address, but never an SRV record
NO_PORTS = (Port("", "", -1),)


class Address(NamedTuple):
    ip: str
    hostname: str  # its DNS label: the endpoint's hostname, else the dashed IP


class EndpointGroup(NamedTuple):
    """One EndpointSlice: every address serves every port."""
    ports: tuple[Port, ...]
    addresses: tuple[Address, ...]


class ServiceEntry(NamedTuple):
    namespace: str
    name: str
    kind: str                         # CLUSTER_IP, HEADLESS or EXTERNAL_NAME
    cluster_ips: tuple[str, ...]
    ports: tuple[Port, ...]
    external_name: str
    endpoints: tuple[EndpointGroup, ...]


# NamedTuple constructors without the Python-level __new__: a build makes thousands
_address = partial(tuple.__new__, Address)
_port = partial(tuple.__new__, Port)
_PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}

# what a ServiceEntry was built from: namespace, name and resourceVersions
_Version = tuple


@dataclass(frozen=True, eq=False)
class ClusterZone:
    domain: str                                   # 'cluster.local' (lowercase, no dot)
    ttl: int
    pods_mode: PodsMode
    serial: int                                   # SOA serial: when the view was built
    reverse_zones: tuple[str, ...]
    # zones whose unknown names go to the next plugin (kubeadm: the reverse zones); with no
    # forward plugin behind, CoreDNS answers those SERVFAIL
    fallthrough_zones: tuple[str, ...]
    namespaces: frozenset[str]
    services: Mapping[tuple[str, str], ServiceEntry]
    # endpoints of slices whose Service does not exist (still named in reverse lookups)
    orphans: tuple[tuple[str, str, EndpointGroup], ...]
    pod_namespaces_by_ip: Mapping[str, frozenset[str]]  # filled for pods_mode 'verified'
    dns_server_ips: tuple[str, ...]
    _versions: Mapping[_Version, ServiceEntry]    # for the next incremental build

    @property
    def domain_labels(self) -> NameLabels:
        return tuple(self.domain.split("."))

    def __reduce__(self):
        """Pickled for the DNS pods (read-only views become dicts, derived caches are left
        out: the receiver rebuilds them on first use)."""
        fields = {f: getattr(self, f) for f in self.__dataclass_fields__}
        for f, v in fields.items():
            if isinstance(v, MappingProxyType):
                fields[f] = dict(v)
        return (_unpickle_zone, (fields,))

    @cached_property
    def service_ptr(self) -> Mapping[str, NameLabels]:
        """ClusterIP -> ('name', 'namespace', 'svc'): the first Service holding an IP names it."""
        out: dict[str, NameLabels] = {}
        for entry in self.services.values():
            for ip in entry.cluster_ips:
                out.setdefault(canonical_ip(ip), (entry.name, entry.namespace, "svc"))
        return MappingProxyType(out)

    @cached_property
    def endpoint_ptr(self) -> Mapping[str, Sequence[NameLabels]]:
        """Endpoint IP -> ('hostname', 'service', 'namespace', 'svc'), ...: every serving
        address, whether its Service exists or not (as CoreDNS indexes them), in the namespaces
        the zone shows (as service_ptr: CoreDNS skips the others)."""
        out: dict[str, list[NameLabels]] = {}
        for ns, name, group in self._all_groups():
            if ns.lower() not in self.namespaces:
                continue
            for ip, hostname in group.addresses:
                names = out.setdefault(canonical_ip(ip), [])
                ptr = (hostname, name, ns, "svc")
                if ptr not in names:
                    names.append(ptr)
        return MappingProxyType(out)

    @cached_property
    def nameservers(self) -> tuple[tuple[NameLabels, str], ...]:
        """(name relative to the domain, IP) per CoreDNS's NS logic: the Services whose
        endpoints include the server's own IPs (their ClusterIPs, or the endpoints of a headless
        one); when there are none, 'ns.dns' -> the server's own IPs."""
        found = False
        out: list[tuple[NameLabels, str]] = []
        for ip in self.dns_server_ips:
            for ns, name, group in self._all_groups():
                if not any(a.ip == ip for a in group.addresses):
                    continue
                found = True
                entry = self.services.get((ns.lower(), name.lower()))
                if entry is None:
                    continue
                svc_name = (entry.name, entry.namespace, "svc")
                if entry.kind == HEADLESS:
                    out.extend(((a.hostname,) + svc_name, a.ip) for a in group.addresses)
                else:
                    out.extend((svc_name, cip) for cip in entry.cluster_ips)
        if not found:
            out = [(("ns", "dns"), ip) for ip in self.dns_server_ips]
        return tuple(out)

    def _all_groups(self) -> Iterable[tuple[str, str, EndpointGroup]]:
        for entry in self.services.values():
            for group in entry.endpoints:
                yield entry.namespace, entry.name, group
        yield from self.orphans

    @classmethod
    def empty(cls, *, domain: str = "cluster.local", ttl: int = 30) -> "ClusterZone":
        return cls.build((), (), (), domain=domain, ttl=ttl)

    @classmethod
    def build(
        cls,
        services: Iterable[Service],
        slices: Iterable[EndpointSlice],
        pods: Iterable[Pod] = (),
        *,
        domain: str = "cluster.local",
        ttl: int = 30,
        pods_mode: PodsMode = "insecure",
        namespaces: Optional[Iterable[Union[str, Namespace]]] = None,
        dns_server_ips: Iterable[str] = (),
        reverse_zones: Iterable[str] = REVERSE_ZONES,
        fallthrough_zones: Iterable[str] = REVERSE_ZONES,
        serial: Optional[int] = None,
        previous: Optional["ClusterZone"] = None,
    ) -> "ClusterZone":
        """The zone for these objects.

        ``namespaces``: the namespaces that exist (names or Namespace objects); by default the
        built-in ones plus every namespace a Service or Pod lives in. Names in other namespaces
        are NXDOMAIN. ``dns_server_ips``: the addresses the DNS server itself listens on (its
        pod IP); they decide the apex NS answer as in CoreDNS. ``fallthrough_zones``: kubeadm's
        ``fallthrough in-addr.arpa ip6.arpa``; () answers NXDOMAIN there instead.
        ``previous``: the zone this one replaces; unchanged Services are taken from it."""
        services = list(services)
        pods = list(pods)
        if pods_mode not in ("disabled", "insecure", "verified"):
            raise ValueError(f"pods_mode must be disabled, insecure or verified, not {pods_mode!r}")
        ns_set = _namespaces(namespaces, services, pods)
        lender = _HostnameLender(pods)
        # (namespace, service) -> [(slice, its version: None when not reusable)]
        slices_by_service: dict[tuple[str, str], list[tuple[EndpointSlice, Optional[str]]]] = {}
        for sl in slices:
            meta = sl.metadata
            labels = meta.labels or {}
            owner = labels.get(SERVICE_NAME_LABEL)
            if owner and sl.address_type != "FQDN":  # FQDN slices hold no addresses to serve
                # a slice borrowing pod hostnames changes when pods do, not only with its version
                managed = labels.get(MANAGED_BY_LABEL) == ENDPOINTSLICE_CONTROLLER
                version = meta.resource_version if managed or not _borrows_hostnames(sl) else None
                slices_by_service.setdefault((meta.namespace, owner), []).append((sl, version))

        reusable = previous._versions if previous is not None else {}
        entries: dict[tuple[str, str], ServiceEntry] = {}
        versions: dict[_Version, ServiceEntry] = {}
        for svc in services:
            meta = svc.metadata
            ns, name = meta.namespace, meta.name
            if ns not in ns_set or not name:
                continue
            owned = slices_by_service.pop((ns, name), ())
            version = _version_of(ns, name, meta.resource_version, owned)
            entry = reusable.get(version) if version is not None else None
            if entry is None:
                entry = _service_entry(svc, [sl for sl, _ in owned], lender)
            if version is not None:
                versions[version] = entry
            entries[(ns.lower(), name.lower())] = entry
        orphans = tuple((ns, name, _endpoint_group(sl, name, False, lender))
                        for (ns, name), owned in slices_by_service.items() for sl, _ in owned)

        pod_ns_by_ip: dict[str, set[str]] = {}
        if pods_mode == "verified":
            for p in pods:
                for ip in _pod_ips(p):
                    pod_ns_by_ip.setdefault(ip, set()).add(p.metadata.namespace)

        return cls(
            domain=domain.rstrip(".").lower(),
            ttl=int(ttl),
            pods_mode=pods_mode,
            serial=(int(time.time()) if serial is None else int(serial)) & 0xFFFFFFFF,
            reverse_zones=tuple(z.rstrip(".").lower() for z in reverse_zones),
            fallthrough_zones=tuple(z.rstrip(".").lower() for z in fallthrough_zones),
            namespaces=frozenset(n.lower() for n in ns_set),
            services=MappingProxyType(entries),
            orphans=orphans,
            pod_namespaces_by_ip=MappingProxyType({ip: frozenset(v) for ip, v in pod_ns_by_ip.items()}),
            dns_server_ips=tuple(dns_server_ips),
            _versions=MappingProxyType(versions),
        )


def _unpickle_zone(fields: dict) -> ClusterZone:
    for f, v in fields.items():
        if isinstance(v, dict):
            fields[f] = MappingProxyType(v)
    return ClusterZone(**fields)


def _namespaces(given, services, pods) -> set[str]:
    if given is not None:
        return {n if isinstance(n, str) else n.metadata.name for n in given}
    found = {s.metadata.namespace for s in services}
    found.update({p.metadata.namespace for p in pods})
    found.update(BUILTIN_NAMESPACES)
    found.discard(None)
    return found


def _version_of(namespace: str, name: str, rv: Optional[str], slices) -> Optional[_Version]:
    """What a Service's entry depends on, or None when it may not be reused: an object has no
    resourceVersion (built outside the store), or a slice borrows pod hostnames."""
    if rv is None:
        return None
    slice_versions = tuple([version for _, version in slices])
    if None in slice_versions:
        return None
    return (namespace, name, rv, slice_versions)


def _borrows_hostnames(sl: EndpointSlice) -> bool:
    """Whether an unmanaged slice has endpoints that may take their pod's hostname (managed
    ones already got it from the EndpointSlice controller)."""
    return any(not ep.hostname and ep.target_ref is not None for ep in sl.endpoints)


class _HostnameLender:
    """Pod hostnames for endpoints of slices the EndpointSlice controller does not manage, as
    the controller would set them: a pod's hostname when its subdomain names the Service.
    The pods are read on first need only."""

    def __init__(self, pods: list[Pod]):
        self._pods = pods
        self._by_name: Optional[dict[tuple[str, str], tuple[str, str]]] = None

    def hostname(self, ref, namespace: str, service: str) -> str:
        if ref.kind not in (None, "Pod") or not ref.name:
            return ""
        if self._by_name is None:
            self._by_name = {(p.metadata.namespace, p.metadata.name): (p.spec.hostname, p.spec.subdomain)
                             for p in self._pods if p.spec.subdomain and p.spec.hostname}
        hostname, subdomain = self._by_name.get((ref.namespace or namespace, ref.name), ("", ""))
        return hostname if subdomain == service else ""


def _ports(declared) -> tuple[Port, ...]:
    """Service or slice ports; a missing protocol is the API server's default (TCP)."""
    if not declared:
        return NO_PORTS
    return tuple([_port(((p.name or "").lower(), _PROTOCOLS.get(p.protocol, "tcp"),
                         -1 if p.port is None else p.port)) for p in declared])


def _service_entry(svc: Service, slices, lender: _HostnameLender) -> ServiceEntry:
    spec = svc.spec
    name = svc.metadata.name
    ips = tuple(ip for ip in (spec.cluster_ips or [spec.cluster_ip]) if ip)
    if spec.type == "ExternalName":
        kind = EXTERNAL_NAME
    elif ips and ips[0] == "None":
        kind = HEADLESS
    else:
        kind = CLUSTER_IP
    publish = bool(spec.publish_not_ready_addresses)
    return ServiceEntry(
        namespace=svc.metadata.namespace,
        name=name,
        kind=kind,
        cluster_ips=ips if kind == CLUSTER_IP else (),
        ports=_ports(spec.ports),
        external_name=spec.external_name or "",
        endpoints=tuple(_endpoint_group(sl, name, publish, lender) for sl in slices),
    )


def _endpoint_group(sl: EndpointSlice, service: str, publish_not_ready: bool,
                    lender: _HostnameLender) -> EndpointGroup:
    """The slice's serving addresses: ready ones (unknown readiness counts as ready), and all
    of them when the Service publishes not-ready addresses."""
    managed = (sl.metadata.labels or {}).get(MANAGED_BY_LABEL) == ENDPOINTSLICE_CONTROLLER
    addresses = []
    for ep in sl.endpoints:
        if ep.conditions.ready is False and not publish_not_ready:
            continue
        hostname = ep.hostname
        if not hostname and not managed and ep.target_ref is not None:
            hostname = lender.hostname(ep.target_ref, sl.metadata.namespace, service)
        for ip in ep.addresses:
            addresses.append(_address((ip, hostname or (ip.replace(".", "-") if "." in ip else dashed(ip)))))
    return EndpointGroup(_ports(sl.ports), tuple(addresses))


def _pod_ips(p: Pod) -> list[str]:
    """The addresses ``pods verified`` finds a pod by. CoreDNS keeps and indexes status.podIP
    only (the primary family's), so a dual-stack pod's other address has no verified name."""
    return [p.status.pod_ip] if p.status.pod_ip else []
