"""The pod launcher: one preloaded process per lab that forks pod sandboxes and containers.

Starting a pod must not cost a fresh Python interpreter: the launcher is started once per lab
with the built-in workloads already imported, and every pod process is a fork of it
(copy-on-write pages shared with the launcher and with each other). It is a fresh, lean
interpreter rather than a fork of the control process, because fork time grows with the
parent's memory.

    sandbox   the pod's UTS namespace (hostname = pod name) and mount namespace (its own
              resolv.conf and hosts, its ServiceAccount token volume at
              /var/run/secrets/kubernetes.io/serviceaccount, /sys of its network namespace), made
              by the launcher itself without a fork: it steps into new namespaces, keeps a file
              descriptor on each and steps back. Those descriptors hold the namespaces. A pod that
              is not privileged is a container (netemu.dataplane.rootfs): IPC and PID namespaces
              of its own, whose PID 1 is a pause process (spawned, not forked: `sleep infinity`),
              and a root of its own, the host's files under a per-pod overlay. The answer names the
              pause process: its exit, reported as any child's, is the sandbox's end.
    container a fork (into the pod's PID namespace) that enters the pod's network namespace, the
              sandbox's UTS, IPC and mount namespaces and the pod's cgroup, drops to the
              container's user and capabilities (netemu.dataplane.security), then execs a command
              or runs a built-in stand-in.

Each child reports the end of its set-up through a pipe; the launcher does not wait for it
(it forks the next child meanwhile) and answers the request when the pipe closes. It reaps
every child and reports exits. Messages are JSON over a SOCK_SEQPACKET socketpair; one bigger than
INLINE_MAX (a pod whose environment holds thousands of Services) travels in a sealed memfd whose
descriptor is passed along (SCM_RIGHTS), so its size is limited by MAX_MESSAGE, not by the socket.

The launcher keeps a tag for each child and sandbox (the pod's uid and the container's name, as the
control process gave them): `list` answers what it holds, so that a restarted control process can
adopt the running containers and their sandboxes, and `adopt_sandbox` re-opens a pod's namespaces
from one of its running processes (after the launcher itself was restarted). It is a child
subreaper: orphans of pod processes are reaped here rather than by the host's init.
"""
from __future__ import annotations

import errno
import gc
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from typing import Any, Optional

from netemu import procutil
from netemu.dataplane import nsutil, podexec, rootfs

SANDBOX_GONE = "the pod's sandbox is gone"  # how a container's start fails when its pause process died
INLINE_MAX = 32 * 1024  # bigger messages travel in a memfd (the socket's limit is ~200 KiB)
MAX_MESSAGE = 64 << 20  # what the launcher accepts at all (an environment past ARG_MAX fails at exec)


class MessageTooLarge(ValueError):
    pass


class ExecFailed(Exception):
    """The container's process could not start: worded as runc words it (the container's status and
    its event carry it), not as a Python exception."""


def send_msg(sock: socket.socket, data: bytes) -> None:
    """One message: inline, or in a sealed memfd passed with it. Raises BlockingIOError on a full
    non-blocking socket (nothing was sent then) and MessageTooLarge past MAX_MESSAGE."""
    if len(data) <= INLINE_MAX:
        sock.send(data)
        return
    if len(data) > MAX_MESSAGE:
        raise MessageTooLarge(f"the message is {len(data) / (1 << 20):.1f} MiB, over the pod launcher's limit "
                              f"of {MAX_MESSAGE >> 20} MiB")
    fd = os.memfd_create("netemu-msg", os.MFD_CLOEXEC | getattr(os, "MFD_ALLOW_SEALING", 2))
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        try:  # F_ADD_SEALS: F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE
            import fcntl

            fcntl.fcntl(fd, 1033, 0x1 | 0x2 | 0x4 | 0x8)
        except OSError:
            pass
        socket.send_fds(sock, [json.dumps({"memfd": len(data)}).encode()], [fd])
    finally:
        os.close(fd)  # the message in flight holds its own reference


def recv_msg(sock: socket.socket) -> bytes:
    """The next message (b"" at EOF); raises BlockingIOError when none is waiting."""
    data, fds, flags, _addr = socket.recv_fds(sock, 2 * INLINE_MAX, 4)  # bigger ones come in a memfd
    if not fds:
        if flags & socket.MSG_TRUNC:
            raise MessageTooLarge("a message bigger than the inline limit was cut")
        return data
    try:
        size = os.fstat(fds[0]).st_size
        if size > MAX_MESSAGE:
            raise MessageTooLarge(f"a message of {size} bytes")
        chunks, off = [], 0
        while off < size:
            chunk = os.pread(fds[0], min(size - off, 1 << 20), off)
            if not chunk:
                break
            chunks.append(chunk)
            off += len(chunk)
        return b"".join(chunks)
    finally:
        for fd in fds:
            os.close(fd)


