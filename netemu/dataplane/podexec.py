"""A container's privileges, and the helper that runs a command inside a pod with them.

What a container runtime gives a container process, done with plain system calls (ctypes):

- the capability bounding set cut down to the container's set (Docker's default set unless the
  securityContext adds or drops some; every capability for `privileged: true`), the ambient set
  cleared, permitted = effective = that set for root, none for another user (as after runc's exec);
- supplementary groups, then the group and the user (runAsGroup, runAsUser, supplementalGroups and
  fsGroup);
- no_new_privs when allowPrivilegeEscalation is false.

The launcher calls `drop_privileges` in a container's process before it execs the container's
program (or runs a built-in stand-in). `kubectl exec`, `netemu exec` and exec probes run this file as
a script (`python3 -I -S podexec.py OPTIONS -- COMMAND...`): it joins the namespaces of the
container's process (network, UTS, IPC, mount; its PID namespace for a child it forks), drops the
privileges in that child and execs the command there. Nothing from the pod's file system runs before
the privileges are dropped: the interpreter, this file and libc are loaded from the host's before
the helper enters the pod's mount namespace, and it imports nothing afterwards (a pod can change any
file of its own root, so a helper that exec'd a pod's program, even setpriv, with the host's
privileges would hand them to the pod). Standard library only: it runs without the virtualenv.

Options (the list the kubelet hands out as a pod's "enter" arguments):
  --target=PID      the container's process: its namespaces are joined
  --net=PATH        a network namespace (the pod's, /run/netns/...; `netemu dns --from-pod` reads it)
  --uid=N --gid=N --groups=N,N  user, group and supplementary groups
  --caps=NAME,...   the capability set (ALL: every one), --nnp: no_new_privs
  --wd=DIR          working directory in the pod (default /)
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

# linux/capability.h, in order
CAP_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)
CAP_NUMBERS = {name: i for i, name in enumerate(CAP_NAMES)}
# Docker's (and containerd's) default set for a container that is not privileged
DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
                "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 24, 38, 47
PR_CAP_AMBIENT_RAISE, PR_CAP_AMBIENT_CLEAR_ALL = 2, 4
_CAP_V3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


_LAST_CAP: list[int] = []


def last_cap() -> int:
    if not _LAST_CAP:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                _LAST_CAP.append(int(f.read()))
        except (OSError, ValueError):
            _LAST_CAP.append(len(CAP_NAMES) - 1)
    return _LAST_CAP[0]


def warm_up() -> None:
    """Look the C functions up (and cache what can be) before a process forks containers: each child
    then touches, and copies, fewer pages."""
    for name in ("prctl", "capset", "capget", "setns", "ioctl"):
        getattr(_libc, name)
    last_cap()
    cap_mask(DEFAULT_CAPS)


def cap_mask(names) -> int:
    """A set of capability names (with or without CAP_, any case; "ALL") as a bit mask."""
    mask = 0
    for name in names or ():
        n = str(name).upper()
        n = n[4:] if n.startswith("CAP_") else n
        if n == "ALL":
            return (1 << (last_cap() + 1)) - 1
        if n not in CAP_NUMBERS:
            raise ValueError(f"unknown capability {name!r}")
        mask |= 1 << CAP_NUMBERS[n]
    return mask


def _setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def _capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(hdr), data), "capset")


def _capget() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of the calling thread."""
    hdr = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(hdr), data), "capget")
    return tuple(data[0].__getattribute__(f) | data[1].__getattribute__(f) << 32
                 for f in ("effective", "permitted", "inheritable"))


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    return _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0),
                       ctypes.c_ulong(0))


def drop_privileges(uid: int = 0, gid: int = 0, groups=(), caps: int = 0, nnp: bool = False,
                    ambient: int = 0) -> None:
    """Become the container's user with its capability set (a mask, see cap_mask). `ambient` (for
    a user other than root) keeps those capabilities across exec, as file capabilities on an image's
    binaries would give them. The calling process must still hold every capability."""
    top = last_cap()
    everything = (1 << (top + 1)) - 1
    caps &= everything & _capget()[1]  # what this process has (the host may withhold some: a VM's init)
    if caps != everything:
        for cap in range(top + 1):
            if not caps & (1 << cap):
                _check(_prctl(PR_CAPBSET_DROP, cap), f"dropping {CAP_NAMES[cap] if cap < len(CAP_NAMES) else cap}")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    os.setgroups(list(groups))
    os.setresgid(gid, gid, gid)
    ambient &= caps
    if uid != 0 and ambient:
        _check(_prctl(8, 1), "PR_SET_KEEPCAPS")  # the ambient capabilities survive the change of user
    os.setresuid(uid, uid, uid)
    if uid == 0:
        _capset(caps, caps, 0)
    elif ambient:
        _capset(ambient, ambient, ambient)
        for cap in range(top + 1):
            if ambient & (1 << cap):
                _check(_prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap), "raising an ambient capability")
        _prctl(8, 0)
    if nnp:
        _check(_prctl(PR_SET_NO_NEW_PRIVS, 1), "no_new_privs")


def options(sec: dict, target: int | None = None, netns: str | None = None) -> list[str]:
    """The helper's options for a container's security settings (netemu.dataplane.security)."""
    out = []
    if netns:
        out.append(f"--net={netns}")
    if target is not None:
        out.append(f"--target={target}")
    out += [f"--uid={int(sec.get('uid') or 0)}", f"--gid={int(sec.get('gid') or 0)}",
            "--groups=" + ",".join(str(int(g)) for g in sec.get("groups") or []),
            "--caps=" + ",".join(sec.get("caps") or [])]
    if sec.get("nnp"):
        out.append("--nnp")
    return out


