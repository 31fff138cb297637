"""A stuck or crashed lab recovers by itself (issue 13, part B).

Regression tests with real labs (a pod environment too big for one socket message, thousands of
Services, is test_limits'): a pod launcher that is killed or stopped (restarted; the containers it ran
keep running and are adopted), a control process that is killed or stopped at several moments (its
supervisor restarts it; the lab resumes from its state file with the objects it had, the same API port
and CA, its pods adopted rather than made anew), one that is wedged (its event loop blocked: the
supervisor's liveness check kills and restarts it), and `down` after any of it leaving nothing behind.
Only addresses inside the tests' own labs are sent to, after checking the route.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import conftest
from conftest import NP_PODS, NP_SVC, curl, netemu
from netemu.procutil import alive

Lab = conftest.TestLab  # (imported under its own name, pytest would try to collect it)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _control_pid(lab: Lab) -> int | None:
    pid = _read_int(f"/run/netemu/{lab.name}/daemon.pid")
    return pid if pid and alive(pid) else None


def _supervisor_pid(lab: Lab) -> int | None:
    pid = _read_int(f"/run/netemu/{lab.name}/supervisor.pid")
    return pid if pid and alive(pid) else None


def _launcher_pid(lab: Lab) -> int | None:
    """The lab's pod launcher: the process of its cgroup running netemu.dataplane.launcher whose
    parent is not itself a launcher (pods are forks of it)."""
    from netemu.dataplane.cgroups import LabCgroups, read_procs

    base = LabCgroups(lab.name)._procs_base()
    pids = read_procs(os.path.join(base, "system")) if base else []
    def is_launcher(pid) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return b"netemu.dataplane.launcher" in f.read()
        except OSError:
            return False

    def parent(pid) -> int:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return 0
    for pid in pids:
        if is_launcher(pid) and not is_launcher(parent(pid)):  # not a pod being forked from it
            return pid
    return None


def _assert_gone(lab: Lab) -> None:
    from netemu.dataplane.names import host_link

    assert lab.netns() == [], lab.netns()
    assert not os.path.exists(f"/run/netemu/{lab.name}")
    assert not any(os.path.exists(f"/sys/fs/cgroup/{c}/netemu/{lab.name}") for c in ("pids", "cpu", "memory", ""))
    assert not os.path.exists(f"/sys/class/net/{host_link(lab.name)}")
    try:
        assert not [n for n in os.listdir("/etc/netns") if n.startswith(f"ne-{lab.name}_") or n == f"ne-{lab.name}"]
    except FileNotFoundError:
        pass


def _labs_status(lab: Lab) -> str:
    res = netemu("labs")
    for line in res.stdout.splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] == lab.name:
            return parts[1]
    return "-"


def _pods_by_name(lab: Lab, selector: str = "app=np-pods") -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in lab.pods(selector)}


def _running(lab: Lab, n: int, selector: str = "app=np-pods"):
    def check():
        try:
            pods = lab.pods(selector)
        except AssertionError:  # the control process is restarting
            return False
        ok = [p for p in pods if p["status"].get("phase") == "Running"
              and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])]
        return pods if len(ok) == n == len(pods) else False
    return check


def _wait_running(lab: Lab, n: int, timeout: float = 90) -> dict[str, dict]:
    """n pods of np-pods Running and Ready (with the lab's log in the error if not)."""
    try:
        return {p["metadata"]["name"]: p for p in lab.wait_for(_running(lab, n), timeout=timeout, what=f"{n} pods")}
    except AssertionError as e:
        try:
            with open(f"/run/netemu/{lab.name}/daemon.log") as f:
                tail = "".join(line for line in f.readlines() if "kubeproxy" not in line)[-6000:]
        except OSError:
            tail = "(no log)"
        pods = lab.run("get", "pods", "-o", "wide", check=False).stdout
        raise AssertionError(f"{e}\n{pods}\n--- daemon.log ---\n{tail}") from None


def _persisted(lab: Lab, n: int):
    """What a restart resumes from (the state file and the journal's newer changes) holds n np-pods pods
    running and ready."""
    from netemu.daemon.journal import replay

    def check():
        try:
            with open(f"/run/netemu/{lab.name}/state.json") as f:
                data = json.load(f)
            objs, _ = replay(f"/run/netemu/{lab.name}", data["objects"], int(data.get("last_rv") or 0))
        except (OSError, ValueError):  # a segment removed under the reader by a new snapshot: look again
            return False
        ok = [o for o in objs if o["kind"] == "Pod" and (o["metadata"].get("labels") or {}).get("app") == "np-pods"
              and o["status"].get("phase") == "Running"
              and all(c.get("ready") and c.get("containerID") for c in o["status"].get("containerStatuses") or [{}])]
        return len(ok) == n
    lab.wait_for(check, timeout=10, interval=0.05, what=f"{n} running pods in the state file")


def _container_ids(pods: dict[str, dict]) -> dict[str, str]:
    return {n: p["status"]["containerStatuses"][0].get("containerID") for n, p in pods.items()}


def _restarts(pods: dict[str, dict]) -> dict[str, int]:
    return {n: p["status"]["containerStatuses"][0].get("restartCount", 0) for n, p in pods.items()}


def _serves(lab: Lab, want: set[str], tries: int = 200) -> set[str]:
    """Who answers through the NodePort: stops once every pod in `want` did (at most `tries` requests)."""
    ip = lab.node_ips["w1-k8s"]
    seen: set[str] = set()
    for _ in range(tries):
        seen.add(curl(lab, ip, 30000).strip())
        if want <= seen:
            break
    return seen


def _wait_resumed(lab: Lab, old_pid: int, timeout: float = 60) -> int:
    def back():
        pid = _control_pid(lab)
        return pid if pid and pid != old_pid and _labs_status(lab) == "Running" else None
    return lab.wait_for(back, timeout=timeout, interval=0.3, what="the control process restarted")


def _ca(lab: Lab) -> bytes:
    with open(f"/run/netemu/{lab.name}/pki/ca.crt", "rb") as f:
        return f.read()


def _api_port(lab: Lab) -> int:
    with open(f"/run/netemu/{lab.name}/apiserver.json") as f:
        return json.load(f)["port"]


def _https_version(lab: Lab) -> int:
    """GET /version over the lab's host port, with the kubeconfig's CA and client certificate as `up`
    wrote them: it still works after a restart (same port, same CA)."""
    import http.client
    import ssl

    d = f"/run/netemu/{lab.name}/pki"
    ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))
    ctx.load_cert_chain(os.path.join(d, "client.crt"), os.path.join(d, "client.key"))
    conn = http.client.HTTPSConnection("127.0.0.1", _api_port(lab), context=ctx, timeout=5)
    try:
        conn.request("GET", "/version")
        return conn.getresponse().status
    finally:
        conn.close()


