"""Successive iptables-restore payloads for one node: full syncs, then partial ones.

A full `iptables-restore --noflush` of a big ruleset through iptables-nft is superlinear
(kernel.md: 127 s at 10,000 services, against 4 s for a first load), so after the first sync
only changes are sent. Two strategies:

- "minimal" (default): the payload declares and refills only the chains whose content changed,
  declares new chains, and flushes + deletes ("-X") service chains that disappeared. Top-level
  chains (KUBE-SERVICES, KUBE-NODEPORTS, filter chains...) are written only when their content
  changed, and tables with nothing to write are left out; no change means an empty payload.
  One endpoint change in a 10,000-service ruleset therefore sends a KUBE-SVC chain and one or two
  KUBE-SEP chains, not the 10,000-line KUBE-SERVICES.
- "kube-proxy" (kube_proxy_compatible=True): exactly what kube-proxy's partial sync writes: every
  top-level chain of both tables, in full, every time, plus all chains of the Services whose
  Service or endpoints changed, plus "-X" for service chains no longer used.

Both keep the per-port render cache of IptablesRenderer, so rendering after one change costs
O(changed Services) (plus assembling whichever top-level chains must be written). A payload is
assumed applied; call failed() when iptables-restore rejects it and the next sync is full, as
kube-proxy does. Differences from kube-proxy that remain in "kube-proxy" mode: stale chains are
computed from what this syncer wrote (kube-proxy reads iptables-save; pass the saved chains to
reset() to do the same), and large-cluster mode still deletes stale chains on every sync
(kube-proxy defers that to once per --iptables-sync-period).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Optional

from netemu.dataplane.proxy.iptables.chains import is_service_chain
from netemu.dataplane.proxy.iptables.render import (
    TABLES,
    IptablesRenderer,
    IptablesRuleset,
    RenderDelta,
    Table,
    chain_sort_key,
    format_table,
    merged_top,
    sorted_chains,
)
from netemu.dataplane.proxy.iptables.port import FILTER, NAT, RenderContext
from netemu.dataplane.proxy.view import NodeProxyView


@dataclass(frozen=True)
class SyncResult:
    payload: str                                   # iptables-restore --noflush input ("" = nothing to do)
    full: bool
    written: Mapping[str, tuple[str, ...]]         # table -> chains declared and refilled
    deleted: Mapping[str, tuple[str, ...]]         # table -> chains flushed and removed
    changed_services: tuple[str, ...] = ()         # "ns/name" whose input changed
    ruleset: Optional[IptablesRuleset] = field(default=None, repr=False)  # set on full syncs

    @property
    def empty(self) -> bool:
        return not self.payload


def _context_changed_beyond_size(delta: RenderDelta, now: Optional[RenderContext]) -> bool:
    prev = delta.previous_context
    return prev is not None and now is not None and replace(prev, large_cluster=now.large_cluster) != now


class IptablesSyncer:
    def __init__(self, *, kube_proxy_compatible: bool = False) -> None:
        self.kube_proxy_compatible = kube_proxy_compatible
        self.renderer = IptablesRenderer()
        self._need_full = True
        self._existing: dict[str, set[str]] = {FILTER: set(), NAT: set()}  # chains we believe exist
        self._top: dict[tuple[str, str], tuple[str, ...]] = {}             # top-level chains as written
        self._last_deleted: dict[str, tuple[str, ...]] = {}

    # ---------------------------------------------------------------- state
    def failed(self) -> None:
        """The last payload was not applied: the next sync rewrites everything (and still removes
        the chains the failed payload meant to remove)."""
        self._need_full = True
        for t, chains in self._last_deleted.items():
            self._existing[t].update(chains)

    def reset(self, existing: Optional[Mapping[str, Iterable[str]]] = None) -> None:
        """Forget what is loaded (the next sync is full). `existing`: chains present now per table
        (e.g. from iptables-save), so the full sync also removes stale service chains."""
        self._need_full = True
        self._existing = {t: set((existing or {}).get(t, ())) for t in TABLES}
        self._top.clear()

    # ---------------------------------------------------------------- syncing
    def sync(self, view: NodeProxyView, *, changed: Optional[Iterable[str]] = None,
             full: bool = False) -> SyncResult:
        """The payload that brings the node from the last synced view to `view`. `changed`: the
        Services ("ns/name") whose Service or EndpointSlices changed since the last sync; None
        compares every Service (fast for unchanged ones, which keep their identity)."""
        delta = self.renderer.update(view, changed)
        if full or self._need_full:
            return self._full(delta)
        if self.kube_proxy_compatible:
            if delta.node_changed or _context_changed_beyond_size(delta, self.renderer.context):
                # kube-proxy resyncs everything when node labels change (and restarts for flags)
                return self._full(delta)
            return self._kube_proxy_partial(delta)
        return self._minimal(delta)

    def _full(self, delta: RenderDelta) -> SyncResult:
        r = self.renderer
        stale = sorted(c for c in self._existing[NAT] if is_service_chain(c))
        rs = r.ruleset(deleted_nat=stale)
        self._existing = {FILTER: set(rs.filter.chains), NAT: set(rs.nat.chains)}
        self._top = {(t, c): rs.table(t).chains[c] for t in TABLES for c in r.top_chains(t)}
        self._need_full = False
        self._last_deleted = {NAT: rs.nat.deleted}
        return SyncResult(
            payload=rs.payload(),
            full=True,
            written={t: tuple(sorted_chains(rs.table(t).chains)) for t in TABLES},
            deleted={FILTER: (), NAT: rs.nat.deleted},
            changed_services=tuple(sorted(delta.inputs_changed)),
            ruleset=rs,
        )

    def _kube_proxy_partial(self, delta: RenderDelta) -> SyncResult:
        r = self.renderer
        tables = {t: {c: r.top_chain(t, c) for c in r.top_chains(t)} for t in TABLES}
        gone: set[str] = set()
        # Only Services whose input changed are rewritten: like kube-proxy, crossing the
        # large-cluster threshold leaves the other Services' chains as they were.
        for key in delta.inputs_changed:
            old, new = delta.services[key]
            new_own = {c: rules for pr in new for c, rules in pr.own}
            tables[NAT].update(new_own)
            gone.update(c for pr in old for c, _ in pr.own if c not in new_own)
        return self._finish(tables, {NAT: gone}, delta, always_both_tables=True)

    def _minimal(self, delta: RenderDelta) -> SyncResult:
        r = self.renderer
        tables: dict[str, dict[str, tuple[str, ...]]] = {FILTER: {}, NAT: {}}
        gone: set[str] = set()
        # top-level chains touched by a changed Service, or all of them if node-wide rules changed
        touched: set[tuple[str, str]] = set()
        if delta.context_changed or delta.node_changed:
            touched = {(t, c) for t in TABLES for c in r.top_chains(t)}
        for old, new in delta.services.values():
            old_top, new_top = merged_top(old), merged_top(new)
            touched.update(k for k in old_top.keys() | new_top.keys() if old_top.get(k) != new_top.get(k))
            old_own = {c: rules for pr in old for c, rules in pr.own}
            for pr in new:
                for c, rules in pr.own:
                    if old_own.pop(c, None) != rules:
                        tables[NAT][c] = rules
            gone.update(old_own)  # chains the Service no longer has
        for t, c in touched:
            if c not in r.top_chains(t):
                continue  # e.g. KUBE-FIREWALL once localhost NodePorts are off: left alone, as kube-proxy does
            content = r.top_chain(t, c)
            if self._top.get((t, c)) != content:
                tables[t][c] = content
        return self._finish(tables, {NAT: gone}, delta, always_both_tables=False)

    def _finish(self, tables: dict[str, dict[str, tuple[str, ...]]], gone: Mapping[str, set[str]],
                delta: RenderDelta, *, always_both_tables: bool) -> SyncResult:
        lines: list[str] = []
        deleted_by_table: dict[str, tuple[str, ...]] = {}
        for t in TABLES:
            chains = tables[t]
            # deleting an unknown chain is harmless: its declaration creates it first
            deleted = tuple(sorted(c for c in gone.get(t, ()) if c not in chains))
            deleted_by_table[t] = deleted
            if chains or deleted or always_both_tables:
                lines.extend(format_table(Table(t, chains, deleted)))
            self._existing[t].update(chains)
            self._existing[t].difference_update(deleted)
            top = self.renderer.top_chains(t)
            self._top.update(((t, c), content) for c, content in chains.items() if c in top)
        self._last_deleted = deleted_by_table
        return SyncResult(
            payload="\n".join(lines) + "\n" if lines else "",
            full=False,
            written={t: tuple(sorted(tables[t], key=chain_sort_key)) for t in TABLES},
            deleted=deleted_by_table,
            changed_services=tuple(sorted(delta.inputs_changed)),
        )
