"""kube-proxy on every node of a lab: the loop the control process drives.

Each node has one backend of the lab's proxy mode (iptables/, nftables/, ipvs/: each renders the
node's view and applies it with the kernel tools through a Runner). A sync builds or refreshes the
node's view (only the Services that changed), lets the backend apply the difference, then deletes
stale UDP conntrack entries.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Optional

from netemu.dataplane.labnet import LabNet
from netemu.dataplane.proxy.conntrack import stale_udp_conntrack
from netemu.dataplane.proxy.runner import NetnsRunner, Runner, RunError
from netemu.dataplane.proxy.view import NodeProxyView, build_view, refresh_view
from netemu.spec.models import Lab
from netemu.wellknown import SERVICE_NAME_LABEL

log = logging.getLogger("netemu.kubeproxy")

MODES = ("iptables", "nftables", "ipvs")


def backend_for(mode: str, lab: Lab, runner: Runner):
    """One node's backend of a proxy mode (each mode's package is imported when a lab uses it)."""
    if mode == "iptables":
        from netemu.dataplane.proxy.iptables.apply import IptablesBackend as backend
    elif mode == "nftables":
        from netemu.dataplane.proxy.nftables.apply import NftablesBackend as backend
    elif mode == "ipvs":
        from netemu.dataplane.proxy.ipvs.apply import IpvsBackend as backend
    else:
        raise ValueError(f"proxy mode {mode} is not available (modes: {', '.join(MODES)})")
    return backend(lab, runner)


@dataclass
class NodeProxy:
    name: str
    ip: str
    netns: str
    pod_cidr: str
    backend: object
    view: Optional[NodeProxyView] = None
    last_sync: float = 0.0
    last_payload_lines: int = 0
    syncs: int = 0
    failures: int = 0


class KubeProxy:
    def __init__(self, lab: Lab, net: LabNet, runner: Optional[Runner] = None):
        self.lab = lab
        self.net = net
        self.runner = runner or NetnsRunner()
        self.nodes = {n.name: NodeProxy(n.name, n.ip, net.node_netns(n.name), lab.spec.pod_cidr,
                                        backend_for(lab.spec.proxy_mode, lab, self.runner))
                      for n in net.nodes.values()}
        self._seen_generation = -1
        self._dirty: Optional[set[str]] = None  # services changed since the last sync (None: all)

    def note_change(self, kind: str, event: str, obj) -> None:
        """Store listener: remember which Services the next sync must look at again."""
        if kind == "Service":
            name = f"{obj.metadata.namespace}/{obj.metadata.name}"
        elif kind == "EndpointSlice":
            svc = (obj.metadata.labels or {}).get(SERVICE_NAME_LABEL)
            if not svc:
                return
            name = f"{obj.metadata.namespace}/{svc}"
        elif kind == "Node":
            self._dirty = None
            return
        else:
            return
        if self._dirty is not None:
            self._dirty.add(name)

    async def sync(self, store) -> None:
        gen = store.generation["Service"] + store.generation["EndpointSlice"]
        if gen == self._seen_generation and all(n.syncs for n in self.nodes.values()):
            await self._housekeeping()
            return
        self._seen_generation = gen
        changed, self._dirty = self._dirty, set()
        if changed is None:
            services, slices = store.list("Service"), store.list("EndpointSlice")
        else:  # only the changed Services' objects: refreshing costs O(changed), not O(all)
            services = [svc for key in changed if (svc := store.find("Service", *key.split("/", 1))) is not None]
            slices = [s for ns, name in sorted({tuple(k.split("/", 1)) for k in changed})
                      for s in store.select("EndpointSlice", ns, {SERVICE_NAME_LABEL: name})]
        await asyncio.gather(*(asyncio.to_thread(self._sync_node, n, services, slices, changed)
                               for n in self.nodes.values()))

    async def _housekeeping(self) -> None:
        """IPVS mode: delete weight-0 real servers whose connections are gone (rate-limited to once a
        minute by the backend, like kube-proxy's graceful-termination manager)."""
        for n in self.nodes.values():
            reap = getattr(n.backend, "reap", None)
            if reap is None:
                continue
            try:
                await asyncio.to_thread(reap, n.netns)
            except Exception as e:  # the next sync observes the node again
                log.warning("kube-proxy (ipvs) %s: %s", n.name, e)

    def _sync_node(self, node: NodeProxy, services, slices, changed) -> None:
        t0 = time.perf_counter()
        prev = node.view
        if prev is None or changed is None:
            view = build_view(services, slices, node_name=node.name, node_ips=[node.ip],
                              cluster_cidr=node.pod_cidr)
        else:
            view = refresh_view(prev, changed, services, slices)
        try:
            full, lines = node.backend.apply(node.netns, view, changed)
        except Exception as e:
            node.failures += 1
            log.error("kube-proxy on %s: %s", node.name, e)
            raise
        node.view = view
        if lines:
            # UDP flows to endpoints that went away would keep going there: clear them
            for d in stale_udp_conntrack(prev, view):
                try:
                    self.runner.run(node.netns, ["conntrack", *d.argv()])
                except RunError:
                    pass  # nothing to delete is an error for the conntrack tool
        node.syncs += 1
        node.last_payload_lines = lines
        node.last_sync = time.time()
        if lines:
            log.info("kube-proxy (%s) %s: %s sync, %d lines, %.1f ms", node.backend.mode, node.name,
                     "full" if full else "partial", lines, (time.perf_counter() - t0) * 1000)

    def rules(self, node: str) -> str:
        n = self.nodes[node]
        return n.backend.rules(n.netns)

    def adopt(self) -> None:
        """After a restart of the control process: the nodes' rules are loaded already. Each backend
        reads what its node has, so that the first sync is a full one over it (stale service chains
        deleted, base jumps not added twice); IPVS observes its nodes at every first sync anyway."""
        for n in self.nodes.values():
            adopt = getattr(n.backend, "adopt", None)
            if adopt is None:
                continue
            try:
                adopt(n.netns)
            except (RunError, ValueError, KeyError, OSError) as e:  # a fresh start then: nothing loaded
                log.info("kube-proxy on %s: nothing to adopt (%s)", n.name, e)

    def close(self) -> None:
        pass