# --------------------------------------------------------------------------- 4b. the launcher
def test_a_killed_launcher_is_restarted_and_its_containers_keep_running(lab, tmp_path):
    lab.up(NP_PODS.format(replicas=3) + NP_SVC, tmp_path=tmp_path)
    before = _pods_by_name(lab)
    ids = _container_ids(before)
    launcher = _launcher_pid(lab)
    assert launcher
    os.kill(launcher, signal.SIGKILL)
    lab.wait_for(lambda: (_launcher_pid(lab) or launcher) != launcher, timeout=30, what="a new launcher")
    assert _labs_status(lab) == "Running"
    # new pods start in the new launcher
    lab.run("scale", "deployment", "np-pods", "--replicas=5")
    pods = lab.wait_for(_running(lab, 5), timeout=60, what="5 pods Running")
    now = {p["metadata"]["name"]: p for p in pods}
    # the old ones are the same containers, not restarted
    assert {n: _container_ids(now)[n] for n in before} == ids
    assert all(_restarts(now)[n] == 0 for n in before)
    old = sorted(before)[0]
    assert lab.exec(old, "hostname").stdout.strip() == old  # its sandbox re-opened in the new launcher
    assert _serves(lab, set(now)) == set(now)
    # an old container's exit is still seen (the supervisor reports it): deleting it replaces it
    lab.run("delete", "pod", old)
    lab.wait_for(lambda: old not in _pods_by_name(lab) and len(_running(lab, 5)() or []) == 5, timeout=60,
                 what="the deleted pod replaced")
    # a container of the old launcher that crashes is restarted, RESTARTS counted
    victim = sorted(set(before) - {old})[0]
    pid = int(_container_ids(before)[victim].split("//")[1])
    os.kill(pid, signal.SIGKILL)

    def restarted():
        p = _pods_by_name(lab).get(victim)
        return p and _restarts({victim: p})[victim] == 1 and p["status"]["phase"] == "Running"
    lab.wait_for(restarted, timeout=60, what="the crashed container restarted, RESTARTS 1")
    lab.down()
    _assert_gone(lab)


def test_a_stopped_launcher_is_replaced(lab, tmp_path, monkeypatch):
    monkeypatch.setenv("NETEMU_LAUNCHER_HUNG_SECONDS", "2")
    lab.up(NP_PODS.format(replicas=2) + NP_SVC, tmp_path=tmp_path)
    launcher = _launcher_pid(lab)
    os.kill(launcher, signal.SIGSTOP)
    try:
        lab.run("scale", "deployment", "np-pods", "--replicas=4")
        lab.wait_for(_running(lab, 4), timeout=90, what="4 pods Running with a new launcher")
        assert _launcher_pid(lab) != launcher and not alive(launcher)
    finally:
        try:
            os.kill(launcher, signal.SIGCONT)
        except ProcessLookupError:
            pass
    lab.down()
    _assert_gone(lab)


