"""Ingress and IngressClass (networking.k8s.io/v1), and the old Ingress shape, read into one form.

Two shapes of Ingress are in the wild:

    networking.k8s.io/v1                     extensions/v1beta1, networking.k8s.io/v1beta1
    backend:                                 backend:
      service:                                 serviceName: hname-svc-default
        name: hname-svc-default                servicePort: 80
        port: {number: 80}                   (no pathType: ImplementationSpecific)
    pathType: Prefix | Exact | ...           spec.backend (the default backend)
    spec.defaultBackend

The old one was removed from Kubernetes in 1.22, but blogs still show it. netemu converts it to v1
as the API server did when it served both (:func:`normalize`): serviceName/servicePort become
service.name and port.number (a named port: port.name), a missing pathType becomes
ImplementationSpecific, spec.backend becomes spec.defaultBackend, and the object is stored as
networking.k8s.io/v1. Every later step (validation, the controller, `get ingress`) sees only v1.

Blog manifests also carry placeholders (seed 000: ``apiVersion: [api 버전]``, a third path entry
``- path: [경로]`` with ``serviceName: [클러스터 IP 서비스 이름]``). YAML reads ``[x]`` as a list, which no
scalar field accepts. :func:`prepare_ingress` runs on the raw document before its apiVersion is
checked and, with a warning each:

- an apiVersion that is missing or a placeholder is inferred from the shape (serviceName/servicePort
  or spec.backend: networking.k8s.io/v1beta1; otherwise networking.k8s.io/v1);
- a path entry holding a placeholder (in path, serviceName, servicePort, service.name or
  port.number/name) is skipped, the rest of the Ingress is kept; a rule left without paths, or whose
  host is a placeholder, is skipped;
- the old shape is named once, with what it was converted to.

A placeholder is a list where a scalar belongs (``[경로]``), or text in angle or square brackets
(``<service-name>``, ``"[port]"``).

This module registers its kinds in :mod:`netemu.spec.models` (KINDS, API_VERSIONS, NAMESPACED) when
imported; ``models`` imports it at its end, so the registration happens whichever is imported first.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from netemu.spec import models as _models
from netemu.spec.models import IntOrString, K8sModel, ObjectMeta

V1 = "networking.k8s.io/v1"
V1BETA1 = "networking.k8s.io/v1beta1"
EXTENSIONS = "extensions/v1beta1"
LEGACY_VERSIONS = (V1BETA1, EXTENSIONS)
INGRESS_VERSIONS = (V1, V1BETA1, EXTENSIONS)
INGRESS_CLASS_VERSIONS = (V1, V1BETA1)

PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")


# --------------------------------------------------------------------------- models (v1)
class ServiceBackendPort(K8sModel):
    number: Optional[int] = None
    name: Optional[str] = None


class IngressServiceBackend(K8sModel):
    name: str
    port: Optional[ServiceBackendPort] = None


class TypedLocalObjectReference(K8sModel):
    api_group: Optional[str] = None
    kind: str
    name: str


class IngressBackend(K8sModel):
    service: Optional[IngressServiceBackend] = None
    resource: Optional[TypedLocalObjectReference] = None
    # the v1beta1 fields: known here so that a flattened old manifest is re-indented by the schema;
    # always converted to `service` (see normalize), never stored
    service_name: Optional[str] = None
    service_port: Optional[IntOrString] = None


class HTTPIngressPath(K8sModel):
    path: Optional[str] = None
    path_type: Optional[Literal["Exact", "Prefix", "ImplementationSpecific"]] = None
    backend: IngressBackend


class HTTPIngressRuleValue(K8sModel):
    paths: list[HTTPIngressPath]


class IngressRule(K8sModel):
    host: Optional[str] = None
    http: Optional[HTTPIngressRuleValue] = None


class IngressTLS(K8sModel):
    hosts: Optional[list[str]] = None
    secret_name: Optional[str] = None


class IngressSpec(K8sModel):
    ingress_class_name: Optional[str] = None
    default_backend: Optional[IngressBackend] = None
    backend: Optional[IngressBackend] = None  # v1beta1's name for defaultBackend: converted, never stored
    tls: Optional[list[IngressTLS]] = None
    rules: Optional[list[IngressRule]] = None


class IngressPortStatus(K8sModel):
    port: int
    protocol: str = "TCP"
    error: Optional[str] = None


class IngressLoadBalancerIngress(K8sModel):
    ip: Optional[str] = None
    hostname: Optional[str] = None
    ports: Optional[list[IngressPortStatus]] = None


class IngressLoadBalancerStatus(K8sModel):
    ingress: Optional[list[IngressLoadBalancerIngress]] = None


class IngressStatus(K8sModel):
    load_balancer: IngressLoadBalancerStatus = Field(default_factory=IngressLoadBalancerStatus)


class Ingress(K8sModel):
    api_version: str = V1
    kind: Literal["Ingress"] = "Ingress"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: IngressSpec = Field(default_factory=IngressSpec)
    status: IngressStatus = Field(default_factory=IngressStatus)

    @model_validator(mode="before")
    @classmethod
    def _to_v1(cls, data: Any) -> Any:
        if isinstance(data, dict):
            normalize(data)
        return data


class IngressClassParametersReference(K8sModel):
    api_group: Optional[str] = None
    kind: str
    name: str
    namespace: Optional[str] = None
    scope: Optional[Literal["Cluster", "Namespace"]] = None


class IngressClassSpec(K8sModel):
    controller: Optional[str] = None
    parameters: Optional[IngressClassParametersReference] = None


class IngressClass(K8sModel):
    api_version: str = V1
    kind: Literal["IngressClass"] = "IngressClass"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: IngressClassSpec = Field(default_factory=IngressClassSpec)

    @model_validator(mode="before")
    @classmethod
    def _to_v1(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("apiVersion") == V1BETA1:
            data["apiVersion"] = V1
        return data


# --------------------------------------------------------------------------- the old shape -> v1
def _has_legacy_fields(data: dict) -> bool:
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return False
    if "backend" in spec:
        return True
    for _, backend in _backends(spec):
        if "serviceName" in backend or "servicePort" in backend:
            return True
    return False


def _backends(spec: dict):
    """(field path, backend mapping) for every backend of a raw spec."""
    for key in ("defaultBackend", "backend"):
        if isinstance(spec.get(key), dict):
            yield f"spec.{key}", spec[key]
    for i, rule in enumerate(spec.get("rules") or []):
        http = rule.get("http") if isinstance(rule, dict) else None
        paths = http.get("paths") if isinstance(http, dict) else None
        for j, p in enumerate(paths if isinstance(paths, list) else []):
            if isinstance(p, dict) and isinstance(p.get("backend"), dict):
                yield f"spec.rules[{i}].http.paths[{j}].backend", p["backend"]


def _port_of(value: Any) -> Optional[dict]:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return {"number": value}
    if isinstance(value, str):
        return {"number": int(value)} if value.isdigit() else {"name": value}
    return None


def normalize(data: dict) -> bool:
    """Convert a raw Ingress document of the old shape to v1, in place (safe to repeat).
    Returns True when anything was converted."""
    legacy = data.get("apiVersion") in LEGACY_VERSIONS or _has_legacy_fields(data)
    if not legacy:
        return False
    spec = data.get("spec")
    if isinstance(spec, dict):
        for _, backend in list(_backends(spec)):
            if "serviceName" in backend or "servicePort" in backend:
                name = backend.pop("serviceName", None)
                port = backend.pop("servicePort", None)
                if not isinstance(backend.get("service"), dict):
                    backend["service"] = {}
                service = backend["service"]
                if name is not None:
                    service.setdefault("name", name)
                converted = _port_of(port)
                if converted is not None:
                    service.setdefault("port", converted)
                elif port is not None:  # malformed: keep it where validation will name it
                    service.setdefault("port", port)
        if "backend" in spec:
            old = spec.pop("backend")
            spec.setdefault("defaultBackend", old)
        if data.get("apiVersion") in LEGACY_VERSIONS:  # v1 requires pathType; v1beta1 defaulted it
            for rule in spec.get("rules") or []:
                http = rule.get("http") if isinstance(rule, dict) else None
                for p in (http.get("paths") if isinstance(http, dict) else None) or []:
                    if isinstance(p, dict) and p.get("pathType") is None:
                        p["pathType"] = "ImplementationSpecific"
    if data.get("apiVersion") in LEGACY_VERSIONS:
        data["apiVersion"] = V1
    return True


# --------------------------------------------------------------------------- placeholders
_BRACKETED = re.compile(r"^\s*(\[.*\]|<.*>|\{\{.*\}\})\s*$", re.S)


def is_placeholder(value: Any) -> bool:
    """A blog's stand-in for a value: ``[경로]`` (YAML: a one-item list), ``<name>``, ``"[port]"``."""
    if isinstance(value, list):
        return all(isinstance(v, (str, int, float)) for v in value)
    if isinstance(value, dict):
        return False
    return isinstance(value, str) and bool(_BRACKETED.match(value))


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _placeholders_in_path(p: dict) -> list[str]:
    found = []
    if is_placeholder(p.get("path")):
        found.append(_shown(p["path"]))
    backend = p.get("backend")
    if isinstance(backend, dict):
        for key in ("serviceName", "servicePort"):
            if key in backend and is_placeholder(backend[key]):
                found.append(_shown(backend[key]))
        svc = backend.get("service")
        if isinstance(svc, dict):
            if is_placeholder(svc.get("name")):
                found.append(_shown(svc["name"]))
            port = svc.get("port")
            if is_placeholder(port):
                found.append(_shown(port))
            elif isinstance(port, dict):
                found += [_shown(v) for k, v in port.items() if k in ("number", "name") and is_placeholder(v)]
    elif is_placeholder(backend):
        found.append(_shown(backend))
    return found


