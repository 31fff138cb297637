"""Work queues: what a controller must look at again, fed by the store's change notifications.

As Kubernetes' informers do with their event handlers, each queued controller names the kinds it
watches and, for each, how a changed object maps to the keys of the objects it syncs (a pod's change
queues its ReplicaSet, a ReplicaSet's its Deployment...). A pass then hands the controller those keys
only, so a change costs what it touches, not what exists. A new queue (a fresh cluster, or one loaded
after a restart, whose objects came without notifications) asks for one pass over everything.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Optional

from netemu.control.store import Key, key_of
from netemu.spec.models import K8sModel

if TYPE_CHECKING:
    from netemu.control.store import Store

# (store, changed object) -> the keys to sync
Mapper = Callable[["Store", K8sModel], Iterable[Key]]


class WorkQueue:
    def __init__(self, watches: dict[str, Mapper]):
        self.watches = watches
        self.keys: set[Key] = set()
        self.everything = True

    def note(self, store: "Store", kind: str, obj: K8sModel) -> None:
        if self.everything:
            return
        mapper = self.watches.get(kind)
        if mapper is not None:
            self.keys.update(mapper(store, obj))

    def pending(self) -> bool:
        return self.everything or bool(self.keys)

    def take(self) -> Optional[set[Key]]:
        """The keys to sync now, or None for every object."""
        if self.everything:
            self.everything = False
            self.keys = set()
            return None
        keys, self.keys = self.keys, set()
        return keys

    def requeue_all(self) -> None:
        self.everything = True


# ------------------------------------------------------------------ mappers shared by the controllers
def itself(store: "Store", obj: K8sModel) -> Iterable[Key]:
    return (key_of(obj),)


def controller(store: "Store", obj: K8sModel) -> Iterable[Key]:
    """The object's controlling owner (a pod's ReplicaSet, a ReplicaSet's Deployment)."""
    owner = _owner(store, obj)
    return (key_of(owner),) if owner is not None else ()


def controller_of_controller(store: "Store", obj: K8sModel) -> Iterable[Key]:
    """Two steps up: a pod's Deployment, through its ReplicaSet."""
    owner = _owner(store, obj)
    top = _owner(store, owner) if owner is not None else None
    return (key_of(top),) if top is not None else ()


def _owner(store: "Store", obj: K8sModel) -> Optional[K8sModel]:
    for ref in obj.metadata.owner_references or []:
        if ref.controller:
            return store.by_uid(ref.uid)
    return None


def objects(store: "Store", kind: str, keys: Optional[set[Key]]) -> list[K8sModel]:
    """The objects of a kind a queued controller syncs: all of them, or the queued ones still there."""
    if keys is None:
        return store.list(kind)
    out = []
    for k in sorted(keys):
        if k[0] == kind:
            obj = store.find(*k)
            if obj is not None:
                out.append(obj)
    return out
