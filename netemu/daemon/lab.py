"""One lab's control process: store -> controllers -> data plane, in a level-triggered loop.

Every change (an API call, a process exit, a probe result, a timer) only *kicks* the loop; the
loop then recomputes the desired state from the store and makes the kernel match it. Running a
pass twice is harmless, so nothing depends on seeing every event.
"""
from __future__ import annotations

import asyncio
import collections
import errno
import json
import logging
import os
import signal
import socket
import time
from typing import Any, Callable, Optional

from netemu import paths
from netemu.control.cluster import Cluster
from netemu.control.nodes import internal_ip, internal_ip6, node_pod_cidr6, set_ready
from netemu.dataplane.cgroups import LabCgroups
from netemu.dataplane.kubelet import Kubelet
from netemu.dataplane.labnet import LabNet, NodeNet
from netemu.dataplane import launcher as launcher_mod
from netemu.dataplane.launcher import LauncherClient
from netemu.spec.families import dual_stack
from netemu.spec.models import K8sModel, Lab

log = logging.getLogger("netemu.daemon")

LAUNCH_TIMEOUT = float(os.environ.get("NETEMU_LAUNCH_TIMEOUT", 60))  # a request not answered by then fails
# requests waiting this long with nothing heard from the launcher: it is pinged, and killed (so restarted)
# when it does not answer the ping either
HUNG_SECONDS = float(os.environ.get("NETEMU_LAUNCHER_HUNG_SECONDS", 20))
OUTBOX_MAX = 20_000  # requests queued for the launcher at most (each pod makes two or three)
ORPHAN_STATUS_WAIT = 0.5  # how long an adopted container's exit status is waited for from the supervisor
UNKNOWN_EXIT_STATUS = 137 << 8  # the exit of a container whose status nobody could read (as if SIGKILLed)


