"""kube-proxy's nftables mode on one node: `nft -f` transactions (the fast equivalent form, see
render.py), stale chains removed first in their own transaction (sync.NftSyncer). One backend per IP
family: the IPv4 view is table `ip kube-proxy`, the IPv6 view table `ip6 kube-proxy` beside it."""
from __future__ import annotations

import json
from typing import Optional

from netemu.dataplane.proxy.addresses import IPV4
from netemu.dataplane.proxy.nftables.render import TABLE, NftSettings
from netemu.dataplane.proxy.nftables.sync import NftSyncer
from netemu.dataplane.proxy.runner import NetnsRunner, Runner, RunError
from netemu.dataplane.proxy.view import NodeProxyView

LOAD = ("nft", "-f", "-")


class NftablesBackend:
    mode = "nftables"

    def __init__(self, lab, runner: Optional[Runner] = None, ip_family: str = IPV4):
        self.runner = runner or NetnsRunner()
        self.ip_family = ip_family
        self.family = "ip" if ip_family == IPV4 else "ip6"   # the table's nftables family
        from netemu.spec.families import family_value

        # the lab's service range of this family (an IPv6-only lab's is its serviceCIDR)
        cidr = lab.spec.service_cidr if ip_family == IPV4 else family_value(lab.spec, "service_cidr", ip_family)
        self.syncer = NftSyncer("fast", NftSettings(service_cidrs=(cidr,) if cidr else ()))
        self.syncer.reset(fresh=True)

    def apply(self, netns: str, view: NodeProxyView, changed) -> tuple[bool, int]:
        """Returns (full sync?, payload lines); raises RunError."""
        res = self.syncer.sync(view, changed=changed)
        try:
            if res.cleanup:
                try:
                    self.runner.run(netns, LOAD, res.cleanup)
                except RunError:
                    self.syncer.cleanup_failed()
            if res.payload:
                self.runner.run(netns, LOAD, res.payload)
        except RunError:
            self.syncer.failed()
            raise
        return res.full, res.payload.count("\n")

    def adopt(self, netns: str) -> None:
        """The node's table survived a restart of the control process: the next (full) sync
        flushes it over what is there and later deletes stale chains and sets."""
        out = self.runner.run(netns, ["nft", "-j", "list", "table", self.family, TABLE])
        items = json.loads(out).get("nftables", [])
        chains = [i["chain"]["name"] for i in items if "chain" in i]
        sets = [i["set"]["name"] for i in items if "set" in i]
        self.syncer.reset(chains, sets, fresh=False)

    def rules(self, netns: str) -> str:
        return self.runner.run(netns, ["nft", "list", "table", self.family, TABLE])