# --------------------------------------------------------------------------- 4c. the control process
@pytest.mark.parametrize("moment", ["idle", "while-scaling", "with-its-launcher"])
def test_a_killed_control_process_is_restarted_with_the_objects_it_had(lab, tmp_path, moment):
    lab.up(NP_PODS.format(replicas=3) + NP_SVC, tmp_path=tmp_path)
    ca, port = _ca(lab), _api_port(lab)
    lab.run("scale", "deployment", "np-pods", "--replicas=5")
    before = _wait_running(lab, 5)
    _persisted(lab, 5)
    want = 5
    pid = _control_pid(lab)
    if moment == "while-scaling":
        want = 9
        # killed the moment the answer came: the state file may not have it yet, the journal has
        lab.run("scale", "deployment", "np-pods", f"--replicas={want}")
    if moment == "with-its-launcher":
        os.kill(_launcher_pid(lab), signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    new = _wait_resumed(lab, pid)
    assert new != pid
    # the lab's owner lock (netemu.locks) is held by the new control process too, as by the first
    owner = f"/run/netemu/{lab.name}/owner.lock"
    assert any(os.readlink(f"/proc/{new}/fd/{fd}") == owner for fd in os.listdir(f"/proc/{new}/fd"))
    pods = _wait_running(lab, want)
    # the objects as last accepted, not the lab file's 3 replicas
    assert json.loads(lab.run("get", "deployment", "np-pods", "-o", "json").stdout)["spec"]["replicas"] == want
    assert set(before) <= set(pods)  # the same pods, adopted, not made anew
    if moment != "with-its-launcher":
        assert {n: _container_ids(pods)[n] for n in before} == _container_ids(before)
        assert all(_restarts(pods)[n] == 0 for n in before)
    # the same CA and port: kubeconfigs and tokens stay valid
    assert _ca(lab) == ca and _api_port(lab) == port and _https_version(lab) == 200
    assert _serves(lab, set(pods)) == set(pods)
    name = sorted(before)[0]
    assert lab.exec(name, "hostname").stdout.strip() == name
    # it goes on working: a scale after the restart, and `down`
    lab.run("scale", "deployment", "np-pods", "--replicas=2")
    lab.wait_for(_running(lab, 2), timeout=60, what="2 pods")
    lab.down()
    _assert_gone(lab)


def test_killed_twice_in_a_row_it_still_comes_back(lab, tmp_path):
    lab.up(NP_PODS.format(replicas=2) + NP_SVC, tmp_path=tmp_path)
    pid = _control_pid(lab)
    os.kill(pid, signal.SIGKILL)
    second = lab.wait_for(lambda: (p := _control_pid(lab)) and p != pid and p, timeout=30, what="a restart")
    time.sleep(0.3)  # in the middle of its resume
    os.kill(second, signal.SIGKILL)
    _wait_resumed(lab, second, timeout=90)
    lab.wait_for(_running(lab, 2), timeout=60, what="2 pods")
    lab.down()
    _assert_gone(lab)


def test_down_right_after_a_crash_leaves_nothing_and_nothing_comes_back(lab, tmp_path):
    lab.up(NP_PODS.format(replicas=3) + NP_SVC, tmp_path=tmp_path)
    sup = _supervisor_pid(lab)
    os.kill(_control_pid(lab), signal.SIGKILL)
    res = netemu("down", lab.name)
    assert "Traceback" not in res.stderr
    _assert_gone(lab)
    assert not alive(sup)
    time.sleep(2)  # no supervisor left to bring anything back
    _assert_gone(lab)


def test_a_stopped_control_process_is_left_alone_and_down_still_works(lab, tmp_path):
    lab.up(NP_PODS.format(replicas=2), tmp_path=tmp_path)
    pid = _control_pid(lab)
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(3)
        assert _control_pid(lab) == pid  # stopped is not dead: not restarted behind the user's back
        assert _labs_status(lab) == "NotResponding"
        res = netemu("down", lab.name, timeout=60)
        assert "Traceback" not in res.stderr
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    _assert_gone(lab)


def test_a_stopped_supervisor_and_a_dead_control_process(lab, tmp_path):
    lab.up(NP_PODS.format(replicas=2), tmp_path=tmp_path)
    sup, pid = _supervisor_pid(lab), _control_pid(lab)
    os.kill(sup, signal.SIGSTOP)
    try:
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        assert _labs_status(lab) == "Restarting"
        res = netemu("down", lab.name, timeout=60)
        assert "Traceback" not in res.stderr
    finally:
        try:
            os.kill(sup, signal.SIGCONT)
        except ProcessLookupError:
            pass
    _assert_gone(lab)
    assert not alive(sup)


def test_up_waits_through_a_restart(lab, tmp_path):
    """`up` waiting for Ready when the control process is killed: the supervisor brings it back and `up`
    goes on waiting with the new one."""
    path = tmp_path / "lab.yaml"
    ready = f"/tmp/{lab.name}-ready"  # (a pod may see the host's /tmp)
    path.write_text(lab.lab_doc() + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: slow}\nspec:\n"
                    "  containers:\n  - name: c\n    image: sysnet4admin/echo-hname\n"
                    f"    readinessProbe: {{exec: {{command: [sh, -c, 'test -e {ready}']}}, periodSeconds: 1}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "netemu", "up", str(path), "--timeout", "90"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def running():
            if proc.poll() is not None:
                raise AssertionError(f"up ended early: {proc.communicate()}")
            try:
                return any(p["status"].get("phase") == "Running" for p in lab.pods())
            except AssertionError:
                return False
        lab.wait_for(running, timeout=60, what="the pod running, not Ready")
        pid = _control_pid(lab)
        os.kill(pid, signal.SIGKILL)
        _wait_resumed(lab, pid)
        lab.wait_for(running, timeout=60, what="the pod running again")
        lab.exec("slow", "touch", ready)
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0 and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["rm", "-f", ready])
    lab.down()
    _assert_gone(lab)


