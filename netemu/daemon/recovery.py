"""Picking a lab up again: a control process restarted by the supervisor, and a launcher restarted
by the control process.

A restarted control process resumes the lab from its state file (the objects as last accepted, not
the lab file) and adopts what is still there, as a kubelet adopts what its container runtime runs
after a restart:

- the kernel objects by name: the lab segment, the node namespaces, the pods' namespaces. If the lab's
  network is incomplete (someone deleted a node's namespace), it is swept and built again, and every
  pod is made anew;
- the launcher, if it outlived the control process (the supervisor keeps its socket): `list` says which
  containers and sandboxes it holds, tagged with the pod's uid and container name;
- the containers: a pod's container whose process is alive in the pod's cgroup keeps running (same pid,
  same RESTARTS); one that ended meanwhile counts as exited (with its status when the launcher or the
  supervisor reported it) and is restarted as the restartPolicy says, RESTARTS counted; a container
  with stdin/tty lost its streams with the old process and is restarted;
- the sandboxes: the launcher's, or re-opened from a running process of the pod (/proc/PID/ns), or new;
- kube-proxy's rules (the next sync is a full one over what is loaded), the speakers (their kernel
  entries are flushed and re-programmed), the nodes' links (as the Node objects say);
- what belongs to nothing in the store (a pod deleted just before the crash, a container whose start
  was never answered) is removed.

When only the launcher dies, the control process keeps its runtime state: the running containers are
watched through pidfds (their exits are reported by the supervisor, which inherits them as a child
subreaper) and each pod's sandbox is re-opened in the new launcher, in place, so requests built
before the restart use the new descriptors.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import time
from typing import Optional

from netemu import paths, procutil
from netemu.dataplane import names

log = logging.getLogger("netemu.recovery")

LIST_TIMEOUT = 15.0


# ---------------------------------------------------------------------------- the state file
def read_state(lab: str):
    """(Lab, typed objects, extra) from the lab's state file."""
    import netemu.spec.load  # noqa: F401  (every kind registered)
    from netemu.spec.convert import MODELS
    from netemu.spec.models import Lab, StoredObject

    from netemu.daemon.journal import replay

    with open(paths.state_file(lab)) as f:
        data = json.load(f)
    # the changes after the snapshot, from the journal: writes answered just before the crash included
    dumps, last_rv = replay(paths.lab_dir(lab), data.get("objects") or [], int(data.get("last_rv") or 0))
    objects = []
    for d in dumps:
        model = MODELS.get(d.get("kind"), StoredObject)
        if model is Lab:
            continue
        try:
            objects.append(model.model_validate(d))
        except Exception as e:  # one object that does not load again must not lose the others
            log.error("state file: %s/%s does not load (%s); kept as stored", d.get("kind"),
                      (d.get("metadata") or {}).get("name"), e)
            objects.append(StoredObject.model_validate(d))
    return Lab.model_validate(data["lab"]), objects, {"last_rv": last_rv}


def restore_store(d, objects, extra: dict) -> None:
    from netemu.spec import registry

    store = d.cluster.store
    store.load(objects)
    # resourceVersions go on from where they were (events took some too); watches from before get
    # 410 Gone and list again, as after an etcd compaction
    store.last_rv = max(store.last_rv, extra.get("last_rv", 0)) + 1
    d.storage.watch.oldest = store.last_rv
    # names, uids and IPs drawn from here on must not repeat the first run's sequence
    store.rng = random.Random(os.urandom(16))
    for crd in store.list("CustomResourceDefinition"):
        try:
            registry.register_crd(crd.dump())
        except Exception as e:
            log.error("CustomResourceDefinition %s: %s", crd.metadata.name, e)


# ---------------------------------------------------------------------------- the lab's network
def missing_network(net) -> list[str]:
    from netemu.dataplane.labnet import _present_netns

    present = _present_netns()
    missing = [n for n in [net.switch] + [net.node_netns(x) for x in [*net.nodes, *net.routers]] if n not in present]
    if not os.path.exists(f"/sys/class/net/{net.host_link}"):
        missing.append(f"host link {net.host_link}")
    return missing


