"""Semantic validation of loaded objects: every problem is reported, not just the first.

Runs after defaults are applied (so a Service's type is known). Per-kind checks live in
``validate_pods``, ``validate_services`` and ``validate_lab``; here are the object's metadata and
what can only be seen across objects (duplicates, node ports and cluster IPs used twice).
"""
from __future__ import annotations

import base64
import binascii
from typing import Callable, Optional

from netemu.spec.convert import Converted
from netemu.spec.errors import Location, Report
from netemu.spec.models import (
    NAMESPACED, ConfigMap, Deployment, EndpointSlice, K8sModel, Lab, Pod, ReplicaSet, Secret, Service,
)
from netemu.spec.rules import (
    check_config_key, check_dns_1035_label, check_dns_label, check_dns_subdomain, check_label_key,
)
from netemu.spec.validate_lab import check_lab_name, validate_lab
from netemu.spec.validate_pods import (
    check_daemonset, check_job, check_labels, check_pdb, check_pod_spec, check_workload, is_control_process_pod,
    pod_capacity,
)
from netemu.spec.validate_services import check_endpoint_slice, check_service

__all__ = ["validate_objects", "validate_lab", "check_lab_name"]

# the name rule Kubernetes applies to each kind
NAME_RULES: dict[str, Callable[[str], Optional[str]]] = {
    "Pod": check_dns_subdomain,
    "Deployment": check_dns_subdomain,
    "ReplicaSet": check_dns_subdomain,
    "Service": check_dns_1035_label,
    "EndpointSlice": check_dns_subdomain,
    "Namespace": check_dns_label,
    "ConfigMap": check_dns_subdomain,
    "Secret": check_dns_subdomain,
    "Ingress": check_dns_subdomain,
    "IngressClass": check_dns_subdomain,
    "IPAddressPool": check_dns_subdomain,
    "L2Advertisement": check_dns_subdomain,
    "HorizontalPodAutoscaler": check_dns_subdomain,
    "DaemonSet": check_dns_subdomain,
    "Job": check_dns_subdomain,
    "PodDisruptionBudget": check_dns_subdomain,
}


MAX_NAME = 253  # every object's name (it is a path segment of the API and a key in etcd)
MAX_ANNOTATIONS_BYTES = 256 * 1024  # all of an object's annotations (apimachinery's TotalAnnotationSizeLimitB)
MAX_CONFIG_BYTES = 1024 * 1024  # a ConfigMap's or Secret's data (MaxSecretSize)


def _check_metadata(obj: K8sModel, loc: Location, report: Report) -> None:
    meta = obj.metadata
    if not meta.name:
        report.error(loc, "metadata.name", "required field is missing")
    elif (rule := NAME_RULES.get(obj.kind)) and (why := rule(meta.name)) is not None:
        report.error(loc, "metadata.name", why)
    elif len(meta.name) > MAX_NAME:
        report.error(loc, "metadata.name", f"must be no more than {MAX_NAME} characters, got {len(meta.name)}")
    if obj.kind in NAMESPACED and meta.namespace and (why := check_dns_label(meta.namespace)) is not None:
        report.error(loc, "metadata.namespace", why)
    if obj.kind not in NAMESPACED and meta.namespace:
        report.warn(loc, "metadata.namespace", f"{obj.kind} is not namespaced: ignored")
    check_labels(meta.labels, "metadata.labels", loc, report)
    for key in meta.annotations or {}:
        if (why := check_label_key(key)) is not None:
            report.error(loc, "metadata.annotations", f"key {key!r} {why}")
    size = sum(len(str(k)) + len(str(v)) for k, v in (meta.annotations or {}).items())
    if size > MAX_ANNOTATIONS_BYTES:
        report.error(loc, "metadata.annotations", f"Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes, "
                                                  f"got {size}")


