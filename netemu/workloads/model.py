"""The data that passes between the kubelet, the launcher and a stand-in program."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass(frozen=True)
class PortSpec:
    """One declared containerPort."""
    port: int
    protocol: str = "TCP"
    name: Optional[str] = None


@dataclass
class WorkloadContext:
    """What a built-in stand-in knows about the container it plays."""
    pod_name: str
    namespace: str
    pod_ip: str
    node_name: str
    image: str
    container_name: str
    ports: list[PortSpec] = field(default_factory=list)  # declared containerPorts, maybe none
    env: dict[str, str] = field(default_factory=dict)  # resolved env (pod env + service env vars)
    args: list[str] = field(default_factory=list)  # container args, for stand-ins that honour some
    tls_ports: list[int] = field(default_factory=list)  # ports the container's probes reach over HTTPS
    # in a pod of its own (netemu.dataplane.rootfs): its own root, whose writes stay in the pod
    contained: bool = False
    # called once the stand-in listens: the kubelet then counts the container as started, so a
    # first probe or request never races the bind
    on_ready: Optional[Callable[[], None]] = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Program:
    """What runs in a container: a built-in stand-in, or a command to exec."""
    kind: str  # "builtin" or "exec"
    name: str  # builtin name ("echo-hname", ...) or argv[0]
    argv: tuple[str, ...] = ()  # for "exec": the full argv to execvpe
    default_ports: tuple[int, ...] = ()  # ports the stand-in listens on when none are declared
    warning: Optional[str] = None  # shown to the user as a pod event


def tcp_ports(ctx: WorkloadContext, default: int) -> list[int]:
    """The declared TCP containerPorts, or the image's own port when none is declared."""
    ports = _declared(ctx, "TCP")
    return ports or [default]


def udp_ports(ctx: WorkloadContext) -> list[int]:
    return _declared(ctx, "UDP")


def _declared(ctx: WorkloadContext, protocol: str) -> list[int]:
    seen: list[int] = []
    for p in ctx.ports:
        if (p.protocol or "TCP").upper() == protocol and p.port not in seen:
            seen.append(p.port)
    return seen
