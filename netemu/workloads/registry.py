"""Which program plays a container: its `command`, or a built-in stand-in for its image.

Images are matched on their repository path, whatever the registry host, tag or digest
(`nginx`, `nginx:1.25`, `docker.io/library/nginx:latest@sha256:...` are all nginx: netemu.images); the
tag still chooses a variant where the image has them (`nginxdemos/hello:plain-text`).
"""
from __future__ import annotations

import shutil
from typing import Iterable, Optional, Sequence

from netemu.images import parse_image
from netemu.workloads.model import PortSpec, Program

# repository path -> (builtin, its own port)
STAND_INS: dict[str, tuple[str, int]] = {
    "sysnet4admin/echo-hname": ("echo-hname", 80),
    "sysnet4admin/echo-ip": ("echo-ip", 80),
    "nginx": ("nginx", 80),
    "nginxdemos/hello": ("hello", 80),
    "kuar-demo/kuard-amd64": ("kuard", 8080),
    "kuar-demo/kuard-arm64": ("kuard", 8080),
    "kuar-demo/kuard-arm": ("kuard", 8080),
    "redis": ("redis", 6379),
    "subicura/counter": ("counter", 3000),
    "coredns/coredns": ("coredns", 53),
    "coredns": ("coredns", 53),
    "ingress-nginx/controller": ("ingress-nginx", 80),  # registry.k8s.io, k8s.gcr.io
    "ingress-nginx/controller-chroot": ("ingress-nginx", 80),
    "kubernetes-ingress-controller/nginx-ingress-controller": ("ingress-nginx", 80),  # quay.io, before 0.33
    "hpa-example": ("hpa-example", 80),  # registry.k8s.io/hpa-example, k8s.gcr.io/hpa-example
    # add-ons from upstream installers whose work the lab does itself (workloads/addon.py)
    "metallb/controller": ("addon", 7472),
    "metallb/speaker": ("addon", 7472),
    "metrics-server/metrics-server": ("addon", 10250),
    "k8s-staging-metrics-server/metrics-server": ("addon", 10250),
}

# Images whose default process is an interactive shell (CMD sh/bash, no ENTRYPOINT): in a
# pod it would exit at once, but people run them to `kubectl exec` into, so they sleep.
SHELL_IMAGES = frozenset({
    "busybox", "alpine", "centos", "ubuntu", "debian", "fedora", "rockylinux", "almalinux",
    "amazonlinux", "oraclelinux", "archlinux", "opensuse/leap", "nicolaka/netshoot",
})

DEFAULT_PORTS = {name: (port,) for name, port in STAND_INS.values()}
DEFAULT_PORTS.update({"hello-plain": (80,), "generic": (80,), "sleep": ()})
BUILTIN_NAMES = frozenset(DEFAULT_PORTS)

REDIS_SERVER = "redis-server"
REDIS_FLAGS = ("--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no",
               "--daemonize", "no")
# a pod with IPv6 (a dual-stack lab's): every IPv6 address too; '-' makes it optional (redis 7: an address
# that cannot be bound is skipped, not fatal), as redis.conf's own default `bind * -::*`
REDIS_FLAGS6 = ("--bind", "0.0.0.0", "-::") + REDIS_FLAGS[2:]


def resolve(image: Optional[str], command: Optional[list[str]], args: Optional[list[str]],
            ports: Iterable[PortSpec] = (), *, ipv6: bool = False) -> Program:
    """The program for a container, as Kubernetes would run it.

    `command` replaces the image's entrypoint: it runs with `args` appended. Otherwise the
    image's stand-in runs (it sees `args` in its context). `ports`, when given, are the
    declared containerPorts (only the real redis-server needs them here). `ipv6`: the pod has an
    IPv6 address (the real redis-server then binds IPv6 too; the stand-ins find out themselves)."""
    args = list(args or [])
    if command:
        argv = tuple(command) + tuple(args)
        return Program("exec", argv[0], argv, warning=_missing_command(argv[0]))
    ref = parse_image(image)
    repo = ref.repository
    if repo in STAND_INS:
        name, port = STAND_INS[repo]
        if name == "hello" and (ref.tag or "").startswith("plain-text"):
            name = "hello-plain"
        if name == "redis":
            return _redis(args, list(ports), ipv6)
        if name == "addon":
            from netemu.images import ADDONS

            return Program("builtin", name, default_ports=(port,), warning=(
                f"{ADDONS[repo]}; this pod stands for it and answers its health checks"))
        return Program("builtin", name, default_ports=(port,))
    if repo in SHELL_IMAGES:
        if args:  # no entrypoint: the args are the command line
            return Program("exec", args[0], tuple(args), warning=_missing_command(args[0]))
        return Program("builtin", "sleep", warning=(
            f"image {image} has no server: a real container would run its shell and exit at once; "
            "netemu keeps it sleeping (as `sleep infinity` would) so that you can exec into it"))
    shown = image or "(none)"
    on = _port_list(ports) or "its declared containerPorts (port 80 if none)"
    return Program("builtin", "generic", default_ports=(80,), warning=(
        f"unknown image {shown}: no stand-in for it, serving the generic hostname page "
        f"(the pod name) on {on}"))


def _redis(args: list[str], ports: Sequence[PortSpec], ipv6: bool = False) -> Program:
    declared = [p.port for p in ports if (p.protocol or "TCP").upper() == "TCP"]
    port = declared[0] if declared else 6379
    if shutil.which(REDIS_SERVER) is None:
        return Program("builtin", "redis", default_ports=(port,), warning=(
            "redis-server is not installed here: serving netemu's built-in redis (in memory; "
            "strings, counters, expiry, KEYS; no lists, hashes, pub/sub or persistence)"))
    if args and args[0] == REDIS_SERVER:  # the image's entrypoint takes "redis-server ..." too
        args = args[1:]
    if "--port" in args[:-1] and args[args.index("--port") + 1].isdigit():
        port = int(args[args.index("--port") + 1])  # the user's own --port (later flags win)
    argv = (REDIS_SERVER, "--port", str(port)) + (REDIS_FLAGS6 if ipv6 else REDIS_FLAGS) + tuple(args)
    return Program("exec", REDIS_SERVER, argv, default_ports=(port,))


def _missing_command(cmd: str) -> Optional[str]:
    if shutil.which(cmd) is not None:
        return None
    return f"command {cmd!r} is not installed on this machine: the container will fail to start"


def _port_list(ports: Iterable[PortSpec]) -> str:
    return ", ".join(f"{p.port}/{(p.protocol or 'TCP').upper()}" for p in ports)