def _check_config(obj: ConfigMap | Secret, loc: Location, report: Report) -> None:
    fields = (("data", obj.data), ("binaryData" if isinstance(obj, ConfigMap) else "stringData",
                                   obj.binary_data if isinstance(obj, ConfigMap) else obj.string_data))
    for field, values in fields:
        for key in values or {}:
            if (why := check_config_key(key)) is not None:
                report.error(loc, f"{field}.{key}", f"key {why}")
    if isinstance(obj, ConfigMap):
        for key in set(obj.data or {}) & set(obj.binary_data or {}):
            report.error(loc, f"binaryData.{key}", "duplicate of a key in data")
    if isinstance(obj, ConfigMap):  # what the API server counts: keys and values (binaryData decoded)
        size = sum(len(k) + len(str(v).encode()) for k, v in (obj.data or {}).items())
        size += sum(len(k) + len(str(v)) * 3 // 4 for k, v in (obj.binary_data or {}).items())
    else:  # a Secret's values, decoded (stringData ends up in data)
        size = sum(len(str(v)) * 3 // 4 for v in (obj.data or {}).values())
        size += sum(len(str(v).encode()) for v in (obj.string_data or {}).values())
    if size > MAX_CONFIG_BYTES:
        report.error(loc, "data", f"Too long: must have at most {MAX_CONFIG_BYTES} bytes (a {obj.kind} holds at "
                                  f"most 1 MiB), got {size}")
    base64_values = (obj.binary_data if isinstance(obj, ConfigMap) else obj.data) or {}
    field = "binaryData" if isinstance(obj, ConfigMap) else "data"
    for key, value in base64_values.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            report.error(loc, f"{field}.{key}", "must be base64-encoded (use stringData for plain text)"
                         if isinstance(obj, Secret) else "must be base64-encoded")


def validate_object(obj: K8sModel, loc: Location, lab: Lab, report: Report) -> None:
    node_names = [n.name for n in lab.spec.nodes or []]
    _check_metadata(obj, loc, report)
    if isinstance(obj, Pod):
        # kube-system's control-process pods are the lab's own (made by the control process, never
        # user input); they alone may share their node's network
        check_pod_spec(obj.spec, "spec", loc, report, node_names=node_names,
                       host_network_ok=is_control_process_pod(obj))
    elif isinstance(obj, (Deployment, ReplicaSet)):
        check_workload(obj, loc, report, node_names, capacity=pod_capacity(lab))
    elif obj.kind == "DaemonSet":
        check_daemonset(obj, loc, report, node_names)
    elif obj.kind == "Job":
        check_job(obj, loc, report, node_names)
    elif obj.kind == "PodDisruptionBudget":
        check_pdb(obj, loc, report)
    elif isinstance(obj, Service):
        check_service(obj, lab.spec, loc, report)
    elif isinstance(obj, EndpointSlice):
        check_endpoint_slice(obj, loc, report)
    elif isinstance(obj, (ConfigMap, Secret)):
        _check_config(obj, loc, report)
    elif obj.kind in ("Ingress", "IngressClass"):
        from netemu.spec.ingress import check_ingress

        check_ingress(obj, loc, report)
    elif obj.kind == "HorizontalPodAutoscaler":
        from netemu.spec.autoscaling import check_hpa

        check_hpa(obj, loc, report)


def _key(obj: K8sModel) -> tuple[str, str, str]:
    return obj.kind, (obj.metadata.namespace or "") if obj.kind in NAMESPACED else "", obj.metadata.name or ""


def _ref(obj: K8sModel) -> str:
    ns = f"{obj.metadata.namespace}/" if obj.kind in NAMESPACED else ""
    return f"{obj.kind} {ns}{obj.metadata.name}"


def _check_across(items: list[Converted], report: Report) -> None:
    seen: dict[tuple, Converted] = {}
    node_ports: dict[tuple[int, str], tuple[Converted, str]] = {}
    cluster_ips: dict[str, Converted] = {}
    for c in items:
        key = _key(c.obj)
        if key[2] and key in seen:
            report.error(c.loc, "metadata.name", f"{_ref(c.obj)} is defined twice (also in {seen[key].loc.where()})")
            continue
        seen[key] = c
        if not isinstance(c.obj, Service):
            continue
        for i, p in enumerate(c.obj.spec.ports or []):
            if p.node_port is None:
                continue
            np_key = (p.node_port, p.protocol or "TCP")
            if np_key in node_ports:
                other, other_path = node_ports[np_key]
                report.error(c.loc, f"spec.ports[{i}].nodePort", f"{p.node_port}/{np_key[1]} is already used by "
                             f"{_ref(other.obj)} ({other.loc.where()}: {other_path})")
            else:
                node_ports[np_key] = (c, f"spec.ports[{i}].nodePort")
        spec = c.obj.spec
        # clusterIP, then a dual-stack Service's secondary clusterIPs[1]
        owned = [("spec.clusterIP", spec.cluster_ip)]
        owned += [(f"spec.clusterIPs[{i}]", ip) for i, ip in enumerate(spec.cluster_ips or []) if i > 0]
        for path, ip in owned:
            if not ip or ip == "None":
                continue
            if ip in cluster_ips:
                other = cluster_ips[ip]
                report.error(c.loc, path, f"{ip} is already used by {_ref(other.obj)} ({other.loc.where()})")
            else:
                cluster_ips[ip] = c


def validate_objects(items: list[Converted], lab: Lab, report: Report) -> None:
    from netemu.spec.metallb import check_pools_across, validate_metallb

    pools = []
    for c in items:
        validate_object(c.obj, c.loc, lab, report.muting(c.muted))
        pools += validate_metallb(c.obj, c.loc, report.muting(c.muted)) or []
    check_pools_across(pools, report)
    _check_across(items, report)