def node_is_up(node) -> bool:
    """A node `node down` took down has Ready=False with reason NodeStatusUnknown."""
    for c in node.status.conditions or [] if node.status else []:
        if c.type == "Ready":
            return not (c.status == "False" and c.reason == "NodeStatusUnknown")
    return True


# ---------------------------------------------------------------------------- resuming a lab
async def resume(d, hello: dict, extra: dict) -> None:
    from netemu.dataplane import launcher as launcher_mod

    restore_store(d, d.initial_objects, extra)
    d.initial_objects = []
    d.resumed = True
    spec = d.lab.spec
    d.net = d.make_net()
    d.launcher._next = (os.getpid() & 0xFFFF) << 32  # never an id the previous process used
    missing = missing_network(d.net)
    listing = None
    if missing:
        log.error("the lab's network is incomplete (%s): building it again; every pod is made anew",
                  ", ".join(missing))
        if d.launcher.sock is not None:
            _kill_pid(d.launcher.pid)
            d.launcher.sock.close()
            d.launcher.sock, d.launcher.pid = None, 0
        await asyncio.to_thread(_rebuild_network, d)
    elif d.launcher.sock is not None and d.launcher.pid:
        d._attach_launcher(d.launcher.pid, d.launcher.sock)
        try:
            listing = await asyncio.wait_for(d.launch("list", _now=True), LIST_TIMEOUT)
            log.info("adopted the pod launcher (pid %s): %d containers, %d sandboxes", d.launcher.pid,
                     len(listing.get("children") or []), len(listing.get("sandboxes") or []))
        except Exception as e:
            log.error("the pod launcher (pid %s) does not answer (%s): starting a new one", d.launcher.pid, e)
            _kill_pid(d.launcher.pid)
            d._detach_launcher()
            listing = None
    if d.launcher.sock is None:
        pid, sock = await asyncio.to_thread(launcher_mod.start)
        d._attach_launcher(pid, sock)
        log.info("started a new pod launcher (pid %s)", pid)
    d._runtime_ready.set()
    d.kubelet = d._make_kubelet()
    d._build_proxy()
    if d.proxy is not None and not missing:
        await asyncio.to_thread(d.proxy.adopt)
    from netemu.control import metallb_l2
    from netemu.dataplane.speaker import Speakers

    up = {n.metadata.name: node_is_up(n) for n in d.cluster.store.list("Node")}
    for node, is_up in up.items():
        d.kubelet.set_node_up(node, is_up)
        try:  # the kernel follows the store: the link is as the Node says
            await asyncio.to_thread(d.net.set_node_link, node, is_up)
        except Exception as e:
            log.error("node %s: setting its link %s: %s", node, "up" if is_up else "down", e)
    d.speakers = Speakers({n: d.net.node_netns(n) for n in d.net.nodes}, kernel_reply=spec.proxy_mode != "ipvs")
    d.make_bgp()  # FRR still running from before is restarted from its configuration at the first pass
    for node, is_up in up.items():
        if not is_up:
            d.speakers.kill(node)
        metallb_l2.set_speaker_alive(d.cluster, node, is_up)
    await adopt_pods(d, listing)
    d._watchdog = asyncio.ensure_future(d._watch_launcher())
    d.kick()


def _rebuild_network(d) -> None:
    from netemu.dataplane.labnet import sweep

    _remove_pod_cgroups(d, keep=set())
    sweep(d.name, [x for x in paths.running_labs() if x != d.name])
    d.net.create_namespaces()
    d.net.build()


def _pid_of(status) -> Optional[int]:
    cid = getattr(status, "container_id", None) or ""
    if cid.startswith("netemu://"):
        try:
            return int(cid[len("netemu://"):])
        except ValueError:
            return None
    return None


def _ppid(pid: int) -> int:
    return int(procutil.stat_field(pid, 1) or 0)


