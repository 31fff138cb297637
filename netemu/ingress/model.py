"""From a snapshot of the cluster to the model of nginx's configuration (pure): which Ingresses the
controller serves (:func:`handles`), and its servers, locations and upstreams (:func:`build_model`,
the steps of ingress-nginx's getBackendServers; see the package's docs).
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from netemu.ingress.settings import (
    CLASS_ANNOTATION, DEFAULT_CLASS_ANNOTATION, SAFE_REGEX, SAFE_TEXT, ControllerConfig, LocationSettings,
    parse_annotations,
)
from netemu.wellknown import SERVICE_NAME_LABEL

DEFAULT_SERVER = "_"
ROOT = "/"
DEFAULT_UPSTREAM = "upstream-default-backend"


# --------------------------------------------------------------------------- which Ingresses
def meta_of(obj: dict) -> dict:
    return obj.get("metadata") or {}


def key_of(obj: dict) -> str:
    m = meta_of(obj)
    return f"{m.get('namespace', 'default')}/{m.get('name', '')}"


def is_default_class(ic: dict) -> bool:
    return str((meta_of(ic).get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION, "")).lower() == "true"


def our_classes(classes: Iterable[dict], cfg: ControllerConfig) -> list[dict]:
    return [c for c in classes if (c.get("spec") or {}).get("controller") == cfg.controller_class]


def handles(ing: dict, classes: Iterable[dict], cfg: ControllerConfig) -> bool:
    """Whether the controller configured by ``cfg`` serves this Ingress."""
    ours = our_classes(classes, cfg)
    name = (ing.get("spec") or {}).get("ingressClassName")
    if name:
        return any(meta_of(c).get("name") == name for c in ours)
    annotated = (meta_of(ing).get("annotations") or {}).get(CLASS_ANNOTATION)
    if annotated is not None:
        return annotated == cfg.ingress_class
    return cfg.watch_without_class or any(is_default_class(c) for c in ours)


# --------------------------------------------------------------------------- the model of the config
@dataclass
class Upstream:
    name: str
    servers: list[str]  # "ip:port" or "[ipv6]:port", in a stable order (IPv4 first)
    namespace: str = ""
    service: str = ""
    port: str = ""
    problem: str = ""  # why there is no server (for the log and describe)


@dataclass
class Location:
    path: str
    path_type: str  # Exact | Prefix
    upstream: str  # an Upstream's name, or DEFAULT_UPSTREAM
    ingress: str = ""  # namespace/name; "" for the default backend
    is_default: bool = False
    settings: LocationSettings = field(default_factory=LocationSettings)
    service: str = ""
    service_port: str = ""
    ingress_path: str = ""  # the path as the Ingress wrote it (before the Prefix normalisation)

    @property
    def namespace(self) -> str:
        return self.ingress.split("/", 1)[0] if self.ingress else ""


@dataclass
class Server:
    hostname: str
    locations: list[Location]
    cert: Optional[str] = None  # the pem file (certificate and key); None: the default certificate
    tls: bool = False  # a certificate is configured for this host (ssl-redirect applies)
    ingress_default: Optional[str] = None  # upstream of the defaultBackend of the Ingress that made it

    def enforce_regex(self) -> bool:
        return any(needs_rewrite(l) or l.settings.use_regex for l in self.locations)


@dataclass
class Model:
    servers: list[Server]
    upstreams: list[Upstream]
    ingresses: list[str]  # namespace/name of the Ingresses served, in order


def needs_rewrite(loc: Location) -> bool:
    return bool(loc.settings.rewrite_target) and loc.settings.rewrite_target != loc.path


def upstream_name(namespace: str, service: str, port: Any) -> str:
    return f"{namespace}-{service}-{port}"


# --------------------------------------------------------------------------- endpoints
def _service_port(svc: dict, port: dict) -> Optional[dict]:
    for p in (svc.get("spec") or {}).get("ports") or []:
        if port.get("number") is not None and p.get("port") == port.get("number"):
            return p
        if port.get("name") and p.get("name") == port.get("name"):
            return p
    return None


def _endpoints(svc: dict, sp: dict, slices: list[dict]) -> list[str]:
    """Ready endpoints of one Service port, as ingress-nginx's getEndpointsFromSlices picks them:
    the slice port with the Service port's name (or the only port of an unnamed one)."""
    out: list[str] = []
    want_name = sp.get("name") or ""
    for s in slices:
        ports = s.get("ports") or []
        match = [p for p in ports if (p.get("name") or "") == want_name and (p.get("protocol") or "TCP") == "TCP"]
        if not match:
            continue
        number = match[0].get("port")
        if number is None:
            continue
        for ep in s.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            if cond.get("ready") is False:
                continue
            for addr in ep.get("addresses") or []:  # every slice: both families of a dual-stack Service
                hostport = host_port(addr, number)
                if hostport not in out:
                    out.append(hostport)
    return sorted(out, key=_ip_sort_key)


