"""Streams over the lab's API (issue 14): kubectl exec (with and without a terminal), cp, attach and
port-forward, over WebSocket and over SPDY, and the official Python client's stream() and
portforward(). Only 127.0.0.1 is ever connected to; everything else happens inside the lab.

One lab for the module; skipped, with the reason, where kubectl is not installed.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pty
import re
import select
import socket
import struct
import subprocess
import termios
import time
import uuid

import pytest

from conftest import KUBECTL, NP_PODS, NP_SVC, kube_lab, kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed on this machine")]

TTY_POD = """\
---
apiVersion: v1
kind: Pod
metadata:
  name: console
spec:
  containers:
  - name: sh
    image: busybox
    command: ["/bin/sh"]
    stdin: true
    tty: true
"""
# exec with a terminal as another user, and into a privileged pod (the host's devpts)
EXEC_PODS = """\
---
apiVersion: v1
kind: Pod
metadata:
  name: tty-user
spec:
  securityContext:
    runAsUser: 1000
  containers:
  - name: main
    image: busybox
    command: ["sleep", "infinity"]
---
apiVersion: v1
kind: Pod
metadata:
  name: tty-privileged
spec:
  containers:
  - name: main
    image: busybox
    command: ["sleep", "infinity"]
    securityContext:
      privileged: true