def _ns_init(pid: int) -> bool:
    """PID 1 of a PID namespace of its own: a pod sandbox's pause process (netemu.dataplane.rootfs)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    ids = line.split()[1:]
                    return len(ids) > 1 and ids[-1] == "1"
    except OSError:
        pass
    return False


def _strays(procs: set[int], tracked: set[int]) -> set[int]:
    """The processes of a pod's cgroup that are neither a tracked container, nor the sandbox's pause
    process, nor a descendant of either."""
    parent = {p: _ppid(p) for p in procs}
    tracked = set(tracked) | {p for p in procs if _ns_init(p)}
    keep = set(tracked)
    for p in procs:
        q = p
        for _ in range(64):
            if q in tracked:
                keep.add(p)
                break
            if q not in parent:
                break
            q = parent[q]
    return procs - keep


def _kill_pid(pid: Optional[int]) -> None:
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _container_env(d, pod, spec) -> dict:
    from netemu.control import podenv

    store = d.cluster.store
    try:
        return podenv.container_env(pod, spec, store.list("Service", pod.metadata.namespace), lookup=store.find,
                                    master=store.find("Service", "default", "kubernetes"))
    except Exception:
        return {}


async def _new_sandbox(d, pod, netns: str) -> dict:
    """A fresh sandbox for a pod whose namespace is kept (its files written again), made as the kubelet
    makes one (its cgroup, privileged or not), without waiting for the runtime to be declared ready."""
    return await d.kubelet.new_sandbox(pod, netns, await d.kubelet.write_files(pod, netns), _now=True)


async def adopt_pods(d, listing: Optional[dict]) -> None:
    from netemu.control.kubeadm import is_control_process_pod
    from netemu.control.store import parse_rfc3339
    from netemu.dataplane.kubelet import ContainerRt, PodRt
    from netemu.dataplane.labnet import _present_netns

    kub, store, cg = d.kubelet, d.cluster.store, d.cgroups
    children: dict[tuple, int] = {}
    launcher_children: set[int] = set()
    sandboxes: dict[str, dict] = {}
    spare_sandboxes: list[dict] = []
    for pid, tag in (listing or {}).get("children") or []:
        launcher_children.add(pid)
        if isinstance(tag, dict) and tag.get("uid"):
            children[(tag["uid"], tag.get("container"))] = pid
    for uts, mnt, tag in (listing or {}).get("sandboxes") or []:
        sb = {"uts": uts, "mnt": mnt}
        uid = tag.get("uid") if isinstance(tag, dict) else None
        if uid and uid not in sandboxes:
            sandboxes[uid] = sb
        else:
            spare_sandboxes.append(sb)
    present = _present_netns()
    now = time.time()
    adopted: set[str] = set()
    used_pids: set[int] = set()
    expected: set[str] = set()
    exited: list[tuple[int, int]] = []
    counts = {"running": 0, "exited": 0, "pods": 0, "new sandboxes": 0}
    for pod in store.list("Pod"):
        ns, name, uid = pod.metadata.namespace or "default", pod.metadata.name, pod.metadata.uid
        if is_control_process_pod(pod) or not pod.spec.node_name or not pod.status.pod_ip:
            continue
        netns = d.net.pod_netns(ns, name)
        expected.add(netns)
        if netns not in present:
            continue
        pcg = cg.pod(uid)
        if pcg is not None and not os.path.isdir(pcg.procs_dir):
            # a namespace of an earlier pod of that name (or one half made): made anew by the kubelet
            expected.discard(netns)
            continue
        procs = set(pcg.procs()) if pcg is not None else None
        statuses = {s.name: s for s in pod.status.container_statuses or []}
        alive: dict[str, int] = {}
        for c in pod.spec.containers:
            pid = children.get((uid, c.name)) or _pid_of(statuses.get(c.name))
            if pid and (procs is None or pid in procs) and procutil.alive(pid):
                alive[c.name] = pid
        if procs:  # a container started just before the crash that nothing recorded: not trackable
            strays = _strays(procs, set(alive.values()))
            if strays:
                log.warning("pod %s/%s: killing %d processes no container accounts for", ns, name, len(strays))
                for pid in strays:
                    _kill_pid(pid)
        sandbox = sandboxes.pop(uid, None)
        try:
            if sandbox is None and alive:
                sandbox = (await d.launch("adopt_sandbox", pid=next(iter(alive.values())), tag={"uid": uid},
                                          _now=True))["sandbox"]
        except Exception as e:
            log.warning("pod %s/%s: cannot re-open its namespaces from its processes (%s)", ns, name, e)
        try:
            if sandbox is None:
                sandbox = await _new_sandbox(d, pod, netns)
                counts["new sandboxes"] += 1
        except Exception as e:
            log.error("pod %s/%s: no sandbox (%s): it is made anew", ns, name, e)
            expected.discard(netns)
            continue
        rt = PodRt(ns, name, uid, pod.spec.node_name, netns, uid, sandbox=sandbox,
                   started_at=parse_rfc3339(pod.status.start_time) or now)
        policy = pod.spec.restart_policy or "Always"
        for c in pod.spec.containers:
            st = statuses.get(c.name)
            crt = ContainerRt(spec=c)
            crt.restart_count = st.restart_count or 0 if st else 0
            crt.last_terminated = st.last_state.terminated if st and st.last_state else None
            crt.env = _container_env(d, pod, c)
            state = st.state if st else None
            pid = alive.get(c.name)
            if pid and (c.stdin or c.tty):  # its streams were the old control process's: restarted
                _kill_pid(pid)
                crt.kill_reason = "Error"
                crt.pid = pid
                crt.started_at = (parse_rfc3339(state.running.started_at) if state and state.running else None) or now
                kub.by_pid[pid] = (rt, crt)
                exited.append((pid, signal.SIGKILL))
            elif pid:
                crt.pid = pid
                crt.started_at = (parse_rfc3339(state.running.started_at) if state and state.running else None) or now
                crt.waiting_reason = None
                # what the probes said (the state file may lag by half a second); without a probe: true
                crt.started = c.startup_probe is None or bool(st and st.started)
                crt.ready = crt.started and (c.readiness_probe is None or bool(st and st.ready))
                kub.by_pid[pid] = (rt, crt)
                used_pids.add(pid)
                counts["running"] += 1
                for kind in ("startup", "readiness", "liveness"):
                    if getattr(c, f"{kind}_probe") is not None and not (kind == "startup" and crt.started):
                        crt.probe_tasks.append(asyncio.ensure_future(kub._probe_loop(rt, crt, kind)))
                if pid not in launcher_children:  # a dead launcher's: the supervisor reports its exit
                    d._watch_orphan(pid)
            elif state is not None and state.running is not None and _pid_of(st):
                # it ended while no control process was watching: an exit, with its status if known
                old = _pid_of(st)
                crt.pid = old
                crt.started_at = parse_rfc3339(state.running.started_at) or now
                kub.by_pid[old] = (rt, crt)
                exited.append((old, d._early_exits.pop(old, None) or _unknown()))
                counts["exited"] += 1
            elif state is not None and state.terminated is not None and (
                    policy == "Never" or (policy == "OnFailure" and state.terminated.exit_code == 0)):
                crt.next_start = float("inf")  # finished for good
                crt.last_terminated = state.terminated
                crt.waiting_reason = None
            else:  # waiting (back-off, creating): started by the next pass
                crt.next_start = now
                if state is not None and state.waiting is not None:
                    crt.waiting_reason = state.waiting.reason
                    crt.waiting_message = state.waiting.message
            rt.containers[c.name] = crt
        kub.pods[rt.key] = rt
        adopted.add(uid)
        counts["pods"] += 1
    for pid, status in exited:
        kub.on_exit(pid, status)
    # what nothing in the store accounts for goes
    for pid in launcher_children - used_pids:
        if procutil.alive(pid) and pid not in kub.by_pid:
            log.warning("killing process %s: a container no pod accounts for", pid)
            _kill_pid(pid)
    for sb in list(sandboxes.values()) + spare_sandboxes:
        try:
            await d.launch("release", fds=[sb["uts"], sb["mnt"]], _now=True)
        except Exception:
            pass
    # nodes' and routers' namespaces are the network's, not pods'
    nodes = {d.net.node_netns(n) for n in [*d.net.nodes, *d.net.routers]} | {d.net.switch}
    stale = [n for n in present if names.belongs_to(d.name, n) and n not in nodes and n not in expected]
    kept = {d.net.pod_netns(rt.namespace, rt.name) for rt in kub.pods.values()}
    stale += [n for n in expected if n in present and n not in kept]
    if stale:
        log.info("removing %d pod namespaces nothing accounts for", len(stale))
        from netemu.dataplane.labnet import LabNet

        await asyncio.to_thread(LabNet._remove_netns, sorted(set(stale)))
    await asyncio.to_thread(_remove_pod_cgroups, d, adopted)
    log.info("adopted %d pods: %d containers running, %d exited meanwhile, %d sandboxes made anew",
             counts["pods"], counts["running"], counts["exited"], counts["new sandboxes"])


def _unknown() -> int:
    from netemu.daemon.lab import UNKNOWN_EXIT_STATUS

    return UNKNOWN_EXIT_STATUS


FRR_CGROUP = "frr"  # the lab's FRR daemons (LabDaemon.make_bgp): adopted with the network, not a pod's


def _remove_pod_cgroups(d, keep: set[str]) -> None:
    """Pod cgroups of no adopted pod: their processes killed, the directories removed."""
    cg = d.cgroups
    base = cg._procs_base() if cg.available else None
    if not base or not os.path.isdir(base):
        return
    keep = keep | ({FRR_CGROUP} if d.net is not None and not missing_network(d.net) else set())
    for entry in os.listdir(base):
        if entry != "system" and entry not in keep and os.path.isdir(os.path.join(base, entry)):
            cg.remove(entry)
            d.kubelet._remove_sa_dir(entry) if d.kubelet is not None else None


# ---------------------------------------------------------------------------- a launcher restart
def orphaned_containers(kubelet) -> list[int]:
    """The running containers of a launcher that died (children of the supervisor now)."""
    return [c.pid for rt in kubelet.pods.values() for c in rt.containers.values() if c.pid]


def invalidate_sandboxes(kubelet) -> None:
    """The dead launcher's descriptors mean nothing (the new one reuses the numbers): -1 until re-opened."""
    for rt in kubelet.pods.values():
        if rt.sandbox is not None:
            rt.sandbox["uts"] = rt.sandbox["mnt"] = -1


