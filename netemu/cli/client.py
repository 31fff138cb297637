"""Talking to a lab's control process over its Unix socket."""
from __future__ import annotations

import http.client
import json
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


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: Optional[float]):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


class Client:
    """HTTP over the lab's root-only Unix socket: the Kubernetes API (`rest`) and the lab's own verbs
    (`call`, `stream`, `wait`: POST /netemu/v1/<op>), served by one server in the control process."""

    def __init__(self, lab: str, timeout: Optional[float] = 60.0):
        self.lab = lab
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Optional[bytes] = None,
                 headers: Optional[dict] = None) -> tuple[_UnixConnection, http.client.HTTPResponse]:
        conn = _UnixConnection(paths.api_socket(self.lab), self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            return conn, conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            raise CliError(f'lab "{self.lab}" has no control process running (it may have crashed): '
                           f"`netemu down {self.lab}` cleans it up")
        except PermissionError:
            conn.close()
            raise CliError("permission denied: netemu needs root (try sudo)")
        except (socket.timeout, TimeoutError):
            conn.close()
            raise CliError(f'lab "{self.lab}": the control process did not answer within {self.timeout:g}s '
                           f"(`netemu down {self.lab}` removes the lab all the same)")

    def rest(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
             accept: str = "application/json") -> Any:
        """A Kubernetes API call; a Status failure becomes a CliError with the server's message."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        conn, resp = self._request(method, path, data, {"Content-Type": content_type, "Accept": accept})
        try:
            raw = resp.read()
        finally:
            conn.close()
        try:
            out = json.loads(raw) if raw else None
        except ValueError:
            out = raw.decode(errors="replace")
        if resp.status >= 400:
            msg = out.get("message") if isinstance(out, dict) else str(out)
            raise CliError(f"Error from server ({out.get('reason', resp.status) if isinstance(out, dict) else resp.status}): {msg}")
        return out

    def stream(self, op: str, **fields: Any) -> Iterator[dict]:
        conn, resp = self._request("POST", f"/netemu/v1/{op}", json.dumps(fields).encode(),
                                   {"Content-Type": "application/json"})
        try:
            if resp.headers.get("Content-Type", "").startswith("application/json-seq"):
                for line in resp:
                    if line.strip():
                        yield json.loads(line)
            else:
                yield json.loads(resp.read() or b"{}")
        finally:
            conn.close()

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
