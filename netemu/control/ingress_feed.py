"""What the ingress controller pods watch, pushed to them by the control process.

ingress-nginx watches Ingresses, IngressClasses, Services, EndpointSlices, Secrets and its
ConfigMap through the API server; here the control process builds one snapshot of them and streams
it to every controller pod that subscribed (API op ``ingress_watch``), whenever it changes. Frames
are length-prefixed JSON (4-byte big-endian length, then the JSON object):

    {"ingresses": [...], "ingressClasses": [...], "services": [...], "endpointSlices": [...],
     "secrets": [...], "configMaps": [...]}

Objects are as the API shows them (Ingresses in their v1 form), without status and bookkeeping
metadata, and only what a controller can use: the Services the Ingresses name and their slices, TLS
Secrets (and any Secret an Ingress names), the ConfigMaps of the controller's namespace. So a change
to an unrelated Service or its endpoints sends nothing, and a snapshot equal to the last is not sent.

The daemon owns one IngressFeed: ``update(store)`` from its sync loop (before the kubelet starts pods,
so a new controller pod finds a snapshot waiting), ``serve(writer, pod)`` for each subscriber.

Each controller reports, with the API op ``ingress_applied`` ({"pod": "ns/name", "digest": ...}),
the snapshot nginx now serves (the digest is the first 16 hex digits of the SHA-256 of the frame's
JSON). :meth:`IngressFeed.settled` is true when every subscribed controller serves the current
snapshot: `up` and `wait` include it in "ready", so that a curl right after `up` meets the
Ingresses' backends, not a configuration that predates them.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Optional

from netemu.frames import hold_open, pack
from netemu.wellknown import SERVICE_NAME_LABEL

WATCHED = ("Ingress", "IngressClass", "Service", "EndpointSlice", "Secret", "ConfigMap")
CONTROLLER_NAMESPACE = "ingress-nginx"
_DROP_META = ("uid", "resourceVersion", "generation", "managedFields", "ownerReferences", "generateName")


def _clean(obj) -> dict:
    d = obj.dump()
    d.pop("status", None)
    meta = d.get("metadata") or {}
    for k in _DROP_META:
        meta.pop(k, None)
    return d


def snapshot(store) -> dict:
    """The objects the controllers need, as JSON-ready dicts (see the module docs)."""
    ingresses = sorted(store.list("Ingress"), key=lambda o: (o.metadata.namespace, o.metadata.name))
    wanted_svcs: set[tuple[str, str]] = set()
    wanted_secrets: set[tuple[str, str]] = set()
    for ing in ingresses:
        ns = ing.metadata.namespace or "default"
        spec = ing.spec
        backends = [spec.default_backend] if spec.default_backend else []
        for rule in spec.rules or []:
            for p in (rule.http.paths if rule.http else []):
                backends.append(p.backend)
        for b in backends:
            if b is not None and b.service is not None:
                wanted_svcs.add((ns, b.service.name))
        for tls in spec.tls or []:
            if tls.secret_name:
                wanted_secrets.add((ns, tls.secret_name))
    services = [s for s in store.list("Service") if (s.metadata.namespace, s.metadata.name) in wanted_svcs]
    slices = [s for s in store.list("EndpointSlice")
              if (s.metadata.namespace, (s.metadata.labels or {}).get(SERVICE_NAME_LABEL)) in wanted_svcs]
    secrets = [s for s in store.list("Secret")
               if s.type == "kubernetes.io/tls" or (s.metadata.namespace, s.metadata.name) in wanted_secrets]
    configmaps = store.list("ConfigMap", CONTROLLER_NAMESPACE)

    def ordered(objs):
        return [_clean(o) for o in sorted(objs, key=lambda o: (o.metadata.namespace or "", o.metadata.name))]

    return {
        "ingresses": [_clean(i) for i in ingresses],
        "ingressClasses": ordered(store.list("IngressClass")),
        "services": ordered(services),
        "endpointSlices": ordered(slices),
        "secrets": ordered(secrets),
        "configMaps": ordered(configmaps),
    }


def encode(snap: dict) -> bytes:
    return pack(json.dumps(snap, sort_keys=True, separators=(",", ":")).encode())


def digest(body: bytes) -> str:
    """A snapshot's identity, as both ends compute it from the frame's JSON."""
    return hashlib.sha256(body).hexdigest()[:16]


class IngressFeed:
    def __init__(self) -> None:
        self._gen = -1
        self._frame = b""
        self.digest = ""
        self.subscribers: dict[asyncio.StreamWriter, Optional[str]] = {}  # writer -> "ns/pod"
        self.acks: dict[str, str] = {}  # "ns/pod" -> digest of the snapshot its nginx serves
        self.sent = 0  # frames built (for tests and the daemon's log)

    @property
    def frame(self) -> bytes:
        return self._frame

    def applied(self, pod: Optional[str], snapshot_digest: Optional[str]) -> None:
        if pod and snapshot_digest:
            self.acks[pod] = snapshot_digest

    def settled(self, store=None) -> bool:
        """Every subscribed controller serves the current snapshot (with ``store``: every one whose pod
        still exists and is not terminating; a connection of a pod that is gone may linger a while)."""
        return not self.pending(store)

    def pending(self, store=None) -> list[str]:
        """The controller pods ("ns/name") whose nginx does not serve the current snapshot yet."""
        out = set()
        for pod in self.subscribers.values():
            if not pod or self.acks.get(pod) == self.digest:
                continue
            if store is not None:
                ns, _, name = pod.partition("/")
                obj = store.find("Pod", ns, name)
                if obj is None or obj.metadata.deletion_timestamp:
                    continue
            out.add(pod)
        return sorted(out)

    def update(self, store) -> bool:
        """Rebuild the snapshot if a watched kind changed; push it if it differs. True when pushed."""
        gen = sum(store.generation[k] for k in WATCHED)
        if gen == self._gen:
            return False
        self._gen = gen
        frame = encode(snapshot(store))
        if frame == self._frame:
            return False
        self._frame = frame
        self.digest = digest(frame[4:])
        self.sent += 1
        for w in list(self.subscribers):
            self._send(w)
        return True

    def _send(self, w: asyncio.StreamWriter) -> None:
        if w.is_closing():
            self._drop(w)
            return
        w.write(self._frame)

    def _drop(self, w: asyncio.StreamWriter) -> None:
        pod = self.subscribers.pop(w, None)
        if pod and pod not in self.subscribers.values():
            self.acks.pop(pod, None)

    async def serve(self, writer: asyncio.StreamWriter, pod: Optional[str] = None) -> None:
        """Stream snapshots to one controller pod ("namespace/name") until it goes away."""
        self.subscribers[writer] = pod
        if self._frame:
            self._send(writer)
        try:
            await hold_open(writer)
        finally:
            self._drop(writer)
