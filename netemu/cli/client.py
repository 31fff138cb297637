"""Talking to a lab's control process over its Unix socket."""
from __future__ import annotations

import json
import os
import socket
from typing import Any, Callable, Iterator, Optional

from netemu import paths


class CliError(Exception):
    """A user-facing error: printed as `error: ...`, exit code 1."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def pick_lab(name: Optional[str]) -> str:
    """--lab NAME, or the only lab that is up."""
    labs = paths.running_labs()
    if name:
        if name not in labs:
            raise CliError(f'lab "{name}" is not up' + (f" (labs up: {', '.join(labs)})" if labs else ""))
        return name
    if not labs:
        raise CliError("no lab is up: start one with `netemu up LAB.yaml`")
    if len(labs) > 1:
        raise CliError(f"more than one lab is up ({', '.join(labs)}): choose one with --lab NAME")
    return labs[0]


class Client:
    def __init__(self, lab: str, timeout: Optional[float] = 60.0):
        self.lab = lab
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        path = paths.api_socket(self.lab)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            raise CliError(f'lab "{self.lab}" has no control process running (it may have crashed): '
                           f"`netemu down {self.lab}` cleans it up")
        except PermissionError:
            s.close()
            raise CliError("permission denied: netemu needs root (try sudo)")
        return s

    def stream(self, op: str, **fields: Any) -> Iterator[dict]:
        s = self._connect()
        try:
            s.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
            f = s.makefile("rb")
            for line in f:
                yield json.loads(line)
        finally:
            s.close()

    def call(self, op: str, **fields: Any) -> Any:
        for msg in self.stream(op, **fields):
            if "error" in msg:
                raise CliError(msg["error"])
            if "result" in msg:
                return msg["result"]
        raise CliError(f'lab "{self.lab}": the control process closed the connection')

    def wait(self, on_progress: Callable[[str, bool], None], **fields: Any) -> None:
        for msg in self.stream("wait", **fields):
            if "progress" in msg:
                on_progress(msg["progress"], bool(msg.get("final")))
            elif "error" in msg:
                raise CliError(msg["error"])
            elif "result" in msg:
                return


def daemon_pid(lab: str) -> Optional[int]:
    try:
        with open(paths.pid_file(lab)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_lab_process(pid, lab) else None


def _is_lab_process(pid: int, lab: str) -> bool:
    """Alive, and really this lab's control process (a pid may have been reused): it sits in
    the lab's own cgroup."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            groups = f.read()
    except OSError:
        return False
    return f"/netemu/{lab}/system" in groups or "/netemu/" not in groups and _cmdline_has(pid, b"netemu")


def _cmdline_has(pid: int, word: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return word in f.read()
    except OSError:
        return False
