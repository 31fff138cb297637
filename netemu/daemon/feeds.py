"""The snapshot feeds of the control process: what the lab's stand-in pods follow instead of watching
the API server. One :class:`Publisher` holds the latest snapshot of the store, rebuilds it from the
sync loop (``update(store)``: only when a kind it watches changed) and streams it, length-prefixed
(netemu.frames), to every pod that subscribed (``serve(writer, pod)``) whenever it differs from the
last; a feed says only what it publishes (``WATCHED`` and ``build``):

- :class:`ZonePublisher`: the cluster zone for the DNS pods (API op ``dns_watch``). CoreDNS's
  kubernetes plugin watches Services, EndpointSlices, Pods and Namespaces; here the indexed zone is
  built incrementally (unchanged Services keep their entry) and sent pickled. The socket is root-only
  and both ends run this same code.
- :class:`IngressPublisher`: what the ingress controller pods watch (API op ``ingress_watch``), as
  JSON (netemu.ingress.watch).

A subscriber may report, with the API op ``ingress_applied`` ({"pod": "ns/name", "digest": ...}),
the snapshot it now serves (the digest of the frame's body, netemu.frames.digest).
:meth:`Publisher.settled` is true when every subscribed pod serves the current snapshot: `up` and
`wait` include the ingress controllers' in "ready", so that a curl right after `up` meets the
Ingresses' backends, not a configuration that predates them.

The daemon owns one of each; it updates them before the kubelet starts pods, so a new DNS or
controller pod finds a snapshot waiting.
"""
from __future__ import annotations

import asyncio
import json
import pickle
from typing import Optional

from netemu.control.pods import is_ready
from netemu.dns.zone import ClusterZone
from netemu.frames import digest, hold_open, pack
from netemu.ingress import watch


class Publisher:
    """The latest snapshot of the store and the pods that follow it."""
    WATCHED: tuple[str, ...] = ()  # the kinds the snapshot is made of

    def __init__(self) -> None:
        self._gen = -1
        self._frame = b""
        self.digest = ""
        self.subscribers: dict[asyncio.StreamWriter, Optional[str]] = {}  # writer -> "ns/pod"
        self.acks: dict[str, str] = {}  # "ns/pod" -> digest of the snapshot it serves
        self.sent = 0  # frames built (for tests and the daemon's log)

    def build(self, store) -> bytes:
        """The body of the frame for the store as it is."""
        raise NotImplementedError

    @property
    def frame(self) -> bytes:
        return self._frame

    def applied(self, pod: Optional[str], snapshot_digest: Optional[str]) -> None:
        if pod and snapshot_digest:
            self.acks[pod] = snapshot_digest

    def settled(self, store=None) -> bool:
        """Every subscribed pod serves the current snapshot (with ``store``: every one whose pod
        still exists and is not terminating; a connection of a pod that is gone may linger a while)."""
        return not self.pending(store)

    def pending(self, store=None) -> list[str]:
        """The subscribed pods ("ns/name") that do not serve the current snapshot yet."""
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
        gen = sum(store.generation[k] for k in self.WATCHED)
        if gen == self._gen:
            return False
        self._gen = gen
        frame = pack(self.build(store))
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
        """Stream snapshots to one pod ("namespace/name") until it goes away."""
        self.subscribers[writer] = pod
        if self._frame:
            self._send(writer)
        try:
            await hold_open(writer)
        finally:
            self._drop(writer)


class ZonePublisher(Publisher):
    """The cluster zone, for the DNS pods."""
    WATCHED = ("Service", "EndpointSlice", "Namespace", "Pod")

    def __init__(self, lab) -> None:
        super().__init__()
        self.lab = lab
        self.zone: Optional[ClusterZone] = None

    def build(self, store) -> bytes:
        spec = self.lab.spec
        # all of each DNS pod's addresses (CoreDNS counts its own of both families for the zone's NS)
        dns_ips = [ip for p in store.list("Pod", "kube-system")
                   if (p.metadata.labels or {}).get("k8s-app") == "kube-dns" and p.status.pod_ip and is_ready(p)
                   for ip in ([x.ip for x in p.status.pod_ips] if p.status.pod_ips else [p.status.pod_ip])]
        self.zone = ClusterZone.build(store.list("Service"), store.list("EndpointSlice"), store.list("Pod"),
                                      domain=spec.cluster_domain, ttl=spec.dns_ttl,
                                      namespaces=store.list("Namespace"), dns_server_ips=dns_ips,
                                      previous=self.zone)
        return pickle.dumps(self.zone, protocol=pickle.HIGHEST_PROTOCOL)


class IngressPublisher(Publisher):
    """The objects the ingress controller pods need (netemu.ingress.watch)."""
    WATCHED = watch.WATCHED

    def build(self, store) -> bytes:
        return json.dumps(watch.snapshot(store), sort_keys=True, separators=(",", ":")).encode()