async def reopen_sandboxes(d) -> None:
    """Each pod's sandbox in the new launcher, updated in place: from one of its running processes, or
    made anew (its containers, all exited, start in it)."""
    kub = d.kubelet
    n = made = 0
    for rt in list(kub.pods.values()):
        if rt.sandbox is None or rt.stopping:
            continue
        live = [c.pid for c in rt.containers.values() if c.pid and procutil.alive(c.pid)]
        sb = None
        for pid in live:
            try:
                sb = (await d.launch("adopt_sandbox", pid=pid, tag={"uid": rt.uid}, _now=True))["sandbox"]
                break
            except Exception as e:
                log.debug("pod %s/%s: re-opening from %s: %s", rt.namespace, rt.name, pid, e)
        if sb is None:
            pod = d.cluster.store.find("Pod", rt.namespace, rt.name)
            if pod is None or pod.metadata.uid != rt.uid:
                continue
            try:
                sb = await _new_sandbox(d, pod, rt.netns)
                made += 1
            except Exception as e:
                log.error("pod %s/%s: no sandbox after the launcher's restart: %s", rt.namespace, rt.name, e)
                continue
        if rt.sandbox is not None:
            rt.sandbox.update(sb)
            n += 1
    log.info("re-opened %d pod sandboxes in the new launcher (%d made anew)", n, made)
