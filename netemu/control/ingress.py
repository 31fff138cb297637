"""The ingress-nginx controller's brain, pure: Ingresses, Services, EndpointSlices and TLS Secrets
in, an nginx.conf out, built the way ingress-nginx builds it.

Input is the objects as the API shows them (JSON dicts, Ingresses already in their v1 form), so the
controller pod needs nothing but the standard library. The steps follow ingress-nginx's
`getBackendServers` (internal/ingress/controller/controller.go) and its nginx.tmpl:

- which Ingresses are ours (:func:`handles`): spec.ingressClassName naming an IngressClass whose
  controller is ours, else the `kubernetes.io/ingress.class` annotation, else (no class at all) when
  our IngressClass is the default one or --watch-ingress-without-class is set;
- Ingresses in creation order; one server per host, plus the catch-all server ``_`` that takes the
  rules without a host; every server starts with a root location to the default backend (404), or to
  the Ingress's defaultBackend;
- paths: empty is ``/``, ImplementationSpecific is read as Prefix (ingress-nginx's
  SetDefaultNGINXPathType); the first Ingress to claim a host+path+pathType keeps it; a Prefix path
  ``/foo`` becomes ``location /foo/`` plus ``location = /foo`` (Kubernetes' element-wise prefix),
  unless it rewrites or uses regular expressions;
- locations sorted longest path first; when any location of a server rewrites (rewrite-target) or
  uses regular expressions (use-regex), every location of that server becomes a case-insensitive
  regular expression anchored at the start (``location ~* "^/ip"``), and the order decides;
- rewrite-target: ``rewrite "(?i)<path>" <target> break;`` (capture groups of a use-regex path work);
- upstreams are the Service's ready endpoints (pod IP:port; the Service's port resolved by number or
  name to the EndpointSlice port of the same name), round robin, kept-alive connections, no passive
  failure marking (ingress-nginx's upstream-max-fails 0) and a retry on the next endpoint after a
  connection error (proxy_next_upstream error timeout, 3 tries); `service-upstream: "true"` uses the
  ClusterIP instead; no endpoint: 503;
- TLS: a host listed in spec.tls gets the certificate of its kubernetes.io/tls Secret (tls.crt and
  tls.key, base64), or a self-signed one made for it when the Secret is missing or unusable (the
  controller pod makes it); every other server answers HTTPS with the controller's default
  certificate ("Kubernetes Ingress Controller Fake Certificate"); HTTP requests to a host with a
  certificate get ``308`` to https (ssl-redirect, on by default; force-ssl-redirect for any host).

Annotations (nginx.ingress.kubernetes.io/...): rewrite-target, use-regex, ssl-redirect,
force-ssl-redirect, app-root, backend-protocol (HTTP, HTTPS, AUTO_HTTP), service-upstream,
upstream-vhost, x-forwarded-prefix, permanent-redirect(-code), temporal-redirect,
proxy-{connect,send,read}-timeout, proxy-body-size, proxy-next-upstream-tries; others are named in
the controller's log and ignored (snippets never reach the configuration). ConfigMap keys: see
ControllerConfig.with_configmap. Values that could break out of the configuration's syntax are
refused.

:func:`render` returns the text and the files it refers to; the controller pod writes them.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from netemu.wellknown import SERVICE_NAME_LABEL

CONTROLLER_CLASS = "k8s.io/ingress-nginx"
INGRESS_CLASS = "nginx"
DEFAULT_SERVER = "_"
ROOT = "/"
DEFAULT_UPSTREAM = "upstream-default-backend"
ANNOTATION_PREFIX = "nginx.ingress.kubernetes.io/"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
TLS_SECRET_TYPE = "kubernetes.io/tls"

# ingress-nginx's defaults (its ConfigMap can change some, see ControllerConfig.from_configmap)
SSL_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
               "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
               "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384")
LOG_FORMAT = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
              '"$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
              '[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length '
              '$upstream_response_time $upstream_status $request_id')

# what may go into the configuration between double quotes: no quote, backslash-quote, control
# characters or newlines (ingress-nginx validates its annotations with similar rules)
_SAFE = re.compile(r'^[^"\\\x00-\x1f\x7f;{}]*$')
_SAFE_REGEX = re.compile(r'^[^"\x00-\x1f\x7f]*$')
_SAFE_WORD = re.compile(r'^[^\s"\'\\;{}]+$')  # unquoted in the configuration (a rewrite target, a URL)
_SIZE = re.compile(r"^\d+[kKmMgG]?$")
_HOST_OK = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


# --------------------------------------------------------------------------- settings
@dataclass
class ControllerConfig:
    """The controller's flags and the global settings of its ConfigMap."""
    ingress_class: str = INGRESS_CLASS
    controller_class: str = CONTROLLER_CLASS
    watch_without_class: bool = False
    default_ssl_certificate: Optional[str] = None  # "namespace/name" of a TLS Secret
    configmap: Optional[str] = None  # "namespace/name"
    http_port: int = 80
    https_port: int = 443
    status_port: int = 10246  # nginx's own /healthz and /nginx_status, on 127.0.0.1
    max_open_files: int = 0  # worker_rlimit_nofile (the pod's hard limit); 0: not set
    default_backend_port: int = 8181
    # from the ConfigMap
    ssl_redirect: bool = True
    http_redirect_code: int = 308
    worker_processes: str = "auto"
    max_worker_connections: int = 16384
    access_log: bool = True
    keepalive_connections: int = 320
    keepalive_requests: int = 10000
    keepalive_timeout: int = 60
    proxy_connect_timeout: int = 5
    proxy_read_timeout: int = 60
    proxy_send_timeout: int = 60
    proxy_body_size: str = "1m"
    proxy_next_upstream_tries: int = 3
    proxy_buffering: str = "off"
    use_forwarded_headers: bool = False

    def with_configmap(self, data: dict[str, str]) -> tuple["ControllerConfig", list[str]]:
        """A copy with the ConfigMap's settings applied; unknown or bad keys are named."""
        out = ControllerConfig(**vars(self))
        notes = []
        for key, value in (data or {}).items():
            attr = _CONFIGMAP_KEYS.get(key)
            if attr is None:
                notes.append(f"ConfigMap key {key!r} is not supported by netemu's controller: ignored")
                continue
            try:
                setattr(out, attr, _CONFIGMAP_PARSERS[attr](value))
            except (ValueError, TypeError):
                notes.append(f"ConfigMap key {key!r}: bad value {value!r}: ignored")
        return out, notes


