"""Files a pod sees at /etc: resolv.conf by dnsPolicy, and the kubelet-managed hosts file.

They are written to /etc/netns/<pod netns>/ (where `ip netns exec` expects them) and
bind-mounted over /etc/resolv.conf and /etc/hosts in the pod's own mount namespace.
"""
from __future__ import annotations

import os

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


def write(netns_dir: str, pod: Pod, lab: Lab) -> list[tuple[str, str]]:
    """Write the files; returns (source, target) bind mounts for the pod's sandbox."""
    os.makedirs(netns_dir, exist_ok=True)
    binds = []
    for fname, content in (("resolv.conf", resolv_conf(pod, lab)), ("hosts", hosts_file(pod, lab))):
        path = os.path.join(netns_dir, fname)
        with open(path, "w") as f:
            f.write(content)
        binds.append((path, f"/etc/{fname}"))
    return binds


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