# --------------------------------------------------------------------------- 4d. a wedged control process
def test_a_wedged_control_process_is_killed_and_the_lab_resumes(lab, tmp_path, monkeypatch):
    """A control process that is alive and running but whose event loop is blocked (the test hook
    NETEMU_TEST_WEDGE_FILE makes its heartbeat sleep in the loop) sends no heartbeat: its supervisor's
    liveness check logs why, SIGKILLs it and restarts it, and the lab resumes from its state file, its
    pods adopted. A healthy loop, and the resumed one, live on past the limit."""
    limit = 3.0
    wedge = tmp_path / "wedge"
    monkeypatch.setenv("NETEMU_LIVENESS_SECONDS", str(limit))
    monkeypatch.setenv("NETEMU_TEST_WEDGE_FILE", str(wedge))
    lab.up(NP_PODS.format(replicas=2) + NP_SVC, tmp_path=tmp_path)
    up_at = time.monotonic()
    pid, sup = _control_pid(lab), _supervisor_pid(lab)
    lab.run("scale", "deployment", "np-pods", "--replicas=3")  # in the state file, not in the lab file
    before = _wait_running(lab, 3)
    _persisted(lab, 3)
    time.sleep(max(0.0, up_at + limit + 1.5 - time.monotonic()))
    assert _control_pid(lab) == pid  # its heartbeats keep a healthy control process alive past the limit
    wedge.write_text(str(pid))
    seen: list[str] = []

    def resumed():
        seen.append(_labs_status(lab))
        new = _control_pid(lab)
        return new if new and new != pid and seen[-1] == "Running" else None
    new = lab.wait_for(resumed, timeout=45, interval=0.1, what="the wedged control process replaced")
    resumed_at = time.monotonic()
    # `labs` said what happened all along: never Unreachable or Crashed in between
    assert set(seen) <= {"Running", "NotResponding", "Restarting"} and {"NotResponding", "Restarting"} & set(seen), seen
    assert not alive(pid) and _supervisor_pid(lab) == sup  # the same supervisor killed it and started another
    with open(f"/run/netemu/{lab.name}/daemon.log") as f:
        log = f.read()
    assert f"the control process (pid {pid}) sent no heartbeat for" in log
    assert "in _test_wedge" in log  # its Python stacks, written before the kill, say where it hung
    pods = _wait_running(lab, 3)
    assert json.loads(lab.run("get", "deployment", "np-pods", "-o", "json").stdout)["spec"]["replicas"] == 3
    assert set(pods) == set(before)  # the same pods, adopted, not made anew
    assert _container_ids(pods) == _container_ids(before)
    assert _serves(lab, set(pods)) == set(pods)
    time.sleep(max(0.0, resumed_at + limit + 1.5 - time.monotonic()))
    assert _control_pid(lab) == new  # the resumed process heartbeats too
    with open(f"/run/netemu/{lab.name}/daemon.log") as f:
        assert f"(pid {new}) sent no heartbeat" not in f.read()
    lab.down()
    _assert_gone(lab)