def _infer_version(data: dict) -> tuple[str, str]:
    if _has_legacy_fields(data):
        return V1BETA1, "the networking.k8s.io/v1beta1 shape (backend.serviceName/servicePort)"
    return V1, "the networking.k8s.io/v1 shape"


def prepare_ingress(data: dict) -> list[tuple[str, str]]:
    """Fix-ups of a raw Ingress document before its apiVersion is checked, in place; returns
    (field path, warning) for each. See the module's docstring."""
    notes: list[tuple[str, str]] = []
    spec = data.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("rules"), list):
        kept_rules = []
        for i, rule in enumerate(spec["rules"]):
            if not isinstance(rule, dict):
                kept_rules.append(rule)
                continue
            if is_placeholder(rule.get("host")):
                notes.append((f"spec.rules[{i}].host", f"{_shown(rule['host'])} is a placeholder, not a host name: "
                                                       "this rule is skipped"))
                continue
            http = rule.get("http")
            paths = http.get("paths") if isinstance(http, dict) else None
            if isinstance(paths, list):
                kept = []
                for j, p in enumerate(paths):
                    found = _placeholders_in_path(p) if isinstance(p, dict) else []
                    if found:
                        notes.append((f"spec.rules[{i}].http.paths[{j}]",
                                      f"{', '.join(found)}: a placeholder from the manifest's source, not a value: "
                                      "this path is skipped"))
                        continue
                    kept.append(p)
                if paths and not kept:
                    notes.append((f"spec.rules[{i}]", "no path left after the placeholders: this rule is skipped"))
                    continue
                http["paths"] = kept
            kept_rules.append(rule)
        spec["rules"] = kept_rules
    version = data.get("apiVersion")
    converted = (", converted to networking.k8s.io/v1 as the API server did (serviceName/servicePort -> "
                 "service.name/port, spec.backend -> spec.defaultBackend")
    if version is None or is_placeholder(version) or (isinstance(version, str) and not version.strip()):
        inferred, shape = _infer_version(data)
        what = "is missing" if version is None or not str(version).strip() else \
            f"{_shown(version)} is a placeholder, not an API version"
        note = f"{what}: the manifest has {shape}, so netemu reads it as {inferred}"
        if inferred in LEGACY_VERSIONS:
            note += f" (removed in Kubernetes 1.22){converted}, no pathType -> ImplementationSpecific)"
        notes.append(("apiVersion", note))
        data["apiVersion"] = inferred
        normalize(data)
        return notes
    if isinstance(version, str) and version in LEGACY_VERSIONS:
        notes.append(("apiVersion", f"Ingress {version} was removed in Kubernetes 1.22: netemu reads it"
                                    f"{converted}, no pathType -> ImplementationSpecific)"))
        normalize(data)
    elif version == V1 and _has_legacy_fields(data):
        notes.append(("spec", "backend.serviceName/servicePort (or spec.backend) are the v1beta1 field names; "
                              f"{V1} has backend.service.name/port.number: netemu reads them as such"))
        normalize(data)
    return notes


