"""A pod's root file system and PID namespace, as a container runtime makes them, on the host's tree.

Images cannot be pulled here: pods run the host's programs (python, curl, nginx, redis-server,
sh...), so a pod sees the host's files. But it does not write them, and it sees none of the host's
processes, devices or run-time state. The launcher builds each (non-privileged) pod's sandbox so:

- PID namespace: a pause process (`sleep infinity` with SIGCHLD ignored, so that the kernel reaps
  the orphans it inherits) is PID 1 of a new PID namespace; the pod's containers are forked into
  it, exec'd commands join it. /proc is a procfs of that namespace (mount option pidns=), with
  Docker's masked paths (/proc/kcore, keys, timer_list, ... over /dev/null or an empty directory) and
  read-only ones (/proc/sys, sysrq-trigger, irq, bus, fs).
- IPC namespace of its own (System V IPC and POSIX message queues of the host are not reachable).
- Root: one overlayfs per data file system of the host's tree (the root file system, and any other
  real or tmpfs mount outside /proc, /sys, /dev and /run), the host's directory as the lower layer,
  the upper and work directories in a tmpfs of the pod's own (mounted in the pod's mount namespace
  only: nothing lands on the host's disks, and it all goes when the pod's namespaces go). Writes
  land there; the host's files never change. The overlays are mounted nodev: a device node made
  with CAP_MKNOD cannot be opened (there is no device cgroup to stop it otherwise).
- /dev: a directory of that tmpfs (nosuid, nodev, noexec) with the host's null, zero, full, random,
  urandom and tty bound into it, a devpts instance of its own at /dev/pts (/dev/ptmx), /dev/shm,
  and the usual symbolic links. /run: another directory of it (the host's /run, with every lab's
  sockets and /run/netns, is not visible). /sys: a read-only sysfs of the pod's network namespace,
  /sys/firmware masked.
- The pod files (resolv.conf, hosts, the ServiceAccount token volume, the lab's socket directory
  for the lab's own CoreDNS and ingress controller) are bound in after the pivot, so that their
  targets resolve inside the pod's root (a symbolic link there cannot point them at the host).

The sandbox's mount namespace is then pivoted onto that root and the host's tree is detached from
it: processes entering the namespace (containers, `netemu exec`) find the pod's root as theirs.

When the pause process dies (SIGKILL, the OOM killer), the kernel kills every process of its PID
namespace and no process can be born there again: the sandbox is dead. The launcher reports the pause's
exit as any child's (the sandbox answer names the pause), refuses to start a container in it, and the
kubelet makes the pod a new sandbox (SandboxChanged).
"""
from __future__ import annotations

import ctypes
import os
import re
import signal
from typing import Optional

from netemu import procutil
from netemu.dataplane import nsutil
from netemu.dataplane.nsutil import CLONE_NEWPID, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REMOUNT

VIRTUAL_FS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "mqueue", "nsfs", "bpf", "tracefs", "debugfs",
    "securityfs", "pstore", "configfs", "fusectl", "binfmt_misc", "autofs", "hugetlbfs", "efivarfs", "rpc_pipefs",
    "selinuxfs", "ramfs",
})
PRIVATE_TREES = ("/proc", "/sys", "/dev", "/run")  # the pod gets its own
STAGE_CANDIDATES = ("/tmp", "/mnt", "/media", "/srv", "/opt")  # where the pod's tmpfs sits while the root is built
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))
PROC_MASKED = ("acpi", "asound", "kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug",
               "scsi")
PROC_READONLY = ("bus", "fs", "irq", "sys", "sysrq-trigger")
SYS_MASKED = ("firmware", "devices/virtual/powercap")

AT_FDCWD = -100
OPEN_TREE_CLONE, AT_EMPTY_PATH, MOVE_MOUNT_F_EMPTY_PATH = 1, 0x1000, 0x4
_SYS_PIVOT_ROOT, _SYS_OPEN_TREE, _SYS_MOVE_MOUNT = 155, 428, 429  # x86_64

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# set by init(): the host's data mount points (parents first, "/" first) and the pause command
_LAYERS: list[tuple[str, bool]] = []  # (mount point, is a directory)
_PAUSE: Optional[list[str]] = None
_HOME_PID = -1
_HOME_PID_INO = 0
# pause processes of the sandboxes made here: mnt fd -> (pid, start time), to stop one on release
_PAUSES: dict[int, tuple[int, str]] = {}


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def host_layers(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, bool]]:
    """The mount points a pod's root is made of: "/" and every data file system mounted outside the
    trees a pod gets of its own (a later mount on the same point replaces an earlier one)."""
    points: dict[str, None] = {"/": None}
    with open(mountinfo) as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            fields = head.split()
            if len(fields) < 5 or not tail:
                continue
            mp, fstype = _unescape(fields[4]), tail.split()[0]
            if mp == "/" or fstype in VIRTUAL_FS:
                continue
            if any(mp == t or mp.startswith(t + "/") for t in PRIVATE_TREES):
                continue
            points.pop(mp, None)
            points[mp] = None
    out = []
    for mp in points:
        try:
            out.append((mp, os.path.isdir(mp)))
        except OSError:
            continue
    return out


