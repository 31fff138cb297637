"""Names of every kernel object a lab makes. Each carries the lab's name so that two labs never
collide and `netemu down` can sweep by name after a crash.

    ne-<lab>                  the lab segment's namespace (its bridge br0)
    ne-<lab>_<node>           a node
    ne-<lab>_<ns>_<pod>       a pod (<ns>: its Kubernetes namespace)
    ne-<lab> (root ns link)   the host's interface on the lab segment (ne-<lab[:3]>_<hash> past 15 characters)

The separator `_` is a character no lab name (a DNS label), node name (a DNS label), Kubernetes
namespace (a DNS label) or pod name (a DNS subdomain) can contain. So a lab named `rel1-w1-k8s` cannot
take lab `rel1`'s node `w1-k8s` (ne-rel1-w1-k8s is not ne-rel1_w1-k8s), a Pod named like a node cannot
take the node's namespace (one `_` for a node, two for a pod), and everything of lab `a` starts with
exactly `ne-a_` or is `ne-a`, which no other lab's names do. A pod name too long for a file name keeps
its first characters and gets a hash after a third `_`.
"""
from __future__ import annotations

import hashlib
import re

PREFIX = "ne-"
SEP = "_"
IFNAMSIZ = 15  # usable characters of a Linux interface name
NETNS_MAX = 200  # a namespace is a file under /run/netns (and a directory under /etc/netns): < 255


def _h(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def switch_netns(lab: str) -> str:
    return f"{PREFIX}{lab}"


def lab_prefix(lab: str) -> str:
    """Every namespace of the lab but its switch starts with this, and no other lab's does."""
    return f"{PREFIX}{lab}{SEP}"


def node_netns(lab: str, node: str) -> str:
    return f"{lab_prefix(lab)}{node}"


def pod_netns(lab: str, namespace: str, pod: str) -> str:
    name = f"{lab_prefix(lab)}{namespace or 'default'}{SEP}{pod}"
    if len(name) <= NETNS_MAX:
        return name
    keep = NETNS_MAX - (len(name) - len(pod)) - 13
    return f"{name[:len(name) - len(pod) + keep]}{SEP}{_h(namespace + '/' + pod, 12)}"


def host_link(lab: str) -> str:
    """The host end of the lab segment, in the root namespace. A long name is cut and hashed with a `_`
    that no lab name has, so a hashed name is never another lab's plain one."""
    name = f"{PREFIX}{lab}"
    return name if len(name) <= IFNAMSIZ else f"{PREFIX}{lab[:3]}{SEP}{_h(lab, 8)}"


def belongs_to(lab: str, netns: str) -> bool:
    """Is this namespace (or /etc/netns entry) one of lab's? Lab `a` never sweeps lab `a-b`'s: the
    separator after the lab's name is a character lab names do not have."""
    return netns == switch_netns(lab) or netns.startswith(lab_prefix(lab))


_LEGACY_OK = re.compile(r"^[a-z0-9.-]+$")


def legacy_belongs_to(lab: str, netns: str, other_labs: list[str]) -> bool:
    """A namespace of the former scheme (`ne-<lab>-<node>`, `ne-<lab>-<pod>`): only for labs started
    before the scheme changed, never a name of the current scheme (they all have `_`)."""
    if not _LEGACY_OK.match(netns) or not netns.startswith(f"{PREFIX}{lab}-"):
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
