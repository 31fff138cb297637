"""The pod launcher: one preloaded process per lab that forks pod sandboxes and containers.

Starting a pod must not cost a fresh Python interpreter, so the control process forks this
launcher once, early, with the built-in workloads already imported; every pod process is then a
fork of it (copy-on-write pages shared with the launcher and with each other).

    sandbox   enters the pod's network namespace, unshares UTS (hostname = pod name) and mount
              namespaces (its own resolv.conf and hosts), joins the pod's cgroup and then only
              holds those namespaces, like the pause container.
    container enters the sandbox's namespaces and cgroup, then execs a command or runs a
              built-in stand-in for the image.

The launcher reaps every child and reports exits to the control process. Messages are JSON
over a SOCK_SEQPACKET socketpair (one message per packet).
"""
from __future__ import annotations

import gc
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from typing import Any, Optional

from netemu.dataplane import nsutil


def start(cgroup_join=None) -> tuple[int, socket.socket]:
    """Fork the launcher. Returns (pid, the control end of its socket)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        parent.close()
        try:
            os.setsid()
            _preload()
            Launcher(child).serve()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(0)
    child.close()
    return pid, parent


def _preload() -> None:
    # everything a pod process may need, imported once here and shared by all forks
    import netemu.workloads  # noqa: F401

    gc.collect()
    gc.freeze()  # keep the collector from touching (and so copying) inherited objects


class Launcher:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.wfd, False)
        os.set_blocking(self.rfd, False)
        signal.set_wakeup_fd(self.wfd)
        signal.signal(signal.SIGCHLD, lambda *a: None)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, "msg")
        sel.register(self.rfd, selectors.EVENT_READ, "sig")
        while True:
            for key, _ in sel.select():
                if key.data == "sig":
                    try:
                        os.read(self.rfd, 4096)
                    except BlockingIOError:
                        pass
                    self._reap()
                else:
                    data = self.sock.recv(1 << 20)
                    if not data:  # the control process is gone: so is the lab's brain
                        return
                    msg = json.loads(data)
                    try:
                        reply = {"id": msg.get("id"), "pid": self._handle(msg)}
                    except Exception as e:  # report, keep serving
                        reply = {"id": msg.get("id"), "error": f"{type(e).__name__}: {e}"}
                    self._send(reply)
            self._reap()

    def _send(self, msg: dict) -> None:
        self.sock.send(json.dumps(msg).encode())

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._send({"event": "exit", "pid": pid, "status": status})

    def _handle(self, msg: dict) -> int:
        op = msg["op"]
        if op == "sandbox":
            return self._fork_checked(_sandbox_main, msg)
        if op == "container":
            return self._fork_checked(_container_main, msg)
        raise ValueError(f"unknown op {op}")

    def _fork_checked(self, target, msg: dict) -> int:
        """Fork; the child reports through a pipe whether its set-up worked before going on."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            code = 0
            try:
                _child_reset(keep=(w,))
                target(msg, w)
            except BaseException as e:
                try:
                    os.write(w, f"{type(e).__name__}: {e}".encode()[:4000])
                except OSError:
                    pass
                code = 127
            os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            err = f.read()  # EOF when the child closed the pipe: set-up done (or it failed)
        if err:
            raise RuntimeError(err.decode(errors="replace"))
        return pid


def _child_reset(keep: tuple[int, ...]) -> None:
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    os.setpgid(0, 0)
    # only the set-up pipe survives into the pod
    fds = sorted(int(x) for x in os.listdir("/proc/self/fd"))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _join_cgroups(dirs: list[str]) -> None:
    for d in dirs:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))


def _sandbox_main(msg: dict, ready_fd: int) -> None:
    _join_cgroups(msg.get("cgroups") or [])
    with open(msg["netns"]) as f:
        nsutil.setns(f.fileno(), nsutil.CLONE_NEWNET)
    nsutil.unshare(nsutil.CLONE_NEWUTS | nsutil.CLONE_NEWNS)
    nsutil.sethostname(msg["hostname"])
    # private mounts: nothing we bind here may propagate back to the host
    nsutil.mount(None, "/", None, nsutil.MS_REC | nsutil.MS_SLAVE)
    for src, dst in msg.get("binds") or []:
        if os.path.exists(src) and os.path.exists(dst):
            nsutil.mount(src, dst, None, nsutil.MS_BIND)
    # /sys shows the mounting process's network namespace (as `ip netns exec` arranges)
    try:
        nsutil.umount("/sys")
        nsutil.mount(msg["hostname"], "/sys", "sysfs", 0)
    except OSError:
        pass
    _set_comm(b"pause")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(ready_fd)  # set-up done
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    while True:
        signal.pause()


def _container_main(msg: dict, ready_fd: int) -> None:
    sandbox = msg["sandbox"]
    # open all namespace handles first: after entering the mount namespace /proc paths still work,
    # but doing it up front keeps the order of setns calls free
    fds = {ns: os.open(f"/proc/{sandbox}/ns/{ns}", os.O_RDONLY) for ns in ("net", "uts", "mnt")}
    _join_cgroups(msg.get("cgroups") or [])
    nsutil.setns(fds["net"], nsutil.CLONE_NEWNET)
    nsutil.setns(fds["uts"], nsutil.CLONE_NEWUTS)
    nsutil.setns(fds["mnt"], nsutil.CLONE_NEWNS)
    for fd in fds.values():
        os.close(fd)
    os.chdir(msg.get("cwd") or "/")
    log = os.open(msg["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(devnull)
    env = dict(msg.get("env") or {})
    if "argv" in msg and msg["argv"]:
        argv = msg["argv"]
        path = _which(argv[0], env.get("PATH"))
        if path is None:
            raise FileNotFoundError(f'exec: "{argv[0]}": executable file not found in $PATH')
        os.execve(path, argv, env)  # the set-up pipe is close-on-exec: EOF tells the launcher
    # a built-in stand-in runs right here, in the forked (preloaded) interpreter
    from netemu.workloads import PortSpec, WorkloadContext, run_builtin

    os.environ.clear()
    os.environ.update(env)
    c = dict(msg["ctx"])
    c["ports"] = [PortSpec(**p) for p in c.get("ports") or []]
    ctx = WorkloadContext(**c)
    _set_comm(msg["builtin"].encode()[:15])
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    os.close(ready_fd)
    run_builtin(msg["builtin"], ctx)


def _which(cmd: str, path: Optional[str]) -> Optional[str]:
    if "/" in cmd:
        return cmd if os.access(cmd, os.X_OK) else None
    for d in (path or os.defpath).split(os.pathsep):
        p = os.path.join(d, cmd)
        if os.access(p, os.X_OK) and not os.path.isdir(p):
            return p
    return None


def _set_comm(name: bytes) -> None:
    try:
        with open("/proc/self/comm", "wb") as f:
            f.write(name[:15])
    except OSError:
        pass


class LauncherClient:
    """The control process's end: request/response plus exit events, over the socketpair.
    Used from asyncio: the socket is registered with the loop by the kubelet."""

    def __init__(self, pid: int, sock: socket.socket):
        self.pid = pid
        self.sock = sock
        self._next = 0

    def request(self, op: str, **fields: Any) -> tuple[int, dict]:
        self._next += 1
        msg = {"op": op, "id": self._next, **fields}
        self.sock.send(json.dumps(msg).encode())
        return self._next, msg
