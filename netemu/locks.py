"""Locks that make netemu's check-then-create steps safe between processes.

The host lock, `/run/netemu/.lock`, is flock'ed around every check-then-create of host-wide
resources: a lab's name (its run directory), its address ranges and its uplink (its claim file) are
checked and taken under it, so two `netemu up`s cannot both find a network free and both take it. It
is held for a moment, not for a whole build: what a lab takes is written down (its claim) before the
lock is released, and every later check reads the claims.

The owner lock, `/run/netemu/<lab>/owner.lock`, is flock'ed by `netemu up` before it forks the lab's
control process, which inherits the lock and holds it for its whole life, as does the lab's supervisor
(netemu.daemon.supervisor) and every control process it restarts: the kernel drops it when the last of
them ends, however they end. So a lab directory whose owner lock is held is a lab starting or
running; one whose lock is free is what a crashed lab left behind. `netemu down` takes it once the
control process is gone, so that a new `up` of the same name never builds into a sweep.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from netemu import paths

LOCK_NAME = ".lock"
OWNER_NAME = "owner.lock"
CLAIM_NAME = "lab.json"


class LockTimeout(RuntimeError):
    pass


def host_lock_file() -> str:
    return os.path.join(paths.RUN_DIR, LOCK_NAME)


def owner_lock_file(lab: str) -> str:
    return os.path.join(paths.lab_dir(lab), OWNER_NAME)


def claim_file(lab: str) -> str:
    """What a lab takes on the host (name, ranges, uplink), written under the host lock by `up`."""
    return os.path.join(paths.lab_dir(lab), CLAIM_NAME)


# ---------------------------------------------------------------------------- the host lock
_held = threading.local()
_mutex = threading.RLock()


def _try_flock(fd: int, mode: int, deadline: float) -> bool:
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


@contextmanager
def host_lock(timeout: float = 60.0) -> Iterator[None]:
    """Exclusive, between every netemu process of the machine; re-entrant within one process."""
    with _mutex:
        depth = getattr(_held, "depth", 0)
        if depth:
            _held.depth = depth + 1
            try:
                yield
            finally:
                _held.depth -= 1
            return
        path = host_lock_file()
        deadline = time.monotonic() + timeout
        while True:
            os.makedirs(paths.RUN_DIR, mode=0o755, exist_ok=True)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:  # the run directory went away in between
                continue
            if not _try_flock(fd, fcntl.LOCK_EX, deadline):
                os.close(fd)
                raise LockTimeout(f"another netemu command has held {path} for {timeout:g}s "
                                  "(a lab being checked, created or removed); try again")
            try:  # the file may have been removed (with the run directory) while we waited for it
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0
            os.close(fd)


def remove_run_dir_if_unused() -> None:
    """/run/netemu goes with the last lab (its lock file too, removed while held; not when this process
    holds the lock already: it is in the middle of creating something there)."""
    if getattr(_held, "depth", 0):
        return
    try:
        with host_lock(timeout=10):
            if os.listdir(paths.RUN_DIR) == [LOCK_NAME]:
                os.unlink(host_lock_file())
                os.rmdir(paths.RUN_DIR)
    except (OSError, LockTimeout):
        pass


# ---------------------------------------------------------------------------- a lab's owner lock
def claim_owner(lab: str, wait: float = 1.0) -> Optional[int]:
    """Make the lab's directory if needed and take its owner lock: the descriptor (keep it open, and
    fork the control process with it), or None when another process holds it (the lab is starting,
    running or being removed). `wait` covers a `netemu labs` that looks at the lock at that moment."""
    os.makedirs(paths.lab_dir(lab), mode=0o700, exist_ok=True)
    fd = os.open(owner_lock_file(lab), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    if _try_flock(fd, fcntl.LOCK_EX, time.monotonic() + wait):
        return fd
    os.close(fd)
    return None


def wait_owner(lab: str, timeout: float) -> tuple[Optional[int], bool]:
    """Take an existing lab's owner lock, waiting up to `timeout` for its holders to end: (descriptor or
    None, whether the lab directory still exists)."""
    try:
        fd = os.open(owner_lock_file(lab), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        return None, False
    if _try_flock(fd, fcntl.LOCK_EX, time.monotonic() + timeout):
        return fd, True
    os.close(fd)
    return None, True


def owner_alive(lab: str) -> bool:
    """Is the lab's owner lock held (a control process, or an `up` building it, is alive)? Read from
    /proc/locks, without taking the lock."""
    try:
        st = os.stat(owner_lock_file(lab))
    except OSError:
        return False
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                if "FLOCK" in parts and key in parts:
                    return True
        return False
    except OSError:
        pass
    fd = os.open(owner_lock_file(lab), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _try_flock(fd, fcntl.LOCK_SH, time.monotonic()):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- claims
def write_claim(lab: str, claim: dict) -> None:
    tmp = claim_file(lab) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(claim, f)
    os.replace(tmp, claim_file(lab))


def read_claim(lab: str) -> Optional[dict]:
    """A lab's claim: {"spec": {network, podCIDR, serviceCIDR, uplink, ...}}; for a lab started before
    claims existed, its state file's Lab spec."""
    try:
        with open(claim_file(lab)) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    try:
        with open(paths.state_file(lab)) as f:
            return {"spec": json.load(f)["lab"]["spec"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
