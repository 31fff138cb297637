"""kube-proxy's iptables mode on one node: `iptables-restore --noflush` of what changed.

The first sync of a node sends the base chains and jumps (render.base_payload) with the full
payload, in one restore; later syncs send only the chains that changed (sync.IptablesSyncer).
One backend per IP family: an IPv6 view goes through ip6tables-restore, of the same backend
(nft or legacy) as the IPv4 one, and with the same partial syncs (a full resync through
iptables-nft is the slow path, whichever the family).
"""
from __future__ import annotations

from typing import Optional

from netemu.dataplane.proxy.addresses import IPV4
from netemu.dataplane.proxy.iptables.render import base_payload
from netemu.dataplane.proxy.iptables.sync import IptablesSyncer
from netemu.dataplane.proxy.runner import NetnsRunner, Runner, RunError
from netemu.dataplane.proxy.view import NodeProxyView


class IptablesBackend:
    mode = "iptables"

    def __init__(self, lab, runner: Optional[Runner] = None, ip_family: str = IPV4):
        backend = lab.spec.iptables_backend
        tool = "iptables" if ip_family == IPV4 else "ip6tables"
        self.ip_family = ip_family
        self.restore_cmd = f"{tool}-{backend}-restore"
        self.save_cmd = f"{tool}-{backend}-save"
        self.runner = runner or NetnsRunner()
        self.syncer = IptablesSyncer()
        self.initialized = False

    def apply(self, netns: str, view: NodeProxyView, changed) -> tuple[bool, int]:
        """Returns (full sync?, payload lines); raises RunError."""
        res = self.syncer.sync(view, changed=changed)
        if res.empty and self.initialized:
            return False, 0
        # a fresh node gets the base chains and jumps in the same restore (one process)
        payload = res.payload if self.initialized else base_payload() + res.payload
        try:
            self.runner.run(netns, [self.restore_cmd, "--noflush", "-w"], payload)
        except RunError:
            self.syncer.failed()
            raise
        self.initialized = True
        return res.full, payload.count("\n")

    def adopt(self, netns: str) -> None:
        """The node's rules survived a restart of the control process: the next (full) sync
        rewrites them over what is there, deleting stale service chains, without the base jumps."""
        existing: dict[str, set] = {"filter": set(), "nat": set()}
        for table in existing:
            out = self.runner.run(netns, [self.save_cmd, "-t", table])
            existing[table] = {line[1:].split()[0] for line in out.splitlines() if line.startswith(":")}
        if "KUBE-SERVICES" in existing["nat"]:
            self.syncer.reset(existing)
            self.initialized = True

    def rules(self, netns: str) -> str:
        return self.runner.run(netns, [self.save_cmd])
