"""The cluster zone for the DNS pods, rebuilt on every relevant change and pushed to them.

CoreDNS's kubernetes plugin watches Services, EndpointSlices, Pods and Namespaces; here the
control process builds the indexed zone (incrementally: unchanged Services keep their entry)
and streams it, pickled and length-prefixed, to each DNS pod that subscribed. The socket is
root-only and both ends run this same code.
"""
from __future__ import annotations

import asyncio
import logging
import pickle

from netemu.control.pods import is_ready
from netemu.dns.zone import ClusterZone
from netemu.frames import hold_open, pack

log = logging.getLogger("netemu.dns")

WATCHED = ("Service", "EndpointSlice", "Namespace", "Pod")


class ZonePublisher:
    def __init__(self, lab):
        self.lab = lab
        self.zone: ClusterZone | None = None
        self._frame = b""
        self._gen = -1
        self.subscribers: set[asyncio.StreamWriter] = set()

    def update(self, store) -> None:
        gen = sum(store.generation[k] for k in WATCHED)
        if gen == self._gen:
            return
        self._gen = gen
        spec = self.lab.spec
        dns_ips = [p.status.pod_ip for p in store.list("Pod", "kube-system")
                   if (p.metadata.labels or {}).get("k8s-app") == "kube-dns" and p.status.pod_ip and is_ready(p)]
        self.zone = ClusterZone.build(store.list("Service"), store.list("EndpointSlice"), store.list("Pod"),
                                      domain=spec.cluster_domain, ttl=spec.dns_ttl,
                                      namespaces=store.list("Namespace"), dns_server_ips=dns_ips,
                                      previous=self.zone)
        data = pickle.dumps(self.zone, protocol=pickle.HIGHEST_PROTOCOL)
        self._frame = pack(data)
        for w in list(self.subscribers):
            self._send(w)

    def _send(self, w: asyncio.StreamWriter) -> None:
        if w.is_closing():
            self.subscribers.discard(w)
            return
        w.write(self._frame)

    async def serve(self, writer: asyncio.StreamWriter) -> None:
        """Stream zones to one DNS pod until it goes away."""
        self.subscribers.add(writer)
        if self._frame:
            self._send(writer)
        try:
            await hold_open(writer)
        finally:
            self.subscribers.discard(writer)
