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

    def in_namespace(self, namespace: str) -> list[K8sModel]:
        """Every object of the namespace, whatever its kind."""
        return [o for (_, ns), objs in self._by_ns.items() if ns == namespace for o in objs.values()]

    def owned(self, kind: str, owner_uid: Optional[str]) -> list[K8sModel]:
        """Objects of a kind whose controlling owner reference has this uid."""
        return [o for k, o in self._owned.get(owner_uid or "", {}).items() if k[0] == kind]

    def has_uid(self, uid: Optional[str]) -> bool:
        return bool(uid) and uid in self._uids

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


def rfc3339(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def parse_rfc3339(s: Optional[str]) -> Optional[float]:
    if not s:
        return None
    import calendar
    import time

    return float(calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ")))
