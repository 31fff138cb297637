"""kube-proxy's IPVS mode on a node: run what proxy/ipvs_sync plans, inside the node's namespace.

Per sync: `ip -batch` (kube-ipvs0 and its addresses), `ipset -exist restore` (set members added and
deleted), `ipvsadm -R` (virtual and real servers added, edited, gracefully weighted to 0),
`sysctl` (first sync), `iptables-restore --noflush` (kube-proxy's few chains, when they change),
then the addresses and virtual servers nobody wants any more. The first sync of a node observes
the kernel (ipvsadm-save, ipset save, kube-ipvs0's addresses, iptables-save) and diffs against it,
as kube-proxy does on every sync; later syncs diff against the last applied state.

IPVS needs the kernel's ip_vs (and ip_set, dummy links): ipvs_available() / unavailable_message()
tell `netemu up` at once when this kernel cannot do it.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import subprocess
import time
from typing import Optional

from netemu.dataplane.proxy.ipvs import DUMMY_DEVICE, IpvsSettings
from netemu.dataplane.proxy.ipvs_sync import (
    IpvsState,
    IpvsSyncer,
    Step,
    SyncPlan,
    parse_ipvsadm_list,
)
from netemu.dataplane.proxy.view import NodeProxyView

log = logging.getLogger("netemu.kubeproxy.ipvs")

WORKING_MODES_WITHOUT_IPVS = ("iptables", "nftables")
REAP_INTERVAL = 60.0   # rsCheckDeleteInterval: how often weight-0 real servers are checked for connections


class IpvsApplyError(RuntimeError):
    pass


# --------------------------------------------------------------------------- kernel support
def _genl_family_exists(name: str) -> Optional[bool]:
    """Ask generic netlink for a family (CTRL_CMD_GETFAMILY). A modular kernel autoloads the module
    that provides it (ip_vs has MODULE_ALIAS_GENL_FAMILY("IPVS")). None: could not ask."""
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)  # NETLINK_GENERIC
    except OSError:
        return None
    try:
        s.settimeout(2)
        s.bind((0, 0))
        raw = name.encode() + b"\0"
        attr = struct.pack("=HH", 4 + len(raw), 2) + raw       # CTRL_ATTR_FAMILY_NAME
        attr += b"\0" * (-len(attr) % 4)
        genl = struct.pack("=BBH", 3, 1, 0)                    # CTRL_CMD_GETFAMILY, version 1
        body = genl + attr
        s.send(struct.pack("=IHHII", 16 + len(body), 0x10, 1, 1, 0) + body)  # GENL_ID_CTRL, NLM_F_REQUEST
        data = s.recv(65536)
        if len(data) < 16:
            return None
        _, mtype, _, _, _ = struct.unpack("=IHHII", data[:16])
        if mtype == 2:  # NLMSG_ERROR
            (err,) = struct.unpack("=i", data[16:20])
            if err == 0:
                return True
            return False if -err == errno.ENOENT else None
        return mtype == 0x10
    except OSError:
        return None
    finally:
        s.close()


def _module_known(name: str) -> bool:
    """Loaded, built in, or loadable (in modules.dep) on the running kernel."""
    if os.path.isdir(f"/sys/module/{name}"):
        return True
    base = f"/lib/modules/{os.uname().release}"
    for fname in ("modules.builtin", "modules.dep"):
        try:
            with open(os.path.join(base, fname)) as f:
                if any(line.split(":", 1)[0].endswith(f"/{name}.ko") or f"/{name}.ko." in line.split(":", 1)[0]
                       for line in f):
                    return True
        except OSError:
            continue
    return False


def ipvs_available() -> bool:
    """Can this kernel run IPVS virtual servers? (/proc/net/ip_vs, or the IPVS generic-netlink
    family, which loads ip_vs where it is a module.)"""
    if os.path.exists("/proc/net/ip_vs"):
        return True
    found = _genl_family_exists("IPVS")
    if found:
        return True
    return found is None and _module_known("ip_vs")


def ipvs_problems() -> list[str]:
    """What this kernel lacks for kube-proxy's IPVS mode (empty: nothing)."""
    out = []
    if not ipvs_available():
        out.append("no IP Virtual Server (ip_vs): /proc/net/ip_vs is missing and the IPVS netlink family "
                   "cannot be loaded")
    if not (os.path.exists("/proc/net/ip_set") or os.path.isdir("/sys/module/ip_set") or _module_known("ip_set")):
        out.append("no IP sets (ip_set)")
    if not (os.path.isdir("/sys/module/dummy") or _module_known("dummy")):
        out.append("no dummy links (kube-ipvs0)")
    return out


def unavailable_message(problems: Optional[list[str]] = None) -> Optional[str]:
    """None when IPVS mode can run here, else the error `netemu up` prints."""
    problems = ipvs_problems() if problems is None else problems
    if not problems:
        return None
    return (f"proxy mode ipvs cannot run on this kernel ({os.uname().release}): " + "; ".join(problems)
            + ". Modes that work here: " + ", ".join(WORKING_MODES_WITHOUT_IPVS)
            + " (spec.proxyMode in the Lab document, or `netemu up --proxy-mode iptables`). "
            "IPVS mode is tested in a throwaway VM instead: tests/e2e/test_ipvs_vm.py and test_ipvs_vm_lab.py")


# --------------------------------------------------------------------------- running plans
def run_in_netns(netns: str, argv, stdin: Optional[str] = None, timeout: float = 120) -> str:
    res = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "--", *argv], input=stdin,
                         capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise IpvsApplyError(f"{' '.join(argv)} in {netns}: {(res.stderr or res.stdout).strip()}")
    return res.stdout


def run_step(netns: str, step: Step) -> str:
    return run_in_netns(netns, list(step.argv), step.stdin)


def run_plan(netns: str, plan: SyncPlan) -> None:
    for step in plan.steps:
        run_step(netns, step)


def local_addresses(netns: str) -> tuple[str, ...]:
    """The node's addresses outside kube-ipvs0 (NodePort virtual servers go on each of them)."""
    out = run_in_netns(netns, ["ip", "-o", "address", "show"])
    addrs = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[1] == DUMMY_DEVICE or parts[2] not in ("inet", "inet6"):
            continue
        addrs.append(parts[3].split("/")[0])
    return tuple(addrs)


def observe(netns: str, iptables_save: str = "iptables-save") -> IpvsState:
    """What the node has now, as kube-proxy reads it at the start of a sync."""
    ipvs = run_in_netns(netns, ["ipvsadm-save", "-n"])
    try:
        out = run_in_netns(netns, ["ip", "-o", "address", "show", "dev", DUMMY_DEVICE])
        addrs = [line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3]
    except IpvsApplyError:
        addrs = None  # no kube-ipvs0
    sets = run_in_netns(netns, ["ipset", "save"])
    ipt = run_in_netns(netns, [iptables_save])
    return IpvsState.parse(ipvs, addrs, sets, ipt)


def rules_text(netns: str, iptables_save: str = "iptables-save") -> str:
    """`netemu rules` for an IPVS node: IPVS table, kube-ipvs0, kube-proxy's sets, iptables."""
    parts = [("ipvsadm-save -n", ["ipvsadm-save", "-n"]),
             (f"ip address show {DUMMY_DEVICE}", ["ip", "address", "show", DUMMY_DEVICE]),
             ("ipset save", ["ipset", "save"]),
             (iptables_save, [iptables_save])]
    out = []
    for title, argv in parts:
        try:
            text = run_in_netns(netns, argv)
        except IpvsApplyError as e:
            text = f"# {e}\n"
        out.append(f"# {title}\n{text}")
    return "".join(out)


# --------------------------------------------------------------------------- KubeProxy backend
class IpvsBackend:
    """kube-proxy's IPVS mode on one node (the BACKENDS["ipvs"] of netemu.dataplane.kubeproxy)."""

    mode = "ipvs"

    def __init__(self, lab):
        backend = getattr(lab.spec, "iptables_backend", "nft")
        self.iptables_restore = f"iptables-{backend}-restore"
        self.iptables_save = f"iptables-{backend}-save"
        settings = IpvsSettings(scheduler=getattr(lab.spec, "ipvs_scheduler", None) or "rr")
        self.syncer = IpvsSyncer(settings, iptables_restore=self.iptables_restore, kernel_release=os.uname().release)
        self._addresses_known = False
        self._last_reap = 0.0

    def apply(self, netns: str, view: NodeProxyView, changed) -> tuple[bool, int]:
        """Returns (full sync?, lines of commands sent); raises IpvsApplyError."""
        if not self._addresses_known or changed is None:
            self.syncer.set_node_addresses(local_addresses(netns))
            self._addresses_known = True
        observed = observe(netns, self.iptables_save) if self.syncer.state is None else None
        plan = self.syncer.sync(view, observed)
        try:
            run_plan(netns, plan)
        except IpvsApplyError:
            self.syncer.failed()
            raise
        self.syncer.committed()
        lines = plan.lines
        if self.syncer.graceful:
            lines += self.reap(netns, force=True)
        return plan.full, lines

    def reap(self, netns: str, force: bool = False) -> int:
        """Delete weight-0 real servers whose connections are gone (kube-proxy checks every minute)."""
        now = time.monotonic()
        if not self.syncer.graceful or (not force and now - self._last_reap < REAP_INTERVAL):
            return 0
        self._last_reap = now
        conns = parse_ipvsadm_list(run_in_netns(netns, ["ipvsadm", "-L", "-n"]))
        step = self.syncer.reap(conns)
        if step is None:
            return 0
        try:
            run_step(netns, step)
        except IpvsApplyError:
            self.syncer.failed()
            raise
        return step.lines

    def rules(self, netns: str) -> str:
        return rules_text(netns, self.iptables_save)
