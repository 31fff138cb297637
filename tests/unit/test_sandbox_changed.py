"""A pod whose pause process died (kubelet's SandboxChanged): how the death is told, and what
restartPolicy makes of it (netemu.dataplane.rootfs.pause_alive, netemu.dataplane.kubelet)."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

from netemu import procutil
from netemu.dataplane import rootfs
from netemu.dataplane.kubelet import ContainerRt, Kubelet, PodRt, prepare_new_sandbox, sandbox_wanted
from netemu.spec.models import Container, ContainerStateTerminated, Pod

INF = float("inf")


def _stat(tmp_path, pid: int, state: str = "S", flags: int = 0x400100, start: str = "4242") -> None:
    # /proc/PID/stat: pid (comm) state ppid pgrp session tty tpgid flags ... starttime (field 22)
    after = [state, "1", str(pid), str(pid), "0", "-1", str(flags)] + ["0"] * 12 + [start, "0", "0"]
    (tmp_path / str(pid)).mkdir()
    (tmp_path / str(pid) / "stat").write_text(f"{pid} (sleep) " + " ".join(after) + "\n")


def test_pause_alive_reads_state_flags_and_start_time(tmp_path):
    _stat(tmp_path, 10)
    _stat(tmp_path, 11, state="Z")
    _stat(tmp_path, 12, flags=0x400100 | rootfs.PF_EXITING)  # a PID 1 in do_exit, reaping its namespace
    proc = str(tmp_path)
    assert rootfs.pause_alive(10, "4242", proc=proc)
    assert rootfs.pause_alive(10, "", proc=proc)  # start time unknown: the state says
    assert not rootfs.pause_alive(10, "999", proc=proc)  # another process has that number now
    assert not rootfs.pause_alive(11, "4242", proc=proc)
    assert not rootfs.pause_alive(12, "4242", proc=proc)
    assert not rootfs.pause_alive(13, "", proc=proc)  # gone


def test_pause_alive_on_a_real_process():
    p = subprocess.Popen(["sleep", "60"])
    try:
        started = procutil.stat_field(p.pid, 19)
        assert rootfs.pause_alive(p.pid, started)
        os.kill(p.pid, signal.SIGKILL)
        os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # a zombie, not reaped yet
        assert not rootfs.pause_alive(p.pid, started)
    finally:
        p.kill()
        p.wait()
    assert not rootfs.pause_alive(p.pid, started)


def _pod(policy: str | None = None) -> Pod:
    spec: dict = {"containers": [{"name": "a", "image": "busybox"}]}
    if policy:
        spec["restartPolicy"] = policy
    return Pod.model_validate({"metadata": {"name": "p", "namespace": "default", "uid": "u1"}, "spec": spec})


def _rt(*containers: ContainerRt) -> PodRt:
    rt = PodRt("default", "p", "u1", "n1", "ns", "u1", sandbox={"uts": 3, "mnt": 4})
    for c in containers:
        rt.containers[c.spec.name] = c
    return rt


def _c(name: str, **kw) -> ContainerRt:
    return ContainerRt(spec=Container(name=name, image="busybox"), **kw)


def _killed() -> ContainerStateTerminated:
    return ContainerStateTerminated(exit_code=137, signal=9, reason="Error")


def test_a_new_sandbox_unless_restart_policy_says_the_pod_is_done():
    # Always: the killed container restarts (on_exit scheduled it)
    assert sandbox_wanted(_pod(), _rt(_c("a", started_at=1.0, last_terminated=_killed(), next_start=0.0)))
    # Never, once a container ran: no new sandbox (the pod ends Failed, its containers exit 137)
    assert not sandbox_wanted(_pod("Never"), _rt(_c("a", started_at=1.0, last_terminated=_killed(), next_start=INF)))
    # Never, before any container was started: the sandbox is made again (kubelet's "never created")
    assert sandbox_wanted(_pod("Never"), _rt(_c("a")))
    # OnFailure: a container that succeeded stays done; the pod needs a sandbox only for the others
    done = _c("done", started_at=1.0, next_start=INF,
              last_terminated=ContainerStateTerminated(exit_code=0, reason="Completed"))
    assert not sandbox_wanted(_pod("OnFailure"), _rt(done))
    assert sandbox_wanted(_pod("OnFailure"), _rt(done, _c("a", started_at=1.0, last_terminated=_killed())))
    # init containers alone do not keep a pod that has nothing left to run
    assert not sandbox_wanted(_pod("OnFailure"), _rt(done, _c("i", init=True, done=True, next_start=INF)))


def test_init_containers_run_again_in_a_new_sandbox():
    init = _c("setup", init=True, done=True, next_start=INF, restart_count=0, started_at=1.0, waiting_reason=None)
    side = _c("proxy", init=True, sidecar=True, started_at=1.0, next_start=0.0, restart_count=1)
    app = _c("a", started_at=1.0, next_start=0.0, restart_count=1, waiting_reason=None)
    rt = _rt(app, init, side)
    prepare_new_sandbox(rt)
    assert not init.done and init.next_start == 0.0 and init.restart_count == 1  # one more run: counted
    assert init.waiting_reason == "PodInitializing"
    assert side.started_at is None and side.restart_count == 1  # counted already when it was killed
    assert app.waiting_reason == "PodInitializing" and app.restart_count == 1
    # without init containers nothing changes
    plain = _c("a", started_at=1.0, next_start=0.0, restart_count=1, waiting_reason=None)
    prepare_new_sandbox(_rt(plain))
    assert plain.waiting_reason is None


class _Cluster:
    def __init__(self):
        self.events: list = []

    def event(self, *a, **kw):
        self.events.append(a)


@pytest.fixture
def kubelet():
    changes = []
    k = Kubelet("lab", _Cluster(), net=None, cgroups=None, launch=None, on_change=lambda: changes.append(1),
                launcher_pid=lambda: 0)
    k.node_up["n1"] = True
    return k


def test_the_pause_exit_marks_the_sandbox_dead(kubelet):
    p = subprocess.Popen(["sleep", "60"])
    try:
        rt = _rt(_c("a"))
        rt.sandbox.update(pause=p.pid, pause_started=procutil.stat_field(p.pid, 19))
        kubelet.pods[rt.key] = rt
        kubelet._watch_pause(rt)
        assert kubelet.by_pause == {p.pid: rt} and not rt.sandbox_dead
        kubelet.on_exit(12345678, 0)  # some other process: not the sandbox's
        assert not rt.sandbox_dead
        p.kill()
        p.wait()
        kubelet.on_exit(p.pid, -signal.SIGKILL & 0xFFFF)
        assert rt.sandbox_dead and kubelet.by_pause == {}
        assert not kubelet._sandbox_alive(rt)
    finally:
        p.kill()
        p.wait()


def test_a_stopping_pod_is_not_given_a_new_sandbox(kubelet):
    rt = _rt(_c("a"))
    rt.sandbox.update(pause=999999999, pause_started="1")  # no such process
    rt.stopping = True  # deleted, or the lab goes down
    kubelet._watch_pause(rt)
    assert not rt.sandbox_dead
    kubelet.on_exit(999999999, 9)
    assert not rt.sandbox_dead


def test_a_pause_that_died_before_it_was_known_is_noticed(kubelet):
    rt = _rt(_c("a"))
    rt.sandbox.update(pause=999999999, pause_started="1")
    kubelet._early_exits[999999999] = 9
    kubelet._watch_pause(rt)
    assert rt.sandbox_dead and 999999999 not in kubelet._early_exits
