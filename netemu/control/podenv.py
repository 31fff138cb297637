"""What a container is started with, decided from the pod and the cluster (kubelet logic, pure):
hostname, environment (env, valueFrom, service links), and $(VAR) expansion in command/args."""
from __future__ import annotations

import re
from typing import Optional

from netemu.spec.models import Container, Pod

BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


def pod_hostname(pod: Pod) -> str:
    """spec.hostname, else the pod's name; cut to 63 characters (a DNS label, and what sethostname takes)
    without a trailing '-' or '.', as kubelet does."""
    name = pod.spec.hostname or pod.metadata.name or ""
    return name[:63].rstrip("-.") if len(name) > 63 else name


def _field(pod: Pod, path: str) -> str:
    values = {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name or "default",
        "status.podIP": pod.status.pod_ip,
        "status.hostIP": pod.status.host_ip,
    }
    if path in values:
        return values[path] or ""
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (getattr(pod.metadata, m.group(1)) or {}).get(m.group(2), "")
    return ""


def service_env(services) -> dict[str, str]:
    """Docker-link style variables for Services (see pod_services for which)."""
    env: dict[str, str] = {}
    for svc in services:
        ip = svc.spec.cluster_ip
        if not ip or ip == "None" or not svc.spec.ports:
            continue
        prefix = svc.metadata.name.upper().replace("-", "_")
        first = svc.spec.ports[0]
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(first.port)
        proto0 = (first.protocol or "TCP").lower()
        env[f"{prefix}_PORT"] = f"{proto0}://{ip}:{first.port}"
        for p in svc.spec.ports:
            proto = (p.protocol or "TCP")
            if p.name:
                env[f"{prefix}_SERVICE_PORT_{p.name.upper().replace('-', '_')}"] = str(p.port)
            base = f"{prefix}_PORT_{p.port}_{proto}"
            env[base] = f"{proto.lower()}://{ip}:{p.port}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(p.port)
            env[f"{base}_ADDR"] = ip
    return env


def pod_services(pod: Pod, services=(), master=None) -> list:
    """The Services whose variables a container gets, as kubelet picks them: those of the pod's
    namespace (unless enableServiceLinks is false), and always the master Service
    (`kubernetes` in `default`, the API server) that in-cluster clients find through
    KUBERNETES_SERVICE_HOST/PORT; a Service of the same name in the pod's namespace wins."""
    chosen: dict[str, object] = {}
    if pod.spec.enable_service_links is not False:  # unset is true, as the API server defaults it
        for svc in services:
            chosen[svc.metadata.name] = svc
    if master is not None and master.metadata.name not in chosen:
        chosen[master.metadata.name] = master
    return list(chosen.values())


def container_env(pod: Pod, container: Container, services=(), lookup=None, master=None) -> dict[str, str]:
    """services: those of the pod's namespace; master: the `kubernetes` Service of `default`.
    lookup(kind, namespace, name) -> object or None, for configMapKeyRef / secretKeyRef."""
    env = dict(BASE_ENV)
    env["HOSTNAME"] = pod_hostname(pod)
    env.update(service_env(pod_services(pod, services, master)))
    for var in container.env or []:
        if var.value is not None:
            env[var.name] = expand(var.value, env)
        elif var.value_from is not None:
            val = _value_from(pod, var.value_from, lookup)
            if val is not None:
                env[var.name] = val
        else:
            env[var.name] = ""
    return env


def _value_from(pod: Pod, src, lookup) -> Optional[str]:
    if src.field_ref:
        return _field(pod, src.field_ref.get("fieldPath", ""))
    if src.resource_field_ref:
        res = src.resource_field_ref.get("resource", "")
        return "0" if res.startswith("requests") else "1"
    for ref, kind in ((src.config_map_key_ref, "ConfigMap"), (src.secret_key_ref, "Secret")):
        if ref and lookup is not None:
            obj = lookup(kind, pod.metadata.namespace, ref.get("name", ""))
            if obj is None:
                return None
            data = dict(obj.data or {})
            if kind == "Secret":
                import base64

                data = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
                data.update(obj.string_data or {})
            return data.get(ref.get("key", ""))
    return None


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known variables are replaced, $$ escapes, unknown stay."""
    def repl(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR.sub(repl, text)


def command_line(container: Container, env: dict[str, str]) -> tuple[Optional[list[str]], Optional[list[str]]]:
    cmd = [expand(x, env) for x in container.command] if container.command else None
    args = [expand(x, env) for x in container.args] if container.args else None
    return cmd, args