# --------------------------------------------------------------------------- validation
_HOST_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_HOST = re.compile(rf"^(\*\.)?{_HOST_LABEL}(\.{_HOST_LABEL})*$")
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def check_host(host: str) -> Optional[str]:
    """An Ingress host as the API server validates it: a DNS subdomain, optionally `*.` prefixed,
    no IP address, no port."""
    try:
        ipaddress.ip_address(host)
        return "must be a DNS name, not an IP address"
    except ValueError:
        pass
    if ":" in host:
        return "must be a DNS name without a port"
    if len(host) > 253 or not _HOST.match(host):
        return ("must be a lowercase RFC 1123 subdomain, optionally with a leading '*.' "
                "(e.g. 'example.com' or '*.example.com')")
    return None


def _check_path(path: Optional[str], path_type: Optional[str]) -> Optional[str]:
    if path_type is None:
        return None  # reported on pathType
    if path_type in ("Exact", "Prefix"):
        if not path or not path.startswith("/"):
            return f"must be an absolute path (starting with '/') for pathType {path_type}, got {path!r}"
        for bad in ("//", "/./", "/../", "%2f", "%2F"):
            if bad in path:
                return f"must not contain {bad!r}"
        if path.endswith(("/..", "/.")):
            return "must not end with '/..' or '/.'"
    elif path and not path.startswith("/"):
        return f"must be an absolute path (starting with '/'), got {path!r}"
    return None


