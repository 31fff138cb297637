"""A command run inside a pod for `pods/exec`, wired to a remotecommand session.

The child enters the pod as `netemu exec` does: it joins the pod's cgroups (a tiny sh writes its
own pid into cgroup.procs, so nothing it starts escapes the pod's cgroup) and the exec helper
(netemu.dataplane.podexec) puts it into the container's network, UTS, IPC, mount and PID namespaces
as the container's user with its capabilities. With a TTY it gets a pty as its controlling terminal
(util-linux setsid -c), so ^C from the client becomes SIGINT for its foreground job and resize
messages become TIOCSWINSZ/SIGWINCH; without, pipes. Everything runs on the event loop.

The pty is the pod's, as a container runtime makes it: a pod that is not privileged has a devpts
instance of its own at /dev/pts (netemu.dataplane.rootfs), and a pty of the host's devpts is no
/dev/pts/N there (`tty` says "not a tty", ttyname() fails, shells turn job control off). So the
master is opened through the container's root (/proc/PID/root/dev/pts/ptmx) and the slave is got
from it with TIOCGPTPEER, never by a path; the slave then belongs to the exec's user, group tty,
mode 0620, as runc leaves it. A privileged pod sees the host's devpts: os.openpty() there.
"""
from __future__ import annotations

import asyncio
import fcntl
import grp
import logging
import os
import signal
import stat
import struct
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
TIOCSPTLCK, TIOCGPTPEER = 0x40045431, 0x5441  # asm-generic/ioctls.h; TIOCGPTPEER: Linux >= 4.13
PTMX = (5, 2)  # the device numbers of every devpts instance's ptmx
PTY_MODE = 0o620


def command_line(cgroups: list[str], enter: list[str], command: list[str], tty: bool) -> list[str]:
    procs = [os.path.join(d, "cgroup.procs") for d in cgroups]
    # the control process ignores SIGINT, and ignored signals survive exec: env puts them back, or ^C
    # on the terminal would not interrupt anything
    return ["/bin/sh", "-c", _JOIN, "sh", *procs, "--", "env", "--default-signal",
            *(["setsid", "-c"] if tty else []), *podexec.command(enter, command)]


def exit_status(returncode: int, command: list[str]) -> dict:
    code = returncode if returncode >= 0 else 128 - returncode  # killed by a signal: 128+n, as runc says
    return channels.success() if code == 0 else channels.exit_status(code, command)


def _tty_gid() -> int:
    try:
        return grp.getgrnam("tty").gr_gid  # the pod's files are the host's: so is its group list
    except KeyError:
        return -1  # none: the group the devpts instance gives (its gid= option)


def open_pty(enter: list[str]) -> tuple[int, int]:
    """(master, slave) of a new pty in the devpts instance the container sees at /dev/pts, the slave
    owned by the exec's user (the enter options' --uid); the host's (os.openpty()) when that is the
    host's own, as for a privileged pod or no container at all."""
    opts = podexec.parse_options(enter)
    target = opts.get("target")
    if target is not None:
        root = f"/proc/{target}/root"
        try:
            if os.stat(f"{root}/dev/pts").st_dev != os.stat("/dev/pts").st_dev:
                return _pod_pty(target, root, int(opts.get("uid") or 0))
        except OSError as e:  # no such process (the exec helper says so), a pod without devpts...
            log.warning("no pty in the devpts of process %s (%s): one of the host's", target, e)
    return os.openpty()


def _pod_pty(target: int, root: str, uid: int) -> tuple[int, int]:
    pidfd = os.pidfd_open(target)
    try:
        # O_NONBLOCK: whatever the pod may have put there, opening it does not hang the loop
        master = os.open(f"{root}/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            signal.pidfd_send_signal(pidfd, 0)  # still the container: that root was its root
            st = os.fstat(master)
            if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != PTMX:
                raise OSError(f"{root}/dev/pts/ptmx is no pty multiplexer")
            fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))  # unlockpt (grantpt: nothing to do on devpts)
            slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            try:
                os.fchown(slave, uid, _tty_gid())
                os.fchmod(slave, PTY_MODE)
            except BaseException:
                os.close(slave)
                raise
        except BaseException:
            os.close(master)
            raise
    finally:
        os.close(pidfd)
    return master, slave


def _spawn(argv: list[str], env: dict, cwd: str, tty: bool, stdin: bool, stdout: bool,
           stderr: bool, enter: list[str]) -> tuple[subprocess.Popen, Optional[int]]:
    """Start the child (vfork+exec: fast and off nothing else); returns it and, with a TTY, the pty's
    master. Its pipes are made non-blocking for the loop."""
    if tty:
        master, slave = open_pty(enter)
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
    proc, master = _spawn(command_line(cgroups, enter, command, tty), env, "/", tty, stdin, stdout, stderr,
                          enter)
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