def start() -> tuple[int, socket.socket]:
    """Start the launcher. Returns (pid, the control process's end of its socket)."""
    import subprocess

    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen([sys.executable, "-m", "netemu.dataplane.launcher", str(child.fileno())],
                            pass_fds=[child.fileno()], stdin=subprocess.DEVNULL, start_new_session=True)
    child.close()
    return proc.pid, parent


def _preload() -> None:
    # everything a pod process may need, imported once here and shared by all forks
    import netemu.workloads  # noqa: F401

    gc.collect()
    gc.freeze()  # keep the collector from touching (and so copying) inherited objects


_HOST_ROOT = -1  # a handle on the host's root directory, for reaching /run/netns


_HOME: dict[str, int] = {}  # the launcher's own namespaces, to step back into


def _private_mounts() -> None:
    """Give the launcher a mount namespace without the network namespaces' mounts.

    Each sandbox unshares a mount namespace, which copies the parent's mount table, and a
    slave copy receives every later `ip netns add`/`del`: with one bind mount per pod in
    /run/netns that is O(pods) per pod, O(pods^2) per lab. Sandboxes copy this small table
    instead, and open /run/netns/<pod> through a handle on the host's root."""
    global _HOST_ROOT
    _HOST_ROOT = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        nsutil.unshare(nsutil.CLONE_NEWNS)
        nsutil.mount(None, "/", None, nsutil.MS_REC | nsutil.MS_SLAVE)
    except OSError:
        return
    try:
        nsutil.umount("/run/netns")
    except OSError:
        pass
    for ns in ("net", "uts", "mnt", "ipc"):
        _HOME[ns] = os.open(f"/proc/self/ns/{ns}", os.O_RDONLY)


def _open_host(path: str) -> int:
    if _HOST_ROOT >= 0 and path.startswith("/"):
        return os.open(path.lstrip("/"), os.O_RDONLY, dir_fd=_HOST_ROOT)
    return os.open(path, os.O_RDONLY)


