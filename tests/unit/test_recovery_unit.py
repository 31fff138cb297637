"""The pure parts of recovery (issue 13, part B): the launcher's message framing (memfd for big
messages), the control process's launcher queue (bounded, an unsendable request fails alone, deadlines,
late answers undone, a launcher that dies), the state file read back, the supervisor's decisions (its
liveness check of a wedged control process among them), `netemu labs` during a restart."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket

import pytest

from netemu.daemon import lab as lab_mod
from netemu.daemon import recovery, supervisor
from netemu.dataplane import launcher as launcher_mod
from netemu.dataplane.launcher import MessageTooLarge, recv_msg, send_msg
from netemu.spec.models import Deployment, Lab, LabNode, Service


def _pair():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


# --------------------------------------------------------------------------- framing
def test_small_messages_go_inline_big_ones_in_a_memfd():
    a, b = _pair()
    send_msg(a, b'{"x": 1}')
    assert recv_msg(b) == b'{"x": 1}'
    big = json.dumps({"env": {f"S{i}_SERVICE_HOST": "10.96.0.1" for i in range(20000)}}).encode()
    assert len(big) > 200_000  # more than a SOCK_SEQPACKET message may carry (Errno 90 before)
    send_msg(a, big)
    assert recv_msg(b) == big
    a.close()
    assert recv_msg(b) == b""  # EOF


def test_a_message_past_the_limit_is_refused_before_anything_is_sent(monkeypatch):
    monkeypatch.setattr(launcher_mod, "MAX_MESSAGE", 100_000)
    a, b = _pair()
    with pytest.raises(MessageTooLarge, match="over the pod launcher's limit"):
        send_msg(a, b"x" * 100_001)
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        recv_msg(b)


def test_a_full_socket_says_so_and_sends_nothing():
    a, b = _pair()
    a.setblocking(False)
    with pytest.raises(BlockingIOError):
        for _ in range(100_000):
            send_msg(a, b"y" * 1000)


# --------------------------------------------------------------------------- the control process's queue
def _daemon():
    lab = Lab()
    lab.metadata.name = "unitrecovery"
    lab.spec.nodes = [LabNode(name="m-k8s", ip="192.168.1.10", role="control-plane")]
    from netemu.dataplane.cgroups import LabCgroups
    from netemu.dataplane.launcher import LauncherClient

    return lab_mod.LabDaemon(lab, [], LauncherClient(0, None), LabCgroups("unitrecovery"))


class FakeLauncher:
    """The launcher's end: answers what it reads (or not, when told)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.setblocking(False)
        self.seen: list[dict] = []
        self.answer = True
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self):
        while True:
            try:
                data = recv_msg(self.sock)
            except BlockingIOError:
                return
            if not data:
                return
            msg = json.loads(data)
            self.seen.append(msg)
            if self.answer:
                self.reply(msg)

    def reply(self, msg: dict, **extra):
        out = {"id": msg["id"], "pid": 4242, **extra} if msg["op"] == "container" else {"id": msg["id"], "ok": True}
        send_msg(self.sock, json.dumps(out).encode())

    def close(self):
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


async def _attached(d):
    ours, theirs = _pair()
    d._attach_launcher(os.getpid(), ours)  # (a pidfd on ourselves: never readable here)
    d._runtime_ready.set()
    return FakeLauncher(theirs)


def test_a_big_request_is_answered_and_an_oversized_one_fails_alone(monkeypatch):
    monkeypatch.setattr(launcher_mod, "MAX_MESSAGE", 2_000_000)

    async def main():
        d = _daemon()
        fake = await _attached(d)
        env = {f"SVC{i}_SERVICE_HOST": "10.96.0.1" for i in range(10000)}
        assert (await d.launch("container", env=env))["pid"] == 4242
        assert fake.seen[-1]["env"] == env
        with pytest.raises(RuntimeError, match="over the pod launcher's limit"):
            await d.launch("container", env={"BIG": "x" * 3_000_000})
        assert (await d.launch("container", env={}))["pid"] == 4242  # the queue moved on
        d._stopping = True
        d._detach_launcher()
    asyncio.run(main())