class LabDaemon:
    def __init__(self, lab: Lab, objects: list[K8sModel], launcher: LauncherClient, cgroups: LabCgroups,
                 progress: Callable[[str], None] = lambda s: None):
        self.lab = lab
        self.name = lab.metadata.name
        self.cluster = Cluster(lab)
        from netemu.api.storage import Storage

        # the API's view of the store (watch window, cached dumps): attached before anything is stored
        self.storage = Storage(self.cluster, self._api_write)
        from netemu.daemon.journal import Journal

        # every change, appended (by the Storage, in the JSON the watch window keeps) before the API answers
        self.journal: Optional[Journal] = Journal(paths.lab_dir(self.name)) if os.path.isdir(
            paths.lab_dir(self.name)) else None
        self.storage.journal = self.journal
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
        self.bgp = None  # MetalLB's BGP mode: FRR in the nodes and routers (netemu.dataplane.bgp)
        from netemu.daemon.feeds import IngressPublisher, ZonePublisher

        self.dns = ZonePublisher(lab)
        self.ingress = IngressPublisher()
        from netemu.control.hpa import HorizontalController, HpaSettings
        from netemu.dataplane.metrics import MetricsCollector

        # metrics-server (the pods' cgroups, sampled every metric resolution) and the HPA controller
        self.metrics = MetricsCollector(cgroups, resolution=lab.spec.metric_resolution_seconds)
        self.hpa = HorizontalController(HpaSettings.from_lab(lab))
        self._kick = asyncio.Event()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future]] = []
        self._pending: dict[int, tuple[asyncio.Future, str, float]] = {}  # id -> (answer, op, when asked)
        self._outbox: collections.deque[tuple[int, bytes]] = collections.deque()
        self._abandoned: dict[int, tuple[str, float]] = {}  # given up on: id -> (op, when asked); answers undone
        self._writer_armed = False
        self._runtime_ready = asyncio.Event()  # a launcher is attached (and the sandboxes are valid)
        self._launcher_pidfd: Optional[int] = None
        self._launcher_heard = time.monotonic()
        self._restarting: Optional[asyncio.Future] = None
        self._restart_times: list[float] = []
        self._orphans: dict[int, Optional[int]] = {}  # containers of a dead launcher -> their pidfd
        self._early_exits: dict[int, int] = {}  # exits reported before the kubelet existed (resume)
        self.launcher_restarts = 0
        self.supervisor = None  # netemu.daemon.supervisor.Link, when a supervisor runs this process
        self.resumed = False  # this process resumed the lab after a crash of the one before
        self._watchdog: Optional[asyncio.Future] = None
        self._stopping = False
        self._persisted_gen = -1
        self._persisting: Optional[asyncio.Future] = None
        self._write_pending = False  # a forced write of the state file waits for the one under way
        self._last_persist = 0.0
        self.started = time.time()
        self.sync_count = 0

    # ------------------------------------------------------------------ launcher bridge
    # Requests go out through a bounded queue; a request that cannot be sent (over MAX_MESSAGE, or
    # refused by the socket) fails alone and the queue moves on. Every request has a deadline; the
    # answer to one given up on is undone when it comes (a container nobody tracks is killed, a sandbox
    # released). A launcher that exits or stops answering is restarted (see _launcher_died).
    def _on_launcher_readable(self) -> None:
        sock = self.launcher.sock
        if sock is None:
            return
        for _ in range(256):  # what is waiting, a bounded batch at a time
            try:
                data = launcher_mod.recv_msg(sock)
            except (BlockingIOError, InterruptedError):
                return
            except launcher_mod.MessageTooLarge as e:
                log.error("a message from the pod launcher was dropped: %s", e)
                continue
            except OSError as e:
                self._launcher_died(f"connection lost ({e})")
                return
            if not data:
                self._launcher_died("exited")
                return
            self._launcher_heard = time.monotonic()
            try:
                msg = json.loads(data)
            except ValueError:
                log.error("the pod launcher sent something that is not JSON: %r", data[:200])
                continue
            self._on_launcher_message(msg)
        asyncio.get_running_loop().call_soon(self._on_launcher_readable)  # more: after others had a turn

    def _on_launcher_message(self, msg: dict) -> None:
        if "event" in msg:
            if msg["event"] == "exit":
                self.on_process_exit(msg["pid"], msg["status"])
            return
        rid = msg.get("id")
        entry = self._pending.pop(rid, None)
        if entry is None:
            gone = self._abandoned.pop(rid, None)
            if gone is not None:
                self._undo(gone[0], msg)
            return
        fut = entry[0]
        if not fut.done():
            if "error" in msg:
                fut.set_exception(RuntimeError(msg["error"]))
            else:
                fut.set_result(msg)

    def on_process_exit(self, pid: int, status: int) -> None:
        """A pod process ended (reported by the launcher, or by the supervisor for the containers it
        adopted when an earlier launcher died)."""
        fd = self._orphans.pop(pid, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
        if self.kubelet is not None:
            self.kubelet.on_exit(pid, status)
        else:  # still resuming: the adoption reads these
            self._early_exits[pid] = status

    def _undo(self, op: str, msg: dict) -> None:
        """The late answer to a request given up on: nobody tracks what it made."""
        if "error" in msg:
            return
        if op == "container" and msg.get("pid"):
            log.warning("killing container process %s: its start was given up on", msg["pid"])
            try:
                os.kill(int(msg["pid"]), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        elif op in ("sandbox", "adopt_sandbox") and msg.get("sandbox"):
            sb = msg["sandbox"]
            asyncio.ensure_future(self._quiet(self.launch("release", fds=[sb["uts"], sb["mnt"]])))

    @staticmethod
    async def _quiet(coro) -> None:
        try:
            await coro
        except Exception as e:
            log.debug("ignored: %s", e)

    async def launch(self, op: str, **fields: Any) -> dict:
        """Ask the launcher for a sandbox or a process; returns its answer ({"pid": ...} once a
        process's set-up is done, {"sandbox": ...} for a sandbox). Raises RuntimeError with the reason
        when the request cannot be made or is not answered in time."""
        if self._stopping and op == "release":
            return {"released": True}  # the launcher and its descriptors go with the lab
        if not self._runtime_ready.is_set() and not fields.pop("_now", False):
            try:  # a restarting launcher: wait for it (and for the sandboxes it must re-open)
                await asyncio.wait_for(self._runtime_ready.wait(), LAUNCH_TIMEOUT)
            except asyncio.TimeoutError:
                raise RuntimeError("the pod launcher is restarting") from None
        fields.pop("_now", None)
        if len(self._outbox) >= OUTBOX_MAX:
            raise RuntimeError(f"the pod launcher has {len(self._outbox)} requests waiting: not taking more now")
        self.launcher._next += 1
        rid = self.launcher._next
        # encoded now, not when queued: a sandbox re-opened after a launcher restart is updated in place
        data = json.dumps({"op": op, "id": rid, **fields}).encode()
        if len(data) > launcher_mod.MAX_MESSAGE:
            raise RuntimeError(f"the request is {len(data) / (1 << 20):.1f} MiB, over the pod launcher's limit of "
                               f"{launcher_mod.MAX_MESSAGE >> 20} MiB")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        asked = time.monotonic()
        self._pending[rid] = (fut, op, asked)
        self._outbox.append((rid, data))
        self._flush_outbox()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), LAUNCH_TIMEOUT)
        except asyncio.TimeoutError:
            raise RuntimeError(f"the pod launcher did not answer within {LAUNCH_TIMEOUT:g}s") from None
        finally:
            if not fut.done():  # given up on (deadline, or the caller was cancelled)
                self._pending.pop(rid, None)
                if any(r == rid for r, _ in self._outbox):
                    self._outbox = collections.deque((r, d) for r, d in self._outbox if r != rid)
                else:
                    self._abandoned[rid] = (op, asked)
                fut.cancel()

    def _flush_outbox(self) -> None:
        """Send queued requests; when the launcher's socket is full, wait until it drains. A request
        the socket refuses fails alone: the queue moves on."""
        sock = self.launcher.sock
        if sock is None:
            return
        loop = asyncio.get_running_loop()
        while self._outbox:
            rid, data = self._outbox[0]
            try:
                launcher_mod.send_msg(sock, data)
            except BlockingIOError:
                if not self._writer_armed:
                    loop.add_writer(sock.fileno(), self._flush_outbox)
                    self._writer_armed = True
                return
            except (launcher_mod.MessageTooLarge, OSError) as e:
                self._outbox.popleft()
                entry = self._pending.pop(rid, None)
                if isinstance(e, OSError) and e.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF):
                    if entry is not None and not entry[0].done():
                        entry[0].set_exception(RuntimeError(f"the pod launcher is gone ({e})"))
                    self._launcher_died(f"connection lost ({e})")
                    return
                log.error("a request to the pod launcher could not be sent: %s", e)
                if entry is not None and not entry[0].done():
                    entry[0].set_exception(RuntimeError(f"the request could not be sent to the pod launcher: {e}"))
                continue
            self._outbox.popleft()
        if self._writer_armed:
            loop.remove_writer(sock.fileno())
            self._writer_armed = False

    def _attach_launcher(self, pid: int, sock: socket.socket) -> None:
        """Start talking to a launcher (a new one, or one a restarted control process adopts)."""
        loop = asyncio.get_running_loop()
        self.launcher.pid, self.launcher.sock = pid, sock
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._on_launcher_readable)
        self._launcher_heard = time.monotonic()
        try:
            self._launcher_pidfd = os.pidfd_open(pid)
            loop.add_reader(self._launcher_pidfd, self._on_launcher_pidfd, pid)
        except OSError:  # gone already: the socket says so too
            self._launcher_pidfd = None
        if self.supervisor is not None:
            self.supervisor.launcher(pid, sock)

    def _on_launcher_pidfd(self, pid: int) -> None:
        if pid == self.launcher.pid:
            self._launcher_died("exited")

    def _detach_launcher(self) -> None:
        loop = asyncio.get_running_loop()
        sock = self.launcher.sock
        if sock is not None:
            for remove in (loop.remove_reader, loop.remove_writer):
                try:
                    remove(sock.fileno())
                except (ValueError, OSError):
                    pass
            sock.close()
        self._writer_armed = False
        if self._launcher_pidfd is not None:
            loop.remove_reader(self._launcher_pidfd)
            os.close(self._launcher_pidfd)
            self._launcher_pidfd = None
        self.launcher.sock = None

    def _launcher_died(self, why: str) -> None:
        """The launcher is gone (killed, crashed): fail what it was asked, restart it, re-open the pods'
        sandboxes in the new one. The containers it ran keep running: the supervisor (a child
        subreaper) inherits them and reports their exits; until then pidfds watch them."""
        if self._stopping or self.launcher.sock is None:
            return
        pid = self.launcher.pid
        log.error("the pod launcher (pid %s) %s: restarting it", pid, why)
        self._detach_launcher()
        try:
            os.waitpid(pid, os.WNOHANG)  # ours, unless it was adopted from an earlier control process
        except (ChildProcessError, OSError):
            pass
        self._runtime_ready.clear()
        for fut, op, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(RuntimeError(f"the pod launcher {why}; it is being restarted"))
        self._pending.clear()
        self._outbox.clear()
        self._abandoned.clear()
        self.launcher_restarts += 1
        if self.kubelet is not None:
            from netemu.daemon import recovery

            for pid_ in recovery.orphaned_containers(self.kubelet):
                self._watch_orphan(pid_)
            recovery.invalidate_sandboxes(self.kubelet)
        self._restarting = asyncio.ensure_future(self._restart_launcher())

    async def _restart_launcher(self) -> None:
        delay = min(30.0, 0.5 * (2 ** max(0, self._recent_launcher_restarts() - 1)))
        if delay > 0.5:
            log.warning("the pod launcher restarts often: waiting %.1fs", delay)
        await asyncio.sleep(delay if self.launcher_restarts > 1 else 0)
        while not self._stopping:
            try:
                pid, sock = await asyncio.to_thread(launcher_mod.start)
                break
            except Exception:
                log.exception("starting the pod launcher")
                await asyncio.sleep(2)
        else:
            return
        if self._stopping:
            sock.close()
            return
        self._attach_launcher(pid, sock)
        log.info("pod launcher restarted (pid %s)", pid)
        if self.kubelet is not None:
            from netemu.daemon import recovery

            try:
                await recovery.reopen_sandboxes(self)
            except Exception:
                log.exception("re-opening the pods' sandboxes")
        self._runtime_ready.set()
        self.kick()

    def _recent_launcher_restarts(self) -> int:
        now = time.monotonic()
        self._restart_times = [t for t in self._restart_times if now - t < 60] + [now]
        return len(self._restart_times)

    def _watch_orphan(self, pid: int) -> None:
        """A container the dead launcher ran: its exit comes from the supervisor, or (if nobody reaps it
        for us) from its pidfd, with an unknown status."""
        if pid in self._orphans:
            return
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already
            self._orphans[pid] = None
            loop.call_later(ORPHAN_STATUS_WAIT, self._orphan_final, pid)
            return
        except OSError as e:  # (out of descriptors): its exit comes from the supervisor only
            log.warning("cannot watch container process %s: %s", pid, e)
            return
        self._orphans[pid] = fd
        loop.add_reader(fd, self._orphan_ended, pid, fd)

    def _orphan_ended(self, pid: int, fd: int) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(fd)
        os.close(fd)
        if self._orphans.get(pid) == fd:
            self._orphans[pid] = None
            # the supervisor reaps it and says how it ended, a moment later
            loop.call_later(ORPHAN_STATUS_WAIT, self._orphan_final, pid)

    def _orphan_final(self, pid: int) -> None:
        if pid in self._orphans and self._orphans[pid] is None:
            del self._orphans[pid]
            if self.kubelet is not None and pid in self.kubelet.by_pid:
                log.warning("container process %s ended; its exit status is unknown", pid)
                self.kubelet.on_exit(pid, UNKNOWN_EXIT_STATUS)

    async def _watch_launcher(self) -> None:
        """A launcher that stops answering (stopped, wedged) is killed, and so restarted: asked to
        answer a ping once requests have waited HUNG_SECONDS with nothing heard from it."""
        while not self._stopping:
            await asyncio.sleep(2.0)
            now = time.monotonic()
            for rid, (_, t) in list(self._abandoned.items()):  # never answered (dropped): forgotten
                if now - t > 2 * LAUNCH_TIMEOUT:
                    del self._abandoned[rid]
            if self.launcher.sock is None or not self._runtime_ready.is_set():
                continue
            oldest = min([t for _, _, t in self._pending.values()] + [t for _, t in self._abandoned.values()],
                         default=now)
            if now - oldest < HUNG_SECONDS or now - self._launcher_heard < HUNG_SECONDS:
                continue
            try:
                await asyncio.wait_for(self.launch("ping", _now=True), HUNG_SECONDS)
            except (RuntimeError, asyncio.TimeoutError) as e:
                if self.launcher.sock is not None and not self._stopping:
                    log.error("the pod launcher (pid %s) does not answer (%s): killing it", self.launcher.pid, e)
                    try:
                        os.kill(self.launcher.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self._launcher_died("did not answer")

    # ------------------------------------------------------------------ lifecycle
    def router_nets(self) -> list:
        from netemu.dataplane.labnet import RouterNet

        dual = dual_stack(self.lab.spec)  # a dual-stack lab's routers have their ip6 on the segment too
        return [RouterNet(r.name, r.ip, r.ip6 if dual else None) for r in self.lab.spec.routers or []]

    def make_bgp(self) -> None:
        """The FRR side of MetalLB's BGP mode (a build and a resume make it); its processes sit in the
        lab's cgroup `frr`."""
        from netemu.dataplane.bgp import BgpSpeakers

        cg = self.cgroups.create("frr") if self.cgroups is not None else None
        self.bgp = BgpSpeakers(self.name, self.net.node_netns, tuple(cg.dirs) if cg is not None else ())

    def node_nets(self) -> list[NodeNet]:
        dual = dual_stack(self.lab.spec)
        return [NodeNet(n.metadata.name, internal_ip(n), n.spec.pod_cidr,
                        *(_node_ipv6(self.lab, n) if dual else (None, None))) for n in
                sorted(self.cluster.store.list("Node"), key=lambda n: _node_order(self.lab, n.metadata.name))]

    def make_net(self) -> LabNet:
        """The lab's wires as the Lab document and the Nodes say (a build and a resume make it)."""
        spec = self.lab.spec
        dual = dual_stack(spec)
        return LabNet(self.name, spec.network, spec.gateway, spec.service_cidr, self.node_nets(),
                      self.router_nets(), network6=spec.network6 if dual else None,
                      gateway6=spec.gateway6 if dual else None, service_cidr6=spec.service_cidr6 if dual else None)

    async def build(self) -> None:
        """Bring the lab up. On any failure the caller tears everything down."""
        spec = self.lab.spec
        self.cluster.bootstrap()
        self.net = self.make_net()
        self.progress(f"building the lab network: {len(self.net.nodes)} nodes"
                      + (f", {len(self.net.routers)} router{'s' * (len(self.net.routers) != 1)}"
                         if self.net.routers else ""))
        t0 = time.perf_counter()
        # the launcher boots while the wires are made; it only needs /run/netns to be a mount
        # point already, so that its private mount namespace can leave the netns mounts out
        # (see launcher._private_mounts): the lab's first namespace makes it one
        await asyncio.to_thread(self.net.create_namespaces)
        launcher = self.launcher.pid, self.launcher.sock = launcher_mod.start()
        await asyncio.to_thread(self.net.build)
        log.info("lab network built in %.3fs", time.perf_counter() - t0)
        if spec.uplink:  # a real interface on the segment; full_teardown gives it back
            from netemu.dataplane import uplink

            self.progress(await asyncio.to_thread(uplink.attach, self.name, spec.uplink))
        self._attach_launcher(*launcher)
        self._runtime_ready.set()
        self._watchdog = asyncio.ensure_future(self._watch_launcher())
        self.kubelet = self._make_kubelet()
        self._build_proxy()
        from netemu.dataplane.speaker import Speakers

        # the node's kernel answers ARP for the IPs its speaker announces, except in IPVS mode, where
        # the IPs sit on kube-ipvs0 behind arp_ignore and the speaker replies itself (speaker.py)
        self.speakers = Speakers({n: self.net.node_netns(n) for n in self.net.nodes},
                                 kernel_reply=self.lab.spec.proxy_mode != "ipvs")
        self.make_bgp()
        for node in self.cluster.store.list("Node"):
            self.kubelet.set_node_up(node.metadata.name, True)
            set_ready(self.cluster, node, True, "KubeletReady", "kubelet is posting ready status")
        self.cluster.apply(self._addons())
        results = self.cluster.apply(self.initial_objects)
        for r in results:
            self.progress(str(r))
        self.kick()

    async def resume(self, hello: dict, extra: dict) -> None:
        """Take the lab over after a crash of the control process before this one: the objects from
        the state file (given as initial_objects), the kernel objects, launcher and containers adopted
        (netemu.daemon.recovery)."""
        from netemu.daemon import recovery

        await recovery.resume(self, hello, extra)

    async def stop_for_restart(self) -> None:
        """A resume that failed: stop this process's tasks and leave the lab's kernel objects, launcher
        and pods as they are, for the next attempt."""
        self._stopping = True
        for task in (self._watchdog, self._restarting):
            if task is not None:
                task.cancel()
        if self.speakers is not None:
            try:
                self.speakers.close()
            except Exception:
                pass

    def _make_kubelet(self) -> Kubelet:
        """The kubelet (every node's), as a build and a resume make it."""
        return Kubelet(self.name, self.cluster, self.net, self.cgroups, self.launch, self.kick,
                       lambda: self.launcher.pid, sa_files=self.sa_files)

    def _addons(self) -> list:
        from netemu.control import addons

        from netemu.control.kubeadm import kube_proxy_daemonset
        from netemu.daemon.listeners import control_plane

        cp = control_plane(self.lab)
        objs = addons.kubernetes_service(self.lab, cp.ip) if cp else []
        return objs + addons.coredns(self.lab, paths.api_socket(self.name)) + [
            kube_proxy_daemonset(self.lab.spec.proxy_mode)]

    def _build_proxy(self) -> None:
        """kube-proxy for every node, in the Lab document's mode (IPVS only where the kernel has it)."""
        from netemu.dataplane.proxy.kubeproxy import KubeProxy

        if self.lab.spec.proxy_mode == "ipvs":
            from netemu.dataplane.proxy.ipvs.kernel import unavailable_message

            problem = unavailable_message()
            if problem:
                raise RuntimeError(problem)
        self.proxy = KubeProxy(self.lab, self.net)
        self.cluster.store.listeners.append(self.proxy.note_change)

    def kick(self) -> None:
        self._kick.set()

    def _api_write(self) -> None:
        """A write through the API: a pass acts on it now (the journal already holds it)."""
        self._kick.set()

    def flush_journal(self) -> None:
        """Before an answer leaves: what the client is told about is in the journal."""
        if self.journal is not None:
            self.journal.flush()

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
        await self._sync_bgp()
        self.dns.update(self.cluster.store)
        self.ingress.update(self.cluster.store)
        self._persist()
        self._check_waiters()

    def _sync_speakers(self) -> None:
        if self.speakers is not None:
            from netemu.control import metallb_l2

            self.speakers.sync(metallb_l2.announcements(self.cluster).by_node)

    def bgp_desired(self) -> tuple[dict, dict, dict]:
        """(node -> SpeakerConfig, router -> RouterConfig, pool CIDR -> router address): what FRR and the
        host's routes should be, from the last reconcile. With an upstream router the host learns the IPv4
        pools over BGP; its session is IPv4 only, so IPv6 pools keep their static route."""
        from netemu.control import metallb_bgp, metallb_frr, metallb_l2
        from netemu.control.metallb import load_config

        config = load_config(self.cluster)
        ann = metallb_bgp.announcements(self.cluster)
        node_ips = {n.name: n.ip for n in self.net.nodes.values()}
        node_ips6 = {n.name: n.ip6 for n in self.net.nodes.values() if n.ip6}
        passwords = self._bgp_passwords(config)
        speakers = metallb_frr.speaker_configs(ann, config, node_ips, metallb_l2.speakers_alive(self.cluster),
                                               passwords)
        up = self._upstream_router()
        dual = dual_stack(self.lab.spec)
        routers = {r.name: metallb_frr.router_config(r.name, r.ip, r.asn, config, node_ips, passwords,
                                                     self._upstream_session(r) if r is up else None,
                                                     r.ip6 if dual else None, node_ips6)
                   for r in self.lab.spec.routers or []}
        static = self._pool_routes(config)
        if up is not None:
            static = {cidr: via for cidr, via in static.items() if ":" in cidr}
        return speakers, routers, static

    def _upstream_router(self):
        """The router with the host's BGP session (``upstream: true``; validation allows one), or None."""
        return next((r for r in self.lab.spec.routers or [] if r.upstream), None)

    def _upstream_session(self, router) -> tuple[str, int]:
        from netemu.spec.models import DEFAULT_HOST_ASN

        return self.lab.spec.gateway, router.host_asn if router.host_asn is not None else DEFAULT_HOST_ASN

    def bgp_host(self, config=None):
        """The host's bgpd for the upstream router (netemu.control.metallb_frr.HostConfig), or None."""
        from netemu.control.metallb import load_config
        from netemu.control.metallb_frr import HostConfig

        r = self._upstream_router()
        if r is None:
            return None
        gateway, asn = self._upstream_session(r)
        pools = self._bgp_pools(load_config(self.cluster) if config is None else config)
        return HostConfig("host", asn, gateway, r.ip, r.asn, tuple(pools), r.name)

    def _bgp_passwords(self, config) -> dict[str, str]:
        """The peers' passwordSecrets (metallb-system, kubernetes.io/basic-auth, key password)."""
        import base64

        out = {}
        for p in (config.bgp.peers if config is not None and config.bgp is not None else []):
            if p.password_secret and not p.password:
                try:
                    sec = self.cluster.store.get("Secret", "metallb-system", p.password_secret)
                    out[p.name] = base64.b64decode((sec.data or {}).get("password", "")).decode()
                except Exception:
                    pass
        return out

    def _pool_routes(self, config) -> dict[str, str]:
        """The host routes each pool MetalLB announces over BGP via the router its nodes peer with (the
        first router named by a BGPPeer, else the first router), when the pool is outside the lab network.
        A dual-stack lab's IPv6 ranges go via a router's ip6 (the first one a BGPPeer names, else the
        first router's), the IPv4 ones via its ip."""
        import ipaddress

        routers = self.lab.spec.routers or []
        if not routers or config is None or config.bgp is None or not config.bgp.peers:
            return {}
        peer_ips = {ipaddress.ip_address(p.address) for p in config.bgp.peers}
        via = next((r.ip for r in routers if ipaddress.ip_address(r.ip) in peer_ips), routers[0].ip)
        out = {cidr: via for cidr in self._bgp_pools(config)}
        six = [r.ip6 for r in routers if r.ip6] if dual_stack(self.lab.spec) else []
        if six:
            via6 = next((a for a in six if ipaddress.ip_address(a) in peer_ips), six[0])
            out.update({cidr: via6 for cidr in self._bgp_pools(config, 6)})
        return out

    def _bgp_pools(self, config, version: int = 4) -> list[str]:
        """The ranges of one IP version of the pools MetalLB announces over BGP, outside the lab network
        (network6 for IPv6: inside it the host reaches an address on its own link)."""
        import ipaddress

        if config is None:
            return []
        if version == 6 and not dual_stack(self.lab.spec):
            return []
        lab_net = ipaddress.ip_network(self.lab.spec.network if version == 4 else self.lab.spec.network6)
        out = []
        for pool in config.pools:
            if not pool.bgp:
                continue
            for cidr in pool.cidrs:
                if cidr.version == version and not cidr.overlaps(lab_net) and str(cidr) not in out:
                    out.append(str(cidr))
        return out

    async def _sync_bgp(self) -> None:
        if self.bgp is None:
            return
        speakers, routers, host_routes = self.bgp_desired()
        host = self.bgp_host()
        if not speakers and not routers and not self.bgp.instances and not self.bgp.host_routes:
            return
        from netemu.dataplane import frr

        problem = frr.available()
        if problem:
            if problem not in self.bgp.warnings:
                self.bgp.warnings.append(problem)
                log.error("MetalLB BGP mode: %s", problem)
            return
        await asyncio.to_thread(self.bgp.sync, speakers, routers, host_routes, host)

    def set_speaker(self, node: str, alive: bool) -> None:
        """Kill or restart one node's speaker (failure injection): its IPs move elsewhere."""
        from netemu.control import metallb_l2

        self.cluster.store.get("Node", "", node)
        if alive:
            self.speakers.start(node)
        else:
            self.speakers.kill(node)
            if self.bgp is not None:
                self.bgp.kill(node)  # its FRR dies with it: the router's BFD or hold timer notices
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
            if self.bgp is not None:  # and its FRR (the cable is cut already: no goodbye reaches the router)
                await asyncio.to_thread(self.bgp.kill, node)
        metallb_l2.set_speaker_alive(self.cluster, node, up)
        # fail over at once: every node already DNATs every LB IP, only the ARP owner moves
        self.cluster.reconcile()
        self._sync_speakers()
        self.kick()

    # ------------------------------------------------------------------ persistence
    def _persist(self, force: bool = False) -> None:
        """Flush the journal (every pass), and write a snapshot when it is due: with the journal, every
        CHECKPOINT_SECONDS or CHECKPOINT_CHANGES changes (whichever comes first) bound a restart's replay;
        without one (no lab directory), at most every half second."""
        gen = self.cluster.store.generation["*"]
        now = time.time()
        force, self._write_pending = force or self._write_pending, False
        if self.journal is not None:
            self.journal.flush()
        if not force and gen == self._persisted_gen:
            return
        if not force:
            if self.journal is None:
                due = self._last_persist + 0.5
            elif self.journal.since_rotate >= max(CHECKPOINT_CHANGES, len(self.cluster.store)):
                due = now
            else:
                due = self._last_persist + CHECKPOINT_SECONDS
            if now < due:
                self.cluster.wake_at(due)
                return
        if self._persisting is not None and not self._persisting.done():
            # the last write is still going: a pass once it is done writes what changed since
            self._write_pending = self._write_pending or force
            if not getattr(self._persisting, "_netemu_kick", False):
                self._persisting._netemu_kick = True
                self._persisting.add_done_callback(lambda f: self.kick())
            return
        data, covered = self._state_data(), self._rotate_journal()
        self._persisted_gen, self._last_persist = gen, now
        # the cached dumps are never changed in place, so a worker thread can encode them while the
        # loop serves the API (encoding a big lab's objects takes tens of milliseconds)
        self._persisting = asyncio.get_running_loop().run_in_executor(None, self._write_snapshot, data, covered)

    def _state_data(self) -> dict:
        return {"lab": self.lab.dump(), "daemon_pid": os.getpid(), "launcher_pid": self.launcher.pid,
                "last_rv": self.cluster.store.last_rv,
                "objects": [self.storage.dump(o) for o in self.cluster.store]}  # the API's cached dumps

    def persist_now(self) -> None:
        """Write the state file at once (what a restarted control process resumes from)."""
        self._persisted_gen, self._last_persist = self.cluster.store.generation["*"], time.time()
        self._write_snapshot(self._state_data(), self._rotate_journal())

    def _rotate_journal(self) -> Optional[int]:
        return self.journal.rotate() if self.journal is not None else None

    def _write_snapshot(self, data: dict, covered: Optional[int]) -> None:
        """The state file, then the journal segments it holds removed (any thread)."""
        from netemu.daemon import memory

        if _write_state(paths.state_file(self.name), data) and covered is not None:
            self.journal.drop_through(covered)
        memory.trim()  # encoding the state freed megabytes: back to the kernel

    # ------------------------------------------------------------------ teardown
    async def teardown(self) -> None:
        self._stopping = True
        if self.supervisor is not None:
            self.supervisor.stopping()  # from now on an exit of this process is the end of the lab
        for task in (self._watchdog, self._restarting):
            if task is not None:
                task.cancel()
        self._runtime_ready.set()  # what waits for a restarting launcher goes on (and fails) now
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
        if self.bgp is not None:
            try:
                await asyncio.to_thread(self.bgp.close)
            except Exception:
                log.exception("stopping FRR")
        if self.proxy is not None:
            try:
                self.proxy.close()
            except Exception:
                log.exception("stopping kube-proxy")


CHECKPOINT_SECONDS = 300.0  # the journal holds every change: a checkpoint only bounds the replay
CHECKPOINT_CHANGES = 5000


def _write_state(path: str, data: dict) -> bool:
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
        return True
    except FileNotFoundError:  # the lab is being removed
        return False


def _node_ipv6(lab: Lab, node) -> tuple[Optional[str], Optional[str]]:
    """A dual-stack lab's node: its IPv6 address (its InternalIP of that family, else the Lab
    document's ip6) and its IPv6 pod subnet (spec.podCIDRs[1]); None for what it lacks."""
    ip6 = internal_ip6(node) or next((n.ip6 for n in lab.spec.nodes or [] if n.name == node.metadata.name), None)
    return ip6, node_pod_cidr6(node)


def _node_order(lab: Lab, name: str) -> int:
    for i, n in enumerate(lab.spec.nodes or []):
        if n.name == name:
            return i
    return 1 << 30


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