def _check_backend(b: IngressBackend, where: str, loc, report) -> None:
    if b.service is None and b.resource is None:
        report.error(loc, where, "must name a service (service.name and port) or a resource")
        return
    if b.service is not None and b.resource is not None:
        report.error(loc, where, "service and resource are mutually exclusive")
    if b.service is not None:
        s = b.service
        if _models_check_dns_1035(s.name) is not None:
            report.error(loc, f"{where}.service.name", _models_check_dns_1035(s.name))
        port = s.port
        if port is None or (port.number is None and not port.name):
            report.error(loc, f"{where}.service.port", "required: a port number or a port name")
        elif port.number is not None and port.name:
            report.error(loc, f"{where}.service.port", "number and name are mutually exclusive")
        elif port.number is not None and not 1 <= port.number <= 65535:
            report.error(loc, f"{where}.service.port.number", f"must be between 1 and 65535, got {port.number}")
        elif port.name and (len(port.name) > 15 or not _PORT_NAME.match(port.name)):
            report.error(loc, f"{where}.service.port.name", f"{port.name!r} is not a valid port name "
                                                            "(lowercase letters, digits and '-', at most 15)")


def _models_check_dns_1035(name: str) -> Optional[str]:
    from netemu.spec.rules import check_dns_1035_label

    return check_dns_1035_label(name)


def check_ingress(obj: K8sModel, loc, report) -> None:
    """What the API server refuses in an Ingress or IngressClass (after the conversion to v1)."""
    from netemu.spec.rules import check_dns_subdomain

    if isinstance(obj, IngressClass):
        ctrl = obj.spec.controller
        if not ctrl:
            report.error(loc, "spec.controller", "required field is missing (e.g. k8s.io/ingress-nginx)")
        elif len(ctrl) > 250 or "/" not in ctrl:
            report.error(loc, "spec.controller", f"must be a domain-prefixed path such as k8s.io/ingress-nginx, "
                                                 f"got {ctrl!r}")
        return
    if not isinstance(obj, Ingress):
        return
    spec = obj.spec
    if spec.ingress_class_name is not None and (why := check_dns_subdomain(spec.ingress_class_name)):
        report.error(loc, "spec.ingressClassName", why)
    if not spec.rules and spec.default_backend is None:
        report.error(loc, "spec", "either defaultBackend or rules must be specified")
    if spec.default_backend is not None:
        _check_backend(spec.default_backend, "spec.defaultBackend", loc, report)
    for i, rule in enumerate(spec.rules or []):
        if rule.host and (why := check_host(rule.host)):
            report.error(loc, f"spec.rules[{i}].host", why)
        if rule.http is None:
            continue
        if not rule.http.paths:
            report.error(loc, f"spec.rules[{i}].http.paths", "must have at least one path")
        for j, p in enumerate(rule.http.paths):
            where = f"spec.rules[{i}].http.paths[{j}]"
            if p.path_type is None:
                report.error(loc, f"{where}.pathType", "required field is missing: Exact, Prefix or "
                                                       "ImplementationSpecific")
            elif (why := _check_path(p.path, p.path_type)) is not None:
                report.error(loc, f"{where}.path", why)
            _check_backend(p.backend, f"{where}.backend", loc, report)
    for i, tls in enumerate(spec.tls or []):
        for j, host in enumerate(tls.hosts or []):
            if (why := check_host(host)) is not None:
                report.error(loc, f"spec.tls[{i}].hosts[{j}]", why)
        if tls.secret_name is not None and (why := check_dns_subdomain(tls.secret_name)):
            report.error(loc, f"spec.tls[{i}].secretName", why)


# --------------------------------------------------------------------------- registration
_models.KINDS.setdefault("Ingress", Ingress)
_models.KINDS.setdefault("IngressClass", IngressClass)
_models.API_VERSIONS.setdefault("Ingress", INGRESS_VERSIONS)
_models.API_VERSIONS.setdefault("IngressClass", INGRESS_CLASS_VERSIONS)
_models.NAMESPACED.add("Ingress")