def test_the_queue_is_bounded_and_a_silent_launcher_times_out(monkeypatch):
    monkeypatch.setattr(lab_mod, "OUTBOX_MAX", 5)
    monkeypatch.setattr(lab_mod, "LAUNCH_TIMEOUT", 0.3)
    killed = []
    monkeypatch.setattr(lab_mod.os, "kill", lambda pid, sig: killed.append((pid, sig)))

    async def main():
        d = _daemon()
        fake = await _attached(d)
        fake.answer = False
        asyncio.get_running_loop().remove_reader(fake.sock.fileno())  # nothing read: the socket fills
        tasks = [asyncio.ensure_future(d.launch("container", env={"A": "x" * 20000})) for _ in range(40)]
        await asyncio.sleep(0.05)
        refused = [t for t in tasks if t.done() and "requests waiting" in str(t.exception())]
        assert refused, "a full queue refuses more"
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert any("did not answer within" in str(r) for r in results)
        assert not d._outbox  # what was never sent is dropped with its request
        # the late answer to one given up on: the container nobody tracks is killed
        rid = next(iter(d._abandoned))
        fake.reply({"id": rid, "op": "container"})
        d._on_launcher_readable()
        assert (4242, signal.SIGKILL) in killed
        d._stopping = True
        d._detach_launcher()
    asyncio.run(main())


def test_a_launcher_that_dies_fails_what_it_was_asked_and_is_restarted(monkeypatch):
    started = []

    def fake_start():
        ours, theirs = _pair()
        started.append(theirs)
        return os.getpid(), ours
    monkeypatch.setattr(launcher_mod, "start", fake_start)

    async def main():
        d = _daemon()
        fake = await _attached(d)
        fake.answer = False
        task = asyncio.ensure_future(d.launch("container", env={}))
        await asyncio.sleep(0.05)
        fake.close()  # EOF: the launcher is gone
        with pytest.raises(RuntimeError, match="being restarted"):
            await task
        await asyncio.wait_for(d._restarting, 5)
        assert started and d._runtime_ready.is_set() and d.launcher_restarts == 1
        fake2 = FakeLauncher(started[0])
        assert (await d.launch("container", env={}))["pid"] == 4242
        assert fake2.seen
        d._stopping = True
        d._detach_launcher()
    asyncio.run(main())


def test_release_is_a_no_op_once_the_lab_stops():
    async def main():
        d = _daemon()
        d._stopping = True
        assert await d.launch("release", fds=[5, 6]) == {"released": True}
    asyncio.run(main())


