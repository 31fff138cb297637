"""What a pod's securityContext (and its containers') means for the processes the kubelet starts.

As containerd and kubelet resolve it:

- user: the container's runAsUser, else the pod's, else the image's user. The "image" here is the
  host's tree, whose programs run as root; with runAsNonRoot and no runAsUser the container runs as
  nobody (65534), as an image built to run as non-root would. runAsNonRoot with runAsUser 0 is
  refused (CreateContainerConfigError, kubelet's message).
- group: runAsGroup (container, then pod), else 0; supplementary groups: the user's groups in the
  root's /etc/group (supplementalGroupsPolicy Merge, the default; none with Strict), then the pod's
  supplementalGroups and fsGroup.
- capabilities: Docker's default set; `capabilities.add`/`drop` as containerd applies them (ALL in
  add, ALL in drop, then the single names added, then the ones dropped); every one when privileged.
  For a user other than root, no capability survives the exec of the container's program (no
  ambient set is given, as Kubernetes gives none), except for the built-in stand-ins: their added
  capabilities stay, standing for the file capabilities the real image's binaries carry (the
  ingress-nginx controller's nginx binds port 80 as user 101 with NET_BIND_SERVICE that way).
- allowPrivilegeEscalation: false sets no_new_privs; readOnlyRootFilesystem makes the pod's root
  read-only for that container (netemu.dataplane.rootfs.read_only_root).
- privileged: true on any container makes the whole sandbox privileged, as kubelet does: the pod
  shares the host's PID and IPC namespaces and its files, as every pod did before pods were
  containers; the privileged container keeps every capability.
"""
from __future__ import annotations

import os
import pwd
from typing import Optional

from netemu import paths
from netemu.dataplane import podexec
from netemu.spec.models import Container, Pod

NOBODY = 65534
# built-in stand-ins that are the lab's own system pods and talk to its control process
LAB_API_STAND_INS = frozenset({"coredns", "ingress-nginx"})


def pod_privileged(pod: Pod) -> bool:
    return any(c.security_context is not None and c.security_context.privileged
               for c in list(pod.spec.containers or []) + list(pod.spec.init_containers or []))


def _first(*values):
    for v in values:
        if v is not None:
            return v
    return None


def capabilities(c: Container) -> list[str]:
    """The container's capability set, by name (CAP_ prefix removed); raises ValueError for a name the
    kernel does not know, as the runtime refuses it."""
    sc = c.security_context
    if sc is not None and sc.privileged:
        return ["ALL"]
    caps = set(podexec.DEFAULT_CAPS)
    add = [str(x) for x in ((sc and sc.capabilities and sc.capabilities.add) or [])]
    drop = [str(x) for x in ((sc and sc.capabilities and sc.capabilities.drop) or [])]

    def norm(name: str) -> str:
        n = name.upper()
        n = n[4:] if n.startswith("CAP_") else n
        if n != "ALL" and n not in podexec.CAP_NUMBERS:
            raise ValueError(f"unknown capability {name!r}")
        return n

    add, drop = [norm(x) for x in add], [norm(x) for x in drop]
    if "ALL" in add:
        caps = set(podexec.CAP_NAMES[:podexec.last_cap() + 1])
    if "ALL" in drop:
        caps = set()
    caps |= {x for x in add if x != "ALL"}
    caps -= {x for x in drop if x != "ALL"}
    return sorted(caps, key=lambda n: podexec.CAP_NUMBERS[n])


def container_security(pod: Pod, c: Container, builtin: bool = False) -> dict:
    """The launcher's (and the exec helper's) settings for one container; {"error": ...} when the
    container cannot be created (CreateContainerConfigError)."""
    psc, sc = pod.spec.security_context, c.security_context
    privileged = bool(sc and sc.privileged)
    uid = _first(sc and sc.run_as_user, psc and psc.run_as_user)
    gid = _first(sc and sc.run_as_group, psc and psc.run_as_group)
    non_root = _first(sc and sc.run_as_non_root, psc and psc.run_as_non_root)
    if uid is None:
        uid = NOBODY if non_root else 0
        if non_root and gid is None:
            gid = NOBODY
    elif non_root and uid == 0:
        return {"error": f"container's runAsUser breaks non-root policy (pod: \"{pod.metadata.name}_"
                         f"{pod.metadata.namespace or 'default'}({pod.metadata.uid or ''})\", container: {c.name})"}
    gid = gid if gid is not None else 0
    groups: list[int] = []
    if (psc is None or psc.supplemental_groups_policy != "Strict"):
        groups += _image_groups(uid, gid)
    if psc is not None:
        groups += list(psc.supplemental_groups or [])
        if psc.fs_group is not None:
            groups.append(psc.fs_group)
    try:
        caps = capabilities(c)
    except ValueError as e:
        return {"error": str(e)}
    added = set()
    if sc is not None and sc.capabilities is not None:
        added = {str(x).upper().removeprefix("CAP_") for x in sc.capabilities.add or []}
    ambient = [x for x in caps if x in added] if builtin and uid != 0 and not privileged else []
    return {
        "privileged": privileged,
        "uid": int(uid), "gid": int(gid), "groups": list(dict.fromkeys(int(g) for g in groups)),
        "caps": caps, "ambient": ambient,
        "nnp": bool(sc is not None and sc.allow_privilege_escalation is False and not privileged),
        "read_only_root": bool(sc is not None and sc.read_only_root_filesystem) and not pod_privileged(pod),
    }


def _image_groups(uid: int, gid: int) -> list[int]:
    """The user's groups in the image's /etc/group (here the host's), as containerd adds them."""
    try:
        name = pwd.getpwuid(uid).pw_name
        return [g for g in os.getgrouplist(name, gid) if g != gid]
    except (KeyError, OSError):
        return []


def lab_binds(pod: Pod, lab: str) -> list[tuple[str, str, str]]:
    """The lab's socket directory, read-only, for the lab's own CoreDNS and ingress controller pods
    (their stand-ins talk to the control process): no other pod sees the host's /run."""
    from netemu.workloads.registry import STAND_INS, parse_image

    sock = paths.api_socket(lab)
    for c in pod.spec.containers or []:
        if c.command or not any(e.name == "NETEMU_API_SOCKET" and e.value == sock for e in c.env or []):
            continue
        if STAND_INS.get(parse_image(c.image).repository, (None, 0))[0] in LAB_API_STAND_INS:
            d = os.path.dirname(sock)
            return [(d, d, "ro")]
    return []


def exec_options(sec: Optional[dict], target: int, netns: str, workdir: Optional[str] = None) -> list[str]:
    """The exec helper's options (netemu.dataplane.podexec) for a running container."""
    opts = podexec.options(sec or {"caps": list(podexec.DEFAULT_CAPS)}, target=target, netns=netns)
    return opts + ([f"--wd={workdir}"] if workdir else [])
