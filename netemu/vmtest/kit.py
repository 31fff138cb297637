"""A throwaway VM for kernel features this machine lacks (IPVS): build the kit, boot it, run one script.

The kit (scripts/ipvs_vm/build-kit.sh) is Debian's kernel package, which has ip_vs as modules, and a
busybox initramfs. QEMU boots it under TCG (software emulation: /dev/kvm here is kvm_pvm, which stock
kernels hang under), shares the host's / read-only over 9p as the guest's root (so the guest runs the
host's ip, ipvsadm, ipset, iptables, curl, busybox) and one work directory read-write at the same path.
The guest runs one shell script of the work directory and powers off; its exit code comes back.

Python inside the guest is 20-40x slower than on the host: keep what runs there to shell and C tools.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Optional

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "ipvs_vm"
DEFAULT_KIT_DIR = pathlib.Path(os.environ.get("NETEMU_VM_KIT", "/var/cache/netemu/ipvs-vm"))
HOST_PACKAGES = ("qemu-system-x86", "busybox-static", "cpio", "kmod")
APT_LINE = "apt-get install -y --no-install-recommends " + " ".join(HOST_PACKAGES)
QEMU = "qemu-system-x86_64"


class VmError(RuntimeError):
    pass


# what the guest mounts over the host's tree (its own tmpfs, proc, sys, dev): host files there are not
# visible inside, e.g. a checkout cloned under /tmp
GUEST_HIDDEN = ("/tmp", "/run", "/proc", "/sys", "/dev")


def hidden_in_guest(path) -> Optional[str]:
    """The guest mount that hides `path` (its real location) from the guest, or None if the guest sees it."""
    real = os.path.realpath(str(path))
    for top in GUEST_HIDDEN:
        if real == top or real.startswith(top + "/"):
            return top
    return None


def checkout_problem() -> Optional[str]:
    """Why a guest could not run this checkout's netemu (its tree or its Python hidden), or None."""
    import sys

    import netemu

    for what, path in (("the checkout", REPO), ("the netemu package", pathlib.Path(netemu.__file__).parent),
                       ("the Python environment", sys.prefix), ("the Python interpreter", sys.executable)):
        top = hidden_in_guest(path)
        if top:
            return (f"{what} ({os.path.realpath(str(path))}) is under {top}, which the VM mounts its own {top} "
                    "over: it is not visible in the guest")
    return None


@dataclass(frozen=True)
class Kit:
    path: pathlib.Path
    kernel: str          # e.g. 6.1.0-56-amd64
    build_seconds: float = 0.0

    @property
    def moddir(self) -> pathlib.Path:
        return self.path / "kroot" / "lib" / "modules" / self.kernel


@dataclass(frozen=True)
class VmRun:
    rc: int
    output: str          # the serial console (guest script's stdout/stderr, init's messages)
    seconds: float       # wall clock, QEMU start to exit
    ready_at: Optional[float]   # guest uptime when the script started
    exit_at: Optional[float]    # guest uptime when it ended


def missing_tools() -> list[str]:
    need = {QEMU: "qemu-system-x86", "busybox": "busybox-static", "cpio": "cpio", "depmod": "kmod"}
    return [pkg for tool, pkg in need.items() if shutil.which(tool) is None]


def install_host_packages(timeout: float = 900) -> Optional[str]:
    """apt-get install what the VM needs; None on success, else why not."""
    missing = missing_tools()
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"{', '.join(missing)} missing and not root to install them ({APT_LINE})"
    if shutil.which("apt-get") is None:
        return f"{', '.join(missing)} missing and no apt-get to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600", *missing]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if res.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq", "-o", "DPkg::Lock::Timeout=600"], capture_output=True,
                       env=env, timeout=timeout)
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if res.returncode != 0:
        return f"apt-get install {' '.join(missing)} failed: {res.stderr.strip()[-500:]}"
    still = missing_tools()
    return f"still missing after apt-get: {', '.join(still)}" if still else None


def qemu_problem() -> Optional[str]:
    """None when QEMU can emulate an x86-64 machine here (TCG), else why not."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed ({APT_LINE})"
    try:
        res = subprocess.run([QEMU, "-accel", "help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{QEMU} does not run: {e}"
    if res.returncode != 0:
        return f"{QEMU} does not run: {(res.stderr or res.stdout).strip()[:300]}"
    if "tcg" not in res.stdout:
        return f"{QEMU} has no TCG accelerator (accelerators: {res.stdout.split()})"
    return None


def ensure_kit(path: pathlib.Path = DEFAULT_KIT_DIR, timeout: float = 900) -> Kit:
    """Build the kit once (about 10 s plus the kernel package download) and reuse it."""
    path = pathlib.Path(path)
    t0 = time.monotonic()
    # build-kit.sh decides (at once for a current kit; it rebuilds one of an older format)
    res = subprocess.run(["bash", str(SCRIPTS / "build-kit.sh"), str(path)], capture_output=True, text=True,
                         timeout=timeout)
    if res.returncode != 0:
        raise VmError(f"building the VM kit in {path} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    kernel = (path / "kernel.version").read_text().strip()
    return Kit(path, kernel, time.monotonic() - t0)


def run_script(kit: Kit, workdir: pathlib.Path, script: str, *, timeout: float = 240, mem_mb: int = 1024,
               cpus: int = 2, modules: tuple[str, ...] = ()) -> VmRun:
    """Boot the VM, run `sh ./script` in `workdir` inside it, power off. rc 125: the guest never ran it."""
    workdir = pathlib.Path(workdir).resolve()
    if not (workdir / script).is_file():
        raise VmError(f"no {workdir / script}")
    if any(c.isspace() for c in str(workdir) + script):
        raise VmError("the work dir and script name travel on the kernel command line: no spaces")
    exit_file = workdir / ".vm-exit-code"
    exit_file.unlink(missing_ok=True)
    append = (f"console=ttyS0 quiet panic=-1 vtwork={workdir} vtscript={script} vtmoddir={kit.moddir} "
              f"vtmods={','.join(modules)}")
    cmd = [QEMU, "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", str(cpus), "-m", str(mem_mb),
           "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-net", "none", "-no-reboot",
           "-kernel", str(kit.path / "vmlinux"), "-initrd", str(kit.path / "initrd.gz"), "-append", append,
           "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
           "-virtfs", f"local,path={workdir},mount_tag=work,security_model=none,multidevs=remap"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        raw, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raw, _ = proc.communicate()
        out = raw.decode(errors="replace")
        raise VmError(f"the VM did not finish in {timeout:.0f} s; console so far:\n{out[-4000:]}") from None
    seconds = time.monotonic() - t0
    out = raw.decode(errors="replace").replace("\r\n", "\n")
    rc = 125
    try:
        rc = int(exit_file.read_text().strip())
    except (OSError, ValueError):
        m = re.findall(r"VM-EXIT rc=(\d+)", out)
        if m:
            rc = int(m[-1])
    ready = re.search(r"VM-READY uptime=([\d.]+)", out)
    done = re.search(r"VM-EXIT rc=\d+ uptime=([\d.]+)", out)
    return VmRun(rc, out, seconds, float(ready.group(1)) if ready else None, float(done.group(1)) if done else None)