def _bool(v: Any) -> bool:
    text = str(v).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(v)


def _size(v: Any) -> str:
    if not _SIZE.match(str(v).strip()):
        raise ValueError(v)
    return str(v).strip()


def _workers(v: Any) -> str:
    text = str(v).strip()
    if text != "auto" and not text.isdigit():
        raise ValueError(v)
    return text


def _buffering(v: Any) -> str:
    return "on" if _bool(v) else "off"


_CONFIGMAP_KEYS = {
    "ssl-redirect": "ssl_redirect", "http-redirect-code": "http_redirect_code",
    "worker-processes": "worker_processes", "max-worker-connections": "max_worker_connections",
    "disable-access-log": "access_log", "upstream-keepalive-connections": "keepalive_connections",
    "upstream-keepalive-requests": "keepalive_requests", "upstream-keepalive-timeout": "keepalive_timeout",
    "proxy-connect-timeout": "proxy_connect_timeout", "proxy-read-timeout": "proxy_read_timeout",
    "proxy-send-timeout": "proxy_send_timeout", "proxy-body-size": "proxy_body_size",
    "proxy-next-upstream-tries": "proxy_next_upstream_tries", "proxy-buffering": "proxy_buffering",
    "use-forwarded-headers": "use_forwarded_headers",
}
_CONFIGMAP_PARSERS = {
    "ssl_redirect": _bool, "http_redirect_code": int, "worker_processes": _workers,
    "max_worker_connections": int, "access_log": lambda v: not _bool(v), "keepalive_connections": int,
    "keepalive_requests": int, "keepalive_timeout": int, "proxy_connect_timeout": int,
    "proxy_read_timeout": int, "proxy_send_timeout": int, "proxy_body_size": _size,
    "proxy_next_upstream_tries": int, "proxy_buffering": _buffering, "use_forwarded_headers": _bool,
}


