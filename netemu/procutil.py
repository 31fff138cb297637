"""Small chores of a lab's own processes (the supervisor, the control process, the launcher and its
children): their standard streams, their pid files, a look at another process in /proc (is it a lab's
control process?). Nothing heavy is imported here: the supervisor's lean interpreter loads this module."""
from __future__ import annotations

import os
from typing import Optional


def stdio_to_log(path: str, mode: int = 0o600) -> None:
    """stdin from /dev/null; stdout and stderr appended to the log at path (made with mode)."""
    logf = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(logf, 1)
    os.dup2(logf, 2)
    os.close(logf)
    os.close(devnull)


def write_pid_file(path: str) -> None:
    """This process's pid, replaced at once (a reader never sees a half-written file)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, path)


def set_child_subreaper() -> None:
    """Orphaned descendants come to this process rather than to the host's init (PR_SET_CHILD_SUBREAPER)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def stat_field(pid: int, index: int) -> str:
    """A field of /proc/PID/stat, counted after the command name (0 the state, 1 the parent, 19 the
    start time); "" when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[index]
    except (OSError, IndexError):
        return ""


def alive(pid: int) -> bool:
    """Running (or stopped): not gone, and not a zombie waiting to be reaped."""
    return stat_field(pid, 0) not in ("", "Z")


def wait_gone(pid: int, within: float, interval: float = 0.02) -> bool:
    """Wait until the process has ended (or is a zombie), at most `within` seconds: has it?"""
    import time

    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def cmdline_has(pid: int, word: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return word in f.read()
    except OSError:
        return False


def is_lab_process(pid: int, lab: str) -> bool:
    """Alive, and really this lab's control process (a pid may have been reused): it sits in
    the lab's own cgroup."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            groups = f.read()
    except OSError:
        return False
    return f"/netemu/{lab}/system" in groups or "/netemu/" not in groups and cmdline_has(pid, b"netemu")


def daemon_pid(lab: str) -> Optional[int]:
    """The lab's control process (its pid file), if it is alive and really the lab's."""
    from netemu import paths

    try:
        with open(paths.pid_file(lab)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if is_lab_process(pid, lab) and alive(pid) else None
