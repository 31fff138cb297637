"""For tests: start built-in stand-ins in forked children on 127.0.0.1 and talk to them.

No root and no namespaces: each stand-in is forked from the test process (which imported
this package, as the pod launcher does), binds 127.0.0.1 on ephemeral ports, and writes its
log to a file. `Launcher.kill_all()` kills every child it started, by PID. Not imported by
the package itself.
"""
from __future__ import annotations

import http.client
import os
import signal
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from netemu.workloads import PortSpec, WorkloadContext, run_builtin

READY_TIMEOUT = 5.0


def wait_for(condition, timeout: float = 5.0):
    """condition()'s first true result, or its last false one after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := condition()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return result


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class StandIn:
    pid: int
    log: Path
    exit_status: Optional[int] = None
    ports: list[PortSpec] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def poll(self) -> Optional[int]:
        if self.exit_status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.exit_status = os.waitstatus_to_exitcode(status)
        return self.exit_status

    def wait_ready(self) -> "StandIn":
        """Until the start-up line (written once every port is bound) is in the log."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if "listening on" in self.log_text():
                return self
            if self.poll() is not None:
                raise AssertionError(f"stand-in exited ({self.exit_status}): {self.log_text()}")
            time.sleep(0.01)
        raise AssertionError(f"stand-in not ready: {self.log_text()}")

    def wait_exit(self, timeout: float = READY_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.exit_status is not None, "stand-in did not exit"
        return self.exit_status

    def threads(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            return int(next(line for line in f if line.startswith("Threads:")).split()[1])

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.exit_status = -signal.SIGKILL


class Launcher:
    """Forks stand-ins as the pod launcher does, and kills every one of them, by PID."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.started: list[StandIn] = []

    def start(self, name: str, image: str = "", ports=(), env=None, args=(), pod_name: str = "pod-a",
              ready: bool = True) -> StandIn:
        ports = [p if isinstance(p, PortSpec) else PortSpec(p) for p in ports]
        ctx = WorkloadContext(pod_name=pod_name, namespace="default", pod_ip="127.0.0.1", node_name="node-1",
                              image=image, container_name="app", ports=ports, env=dict(env or {}), args=list(args))
        log = self.tmp / f"{name}-{len(self.started)}.log"
        pid = os.fork()
        if pid == 0:  # the child never returns into pytest
            try:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                run_builtin(name, ctx, bind_address="127.0.0.1")
            except BaseException:
                os.write(2, traceback.format_exc().encode())
            finally:
                os._exit(70)
        standin = StandIn(pid, log, ports=ports)
        self.started.append(standin)
        return standin.wait_ready() if ready else standin

    def kill_all(self) -> None:
        for standin in self.started:
            standin.kill()


def http_request(port: int, path: str = "/", method: str = "GET", body: Optional[bytes] = None,
         headers: Optional[dict] = None, source: Optional[str] = None) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        conn.close()


def udp_ask(port: int, payload: bytes = b"hi", source: str = "127.0.0.1") -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.bind((source, 0))
        s.sendto(payload, ("127.0.0.1", port))
        data, sender = s.recvfrom(4096)
        assert sender == ("127.0.0.1", port)  # answered from the address it was asked on
        return data.decode()


class RespClient:
    """Raw RESP over a socket, for checking the built-in redis byte by byte."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.stream = self.sock.makefile("rb")

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def line(self) -> bytes:
        return self.stream.readline()

    def close(self) -> None:
        self.stream.close()
        self.sock.close()
