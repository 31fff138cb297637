"""kube-proxy on every node: the thin layer that applies what `proxy/` renders.

One pass renders the node's whole view (cached per service port, so unchanged services cost
almost nothing), one `iptables-restore --noflush` inside the node's namespace applies it
atomically. After the first full sync only changed chains are sent (see proxy/iptables_sync).
"""
from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from dataclasses import dataclass
from typing import Optional

from netemu.control.endpoints import SERVICE_NAME_LABEL
from netemu.dataplane.labnet import LabNet
from netemu.dataplane.proxy.iptables import base_jump_rules, canary_chains
from netemu.dataplane.proxy.iptables_sync import IptablesSyncer
from netemu.dataplane.proxy.conntrack import stale_udp_conntrack
from netemu.dataplane.proxy.view import NodeProxyView, build_view, refresh_view
from netemu.spec.models import Lab

log = logging.getLogger("netemu.kubeproxy")



class ApplyError(RuntimeError):
    pass


def run_in_netns(netns: str, argv: list[str], stdin: Optional[str] = None, timeout: float = 120) -> str:
    """Run a tool inside a namespace (nsenter keeps it to one exec, unlike `ip netns exec`)."""
    res = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "--", *argv], input=stdin, capture_output=True,
                         text=True, timeout=timeout)
    if res.returncode != 0:
        raise ApplyError(f"{' '.join(argv)} in {netns}: {res.stderr.strip()}")
    return res.stdout


def base_payload() -> str:
    """What a fresh node needs before kube-proxy's first sync: the KUBE-* chains its built-in
    chains jump to, the jumps themselves, and the canary chains. kube-proxy prepends each jump
    with `iptables -I`, so the last one it ensures ends up first; on an empty chain that is the
    same as appending them in reverse."""
    tables: dict[str, dict] = {}
    for table, chain in canary_chains():
        tables.setdefault(table, {"chains": [], "rules": []})["chains"].append(chain)
    for rule in reversed(base_jump_rules()):
        t = tables.setdefault(rule.table, {"chains": [], "rules": []})
        if rule.target not in t["chains"]:
            t["chains"].append(rule.target)
        t["rules"].append("-A " + rule.chain + " " + " ".join(_quote(a) for a in rule.args))
    out = []
    for table in ("mangle", "filter", "nat"):
        if table not in tables:
            continue
        out.append(f"*{table}")
        out += [f":{c} - [0:0]" for c in tables[table]["chains"]]
        out += tables[table]["rules"]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def _quote(arg: str) -> str:
    return f'"{arg}"' if (" " in arg or not arg) else arg


class IptablesBackend:
    """kube-proxy's iptables mode on one node: iptables-restore --noflush of what changed."""

    mode = "iptables"

    def __init__(self, lab: Lab):
        backend = lab.spec.iptables_backend
        self.restore_cmd = f"iptables-{backend}-restore"
        self.save_cmd = f"iptables-{backend}-save"
        self.syncer = IptablesSyncer()
        self.initialized = False

    def apply(self, netns: str, view: NodeProxyView, changed) -> tuple[bool, int]:
        """Returns (full sync?, payload lines); raises ApplyError."""
        res = self.syncer.sync(view, changed=changed)
        if res.empty and self.initialized:
            return False, 0
        # a fresh node gets the base chains and jumps in the same restore (one process)
        payload = res.payload if self.initialized else base_payload() + res.payload
        try:
            run_in_netns(netns, [self.restore_cmd, "--noflush", "-w"], payload)
        except ApplyError:
            self.syncer.failed()
            raise
        self.initialized = True
        return res.full, payload.count("\n")

    def rules(self, netns: str) -> str:
        return run_in_netns(netns, [self.save_cmd])


class NftablesBackend:
    """kube-proxy's nftables mode on one node: `nft -f` transactions (the fast equivalent form,
    see proxy/nftables.py), stale chains removed first in their own transaction."""

    mode = "nftables"

    def __init__(self, lab: Lab):
        from netemu.dataplane.proxy.nftables import NftSettings
        from netemu.dataplane.proxy.nftables_sync import NftSyncer

        self.syncer = NftSyncer("fast", NftSettings(service_cidrs=(lab.spec.service_cidr,)))
        self.syncer.reset(fresh=True)

    def apply(self, netns: str, view: NodeProxyView, changed) -> tuple[bool, int]:
        res = self.syncer.sync(view, changed=changed)
        try:
            if res.cleanup:
                try:
                    run_in_netns(netns, ["nft", "-f", "-"], res.cleanup)
                except ApplyError:
                    self.syncer.cleanup_failed()
            if res.payload:
                run_in_netns(netns, ["nft", "-f", "-"], res.payload)
        except ApplyError:
            self.syncer.failed()
            raise
        return res.full, res.payload.count("\n")

    def rules(self, netns: str) -> str:
        return run_in_netns(netns, ["nft", "list", "table", "ip", "kube-proxy"])


def _ipvs_backend(lab: Lab):
    from netemu.dataplane.ipvsapply import IpvsBackend

    return IpvsBackend(lab)


BACKENDS = {"iptables": IptablesBackend, "nftables": NftablesBackend, "ipvs": _ipvs_backend}


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
    def __init__(self, lab: Lab, net: LabNet):
        self.lab = lab
        self.net = net
        mode = lab.spec.proxy_mode
        if mode not in BACKENDS:
            raise ValueError(f"proxy mode {mode} is not available (modes: {', '.join(BACKENDS)})")
        self.nodes = {n.name: NodeProxy(n.name, n.ip, net.node_netns(n.name), lab.spec.pod_cidr, BACKENDS[mode](lab))
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
            names = {tuple(k.split("/", 1)) for k in changed}
            slices = [s for s in store.list("EndpointSlice")
                      if (s.metadata.namespace, (s.metadata.labels or {}).get(SERVICE_NAME_LABEL)) in names]
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
                    run_in_netns(node.netns, ["conntrack", *d.argv()])
                except ApplyError:
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

    def close(self) -> None:
        pass