def init() -> None:
    """Once, in the launcher's own mount namespace: what every pod's root is built from."""
    global _LAYERS, _PAUSE, _HOME_PID, _HOME_PID_INO
    _LAYERS = host_layers()
    _PROC_PLAN[:] = _proc_plan()
    _SYS_PLAN[:] = [name for name in SYS_MASKED if os.path.isdir(os.path.join("/sys", name))]
    from netemu.dataplane import podexec

    podexec.warm_up()
    _HOME_PID = os.open("/proc/self/ns/pid", os.O_RDONLY)
    _HOME_PID_INO = os.fstat(_HOME_PID).st_ino
    env = _which("env")
    sleep = _which("sleep")
    _PAUSE = [env, "--ignore-signal=CHLD", sleep, "infinity"] if env and sleep else None
    # children spawned without a fork (the pause) must not inherit the launcher's own descriptors
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


def _which(cmd: str) -> Optional[str]:
    for d in ("/usr/bin", "/bin", "/usr/local/bin"):
        p = os.path.join(d, cmd)
        if os.access(p, os.X_OK):
            return p
    return None


# --------------------------------------------------------------------------- the pause process
def spawn_pause(cgroups: list[str]) -> int:
    """PID 1 of a new PID namespace (the calling thread's children's namespace is restored)."""
    nsutil.unshare(CLONE_NEWPID)
    try:
        if _PAUSE is not None:
            pid = os.posix_spawn(_PAUSE[0], ["pause", *_PAUSE[1:]], {}, setsid=True, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)])
        else:  # no coreutils env/sleep: a forked interpreter that ignores SIGCHLD and waits forever
            pid = os.fork()
            if pid == 0:
                try:
                    os.setsid()
                    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
                    os.closerange(3, 1 << 20)
                    while True:
                        signal.pause()
                finally:
                    os._exit(0)
    finally:
        nsutil.setns(_HOME_PID, CLONE_NEWPID)
    try:
        for d in cgroups:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(pid))
    except OSError:
        release_pause(pid)
        raise
    try:  # as kubelet protects the pause container: the pod's own processes go first
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write("-998")
    except OSError:
        pass
    return pid


def _start_time(pid: int) -> str:
    return procutil.stat_field(pid, 19)


def _kill(pid: int, started: str) -> None:
    if started and _start_time(pid) == started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def remember_pause(mnt_fd: int, pid: int) -> None:
    _PAUSES[mnt_fd] = (pid, _start_time(pid))


PF_EXITING = 0x4  # /proc/PID/stat flags: the process is in do_exit