@dataclass
class LocationSettings:
    """An Ingress's nginx.ingress.kubernetes.io/* annotations, parsed (for its locations)."""
    rewrite_target: str = ""
    use_regex: bool = False
    ssl_redirect: Optional[bool] = None  # None: the ConfigMap's
    force_ssl_redirect: bool = False
    app_root: str = ""
    backend_protocol: str = "HTTP"
    service_upstream: bool = False
    upstream_vhost: str = ""
    x_forwarded_prefix: str = ""
    permanent_redirect: str = ""
    permanent_redirect_code: int = 301
    temporal_redirect: str = ""
    proxy_connect_timeout: Optional[int] = None
    proxy_read_timeout: Optional[int] = None
    proxy_send_timeout: Optional[int] = None
    proxy_body_size: Optional[str] = None
    proxy_next_upstream_tries: Optional[int] = None


_ANNOTATIONS = {
    "rewrite-target": ("rewrite_target", "word"), "use-regex": ("use_regex", _bool),
    "ssl-redirect": ("ssl_redirect", _bool), "force-ssl-redirect": ("force_ssl_redirect", _bool),
    "app-root": ("app_root", "word"), "backend-protocol": ("backend_protocol", "protocol"),
    "service-upstream": ("service_upstream", _bool), "upstream-vhost": ("upstream_vhost", "text"),
    "x-forwarded-prefix": ("x_forwarded_prefix", "text"), "permanent-redirect": ("permanent_redirect", "word"),
    "permanent-redirect-code": ("permanent_redirect_code", int), "temporal-redirect": ("temporal_redirect", "word"),
    "proxy-connect-timeout": ("proxy_connect_timeout", int), "proxy-read-timeout": ("proxy_read_timeout", int),
    "proxy-send-timeout": ("proxy_send_timeout", int), "proxy-body-size": ("proxy_body_size", _size),
    "proxy-next-upstream-tries": ("proxy_next_upstream_tries", int),
}


def parse_annotations(annotations: Optional[dict[str, str]], where: str = "") -> tuple[LocationSettings, list[str]]:
    s = LocationSettings()
    notes = []
    for key, value in (annotations or {}).items():
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        name = key[len(ANNOTATION_PREFIX):]
        spec = _ANNOTATIONS.get(name)
        if spec is None:
            notes.append(f"{where}annotation {key} is not supported by netemu's controller: ignored")
            continue
        attr, kind = spec
        try:
            if kind == "text":
                if not _SAFE.match(str(value)):
                    raise ValueError(value)
                parsed: Any = str(value)
            elif kind == "word":
                if not _SAFE_WORD.match(str(value)):
                    raise ValueError(value)
                parsed = str(value)
            elif kind == "protocol":
                parsed = str(value).strip().upper()
                if parsed not in ("HTTP", "HTTPS", "AUTO_HTTP"):
                    notes.append(f"{where}annotation {key}: {value!r} is not supported here (HTTP, HTTPS, "
                                 "AUTO_HTTP): HTTP is used")
                    parsed = "HTTP"
            else:
                parsed = kind(value)
        except (ValueError, TypeError):
            notes.append(f"{where}annotation {key}: invalid value {value!r}: ignored")
            continue
        setattr(s, attr, parsed)
    return s, notes


# --------------------------------------------------------------------------- which Ingresses
def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _key(obj: dict) -> str:
    m = _meta(obj)
    return f"{m.get('namespace', 'default')}/{m.get('name', '')}"


def is_default_class(ic: dict) -> bool:
    return str((_meta(ic).get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION, "")).lower() == "true"


def our_classes(classes: Iterable[dict], cfg: ControllerConfig) -> list[dict]:
    return [c for c in classes if (c.get("spec") or {}).get("controller") == cfg.controller_class]


