"""Where a lab keeps its files. Everything lives under one directory per lab (removed by
`down`), except the per-pod resolver files `ip netns exec` expects under /etc/netns."""
from __future__ import annotations

import os

RUN_DIR = os.environ.get("NETEMU_RUN_DIR", "/run/netemu")
ETC_NETNS = "/etc/netns"


def lab_dir(lab: str) -> str:
    return os.path.join(RUN_DIR, lab)


def api_socket(lab: str) -> str:
    return os.path.join(lab_dir(lab), "api.sock")


def state_file(lab: str) -> str:
    return os.path.join(lab_dir(lab), "state.json")


def daemon_log(lab: str) -> str:
    return os.path.join(lab_dir(lab), "daemon.log")


def pid_file(lab: str) -> str:
    return os.path.join(lab_dir(lab), "daemon.pid")


def logs_dir(lab: str) -> str:
    return os.path.join(lab_dir(lab), "logs")


def container_log(lab: str, namespace: str, pod: str, container: str) -> str:
    name = f"{namespace}_{pod}_{container}.log"
    if len(name) > 200:  # a file name has at most 255 bytes; a pod name may have 253 characters
        import hashlib

        digest = hashlib.sha256(f"{namespace}/{pod}/{container}".encode()).hexdigest()[:12]
        name = f"{namespace}_{pod[:100]}_{digest}_{container}.log"
    return os.path.join(logs_dir(lab), name)


def netns_etc(netns: str) -> str:
    return os.path.join(ETC_NETNS, netns)


def running_labs() -> list[str]:
    try:
        return sorted(d for d in os.listdir(RUN_DIR) if os.path.isdir(os.path.join(RUN_DIR, d)))
    except FileNotFoundError:
        return []
