"""Names of every kernel object a lab makes. Each carries the lab's name so that two labs never
collide and `netemu down` can sweep by name after a crash.

    ne-<lab>                  the lab segment's namespace (its bridge br0)
    ne-<lab>-<node>           a node
    ne-<lab>-<pod>            a pod in namespace default
    ne-<lab>-<pod>.<ns>       a pod in another Kubernetes namespace
    ne-<lab> (root ns link)   the host's interface on the lab segment (hashed past 15 characters)
"""
from __future__ import annotations

import hashlib

PREFIX = "ne-"
IFNAMSIZ = 15  # usable characters of a Linux interface name


def _h(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def switch_netns(lab: str) -> str:
    return f"{PREFIX}{lab}"


def node_netns(lab: str, node: str) -> str:
    return f"{PREFIX}{lab}-{node}"


def pod_netns(lab: str, namespace: str, pod: str) -> str:
    return f"{PREFIX}{lab}-{pod}" if namespace == "default" else f"{PREFIX}{lab}-{pod}.{namespace}"


def host_link(lab: str) -> str:
    """The host end of the lab segment, in the root namespace."""
    name = f"{PREFIX}{lab}"
    return name if len(name) <= IFNAMSIZ else f"{PREFIX}{lab[:3]}-{_h(lab, 8)}"


def belongs_to(lab: str, netns: str, other_labs: list[str]) -> bool:
    """Is this namespace one of lab's? Lab `a` must not sweep lab `a-b`'s namespaces."""
    if netns == switch_netns(lab):
        return True
    if not netns.startswith(f"{PREFIX}{lab}-"):
        return False
    longer = [o for o in other_labs if o != lab and o.startswith(f"{lab}-")]
    return not any(netns == switch_netns(o) or netns.startswith(f"{PREFIX}{o}-") for o in longer)


# links inside the lab's own namespaces: they only need to be unique there
SWITCH_BRIDGE = "br0"
SWITCH_HOST_PORT = "host"
NODE_UPLINK = "eth0"
NODE_BRIDGE = "cni0"
POD_IF = "eth0"


def switch_port(node: str) -> str:
    """The switch's end of a node's eth0."""
    name = f"n-{node}"
    return name if len(name) <= IFNAMSIZ else f"n-{_h(node, 12)}"


def pod_veth(namespace: str, pod: str) -> str:
    """The node's end of a pod's eth0 (like calico's cali<hash>)."""
    return f"veth{_h(namespace + '/' + pod, 11)}"
