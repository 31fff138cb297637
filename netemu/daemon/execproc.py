"""A command run inside a pod for `pods/exec`, wired to a remotecommand session.

The child enters the pod as `netemu exec` does: it joins the pod's cgroups (a tiny sh writes its
own pid into cgroup.procs, so nothing it starts escapes the pod's cgroup) and the exec helper
(netemu.dataplane.podexec) puts it into the container's network, UTS, IPC, mount and PID namespaces
as the container's user with its capabilities. With a TTY it gets a pty as its controlling terminal
(util-linux setsid -c), so ^C from the client becomes SIGINT for its foreground job and resize
messages become TIOCSWINSZ/SIGWINCH; without, pipes. Everything runs on the event loop.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from typing import Optional

from netemu.api import channels
from netemu.daemon.streamio import Remote
from netemu.dataplane import podexec
from netemu.dataplane.fdio import read_fd, set_winsize, wait_readable, write_fd

log = logging.getLogger("netemu.exec")

# join each cgroup.procs named before "--", then exec the rest. (On cgroup v1 the move costs an RCU
# grace period, ~10 ms: most of an exec's time here.)
_JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" 2>/dev/null; shift; done; shift; exec "$@"'
DRAIN_AFTER_EXIT = 2.0  # how long output may still come once the command exited (its children)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def command_line(cgroups: list[str], enter: list[str], command: list[str], tty: bool) -> list[str]:
    procs = [os.path.join(d, "cgroup.procs") for d in cgroups]
    # the control process ignores SIGINT, and ignored signals survive exec: env puts them back, or ^C
    # on the terminal would not interrupt anything
    return ["/bin/sh", "-c", _JOIN, "sh", *procs, "--", "env", "--default-signal",
            *(["setsid", "-c"] if tty else []), *podexec.command(enter, command)]


def exit_status(returncode: int, command: list[str]) -> dict:
    code = returncode if returncode >= 0 else 128 - returncode  # killed by a signal: 128+n, as runc says
    return channels.success() if code == 0 else channels.exit_status(code, command)


def _spawn(argv: list[str], env: dict, cwd: str, tty: bool, stdin: bool, stdout: bool,
           stderr: bool) -> tuple[subprocess.Popen, Optional[int]]:
    """Start the child (vfork+exec: fast and off nothing else); returns it and, with a TTY, the pty's
    master. Its pipes are made non-blocking for the loop."""
    if tty:
        master, slave = os.openpty()
        try:
            proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return proc, master
    pipe, null = subprocess.PIPE, subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdin=pipe if stdin else null, stdout=pipe if stdout else null,
                            stderr=pipe if stderr else null, env=env, cwd=cwd, start_new_session=True)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            os.set_blocking(f.fileno(), False)
    return proc, None


async def _exited(proc: subprocess.Popen) -> int:
    """The child's exit status, from a pidfd on the loop (no child-watcher thread per exec)."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        await wait_readable(pidfd)
    finally:
        os.close(pidfd)
    return proc.wait()


async def run(remote: Remote, *, command: list[str], enter: list[str], cgroups: list[str], env: dict,
              cwd: str, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Optional[dict]:
    """Run the command until it exits; returns the Status for the error channel (None if the client
    went away first: the command is killed then)."""
    # cwd (the container's workingDir) is the pod's: the exec helper goes there once inside (--wd)
    proc, master = _spawn(command_line(cgroups, enter, command, tty), env, "/", tty, stdin, stdout, stderr)
    in_fd = master if tty else (proc.stdin.fileno() if proc.stdin else None)

    async def copy_in() -> None:
        while True:
            data = await remote.read_stdin()
            if not data:
                break
            await write_fd(in_fd, data)
        if tty:
            await write_fd(master, b"\x04")  # stdin ended: ^D, as typed on the terminal
        else:
            proc.stdin.close()

    async def copy_out(fd: int, channel: int) -> None:
        while True:
            data = await read_fd(fd)
            if not data:
                return
            await remote.write(channel, data)

    async def resizes() -> None:
        while True:
            w, h = await remote.resizes.get()
            try:
                set_winsize(master, w, h)
            except OSError:
                return

    helpers, outs = [], []
    if tty:
        outs.append(asyncio.create_task(copy_out(master, channels.STDOUT)))
        helpers.append(asyncio.create_task(resizes()))
    else:
        for f, ch in ((proc.stdout, channels.STDOUT), (proc.stderr, channels.STDERR)):
            if f is not None:
                outs.append(asyncio.create_task(copy_out(f.fileno(), ch)))
    if stdin:
        helpers.append(asyncio.create_task(copy_in()))
    waiter = asyncio.create_task(_exited(proc))
    gone = asyncio.create_task(remote.gone.wait())
    try:
        await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():  # the client went away: so does the command
            _kill(proc.pid)
            await waiter
            return None
        if outs:  # what the command wrote before it exited (its children may hold the pipe: bounded)
            await asyncio.wait(outs, timeout=DRAIN_AFTER_EXIT)
        return exit_status(waiter.result(), command)
    finally:
        if not waiter.done():
            _kill(proc.pid)
        tasks = helpers + outs + [gone]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # off the fds before closing them
        if not waiter.done():
            await asyncio.gather(waiter, return_exceptions=True)
        if master is not None:
            os.close(master)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:
                    pass


def _kill(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
            return
        except (ProcessLookupError, PermissionError):
            continue