def host_port(host: str, port: Any) -> str:
    """An upstream server's address (Go's net.JoinHostPort): an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _ip_sort_key(hostport: str):
    host, _, port = hostport.rpartition(":")
    number = int(port) if port.isdigit() else 0
    if host.startswith("["):  # IPv6 after every IPv4 address, in numeric order
        try:
            return (1, (int(ipaddress.IPv6Address(host[1:-1])),), number)
        except ValueError:
            return (1, (0,), number)
    parts = host.split(".")
    return (0, tuple(int(p) if p.isdigit() else 0 for p in parts), number)


# --------------------------------------------------------------------------- building the model
def _paths_of(ing: dict):
    for rule in (ing.get("spec") or {}).get("rules") or []:
        host = rule.get("host") or DEFAULT_SERVER
        http = rule.get("http")
        yield host, rule, (http or {}).get("paths") if http is not None else None


def _creation_key(ing: dict):
    m = meta_of(ing)
    return (m.get("creationTimestamp") or "", m.get("namespace") or "", m.get("name") or "")


def build_model(objects: dict, cfg: ControllerConfig, warnings: Optional[list[str]] = None) -> Model:
    """The servers, locations and upstreams for a snapshot of the cluster (see the module docs)."""
    warnings = warnings if warnings is not None else []
    classes = objects.get("ingressClasses") or []
    ingresses = sorted((i for i in objects.get("ingresses") or [] if handles(i, classes, cfg)), key=_creation_key)
    services = {(meta_of(s).get("namespace", "default"), meta_of(s).get("name")): s for s in objects.get("services") or []}
    slices: dict[tuple[str, str], list[dict]] = {}
    for s in objects.get("endpointSlices") or []:
        svc = (meta_of(s).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if svc:
            slices.setdefault((meta_of(s).get("namespace", "default"), svc), []).append(s)

    upstreams: dict[str, Upstream] = {}
    settings_of: dict[str, LocationSettings] = {}
    for ing in ingresses:
        settings, notes = parse_annotations(meta_of(ing).get("annotations"), f"Ingress {key_of(ing)}: ")
        settings_of[key_of(ing)] = settings
        warnings += notes

    def upstream_for(ing: dict, backend: Optional[dict]) -> Optional[Upstream]:
        if not backend or not isinstance(backend.get("service"), dict):
            return None
        ns = meta_of(ing).get("namespace", "default")
        svc_ref = backend["service"]
        port = svc_ref.get("port") or {}
        port_text = port.get("number") if port.get("number") is not None else port.get("name", "")
        name = upstream_name(ns, svc_ref.get("name", ""), port_text)
        if name in upstreams:
            return upstreams[name]
        up = Upstream(name, [], ns, svc_ref.get("name", ""), str(port_text))
        svc = services.get((ns, svc_ref.get("name")))
        if svc is None:
            up.problem = f'service "{ns}/{svc_ref.get("name")}" not found'
        elif (svc.get("spec") or {}).get("type") == "ExternalName":
            up.problem = f'service "{ns}/{svc_ref.get("name")}" is an ExternalName service (not supported here)'
        else:
            sp = _service_port(svc, port)
            if sp is None:
                up.problem = f'service "{ns}/{svc_ref.get("name")}" has no port {port_text}'
            elif settings_of[key_of(ing)].service_upstream:
                ip = (svc.get("spec") or {}).get("clusterIP")
                if ip and ip != "None":
                    up.servers = [host_port(ip, sp.get('port'))]
                else:
                    up.problem = f'service "{ns}/{svc_ref.get("name")}" has no cluster IP (service-upstream)'
            else:
                up.servers = _endpoints(svc, sp, slices.get((ns, svc_ref.get("name")), []))
                if not up.servers:
                    up.problem = f'service "{ns}/{svc_ref.get("name")}" has no active endpoints'
        upstreams[name] = up
        return up

    servers: dict[str, Server] = {DEFAULT_SERVER: Server(DEFAULT_SERVER, [
        Location(ROOT, "Prefix", DEFAULT_UPSTREAM, is_default=True)])}

    # servers, and the Ingresses' default backends (createServers)
    for ing in ingresses:
        spec = ing.get("spec") or {}
        settings = settings_of[key_of(ing)]
        default_up = upstream_for(ing, spec.get("defaultBackend"))
        if default_up is not None:
            root = servers[DEFAULT_SERVER].locations[0]
            if root.is_default and not spec.get("rules"):  # an Ingress with a backend and no rule: catch-all
                root.is_default = False
                root.upstream = default_up.name
                root.ingress = key_of(ing)
                root.service, root.service_port = default_up.service, default_up.port
                root.settings = LocationSettings(**{**vars(settings), "rewrite_target": "", "use_regex": False,
                                                    "app_root": "", "permanent_redirect": "",
                                                    "temporal_redirect": ""})
        for host, _rule, _paths in _paths_of(ing):
            if host in servers:
                continue
            root = Location(ROOT, "Prefix", default_up.name if default_up else DEFAULT_UPSTREAM, ingress=key_of(ing),
                            is_default=True, settings=settings)
            if default_up is not None:
                root.service, root.service_port = default_up.service, default_up.port
            servers[host] = Server(host, [root], ingress_default=default_up.name if default_up else None)

    # TLS: the first Ingress naming a host in spec.tls gives its certificate
    secrets = {(meta_of(s).get("namespace", "default"), meta_of(s).get("name")): s for s in objects.get("secrets") or []}
    for ing in ingresses:
        ns = meta_of(ing).get("namespace", "default")
        for tls in (ing.get("spec") or {}).get("tls") or []:
            for host in tls.get("hosts") or []:
                server = servers.get(host)
                if server is None or server.tls:
                    continue
                server.tls = True
                name = tls.get("secretName")
                secret = secrets.get((ns, name)) if name else None
                pem, why = tls_pem(secret) if secret is not None else (None, None)
                if pem is not None:
                    server.cert = f"{ns}-{name}.pem"
                else:
                    server.cert = f"self-signed-{host.replace('*', '_wildcard_')}.pem"
                    if name:
                        why = why or f'secret "{ns}/{name}" not found'
                        warnings.append(f"Ingress {key_of(ing)}: host {host}: {why}: using a self-signed certificate")

    # locations (getBackendServers)
    for ing in ingresses:
        settings = settings_of[key_of(ing)]
        for host, rule, paths in _paths_of(ing):
            server = servers.get(host) or servers[DEFAULT_SERVER]
            for p in paths or []:
                backend = p.get("backend") or {}
                if not isinstance(backend.get("service"), dict):
                    continue  # a resource backend: not served by ingress-nginx
                up = upstream_for(ing, backend)
                path = p.get("path") or ROOT
                path_type = p.get("pathType") or "Prefix"
                if path_type == "ImplementationSpecific":
                    path_type = "Prefix"
                if not (SAFE_REGEX if settings.use_regex else SAFE_TEXT).match(path):
                    warnings.append(f"Ingress {key_of(ing)}: path {path!r} cannot be configured: skipped")
                    continue
                add = True
                for loc in server.locations:
                    if loc.path != path:
                        continue
                    if loc.path_type != path_type:
                        break
                    add = False
                    if not loc.is_default:
                        if loc.ingress != key_of(ing):
                            warnings.append(f"Ingress {key_of(ing)}: host {host} path {path} is already defined "
                                            f"by Ingress {loc.ingress}: ignored")
                        break
                    loc.upstream, loc.is_default, loc.ingress, loc.settings = up.name, False, key_of(ing), settings
                    loc.service, loc.service_port = up.service, up.port
                    break
                if add:
                    server.locations.append(Location(path, path_type, up.name, ingress=key_of(ing), settings=settings,
                                                     service=up.service, service_port=up.port))

    for server in servers.values():
        server.locations = _update_locations(server.locations)
        server.locations.sort(key=lambda l: l.path, reverse=True)
        server.locations.sort(key=lambda l: len(l.path), reverse=True)
    used = {l.upstream for s in servers.values() for l in s.locations}
    ups = sorted((u for u in upstreams.values() if u.name in used), key=lambda u: u.name)
    for u in ups:
        if u.problem:
            warnings.append(f"upstream {u.name}: {u.problem} (503)")
    return Model(sorted(servers.values(), key=lambda s: s.hostname), ups, [key_of(i) for i in ingresses])


def _update_locations(locations: list[Location]) -> list[Location]:
    """ingress-nginx's updateServerLocations: a Prefix path /foo becomes /foo/ plus = /foo."""
    exact = {l.path for l in locations if l.path_type == "Exact"}
    out = []
    for loc in locations:
        if loc.path == ROOT:
            out.append(loc)
            continue
        loc.ingress_path = loc.ingress_path or loc.path
        if loc.path_type != "Prefix" or needs_rewrite(loc) or loc.settings.use_regex:
            out.append(loc)
            continue
        prefix = loc.path if loc.path.endswith("/") else loc.path + "/"
        if loc.path in exact:
            loc.path = prefix
            out.append(loc)
            continue
        exact_loc = Location(**{**vars(loc), "path_type": "Exact"})
        loc.path = prefix
        out += [loc, exact_loc]
    return out


# --------------------------------------------------------------------------- TLS
def tls_pem(secret: dict) -> tuple[Optional[bytes], Optional[str]]:
    """The certificate and key of a TLS Secret as one PEM file, or why it cannot be used."""
    data = dict(secret.get("data") or {})
    plain = secret.get("stringData") or {}
    try:
        crt, key = (plain[k].encode() if k in plain else base64.b64decode(data.get(k, ""), validate=True)
                    for k in ("tls.crt", "tls.key"))
    except (binascii.Error, ValueError):
        return None, f'secret "{key_of(secret)}" is not valid base64'
    if b"-----BEGIN CERTIFICATE-----" not in crt:
        return None, f'secret "{key_of(secret)}" has no certificate in tls.crt'
    if b"PRIVATE KEY-----" not in key:
        return None, f'secret "{key_of(secret)}" has no private key in tls.key'
    return crt.rstrip(b"\n") + b"\n" + key.rstrip(b"\n") + b"\n", None