def handles(ing: dict, classes: Iterable[dict], cfg: ControllerConfig) -> bool:
    """Whether the controller configured by ``cfg`` serves this Ingress."""
    ours = our_classes(classes, cfg)
    name = (ing.get("spec") or {}).get("ingressClassName")
    if name:
        return any(_meta(c).get("name") == name for c in ours)
    annotated = (_meta(ing).get("annotations") or {}).get(CLASS_ANNOTATION)
    if annotated is not None:
        return annotated == cfg.ingress_class
    return cfg.watch_without_class or any(is_default_class(c) for c in ours)


# --------------------------------------------------------------------------- the model of the config
@dataclass
class Upstream:
    name: str
    servers: list[str]  # "ip:port", in a stable order
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


@dataclass
class Rendered:
    text: str
    files: dict[str, bytes]  # file name (relative to the certificate directory) -> content
    self_signed: dict[str, str]  # file name -> host to make a self-signed certificate for
    warnings: list[str]
    model: Model


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
            for addr in ep.get("addresses") or []:
                hostport = f"{addr}:{number}"
                if hostport not in out:
                    out.append(hostport)
    return sorted(out, key=_ip_sort_key)


def _ip_sort_key(hostport: str):
    host, _, port = hostport.rpartition(":")
    parts = host.split(".")
    return (tuple(int(p) if p.isdigit() else 0 for p in parts), int(port) if port.isdigit() else 0)


# --------------------------------------------------------------------------- building the model
def _paths_of(ing: dict):
    for rule in (ing.get("spec") or {}).get("rules") or []:
        host = rule.get("host") or DEFAULT_SERVER
        http = rule.get("http")
        yield host, rule, (http or {}).get("paths") if http is not None else None


def _creation_key(ing: dict):
    m = _meta(ing)
    return (m.get("creationTimestamp") or "", m.get("namespace") or "", m.get("name") or "")


