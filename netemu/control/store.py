"""The object store: the lab's API server state, in memory, single-threaded.

Objects are the typed models of :mod:`netemu.spec.models`, keyed by (kind, namespace, name).
Controllers mutate an object they got from the store and hand it back with :meth:`Store.update`,
which bumps its resourceVersion and records the change; watchers (the daemon's sync loops)
learn what changed by kind from :attr:`Store.generation` per kind.
"""
from __future__ import annotations

import random
import uuid
from collections import defaultdict
from typing import Callable, Iterable, Iterator, Optional

from netemu.spec.models import NAMESPACED, K8sModel

Key = tuple[str, str, str]  # kind, namespace ("" when cluster scoped), name


class Conflict(Exception):
    """An object with that kind/namespace/name already exists."""


class NotFound(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one reads like kubectl's
        kind, ns, name = self.args[0]
        where = f' in namespace "{ns}"' if ns else ""
        return f'{kind.lower()} "{name}" not found{where}'


def key_of(obj: K8sModel) -> Key:
    ns = obj.metadata.namespace or "" if obj.kind in NAMESPACED else ""
    return (obj.kind, ns, obj.metadata.name)


class Store:
    def __init__(self, clock: Callable[[], float], seed: int = 0):
        self.clock = clock
        self.rng = random.Random(seed)
        self._objects: dict[Key, K8sModel] = {}
        self._by_kind: dict[str, dict[Key, K8sModel]] = defaultdict(dict)
        # indexes that keep a reconcile pass proportional to what it looks at, not to the whole store
        self._by_ns: dict[tuple[str, str], dict[Key, K8sModel]] = defaultdict(dict)
        self._owned: dict[str, dict[Key, K8sModel]] = defaultdict(dict)  # controller uid -> dependents
        self._owner_of: dict[Key, str] = {}
        self._uids: dict[str, Key] = {}
        # label, node and selector indexes; what an object was indexed under is kept beside it, since
        # controllers change objects in place before handing them back
        self._by_label: dict[tuple, dict[Key, K8sModel]] = defaultdict(dict)  # (kind, ns, key, value)
        self._labels_of: dict[Key, tuple] = {}
        self._by_node: dict[str, dict[Key, K8sModel]] = defaultdict(dict)  # pods by spec.nodeName
        self._node_of: dict[Key, str] = {}
        self._by_selector: dict[tuple, dict[Key, K8sModel]] = defaultdict(dict)  # Services by (ns, first item)
        self._selector_of: dict[Key, tuple] = {}
        self._by_target: dict[tuple, dict[Key, K8sModel]] = defaultdict(dict)  # slices by (ns, pod name)
        self._targets_of: dict[Key, list] = {}
        # the controllers' own indexes (as informers' indexers): name -> (kind, function of an object giving
        # the value it is found under, or None); values per (name, value), and what each object was under
        self._indexers: dict[str, tuple[str, Callable[[K8sModel], object]]] = {}
        self._indexed: dict[tuple, dict[Key, K8sModel]] = defaultdict(dict)
        self._indexed_as: dict[Key, list[tuple]] = {}
        self.last_rv = 0  # the newest resourceVersion handed out (the API's list resourceVersion)
        # per-kind change counters: sync loops compare them with what they last handled
        self.generation: dict[str, int] = defaultdict(int)
        self.listeners: list[Callable[[str, str, K8sModel], None]] = []

    # ------------------------------------------------------------------ reads
    def get(self, kind: str, namespace: str, name: str) -> K8sModel:
        key = (kind, namespace if kind in NAMESPACED else "", name)
        try:
            return self._objects[key]
        except KeyError:
            raise NotFound(key) from None

    def find(self, kind: str, namespace: str, name: str) -> Optional[K8sModel]:
        return self._objects.get((kind, namespace if kind in NAMESPACED else "", name))

    def list(self, kind: str, namespace: Optional[str] = None) -> list[K8sModel]:
        if namespace is None:
            return list(self._by_kind.get(kind, {}).values())
        return list(self._by_ns.get((kind, namespace), {}).values())

    def count(self, kind: str) -> int:
        return len(self._by_kind.get(kind, {}))

    def in_namespace(self, namespace: str) -> list[K8sModel]:
        """Every object of the namespace, whatever its kind."""
        return [o for (_, ns), objs in self._by_ns.items() if ns == namespace for o in objs.values()]

    def owned(self, kind: str, owner_uid: Optional[str]) -> list[K8sModel]:
        """Objects of a kind whose controlling owner reference has this uid."""
        return [o for k, o in self._owned.get(owner_uid or "", {}).items() if k[0] == kind]

    def owned_by(self, owner_uid: str) -> list[K8sModel]:
        """Every object whose controlling owner reference has this uid, whatever its kind."""
        return list(self._owned.get(owner_uid, {}).values())

    def has_uid(self, uid: Optional[str]) -> bool:
        return bool(uid) and uid in self._uids

    def by_uid(self, uid: Optional[str]) -> Optional[K8sModel]:
        key = self._uids.get(uid or "")
        return self._objects.get(key) if key is not None else None

    def select(self, kind: str, namespace: str, selector: dict[str, str]) -> list[K8sModel]:
        """Objects of a kind in a namespace whose labels hold every pair of a (non-empty) map selector,
        found through the label index: the cost is the smallest bucket, not the namespace."""
        buckets = [self._by_label.get((kind, namespace, k, v), {}) for k, v in selector.items()]
        if not buckets:
            return self.list(kind, namespace)
        smallest = min(buckets, key=len)
        return [o for key, o in smallest.items() if all(key in b for b in buckets)]

    def services_selecting(self, namespace: str, labels: Optional[dict[str, str]]) -> list[K8sModel]:
        """The Services of a namespace whose selector matches these labels (each Service is indexed
        under the first pair of its selector: one lookup per label of the pod)."""
        if not labels:
            return []
        out = []
        for k, v in labels.items():
            for svc in self._by_selector.get((namespace, k, v), {}).values():
                sel = svc.spec.selector
                if all(labels.get(sk) == sv for sk, sv in sel.items()):
                    out.append(svc)
        return out

    def slices_holding(self, namespace: str, pod: str) -> list[K8sModel]:
        """The EndpointSlices with an endpoint whose targetRef is this pod."""
        return list(self._by_target.get((namespace, pod), {}).values())

    def indexed(self, name: str, kind: str, value_of: Callable[[K8sModel], object], value: object) -> list[K8sModel]:
        """Objects of a kind that `value_of` files under `value` (None: not filed). The index is made on
        first use and kept up to date from then on; `value_of` must depend on the object alone."""
        if name not in self._indexers:
            self._indexers[name] = (kind, value_of)
            for key, obj in self._by_kind.get(kind, {}).items():
                self._file(name, value_of, key, obj)
        return list(self._indexed.get((name, value), {}).values())

    def _file(self, name: str, value_of: Callable, key: Key, obj: K8sModel) -> None:
        v = value_of(obj)
        if v is not None:
            self._indexed[(name, v)][key] = obj
            self._indexed_as.setdefault(key, []).append((name, v))

    def _refile(self, key: Key, obj: K8sModel) -> None:
        """The controllers' indexes after a change: entries whose value stayed keep their place (an index
        lists in the order objects entered it, as the store lists in creation order)."""
        old = self._indexed_as.pop(key, [])
        new = []
        for name, (kind, value_of) in self._indexers.items():
            if kind == key[0] and (v := value_of(obj)) is not None:
                new.append((name, v))
                self._indexed[(name, v)][key] = obj
        _drop(self._indexed, [b for b in old if b not in new], key)
        if new:
            self._indexed_as[key] = new

    def on_node(self, node: str) -> list[K8sModel]:
        """The pods bound to a node."""
        return list(self._by_node.get(node, {}).values())

    def dependents(self) -> Iterator[tuple[str, K8sModel]]:
        """(controller uid, object) for every object that has a controlling owner."""
        for uid, objs in list(self._owned.items()):
            for o in list(objs.values()):
                yield uid, o

    def __iter__(self) -> Iterator[K8sModel]:
        return iter(list(self._objects.values()))

    def __len__(self) -> int:
        return len(self._objects)

    # ------------------------------------------------------------------ writes
    def new_uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def create(self, obj: K8sModel) -> K8sModel:
        key = key_of(obj)
        if key in self._objects:
            raise Conflict(f'{obj.kind.lower()} "{obj.metadata.name}" already exists')
        meta = obj.metadata
        meta.uid = meta.uid or self.new_uid()
        meta.creation_timestamp = meta.creation_timestamp or rfc3339(self.clock())
        if obj.kind in ("Deployment", "ReplicaSet", "Service", "Pod", "DaemonSet", "Job", "PodDisruptionBudget"):
            meta.generation = meta.generation or 1
        self._put(key, obj, "ADDED")
        return obj

    def update(self, obj: K8sModel) -> K8sModel:
        key = key_of(obj)
        if key not in self._objects:
            raise NotFound(key)
        self._put(key, obj, "MODIFIED")
        return obj

    def delete(self, kind: str, namespace: str, name: str) -> K8sModel:
        key = (kind, namespace if kind in NAMESPACED else "", name)
        obj = self._objects.pop(key, None)
        if obj is None:
            raise NotFound(key)
        obj.metadata.resource_version = str(self.next_rv())  # a deletion is a change watchers see
        del self._by_kind[kind][key]
        self._unindex(key, obj)
        _drop(self._indexed, self._indexed_as.pop(key, ()), key)
        self._changed(kind, "DELETED", obj)
        return obj

    def next_rv(self) -> int:
        self.last_rv += 1
        return self.last_rv

    def _put(self, key: Key, obj: K8sModel, event: str) -> None:
        obj.metadata.resource_version = str(self.next_rv())
        old = self._objects.get(key)
        if old is not None:
            self._unindex(key, old)
        self._objects[key] = obj
        self._by_kind[key[0]][key] = obj
        self._index(key, obj)
        self._changed(key[0], event, obj)

    def _index(self, key: Key, obj: K8sModel) -> None:
        self._by_ns[(key[0], key[1])][key] = obj
        if obj.metadata.uid:
            self._uids[obj.metadata.uid] = key
        for ref in obj.metadata.owner_references or []:
            if ref.controller:
                self._owned[ref.uid][key] = obj
                self._owner_of[key] = ref.uid
                break
        kind, ns, _ = key
        items = tuple((obj.metadata.labels or {}).items())
        if items:
            self._labels_of[key] = items
            for k, v in items:
                self._by_label[(kind, ns, k, v)][key] = obj
        if kind == "Pod" and obj.spec.node_name:
            self._node_of[key] = obj.spec.node_name
            self._by_node[obj.spec.node_name][key] = obj
        if kind == "Service" and obj.spec.selector:
            first = (ns, *min(obj.spec.selector.items()))
            self._selector_of[key] = first
            self._by_selector[first][key] = obj
        self._refile(key, obj)
        if kind == "EndpointSlice":
            targets = [(ns, ep.target_ref.name) for ep in obj.endpoints or [] if ep.target_ref is not None]
            if targets:
                self._targets_of[key] = targets
                for t in targets:
                    self._by_target[t][key] = obj

    def _unindex(self, key: Key, obj: K8sModel) -> None:
        self._by_ns.get((key[0], key[1]), {}).pop(key, None)
        if obj.metadata.uid and self._uids.get(obj.metadata.uid) == key:
            del self._uids[obj.metadata.uid]
        owner = self._owner_of.pop(key, None)
        if owner is not None:
            deps = self._owned.get(owner)
            if deps is not None:
                deps.pop(key, None)
                if not deps:
                    del self._owned[owner]
        _drop(self._by_label, [(key[0], key[1], k, v) for k, v in self._labels_of.pop(key, ())], key)
        node = self._node_of.pop(key, None)
        if node is not None:
            _drop(self._by_node, [node], key)
        first = self._selector_of.pop(key, None)
        if first is not None:
            _drop(self._by_selector, [first], key)
        _drop(self._by_target, self._targets_of.pop(key, ()), key)

    def _changed(self, kind: str, event: str, obj: K8sModel) -> None:
        self.generation[kind] += 1
        self.generation["*"] += 1
        for listener in self.listeners:
            listener(kind, event, obj)

    def load(self, objs: Iterable[K8sModel]) -> None:
        """Put objects back as they were persisted (no defaults, no events)."""
        for obj in objs:
            key = key_of(obj)
            self._objects[key] = obj
            self._by_kind[key[0]][key] = obj
            self._index(key, obj)
        rvs = [int(o.metadata.resource_version or 0) for o in self._objects.values()]
        self.last_rv = max(rvs, default=0)


def _drop(index: dict, buckets, key: Key) -> None:
    for b in buckets:
        objs = index.get(b)
        if objs is not None:
            objs.pop(key, None)
            if not objs:
                del index[b]


def rfc3339(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def parse_rfc3339(s: Optional[str]) -> Optional[float]:
    if not s:
        return None
    import calendar
    import time

    return float(calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ")))
