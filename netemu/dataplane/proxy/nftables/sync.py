"""Successive `nft -f` transactions for one node: a full sync, then partial ones, as kube-proxy's
nftables mode does them.

kube-proxy's partial sync rewrites only the Services whose Service or endpoints changed: their
chains are re-created and flushed (`add chain` + `flush chain`) and refilled, their affinity sets
re-declared; map and set elements are kept in a shadow copy and only differences are sent (a
changed value is a `delete element` + `add element`, leftovers are deleted). Service chains no
longer used are flushed at once but deleted only by a later sync, a second after, in a separate
transaction: kernels before 6.2 notice late that a deleted map element no longer references a
chain. NftSyncer keeps the same shadow state, without asking the kernel.

form="kube-proxy": exactly kube-proxy's transactions (its operation counts are the ones
TestSyncProxyRulesRepeated pins down, stale chains are re-flushed at every sync).
form="fast" (default): the same objects in the fast rule form of render.py; full syncs send
all elements of a map in one command, and stale chains are flushed once.

Each sync returns `cleanup` (stale chain deletions: run it first, as its own transaction; if it
fails call cleanup_failed()) and `payload` (the sync itself; if it fails call failed(): the shadow
state is rolled back and the next sync is a full one).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional

from netemu.dataplane.proxy.nftables.render import (
    CONTAINERS,
    FAST,
    KUBE_PROXY,
    TABLE,
    Element,
    NftDelta,
    NftPort,
    NftRenderer,
    NftSettings,
    Tx,
    is_service_chain,
    merged_elements,
    setup_ops,
    write_ops,
)
from netemu.dataplane.proxy.view import NodeProxyView

STALE_CHAIN_DELAY = 1.0   # seconds between flushing a stale chain and deleting it
_MISSING = object()


@dataclass(frozen=True)
class NftSyncResult:
    payload: str                      # the sync: one `nft -f -` transaction ("" = nothing to do)
    cleanup: str                      # stale chains to delete first, in their own transaction
    full: bool
    operations: int                   # operations in payload, counted as kube-proxy counts them
    cleanup_operations: int
    changed_services: tuple[str, ...]
    stale_chains: tuple[str, ...]     # flushed by this payload, to be deleted by a later cleanup

    @property
    def empty(self) -> bool:
        return not self.payload and not self.cleanup


class NftSyncer:
    def __init__(self, form: str = FAST, settings: Optional[NftSettings] = None, *,
                 stale_chain_delay: float = STALE_CHAIN_DELAY) -> None:
        self.form = form
        self.renderer = NftRenderer(form, settings)
        self.stale_chain_delay = stale_chain_delay
        self._need_full = True
        self._first_sync = True          # kube-proxy re-creates its base chains once per process
        self._fresh = False              # the node is known to have no kube-proxy table
        # what the kernel holds, as far as we know
        self._chains: set[str] = set()                       # service and endpoint chains
        self._sets: set[str] = set()                         # affinity sets
        self._stale: dict[str, float] = {}                   # flushed, unused chain -> when
        self._elems: dict[str, dict[str, str]] = {c: {} for c in CONTAINERS}   # key -> value
        # what the rendered view wants
        self._want: dict[tuple[str, str], dict[str, Element]] = {}   # (container, key) -> service -> element
        self._active: Counter = Counter()                   # chain -> ports using it
        self._active_sets: Counter = Counter()
        self._journal: list[tuple] = []                     # undo log of the last payload
        self._cleanup_journal: list[str] = []
        self._last_full = False

    # ---------------------------------------------------------------- state
    def reset(self, existing_chains: Optional[Iterable[str]] = None, existing_sets: Optional[Iterable[str]] = None,
              *, fresh: bool = False) -> None:
        """Forget what is loaded; the next sync is a full one. existing_chains / existing_sets: the
        chains and sets of the kube-proxy table now (`nft -j list table`), so that the full sync
        flushes and later deletes stale service chains and deletes stale affinity sets.
        fresh: the node has no kube-proxy table at all (the full sync skips every flush)."""
        self._need_full = True
        self._fresh = fresh
        self._chains = {c for c in (existing_chains or ()) if is_service_chain(c)}
        self._sets = {s for s in (existing_sets or ()) if s.startswith("affinity-")}
        self._stale = {}
        self._elems = {c: {} for c in CONTAINERS}
        self._journal = []

    def failed(self) -> None:
        """The last payload was not applied (nft refused it): roll the shadow state back; the next
        sync is a full one."""
        for entry in reversed(self._journal):
            kind = entry[0]
            if kind == "chain":
                _, name, was = entry
                (self._chains.add if was else self._chains.discard)(name)
            elif kind == "set":
                _, name, was = entry
                (self._sets.add if was else self._sets.discard)(name)
            elif kind == "stale":
                _, name, was = entry
                if was is _MISSING:
                    self._stale.pop(name, None)
                else:
                    self._stale[name] = was
            elif kind == "elem":
                _, container, key, was = entry
                if was is _MISSING:
                    self._elems[container].pop(key, None)
                else:
                    self._elems[container][key] = was
            elif kind == "elems":
                self._elems = entry[1]
        self._journal = []
        self._need_full = True
        self._fresh = False

    def cleanup_failed(self, now: Optional[float] = None) -> None:
        """The last cleanup was not applied: its chains still exist; they stay stale."""
        now = time.monotonic() if now is None else now
        for c in self._cleanup_journal:
            self._chains.add(c)
            self._stale.setdefault(c, now)
        self._cleanup_journal = []

    def stale_chains(self) -> dict[str, float]:
        return dict(self._stale)

    # journaled changes of the shadow state
    def _chain_exists(self, name: str, present: bool) -> None:
        was = name in self._chains
        if was != present:
            self._journal.append(("chain", name, was))
            (self._chains.add if present else self._chains.discard)(name)

    def _set_exists(self, name: str, present: bool) -> None:
        was = name in self._sets
        if was != present:
            self._journal.append(("set", name, was))
            (self._sets.add if present else self._sets.discard)(name)

    def _chain_written(self, name: str) -> None:
        """A transaction (re)creates the chain: it exists, and is no longer stale."""
        self._chain_exists(name, True)
        if name in self._stale:
            self._mark_stale(name, None)

    def _set_declared(self, name: str) -> None:
        self._set_exists(name, True)

    def _mark_stale(self, name: str, when: Optional[float]) -> None:
        was = self._stale.get(name, _MISSING)
        self._journal.append(("stale", name, was))
        if when is None:
            self._stale.pop(name, None)
        else:
            self._stale[name] = when

    def _elem(self, container: str, key: str, value: Optional[str]) -> None:
        store = self._elems[container]
        self._journal.append(("elem", container, key, store.get(key, _MISSING)))
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value

    # ---------------------------------------------------------------- syncing
    def sync(self, view: NodeProxyView, changed: Optional[Iterable[str]] = None, *, full: bool = False,
             now: Optional[float] = None) -> NftSyncResult:
        """The transactions that bring the node from the last synced view to `view`. changed: the
        Services ("ns/name") whose Service or EndpointSlices changed since the last sync; None
        compares every Service (cheap for unchanged ones, which keep their identity). now: a
        monotonic clock reading (stale chains are deleted a second after they were flushed)."""
        now = time.monotonic() if now is None else now
        self._journal = []
        delta = self.renderer.update(view, changed)
        self._track_wanted(delta)
        cleanup, cleanup_ops = self._expire(now)
        if full or self._need_full or delta.context_changed:
            tx, stale = self._full(now)
        else:
            tx, stale = self._partial(delta, now)
        return NftSyncResult(
            payload=tx.text(), cleanup=cleanup, full=self._last_full,
            operations=tx.ops, cleanup_operations=cleanup_ops,
            changed_services=tuple(sorted(delta.inputs_changed)), stale_chains=tuple(stale))

    def _track_wanted(self, delta: NftDelta) -> None:
        """Keep the wanted elements and the chains and sets in use up to date with the renderer."""
        for key, (old, new) in delta.services.items():
            for p in old:
                for e in p.elements:
                    owners = self._want.get((e.container, e.key))
                    if owners is not None:
                        owners.pop(key, None)
                        if not owners:
                            del self._want[(e.container, e.key)]
                self._active.subtract(p.chains)
                self._active_sets.subtract(s for s, _ in p.sets)
            for p in new:
                for e in p.elements:
                    self._want.setdefault((e.container, e.key), {})[key] = e
                self._active.update(p.chains)
                self._active_sets.update(s for s, _ in p.sets)
        self._active = +self._active
        self._active_sets = +self._active_sets

    def _wanted(self, container: str, key: str) -> Optional[Element]:
        owners = self._want.get((container, key))
        if not owners:
            return None
        return owners[max(owners)] if len(owners) > 1 else next(iter(owners.values()))

    def _expire(self, now: float) -> tuple[str, int]:
        """Delete stale chains flushed more than the delay ago (a separate transaction)."""
        due = sorted(c for c, t in self._stale.items() if t < now - self.stale_chain_delay)
        self._cleanup_journal = due
        if not due:
            return "", 0
        ctx = self.renderer.context
        fam = ctx.family if ctx is not None else "ip"
        tx = Tx(fam)
        for c in due:
            tx.add(f"delete chain {fam} {TABLE} {c}")
            self._chains.discard(c)
            del self._stale[c]
        return tx.text(), tx.ops

    # full sync
    def _full(self, now: float) -> tuple[Tx, list[str]]:
        r = self.renderer
        ctx = r.context
        assert ctx is not None
        tx = Tx(ctx.family)
        fresh = self._fresh and not self._chains
        setup_ops(tx, ctx, first_sync=self._first_sync, fresh=fresh)
        self._first_sync = False
        self._journal.append(("elems", self._elems))
        self._elems = {c: {} for c in CONTAINERS}
        created: set[str] = set()
        ports = list(r.ports())
        write_ops(tx, ctx, ports, created, flush=not fresh, on_chain=self._chain_written,
                  on_elem=(lambda e: self._ensure_elem(tx, e)) if self.form == KUBE_PROXY else None,
                  on_set=self._set_declared)
        if self.form == FAST:
            # one command per map; a key shared by Services goes to the last one in name order
            for container, elems in merged_elements(ports).items():
                tx.elements(container, elems)
                store = self._elems[container]
                for e in elems:
                    store[e.key] = e.value or ""
        stale = self._flush_stale(tx, sorted(self._chains - created), now)
        for s in sorted(self._sets - set(self._active_sets)):
            tx.add(f"delete set {ctx.family} {TABLE} {s}")
            self._set_exists(s, False)
        self._need_full = False
        self._fresh = False
        self._last_full = True
        return tx, stale

    def _ensure_elem(self, tx: Tx, e: Element) -> None:
        """kube-proxy's nftElementStorage.ensureElem (for the element a key ends up with)."""
        wanted = self._wanted(e.container, e.key)
        if wanted is not None and wanted is not e and wanted != e:
            return  # another Service wins this key
        value = e.value or ""
        current = self._elems[e.container].get(e.key)
        if current == value:
            return
        if current is not None:
            tx.element(e, "delete")
        tx.element(e)
        self._elem(e.container, e.key, value)

    def _flush_stale(self, tx: Tx, chains: Iterable[str], now: float) -> list[str]:
        out = []
        for c in chains:
            if c not in self._chains:
                continue
            tx.add(f"flush chain {tx.family} {TABLE} {c}")
            self._mark_stale(c, now)
            out.append(c)
        return out

    # partial sync
    def _partial(self, delta: NftDelta, now: float) -> tuple[Tx, list[str]]:
        ctx = self.renderer.context
        assert ctx is not None
        tx = Tx(ctx.family)
        keys = sorted(delta.inputs_changed)
        touched: dict[str, set[str]] = {c: set() for c in CONTAINERS}
        unused_chains: list[str] = []
        unused_sets: list[str] = []
        new_ports: list[NftPort] = []
        for key in keys:
            old, new = delta.services[key]
            for p in old:
                for e in p.elements:
                    touched[e.container].add(e.key)
                unused_chains.extend(c for c in p.chains if not self._active[c])
                unused_sets.extend(s for s, _ in p.sets if not self._active_sets[s])
            new_ports.extend(new)

        def element(e: Element) -> None:
            touched[e.container].add(e.key)
            self._ensure_elem(tx, e)

        write_ops(tx, ctx, new_ports, set(), on_chain=self._chain_written, on_elem=element, on_set=self._set_declared)
        if self.form == KUBE_PROXY:
            # kube-proxy flushes every stale chain it finds, at every sync
            candidates = sorted(set(self._stale) | set(unused_chains))
        else:
            candidates = sorted(c for c in set(unused_chains) if c not in self._stale)
        stale = self._flush_stale(tx, candidates, now)
        gone_sets = set(unused_sets)
        if self.form == KUBE_PROXY:
            gone_sets |= {s for s in self._sets if not self._active_sets[s]}
        for s in sorted(gone_sets):
            if s in self._sets and not self._active_sets[s]:
                tx.add(f"delete set {ctx.family} {TABLE} {s}")
                self._set_exists(s, False)
        for container in CONTAINERS:   # leftovers, in kube-proxy's cleanup order
            store = self._elems[container]
            for k in sorted(touched[container]):
                if k in store and self._wanted(container, k) is None:
                    tx.add(f"delete element {ctx.family} {TABLE} {container} {{ {k} }}")
                    self._elem(container, k, None)
        self._last_full = False
        return tx, stale