def pause_alive(pid: int, started: str = "", proc: str = "/proc") -> bool:
    """Is the pause process pid (started at `started`, if known) still the PID 1 of a live namespace? Not
    gone, not a zombie, and not exiting: a PID 1 that ends waits in do_exit (PF_EXITING) until the kernel
    has killed and reaped every other process of its namespace, and no process can be born there."""
    try:
        with open(f"{proc}/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        state, flags, start = fields[0], int(fields[6]), fields[19]
    except (OSError, IndexError, ValueError):
        return False
    if started and start != started:
        return False  # another process now has that number
    return state not in ("Z", "X", "x") and not flags & PF_EXITING


def pause_of(mnt_fd: int) -> dict:
    """What the control process is told of a sandbox's pause process (made here): {"pause": pid,
    "pause_started": its start time}; {} for a privileged pod's sandbox."""
    pid, started = _PAUSES.get(mnt_fd, (0, ""))
    return {"pause": pid, "pause_started": started} if pid else {}


def ns_init(pid: int) -> bool:
    """PID 1 of a PID namespace other than the launcher's: a pod's pause process."""
    try:
        with open(f"/proc/{pid}/status") as f:
            nspid = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
        return len(nspid) > 1 and nspid[-1] == "1" and os.stat(f"/proc/{pid}/ns/pid").st_ino != _HOME_PID_INO
    except OSError:
        return False


def release(fds) -> None:
    """A sandbox's descriptors are released: its pause process (and with it, what is left of the
    pod's processes) goes too. The kubelet has usually emptied the pod's cgroup already."""
    for fd in fds or ():
        entry = _PAUSES.pop(fd, None) if isinstance(fd, int) else None
        if entry is not None:
            _kill(*entry)


def release_pause(pid: int) -> None:
    """Stop a pause process this launcher spawned and has not reaped yet."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def pod_pid_namespace(mnt_fd: int) -> Optional[int]:
    """A descriptor on the PID namespace of the pod whose mount namespace is mnt_fd, None for a
    privileged pod (the host's). The pause process of a sandbox made here is known; for one adopted
    after a restart of the launcher, the pod's /proc/1 is its pause process."""
    pid, started = _PAUSES.get(mnt_fd, (0, ""))
    if pid:
        fd = os.open(f"/proc/{pid}/ns/pid", os.O_RDONLY)
        if not pause_alive(pid, started):  # gone, or ending: a fork into its namespace would fail
            os.close(fd)
            raise ProcessLookupError("the pod's pause process is gone")
        return fd
    home = os.open("/proc/self/ns/mnt", os.O_RDONLY)
    try:
        nsutil.setns(mnt_fd, nsutil.CLONE_NEWNS)
        try:
            if os.path.exists("/proc/self"):  # the host's /proc: a privileged pod
                return None
            if not pause_alive(1):  # the pod's /proc: its PID 1
                raise ProcessLookupError("the pod's pause process is gone")
            return os.open("/proc/1/ns/pid", os.O_RDONLY)
        finally:
            nsutil.setns(home, nsutil.CLONE_NEWNS)
            os.chdir("/")
    finally:
        os.close(home)


def enter_pod_pid_namespace(mnt_fd: Optional[int]) -> bool:
    """Children forked from now on are born in the PID namespace of the sandbox whose mount namespace
    is mnt_fd (False: a privileged pod's, the host's; nothing changed). Undo with leave_pid_namespace."""
    if mnt_fd is None:
        return False
    fd = pod_pid_namespace(mnt_fd)
    if fd is None:
        return False
    try:
        if os.fstat(fd).st_ino == _HOME_PID_INO:
            return False
        nsutil.setns(fd, CLONE_NEWPID)
        return True
    finally:
        os.close(fd)


def leave_pid_namespace() -> None:
    nsutil.setns(_HOME_PID, CLONE_NEWPID)


def sandbox_process(pid: int) -> int:
    """The process whose namespaces are its pod sandbox's: the pause process (PID 1 of the pod's PID
    namespace, found among the processes of pid's cgroup) for a pod's container, whose own mount
    namespace may be a copy of the sandbox's (readOnlyRootFilesystem); pid itself otherwise."""
    try:
        ns = os.stat(f"/proc/{pid}/ns/pid").st_ino
        if ns == os.stat("/proc/self/ns/pid").st_ino:
            return pid
        with open(f"/proc/{pid}/cgroup") as f:
            lines = [line.rstrip("\n").split(":", 2) for line in f]
    except (OSError, ValueError):
        return pid
    for _, controllers, path in lines:
        if controllers in ("pids", ""):
            base = "/sys/fs/cgroup" + ("/pids" if controllers == "pids" else "")
            try:
                with open(f"{base}{path}/cgroup.procs") as f:
                    candidates = [int(x) for x in f.read().split()]
            except (OSError, ValueError):
                continue
            for p in candidates:
                try:
                    with open(f"/proc/{p}/status") as f:
                        nspid = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
                    if nspid[-1:] == ["1"] and os.stat(f"/proc/{p}/ns/pid").st_ino == ns:
                        return p
                except (OSError, StopIteration):
                    continue
    return pid


def in_pod_pid_namespace() -> bool:
    """In a process forked by the launcher: was it born in a pod's PID namespace?"""
    return os.stat("/proc/self/ns/pid").st_ino != _HOME_PID_INO


# --------------------------------------------------------------------------- the root
def _open_tree(path: str) -> int:
    return _check(_libc.syscall(_SYS_OPEN_TREE, AT_FDCWD, path.encode(), OPEN_TREE_CLONE | os.O_CLOEXEC),
                  f"open_tree {path}")


def _move_mount(tree: int, target: str) -> None:
    _check(_libc.syscall(_SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH),
           f"move_mount {target}")


def _pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(_SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()), "pivot_root")


def _stage_dir() -> str:
    for d in STAGE_CANDIDATES:
        if os.path.isdir(d) and not os.path.islink(d):
            return d
    raise FileNotFoundError("no directory to build a pod's root on (/tmp, /mnt...)")


def _proc_plan(proc: str = "/proc") -> list[tuple[str, str]]:
    """Which of Docker's masked (a directory or a file) and read-only paths this kernel's /proc has:
    the same in every procfs, so worked out once."""
    plan = []
    for name in PROC_MASKED:
        p = os.path.join(proc, name)
        if os.path.isdir(p):
            plan.append((name, "dir"))
        elif os.path.exists(p):
            plan.append((name, "file"))
    plan += [(name, "ro") for name in PROC_READONLY if os.path.exists(os.path.join(proc, name))]
    return plan


_PROC_PLAN: list[tuple[str, str]] = []
_SYS_PLAN: list[str] = []
_RO = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC


def mask_proc(proc: str, null: str, empty: Optional[str]) -> None:
    """Docker's masked and read-only paths of a container's /proc."""
    for name, kind in _PROC_PLAN or _proc_plan(proc):
        p = f"{proc}/{name}"
        try:
            if kind == "dir":
                if empty:
                    nsutil.bind(empty, p, _RO)
                else:
                    nsutil.mount("tmpfs", p, "tmpfs", _RO, "size=0")
            elif kind == "file":
                nsutil.bind(null, p)
            else:
                nsutil.bind(p, p, _RO)
        except OSError:
            pass


def build_root(binds: list, pause: int, hostname: str = "") -> None:
    """The pod's root, in the calling thread's (new, private, slave) mount namespace, which is then
    pivoted onto it. binds: [source, target] or [source, target, "ro"], as apply_binds takes them;
    /etc/hostname holds the pod's hostname, as kubelet's does."""
    # what must be reached through the host's tree, before it is left: the lower layers (overlayfs
    # takes them from this namespace), the pod files (cloned mount trees, attached after the pivot)
    lowers, trees = [], []
    try:
        for mp, is_dir in _LAYERS:
            try:
                lowers.append((mp, is_dir, os.open(mp, os.O_PATH | (os.O_DIRECTORY if is_dir else 0))))
            except OSError:
                continue
        for src, dst, *opts in binds:
            if os.path.exists(src):
                trees.append((_open_tree(src), os.path.isdir(src), dst, "ro" in opts))
        stage = _stage_dir()
        nsutil.mount("netemu-pod", stage, "tmpfs", MS_NOSUID, "mode=0755")
        root = os.path.join(stage, "root")
        for d, mode in (("root", 0o755), ("dev", 0o755), ("run", 0o755), ("empty", 0o555)):
            os.mkdir(os.path.join(stage, d), mode)
        os.chmod(os.path.join(stage, "empty"), 0o555)
        for i, (mp, is_dir, fd) in enumerate(lowers):
            target = root if mp == "/" else root + mp
            if mp != "/" and not os.path.exists(target):
                continue
            if not is_dir:  # a file mounted on its own: seen, read-only
                try:
                    nsutil.bind(f"/proc/self/fd/{fd}", target, MS_RDONLY | MS_NOSUID | MS_NODEV)
                except OSError:
                    pass
                continue
            upper, work = os.path.join(stage, f"upper{i}"), os.path.join(stage, f"work{i}")
            os.mkdir(upper, 0o755)
            os.mkdir(work, 0o700)
            st = os.fstat(fd)
            os.chown(upper, st.st_uid, st.st_gid)
            os.chmod(upper, st.st_mode & 0o7777)
            try:
                nsutil.mount("overlay", target, "overlay", MS_NODEV,
                       f"lowerdir=/proc/self/fd/{fd},upperdir={upper},workdir={work}")
            except OSError:
                # a file system overlayfs does not take as a layer (a root that is already two overlays
                # deep...): seen read-only; the root then gets writable /tmp and /var/tmp of the pod's own
                try:
                    nsutil.bind(f"/proc/self/fd/{fd}", target, MS_RDONLY | MS_NODEV)
                except OSError:
                    if mp == "/":
                        raise
                    continue
                if mp == "/":
                    for d in ("tmp", "var/tmp"):
                        if os.path.isdir(os.path.join(root, d)):
                            os.makedirs(os.path.join(stage, "scratch", d), 0o1777)
                            os.chmod(os.path.join(stage, "scratch", d), 0o1777)
                            nsutil.bind(os.path.join(stage, "scratch", d), os.path.join(root, d), MS_NOSUID | MS_NODEV)
        # /proc of the pod's PID namespace
        proc = os.path.join(root, "proc")
        try:
            nsutil.mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"pidns=/proc/{pause}/ns/pid")
        except OSError:
            pass  # a kernel without pidns=: the first container mounts it from inside (mount_proc)
        else:
            mask_proc(proc, "/dev/null", os.path.join(stage, "empty"))
        # /sys of the pod's network namespace (the calling thread is in it), read-only
        sys_dir = os.path.join(root, "sys")
        try:
            nsutil.mount("sysfs", sys_dir, "sysfs", _RO)
            for name in _SYS_PLAN:
                nsutil.bind(f"{stage}/empty", f"{sys_dir}/{name}", _RO)
        except OSError:
            pass
        # /dev
        dev = os.path.join(stage, "dev")
        for name in DEV_NODES:
            os.close(os.open(os.path.join(dev, name), os.O_WRONLY | os.O_CREAT, 0o666))
        for name, link in DEV_LINKS:
            os.symlink(link, os.path.join(dev, name))
        os.mkdir(os.path.join(dev, "pts"), 0o755)
        os.mkdir(os.path.join(dev, "shm"), 0o1777)
        os.chmod(os.path.join(dev, "shm"), 0o1777)
        nsutil.bind(dev, os.path.join(root, "dev"), MS_NOSUID | MS_NODEV | MS_NOEXEC)
        for name in DEV_NODES:
            try:
                nsutil.bind(os.path.join("/dev", name), os.path.join(root, "dev", name))
            except OSError:
                pass
        nsutil.mount("devpts", os.path.join(root, "dev/pts"), "devpts", MS_NOSUID | MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=0620,gid=5")
        # /run
        run = os.path.join(stage, "run")
        os.mkdir(os.path.join(run, "lock"), 0o1777)
        os.chmod(os.path.join(run, "lock"), 0o1777)
        nsutil.bind(run, os.path.join(root, "run"), MS_NOSUID | MS_NODEV)
        # leave the host's tree
        os.chdir(root)
        _pivot_root(".", ".")
        nsutil.umount(".", nsutil.MNT_DETACH)
        os.chdir("/")
        for tree, is_dir, dst, ro in trees:
            _attach(tree, is_dir, dst, ro)
        if hostname:
            try:
                if os.path.islink("/etc/hostname"):
                    os.unlink("/etc/hostname")
                with open("/etc/hostname", "w") as f:
                    f.write(hostname + "\n")
            except OSError:
                pass
    finally:
        for _, _, fd in lowers:
            os.close(fd)
        for tree, *_ in trees:
            try:
                os.close(tree)
            except OSError:
                pass


def _attach(tree: int, is_dir: bool, dst: str, ro: bool) -> None:
    """A cloned mount at dst, inside the pod's root (now the calling thread's root)."""
    if is_dir:
        os.makedirs(dst, 0o755, exist_ok=True)
    else:
        if os.path.islink(dst) or (os.path.lexists(dst) and not os.path.isfile(dst)):
            os.unlink(dst)  # resolv.conf -> /run/systemd/...: the pod's own file instead
        if not os.path.exists(dst):
            os.makedirs(os.path.dirname(dst), 0o755, exist_ok=True)
            os.close(os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644))
    _move_mount(tree, dst)
    if ro:
        nsutil.mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