def build_model(objects: dict, cfg: ControllerConfig, warnings: Optional[list[str]] = None) -> Model:
    """The servers, locations and upstreams for a snapshot of the cluster (see the module docs)."""
    warnings = warnings if warnings is not None else []
    classes = objects.get("ingressClasses") or []
    ingresses = sorted((i for i in objects.get("ingresses") or [] if handles(i, classes, cfg)), key=_creation_key)
    services = {(_meta(s).get("namespace", "default"), _meta(s).get("name")): s for s in objects.get("services") or []}
    slices: dict[tuple[str, str], list[dict]] = {}
    for s in objects.get("endpointSlices") or []:
        svc = (_meta(s).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if svc:
            slices.setdefault((_meta(s).get("namespace", "default"), svc), []).append(s)

    upstreams: dict[str, Upstream] = {}
    settings_of: dict[str, LocationSettings] = {}
    for ing in ingresses:
        settings, notes = parse_annotations(_meta(ing).get("annotations"), f"Ingress {_key(ing)}: ")
        settings_of[_key(ing)] = settings
        warnings += notes

    def upstream_for(ing: dict, backend: Optional[dict]) -> Optional[Upstream]:
        if not backend or not isinstance(backend.get("service"), dict):
            return None
        ns = _meta(ing).get("namespace", "default")
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
            elif settings_of[_key(ing)].service_upstream:
                ip = (svc.get("spec") or {}).get("clusterIP")
                if ip and ip != "None":
                    up.servers = [f"{ip}:{sp.get('port')}"]
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
        settings = settings_of[_key(ing)]
        default_up = upstream_for(ing, spec.get("defaultBackend"))
        if default_up is not None:
            root = servers[DEFAULT_SERVER].locations[0]
            if root.is_default and not spec.get("rules"):  # an Ingress with a backend and no rule: catch-all
                root.is_default = False
                root.upstream = default_up.name
                root.ingress = _key(ing)
                root.service, root.service_port = default_up.service, default_up.port
                root.settings = LocationSettings(**{**vars(settings), "rewrite_target": "", "use_regex": False,
                                                    "app_root": "", "permanent_redirect": "",
                                                    "temporal_redirect": ""})
        for host, _rule, _paths in _paths_of(ing):
            if host in servers:
                continue
            root = Location(ROOT, "Prefix", default_up.name if default_up else DEFAULT_UPSTREAM, ingress=_key(ing),
                            is_default=True, settings=settings)
            if default_up is not None:
                root.service, root.service_port = default_up.service, default_up.port
            servers[host] = Server(host, [root], ingress_default=default_up.name if default_up else None)

    # TLS: the first Ingress naming a host in spec.tls gives its certificate
    secrets = {(_meta(s).get("namespace", "default"), _meta(s).get("name")): s for s in objects.get("secrets") or []}
    for ing in ingresses:
        ns = _meta(ing).get("namespace", "default")
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
                        warnings.append(f"Ingress {_key(ing)}: host {host}: {why}: using a self-signed certificate")

    # locations (getBackendServers)
    for ing in ingresses:
        settings = settings_of[_key(ing)]
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
                if not (_SAFE_REGEX if settings.use_regex else _SAFE).match(path):
                    warnings.append(f"Ingress {_key(ing)}: path {path!r} cannot be configured: skipped")
                    continue
                add = True
                for loc in server.locations:
                    if loc.path != path:
                        continue
                    if loc.path_type != path_type:
                        break
                    add = False
                    if not loc.is_default:
                        if loc.ingress != _key(ing):
                            warnings.append(f"Ingress {_key(ing)}: host {host} path {path} is already defined "
                                            f"by Ingress {loc.ingress}: ignored")
                        break
                    loc.upstream, loc.is_default, loc.ingress, loc.settings = up.name, False, _key(ing), settings
                    loc.service, loc.service_port = up.service, up.port
                    break
                if add:
                    server.locations.append(Location(path, path_type, up.name, ingress=_key(ing), settings=settings,
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
    return Model(sorted(servers.values(), key=lambda s: s.hostname), ups, [_key(i) for i in ingresses])


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
        return None, f'secret "{_key(secret)}" is not valid base64'
    if b"-----BEGIN CERTIFICATE-----" not in crt:
        return None, f'secret "{_key(secret)}" has no certificate in tls.crt'
    if b"PRIVATE KEY-----" not in key:
        return None, f'secret "{_key(secret)}" has no private key in tls.key'
    return crt.rstrip(b"\n") + b"\n" + key.rstrip(b"\n") + b"\n", None


# --------------------------------------------------------------------------- the text
def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _q_dollar(text: str) -> str:
    """Quoted for `set`, which resolves variables: a literal $ becomes ${literal_dollar} (ingress-nginx's
    escapeLiteralDollar)."""
    return _q(text).replace("$", "${literal_dollar}")


def _q_regex(text: str) -> str:
    # a regular expression keeps its backslashes; only the quote needs escaping
    return '"' + text.replace('"', '\\"') + '"'


def location_match(loc: Location, enforce_regex: bool) -> str:
    """buildLocation in ingress-nginx's template.go."""
    if enforce_regex:
        return f'~* {_q_regex("^" + loc.path)}'
    if loc.path_type == "Exact":
        return f"= {_q(loc.path)}"
    return _q(loc.path)


def render(objects: dict, cfg: ControllerConfig, *, conf_dir: str, cert_dir: str,
           default_cert: str = "default-fake-certificate.pem", config_id: str = "") -> Rendered:
    """The nginx.conf for a snapshot (``objects``: ingresses, ingressClasses, services, endpointSlices,
    secrets, configMaps as API JSON). Paths in the text: ``conf_dir`` for nginx's own files (pid, temp
    directories), ``cert_dir`` for certificates (``default_cert`` is the fallback certificate there).
    ``config_id`` is what nginx answers on 127.0.0.1:<status port>/netemu/config-id, so that the
    controller can tell when a reload is done."""
    warnings: list[str] = []
    if cfg.configmap:
        ns, _, name = cfg.configmap.partition("/")
        for cm in objects.get("configMaps") or []:
            if (_meta(cm).get("namespace"), _meta(cm).get("name")) == (ns, name):
                cfg, notes = cfg.with_configmap(cm.get("data") or {})
                warnings += notes
    model = build_model(objects, cfg, warnings)
    files: dict[str, bytes] = {}
    self_signed: dict[str, str] = {}
    secrets = {(_meta(s).get("namespace", "default"), _meta(s).get("name")): s for s in objects.get("secrets") or []}
    if cfg.default_ssl_certificate:
        ns, _, name = cfg.default_ssl_certificate.partition("/")
        secret = secrets.get((ns, name))
        pem, why = tls_pem(secret) if secret is not None else (None, f'secret "{cfg.default_ssl_certificate}" '
                                                                     "not found")
        if pem is not None:
            default_cert = f"{ns}-{name}.pem"
            files[default_cert] = pem
        else:
            warnings.append(f"--default-ssl-certificate: {why}: using the fake certificate")
    for server in model.servers:
        if server.cert is None:
            continue
        if server.cert.startswith("self-signed-"):
            self_signed[server.cert] = server.hostname
        else:
            ns_name = server.cert[:-len(".pem")]
            for (ns, name), secret in secrets.items():
                if f"{ns}-{name}" == ns_name:
                    pem, _ = tls_pem(secret)
                    if pem is not None:
                        files[server.cert] = pem
    text = _text(model, cfg, conf_dir=conf_dir, cert_dir=cert_dir, default_cert=default_cert, config_id=config_id)
    return Rendered(text, files, self_signed, warnings, model)


def _text(model: Model, cfg: ControllerConfig, *, conf_dir: str, cert_dir: str, default_cert: str,
          config_id: str) -> str:
    out: list[str] = []
    w = out.append
    w("# Configuration rendered by netemu's ingress-nginx controller (the layout of ingress-nginx's nginx.tmpl).")
    w(f"# Ingresses: {', '.join(model.ingresses) or '(none)'}")
    w("")
    w("user root;")
    w(f"worker_processes {cfg.worker_processes};")
    w(f"pid {conf_dir}/nginx.pid;")
    if cfg.max_open_files:
        w(f"worker_rlimit_nofile {cfg.max_open_files};")
    w("worker_shutdown_timeout 240s;")
    w("error_log stderr notice;")
    w("")
    w("events {")
    w("    multi_accept on;")
    connections = cfg.max_worker_connections
    if cfg.max_open_files:  # ingress-nginx keeps them within the descriptors a worker may open
        connections = min(connections, max(512, cfg.max_open_files - 1024))
    w(f"    worker_connections {connections};")
    w("    use epoll;")
    w("}")
    w("")
    w("http {")
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        w(f"    {kind}_temp_path {conf_dir}/tmp/{kind};")
    w("    types {")
    w("        text/html html htm;")
    w("        text/plain txt;")
    w("        application/json json;")
    w("    }")
    w("    default_type text/html;")
    w("    sendfile on;")
    w("    tcp_nopush on;")
    w("    tcp_nodelay on;")
    w("    keepalive_timeout 75s;")
    w("    keepalive_requests 1000;")
    w("    client_body_buffer_size 8k;")
    w("    client_header_buffer_size 1k;")
    w("    large_client_header_buffers 4 8k;")
    w("    server_tokens off;")
    w("    server_names_hash_bucket_size 64;")
    w("    map_hash_bucket_size 64;")
    w("    variables_hash_bucket_size 256;")
    w("    variables_hash_max_size 2048;")
    w("    underscores_in_headers off;")
    w("    ignore_invalid_headers on;")
    w("    absolute_redirect on;")
    w("    port_in_redirect off;")
    w("")
    w(f"    log_format upstreaminfo '{LOG_FORMAT}';")
    w("    access_log /dev/stdout upstreaminfo;" if cfg.access_log else "    access_log off;")
    w("")
    w("    # See https://www.nginx.com/blog/websocket-nginx")
    w("    map $http_upgrade $connection_upgrade {")
    w("        default upgrade;")
    w("        ''      '';" if cfg.keepalive_connections > 0 else "        ''      close;")
    w("    }")
    w("    # a variable holding a literal $ (geo does not resolve variables), for paths written into `set`")
    w("    geo $literal_dollar {")
    w('        default "$";')
    w("    }")
    w("    # ssl-redirect drops a trailing slash, as ingress-nginx's Lua does (preserve-trailing-slash false)")
    w("    map $request_uri $redirect_uri {")
    w('        "~^(?<keep>.*)/$" $keep;')
    w("        default $request_uri;")
    w("    }")
    if cfg.use_forwarded_headers:
        w("    map $http_x_forwarded_proto $pass_access_scheme { default $http_x_forwarded_proto; '' $scheme; }")
    else:
        w("    map $scheme $pass_access_scheme { default $scheme; }")
    w("")
    w("    ssl_protocols TLSv1.2 TLSv1.3;")
    w(f"    ssl_ciphers '{SSL_CIPHERS}';")
    w("    ssl_prefer_server_ciphers on;")
    w("    ssl_session_cache shared:SSL:10m;")
    w("    ssl_session_timeout 10m;")
    w("    ssl_session_tickets off;")
    w("    ssl_buffer_size 4k;")
    w(f"    ssl_certificate {cert_dir}/{default_cert};")
    w(f"    ssl_certificate_key {cert_dir}/{default_cert};")
    w("")
    w(f"    upstream {DEFAULT_UPSTREAM} {{")
    w(f"        server 127.0.0.1:{cfg.default_backend_port};")
    w("    }")
    for up in model.upstreams:
        w("")
        w(f"    # {up.namespace}/{up.service} port {up.port}" + (f": {up.problem}" if up.problem else ""))
        if not up.servers:
            continue
        w(f"    upstream {up.name} {{")
        for s in up.servers:
            w(f"        server {s} max_fails=0;")
        if cfg.keepalive_connections > 0:
            w(f"        keepalive {cfg.keepalive_connections};")
            w(f"        keepalive_timeout {cfg.keepalive_timeout}s;")
            w(f"        keepalive_requests {cfg.keepalive_requests};")
        w("    }")
    live = {u.name for u in model.upstreams if u.servers} | {DEFAULT_UPSTREAM}
    for server in model.servers:
        w("")
        w(f"    ## start server {server.hostname}")
        w("    server {")
        w(f"        server_name {_q(server.hostname)};")
        default = " default_server reuseport backlog=4096" if server.hostname == DEFAULT_SERVER else ""
        w(f"        listen {cfg.http_port}{default};")
        w(f"        listen {cfg.https_port}{default} ssl;")
        if server.cert is not None:
            w(f"        ssl_certificate {cert_dir}/{server.cert};")
            w(f"        ssl_certificate_key {cert_dir}/{server.cert};")
        w('        set $proxy_upstream_name "-";')
        w('        set $proxy_alternative_upstream_name "";')
        enforce = server.enforce_regex()
        for loc in server.locations:
            _location(w, server, loc, enforce, cfg, live)
        w("    }")
        w(f"    ## end server {server.hostname}")
    w("")
    w("    # backend for when default-backend-service is not configured or it does not have endpoints")
    w("    server {")
    w(f"        listen 127.0.0.1:{cfg.default_backend_port} default_server;")
    w('        set $proxy_upstream_name "internal";')
    w("        access_log off;")
    w("        location / {")
    w("            return 404;")
    w("        }")
    w("    }")
    w("")
    w("    # default server, used for NGINX healthcheck and access to nginx stats")
    w("    server {")
    w(f"        listen 127.0.0.1:{cfg.status_port};")
    w('        set $proxy_upstream_name "internal";')
    w("        keepalive_timeout 0;")
    w("        access_log off;")
    w("        location /healthz {")
    w("            return 200;")
    w("        }")
    w("        location /nginx_status {")
    w("            stub_status on;")
    w("        }")
    w("        location = /netemu/config-id {")
    w(f"            return 200 {_q(config_id)};")
    w("        }")
    w("        location / {")
    w("            return 404;")
    w("        }")
    w("    }")
    w("}")
    return "\n".join(out) + "\n"


def _pick(annotation, default):
    return default if annotation is None else annotation


def _location(w, server: Server, loc: Location, enforce: bool, cfg: ControllerConfig, live: set[str]) -> None:
    s = loc.settings
    w("")
    w(f"        location {location_match(loc, enforce)} {{")
    ns = loc.namespace
    name = loc.ingress.split("/", 1)[1] if loc.ingress else ""
    w(f'            set $namespace {_q(ns)};')
    w(f'            set $ingress_name {_q(name)};')
    w(f'            set $service_name {_q(loc.service)};')
    w(f'            set $service_port {_q(loc.service_port)};')
    w(f'            set $location_path {_q_dollar(loc.ingress_path or loc.path)};')
    w(f'            set $proxy_upstream_name {_q(loc.upstream)};')
    if s.app_root:
        w("            if ($uri = /) {")
        w(f"                return 302 $scheme://$http_host{s.app_root};")
        w("            }")
    ssl_redirect = cfg.ssl_redirect if s.ssl_redirect is None else s.ssl_redirect
    if s.force_ssl_redirect or (ssl_redirect and server.tls):
        w("            # enforce ssl on server side")
        w("            if ($pass_access_scheme = http) {")
        w(f"                return {cfg.http_redirect_code} https://$host$redirect_uri;")
        w("            }")
    if s.permanent_redirect:
        w(f"            return {s.permanent_redirect_code} {s.permanent_redirect};")
    elif s.temporal_redirect:
        w(f"            return 302 {s.temporal_redirect};")
    body_size = s.proxy_body_size or cfg.proxy_body_size
    w(f"            client_max_body_size {body_size};")
    host = _q(s.upstream_vhost) if s.upstream_vhost else "$http_host"
    w(f"            proxy_set_header Host {host};")
    w("            proxy_set_header Upgrade $http_upgrade;")
    w("            proxy_set_header Connection $connection_upgrade;")
    w("            proxy_set_header X-Request-ID $request_id;")
    w("            proxy_set_header X-Real-IP $remote_addr;")
    w("            proxy_set_header X-Forwarded-For $remote_addr;")
    w("            proxy_set_header X-Forwarded-Host $http_host;")
    w("            proxy_set_header X-Forwarded-Port $server_port;")
    w("            proxy_set_header X-Forwarded-Proto $pass_access_scheme;")
    w("            proxy_set_header X-Forwarded-Scheme $pass_access_scheme;")
    w("            proxy_set_header X-Scheme $pass_access_scheme;")
    w('            proxy_set_header Proxy "";')
    if s.x_forwarded_prefix:
        w(f"            proxy_set_header X-Forwarded-Prefix {_q(s.x_forwarded_prefix)};")
    w(f"            proxy_connect_timeout {_pick(s.proxy_connect_timeout, cfg.proxy_connect_timeout)}s;")
    w(f"            proxy_send_timeout {_pick(s.proxy_send_timeout, cfg.proxy_send_timeout)}s;")
    w(f"            proxy_read_timeout {_pick(s.proxy_read_timeout, cfg.proxy_read_timeout)}s;")
    w(f"            proxy_buffering {cfg.proxy_buffering};")
    w("            proxy_buffer_size 4k;")
    w("            proxy_buffers 4 4k;")
    w("            proxy_request_buffering on;")
    w("            proxy_http_version 1.1;")
    w("            proxy_cookie_domain off;")
    w("            proxy_cookie_path off;")
    w("            proxy_next_upstream error timeout;")
    w("            proxy_next_upstream_timeout 0;")
    w(f"            proxy_next_upstream_tries {_pick(s.proxy_next_upstream_tries, cfg.proxy_next_upstream_tries)};")
    if loc.upstream not in live:
        w("            # no endpoint to send to")
        w("            return 503;")
    else:
        proto = {"HTTPS": "https://", "AUTO_HTTP": "$scheme://"}.get(s.backend_protocol, "http://")
        if loc.upstream == DEFAULT_UPSTREAM:
            proto = "http://"
        if needs_rewrite(loc) and not loc.is_default:
            w(f"            rewrite {_q_regex('(?i)' + loc.path)} {s.rewrite_target} break;")
        w(f"            proxy_pass {proto}{loc.upstream};")
    w("        }")
