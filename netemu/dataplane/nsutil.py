"""Namespace system calls Python 3.11 does not expose (setns, unshare, mount, sethostname).

setns() moves only the calling thread, so the daemon can create a socket inside a node's
network namespace and step back: the socket stays in the namespace it was made in.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import socket

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_REC = 0x4000
MS_SLAVE = 1 << 19
MS_BIND = 4096
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def bind(source: str, target: str, flags: int = 0) -> None:
    """A bind mount, then remounted with flags (MS_RDONLY, MS_NOSUID...) when there are any."""
    mount(source, target, None, MS_BIND)
    if flags:
        mount(None, target, None, MS_BIND | MS_REMOUNT | flags)


def umount(target: str, flags: int = MNT_DETACH) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_libc.sethostname(b, len(b)), "sethostname")


NETNS_DIR = "/run/netns"  # where `ip netns add` makes the named network namespaces


def netns_path(name: str) -> str:
    return f"{NETNS_DIR}/{name}"


@contextlib.contextmanager
def in_netns(name_or_path: str):
    """Run the body with this thread inside another network namespace, then come back."""
    path = name_or_path if name_or_path.startswith("/") else netns_path(name_or_path)
    with open("/proc/thread-self/ns/net") as home, open(path) as target:
        setns(target.fileno(), CLONE_NEWNET)
        try:
            yield
        finally:
            setns(home.fileno(), CLONE_NEWNET)


def socket_in(netns: str, family=socket.AF_INET, type_=socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in another network namespace (for probes and the ARP speaker)."""
    with in_netns(netns):
        return socket.socket(family, type_)


def write_sysctl_in(netns: str, values: dict[str, str]) -> None:
    """/proc/sys/net follows the namespace of the thread that opens it: no `ip netns exec` fork."""
    with in_netns(netns):
        for key, value in values.items():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)