# --------------------------------------------------------------------------- in a container's process
def mount_proc() -> None:
    """/proc for the calling process's PID namespace, when the sandbox could not mount it (a kernel
    without procfs's pidns= option): the pod's first container does it, from inside."""
    try:
        if os.readlink("/proc/self") == str(os.getpid()):
            return
    except OSError:
        pass
    nsutil.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mask_proc("/proc", "/dev/null", None)


def read_only_root() -> None:
    """readOnlyRootFilesystem: a mount namespace of the container's own (a copy of the pod's) where
    the root's layers and /run are read-only; /dev, /dev/shm, the pod files and volumes stay as they are."""
    nsutil.unshare(nsutil.CLONE_NEWNS)
    nsutil.mount(None, "/", None, nsutil.MS_REC | nsutil.MS_SLAVE)
    with open("/proc/self/mountinfo") as f:
        lines = f.read().splitlines()
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields = head.split()
        if len(fields) < 6 or not tail:
            continue
        mp, opts, fstype = _unescape(fields[4]), fields[5].split(","), tail.split()[0]
        if not (fstype == "overlay" or mp == "/run"):
            continue
        flags = MS_RDONLY
        for opt, bit in (("nosuid", MS_NOSUID), ("nodev", MS_NODEV), ("noexec", MS_NOEXEC)):
            if opt in opts:
                flags |= bit
        try:
            nsutil.mount(None, mp, None, MS_BIND | MS_REMOUNT | flags)
        except OSError:
            pass