class Launcher:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sel = selectors.DefaultSelector()
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.wfd, False)
        os.set_blocking(self.rfd, False)
        signal.set_wakeup_fd(self.wfd)
        signal.signal(signal.SIGCHLD, lambda *a: None)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # set-up pipes of children still starting: fd -> (request id, pid, bytes read)
        self.starting: dict[int, list] = {}
        self.early_exits: dict[int, int] = {}  # exits of children whose start is not answered yet
        self.pid = os.getpid()
        self.tags: dict[int, Any] = {}  # child pid -> the tag its request carried
        self.sandboxes: dict[tuple[int, int], Any] = {}  # (uts fd, mnt fd) -> tag

    def serve(self) -> None:
        self.sel.register(self.sock, selectors.EVENT_READ, "msg")
        self.sel.register(self.rfd, selectors.EVENT_READ, "sig")
        while True:
            events = self.sel.select()
            # set-up results first, so that a start is always answered before its exit is sent
            for key, _ in sorted(events, key=lambda e: e[0].data != "setup"):
                if key.data == "setup":
                    self._setup_readable(key.fd)
                elif key.data == "sig":
                    try:
                        os.read(self.rfd, 4096)
                    except BlockingIOError:
                        pass
                elif key.data == "msg":
                    try:
                        data = recv_msg(self.sock)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except (MessageTooLarge, OSError) as e:  # not a request anyone can be answered for
                        print(f"netemu launcher: dropped a message: {e}", file=sys.stderr)
                        continue
                    if not data:  # the control process is gone, and with it the lab's brain
                        return
                    try:
                        msg = json.loads(data)
                    except ValueError as e:
                        print(f"netemu launcher: dropped a message: {e}", file=sys.stderr)
                        continue
                    self._request(msg)
            self._reap()

    def _send(self, msg: dict) -> None:
        try:
            send_msg(self.sock, json.dumps(msg).encode())
        except MessageTooLarge as e:
            if "id" in msg:
                send_msg(self.sock, json.dumps({"id": msg["id"], "error": str(e)}).encode())

    def _request(self, msg: dict) -> None:
        op = msg.get("op")
        if op == "sandbox":
            try:
                uts, mnt = make_sandbox(msg)
                self.sandboxes[(uts, mnt)] = msg.get("tag")
                # the pause process too: its exit (reported as any child's) is the sandbox's end
                self._send({"id": msg.get("id"), "sandbox": {"uts": uts, "mnt": mnt, **rootfs.pause_of(mnt)}})
            except Exception as e:
                self._send({"id": msg.get("id"), "error": f"{type(e).__name__}: {e}"})
            return
        if op == "release":
            fds = [fd for fd in msg.get("fds") or [] if isinstance(fd, int)]
            # only descriptors of a sandbox held here: a stale number must never close another pod's
            held = {fd for pair in self.sandboxes for fd in pair}
            for pair in [p for p in self.sandboxes if p[0] in fds or p[1] in fds]:
                del self.sandboxes[pair]
            rootfs.release(fds)  # the sandbox's pause process
            for fd in fds:
                if fd in held:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._send({"id": msg.get("id"), "released": True})
            return
        if op == "adopt_sandbox":  # a pod's namespaces, from one of its processes
            try:
                pid = rootfs.sandbox_process(int(msg["pid"]))  # the pod's pause process, if it has one
                uts = os.open(f"/proc/{pid}/ns/uts", os.O_RDONLY)
                try:
                    mnt = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
                except BaseException:
                    os.close(uts)
                    raise
                self.sandboxes[(uts, mnt)] = msg.get("tag")
                sb = {"uts": uts, "mnt": mnt}
                if rootfs.ns_init(pid):  # not remembered for release: this launcher did not make it
                    sb.update(pause=pid, pause_started=procutil.stat_field(pid, 19))
                self._send({"id": msg.get("id"), "sandbox": sb})
            except Exception as e:
                self._send({"id": msg.get("id"), "error": f"{type(e).__name__}: {e}"})
            return
        if op == "list":  # what a restarted control process adopts
            starting = {e[1] for e in self.starting.values()}
            self._send({"id": msg.get("id"), "pid": os.getpid(),
                        "children": [[pid, tag] for pid, tag in self.tags.items() if pid not in starting],
                        "sandboxes": [[u, m, tag] for (u, m), tag in self.sandboxes.items()]})
            return
        if op == "ping":
            self._send({"id": msg.get("id"), "pong": True})
            return
        target = {"container": _container_main}.get(op)
        if target is None:
            self._send({"id": msg.get("id"), "error": f"unknown op {op}"})
            return
        try:  # a container is forked into its pod's PID namespace (none for a privileged pod)
            entered = rootfs.enter_pod_pid_namespace((msg.get("sandbox") or {}).get("mnt"))
        except (OSError, TypeError) as e:
            self._send({"id": msg.get("id"), "error": f"{SANDBOX_GONE}: {e}"})
            return
        r = w = -1
        try:
            r, w = os.pipe()
            pid = os.fork()
        except OSError as e:
            # ENOMEM: the pod's PID namespace is ending (its pause process died since it was entered)
            for fd in (r, w):
                if fd >= 0:
                    os.close(fd)
            gone = entered and e.errno == errno.ENOMEM
            self._send({"id": msg.get("id"), "error": f"{SANDBOX_GONE}: {e}" if gone else f"fork: {e}"})
            return
        finally:
            if entered and os.getpid() == self.pid:
                rootfs.leave_pid_namespace()
        if pid == 0:
            os.close(r)
            code = 0
            try:
                _child_reset(keep=(w,), session=bool((msg.get("stdio") or {}).get("tty")))
                target(msg, w)
            except BaseException as e:
                why = str(e) if isinstance(e, ExecFailed) else f"{type(e).__name__}: {e}"
                try:
                    os.write(w, why.encode()[:4000])
                except OSError:
                    pass
                code = 127
            os._exit(code)
        os.close(w)
        os.set_blocking(r, False)
        self.tags[pid] = msg.get("tag")
        self.starting[r] = [msg.get("id"), pid, b""]
        self.sel.register(r, selectors.EVENT_READ, "setup")

    def _setup_readable(self, fd: int) -> None:
        entry = self.starting[fd]
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        if chunk:
            entry[2] += chunk
            return
        # EOF: the child closed the pipe (set-up done, or exec) or died
        self.sel.unregister(fd)
        os.close(fd)
        del self.starting[fd]
        rid, pid, err = entry
        if err:
            self._send({"id": rid, "error": err.decode(errors="replace")})
            self.early_exits.pop(pid, None)
            self.tags.pop(pid, None)
            return
        self._send({"id": rid, "pid": pid})
        if pid in self.early_exits:
            self.tags.pop(pid, None)
            self._send({"event": "exit", "pid": pid, "status": self.early_exits.pop(pid)})

    def _reap(self) -> None:
        starting = {e[1] for e in self.starting.values()}
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in starting:
                self.early_exits[pid] = status
            else:
                self.tags.pop(pid, None)
                self._send({"event": "exit", "pid": pid, "status": status})