def command(enter: list[str], argv: list[str], python: str | None = None) -> list[str]:
    """The command line that runs argv in a pod, given the kubelet's "enter" options."""
    return [python or _python(), "-I", "-S", os.path.abspath(__file__), *enter, "--", *argv]


def _python() -> str:
    # the interpreter of this process, or the system's (the helper needs nothing beyond the stdlib)
    exe = sys.executable
    return exe if exe and os.access(exe, os.X_OK) else "/usr/bin/python3"


# --------------------------------------------------------------------------- the helper
def _parse(args: list[str]) -> tuple[dict, list[str]]:
    opts: dict = {"groups": [], "caps": "", "nnp": False, "wd": "/"}
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            return opts, args[i:]
        key, _, value = a.lstrip("-").partition("=")
        if key == "nnp":
            opts["nnp"] = True
        elif key == "groups":
            opts["groups"] = [int(g) for g in value.split(",") if g]
        elif key in ("target", "uid", "gid"):
            opts[key] = int(value)
        elif key in ("net", "uts", "ipc", "mount", "pid", "caps", "wd"):
            opts[key] = value
        else:
            raise SystemExit(f"podexec: unknown option {a}")
    return opts, []


def parse_options(enter: list[str]) -> dict:
    """The helper's options (as options() makes them) as values: target, uid, gid, groups..."""
    try:
        return _parse([*enter, "--"])[0]
    except SystemExit as e:  # an unknown option: the helper itself stops at it
        raise ValueError(str(e)) from None


def _fail(text: str, code: int = 126) -> None:
    os.write(2, f"podexec: {text}\n".encode(errors="replace"))
    os._exit(code)


def main(args: list[str]) -> None:
    opts, argv = _parse(args)
    if not argv:
        _fail("no command", 2)
    caps = cap_mask(opts["caps"].split(",") if opts["caps"] else [])
    fds: list[tuple[int, int]] = []
    target = opts.get("target")
    try:
        pidfd = os.pidfd_open(target) if target else -1
        spec = [("ipc", CLONE_NEWIPC, "ipc"), ("uts", CLONE_NEWUTS, "uts"), ("net", CLONE_NEWNET, "net"),
                ("pid", CLONE_NEWPID, "pid"), ("mount", CLONE_NEWNS, "mnt")]
        for key, flag, name in spec:
            path = f"/proc/{target}/ns/{name}" if target else opts.get(key)
            if path:
                fds.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag))
        if pidfd >= 0:  # still the same process: the namespaces opened are the container's
            signal.pidfd_send_signal(pidfd, 0)
            os.close(pidfd)
            if opts.get("net"):  # and the pod's (a number reused by another process would not be)
                net = next(fd for fd, flag in fds if flag == CLONE_NEWNET)
                if os.stat(opts["net"]).st_ino != os.fstat(net).st_ino:
                    raise ProcessLookupError(f"process {target} is not in {opts['net']}")
    except OSError as e:
        _fail(f"cannot open the container's namespaces: {e} (is the container running?)")
    own_pid_ns = os.stat("/proc/self/ns/pid").st_ino
    fork = any(flag == CLONE_NEWPID and os.fstat(fd).st_ino != own_pid_ns for fd, flag in fds)
    try:
        for fd, flag in fds:  # the mount namespace last: paths above are the host's
            _setns(fd, flag)
            os.close(fd)
    except OSError as e:
        _fail(f"cannot enter the container: {e}")
    if not fork:
        _exec(opts, caps, argv)
    # the PID namespace applies to children: the command runs in one, this process waits for it
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)  # what a terminal sends goes to the command itself
    pid = os.fork()
    if pid == 0:
        _exec(opts, caps, argv, forked=True)

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT):
        signal.signal(sig, forward)
    while True:
        try:
            _, status = os.waitpid(pid, os.WUNTRACED)
        except InterruptedError:
            continue
        if os.WIFSTOPPED(status):  # the command stopped (^Z): so does this process, then both go on
            os.kill(os.getpid(), signal.SIGSTOP)
            os.kill(pid, signal.SIGCONT)
            continue
        break
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


TIOCSCTTY = 0x540E


def _take_terminal() -> None:
    """In the child forked into the pod's PID namespace: a session of its own there, with the terminal
    (stolen from the helper's session on the host, which needs CAP_SYS_ADMIN: before the drop). A
    shell's job control then sees its own session and process groups (it restores the terminal's
    foreground group on exit: one outside its namespace would be "No such process")."""
    if not os.isatty(0):
        return
    try:
        os.setsid()
    except OSError:
        return
    _libc.ioctl(0, TIOCSCTTY, 1)


def _exec(opts: dict, caps: int, argv: list[str], forked: bool = False) -> None:
    if forked:
        _take_terminal()
    try:
        drop_privileges(opts.get("uid", 0), opts.get("gid", 0), opts["groups"], caps, opts["nnp"])
    except OSError as e:
        _fail(f"cannot drop privileges: {e}")
    for sig in range(1, signal.NSIG):
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    try:
        os.chdir(opts.get("wd") or "/")
    except OSError:
        os.chdir("/")
    try:
        os.execvpe(argv[0], argv, dict(os.environ))
    except OSError as e:
        code = 127 if isinstance(e, FileNotFoundError) else 126
        _fail(f'exec "{argv[0]}": {e.strerror}' if e.strerror else f"exec {argv[0]}: {e}", code)


if __name__ == "__main__":
    main(sys.argv[1:])
