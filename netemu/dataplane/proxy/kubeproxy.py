"""kube-proxy on every node of a lab: the loop the control process drives.

Each node has one backend of the lab's proxy mode (iptables/, nftables/, ipvs/: each renders the
node's view and applies it with the kernel tools through a Runner). A sync builds or refreshes the
node's view (only the Services that changed), lets the backend apply the difference, then deletes
stale UDP conntrack entries.

In a dual-stack lab each node runs one proxier per IP family, as kube-proxy's MetaProxier does: the
IPv6 one has its own view (the Services' IPv6 clusterIPs, IPv6 slices, the node's IPv6 address, the
lab's IPv6 pod CIDR) and its own backend (ip6tables-restore, table `ip6 kube-proxy`). IPVS mode
applies IPv4 only: its IPv6 half is rendered (`netemu render ipvs`) but not applied, since this
machine's kernel has no ip_vs and the throwaway VM where IPVS runs tests IPv4 only. An IPv4-only lab
has the IPv4 proxier alone, as before; an IPv6-only lab the IPv6 proxier alone (its node addresses and
pod CIDR are the Lab's primary fields; validation refuses IPVS there).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Optional

from netemu.dataplane.labnet import LabNet
from netemu.dataplane.proxy.addresses import IPV4
from netemu.dataplane.proxy.conntrack import stale_udp_conntrack
from netemu.dataplane.proxy.runner import NetnsRunner, Runner, RunError
from netemu.dataplane.proxy.view import NodeProxyView, build_view, refresh_view
from netemu.spec import families
from netemu.spec.models import Lab
from netemu.wellknown import SERVICE_NAME_LABEL

log = logging.getLogger("netemu.kubeproxy")

MODES = ("iptables", "nftables", "ipvs")


def backend_for(mode: str, lab: Lab, runner: Runner, ip_family: str = IPV4):
    """One node's backend of a proxy mode for one IP family (each mode's package is imported when a
    lab uses it)."""
    if mode == "iptables":
        from netemu.dataplane.proxy.iptables.apply import IptablesBackend as backend
    elif mode == "nftables":
        from netemu.dataplane.proxy.nftables.apply import NftablesBackend as backend
    elif mode == "ipvs":
        from netemu.dataplane.proxy.ipvs.apply import IpvsBackend as backend
    else:
        raise ValueError(f"proxy mode {mode} is not available (modes: {', '.join(MODES)})")
    if ip_family == IPV4:
        return backend(lab, runner)
    return backend(lab, runner, ip_family=ip_family)


def _dual_stack(spec) -> bool:
    # a test's stand-in spec may lack the IPv6 fields: IPv4 only
    return all(hasattr(spec, f) for f in ("network6", "pod_cidr6", "service_cidr6")) and families.dual_stack(spec)


def proxy_families(lab: Lab) -> list[str]:
    """The families kube-proxy syncs in this lab: both in a dual-stack lab (IPVS: IPv4 only, see
    the module's notes), IPv6 in an IPv6-only lab, IPv4 otherwise."""
    if families.ipv6_only(lab.spec):
        return [families.IPV6]
    if not _dual_stack(lab.spec) or lab.spec.proxy_mode == "ipvs":
        return [IPV4]
    return families.lab_families(lab.spec)


@dataclass
class FamilyProxier:
    """One IP family's kube-proxy on a node: its node address, pod CIDR, backend and last view."""

    family: str
    ip: Optional[str]
    cluster_cidr: Optional[str]
    backend: object
    view: Optional[NodeProxyView] = None


@dataclass
class NodeProxy:
    name: str
    netns: str
    proxiers: dict[str, FamilyProxier] = field(default_factory=dict)   # the primary family first
    last_sync: float = 0.0
    last_payload_lines: int = 0
    syncs: int = 0
    failures: int = 0

    # the primary family's proxier's (IPv4's, IPv6's in an IPv6-only lab), as every mode's tools read them
    @property
    def primary(self) -> FamilyProxier:
        return next(iter(self.proxiers.values()))

    @property
    def ip(self) -> Optional[str]:
        return self.primary.ip

    @property
    def pod_cidr(self) -> Optional[str]:
        return self.primary.cluster_cidr

    @property
    def backend(self):
        return self.primary.backend

    @property
    def view(self) -> Optional[NodeProxyView]:
        return self.primary.view

    def proxier(self, family: str) -> Optional[FamilyProxier]:
        return self.proxiers.get(family)


class KubeProxy:
    def __init__(self, lab: Lab, net: LabNet, runner: Optional[Runner] = None):
        self.lab = lab
        self.net = net
        self.runner = runner or NetnsRunner()
        self.families = proxy_families(lab)
        if lab.spec.proxy_mode == "ipvs" and _dual_stack(lab.spec):
            log.warning("kube-proxy (ipvs): IPv6 Services get no IPVS rules (dual-stack IPVS is not built: "
                        "`netemu render ipvs` shows what they would be); IPv4 as usual")
        self.nodes = {n.name: self._node(n) for n in net.nodes.values()}
        self._seen_generation = -1
        self._dirty: Optional[set[str]] = None  # services changed since the last sync (None: all)

    def _node(self, n) -> NodeProxy:
        node = NodeProxy(n.name, self.net.node_netns(n.name))
        for fam in self.families:
            # kube-proxy's --cluster-cidr is the lab's pod CIDR of the family (kubeadm writes both)
            spec = self.lab.spec
            # (the primary family's are the primary fields: IPv6's in an IPv6-only lab)
            primary = fam == IPV4 or families.ipv6_only(spec)
            ip, cidr = (n.ip, spec.pod_cidr) if primary else (getattr(n, "ip6", None), spec.pod_cidr6)
            node.proxiers[fam] = FamilyProxier(fam, ip, cidr, backend_for(self.lab.spec.proxy_mode, self.lab,
                                                                          self.runner, fam))
        return node

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
        total, error = 0, None
        for fp in node.proxiers.values():
            try:
                total += self._sync_family(node, fp, services, slices, changed, t0)
            except Exception as e:  # the other family still syncs; the loop sees the first error
                error = error or e
        if error is not None:
            raise error
        node.syncs += 1
        node.last_payload_lines = total
        node.last_sync = time.time()

    def _sync_family(self, node: NodeProxy, fp: FamilyProxier, services, slices, changed, t0: float) -> int:
        prev = fp.view
        if prev is None or changed is None:
            view = build_view(services, slices, node_name=node.name, node_ips=[fp.ip] if fp.ip else [],
                              cluster_cidr=fp.cluster_cidr, ip_family=fp.family)
        else:
            view = refresh_view(prev, changed, services, slices)
        what = "" if fp.family == IPV4 else f" ({fp.family})"
        try:
            full, lines = fp.backend.apply(node.netns, view, changed)
        except Exception as e:
            node.failures += 1
            log.error("kube-proxy on %s%s: %s", node.name, what, e)
            raise
        fp.view = view
        if lines:
            # UDP flows to endpoints that went away would keep going there: clear them
            for d in stale_udp_conntrack(prev, view):
                try:
                    self.runner.run(node.netns, ["conntrack", *d.argv()])
                except RunError:
                    pass  # nothing to delete is an error for the conntrack tool
            log.info("kube-proxy (%s) %s: %s%s sync, %d lines, %.1f ms", fp.backend.mode, node.name,
                     "" if fp.family == IPV4 else f"{fp.family} ", "full" if full else "partial", lines,
                     (time.perf_counter() - t0) * 1000)
        return lines

    def rules(self, node: str, family: Optional[str] = None) -> str:
        """What the node's kube-proxy has loaded: one family's (family given), or every family's
        one after the other (IPv6 after a "# IPv6" line)."""
        n = self.nodes[node]
        if family is not None:
            fp = n.proxier(family)
            if fp is None:
                raise KeyError(f"{node} has no {family} kube-proxy in this lab")
            return fp.backend.rules(n.netns)
        parts = []
        for i, (fam, fp) in enumerate(n.proxiers.items()):
            text = fp.backend.rules(n.netns)
            parts.append(text if i == 0 else f"# {fam}\n{text}")
        return "".join(parts)

    def adopt(self) -> None:
        """After a restart of the control process: the nodes' rules are loaded already. Each backend
        reads what its node has, so that the first sync is a full one over it (stale service chains
        deleted, base jumps not added twice); IPVS observes its nodes at every first sync anyway."""
        for n in self.nodes.values():
            for fp in n.proxiers.values():
                adopt = getattr(fp.backend, "adopt", None)
                if adopt is None:
                    continue
                try:
                    adopt(n.netns)
                except (RunError, ValueError, KeyError, OSError) as e:  # a fresh start then: nothing loaded
                    what = "" if fp.family == IPV4 else f" ({fp.family})"
                    log.info("kube-proxy on %s%s: nothing to adopt (%s)", n.name, what, e)

    def close(self) -> None:
        pass