def _child_reset(keep: tuple[int, ...], session: bool = False) -> None:
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    if session:  # a tty container: its own session, so that the pty can be its controlling terminal
        os.setsid()
    else:
        os.setpgid(0, 0)


def _close_all_but(keep: int) -> None:
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 20)


def _join_cgroups(dirs: list[str]) -> None:
    for d in dirs:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))


def make_sandbox(msg: dict) -> tuple[int, int]:
    """New UTS and mount namespaces for a pod, set up and held by two descriptors; the
    launcher is back in its own namespaces afterwards (it is single-threaded, so setns into a
    mount namespace is allowed). A pod that is not privileged also gets IPC and PID namespaces (a
    pause process is PID 1) and a root of its own (netemu.dataplane.rootfs); a privileged one shares
    the host's processes and files, as every pod did before."""
    fds: list[int] = []
    pause = None
    contained = not msg.get("privileged")
    try:
        net = _open_host(msg["netns"])
        try:
            nsutil.setns(net, nsutil.CLONE_NEWNET)  # so that the sysfs mounted below is the pod's
        finally:
            os.close(net)
        nsutil.unshare(nsutil.CLONE_NEWUTS | nsutil.CLONE_NEWNS | (nsutil.CLONE_NEWIPC if contained else 0))
        nsutil.sethostname(msg["hostname"])
        nsutil.mount(None, "/", None, nsutil.MS_REC | nsutil.MS_SLAVE)
        fds = [os.open("/proc/self/ns/uts", os.O_RDONLY), os.open("/proc/self/ns/mnt", os.O_RDONLY)]
        if contained:
            pause = rootfs.spawn_pause(msg.get("cgroups") or [])
            rootfs.build_root(msg.get("binds") or [], pause, msg["hostname"])  # /proc is the pod's afterwards
        else:
            apply_binds(msg.get("binds") or [])
            try:  # /sys shows the mounting process's network namespace, as `ip netns exec` arranges
                nsutil.umount("/sys")
                nsutil.mount(msg["hostname"], "/sys", "sysfs", 0)
            except OSError:
                pass
    except BaseException:
        for fd in fds:
            os.close(fd)
        if pause is not None:
            rootfs.release_pause(pause)
        raise
    finally:
        _go_home()
    if pause is not None:
        rootfs.remember_pause(fds[1], pause)
    return fds[0], fds[1]


_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32


