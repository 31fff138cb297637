"""Starting a lab's control process from `netemu up` (the control process itself is netemu.daemon.main).

`up` forks the control process from itself: the lab file is already parsed and validated, so there is
no second interpreter start. It forks early, before it reads the lab file (`prefork`): the child
imports the control process's modules (netemu.daemon.main: the API server, controllers, data plane)
on the machine's other CPU while `up` reads and validates, then waits for the lab. `spawn` hands it
the lab (pickled objects, the progress pipe and the owner lock by SCM_RIGHTS), and it goes on as the
control process's first fork always did: it detaches (setsid), forks the control process and becomes
the lab's supervisor. `up` reads the build's progress from the pipe. A failed build is rolled back by
the control process before it reports the error.

This module is light on purpose: `up` imports it before the lab file is read.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
import traceback
from typing import Any, Callable, Iterator, Optional

from netemu import paths, procutil


class BuildFailed(RuntimeError):
    """The build failed and the control process rolled everything back before it said so."""


class ControlProcessStopped(RuntimeError):
    """The control process stays stopped (SIGSTOP) in the middle of its build."""

    def __init__(self, pid: int):
        super().__init__(f"the control process (pid {pid}) is stopped")
        self.pid = pid


class ControlProcessDied(RuntimeError):
    """The control process ended (killed, crashed) before it reported success or a rolled-back failure:
    whatever it had built is still there."""

    def __init__(self, pid: Optional[int]):
        super().__init__(f"the control process{f' (pid {pid})' if pid else ''} exited during start-up")
        self.pid = pid


class Prefork:
    """A child of `up` that has imported the control process's modules and waits for its lab."""

    def __init__(self, pid: int, sock: socket.socket):
        self.pid = pid
        self.sock: Optional[socket.socket] = sock

    def hand_over(self, lab, objects: list, fds: list[int]) -> bool:
        """Send the lab; False when the child is gone (then it was reaped, and `spawn` forks anew)."""
        import pickle

        data = pickle.dumps((lab, objects), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            socket.send_fds(self.sock, [len(data).to_bytes(8, "big")], fds)
            self.sock.sendall(data)
        except OSError:
            self.discard()
            return False
        self.sock.close()
        self.sock = None
        return True

    def discard(self) -> None:
        """End the child unless it was handed its lab (it has made nothing: only imports)."""
        if self.sock is None:
            return
        self.sock.close()
        self.sock = None
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def prefork() -> Prefork:
    """Fork the child that becomes the lab's first process once `spawn` hands it the lab."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        ours.close()
        try:
            import importlib

            importlib.import_module("netemu.daemon.main")  # the point: loaded while `up` validates

            lab, objects, fds = _receive(theirs)
            theirs.close()
        except BaseException:  # `up` gave up (a wrong lab file, Ctrl-C) or went away: nothing to say
            os._exit(0)
        _first_process(lab, objects, *fds)
    theirs.close()
    return Prefork(pid, ours)


def _receive(sock: socket.socket) -> tuple[Any, list, list[int]]:
    import pickle

    head, fds, _flags, _addr = socket.recv_fds(sock, 8, 2)
    if not head:
        raise EOFError("no lab")
    head += _exactly(sock, 8 - len(head))
    lab, objects = pickle.loads(_exactly(sock, int.from_bytes(head, "big")))
    return lab, objects, fds


def _exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError("the lab was cut short")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def spawn(lab, objects: list, on_progress: Callable[[str], None], owner_fd: Optional[int] = None,
          early: Optional[Prefork] = None) -> int:
    """Start the control process (in `early`, the prefork, when there is one; forked here otherwise);
    return its pid once the lab's network is built.
    Raises BuildFailed (with the reason) if building failed; everything is rolled back then.
    Raises ControlProcessDied if it ended without a word (nothing was rolled back).

    The first process becomes the lab's supervisor (netemu.daemon.supervisor), holding `owner_fd` (the
    lab's owner lock) for the lab's life."""
    name = lab.metadata.name
    os.makedirs(paths.lab_dir(name), mode=0o700, exist_ok=True)
    os.chmod(paths.RUN_DIR, 0o755)
    r, w = os.pipe()
    fds = [w] + ([owner_fd] if owner_fd is not None else [])
    if early is not None and early.hand_over(lab, objects, fds):
        pid = early.pid
    else:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _first_process(lab, objects, w, owner_fd)
    os.close(w)
    os.waitpid(pid, 0)
    daemon_pid = None
    for line in _lines(r, lambda: daemon_pid):
        tag, _, text = line.partition(" ")
        if tag == "PID":
            daemon_pid = int(text)
        elif tag == "P":
            on_progress(text)
        elif tag == "E":
            raise BuildFailed(text.replace("\\n", "\n"))
        elif tag == "OK":
            return daemon_pid or 0
    raise ControlProcessDied(daemon_pid)


def _first_process(lab, objects: list, w: int, owner_fd: Optional[int] = None) -> None:
    """The lab's first process: detach, fork the control process, become the supervisor. Never returns."""
    try:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        child = os.fork()
        if child == 0:
            ours.close()
            from netemu.daemon.main import daemon_process

            daemon_process(lab, objects, w, theirs.detach())
            os._exit(0)
        os.close(w)
        theirs.close()
        from netemu.daemon import supervisor

        supervisor.exec_supervisor(lab.metadata.name, child, ours.detach(), owner_fd)
    except BaseException:
        traceback.print_exc()
    os._exit(0)


STOPPED_SECONDS = 5.0  # a control process stopped (SIGSTOP) this long while building is reported


def _lines(fd: int, pid: Callable[[], Optional[int]]) -> Iterator[str]:
    """The control process's start-up lines, until it closes the pipe. A control process that stays
    stopped (state T) raises ControlProcessStopped rather than leaving `up` waiting forever."""
    import select

    buf = b""
    stopped_since: Optional[float] = None
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                p = pid()
                if p and procutil.stat_field(p, 0) in ("T", "t"):
                    stopped_since = stopped_since or time.monotonic()
                    if time.monotonic() - stopped_since >= STOPPED_SECONDS:
                        raise ControlProcessStopped(p)
                else:
                    stopped_since = None
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                if buf.strip():
                    yield buf.decode(errors="replace")
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
    finally:
        os.close(fd)
