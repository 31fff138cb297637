"""One lab's control process: store -> controllers -> data plane, in a level-triggered loop.

Every change (an API call, a process exit, a probe result, a timer) only *kicks* the loop; the
loop then recomputes the desired state from the store and makes the kernel match it. Running a
pass twice is harmless, so nothing depends on seeing every event.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import socket
import time
from typing import Any, Callable, Optional

from netemu import paths
from netemu.control.cluster import Cluster
from netemu.control.nodes import internal_ip, set_ready
from netemu.dataplane.cgroups import LabCgroups
from netemu.dataplane.kubelet import Kubelet
from netemu.dataplane.labnet import LabNet, NodeNet
from netemu.dataplane.launcher import LauncherClient
from netemu.spec.models import K8sModel, Lab

log = logging.getLogger("netemu.daemon")


class LabDaemon:
    def __init__(self, lab: Lab, objects: list[K8sModel], launcher: LauncherClient, cgroups: LabCgroups,
                 progress: Callable[[str], None] = lambda s: None):
        self.lab = lab
        self.name = lab.metadata.name
        self.cluster = Cluster(lab)
        from netemu.api.storage import Storage

        # the API's view of the store (watch window, cached dumps): attached before anything is stored
        self.storage = Storage(self.cluster, self.kick)
        self.lab_ops = None  # netemu.daemon.api.Api, set by main
        self.api_pki = None  # the lab's CA and certificates (netemu.daemon.listeners)
        self.initial_objects = objects
        self.launcher = launcher
        self.cgroups = cgroups
        self.progress = progress
        self.net: Optional[LabNet] = None
        self.kubelet: Optional[Kubelet] = None
        self.proxy = None  # the kube-proxy syncer, per node (set up in build)
        self.speakers = None  # MetalLB-style ARP speakers, one per node
        from netemu.daemon.dnsfeed import ZonePublisher

        self.dns = ZonePublisher(lab)
        from netemu.control.ingress_feed import IngressFeed

        self.ingress = IngressFeed()
        from netemu.control.hpa import HorizontalController, HpaSettings
        from netemu.dataplane.metrics import MetricsCollector

        # metrics-server (the pods' cgroups, sampled every metric resolution) and the HPA controller
        self.metrics = MetricsCollector(cgroups, resolution=lab.spec.metric_resolution_seconds)
        self.hpa = HorizontalController(HpaSettings.from_lab(lab))
        self._kick = asyncio.Event()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future]] = []
        self._pending: dict[int, asyncio.Future] = {}
        self._outbox: collections.deque[bytes] = collections.deque()
        self._writer_armed = False
        self._stopping = False
        self._persisted_gen = -1
        self._persisting: Optional[asyncio.Future] = None
        self._last_persist = 0.0
        self.started = time.time()
        self.sync_count = 0

    # ------------------------------------------------------------------ launcher bridge
    def _on_launcher_readable(self) -> None:
        try:
            data = self.launcher.sock.recv(1 << 20)
        except BlockingIOError:
            return
        if not data:
            log.error("the pod launcher exited")
            asyncio.get_running_loop().remove_reader(self.launcher.sock.fileno())
            return
        msg = json.loads(data)
        if "event" in msg:
            if msg["event"] == "exit" and self.kubelet is not None:
                self.kubelet.on_exit(msg["pid"], msg["status"])
            return
        fut = self._pending.pop(msg.get("id"), None)
        if fut is not None and not fut.done():
            if "error" in msg:
                fut.set_exception(RuntimeError(msg["error"]))
            else:
                fut.set_result(msg)

    async def launch(self, op: str, **fields: Any) -> dict:
        """Ask the launcher for a sandbox or a process; returns its answer ({"pid": ...} once a
        process's set-up is done, {"sandbox": ...} for a sandbox)."""
        self.launcher._next += 1
        rid = self.launcher._next
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self._outbox.append(json.dumps({"op": op, "id": rid, **fields}).encode())
        self._flush_outbox()
        return await fut

    def _flush_outbox(self) -> None:
        """Send queued requests; when the launcher's socket is full, wait until it drains."""
        loop = asyncio.get_running_loop()
        while self._outbox:
            try:
                self.launcher.sock.send(self._outbox[0])
            except BlockingIOError:
                if not self._writer_armed:
                    loop.add_writer(self.launcher.sock.fileno(), self._flush_outbox)
                    self._writer_armed = True
                return
            self._outbox.popleft()
        if self._writer_armed:
            loop.remove_writer(self.launcher.sock.fileno())
            self._writer_armed = False

    # ------------------------------------------------------------------ lifecycle
    def node_nets(self) -> list[NodeNet]:
        return [NodeNet(n.metadata.name, internal_ip(n), n.spec.pod_cidr) for n in
                sorted(self.cluster.store.list("Node"), key=lambda n: _node_order(self.lab, n.metadata.name))]

    async def build(self) -> None:
        """Bring the lab up. On any failure the caller tears everything down."""
        spec = self.lab.spec
        self.cluster.bootstrap()
        self.net = LabNet(self.name, spec.network, spec.gateway, spec.service_cidr, self.node_nets())
        self.progress(f"building the lab network: {len(self.net.nodes)} nodes")
        t0 = time.perf_counter()
        # the launcher boots while the wires are made; it only needs /run/netns to be a mount
        # point already, so that its private mount namespace can leave the netns mounts out
        # (see launcher._private_mounts): the lab's first namespace makes it one
        await asyncio.to_thread(self.net.create_namespaces)
        from netemu.dataplane import launcher as launcher_mod

        self.launcher.pid, self.launcher.sock = launcher_mod.start()
        await asyncio.to_thread(self.net.build)
        log.info("lab network built in %.3fs", time.perf_counter() - t0)
        if spec.uplink:  # a real interface on the segment; full_teardown gives it back
            from netemu.dataplane import uplink

            self.progress(await asyncio.to_thread(uplink.attach, self.name, spec.uplink))
        self.launcher.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.launcher.sock.fileno(), self._on_launcher_readable)
        self.kubelet = Kubelet(self.name, self.cluster, self.net, self.cgroups, self.launch, self.kick,
                               lambda: self.launcher.pid, sa_files=self.sa_files)
        self._build_proxy()
        from netemu.dataplane.speaker import Speakers

        # the node's kernel answers ARP for the IPs its speaker announces, except in IPVS mode, where
        # the IPs sit on kube-ipvs0 behind arp_ignore and the speaker replies itself (speaker.py)
        self.speakers = Speakers({n: self.net.node_netns(n) for n in self.net.nodes},
                                 kernel_reply=self.lab.spec.proxy_mode != "ipvs")
        for node in self.cluster.store.list("Node"):
            self.kubelet.set_node_up(node.metadata.name, True)
            set_ready(self.cluster, node, True, "KubeletReady", "kubelet is posting ready status")
        self.cluster.apply(self._addons())
        results = self.cluster.apply(self.initial_objects)
        for r in results:
            self.progress(str(r))
        self.kick()

    def _addons(self) -> list:
        from netemu.control import addons

        cp = next((n for n in self.lab.spec.nodes or [] if n.role == "control-plane"), None)
        from netemu.control.kubeadm import kube_proxy_daemonset

        objs = addons.kubernetes_service(self.lab, cp.ip) if cp else []
        return objs + addons.coredns(self.lab, paths.api_socket(self.name)) + [
            kube_proxy_daemonset(self.lab.spec.proxy_mode)]

    def _build_proxy(self) -> None:
        """kube-proxy for every node (iptables today; the mode comes from the Lab document)."""
        try:
            from netemu.dataplane.kubeproxy import KubeProxy
        except ImportError:  # not built yet
            return
        if self.lab.spec.proxy_mode == "ipvs":
            from netemu.dataplane.ipvsapply import unavailable_message

            problem = unavailable_message()
            if problem:
                raise RuntimeError(problem)
        self.proxy = KubeProxy(self.lab, self.net)
        self.cluster.store.listeners.append(self.proxy.note_change)

    def kick(self) -> None:
        self._kick.set()

    def sa_files(self, pod) -> Optional[dict[str, bytes]]:
        """The pod's ServiceAccount volume (token, ca.crt, namespace), once the lab has its API PKI."""
        if getattr(self, "api_pki", None) is None:
            return None
        from netemu.api.pki import service_account_token

        ns, sa = pod.metadata.namespace or "default", pod.spec.service_account_name or "default"
        return {"token": service_account_token(self.api_pki, ns, sa).encode(),
                "ca.crt": self.api_pki.ca_cert_pem, "namespace": ns.encode()}

    async def run(self) -> None:
        """The reconcile loop."""
        while not self._stopping:
            wake = self.cluster.take_wake()
            timeout = max(0.0, wake - time.time()) if wake else 5.0
            try:
                await asyncio.wait_for(self._kick.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()
            if self._stopping:
                break
            try:
                await self.sync_once()
            except Exception:
                log.exception("sync failed")
                await asyncio.sleep(0.5)
                self.kick()

    async def sync_once(self) -> None:
        self.sync_count += 1
        await self._autoscale()
        self.cluster.reconcile()
        self.dns.update(self.cluster.store)  # before pods start: a new DNS pod waits for its zone
        self.ingress.update(self.cluster.store)  # likewise a new ingress controller for its snapshot
        if self.kubelet is not None:
            await self.kubelet.sync()
        self.cluster.reconcile()
        if self.proxy is not None:
            await self.proxy.sync(self.cluster.store)
        self._sync_speakers()  # after the rules: a new LB IP is DNATed before it attracts traffic
        self.dns.update(self.cluster.store)
        self.ingress.update(self.cluster.store)
        self._persist()
        self._check_waiters()

    def _sync_speakers(self) -> None:
        if self.speakers is not None:
            from netemu.control import metallb_l2

            self.speakers.sync(metallb_l2.announcements(self.cluster).by_node)

    def set_speaker(self, node: str, alive: bool) -> None:
        """Kill or restart one node's speaker (failure injection): its IPs move elsewhere."""
        from netemu.control import metallb_l2

        self.cluster.store.get("Node", "", node)
        if alive:
            self.speakers.start(node)
        else:
            self.speakers.kill(node)
        metallb_l2.set_speaker_alive(self.cluster, node, alive)
        self.cluster.reconcile()
        self._sync_speakers()
        self.kick()

    async def _autoscale(self) -> None:
        """Sample the pods' usage when the metric resolution has passed, sync the HPAs whose
        period has come (their scale changes then flow through this same pass), and ask to be
        woken for the next of both."""
        from netemu.dataplane.metrics import pod_refs

        if self.metrics.due():
            await self.metrics.sample_async(pod_refs(self.kubelet))
        self.cluster.wake_at(self.metrics.next_due)
        next_hpa = self.hpa.reconcile(self.cluster, self.metrics.snapshot())
        if next_hpa is not None:
            self.cluster.wake_at(next_hpa)

    # ------------------------------------------------------------------ waiting (up, rollout)
    def wait_for(self, predicate: Callable[[], bool]) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        if predicate():
            fut.set_result(True)
        else:
            self._waiters.append((predicate, fut))
        return fut

    def _check_waiters(self) -> None:
        keep = []
        for pred, fut in self._waiters:
            if fut.done():
                continue
            try:
                ok = pred()
            except Exception as e:
                fut.set_exception(e)
                continue
            if ok:
                fut.set_result(True)
            else:
                keep.append((pred, fut))
        self._waiters = keep

    # ------------------------------------------------------------------ node failure
    async def set_node(self, node: str, up: bool) -> None:
        obj = self.cluster.store.get("Node", "", node)
        await asyncio.to_thread(self.net.set_node_link, node, up)
        self.kubelet.set_node_up(node, up)
        from netemu.control import metallb_l2

        if up:
            set_ready(self.cluster, obj, True, "KubeletReady", "kubelet is posting ready status")
            self.speakers.start(node)
        else:
            set_ready(self.cluster, obj, False, "NodeStatusUnknown", "Kubelet stopped posting node status.")
            self.speakers.kill(node)  # a failed node's speaker is gone with it
        metallb_l2.set_speaker_alive(self.cluster, node, up)
        # fail over at once: every node already DNATs every LB IP, only the ARP owner moves
        self.cluster.reconcile()
        self._sync_speakers()
        self.kick()

    # ------------------------------------------------------------------ persistence
    def _persist(self, force: bool = False) -> None:
        gen = self.cluster.store.generation["*"]
        now = time.time()
        if not force and (gen == self._persisted_gen or now - self._last_persist < 0.5):
            if gen != self._persisted_gen:
                self.cluster.wake_at(self._last_persist + 0.5)
            return
        data = {"lab": self.lab.dump(), "daemon_pid": os.getpid(), "launcher_pid": self.launcher.pid,
                "objects": [self.storage.dump(o) for o in self.cluster.store]}  # the API's cached dumps
        self._persisted_gen, self._last_persist = gen, now
        if self._persisting is not None and not self._persisting.done():
            return  # the last write is still going: the next pass writes what changed since
        # the cached dumps are never changed in place, so a worker thread can encode them while the
        # loop serves the API (encoding a big lab's objects takes tens of milliseconds)
        self._persisting = asyncio.get_running_loop().run_in_executor(None, _write_state,
                                                                      paths.state_file(self.name), data)

    # ------------------------------------------------------------------ teardown
    async def teardown(self) -> None:
        self._stopping = True
        self.kick()
        if self._persisting is not None:  # no state write may race the removal of the lab's files
            try:
                await asyncio.wait_for(asyncio.shield(self._persisting), 10)
            except Exception:
                log.exception("writing the lab's state")
        if self.kubelet is not None:
            try:
                await asyncio.wait_for(self.kubelet.stop_all(), 10)
            except Exception:
                log.exception("stopping pods")
        if self.speakers is not None:
            self.speakers.close()
        if self.proxy is not None:
            try:
                self.proxy.close()
            except Exception:
                log.exception("stopping kube-proxy")


def _write_state(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except FileNotFoundError:  # the lab is being removed
        pass


def _node_order(lab: Lab, name: str) -> int:
    for i, n in enumerate(lab.spec.nodes or []):
        if n.name == name:
            return i
    return 1 << 30


def socket_path(lab: str) -> str:
    return paths.api_socket(lab)


def unix_server_socket(path: str) -> socket.socket:
    """Root-only API socket: the directory is 0700 and the socket 0600."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        s.bind(path)
    finally:
        os.umask(old)
    s.listen(64)
    s.setblocking(False)
    return s
