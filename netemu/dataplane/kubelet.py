"""The kubelet of every node: makes the pods the control plane bound to a node real.

For each bound pod with an address it creates the network namespace and veth (in batches),
writes resolv.conf/hosts, forks the sandbox and the containers from the launcher, restarts
containers that exit (crash-loop back-off), makes a pod's sandbox again when its pause process dies
(SandboxChanged, in the pod's own network namespace), runs probes, and reports status back into the
store. A node that is down has a dead kubelet: nothing there is restarted, probed or reported.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from netemu import paths, procutil
from netemu.control import podenv
from netemu.control.kubeadm import is_control_process_pod
from netemu.control.pods import is_terminating, set_condition
from netemu.control.store import rfc3339
from netemu.dataplane import nsutil, podfiles, probes, resources, rootfs, security
from netemu.dataplane.cgroups import LabCgroups, kill_all
from netemu.dataplane.launcher import SANDBOX_GONE
from netemu.dataplane.labnet import LabNet, NodeNet, PodNet
from netemu.dataplane.stdio import ContainerStdio
from netemu.spec.models import (
    Container,
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    Pod,
    Probe,
)
from netemu.workloads import resolve as resolve_program

log = logging.getLogger("netemu.kubelet")

PodKey = tuple[str, str]
CREATE_CHUNK = 40  # pods wired per iproute2 batch while the previous batch's processes start


@dataclass
class ContainerRt:
    spec: Container
    pid: Optional[int] = None
    started_at: Optional[float] = None
    restart_count: int = 0
    last_terminated: Optional[ContainerStateTerminated] = None
    waiting_reason: Optional[str] = "ContainerCreating"
    waiting_message: Optional[str] = None
    next_start: float = 0.0
    backoff: float = 0.0
    ready: bool = False
    started: bool = False  # startup probe passed (or none)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    probe_tasks: list[asyncio.Task] = field(default_factory=list)
    kill_reason: Optional[str] = None
    warned: bool = False
    env: dict = field(default_factory=dict)  # what it was started with (exec gets the same)
    stdio: Optional[ContainerStdio] = None  # stdin: true / tty: true: its pipes or pty, for attach
    security: Optional[dict] = None  # its user and capabilities (netemu.dataplane.security), exec gets the same
    init: bool = False  # an init container: runs to completion, in order, before the app containers
    sidecar: bool = False  # an init container with restartPolicy Always: started in order, then kept running
    done: bool = False  # an init container that exited 0


@dataclass
class PodRt:
    namespace: str
    name: str
    uid: str
    node: str
    netns: str
    cgroup_id: str
    # the launcher's descriptors on the pod's UTS and mount namespaces, and its pause process ("pause",
    # "pause_started") unless the pod is privileged
    sandbox: Optional[dict] = None
    pause: int = 0  # the pause process whose exit is watched (Kubelet.by_pause)
    sandbox_dead: bool = False  # its pause process died: nothing starts until a new sandbox is made
    sandbox_retry: float = 0.0  # when a new sandbox that failed is tried again
    containers: dict[str, ContainerRt] = field(default_factory=dict)
    stopping: bool = False
    started_at: float = 0.0
    oom_kills: int = 0  # the kernel's count of OOM kills in the pod's cgroup, as last seen
    status_facts: Optional[tuple] = None  # (pod resourceVersion, container facts) of the last status push

    @property
    def key(self) -> PodKey:
        return (self.namespace, self.name)


class Kubelet:
    def __init__(self, lab: str, cluster, net: LabNet, cgroups: LabCgroups, launch: Callable,
                 on_change: Callable[[], None], launcher_pid: Callable[[], int],
                 sa_files: Optional[Callable[[Pod], Optional[dict[str, bytes]]]] = None):
        self.lab = lab
        # sa_files(pod) -> {"token", "ca.crt", "namespace": bytes} or None: the pod's ServiceAccount
        # volume (None, or no callable: no /var/run/secrets/kubernetes.io/serviceaccount)
        self.sa_files = sa_files
        self.cluster = cluster
        self.net = net
        self.cgroups = cgroups
        self.launch = launch  # async (op, **fields) -> the launcher's answer
        self.launcher_pid = launcher_pid
        self.changes = 0  # the kubelet's own state changes (exits, probes, starts): see sync()
        self._on_change = on_change
        self._synced: Optional[tuple] = None
        self._synced_at = 0.0
        self._due = float("inf")
        self.pods: dict[PodKey, PodRt] = {}
        self.by_pid: dict[int, tuple[PodRt, Optional[ContainerRt]]] = {}
        self.by_pause: dict[int, PodRt] = {}  # the sandboxes' pause processes: their exit is the sandbox's end
        self._resandboxing: dict[PodKey, asyncio.Task] = {}  # pods getting a new sandbox
        self._closing = False  # the lab goes down: no sandbox is made again
        self.node_up: dict[str, bool] = {}
        self.failed_create: dict[PodKey, float] = {}
        self._stops: dict[PodKey, asyncio.Task] = {}
        # exits the launcher reported before the start's answer was handled (a container that exits at
        # once, `echo done`): kept until the start registers the pid
        self._early_exits: dict[int, int] = {}

    def on_change(self) -> None:
        self.changes += 1
        self._on_change()

    # ------------------------------------------------------------------ the sync pass
    async def sync(self) -> None:
        """Start, stop and report pods. A pass in which no pod or node changed, nothing of the
        kubelet's own changed (exits, probes) and no timer is due has nothing to do: a big lab then
        costs nothing per pass (a full pass runs at least every second all the same, as a safety net)."""
        store = self.cluster.store
        now = time.time()
        stamp = (store.generation["Pod"], store.generation["Node"], self.changes, tuple(sorted(self.node_up.items())))
        if stamp == self._synced and now < self._due and now - self._synced_at < 1.0:
            return
        await self._sync_all()
        self._synced, self._synced_at = stamp, now
        self._due = min([*self.failed_create.values(), *(c.next_start for rt in self.pods.values()
                                                           for c in rt.containers.values() if c.pid is None),
                         *(rt.sandbox_retry for rt in self.pods.values() if rt.sandbox_dead)],
                        default=float("inf"))

    async def _sync_all(self) -> None:
        store = self.cluster.store
        api = {(p.metadata.namespace, p.metadata.name): p for p in store.list("Pod")}
        now = time.time()

        # pods whose API object is gone (or was replaced) are stopped
        for key, rt in list(self.pods.items()):
            pod = api.get(key)
            if (pod is None or pod.metadata.uid != rt.uid) and not rt.stopping and self.node_up.get(rt.node):
                self._stop(rt, grace=0, finalize=None)

        to_create: list[Pod] = []
        progress = self.cluster.progress  # a long pass over a big lab is progress, not a wedged loop
        for key, pod in api.items():
            progress()
            node = pod.spec.node_name
            if not node or not self.node_up.get(node):
                continue
            rt = self.pods.get(key)
            if is_terminating(pod):
                if rt is None:
                    self.cluster.finalize_pod(pod)
                elif not rt.stopping:
                    grace = float((pod.metadata.annotations or {}).get("netemu.dev/grace-seconds", "30"))
                    self._stop(rt, grace=grace, finalize=pod)
                continue
            if rt is None:
                if is_control_process_pod(pod):
                    continue  # kube-system's mirror and kube-proxy pods: the control process is their program
                if pod.status.pod_ip and now >= self.failed_create.get(key, 0) and key not in self._stops:
                    to_create.append(pod)
                continue
            if rt.stopping or pod.metadata.uid != rt.uid:
                continue
            self._watch_pause(rt)
            if rt.sandbox_dead or rt.sandbox is None:
                # the pause process died (a user's kill -9, the OOM killer): kubelet's SandboxChanged
                if (rt.sandbox is not None or sandbox_wanted(pod, rt)) and now >= rt.sandbox_retry \
                        and rt.key not in self._resandboxing and not self._closing:
                    self._resandboxing[rt.key] = asyncio.create_task(self._remake_sandbox(rt))
                continue
            for c in rt.containers.values():
                if c.pid is None and c.next_start <= now and not rt.stopping and _startable(rt, c):
                    await self._start_container(rt, pod, c)
        if to_create:
            await self._create(to_create)
        for key, pod in api.items():
            progress()
            rt = self.pods.get(key)
            if rt is not None and self.node_up.get(rt.node) and not rt.stopping:
                self._push_status(pod, rt)
        # crash-loop timers: ask to be woken when the next restart is due
        due = [c.next_start for rt in self.pods.values() for c in rt.containers.values()
               if c.pid is None and now < c.next_start < float("inf") and not rt.stopping]
        if due:
            self.cluster.wake_at(min(due))

    # ------------------------------------------------------------------ creating pods
    async def _create(self, pods: list[Pod]) -> None:
        """Create pods in chunks, pipelined: while the launcher forks one chunk's processes,
        iproute2 wires the next chunk's namespaces (two cores, two kinds of work)."""
        t0 = time.perf_counter()
        chunks = [pods[i:i + CREATE_CHUNK] for i in range(0, len(pods), CREATE_CHUNK)]
        wiring = asyncio.create_task(self._wire(chunks[0]))
        for i in range(len(chunks)):
            ready = await wiring
            if i + 1 < len(chunks):
                wiring = asyncio.create_task(self._wire(chunks[i + 1]))
            await asyncio.gather(*(self._start_pod(p, binds) for p, binds in ready))
            self._push_started(p for p, _ in ready)  # each chunk's pods are Running as soon as they are
            self.cluster.progress()
        log.info("created %d pods in %.2fs", len(pods), time.perf_counter() - t0)

    def _push_started(self, pods) -> None:
        for pod in pods:
            rt = self.pods.get((pod.metadata.namespace, pod.metadata.name))
            current = self.cluster.store.find("Pod", pod.metadata.namespace, pod.metadata.name)
            if rt is not None and current is not None and current.metadata.uid == rt.uid and not rt.stopping \
                    and self.node_up.get(rt.node):
                self._push_status(current, rt)

    async def _wire(self, pods: list[Pod]) -> list[tuple[Pod, list]]:
        """Network namespaces, veths, cgroups and /etc files for some pods, in a worker thread;
        returns (pod, bind mounts) for those that worked."""
        lab = self.cluster.lab

        def work(group: list[Pod]) -> list[tuple[Pod, list]]:
            nets = []
            for pod in group:
                node = self.net.nodes[pod.spec.node_name]
                nets.append(pod_net(pod, node))
                self.cgroups.create(pod.metadata.uid)
                # requests and limits, as kubelet sets the pod-level cgroup (raises if refused)
                resources.apply_pod_resources(self.cgroups, pod.metadata.uid, pod)
            self.net.add_pods(nets)

        def files(group: list[Pod]) -> list[list]:
            return [podfiles.write(paths.netns_etc(self.net.pod_netns(p.metadata.namespace, p.metadata.name)), p, lab,
                                   sa_files=self._service_account_files(p), sa_dir=self._sa_dir(p.metadata.uid))
                    for p in group]

        # files and wires in two threads: both mostly wait on the kernel
        wired, binds = await asyncio.gather(asyncio.to_thread(work, pods), asyncio.to_thread(files, pods),
                                            return_exceptions=True)
        if not isinstance(wired, BaseException) and not isinstance(binds, BaseException):
            return list(zip(pods, binds))
        keys = [(p.metadata.namespace, p.metadata.name) for p in pods]
        if isinstance(wired, BaseException):
            # add_pods removed the namespaces it had made, and only those: a namespace that was there
            # before is not this sandbox's to delete; the files written for these pods go
            e = wired
            await asyncio.to_thread(self.net.discard_files, keys)
        else:  # the namespaces are this call's own
            e = binds
            await asyncio.to_thread(self.net.remove_pods, keys)
        if not isinstance(e, Exception):
            raise e
        if len(pods) == 1:
            await self._create_failed(pods[0], f"Failed to create pod sandbox: {e}")
            return []
        log.warning("pod network batch failed (%s); retrying one by one", e)  # one bad pod must not block the others
        ok = []
        for pod in pods:
            ok += await self._wire([pod])
        return ok

    def _service_account_files(self, pod: Pod) -> Optional[dict[str, bytes]]:
        """The token volume's files, unless automountServiceAccountToken is false (pod, then SA)."""
        if self.sa_files is None:
            return None
        sa = self.cluster.store.find("ServiceAccount", pod.metadata.namespace or "default",
                                     podfiles.service_account_name(pod))
        if not podfiles.automount_token(pod, sa):
            return None
        files = self.sa_files(pod)
        if files is not None:  # the tokens' parent directory: root's only
            os.makedirs(os.path.dirname(self._sa_dir(pod.metadata.uid)), mode=0o700, exist_ok=True)
        return files

    def _sa_dir(self, uid: Optional[str]) -> str:
        """The host side of a pod's token volume: under the lab's run directory (gone at `down`)."""
        return os.path.join(paths.lab_dir(self.lab), "serviceaccounts", uid or "_")

    def _remove_sa_dir(self, uid: Optional[str]) -> None:
        shutil.rmtree(self._sa_dir(uid), ignore_errors=True)

    async def _create_failed(self, pod: Pod, message: str) -> None:
        key = (pod.metadata.namespace, pod.metadata.name)
        self.failed_create[key] = time.time() + 2.0
        self.cluster.event(pod, "FailedCreatePodSandBox", message, type_="Warning", source="kubelet")
        self.cluster.wake_at(self.failed_create[key])
        # off the loop: removing a cgroup kills what is left in it and waits for it (up to half a second)
        await asyncio.to_thread(self._release_pod_files, pod.metadata.uid, pod.metadata.uid)

    def _release_pod_files(self, cgroup_id: str, uid: Optional[str]) -> None:
        self.cgroups.remove(cgroup_id)
        self._remove_sa_dir(uid)

    async def write_files(self, pod: Pod, netns: str) -> list:
        """The pod's files under /etc/netns/<netns> (hosts, resolv.conf, token volume): its sandbox's binds."""
        return await asyncio.to_thread(podfiles.write, paths.netns_etc(netns), pod, self.cluster.lab,
                                       sa_files=self._service_account_files(pod), sa_dir=self._sa_dir(pod.metadata.uid))

    async def new_sandbox(self, pod: Pod, netns: str, binds: list, **launch) -> dict:
        """A pod sandbox in the pod's network namespace: its pause in the pod's cgroup, the lab's binds the
        pod may have, privileged or contained as the pod asks (the kubelet's pods, a sandbox made again,
        and one made after a restart of the control process alike)."""
        cg = self.cgroups.pod(pod.metadata.uid)
        return (await self.launch("sandbox", netns=nsutil.netns_path(netns), hostname=podenv.pod_hostname(pod),
                                  binds=binds + security.lab_binds(pod, self.lab),
                                  privileged=security.pod_privileged(pod),  # else a container's sandbox
                                  cgroups=list(cg.dirs) if cg else [], tag={"uid": pod.metadata.uid},
                                  **launch))["sandbox"]

    async def _start_pod(self, pod: Pod, binds: list) -> None:
        ns, name = pod.metadata.namespace, pod.metadata.name
        netns = self.net.pod_netns(ns, name)
        rt = PodRt(ns, name, pod.metadata.uid, pod.spec.node_name, netns, pod.metadata.uid, started_at=time.time())
        try:
            rt.sandbox = await self.new_sandbox(pod, netns, binds)
        except Exception as e:
            await self._create_failed(pod, f"Failed to create pod sandbox: {e}")
            await asyncio.to_thread(self.net.remove_pods, [(ns, name)])
            return
        self.failed_create.pop(rt.key, None)
        self.pods[rt.key] = rt
        self._watch_pause(rt)
        os.makedirs(paths.logs_dir(self.lab), exist_ok=True)
        for c in pod.spec.containers:
            rt.containers[c.name] = ContainerRt(spec=c)
        if pod.spec.init_containers:  # after the app containers (the default one stays first), started first
            for c in rt.containers.values():
                c.waiting_reason = "PodInitializing"
            for c in pod.spec.init_containers:
                rt.containers[c.name] = ContainerRt(spec=c, init=True, sidecar=c.restart_policy == "Always",
                                                    waiting_reason="PodInitializing")
        for c in [c for c in rt.containers.values() if _startable(rt, c)]:
            await self._start_container(rt, pod, c)

    async def _start_container(self, rt: PodRt, pod: Pod, c: ContainerRt) -> None:
        if rt.sandbox_dead or rt.sandbox is None or not self._sandbox_alive(rt):
            self._sandbox_died(rt)
            return
        spec = c.spec
        store = self.cluster.store
        services = [s for s in store.list("Service", rt.namespace)]
        # the API server's Service, in every namespace: what in-cluster clients connect to
        master = store.find("Service", "default", "kubernetes")
        env = podenv.container_env(pod, spec, services, lookup=store.find, master=master)
        cmd, args = podenv.command_line(spec, env)
        ipv6 = any(":" in (p.ip or "") for p in pod.status.pod_ips or [])  # a dual-stack lab's pod
        program = resolve_program(spec.image, cmd, args, ipv6=ipv6)
        if program.warning and not c.warned:
            c.warned = True
            self.cluster.event(pod, "StandIn", f"container {spec.name}: {program.warning}", type_="Warning",
                               source="kubelet")
        cg = self.cgroups.pod(rt.cgroup_id)
        c.env = env
        c.security = security.container_security(pod, spec, builtin=program.kind != "exec")
        if "error" in c.security:  # as kubelet: not created, tried again with back-off
            c.waiting_reason = "CreateContainerConfigError"
            self._schedule_restart(c, failed=True)
            c.waiting_message = c.security["error"]
            self.cluster.event(pod, "Failed", f"Error: {c.security['error']}", type_="Warning", source="kubelet")
            self.on_change()
            return
        msg = dict(sandbox=rt.sandbox, netns=nsutil.netns_path(rt.netns), cgroups=list(cg.dirs) if cg else [], env=env,
                   cwd=spec.working_dir or "/", security=c.security,
                   log=paths.container_log(self.lab, rt.namespace, rt.name, spec.name),
                   tag={"uid": rt.uid, "container": spec.name})  # what the launcher lists for adoption
        if spec.stdin or spec.tty:
            if c.stdio is not None and c.stdio.stdin_fd is None:  # stdinOnce ended it: a new one, as a runtime
                c.stdio.close()
                c.stdio = None
            if c.stdio is None:
                c.stdio = ContainerStdio(bool(spec.tty), msg["log"])
            msg["stdio"] = c.stdio.child_paths()
        if program.kind == "exec":
            msg["argv"] = list(program.argv)
        else:
            ports = [dict(port=p.container_port, protocol=p.protocol or "TCP", name=p.name) for p in spec.ports or []]
            probe_ports, tls_ports = _probe_ports(spec)
            ports += [dict(port=p, protocol="TCP", name=None) for p in probe_ports
                      if all(p != q["port"] for q in ports)]
            msg["builtin"] = program.name
            msg["ctx"] = dict(pod_name=rt.name, namespace=rt.namespace, pod_ip=pod.status.pod_ip or "",
                              node_name=rt.node, image=spec.image or "", container_name=spec.name,
                              ports=ports, env=env, args=list(args or []), tls_ports=tls_ports)
        try:
            pid = (await self.launch("container", **msg))["pid"]
        except Exception as e:
            if SANDBOX_GONE in str(e):  # its pause process died meanwhile (one the launcher did not report)
                self._sandbox_died(rt)
                return
            c.last_terminated = ContainerStateTerminated(exit_code=128, reason="StartError", message=str(e),
                                                         finished_at=rfc3339(time.time()))
            c.waiting_reason, c.waiting_message = "RunContainerError", str(e)
            self._schedule_restart(c, failed=True)
            self.cluster.event(pod, "Failed", f"Error: {e}", type_="Warning", source="kubelet")
            self.on_change()
            return
        c.pid = pid
        c.exited = asyncio.Event()
        c.started_at = time.time()
        c.waiting_reason = c.waiting_message = None
        c.kill_reason = None
        c.started = spec.startup_probe is None
        c.ready = spec.readiness_probe is None and c.started
        self.by_pid[pid] = (rt, c)
        self.cluster.event(pod, "Started", f"Started container {spec.name}", source="kubelet")
        if pid in self._early_exits:  # it has already exited
            self.on_exit(pid, self._early_exits.pop(pid))
            return
        for kind in ("startup", "readiness", "liveness"):
            if getattr(spec, f"{kind}_probe") is not None:
                c.probe_tasks.append(asyncio.create_task(self._probe_loop(rt, c, kind)))
        self.on_change()

    def _schedule_restart(self, c: ContainerRt, failed: bool) -> None:
        spec = self.cluster.lab.spec
        now = time.time()
        ran = now - (c.started_at or now)
        if ran > 600:  # a container that ran for 10 minutes starts over without back-off
            c.backoff = 0.0
        c.next_start = now + c.backoff
        c.backoff = min(spec.restart_backoff_max_seconds,
                        max(spec.restart_backoff_seconds, c.backoff * 2))
        if c.next_start > now:
            c.waiting_reason = c.waiting_reason if failed and c.waiting_reason else "CrashLoopBackOff"
            c.waiting_message = (f"back-off {int(c.next_start - now)}s restarting failed container="
                                 f"{c.spec.name}")
            self.cluster.wake_at(c.next_start)

    # ------------------------------------------------------------------ exits
    def on_exit(self, pid: int, status: int) -> None:
        owner = self.by_pause.get(pid)
        if owner is not None:  # a sandbox's pause process: the kernel killed the pod's processes with it
            del self.by_pause[pid]
            if owner.pause == pid:
                self._sandbox_died(owner)
            return
        entry = self.by_pid.pop(pid, None)
        if entry is None:
            if len(self._early_exits) > 1024:  # never claimed (not a container of ours): forget the oldest
                self._early_exits.pop(next(iter(self._early_exits)))
            self._early_exits[pid] = status
            return
        rt, c = entry
        code = os.waitstatus_to_exitcode(status)
        exit_code = code if code >= 0 else 128 - code
        sig = -code if code < 0 else None
        reason = c.kill_reason or ("Completed" if exit_code == 0 else "Error")
        if sig == signal.SIGKILL and c.kill_reason is None:
            kills = resources.oom_kills(self.cgroups, rt.cgroup_id)
            if kills > rt.oom_kills:  # killed by the kernel for going over its memory limit
                rt.oom_kills = kills
                reason = "OOMKilled"
        c.last_terminated = ContainerStateTerminated(
            exit_code=exit_code, signal=sig, reason=reason,
            started_at=rfc3339(c.started_at or time.time()), finished_at=rfc3339(time.time()))
        c.pid = None
        c.ready = False
        c.exited.set()
        for t in c.probe_tasks:
            t.cancel()
        c.probe_tasks.clear()
        if rt.stopping or not self.node_up.get(rt.node):
            return
        if not rt.sandbox_dead and rt.pause and not self._sandbox_alive(rt):
            # killed with its PID namespace: the pause process is ending (its own exit comes once the kernel
            # has reaped the pod's processes). Restarted as restartPolicy says, in the new sandbox.
            self._sandbox_died(rt)
        pod = self.cluster.store.find("Pod", rt.namespace, rt.name)
        policy = (pod.spec.restart_policy if pod else None) or "Always"
        if c.init and not c.sidecar:  # an init container: done when it exits 0, retried (or not) when it fails
            if exit_code == 0:
                c.done, c.next_start, c.waiting_reason = True, float("inf"), None
                self.on_change()
                return
            policy = "OnFailure" if policy == "Always" else policy
        elif c.sidecar:
            policy = "Always"
        if not (policy == "Always" or (policy == "OnFailure" and exit_code != 0)):
            c.next_start = float("inf")  # finished for good: restartPolicy says so
            c.waiting_reason = None
        else:
            c.restart_count += 1
            c.waiting_reason = None
            self._schedule_restart(c, failed=False)
            if pod is not None and c.kill_reason is None and not rt.sandbox_dead:
                self.cluster.event(pod, "BackOff" if c.next_start > time.time() else "Restarting",
                                   f"container {c.spec.name} exited with code {exit_code}; restarting",
                                   type_="Warning", source="kubelet")
        self.on_change()

    # ------------------------------------------------------------------ a sandbox that died
    def _sandbox_alive(self, rt: PodRt) -> bool:
        """False once the pod's pause process is gone or ending (True when it is not known: a privileged
        pod, or a sandbox the launcher listed after a restart of the control process)."""
        sb = rt.sandbox
        if sb is None or not sb.get("pause"):
            return sb is not None
        return rootfs.pause_alive(sb["pause"], sb.get("pause_started") or "")

    def _watch_pause(self, rt: PodRt) -> None:
        """Know the pod's pause process by its pid (a new sandbox's, or one re-opened after a restart of
        the launcher), so that its exit says the sandbox died."""
        sb = rt.sandbox
        if sb is not None and "pause" not in sb:
            # a sandbox the launcher listed to a restarted control process does not name it: found once,
            # from a running container, as PID 1 of its PID namespace (none: a privileged pod)
            running = next((c.pid for c in rt.containers.values() if c.pid), None)
            if running is None:
                return
            pid = rootfs.sandbox_process(running)
            started = procutil.stat_field(pid, 19) if pid != running else ""
            sb.update(pause=pid if started else 0, pause_started=started)
        pid = (sb or {}).get("pause") or 0
        if pid == rt.pause:
            return
        if rt.pause and self.by_pause.get(rt.pause) is rt:
            del self.by_pause[rt.pause]
        rt.pause = pid
        if pid:
            self.by_pause[pid] = rt
            self._early_exits.pop(pid, None)  # reported before it was known: the check below says
            if not rt.sandbox_dead and not self._sandbox_alive(rt):
                self._sandbox_died(rt)

    def _unwatch_pause(self, rt: PodRt) -> None:
        if rt.pause and self.by_pause.get(rt.pause) is rt:
            del self.by_pause[rt.pause]
        rt.pause = 0

    def _sandbox_died(self, rt: PodRt) -> None:
        """The pod's sandbox is gone: the next pass makes a new one (_remake_sandbox)."""
        if rt.sandbox_dead or rt.stopping:
            return
        log.warning("pod %s/%s: its sandbox died (pause process %s)", rt.namespace, rt.name,
                    (rt.sandbox or {}).get("pause"))
        rt.sandbox_dead = True
        rt.sandbox_retry = 0.0
        self.on_change()

    async def _remake_sandbox(self, rt: PodRt) -> None:
        """As kubelet does when a pod's sandbox is not ready (computePodActions, then SyncPod): the event
        SandboxChanged, what is left of the pod's containers killed, the old sandbox released, a new one
        made, and the containers started in it as restartPolicy says (RESTARTS counted when they exited).
        When restartPolicy says nothing is to run again (Never after a container ran, OnFailure when every
        container succeeded), the sandbox is only released, without an event: the pod ends as its
        containers did (a container killed with the sandbox: terminated, exit code 137, reason Error).

        kubelet gives the new sandbox a new network namespace and so a new IP; here the network namespace is
        the pod's own (made with its veth when the pod was created; Endpoints, kube-proxy's rules and the
        node's routes point at it): the new sandbox is made in the same network namespace, and the pod keeps
        its IP. Its cgroup stays the pod's: the new pause process joins it."""
        try:
            pod = self._current(rt)
            wanted = pod is not None and not is_terminating(pod) and sandbox_wanted(pod, rt)
            if wanted:
                self.cluster.event(pod, "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.",
                                   source="kubelet")
            # what is left of the pod's containers (killed already with its PID namespace, as a rule)
            for c in rt.containers.values():
                for t in c.probe_tasks:
                    t.cancel()
                c.probe_tasks.clear()
            running = [c for c in rt.containers.values() if c.pid is not None]
            for c in running:
                _signal(c.pid, signal.SIGKILL)
            if running:
                try:
                    await asyncio.wait_for(asyncio.gather(*(c.exited.wait() for c in running)), timeout=5.0)
                except asyncio.TimeoutError:
                    pass
            cg = self.cgroups.pod(rt.cgroup_id)
            if cg is not None:  # processes the PID namespace did not hold (none, as a rule)
                await asyncio.to_thread(kill_all, cg.procs_dir)
            # the old sandbox: its descriptors (which hold its mount, UTS and IPC namespaces) and pause
            old, rt.sandbox = rt.sandbox, None
            self._unwatch_pause(rt)
            if old is not None:
                try:
                    await self.launch("release", fds=[old["uts"], old["mnt"]])
                except Exception as e:
                    log.warning("pod %s/%s: releasing its dead sandbox: %s", rt.namespace, rt.name, e)
            self.on_change()  # PodReadyToStartContainers: False
            pod = self._current(rt)
            if not wanted or pod is None or rt.stopping or self._closing or is_terminating(pod) \
                    or not self.node_up.get(rt.node):
                return  # stays without a sandbox (a deleted pod's stop needs none)
            prepare_new_sandbox(rt)
            try:
                sb = await self.new_sandbox(pod, rt.netns, await self.write_files(pod, rt.netns))
            except Exception as e:
                rt.sandbox_retry = time.time() + 2.0
                self.cluster.event(pod, "FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}",
                                   type_="Warning", source="kubelet")
                self.cluster.wake_at(rt.sandbox_retry)
                return
            rt.sandbox, rt.sandbox_dead, rt.sandbox_retry = sb, False, 0.0  # a stop that waits releases it
            self._watch_pause(rt)
            if rt.stopping or self._closing or rt.sandbox_dead:
                return
            pod = self._current(rt)
            now = time.time()
            for c in [c for c in rt.containers.values() if c.pid is None and c.next_start <= now and _startable(rt, c)]:
                if pod is None or rt.stopping or rt.sandbox_dead:
                    break
                await self._start_container(rt, pod, c)
        except Exception:
            log.exception("pod %s/%s: making its sandbox again", rt.namespace, rt.name)
            rt.sandbox_retry = time.time() + 2.0
            self.cluster.wake_at(rt.sandbox_retry)
        finally:
            if self._resandboxing.get(rt.key) is asyncio.current_task():
                del self._resandboxing[rt.key]
            self.on_change()

    def _current(self, rt: PodRt) -> Optional[Pod]:
        """The pod's API object, if it is still this runtime's pod."""
        pod = self.cluster.store.find("Pod", rt.namespace, rt.name)
        return pod if pod is not None and pod.metadata.uid == rt.uid else None

    # ------------------------------------------------------------------ probes
    async def _probe_loop(self, rt: PodRt, c: ContainerRt, kind: str) -> None:
        probe = getattr(c.spec, f"{kind}_probe")
        period = probe.period_seconds or 10
        success_needed = probe.success_threshold or 1
        failure_needed = probe.failure_threshold or 3
        successes = failures = 0
        await asyncio.sleep(probe.initial_delay_seconds or 0)
        node_ns = self.net.node_netns(rt.node)
        while c.pid is not None and not rt.stopping:
            if not self.node_up.get(rt.node) or (kind != "startup" and not c.started):
                await asyncio.sleep(period)
                continue
            pod = self.cluster.store.find("Pod", rt.namespace, rt.name)
            pod_ip = pod.status.pod_ip if pod else None
            if not pod_ip:
                return
            res = await probes.run_probe(probe, c.spec, node_netns=node_ns, pod_ip=pod_ip,
                                         enter=self.nsenter_args(rt, c.spec.name))
            if c.pid is None or rt.stopping:
                return
            if res.ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
                if pod is not None:
                    self.cluster.event(pod, "Unhealthy", f"{kind.capitalize()} probe failed: {res.message}",
                                       type_="Warning", source="kubelet")
            if kind == "readiness":
                if res.ok and successes >= success_needed and not c.ready:
                    c.ready = True
                    self.on_change()
                elif not res.ok and failures >= failure_needed and c.ready:
                    c.ready = False
                    self.on_change()
            elif kind == "startup":
                if res.ok:
                    c.started = True
                    c.ready = c.spec.readiness_probe is None
                    self.on_change()
                    return
                if failures >= failure_needed:
                    self._kill_container(c, "startup probe failed")
                    return
            elif kind == "liveness" and failures >= failure_needed:
                if pod is not None:
                    self.cluster.event(pod, "Killing",
                                       f"Container {c.spec.name} failed liveness probe, will be restarted",
                                       source="kubelet")
                self._kill_container(c, "liveness probe failed")
                return
            await asyncio.sleep(period)

    def _kill_container(self, c: ContainerRt, why: str) -> None:
        c.kill_reason = "Error"
        if c.pid is not None:
            _signal(c.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ stopping pods
    def _stop(self, rt: PodRt, grace: float, finalize: Optional[Pod], networks: Optional[list] = None) -> None:
        """networks: where to leave the pod's network for the caller to remove (None: removed here)."""
        rt.stopping = True
        task = asyncio.create_task(self._stop_pod(rt, grace, finalize, networks))
        self._stops[rt.key] = task

    async def _stop_pod(self, rt: PodRt, grace: float, finalize: Optional[Pod],
                        networks: Optional[list] = None) -> None:
        try:
            remaking = self._resandboxing.get(rt.key)
            if remaking is not None:  # a new sandbox being made: it sees rt.stopping, and this releases it
                await asyncio.gather(remaking, return_exceptions=True)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + max(grace, 0.0)
            for c in rt.containers.values():
                for t in c.probe_tasks:
                    t.cancel()
            running = [c for c in rt.containers.values() if c.pid is not None]
            hooked = False
            if finalize is not None and running:  # a deletion, as kubelet kills a pod's containers:
                for c in running:
                    self.cluster.event(finalize, "Killing", f"Stopping container {c.spec.name}", source="kubelet")
                hooked = await self._pre_stop(rt, finalize, running, deadline)  # preStop within the grace period
            for c in running:
                if c.pid is not None:
                    _signal(c.pid, signal.SIGTERM)  # then SIGTERM ...
            waits = [c.exited.wait() for c in running if c.pid is not None]
            if waits:  # ... and SIGKILL once the grace period is over (at least 2 s after a preStop hook)
                try:
                    await asyncio.wait_for(asyncio.gather(*waits),
                                           timeout=max(deadline - loop.time(), 2.0 if hooked else 0.05))
                except asyncio.TimeoutError:
                    pass
            cg = self.cgroups.pod(rt.cgroup_id)
            if cg is not None:
                await asyncio.to_thread(kill_all, cg.procs_dir)
            if finalize is not None and running:
                await self._terminated_status(rt, running)
            for c in rt.containers.values():
                if c.stdio is not None:
                    c.stdio.close()
                    c.stdio = None
            self._unwatch_pause(rt)
            if rt.sandbox is not None:
                await self.launch("release", fds=[rt.sandbox["uts"], rt.sandbox["mnt"]])
                rt.sandbox = None
            if networks is None:
                await asyncio.to_thread(self.net.remove_pods, [(rt.namespace, rt.name)])
            else:
                networks.append((rt.namespace, rt.name))
            await asyncio.to_thread(self._release_pod_files, rt.cgroup_id, rt.uid)
            for c in rt.containers.values():
                try:
                    os.unlink(paths.container_log(self.lab, rt.namespace, rt.name, c.spec.name))
                except FileNotFoundError:
                    pass
        finally:
            if self.pods.get(rt.key) is rt:
                del self.pods[rt.key]
            self._stops.pop(rt.key, None)
            if finalize is not None:
                current = self.cluster.store.find("Pod", rt.namespace, rt.name)
                if current is not None and current.metadata.uid == rt.uid:
                    self.cluster.finalize_pod(current)
            self.on_change()

    async def _pre_stop(self, rt: PodRt, pod: Pod, running: list[ContainerRt], deadline: float) -> bool:
        """Run the containers' preStop hooks (exec in the container, httpGet / tcpSocket from the node, sleep),
        together, until they end or the grace period does; True if there were any."""
        loop = asyncio.get_running_loop()
        hooks = [(c, c.spec.lifecycle.pre_stop) for c in running if c.spec.lifecycle and c.spec.lifecycle.pre_stop]
        if not hooks:
            return False
        node_ns = self.net.node_netns(rt.node)

        async def run(c: ContainerRt, h) -> None:
            budget = max(0.05, deadline - loop.time())
            if h.sleep is not None:
                await asyncio.sleep(min(h.sleep.seconds, budget))
                return
            probe = Probe(exec=h.exec, http_get=h.http_get, tcp_socket=h.tcp_socket,
                          timeout_seconds=max(1, int(math.ceil(budget))))
            res = await probes.run_probe(probe, c.spec, node_netns=node_ns, pod_ip=pod.status.pod_ip or "",
                                         enter=self.nsenter_args(rt, c.spec.name))
            if not res.ok:
                what = (f"Exec lifecycle hook ({h.exec.command})" if h.exec is not None else "HTTP lifecycle hook"
                        if h.http_get is not None else "lifecycle hook")
                self.cluster.event(pod, "FailedPreStopHook", f'{what} for Container "{c.spec.name}" in Pod '
                                   f'"{pod.metadata.name}_{pod.metadata.namespace}({pod.metadata.uid})" failed - '
                                   f"error: {res.message}", type_="Warning", source="kubelet")

        try:
            await asyncio.wait_for(asyncio.gather(*(run(c, h) for c, h in hooks), return_exceptions=True),
                                   timeout=max(0.05, deadline - loop.time()))
        except asyncio.TimeoutError:
            pass
        return True

    async def _terminated_status(self, rt: PodRt, running: list[ContainerRt]) -> None:
        """What kubelet reports once a deleted pod's containers have stopped (`0/1 Terminating` in
        `kubectl get pods -w`), before the pod leaves the API."""
        try:
            await asyncio.wait_for(asyncio.gather(*(c.exited.wait() for c in running)), timeout=1.0)
        except asyncio.TimeoutError:
            pass
        current = self.cluster.store.find("Pod", rt.namespace, rt.name)
        if current is None or current.metadata.uid != rt.uid or not self.node_up.get(rt.node):
            return
        for c in running:  # terminated, not finished: the phase stays what it was until the pod leaves
            c.ready, c.next_start, c.waiting_reason = False, 0.0, None
            if c.pid is not None or c.last_terminated is None:
                c.last_terminated = ContainerStateTerminated(exit_code=137, signal=signal.SIGKILL, reason="Error",
                                                             finished_at=rfc3339(time.time()))
        self._build_status(current, rt)

    async def stop_all(self) -> None:
        """The lab goes down: every pod stops at once, and their networks go in one batch at the end (one
        `ip -batch` instead of a worker-thread call per pod: thousands of pods in seconds)."""
        self._closing = True
        batched: list[PodKey] = []
        for rt in list(self.pods.values()):
            if not rt.stopping:
                self._stop(rt, grace=0, finalize=None, networks=batched)
        if self._stops:
            await asyncio.gather(*list(self._stops.values()), return_exceptions=True)
        if batched:
            await asyncio.to_thread(self.net.remove_pods, batched)

    # ------------------------------------------------------------------ status
    def _push_status(self, pod: Pod, rt: PodRt) -> None:
        # what the status is made of: when neither the pod object nor its containers changed since the
        # last push there is nothing to do (a pass over a big lab otherwise rebuilds every status)
        now = time.time()
        facts = (rt.sandbox is not None, tuple(
            (n, c.pid, c.ready, c.started, c.restart_count, c.waiting_reason, c.waiting_message,
             id(c.last_terminated), c.next_start == float("inf"), c.next_start > now, c.started_at)
            for n, c in rt.containers.items()))
        if rt.status_facts == (pod.metadata.resource_version, facts):
            return
        self._build_status(pod, rt)
        rt.status_facts = (pod.metadata.resource_version, facts)

    def _build_status(self, pod: Pod, rt: PodRt) -> None:
        now_s = self.cluster.now_str()
        before = pod.status.dump()
        statuses = []
        for name, c in rt.containers.items():
            if c.pid is not None:
                state = ContainerState(running=ContainerStateRunning(started_at=rfc3339(c.started_at)))
            elif c.next_start == float("inf") and c.last_terminated is not None:
                state = ContainerState(terminated=c.last_terminated)
            elif c.waiting_reason or c.next_start > time.time():
                state = ContainerState(waiting=ContainerStateWaiting(reason=c.waiting_reason or "CrashLoopBackOff",
                                                                     message=c.waiting_message))
            elif c.last_terminated is not None:
                state = ContainerState(terminated=c.last_terminated)
            else:
                state = ContainerState(waiting=ContainerStateWaiting(reason="ContainerCreating"))
            statuses.append(ContainerStatus(
                name=name, image=c.spec.image or "", ready=c.ready or c.done, started=c.pid is not None and c.started,
                restart_count=c.restart_count,
                state=state,
                last_state=(ContainerState(terminated=c.last_terminated)
                            if c.last_terminated and state.terminated is None else None),
                container_id=f"netemu://{c.pid}" if c.pid else None,
            ))
        st = pod.status
        init_statuses = [s for s, c in zip(statuses, rt.containers.values()) if c.init]
        statuses = [s for s, c in zip(statuses, rt.containers.values()) if not c.init]
        st.init_container_statuses = init_statuses or None
        st.container_statuses = statuses
        apps = [c for c in rt.containers.values() if not c.init]
        initialized = _initialized(rt)
        init_failed = any(c.init and not c.done and c.pid is None and c.next_start == float("inf")
                          and c.last_terminated is not None for c in rt.containers.values())
        all_ready = bool(statuses) and all(s.ready for s in statuses)
        any_running = any(c.pid is not None for c in apps)
        started_once = all(c.started_at is not None for c in apps)
        finished = [c for c in apps if c.pid is None and c.next_start == float("inf")]
        if init_failed:  # an init container failed and restartPolicy Never keeps it there
            st.phase = "Failed"
        elif not initialized:
            st.phase = "Pending"
        elif apps and len(finished) == len(apps):
            # every container ran to its end and restartPolicy keeps it there
            ok = all(c.last_terminated is not None and c.last_terminated.exit_code == 0 for c in finished)
            st.phase = "Succeeded" if ok else "Failed"
        elif any_running or started_once:
            st.phase = "Running"
        if st.start_time is None:
            st.start_time = rfc3339(rt.started_at)
        set_condition(pod, "PodReadyToStartContainers", rt.sandbox is not None, now_s)
        if initialized:
            set_condition(pod, "Initialized", True, now_s)
        else:
            set_condition(pod, "Initialized", False, now_s, "ContainersNotInitialized",
                          "containers with incomplete status: [" + " ".join(
                              c.spec.name for c in rt.containers.values() if c.init and not c.done) + "]")
        reason = None if all_ready else "ContainersNotReady"
        msg = None if all_ready else "containers with unready status: [" + " ".join(
            s.name for s in statuses if not s.ready) + "]"
        set_condition(pod, "ContainersReady", all_ready, now_s, reason, msg)
        set_condition(pod, "Ready", all_ready, now_s, reason, msg)
        set_condition(pod, "PodScheduled", True, now_s)
        _order_conditions(pod)
        if pod.status.dump() != before:
            self.cluster.store.update(pod)

    # ------------------------------------------------------------------ for exec / logs
    def runtime(self, namespace: str, name: str) -> Optional[PodRt]:
        return self.pods.get((namespace, name))

    def nsenter_args(self, rt: PodRt, container: Optional[str] = None) -> Optional[list[str]]:
        """The exec helper's options (netemu.dataplane.podexec) that run a command in a pod's container
        (default: its first), as the container's user with its capabilities; None if it is not running."""
        if rt.sandbox is None:
            return None
        c = rt.containers.get(container) if container else next(iter(rt.containers.values()), None)
        if c is None or c.pid is None:
            return None
        if c.security is None or "error" in c.security:  # adopted after a restart of the control process
            pod = self.cluster.store.find("Pod", rt.namespace, rt.name)
            c.security = security.container_security(pod, c.spec) if pod is not None else None
        return security.exec_options(c.security, c.pid, nsutil.netns_path(rt.netns), c.spec.working_dir)

    def set_node_up(self, node: str, up: bool) -> None:
        self.node_up[node] = up


def pod_net(pod: Pod, node: NodeNet) -> PodNet:
    """A pod's wires: its IPv4 address in the node's pod subnet, and in a dual-stack lab whose node has an
    IPv6 pod subnet its IPv6 address (status.podIPs[1]) with cni0's ::1 as its IPv6 gateway."""
    ip6 = next((p.ip for p in pod.status.pod_ips or [] if p.ip and ":" in p.ip), None) if node.pod_cidr6 else None
    return PodNet(pod.metadata.namespace, pod.metadata.name, pod.spec.node_name, pod.status.pod_ip,
                  int(node.pod_cidr.split("/")[1]), node.gateway,
                  ip6=ip6, prefixlen6=int(node.pod_cidr6.split("/")[1]) if ip6 else None,
                  gateway6=node.gateway6 if ip6 else None)


def _startable(rt: PodRt, c: ContainerRt) -> bool:
    """Init containers one after the other, each once the previous one exited 0 (a sidecar once it
    started); the app containers once all of them did."""
    for i in (x for x in rt.containers.values() if x.init):
        if i is c:
            return not c.done
        if not (i.done or (i.sidecar and i.started_at is not None and (i.pid is not None or i.restart_count))):
            return False
    return True


def sandbox_wanted(pod: Pod, rt: PodRt) -> bool:
    """Is a pod whose sandbox died given a new one? kubelet's computePodActions: not with restartPolicy
    Never once a container was started (the pod ends as its containers did), nor when no app container
    is left to run (OnFailure: every one succeeded)."""
    policy = pod.spec.restart_policy or "Always"
    if policy == "Never" and any(c.started_at is not None or c.last_terminated is not None
                                 for c in rt.containers.values()):
        return False
    return any(c.pid is not None or c.next_start != float("inf") for c in rt.containers.values() if not c.init)


def prepare_new_sandbox(rt: PodRt) -> None:
    """The containers' state for a new sandbox: as kubelet does, the init containers run again from the
    first (one that had completed counts one more restart); the app containers start once they are done."""
    inits = [c for c in rt.containers.values() if c.init]
    for c in inits:
        if c.done:
            c.done, c.restart_count, c.next_start = False, c.restart_count + 1, 0.0
        c.started_at = None if c.sidecar else c.started_at
        if c.pid is None:
            c.waiting_reason = "PodInitializing"
    if inits:
        for c in rt.containers.values():
            if not c.init and c.pid is None and c.next_start != float("inf"):
                c.waiting_reason = "PodInitializing"


def _initialized(rt: PodRt) -> bool:
    return all(i.done or (i.sidecar and i.started_at is not None) for i in rt.containers.values() if i.init)


_CONDITION_ORDER = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]


def _order_conditions(pod: Pod) -> None:
    pod.status.conditions = sorted(pod.status.conditions or [],
                                   key=lambda c: _CONDITION_ORDER.index(c.type) if c.type in _CONDITION_ORDER else 99)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _probe_ports(spec) -> tuple[list[int], list[int]]:
    """The ports a container's probes reach (named ports resolved), and those reached over HTTPS: a
    stand-in listens on them too, so that an installer's pod passes the checks its manifest makes."""
    named = {p.name: p.container_port for p in spec.ports or [] if p.name}
    ports, tls = [], []
    for probe in (spec.startup_probe, spec.readiness_probe, spec.liveness_probe):
        action = probe and (probe.http_get or probe.tcp_socket)
        if not action:
            continue
        port = named.get(action.port) if isinstance(action.port, str) else action.port
        if not isinstance(port, int):
            continue
        ports.append(port)
        if probe.http_get is not None and (probe.http_get.scheme or "HTTP") == "HTTPS":
            tls.append(port)
    return ports, tls