"""
SPDY = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
TRANSPORTS = pytest.mark.parametrize("env", [{}, SPDY], ids=["websocket", "spdy"])
PF_TRANSPORTS = pytest.mark.parametrize("env", [{}, {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}],
                                        ids=["websocket-tunnel", "spdy"])


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    with kube_lab(tmp_path_factory, "s", NP_PODS.format(replicas=2) + NP_SVC + TTY_POD + EXEC_PODS) as lab:
        lab.pods = sorted(p["metadata"]["name"] for p in lab.pods("app=np-pods"))
        yield lab


class Terminal:
    """kubectl on a pty of 100x30, as a person types into it."""

    def __init__(self, lab, args: list[str], env: dict | None = None):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
            os.execve(KUBECTL, [KUBECTL, *args], dict(os.environ, KUBECONFIG=lab.kubeconfig, **(env or {})))
        self.out = b""
        self.code = None

    def expect(self, pattern: bytes, timeout: float = 15) -> bytes:
        """Read until pattern appears after what was already matched; returns the text up to it."""
        end = time.time() + timeout
        while pattern not in self.out:
            if time.time() > end or not self._read(0.1):
                if pattern in self.out:
                    break
                raise AssertionError(f"{pattern!r} never came; the terminal shows {self.out!r}")
        before, _, self.out = self.out.partition(pattern)
        return before

    def _read(self, wait: float) -> bool:
        if select.select([self.fd], [], [], wait)[0]:
            try:
                data = os.read(self.fd, 4096)
            except OSError:
                return False
            if not data:
                return False
            self.out += data
        return True

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = 15) -> int:
        end = time.time() + timeout
        while time.time() < end:
            self._read(0.05)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
                return self.code
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"kubectl did not exit; the terminal shows {self.out!r}")


@contextlib.contextmanager
def port_forward(lab, target: str, remote: int, env: dict | None = None):
    """kubectl port-forward <target> 0:<remote>; yields (local port, the process)."""
    e = dict(os.environ, KUBECONFIG=lab.kubeconfig, **(env or {}))
    proc = subprocess.Popen([KUBECTL, "port-forward", target, f"0:{remote}", "--address", "127.0.0.1"], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+) ->", line)
        assert m, f"kubectl port-forward said {line!r}"
        yield int(m.group(1)), proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)


def http_get(port: int, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2]


# ---------------------------------------------------------------------- exec
@TRANSPORTS
def test_exec_it_is_a_real_terminal(kube, env):
    pod = kube.pods[0]
    t = Terminal(kube, ["exec", "-it", pod, "--", "sh"], env)
    t.expect(b"# ")
    t.send(b"hostname\n")
    t.expect(b"hostname\r\n")
    assert t.expect(b"# ").strip() == pod.encode()
    t.send(b"stty size\n")
    t.expect(b"stty size\r\n")
    assert t.expect(b"# ").strip() == b"30 100"  # the client's window size, through resize messages
    t.send(b"sleep 30\n")
    t.expect(b"sleep 30\r\n")
    time.sleep(1.0)  # the echo comes before the shell runs it: a ^C before then only reaches the shell
    t0 = time.time()
    t.send(b"\x03")  # ^C: SIGINT for the foreground job, through the pod's terminal
    t.expect(b"# ")
    assert time.time() - t0 < 5
    t.send(b"exit 7\n")
    assert t.wait() == 7
    assert b"command terminated with exit code 7" in t.out


def test_exec_tty_is_a_terminal_of_the_pods_own_devpts(kube):
    """The pty is /dev/pts/N of the pod's devpts instance (ttyname() finds it), root's, group tty,
    0620; a resize of the client's window reaches the shell (SIGWINCH and the new size)."""
    t = Terminal(kube, ["exec", "-it", kube.pods[0], "--", "sh"])
    t.expect(b"# ")
    t.send(b"tty; echo \"rc=$?\"; readlink /proc/self/fd/0; "
           b"stat -c 'own=%u:%g mode=%a' \"$(readlink /proc/self/fd/0)\"; echo end-$((6*7))\n")
    t.expect(b"end-$((6*7))\r\n")  # the echo of the line typed
    out = t.expect(b"end-42\r\n")
    assert re.search(rb"^(/dev/pts/\d+)\r\nrc=0\r\n\1\r\nown=0:5 mode=620\r\n$", out), out
    t.expect(b"# ")
    # a foreground job that waits for SIGWINCH
    t.send(b"(trap 'echo got-$((6*7))-winch; exit' WINCH; echo ready-$((6*7)); while :; do sleep 0.1; done)\n")
    t.expect(b"ready-42")
    fcntl.ioctl(t.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # kubectl gets SIGWINCH
    t.expect(b"got-42-winch")
    t.expect(b"# ")
    t.send(b"stty size\n")
    t.expect(b"stty size\r\n")
    assert t.expect(b"# ").strip() == b"40 120"
    t.send(b"exit\n")
    assert t.wait() == 0


def test_exec_tty_of_another_user_and_of_a_privileged_pod(kube):
    """The pty belongs to the exec's user (runAsUser), as runc leaves it; a privileged pod, which sees
    the host's /dev, still gets a terminal."""
    script = 'tty && stat -c "own=%u:%g mode=%a" "$(tty)" && echo "uid=$(id -u)"'
    t = Terminal(kube, ["exec", "-it", "tty-user", "--", "sh", "-c", script])
    assert t.wait() == 0, t.out
    assert re.search(rb"^/dev/pts/\d+\r\nown=1000:5 mode=620\r\nuid=1000\r\n$", t.out), t.out
    t = Terminal(kube, ["exec", "-it", "tty-privileged", "--", "sh", "-c", script])
    assert t.wait() == 0, t.out
    assert re.search(rb"^/dev/pts/\d+\r\nown=0:\d+ mode=\d+\r\nuid=0\r\n$", t.out), t.out


@TRANSPORTS
def test_exec_reports_the_remote_exit_code_and_separates_stderr(kube, env):
    res = kubectl(kube, "exec", kube.pods[0], "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False,
                  env=env)
    assert res.returncode == 3
    assert res.stdout == "out\n"
    assert "err\n" in res.stderr and "command terminated with exit code 3" in res.stderr
    assert kubectl(kube, "exec", kube.pods[0], "--", "hostname", env=env).stdout.strip() == kube.pods[0]


@TRANSPORTS
def test_exec_with_stdin(kube, env):
    data = "".join(f"line {i}\n" for i in range(2000))
    res = kubectl(kube, "exec", "-i", kube.pods[1], "--", "sh", "-c", "wc -l; cat >/dev/null", input=data, env=env)
    assert res.stdout.strip() == "2000"


def test_exec_runs_in_the_pods_namespaces_and_environment(kube):
    pod = kube.pods[0]
    env = kubectl(kube, "exec", pod, "--", "env").stdout
    assert f"HOSTNAME={pod}" in env and "NP_SVC_SERVICE_HOST=" in env and "KUBERNETES_SERVICE_HOST=" in env
    ip = kubectl(kube, "get", "pod", pod, "-o", "jsonpath={.status.podIP}").stdout
    assert ip in kubectl(kube, "exec", pod, "--", "ip", "-o", "addr").stdout
    cgroup = kubectl(kube, "exec", pod, "--", "cat", "/proc/self/cgroup").stdout
    uid = kubectl(kube, "get", "pod", pod, "-o", "jsonpath={.metadata.uid}").stdout
    assert uid.replace("-", "_") in cgroup or uid in cgroup, cgroup


def test_exec_errors_read_as_a_real_clusters(kube):
    res = kubectl(kube, "exec", kube.pods[0], "-c", "nope", "--", "true", check=False)
    assert res.returncode == 1 and "container nope is not valid for pod" in res.stderr
    res = kubectl(kube, "exec", "no-such-pod", "--", "true", check=False)
    assert res.returncode == 1 and 'pods "no-such-pod" not found' in res.stderr


# ---------------------------------------------------------------------- cp
@TRANSPORTS
def test_cp_both_ways_with_10_mb(kube, env, tmp_path):
    pod = kube.pods[1]
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(10 << 20))
    remote = f"/tmp/netemu-cp-{uuid.uuid4().hex[:8]}"  # pods see the host's /tmp
    try:
        kubectl(kube, "cp", str(src), f"{pod}:{remote}", env=env, timeout=120)
        remote_sum = kubectl(kube, "exec", pod, "--", "sha256sum", remote).stdout.split()[0]
        assert remote_sum == hashlib.sha256(src.read_bytes()).hexdigest()
        back = tmp_path / "down.bin"
        kubectl(kube, "cp", f"{pod}:{remote}", str(back), env=env, timeout=120)
        assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    finally:
        kubectl(kube, "exec", pod, "--", "rm", "-f", remote, check=False)


