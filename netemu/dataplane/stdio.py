"""The stdin (and terminal) of a container started with `stdin: true` or `tty: true`, for `attach`.

The control process holds the container's end of things: a pty (tty: true; the container gets the
slave as stdin/stdout/stderr and controlling terminal) or pipes (stdin, stdout, stderr). The
launcher's child opens its ends through /proc/<control pid>/fd/<n> (any process of root may), so no
descriptor passing is needed. What the container prints still goes to its log, and to every
attached client. The same pty/pipes serve the container across restarts, as a runtime's do.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Optional

from netemu.dataplane.fdio import set_winsize, write_fd

log = logging.getLogger("netemu.stdio")

STDOUT, STDERR = 1, 2
QUEUE_MAX = 4096  # chunks an attached client may lag behind before it is dropped


class ContainerStdio:
    def __init__(self, tty: bool, log_path: str):
        self.tty = tty
        self.log_path = log_path
        self.subscribers: set[asyncio.Queue] = set()
        self._readers: list[int] = []
        self._fds: list[int] = []  # everything we hold, closed at the end
        if tty:
            self.master, slave = os.openpty()
            self._fds += [self.master, slave]
            self.stdin_fd: Optional[int] = self.master
            self._child = {"stdin": slave, "stdout": slave, "stderr": slave}
            outs = [(self.master, STDOUT)]
        else:
            self.master = None
            r0, w0 = os.pipe()
            r1, w1 = os.pipe()
            r2, w2 = os.pipe()
            self._fds += [r0, w0, r1, w1, r2, w2]
            self.stdin_fd = w0
            self._child = {"stdin": r0, "stdout": w1, "stderr": w2}
            outs = [(r1, STDOUT), (r2, STDERR)]
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        self._log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        loop = asyncio.get_running_loop()
        for fd, ch in outs:
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._readable, fd, ch)
            self._readers.append(fd)
        os.set_blocking(self.stdin_fd, False)

    def child_paths(self) -> dict:
        """What the launcher's child opens as its fds 0, 1 and 2."""
        pid = os.getpid()
        return {**{k: f"/proc/{pid}/fd/{fd}" for k, fd in self._child.items()}, "tty": self.tty}

    def _readable(self, fd: int, channel: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: nothing holds the pty's slave (we do, so only after close)
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(fd)
            self._readers.remove(fd)
            return
        try:
            os.write(self._log, data)
        except OSError:
            pass
        for q in list(self.subscribers):
            if q.qsize() > QUEUE_MAX:  # a client that does not read: let it go rather than grow
                self.subscribers.discard(q)
                q.put_nowait(None)
            else:
                q.put_nowait((channel, data))

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        self.subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self.subscribers.discard(q)

    async def write(self, data: bytes) -> None:
        if self.stdin_fd is None:
            raise BrokenPipeError("stdin closed")
        await write_fd(self.stdin_fd, data)

    def close_stdin(self) -> None:
        """stdinOnce: the first attached client's end of stdin is the container's."""
        if self.tty:
            try:
                os.write(self.master, b"\x04")
            except OSError:
                pass
        elif self.stdin_fd is not None:
            self._fds.remove(self.stdin_fd)
            os.close(self.stdin_fd)
            self.stdin_fd = None

    def resize(self, width: int, height: int) -> None:
        if self.master is not None:
            set_winsize(self.master, width, height)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._readers:
            loop.remove_reader(fd)
        self._readers.clear()
        for q in self.subscribers:
            q.put_nowait(None)
        self.subscribers.clear()
        for fd in self._fds + [self._log]:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