# --------------------------------------------------------------------------- the state file
def test_the_state_file_reads_back_as_typed_objects_with_their_identity(tmp_path, monkeypatch):
    from netemu import paths
    from netemu.api.storage import Storage
    from netemu.control.cluster import Cluster

    monkeypatch.setattr(paths, "RUN_DIR", str(tmp_path))
    lab = Lab()
    lab.metadata.name = "st"
    lab.spec.nodes = [LabNode(name="m-k8s", ip="192.168.1.10", role="control-plane")]
    c = Cluster(lab)
    storage = Storage(c)
    c.bootstrap()
    c.apply([Deployment.model_validate({"metadata": {"name": "web"}, "spec": {
        "replicas": 5, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
        Service.model_validate({"metadata": {"name": "svc"}, "spec": {"selector": {"app": "web"},
                                                                     "ports": [{"port": 80}]}})])
    c.reconcile()
    os.makedirs(paths.lab_dir("st"))
    data = {"lab": lab.dump(), "last_rv": c.store.last_rv + 7, "objects": [storage.dump(o) for o in c.store]}
    with open(paths.state_file("st"), "w") as f:
        json.dump(data, f)
    lab2, objs, extra = recovery.read_state("st")
    assert lab2.metadata.name == "st" and extra["last_rv"] == c.store.last_rv + 7
    by = {(o.kind, o.metadata.name): o for o in objs}
    assert isinstance(by[("Deployment", "web")], Deployment) and by[("Deployment", "web")].spec.replicas == 5
    assert by[("Service", "svc")].metadata.uid == c.store.get("Service", "default", "svc").metadata.uid
    assert len([o for o in objs if o.kind == "Pod" and (o.metadata.labels or {}).get("app") == "web"]) == 5

    class D:  # what restore_store needs of a LabDaemon
        pass
    d = D()
    d.cluster = Cluster(lab2)
    d.storage = Storage(d.cluster)
    recovery.restore_store(d, objs, extra)
    assert d.cluster.store.last_rv == c.store.last_rv + 8
    assert d.storage.watch.oldest == d.cluster.store.last_rv  # older watches: 410 Gone, list again
    assert d.cluster.store.new_uid() not in {o.metadata.uid for o in objs}  # not the first run's sequence again


def test_writes_after_the_snapshot_come_back_from_the_journal(tmp_path, monkeypatch):
    """A write answered after the last state file (a scale, a new Service, a deletion) survives a crash:
    the journal's newer changes are replayed over the snapshot; a torn last line is dropped; a
    snapshot removes the segments it holds."""
    from netemu import paths
    from netemu.api.storage import Storage
    from netemu.control.cluster import Cluster
    from netemu.daemon.journal import Journal

    monkeypatch.setattr(paths, "RUN_DIR", str(tmp_path))
    lab = Lab()
    lab.metadata.name = "jr"
    lab.spec.nodes = [LabNode(name="m-k8s", ip="192.168.1.10", role="control-plane")]
    c = Cluster(lab)
    storage = Storage(c)
    os.makedirs(paths.lab_dir("jr"))
    journal = storage.journal = Journal(paths.lab_dir("jr"))  # as LabDaemon wires it
    c.bootstrap()
    c.apply([Deployment.model_validate({"metadata": {"name": "web"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
        Service.model_validate({"metadata": {"name": "old"}, "spec": {"selector": {"app": "web"},
                                                                     "ports": [{"port": 80}]}})])
    # the snapshot, as LabDaemon._persist takes it: its objects, then a new segment
    snap = {"lab": lab.dump(), "last_rv": c.store.last_rv, "objects": [storage.dump(o) for o in c.store]}
    covered = journal.rotate()
    with open(paths.state_file("jr"), "w") as f:
        json.dump(snap, f)
    journal.drop_through(covered)
    assert os.listdir(paths.lab_dir("jr")).count("journal.1") == 0  # held by the snapshot: gone
    # after the snapshot: a scale, a new Service, a deletion; then the crash
    dep = c.store.get("Deployment", "default", "web")
    dep.spec.replicas = 5
    c.store.update(dep)
    c.apply([Service.model_validate({"metadata": {"name": "new"}, "spec": {"ports": [{"port": 81}]}})])
    c.store.delete("Service", "default", "old")
    journal.flush()
    with open(os.path.join(paths.lab_dir("jr"), f"journal.{journal.seq}"), "ab") as f:
        f.write(b'{"rv": 99999, "key": ["Service", "defa')  # killed while writing its last line
    _, objs, extra = recovery.read_state("jr")
    by = {(o.kind, o.metadata.name): o for o in objs}
    assert by[("Deployment", "web")].spec.replicas == 5
    assert ("Service", "new") in by and ("Service", "old") not in by
    assert extra["last_rv"] == c.store.last_rv
    # a resumed process's journal goes on after the crashed one's segments
    assert Journal(paths.lab_dir("jr")).seq == journal.seq + 1


def test_strays_are_processes_no_tracked_container_accounts_for(monkeypatch):
    parents = {10: 1, 11: 10, 12: 11, 20: 1, 21: 20, 31: 30}
    monkeypatch.setattr(recovery, "_ppid", lambda p: parents.get(p, 0))
    monkeypatch.setattr(recovery, "_ns_init", lambda p: p == 30)  # a sandbox's pause process
    assert recovery._strays({10, 11, 12, 20, 21}, {10}) == {20, 21}
    assert recovery._strays({10, 11}, set()) == {10, 11}
    assert recovery._strays({10, 30, 31}, {10}) == set()  # the pause and what it adopted stay


def test_a_node_taken_down_stays_down_after_a_restart():
    from netemu.spec.models import Node

    def node(status, reason):
        return Node.model_validate({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "Ready", "status": status, "reason": reason}]}})
    assert recovery.node_is_up(node("True", "KubeletReady"))
    assert not recovery.node_is_up(node("False", "NodeStatusUnknown"))


# --------------------------------------------------------------------------- the supervisor
def _supervisor(tmp_path, monkeypatch):
    from netemu import paths

    monkeypatch.setattr(paths, "RUN_DIR", str(tmp_path))
    os.makedirs(paths.lab_dir("sv"), exist_ok=True)
    a, b = _pair()
    s = supervisor.Supervisor("sv", 999999, a.detach(), -1)
    return s, b


def test_the_supervisor_restarts_only_a_lab_that_was_up(tmp_path, monkeypatch):
    s, _ = _supervisor(tmp_path, monkeypatch)
    assert s._child_exited(signal.SIGKILL) == 0  # never ready: its `up` reports it, no restart
    s, _ = _supervisor(tmp_path, monkeypatch)
    s.ever_ready = s.ready = True
    assert s._child_exited(0) == 0  # status 0: the lab was removed (down, or a rolled-back build)
    s, _ = _supervisor(tmp_path, monkeypatch)
    s.ever_ready = True
    s.stopping = True
    assert s._child_exited(signal.SIGKILL) == 0  # `down` had begun
    s, _ = _supervisor(tmp_path, monkeypatch)
    s.ever_ready = s.ready = True
    s.ready_at = 0.0
    assert s._child_exited(signal.SIGKILL) is None and s.restart_at is not None
    first = s.delay
    s.child = 1
    assert s._child_exited(signal.SIGKILL) is None and s.delay > first  # back-off grows


def test_the_supervisor_learns_readiness_and_the_launcher_from_its_link(tmp_path, monkeypatch):
    s, theirs = _supervisor(tmp_path, monkeypatch)
    link = supervisor.Link(theirs.detach())
    x, y = _pair()
    link.ready()
    link.launcher(4321, x)
    link.stopping()
    s._read_chan()
    assert s.ready and s.ever_ready and s.stopping and s.launcher_pid == 4321 and s.launcher_sock is not None


def test_read_pid_is_none_for_a_process_that_is_not_the_labs_supervisor(tmp_path, monkeypatch):
    from netemu import paths

    monkeypatch.setattr(paths, "RUN_DIR", str(tmp_path))
    os.makedirs(paths.lab_dir("x"))
    with open(supervisor.pid_file("x"), "w") as f:
        f.write(str(os.getpid()))  # pytest: alive, but no supervisor
    assert supervisor.read_pid("x") is None


# --------------------------------------------------------------------------- the supervisor's liveness check
def test_the_liveness_decision_kills_only_a_running_process_silent_for_the_limit():
    w = supervisor.wedged
    assert w(100.0, 130.0, "S", False, limit=30)  # silent for the whole limit, sleeping in a blocking call
    assert w(100.0, 250.0, "R", False, limit=30)  # spinning
    assert w(100.0, 131.0, "D", False, limit=30)
    assert not w(100.0, 129.9, "S", False, limit=30)  # heard from recently
    assert not w(None, 1e9, "S", False, limit=30)  # not up yet (building, resuming): not timed
    assert not w(100.0, 200.0, "T", False, limit=30)  # stopped (SIGSTOP): `down`'s business
    assert not w(100.0, 200.0, "t", False, limit=30)  # stopped by a tracer
    assert not w(100.0, 200.0, "S", True, limit=30)  # the lab is going down
    assert not w(100.0, 200.0, "Z", False, limit=30)  # dead already: the reaping restarts it
    assert not w(100.0, 200.0, "", False, limit=30)  # gone
    assert not w(100.0, 1e9, "S", False, limit=0)  # the check turned off


def test_the_liveness_limit_comes_from_the_environment(monkeypatch):
    for value, want in (("3", 3.0), ("45.5", 45.5), ("0", 0.0), ("-1", 0.0), ("0.1", 3 * supervisor.HEARTBEAT_SECONDS),
                        ("soon", 30.0)):
        monkeypatch.setenv("NETEMU_LIVENESS_SECONDS", value)
        assert supervisor._liveness_seconds() == want, value
    monkeypatch.delenv("NETEMU_LIVENESS_SECONDS")
    assert supervisor._liveness_seconds() == 30.0


def _supervising(tmp_path, monkeypatch, state: str):
    """A supervisor whose control process (pid 999999, never signalled for real) is in `state`."""
    s, theirs = _supervisor(tmp_path, monkeypatch)
    s.liveness = 30.0
    s.ever_ready = s.ready = True
    signals = []
    monkeypatch.setattr(supervisor.os, "kill", lambda pid, sig: signals.append((pid, sig)))
    monkeypatch.setattr(supervisor.procutil, "stat_field", lambda pid, i: state)
    monkeypatch.setattr(supervisor, "STACK_DUMP_WAIT", 0)
    return s, theirs, signals


def test_the_supervisor_kills_a_wedged_control_process_once_and_restarts_it(tmp_path, monkeypatch):
    s, theirs, signals = _supervising(tmp_path, monkeypatch, "S")
    s._check_liveness(1000.0)
    assert signals == []  # not up yet: nothing is timed
    s.last_heard = 1000.0
    s._check_liveness(1029.0)
    assert signals == []
    s._check_liveness(1030.5)
    # its stacks first (faulthandler), then SIGKILL, to its own pid
    assert signals == [(999999, supervisor.STACK_SIGNAL), (999999, signal.SIGKILL)]
    s._check_liveness(2000.0)
    assert len(signals) == 2  # killed once; its exit is reaped as a crash
    assert s._child_exited(signal.SIGKILL) is None and s.restart_at is not None  # restarted, with back-off


def test_the_supervisor_leaves_a_stopped_or_stopping_control_process_alone(tmp_path, monkeypatch):
    s, _, signals = _supervising(tmp_path, monkeypatch, "T")
    s.last_heard = 0.0
    s._check_liveness(1000.0)
    assert signals == [] and s.last_heard == 1000.0  # its silence counts from when it continues
    monkeypatch.setattr(supervisor.procutil, "stat_field", lambda pid, i: "S")  # SIGCONT, and still silent
    s._check_liveness(1029.0)
    assert signals == []
    s._check_liveness(1030.0)
    assert [sig for _, sig in signals] == [supervisor.STACK_SIGNAL, signal.SIGKILL]
    s, _, signals = _supervising(tmp_path, monkeypatch, "S")
    s.last_heard, s.stopping = 0.0, True
    s._check_liveness(1000.0)
    assert signals == []


def test_heartbeats_reach_the_supervisor_and_never_pile_up(tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor, "HEARTBEAT_SECONDS", 0.01)
    s, theirs = _supervisor(tmp_path, monkeypatch)
    link = supervisor.Link(theirs.detach())

    async def beat(seconds):
        link.attach(lambda pid, status: None)
        link.start_heartbeat()
        await asyncio.sleep(seconds)
        link._beating.cancel()
    asyncio.run(beat(0.3))  # the supervisor reads nothing meanwhile (stopped, say)
    n = 0
    while True:
        try:
            data = s.chan.recv(1000)
        except BlockingIOError:
            break
        assert json.loads(data) == {"alive": True}
        n += 1
    assert n == 1  # not one more while the last was unread: the link never fills up with them
    assert s.last_heard is None
    asyncio.run(beat(0.05))
    s._read_chan()
    assert s.last_heard is not None  # a heartbeat arms (and refreshes) the liveness check
    link.stopping()
    s._read_chan()
    assert s.stopping and s._liveness_deadline() is None


def test_labs_reads_restarting_while_a_wedged_control_process_is_replaced(tmp_path, monkeypatch):
    """`netemu labs` during the restart: the old process killed in the middle of the call, or the new one
    (python -m netemu.daemon.main --resume) not serving yet, is Restarting, not Unreachable."""
    from netemu import paths
    from netemu.cli import client as client_mod, lab_cmds

    monkeypatch.setattr(paths, "RUN_DIR", str(tmp_path))
    os.makedirs(paths.lab_dir("lv"))
    open(paths.state_file("lv"), "w").close()
    failure = {}

    class FakeClient:
        def __init__(self, lab, timeout=None):
            pass

        def rest(self, *a, **k):
            raise failure["error"]
    monkeypatch.setattr(lab_cmds, "Client", FakeClient)
    monkeypatch.setattr(lab_cmds, "daemon_pid", lambda name: 4242)
    monkeypatch.setattr(lab_cmds, "_supervised", lambda name: True)
    resuming = {"yes": False}
    monkeypatch.setattr(lab_cmds, "cmdline_has", lambda pid, word: word == b"--resume" and resuming["yes"])
    dead = {"yes": False}
    monkeypatch.setattr(lab_cmds, "_dead_soon", lambda pid, within=2.0: dead["yes"])

    def row():
        return lab_cmds._lab_row("lv")

    failure["error"] = client_mod.LabUnresponsive("no answer")
    assert row()[1] == "NotResponding"  # wedged, not yet killed
    failure["error"] = client_mod.LabConnectionLost("closed")
    dead["yes"] = True
    r = row()
    assert r[1] == "Restarting" and r[-1] == "-"  # killed during the call: its supervisor brings it back
    dead["yes"] = False
    failure["error"] = client_mod.LabNotRunning("refused")
    assert row()[1] == "Unreachable"  # a first control process that refuses: not a restart
    resuming["yes"] = True
    assert row()[1] == "Restarting"  # the restarted one, resuming, does not serve yet