# ---------------------------------------------------------------------- attach
@TRANSPORTS
def test_attach_to_a_stdin_tty_container(kube, env):
    spec = kubectl(kube, "get", "pod", "console", "-o", "jsonpath={.spec.containers[0].stdin} "
                                                          "{.spec.containers[0].tty}").stdout
    assert spec == "true true"
    restarts = int(kubectl(kube, "get", "pod", "console", "-o",
                           "jsonpath={.status.containerStatuses[0].restartCount}").stdout)
    t = Terminal(kube, ["attach", "-it", "console"], env)
    t.expect(b"If you don't see a command prompt")
    t.send(b"\n")
    t.expect(b"# ")
    marker = uuid.uuid4().hex[:8]
    t.send(f"echo {marker} $(hostname)\n".encode())
    t.expect(f"{marker} console".encode())
    t.send(b"exit\n")  # the container's shell ends: so does the attach, and the container restarts
    assert t.wait() == 0
    assert b"Session ended" in t.out
    kube.wait_for(lambda: int(kubectl(kube, "get", "pod", "console", "-o",
                                      "jsonpath={.status.containerStatuses[0].restartCount}").stdout) > restarts,
                  what="the console container's restart")
    log = kubectl(kube, "logs", "console").stdout  # what it printed is in its log too
    assert f"{marker} console" in log


# ---------------------------------------------------------------------- port-forward
@PF_TRANSPORTS
def test_port_forward_to_a_pod(kube, env):
    pod = kube.pods[0]
    with port_forward(kube, f"pod/{pod}", 80, env) as (port, _):
        assert http_get(port).strip() == pod.encode()
        assert http_get(port).strip() == pod.encode()


@PF_TRANSPORTS
def test_port_forward_to_a_service_picks_a_pod_behind_it(kube, env):
    with port_forward(kube, "svc/np-svc", 80, env) as (port, _):
        assert http_get(port).decode().strip() in kube.pods


@PF_TRANSPORTS
def test_two_concurrent_port_forward_connections(kube, env):
    pod = kube.pods[1]
    with port_forward(kube, f"pod/{pod}", 80, env) as (port, _):
        a = socket.create_connection(("127.0.0.1", port), timeout=10)
        b = socket.create_connection(("127.0.0.1", port), timeout=10)
        with a, b:
            a.sendall(b"GET /a HTTP/1.0\r\n\r\n")  # both open at once, answered in the other order
            b.sendall(b"GET /b HTTP/1.0\r\n\r\n")
            answers = []
            for s in (b, a):
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                answers.append(data.partition(b"\r\n\r\n")[2].strip())
        assert answers == [pod.encode(), pod.encode()]


@PF_TRANSPORTS
def test_port_forward_to_a_closed_port_then_an_open_one(kube, env):
    pod = kube.pods[0]
    with port_forward(kube, f"pod/{pod}", 8081, env) as (port, proc):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert s.recv(100) == b""  # nothing listens there: the connection just ends
        proc.wait(10)  # kubectl >= 1.23 ends the session on an error from the pod, as here
        err = proc.stderr.read()
    assert f"error forwarding port 8081 to pod {pod}" in err and "failed to connect to localhost:8081" in err, err
    with port_forward(kube, f"pod/{pod}", 80, env) as (port, _):
        assert http_get(port).strip() == pod.encode()


# ---------------------------------------------------------------------- the official Python client
@pytest.fixture(scope="module")
def core(kube):
    pytest.importorskip("kubernetes", reason="the official Python client is a test dependency")
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(config_file=kube.kubeconfig))


def test_python_client_exec(kube, core):
    from kubernetes.stream import stream

    pod = kube.pods[0]
    out = stream(core.connect_get_namespaced_pod_exec, pod, "default", command=["hostname"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    assert out.strip() == pod
    r = stream(core.connect_get_namespaced_pod_exec, pod, "default", command=["sh", "-c", "cat; exit 4"],
               stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
    r.write_stdin("through stdin\n")
    r.close_channel(0)  # v5: the end of stdin
    r.run_forever(timeout=10)
    assert r.read_stdout() == "through stdin\n"
    assert r.returncode == 4


def test_python_client_exec_with_a_tty(kube, core):
    from kubernetes.stream import stream

    r = stream(core.connect_get_namespaced_pod_exec, kube.pods[1], "default", command=["sh"],
               stderr=True, stdin=True, stdout=True, tty=True, _preload_content=False)
    out = ""
    r.write_stdin("echo tty-$((6*7))\nexit 5\n")
    end = time.time() + 10
    while r.is_open() and time.time() < end:
        r.update(timeout=0.2)
        out += r.read_stdout() if r.peek_stdout() else ""
    assert "tty-42" in out
    assert r.returncode == 5


def test_python_client_portforward_survives_a_closed_port(kube, core):
    from kubernetes.stream import portforward

    pod = kube.pods[1]
    pf = portforward(core.connect_get_namespaced_pod_portforward, pod, "default", ports="8081,80")
    s = pf.socket(80)
    s.settimeout(10)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    assert data.partition(b"\r\n\r\n")[2].strip() == pod.encode()
    err = pf.error(8081)
    assert err and "failed to connect to localhost:8081" in err
    s.close()
    pf.close()
