"""Files a pod sees: resolv.conf by dnsPolicy, the kubelet-managed hosts file, and the
ServiceAccount token volume.

resolv.conf and hosts are written to /etc/netns/<pod netns>/ (where `ip netns exec` expects them)
and bind-mounted over /etc/resolv.conf and /etc/hosts in the pod's own mount namespace.
The token, ca.crt and namespace files go to a directory of the pod's own under the lab's run
directory (not /etc/netns, where `ip netns exec` would try to bind every entry onto /etc), and
that directory is bind-mounted read-only at /var/run/secrets/kubernetes.io/serviceaccount,
where in-cluster clients look. That path does not exist on the host: the launcher makes it
inside the pod's mount namespace only (launcher.make_mount_point).
"""
from __future__ import annotations

import os
from typing import Mapping, Optional

from netemu.control.podenv import pod_hostname
from netemu.spec.models import Lab, Pod


def resolv_conf(pod: Pod, lab: Lab, host_resolv: str = "/etc/resolv.conf") -> str:
    policy = pod.spec.dns_policy or "ClusterFirst"
    ns = pod.metadata.namespace or "default"
    domain = lab.spec.cluster_domain
    if policy == "ClusterFirstWithHostNet" and not pod.spec.host_network:
        policy = "ClusterFirst"
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        nameservers = [lab.spec.cluster_dns]
        searches = [f"{ns}.svc.{domain}", f"svc.{domain}", domain]
        options = [("ndots", "5")]
    elif policy == "Default" or (policy == "ClusterFirst" and pod.spec.host_network):
        return _read(host_resolv)
    else:  # None: everything from dnsConfig
        nameservers, searches, options = [], [], []
    cfg = pod.spec.dns_config
    if cfg is not None:
        nameservers += [n for n in cfg.nameservers or [] if n not in nameservers]
        searches += [s for s in cfg.searches or [] if s not in searches]
        for opt in cfg.options or []:
            options = [(k, v) for k, v in options if k != opt.name] + [(opt.name, opt.value)]
    lines = [f"search {' '.join(searches)}"] if searches else []
    lines += [f"nameserver {n}" for n in nameservers[:3]]
    if options:
        lines.append("options " + " ".join(k if v is None else f"{k}:{v}" for k, v in options))
    return "\n".join(lines) + "\n"


def hosts_file(pod: Pod, lab: Lab) -> str:
    name = pod_hostname(pod)
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if pod.status.pod_ip:
        if pod.spec.subdomain:
            fqdn = f"{name}.{pod.spec.subdomain}.{pod.metadata.namespace}.svc.{lab.spec.cluster_domain}"
            lines.append(f"{pod.status.pod_ip}\t{fqdn}\t{name}")
        else:
            lines.append(f"{pod.status.pod_ip}\t{name}")
    return "\n".join(lines) + "\n"


SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
SA_FILES = ("token", "ca.crt", "namespace")


def service_account_name(pod: Pod) -> str:
    return pod.spec.service_account_name or "default"


def automount_token(pod: Pod, service_account=None) -> bool:
    """automountServiceAccountToken: the pod's field wins, then the ServiceAccount's; default true."""
    for obj in (pod.spec, service_account):
        value = _bool_field(obj, "automount_service_account_token", "automountServiceAccountToken")
        if value is not None:
            return value
    return True


def _bool_field(obj, attr: str, key: str) -> Optional[bool]:
    if obj is None:
        return None
    # a declared field, or (while the model does not know it) an extra one, or a plain mapping
    extra = obj if isinstance(obj, Mapping) else (getattr(obj, "model_extra", None) or {})
    value = None if isinstance(obj, Mapping) else getattr(obj, attr, None)
    for v in (value, extra.get(key), extra.get(attr)):
        if isinstance(v, bool):
            return v
    return None


def write_service_account(sa_dir: str, pod: Pod, files: Mapping[str, bytes]) -> tuple[str, str, str]:
    """The token volume's files in sa_dir (0644 in a 0755 directory: readable by the container's
    user; its parent should be private to root); returns its read-only bind at SA_MOUNT."""
    os.makedirs(sa_dir, mode=0o755, exist_ok=True)
    os.chmod(sa_dir, 0o755)
    files = dict(files)
    files.setdefault("namespace", (pod.metadata.namespace or "default").encode())
    for fname, content in files.items():
        if fname not in SA_FILES:
            raise ValueError(f"unexpected service account file {fname!r}")
        path = os.path.join(sa_dir, fname)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(content if isinstance(content, bytes) else str(content).encode())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return (sa_dir, SA_MOUNT, "ro")


def write(netns_dir: str, pod: Pod, lab: Lab, sa_files: Optional[Mapping[str, bytes]] = None,
          sa_dir: Optional[str] = None) -> list[tuple]:
    """Write the files; returns bind mounts for the pod's sandbox: (source, target) or
    (source, target, "ro"). The ServiceAccount volume is written (to sa_dir) only when sa_files
    (token, ca.crt, namespace) is given."""
    os.makedirs(netns_dir, exist_ok=True)
    binds: list[tuple] = []
    for fname, content in (("resolv.conf", resolv_conf(pod, lab)), ("hosts", hosts_file(pod, lab))):
        path = os.path.join(netns_dir, fname)
        with open(path, "w") as f:
            f.write(content)
        binds.append((path, f"/etc/{fname}"))
    if sa_files is not None:
        if sa_dir is None:
            raise ValueError("sa_files without sa_dir")
        binds.append(write_service_account(sa_dir, pod, sa_files))
    return binds


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
