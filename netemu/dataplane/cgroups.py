"""Per-pod control groups, on cgroup v2 or on v1 (this machine kind mounts v1 controllers).

Every process of a pod, including what its program forks and what `netemu exec` starts, lives in
the pod's cgroup. That is how a pod is stopped completely and how `down` finds every process a
lab started, even after the control process was killed.

Layout: v2  /sys/fs/cgroup/netemu/<lab>/<pod-id>
        v1  /sys/fs/cgroup/<controller>/netemu/<lab>/<pod-id>  for pids, cpu, cpuacct, memory
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Iterable, Optional

ROOT = os.environ.get("NETEMU_CGROUP_ROOT", "/sys/fs/cgroup")
V1_CONTROLLERS = ("pids", "cpu", "cpuacct", "memory")


def is_v2() -> bool:
    return os.path.exists(os.path.join(ROOT, "cgroup.controllers"))


def _v1_mounts() -> dict[str, str]:
    """controller -> mount point, for the v1 controllers netemu uses."""
    out = {}
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                dev, mnt, fstype, opts = line.split()[:4]
                if fstype != "cgroup":
                    continue
                for ctrl in V1_CONTROLLERS:
                    if ctrl in opts.split(",") and ctrl not in out:
                        out[ctrl] = mnt
    except OSError:
        pass
    return out


@dataclass(frozen=True)
class PodCgroup:
    """The directories that make up one pod's cgroup (one per v1 controller, or one on v2)."""
    dirs: tuple[str, ...]
    procs_dir: str  # where cgroup.procs lists every process (pids controller on v1)

    def procs(self) -> list[int]:
        return read_procs(self.procs_dir)


class LabCgroups:
    def __init__(self, lab: str):
        self.lab = lab
        self.v2 = is_v2()
        if self.v2:
            self.bases = {"": os.path.join(ROOT, "netemu", lab)}
        else:
            self.bases = {ctrl: os.path.join(mnt, "netemu", lab) for ctrl, mnt in _v1_mounts().items()}
        self.available = bool(self.bases) and all(os.access(os.path.dirname(os.path.dirname(b)), os.W_OK)
                                                  for b in self.bases.values())

    def _procs_base(self) -> Optional[str]:
        return self.bases.get("") or self.bases.get("pids") or next(iter(self.bases.values()), None)

    def setup(self) -> None:
        if not self.available:
            return
        for base in self.bases.values():
            os.makedirs(base, exist_ok=True)
        if self.v2:
            # let pod cgroups use the controllers (cpu/memory limits, pids for tracking)
            top = os.path.join(ROOT, "netemu")
            for d in (ROOT, top, self.bases[""]):
                _enable_controllers(d, ("cpu", "memory", "pids"))

    def pod(self, pod_id: str) -> Optional[PodCgroup]:
        if not self.available:
            return None
        dirs = tuple(os.path.join(b, pod_id) for b in self.bases.values())
        procs_dir = os.path.join(self._procs_base(), pod_id)
        return PodCgroup(dirs, procs_dir)

    def create(self, pod_id: str) -> Optional[PodCgroup]:
        cg = self.pod(pod_id)
        if cg is None:
            return None
        for d in cg.dirs:
            os.makedirs(d, exist_ok=True)
        return cg

    def remove(self, pod_id: str) -> None:
        cg = self.pod(pod_id)
        if cg is not None:
            kill_all(cg.procs_dir)
            for d in cg.dirs:
                _rmdir(d)

    def all_procs(self) -> list[int]:
        """Every process in any of this lab's cgroups (daemon and launcher included)."""
        base = self._procs_base()
        pids: list[int] = []
        if base and os.path.isdir(base):
            for dirpath, _, _ in os.walk(base):
                pids.extend(read_procs(dirpath))
        return pids

    def teardown(self, exclude: Iterable[int] = ()) -> None:
        """Kill everything in the lab's cgroups (but `exclude`) and remove the directories."""
        skip = set(exclude)
        base = self._procs_base()
        for _ in range(50):
            pids = [p for p in self.all_procs() if p not in skip]
            if not pids:
                break
            for pid in pids:
                _kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        # A pod's PID 1 (its pause process) leaves the cgroup as it starts to exit but lives on until the
        # zombies of its PID namespace are reaped (by the launcher, or by init once the launcher is gone);
        # the pids controller counts every task until it is reaped: wait for that, a few seconds at most.
        current = os.path.join(base, "pids.current") if base else ""
        deadline = time.monotonic() + 5
        while current and time.monotonic() < deadline:
            try:
                with open(current) as f:
                    if int(f.read()) <= 0:
                        break
            except (OSError, ValueError):
                break
            time.sleep(0.05)
        for base in self.bases.values():
            for dirpath, dirnames, _ in sorted(os.walk(base, topdown=False), key=lambda t: -len(t[0])):
                _rmdir(dirpath)
        if self.v2:
            _rmdir(os.path.join(ROOT, "netemu"))
        else:
            for b in self.bases.values():
                _rmdir(os.path.dirname(b))

    def join(self, pod_id: str, pid: int) -> None:
        cg = self.pod(pod_id)
        if cg is not None:
            for d in cg.dirs:
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write(str(pid))

    def leave(self, pid: int) -> None:
        """Move a process back to the root cgroups (so the lab's directories can be removed)."""
        for b in self.bases.values():
            root = os.path.dirname(os.path.dirname(b))
            try:
                with open(os.path.join(root, "cgroup.procs"), "w") as f:
                    f.write(str(pid))
            except OSError:
                pass

    def join_lab(self, pid: int) -> None:
        """Put the lab's own processes (control process, launcher) in the lab's cgroup."""
        if not self.available:
            return
        for b in self.bases.values():
            d = os.path.join(b, "system")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(pid))


def read_procs(d: str) -> list[int]:
    try:
        with open(os.path.join(d, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return []


def kill_all(d: str, sig: int = signal.SIGKILL, rounds: int = 50) -> None:
    for _ in range(rounds):
        pids = read_procs(d)
        if not pids:
            return
        for pid in pids:
            _kill(pid, sig)
        time.sleep(0.01)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _rmdir(d: str) -> None:
    try:
        os.rmdir(d)
    except (FileNotFoundError, OSError):
        pass


def _enable_controllers(d: str, ctrls: tuple[str, ...]) -> None:
    try:
        with open(os.path.join(d, "cgroup.controllers")) as f:
            have = set(f.read().split())
        with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
            f.write(" ".join(f"+{c}" for c in ctrls if c in have))
    except OSError:
        pass