def apply_binds(binds: list) -> None:
    """The pod files' bind mounts, in the (new, private) mount namespace of the caller: each is
    [source, target] or [source, target, "ro"]. A file's target must exist (/etc is the same file
    system everywhere); a directory's missing target is made in this namespace only."""
    for src, dst, *opts in binds:
        if not os.path.exists(src):
            continue
        if not os.path.exists(dst):
            if not os.path.isdir(src):
                continue
            make_mount_point(dst)  # /var/run/secrets/kubernetes.io/serviceaccount
        nsutil.mount(src, dst, None, nsutil.MS_BIND)
        if "ro" in opts:
            nsutil.mount(None, dst, None, nsutil.MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def make_mount_point(path: str) -> None:
    """Make directory `path` exist in the current (private) mount namespace without creating
    anything on the host's file systems, which every namespace shares.

    The deepest existing ancestor (for /var/run/secrets/kubernetes.io/serviceaccount: /run, as
    /var/run -> /run on Debian) gets a tmpfs over it in this namespace only, holding the
    missing directories; everything the ancestor held stays visible: each entry is bound back
    from the covered original (reached through a descriptor opened before covering it, with
    its submounts), symlinks are copied. Only entries added to the ancestor itself later are
    not seen here. The tmpfs goes away with the namespace: the host never sees any of it."""
    path = os.path.realpath(path)
    parent = path
    while not os.path.isdir(parent):
        if os.path.lexists(parent):
            raise NotADirectoryError(f"cannot make mount point {path}: {parent} is not a directory")
        parent = os.path.dirname(parent)
    if parent == "/":
        raise PermissionError(f"cannot make mount point {path}: it would cover /")
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        st, vfs = os.fstat(fd), os.fstatvfs(fd)
        entries = list(os.scandir(fd))
        flags = vfs.f_flag & (_MS_NOSUID | _MS_NODEV | _MS_NOEXEC)  # ST_* == MS_* for these
        nsutil.mount("netemu", parent, "tmpfs", flags,
                     f"mode={st.st_mode & 0o7777:o},uid={st.st_uid},gid={st.st_gid}")
        for e in entries:
            dst = os.path.join(parent, e.name)
            try:
                if e.is_symlink():
                    os.symlink(os.readlink(e.name, dir_fd=fd), dst)
                    continue
                is_dir = e.is_dir(follow_symlinks=False)
                if is_dir:
                    os.mkdir(dst)
                else:
                    os.close(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileNotFoundError:  # gone since the listing
                continue
            try:
                nsutil.mount(f"/proc/self/fd/{fd}/{e.name}", dst, None, nsutil.MS_BIND | nsutil.MS_REC)
            except FileNotFoundError:  # gone since the listing (a pid file): nothing to show
                (os.rmdir if is_dir else os.unlink)(dst)
        os.makedirs(path, mode=0o755, exist_ok=True)
        if vfs.f_flag & _MS_RDONLY:
            nsutil.mount(None, parent, None, _MS_REMOUNT | _MS_RDONLY | flags)
    finally:
        os.close(fd)


def _go_home() -> None:
    nsutil.setns(_HOME["mnt"], nsutil.CLONE_NEWNS)
    nsutil.setns(_HOME["uts"], nsutil.CLONE_NEWUTS)
    nsutil.setns(_HOME["net"], nsutil.CLONE_NEWNET)
    if "ipc" in _HOME:
        nsutil.setns(_HOME["ipc"], nsutil.CLONE_NEWIPC)
    os.chdir("/")


def _container_main(msg: dict, ready_fd: int) -> None:
    sandbox = msg["sandbox"]
    sec = msg.get("security") or {}
    net = _open_host(msg["netns"])
    _join_cgroups(msg.get("cgroups") or [])
    # the container's input and output are the host's files (its log, the control process's pipes or
    # pty): opened before the pod's root is entered
    if msg.get("stdio"):
        _open_stdio(msg["stdio"])
    else:
        procutil.stdio_to_log(msg["log"], 0o640)
    # forked into the pod's PID namespace (Launcher._request), unless the pod is privileged
    contained = rootfs.in_pod_pid_namespace()
    nsutil.setns(net, nsutil.CLONE_NEWNET)
    nsutil.setns(sandbox["uts"], nsutil.CLONE_NEWUTS)
    nsutil.setns(sandbox["mnt"], nsutil.CLONE_NEWNS)
    # From here on the file system is the pod's, which the pod may have changed: nothing is imported
    # or run from it until the privileges are dropped.
    if contained:
        rootfs.mount_proc()
        ipc = os.open("/proc/1/ns/ipc", os.O_RDONLY)  # the pause process's: the pod's
        nsutil.setns(ipc, nsutil.CLONE_NEWIPC)
        os.close(ipc)
    if sec.get("read_only_root"):
        rootfs.read_only_root()
    if contained and msg.get("cwd"):  # a workingDir missing from the pod's root is made, as runc does
        os.makedirs(msg["cwd"], exist_ok=True)
    # nothing of the launcher's survives into the container but the set-up pipe
    _close_all_but(ready_fd)
    _drop_privileges(sec)
    os.chdir(msg.get("cwd") or "/")
    env = dict(msg.get("env") or {})
    if msg.get("argv"):
        _exec(msg["argv"], env)
    # a built-in stand-in runs right here, in the forked (preloaded) interpreter; the image's own
    # program would have been exec'd, so what the kernel would refuse at exec is refused here too
    from netemu.workloads import PortSpec, WorkloadContext, run_builtin

    argv = [msg["builtin"], *(msg["ctx"].get("args") or [])]
    if exceeds_exec_limits(argv, env):
        raise _exec_failed(argv[0], errno.E2BIG)
    os.environ.clear()
    os.environ.update(env)
    c = dict(msg["ctx"])
    c["ports"] = [PortSpec(**p) for p in c.get("ports") or []]
    c["contained"] = contained
    ctx = WorkloadContext(**c, on_ready=lambda: os.close(ready_fd))
    _set_comm(msg["builtin"].encode()[:15])
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    run_builtin(msg["builtin"], ctx)  # closes the set-up pipe once it listens


def _drop_privileges(sec: dict) -> None:
    """The container's user and capabilities (netemu.dataplane.security): Docker's default set unless
    the securityContext says otherwise; privileged containers keep everything."""
    caps = podexec.cap_mask(sec.get("caps") if "caps" in sec else podexec.DEFAULT_CAPS)
    podexec.drop_privileges(int(sec.get("uid") or 0), int(sec.get("gid") or 0), sec.get("groups") or (), caps,
                            bool(sec.get("nnp")), podexec.cap_mask(sec.get("ambient") or ()))


def _open_stdio(stdio: dict) -> None:
    """stdin: true / tty: true: the control process's pipes or pty (netemu.dataplane.stdio), reached
    through /proc/<its pid>/fd/<n>, become fds 0-2; a pty becomes the controlling terminal."""
    import fcntl
    import termios

    modes = {"stdin": os.O_RDONLY, "stdout": os.O_WRONLY, "stderr": os.O_WRONLY}
    for target, name in enumerate(("stdin", "stdout", "stderr")):
        fd = os.open(stdio[name], os.O_RDWR if stdio.get("tty") else modes[name])
        os.dup2(fd, target)
        os.close(fd)
    if stdio.get("tty"):
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)


EXEC_FAILED = "unable to start container process"  # runc's words, before the reason


def _exec(argv: list[str], env: dict[str, str]) -> None:
    """Replace the container's process with argv[0] found on the container's PATH, or raise ExecFailed
    (the set-up pipe is close-on-exec: its EOF tells the launcher the exec happened)."""
    path = _which(argv[0], env.get("PATH"))
    if path is None:
        raise ExecFailed(f'{EXEC_FAILED}: exec: "{argv[0]}": executable file not found in $PATH')
    try:
        os.execve(path, argv, env)
    except OSError as e:  # E2BIG past the kernel's limits, EACCES, ENOEXEC ...
        raise _exec_failed(argv[0], e.errno) from None


def _exec_failed(program: str, err: int) -> ExecFailed:
    text = os.strerror(err)  # as Go's errno text: lower-case
    return ExecFailed(f'{EXEC_FAILED}: exec: "{program}": {text[:1].lower()}{text[1:]}')


MAX_ARG_STRLEN = 32 * 4096  # the kernel's limit on one argument or "NAME=value" string (with its NUL)
_STK_LIM = 8 << 20  # the kernel's default stack limit: at most 3/4 of it for arguments and environment


def exceeds_exec_limits(argv: list[str], env: dict[str, str]) -> bool:
    """Whether execve would fail with E2BIG for these arguments and environment (fs/exec.c): a string
    over MAX_ARG_STRLEN, or the strings and their pointers over a quarter of the stack limit (ARG_MAX,
    2 MiB for the usual 8 MiB stack; never less than 128 KiB nor more than 6 MiB)."""
    import resource

    strings = [*argv, *(f"{k}={v}" for k, v in env.items())]
    sizes = [len(os.fsencode(x)) + 1 for x in strings]
    stack = resource.getrlimit(resource.RLIMIT_STACK)[0]
    limit = _STK_LIM // 4 * 3 if stack == resource.RLIM_INFINITY else min(_STK_LIM // 4 * 3, stack // 4)
    limit = max(limit, MAX_ARG_STRLEN)
    return max(sizes, default=0) > MAX_ARG_STRLEN or sum(sizes) + 8 * len(strings) > limit


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


def _set_child_subreaper() -> None:
    """Orphans of pod processes come to the launcher, which reaps them (PR_SET_CHILD_SUBREAPER)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class LauncherClient:
    """The control process's end: requests out, replies and exit events in."""

    def __init__(self, pid: int, sock: socket.socket):
        self.pid = pid
        self.sock = sock
        self._next = 0

    def request(self, op: str, **fields: Any) -> int:
        self._next += 1
        self.sock.send(json.dumps({"op": op, "id": self._next, **fields}).encode())
        return self._next


if __name__ == "__main__":
    try:
        sock = socket.socket(fileno=int(sys.argv[1]))
        import resource

        # two descriptors hold each pod's namespaces: allow as many as the system lets us
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        _set_child_subreaper()
        _private_mounts()
        rootfs.init()
        _preload()
        Launcher(sock).serve()
    except BaseException:
        traceback.print_exc()
        raise SystemExit(1)
