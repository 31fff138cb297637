"""Non-blocking reads and writes of pipes and ptys on the event loop, and a pty's window size."""
from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import struct
import termios


def set_winsize(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


async def wait_readable(fd: int) -> None:
    """Until fd is readable (data or EOF on a pipe; a pidfd: its process ended), without blocking the loop."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def read_fd(fd: int, n: int = 65536) -> bytes:
    """os.read without blocking the loop; b"" at EOF (and at EIO: a pty whose slave side closed)."""
    while True:
        try:
            return os.read(fd, n)
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno == errno.EIO:
                return b""
            raise
        await wait_readable(fd)


async def write_fd(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    mv = memoryview(data)
    while mv:
        try:
            mv = mv[os.write(fd, mv):]
            continue
        except BlockingIOError:
            pass
        fut = loop.create_future()
        loop.add_writer(fd, lambda: fut.done() or fut.set_result(None))
        try:
            await fut
        finally:
            loop.remove_writer(fd)
