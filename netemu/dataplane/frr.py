"""FRR instances (Debian's frr package: zebra, bfdd, bgpd) inside a lab's namespaces.

One instance per node speaker or lab router, started in its namespace with ``ip netns exec``, with its
own files and sockets under ``/run/frr/ne-<lab>_<name>/`` (the namespace's name: it carries the lab's,
so :func:`sweep` finds a crashed lab's instances by name): the configuration (``-f``), pid files
(``-i``), the zebra socket (``-z``), bfdd's control socket (``--bfdctl``) and the vty sockets
(``--vty_socket``, which ``vtysh --vty_socket DIR`` reaches). The daemons run in the lab's cgroup
``frr``, so the lab's teardown kills them with everything else; they are stopped by pid on a clean one.

The host's instance (``HOST``: a router's ``upstream`` session) is bgpd alone, in the host's
namespace: ``-Z`` (no zebra: FRR never touches the host's routing table; netemu programs what it learned
itself), ``-l <the lab's gateway>`` (it listens there only, and installs nothing: ``-l`` implies ``-n``),
``-P 0`` (no vty TCP port: only its socket under ``/run/frr/ne-<lab>__host/``, a name no node or router
of the lab can have, so the same sweep finds it).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Callable, Optional

from netemu.dataplane import names

FRR_BIN = "/usr/lib/frr"
RUN_DIR = "/run/frr"
DAEMONS = ("zebra", "bfdd", "bgpd")
VTYSH = "vtysh"


def available() -> Optional[str]:
    """None when FRR can run here, else why not."""
    missing = [d for d in DAEMONS if not os.access(os.path.join(FRR_BIN, d), os.X_OK)]
    if missing or shutil.which(VTYSH) is None:
        return "FRR is not installed (apt-get install frr): " + ", ".join(missing or [VTYSH]) + " missing"
    return None


HOST = "_host"  # the host's instance: `_` is in no node or router name (names.py)


def instance_dir(lab: str, name: str) -> str:
    return os.path.join(RUN_DIR, names.node_netns(lab, name))


def _frr_ids() -> tuple[int, int]:
    import grp
    import pwd

    try:
        return pwd.getpwnam("frr").pw_uid, grp.getgrnam("frr").gr_gid
    except KeyError:
        return 0, 0


class FrrInstance:
    def __init__(self, lab: str, name: str, netns: Optional[str], cgroup_dirs: tuple[str, ...] = (),
                 daemons: tuple[str, ...] = DAEMONS, listen: Optional[str] = None):
        self.lab = lab
        self.name = name
        self.netns = netns  # None: the host's namespace (only the host's instance)
        self.dir = instance_dir(lab, name)
        self.cgroup_dirs = cgroup_dirs
        self.daemons = daemons
        self.listen = listen  # bgpd's only listening (and source) address: the host's instance

    # ------------------------------------------------------------------ processes
    def pidfile(self, daemon: str) -> str:
        return os.path.join(self.dir, f"{daemon}.pid")

    def pid(self, daemon: str) -> Optional[int]:
        try:
            with open(self.pidfile(daemon)) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        return pid if _is_ours(pid, self.dir) else None

    def running(self) -> bool:
        return all(self.pid(d) is not None for d in self.daemons)

    def write(self, files: dict[str, str]) -> None:
        os.makedirs(self.dir, exist_ok=True)
        uid, gid = _frr_ids()
        os.chown(self.dir, uid, gid)
        os.chmod(self.dir, 0o750)
        for daemon, text in files.items():
            path = os.path.join(self.dir, f"{daemon}.conf")
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.chown(path + ".tmp", uid, gid)
            os.replace(path + ".tmp", path)

    def start(self, files: dict[str, str], daemons: Optional[tuple[str, ...]] = None) -> None:
        """Write the files and start the daemons not running (zebra first: the others connect to it)."""
        daemons = self.daemons if daemons is None else daemons
        self.write(files)
        for daemon in daemons:
            if self.pid(daemon) is None:
                self._start(daemon)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(self.pid(d) for d in daemons):
            time.sleep(0.02)

    def _start(self, daemon: str) -> None:
        d = self.dir
        argv = [os.path.join(FRR_BIN, daemon), "-d", "-f", os.path.join(d, f"{daemon}.conf"), "-i", self.pidfile(daemon),
                "--vty_socket", d, "--log", f"file:{os.path.join(d, daemon + '.log')}"]
        if self.netns is None:  # the host's bgpd: no zebra, no vty port, one listening address
            if daemon != "bgpd" or not self.listen:
                raise ValueError(f"FRR {daemon} in the host's namespace: only bgpd, with its address")
            argv += ["-Z", "-l", self.listen, "-P", "0"]
        else:
            argv = ["ip", "netns", "exec", self.netns] + argv + ["-z", os.path.join(d, "zserv.api"), "-A", "127.0.0.1"]
        if daemon == "bfdd":
            argv += ["--bfdctl", os.path.join(d, "bfdd.sock")]
        if daemon == "zebra":
            argv += ["-s", "16777216"]
        cg = self.cgroup_dirs

        def join_cgroup() -> None:  # the daemon (and what it forks) belongs to the lab
            for c in cg:
                try:
                    with open(os.path.join(c, "cgroup.procs"), "w") as f:
                        f.write(str(os.getpid()))
                except OSError:
                    pass

        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, preexec_fn=join_cgroup, timeout=20)
        if daemon == "zebra":  # the others connect to zebra's socket: wait for it
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not os.path.exists(os.path.join(d, "zserv.api")):
                time.sleep(0.01)

    def stop(self, daemons: Optional[tuple[str, ...]] = None, sig: int = signal.SIGTERM, wait: float = 2.0) -> None:
        """Stop the daemons by pid (SIGKILL: as a crash; SIGTERM, then SIGKILL after ``wait``)."""
        daemons = self.daemons if daemons is None else daemons
        pids = [p for p in (self.pid(d) for d in daemons) if p is not None]
        for pid in pids:
            _kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            time.sleep(0.02)
        for pid in pids:
            _kill(pid, signal.SIGKILL)
        for d in daemons:
            for suffix in (".pid", ".vty"):
                try:
                    os.unlink(os.path.join(self.dir, d + suffix))
                except OSError:
                    pass

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ vtysh
    def vtysh(self, *commands: str, configure: bool = False, timeout: float = 10) -> str:
        argv = [VTYSH, "--vty_socket", self.dir]
        if configure:
            argv += ["-c", "configure terminal"]
        for c in commands:
            argv += ["-c", c]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0 or (configure and r.stdout.strip()):
            raise RuntimeError(f"vtysh in {self.name}: {(r.stdout + r.stderr).strip() or f'exit {r.returncode}'}")
        return r.stdout


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _is_ours(pid: int, directory: str) -> bool:
    """Is pid an FRR daemon of this instance (its command line names the instance's directory)?"""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].startswith(FRR_BIN.encode() + b"/") and (directory + "/").encode() in b"\0".join(
        argv) and _alive(pid)


def sweep(lab: str, log: Callable[[str], None] = lambda s: None) -> list[str]:
    """Kill every FRR daemon of a lab, found by its directory's name (works after a crash), and remove
    the directories."""
    removed = []
    try:
        entries = os.listdir(RUN_DIR)
    except OSError:
        return removed
    for entry in entries:
        if not names.belongs_to(lab, entry):
            continue
        d = os.path.join(RUN_DIR, entry)
        for daemon in DAEMONS:
            try:
                with open(os.path.join(d, f"{daemon}.pid")) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError):
                continue
            if _is_ours(pid, d):
                _kill(pid, signal.SIGKILL)
                log(f"killed FRR {daemon} (pid {pid}) of {entry}")
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed
