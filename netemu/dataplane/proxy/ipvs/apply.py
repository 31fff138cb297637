"""kube-proxy's IPVS mode on a node: run what sync.py plans, inside the node's namespace.

Per sync: `ip -batch` (kube-ipvs0 and its addresses), `ipset -exist restore` (set members added and
deleted), `ipvsadm -R` (virtual and real servers added, edited, gracefully weighted to 0),
`sysctl` (first sync), `iptables-restore --noflush` (kube-proxy's few chains, when they change),
then the addresses and virtual servers nobody wants any more. The first sync of a node observes
the kernel (ipvsadm-save, ipset save, kube-ipvs0's addresses, iptables-save) and diffs against it,
as kube-proxy does on every sync; later syncs diff against the last applied state.

Whether this kernel can run IPVS at all is kernel.py's question.
"""
from __future__ import annotations

import os
import time
from typing import Optional

from netemu.dataplane.proxy.ipvs.render import DUMMY_DEVICE, IpvsSettings
from netemu.dataplane.proxy.ipvs.sync import IpvsState, IpvsSyncer, Step, SyncPlan, parse_ipvsadm_list
from netemu.dataplane.proxy.runner import NetnsRunner, Runner, RunError
from netemu.dataplane.proxy.view import NodeProxyView

REAP_INTERVAL = 60.0   # rsCheckDeleteInterval: how often weight-0 real servers are checked for connections


def run_step(runner: Runner, netns: str, step: Step) -> str:
    return runner.run(netns, step.argv, step.stdin)


def run_plan(runner: Runner, netns: str, plan: SyncPlan) -> None:
    for step in plan.steps:
        run_step(runner, netns, step)


def local_addresses(runner: Runner, netns: str) -> tuple[str, ...]:
    """The node's addresses outside kube-ipvs0 (NodePort virtual servers go on each of them)."""
    out = runner.run(netns, ["ip", "-o", "address", "show"])
    addrs = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[1] == DUMMY_DEVICE or parts[2] not in ("inet", "inet6"):
            continue
        addrs.append(parts[3].split("/")[0])
    return tuple(addrs)


def observe(runner: Runner, netns: str, iptables_save: str = "iptables-save") -> IpvsState:
    """What the node has now, as kube-proxy reads it at the start of a sync."""
    ipvs = runner.run(netns, ["ipvsadm-save", "-n"])
    try:
        out = runner.run(netns, ["ip", "-o", "address", "show", "dev", DUMMY_DEVICE])
        addrs = [line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3]
    except RunError:
        addrs = None  # no kube-ipvs0
    sets = runner.run(netns, ["ipset", "save"])
    ipt = runner.run(netns, [iptables_save])
    return IpvsState.parse(ipvs, addrs, sets, ipt)


def rules_text(runner: Runner, netns: str, iptables_save: str = "iptables-save") -> str:
    """`netemu rules` for an IPVS node: IPVS table, kube-ipvs0, kube-proxy's sets, iptables."""
    parts = [("ipvsadm-save -n", ["ipvsadm-save", "-n"]),
             (f"ip address show {DUMMY_DEVICE}", ["ip", "address", "show", DUMMY_DEVICE]),
             ("ipset save", ["ipset", "save"]),
             (iptables_save, [iptables_save])]
    out = []
    for title, argv in parts:
        try:
            text = runner.run(netns, argv)
        except RunError as e:
            text = f"# {e}\n"
        out.append(f"# {title}\n{text}")
    return "".join(out)


class IpvsBackend:
    """kube-proxy's IPVS mode on one node."""

    mode = "ipvs"

    def __init__(self, lab, runner: Optional[Runner] = None):
        backend = getattr(lab.spec, "iptables_backend", "nft")
        self.iptables_restore = f"iptables-{backend}-restore"
        self.iptables_save = f"iptables-{backend}-save"
        self.runner = runner or NetnsRunner()
        settings = IpvsSettings(scheduler=getattr(lab.spec, "ipvs_scheduler", None) or "rr")
        self.syncer = IpvsSyncer(settings, iptables_restore=self.iptables_restore, kernel_release=os.uname().release)
        self._addresses_known = False
        self._last_reap = 0.0

    def apply(self, netns: str, view: NodeProxyView, changed) -> tuple[bool, int]:
        """Returns (full sync?, lines of commands sent); raises RunError."""
        if not self._addresses_known or changed is None:
            self.syncer.set_node_addresses(local_addresses(self.runner, netns))
            self._addresses_known = True
        observed = observe(self.runner, netns, self.iptables_save) if self.syncer.state is None else None
        plan = self.syncer.sync(view, observed)
        try:
            run_plan(self.runner, netns, plan)
        except RunError:
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
        conns = parse_ipvsadm_list(self.runner.run(netns, ["ipvsadm", "-L", "-n"]))
        step = self.syncer.reap(conns)
        if step is None:
            return 0
        try:
            run_step(self.runner, netns, step)
        except RunError:
            self.syncer.failed()
            raise
        return step.lines

    def rules(self, netns: str) -> str:
        return rules_text(self.runner, netns, self.iptables_save)
