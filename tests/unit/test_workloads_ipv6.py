"""The real redis-server in a pod with IPv6 (a dual-stack lab's) binds every IPv6 address too, optionally
(`-::`, redis 7); an IPv4 pod's command line is unchanged. A real redis-server with those flags answers on
both loopbacks."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from netemu.workloads import PortSpec, resolve
from netemu.workloads import registry

IPV4_ARGV = ("redis-server", "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "",
             "--appendonly", "no", "--daemonize", "no")


def test_redis_binds_ipv6_too_where_the_pod_has_it(monkeypatch):
    monkeypatch.setattr(registry.shutil, "which", lambda cmd: f"/usr/bin/{cmd}")
    assert resolve("redis:7", None, None).argv == IPV4_ARGV
    assert resolve("redis:7", None, None, ipv6=False).argv == IPV4_ARGV
    v6 = resolve("redis:7", None, None, ipv6=True)
    assert v6.argv == IPV4_ARGV[:5] + ("-::",) + IPV4_ARGV[5:]
    # the user's own flags still come last (and win), ports as before
    own = resolve("redis", None, ["redis-server", "--port", "7001", "--bind", "127.0.0.1"],
                  ports=[PortSpec(7000)], ipv6=True)
    assert own.default_ports == (7001,) and own.argv[-4:] == ("--port", "7001", "--bind", "127.0.0.1")
    assert own.argv[3:6] == ("--bind", "0.0.0.0", "-::")


def test_other_programs_ignore_ipv6(monkeypatch):
    monkeypatch.setattr(registry.shutil, "which", lambda cmd: None)
    assert resolve("redis", None, None, ipv6=True) == resolve("redis", None, None)  # the built-in one
    assert resolve("nginx", None, None, ipv6=True) == resolve("nginx", None, None)
    assert resolve("busybox", ["sleep", "1"], None, ipv6=True) == resolve("busybox", ["sleep", "1"], None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(family: int, host: str, port: int) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect((host, port))
        s.sendall(b"PING\r\n")
        return s.recv(64)


def _has_loopback6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_real_redis_answers_on_both_families(tmp_path):
    if not _has_loopback6():
        pytest.skip("no IPv6 loopback here")
    port = _free_port()
    argv = list(resolve("redis", None, ["--port", str(port)], ipv6=True).argv) + ["--dir", str(tmp_path)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                assert _ping(socket.AF_INET, "127.0.0.1", port) == b"+PONG\r\n"
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        assert _ping(socket.AF_INET6, "::1", port) == b"+PONG\r\n"
    finally:
        proc.terminate()
        proc.wait(10)
