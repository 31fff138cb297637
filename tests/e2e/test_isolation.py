"""No lab can harm another, and a stuck or crashed lab is always recoverable (issue 13, part A).

Regression tests with real labs side by side: names that used to collide (a lab named after another
lab's node, a Pod named like its node), a sandbox rollback that must not delete what it did not make,
two `up`s at once, a stopped and a killed control process (`labs`, `down`, `up`'s own report), crash
sweeps of /etc/netns, YAML bombs and oversized objects, objects that can never run, `--lab` before the
verb and empty files. Only addresses inside the tests' own labs are sent to, after checking the route.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import conftest
from conftest import NP_PODS, NP_SVC, _free_index, _netns, curl, netemu, run_leaks
from netemu.procutil import alive

Lab = conftest.TestLab  # (imported under its own name, pytest would try to collect it)

ETC_NETNS = "/etc/netns"


def _etc_netns(lab: Lab) -> list[str]:
    from netemu.dataplane import names

    try:
        return sorted(n for n in os.listdir(ETC_NETNS) if names.belongs_to(lab.name, n))
    except FileNotFoundError:
        return []


def _pid(lab: Lab) -> int:
    with open(f"/run/netemu/{lab.name}/daemon.pid") as f:
        return int(f.read())


def _assert_gone(lab: Lab) -> None:
    assert lab.netns() == [], lab.netns()
    assert _etc_netns(lab) == []
    assert not os.path.exists(f"/run/netemu/{lab.name}")
    assert not os.path.exists(f"/sys/fs/cgroup/netemu/{lab.name}")
    assert not any(os.path.exists(f"/sys/fs/cgroup/{c}/netemu/{lab.name}") for c in ("pids", "cpu", "memory"))
    from netemu.dataplane.names import host_link

    assert not os.path.exists(f"/sys/class/net/{host_link(lab.name)}")


def _no_traceback(res: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr


@pytest.fixture
def named_lab():
    """Factory: named_lab(name, index=None) -> Lab with that name; every lab made is torn down."""
    made: list[Lab] = []

    def factory(name: str, index: int | None = None) -> Lab:
        lab = Lab(name, _free_index() if index is None else index)
        made.append(lab)
        return lab

    yield factory
    for lab in made:
        lab.down()
    for lab in made:
        assert lab.netns() == [], f"lab {lab.name} left namespaces behind: {lab.netns()}"


def _serves(lab: Lab, replicas: int, tries: int = 60) -> set[str]:
    """Who answers through the NodePort: stops once `replicas` pods did (kube-proxy picks at random: six
    requests missed one of two pods one time in 32)."""
    ip = lab.node_ips["w1-k8s"]
    seen: set[str] = set()
    for _ in range(tries):
        seen.add(curl(lab, ip, 30000).strip())
        if len(seen) >= replicas:
            break
    return seen


# --------------------------------------------------------------------------- 1. names that cannot collide
def test_a_lab_named_after_another_labs_node_harms_nothing(lab, named_lab, tmp_path):
    lab.up(NP_PODS.format(replicas=2) + NP_SVC, tmp_path=tmp_path)
    before = lab.netns()
    assert lab.node_netns("w1-k8s") in before
    other = named_lab(f"{lab.name}-w1-k8s")
    # its build fails (its segment's namespace is taken): the rollback removes its own, nothing else
    subprocess.run(["ip", "netns", "add", f"ne-{other.name}"], check=True)
    try:
        res = other.up(NP_PODS.format(replicas=1), tmp_path=tmp_path, check=False)
    finally:
        subprocess.run(["ip", "netns", "del", f"ne-{other.name}"], capture_output=True)
    assert res.returncode != 0 and "rolled back" in res.stderr, res.stderr
    _no_traceback(res)
    assert lab.netns() == before
    # and built for real, then taken down: still nothing of the first lab goes
    other.up(NP_PODS.format(replicas=1), tmp_path=tmp_path)
    assert not set(other.netns()) & set(before)
    other.down()
    assert lab.netns() == before
    pods = {p["metadata"]["name"] for p in lab.pods()}
    assert _serves(lab, 2) == pods


def test_a_pod_named_like_its_node(lab, tmp_path):
    pod = """\
apiVersion: v1
kind: Pod
metadata: {name: w1-k8s, labels: {app: np-pods}}
spec:
  nodeName: w1-k8s
  containers: [{name: c, image: sysnet4admin/echo-hname, ports: [{containerPort: 80}]}]
"""
    lab.up(NP_PODS.format(replicas=2) + NP_SVC + "---\n" + pod, tmp_path=tmp_path)
    assert lab.node_netns("w1-k8s") in lab.netns() and lab.pod_netns("w1-k8s") in lab.netns()
    assert lab.exec("w1-k8s", "hostname").stdout.strip() == "w1-k8s"
    lab.run("delete", "pod", "w1-k8s")
    lab.wait_for(lambda: lab.pod_netns("w1-k8s") not in lab.netns(), what="the pod's namespace to go")
    assert lab.node_netns("w1-k8s") in lab.netns()
    # kube-proxy on w1-k8s still works: a new pod becomes Ready and the NodePort answers from every pod
    lab.run("scale", "deployment", "np-pods", "--replicas=3")
    lab.run("rollout", "status", "deployment/np-pods", "--timeout", "60")
    pods = {p["metadata"]["name"] for p in lab.pods("app=np-pods")}
    assert len(pods) == 3
    lab.wait_for(lambda: _serves(lab, 3) == pods, what="every pod answering through the NodePort")


def test_a_sandbox_rollback_never_deletes_a_namespace_it_did_not_make(lab, tmp_path):
    lab.up(NP_PODS.format(replicas=1), tmp_path=tmp_path)
    squatter = lab.pod_netns("blocked")  # already there when the pod comes: not the sandbox's to delete
    subprocess.run(["ip", "netns", "add", squatter], check=True)
    try:
        path = tmp_path / "blocked.yaml"
        path.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: blocked}\n"
                        "spec: {containers: [{name: c, image: sysnet4admin/echo-hname}]}\n")
        lab.run("apply", "-f", str(path))

        def failed():
            return "already exists" in lab.run("describe", "pod", "blocked").stdout
        lab.wait_for(failed, what="a FailedCreatePodSandBox event")
        time.sleep(2.5)  # a retry or two later
        assert squatter in lab.netns()
        lab.run("delete", "pod", "blocked")
    finally:
        subprocess.run(["ip", "netns", "del", squatter], capture_output=True)


def test_a_pod_name_of_253_characters_runs(lab, tmp_path):
    name = ("p" * 62 + ".") * 4 + "q"  # a DNS subdomain of 253 characters
    assert len(name) == 253
    lab.up(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n"
           "spec: {containers: [{name: c, image: sysnet4admin/echo-hname, ports: [{containerPort: 80}]}]}\n",
           tmp_path=tmp_path)
    (pod,) = [p for p in lab.pods() if p["metadata"]["name"] == name]
    assert pod["status"]["phase"] == "Running"
    assert lab.exec(name, "hostname").stdout.strip() == "p" * 62  # cut to 63, without the trailing '.'
    assert lab.pod_netns(name) in lab.netns() and len(lab.pod_netns(name)) <= 200
    lab.run("logs", name)  # its log file's name is cut and hashed too


# --------------------------------------------------------------------------- 2. two `up`s at once
def _up_async(lab: Lab, tmp_path, manifests: str, tag: str) -> subprocess.Popen:
    path = tmp_path / f"{lab.name}-{tag}.yaml"
    path.write_text(lab.lab_doc() + "---\n" + manifests)
    return subprocess.Popen([sys.executable, "-m", "netemu", "up", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_ups_with_overlapping_networks_one_fails_clearly(make_lab, named_lab, tmp_path):
    a = make_lab()
    b = named_lab(f"{a.name}b", index=a.index)  # the same ranges, another name
    procs = [_up_async(x, tmp_path, NP_PODS.format(replicas=1), "x") for x in (a, b)]
    results = [(p, *p.communicate(timeout=180)) for p in procs]
    ok = [x for x, (p, out, err) in zip((a, b), results) if p.returncode == 0]
    failed = [(x, err) for x, (p, out, err) in zip((a, b), results) if p.returncode != 0]
    assert len(ok) == 1 and len(failed) == 1, results
    loser, err = failed[0]
    assert "already in use on this host" in err and "overlaps" in err, err
    assert "Traceback" not in err
    assert not os.path.exists(f"/run/netemu/{loser.name}") and loser.netns() == []
    winner = ok[0]
    assert len(winner.pods()) == 1 and winner.pods()[0]["status"]["phase"] == "Running"


def test_two_ups_of_the_same_name_the_second_says_so(lab, tmp_path):
    procs = [_up_async(lab, tmp_path, NP_PODS.format(replicas=2) + NP_SVC, tag) for tag in ("1", "2")]
    results = [p.communicate(timeout=180) + (p.returncode,) for p in procs]
    ok = [r for r in results if r[2] == 0]
    failed = [r for r in results if r[2] != 0]
    assert len(ok) == 1 and len(failed) == 1, results
    err = failed[0][1]
    assert f'lab "{lab.name}" is starting' in err or f'lab "{lab.name}" is already up' in err, err
    assert "Traceback" not in err and "not shut down cleanly" not in err
    # neither tore the other down: the lab that won is whole and serves
    pods = {p["metadata"]["name"] for p in lab.pods()}
    assert len(pods) == 2 and lab.node_netns("w1-k8s") in lab.netns()
    assert _serves(lab, 2) == pods
    # and once it is up, a third `up` says it is up
    res = lab.up(NP_PODS.format(replicas=2), tmp_path=tmp_path, check=False)
    assert res.returncode != 0 and f'lab "{lab.name}" is already up' in res.stderr
    assert _serves(lab, 2) == pods


# --------------------------------------------------------------------------- 3. stuck and crashed labs
def test_a_stopped_control_process_labs_and_down(make_lab, tmp_path):
    hung, fine = make_lab(), make_lab()
    hung.up(NP_PODS.format(replicas=2), tmp_path=tmp_path)
    fine.up(NP_PODS.format(replicas=1), tmp_path=tmp_path)
    pid = _pid(hung)
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        res = netemu("labs")
        assert time.monotonic() - t0 < 10
        rows = {line.split()[0]: line.split() for line in res.stdout.splitlines()[1:]}
        assert rows[hung.name][1] == "NotResponding" and rows[fine.name][1] == "Running", res.stdout
        # a second `up` of it: it is up, nothing is torn down
        res = hung.up(NP_PODS.format(replicas=2), tmp_path=tmp_path, check=False)
        assert res.returncode != 0 and "is already up" in res.stderr and alive(pid)
        t0 = time.monotonic()
        res = netemu("down", hung.name, timeout=60)
        took = time.monotonic() - t0
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    _no_traceback(res)
    assert "did not answer" in res.stderr and f'lab "{hung.name}" is down' in res.stdout
    assert took < 20
    assert not alive(pid)
    _assert_gone(hung)
    assert fine.pods()[0]["status"]["phase"] == "Running"


def _supervisor(lab: Lab) -> int:
    with open(f"/run/netemu/{lab.name}/supervisor.pid") as f:
        return int(f.read())


def test_a_killed_control_process_is_crashed_in_labs(make_lab, tmp_path):
    """With its supervisor killed too (a killed control process alone is restarted: test_recovery.py)."""
    dead, fine = make_lab(), make_lab()
    dead.up(NP_PODS.format(replicas=1), tmp_path=tmp_path)
    fine.up(NP_PODS.format(replicas=1), tmp_path=tmp_path)
    os.kill(_supervisor(dead), signal.SIGKILL)
    os.kill(_pid(dead), signal.SIGKILL)
    time.sleep(0.3)
    res = netemu("labs")
    rows = {line.split()[0]: line.split() for line in res.stdout.splitlines()[1:]}
    assert rows[dead.name][1] == "Crashed" and rows[fine.name][1] == "Running", res.stdout
    res = netemu("down", dead.name)
    _no_traceback(res)
    _assert_gone(dead)


def test_labs_as_a_user_says_it_needs_root(lab, tmp_path):
    lab.up(NP_PODS.format(replicas=1), tmp_path=tmp_path)
    res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                          "netemu", "labs"], capture_output=True, text=True, timeout=30, cwd="/")
    assert res.returncode != 0 and "needs root" in res.stderr and "Crashed" not in res.stdout, res
    _no_traceback(res)


# --------------------------------------------------------------------------- 4. crash sweeps
def test_down_sweeps_etc_netns_of_namespaces_that_never_existed(lab, tmp_path):
    lab.up(NP_PODS.format(replicas=1), tmp_path=tmp_path)
    ghost = os.path.join(ETC_NETNS, lab.pod_netns("ghost"))  # files written, then a crash before `netns add`
    os.makedirs(ghost)
    with open(os.path.join(ghost, "resolv.conf"), "w") as f:
        f.write("nameserver 10.0.0.1\n")
    not_ours = os.path.join(ETC_NETNS, f"ne-{lab.name}x_default_p")  # a lab whose name starts like ours
    os.makedirs(not_ours)
    try:
        os.kill(_pid(lab), signal.SIGKILL)
        netemu("down", lab.name)
        _assert_gone(lab)
        assert os.path.isdir(not_ours)
    finally:
        subprocess.run(["rm", "-rf", not_ours, ghost])


@pytest.mark.parametrize("delay", [0.1, 0.3, 0.6])
def test_sigkill_while_scaling_then_down_leaves_nothing(lab, tmp_path, delay):
    lab.up(NP_PODS.format(replicas=1), tmp_path=tmp_path)
    pid = _pid(lab)
    scale = subprocess.Popen([sys.executable, "-m", "netemu", "scale", "deployment", "np-pods", "--replicas=40",
                              "--lab", lab.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = len(lab.netns())
    deadline = time.monotonic() + 10
    while len(lab.netns()) < base + 3 and time.monotonic() < deadline:  # pods being made
        time.sleep(0.01)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    scale.communicate(timeout=60)
    res = netemu("down", lab.name)
    _no_traceback(res)
    _assert_gone(lab)


# --------------------------------------------------------------------------- 5. YAML bombs and big objects
BOMB = """\
apiVersion: v1
data:
  a: &a ["web","web","web","web","web","web","web","web","web"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
kind: ConfigMap
metadata:
  name: yaml-bomb
  namespace: default
"""


def test_a_yaml_alias_bomb_is_refused_at_once(lab, tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(lab.lab_doc() + "---\n" + BOMB)
    t0 = time.monotonic()
    res = netemu("up", str(path), check=False, timeout=30)
    took = time.monotonic() - t0
    assert res.returncode != 0 and "excessive aliasing" in res.stderr and str(path) in res.stderr, res.stderr
    _no_traceback(res)
    # the CLI's own start-up is part of this; the document itself is refused in milliseconds
    assert took < 3, took
    t0 = time.perf_counter()
    from netemu.spec.errors import SpecError
    from netemu.spec.load import load_files

    with pytest.raises(SpecError):
        load_files([str(path)])
    assert time.perf_counter() - t0 < 1.0
    assert not os.path.exists(f"/run/netemu/{lab.name}")


def test_a_50_mb_config_map_is_refused_with_a_size_error(lab, tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "w") as f:
        f.write(lab.lab_doc() + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n  blob: ")
        f.write("x" * (50 * 1024 * 1024) + "\n")
    t0 = time.monotonic()
    res = netemu("up", str(path), check=False, timeout=60)
    assert res.returncode != 0 and "MiB" in res.stderr and "API server" in res.stderr, res.stderr
    assert time.monotonic() - t0 < 8
    _no_traceback(res)
    assert not os.path.exists(f"/run/netemu/{lab.name}")


# --------------------------------------------------------------------------- 6. objects that can never run
@pytest.mark.parametrize("manifest,words", [
    (NP_PODS.format(replicas=1000000), ["spec.replicas: 1000000 pods can never run here", "hold at most"]),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: hn}\n"
     "spec: {hostNetwork: true, containers: [{name: c, image: nginx}]}\n", ["hostNetwork: true is not supported"]),
    (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {'x' * 254}}}\nspec: {{containers: [{{name: c, image: nginx}}]}}\n",
     ["no more than 253 characters"]),
])
def test_objects_that_can_never_run_are_refused_at_once(lab, tmp_path, manifest, words):
    t0 = time.monotonic()
    res = lab.up(manifest, tmp_path=tmp_path, check=False)
    assert res.returncode != 0 and all(w in res.stderr for w in words), res.stderr
    assert time.monotonic() - t0 < 10
    _no_traceback(res)
    assert not os.path.exists(f"/run/netemu/{lab.name}") and lab.netns() == []


def test_kube_systems_host_network_pods_still_run(lab, tmp_path):
    lab.up(NP_PODS.format(replicas=1), tmp_path=tmp_path)
    system = lab.get("pods", "-n", "kube-system")
    own = [p for p in system if p["spec"].get("hostNetwork")]
    assert own and all(p["status"]["phase"] == "Running" for p in own)


# --------------------------------------------------------------------------- 7. `up` and a dying control process
@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_up_reports_a_control_process_killed_while_building(lab, tmp_path, delay):
    path = tmp_path / "lab.yaml"
    path.write_text(lab.lab_doc() + "---\n" + NP_PODS.format(replicas=20))
    proc = subprocess.Popen([sys.executable, "-m", "netemu", "up", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pidfile = f"/run/netemu/{lab.name}/daemon.pid"
    deadline = time.monotonic() + 20
    while not os.path.exists(pidfile) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    try:
        os.kill(int(open(pidfile).read()), signal.SIGKILL)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        pass
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err
    if proc.returncode == 0:  # it was done before the kill: nothing to report
        pytest.skip("the lab was up before the control process was killed")
    assert "died" in err and "everything was rolled back" not in err, err
    assert f"netemu down {lab.name}" in err or "nothing of the lab is left" in err, err
    netemu("down", lab.name)
    _assert_gone(lab)


def test_up_reports_a_control_process_stopped_while_building(lab, tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text(lab.lab_doc() + "---\n" + NP_PODS.format(replicas=30))
    proc = subprocess.Popen([sys.executable, "-m", "netemu", "up", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pidfile = f"/run/netemu/{lab.name}/daemon.pid"
    deadline = time.monotonic() + 20
    while not os.path.exists(pidfile) and time.monotonic() < deadline:
        time.sleep(0.005)
    pid = int(open(pidfile).read())
    os.kill(pid, signal.SIGSTOP)
    try:
        out, err = proc.communicate(timeout=30)
        if proc.returncode == 0:
            pytest.skip("the lab was built before the control process was stopped")
        assert "is stopped" in err and f"netemu down {lab.name}" in err and "Traceback" not in err, err
        res = netemu("down", lab.name, timeout=60)  # it does not answer: killed, then swept
        _no_traceback(res)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    _assert_gone(lab)


def test_up_reports_a_control_process_killed_while_waiting(lab, tmp_path):
    path = tmp_path / "lab.yaml"
    # a readiness probe that never passes: `up` waits for Ready until its timeout
    path.write_text(lab.lab_doc() + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: never}\nspec:\n"
                    "  containers:\n  - name: c\n    image: sysnet4admin/echo-hname\n"
                    "    readinessProbe: {exec: {command: [\"false\"]}, periodSeconds: 1}\n")
    proc = subprocess.Popen([sys.executable, "-m", "netemu", "up", str(path), "--timeout", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def running():
        if proc.poll() is not None:
            raise AssertionError(f"up ended early: {proc.communicate()}")
        try:
            return any(p["metadata"]["name"] == "never" and p["status"].get("phase") == "Running"
                       for p in lab.pods())
        except AssertionError:  # not up yet
            return False
    lab.wait_for(running, timeout=60, what="the pod running, not Ready")
    os.kill(_supervisor(lab), signal.SIGKILL)  # (with it, the control process would be restarted)
    os.kill(_pid(lab), signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert "died while waiting for the pods to be Ready" in err and f"netemu down {lab.name}" in err, err
    assert "Left behind" in err
    netemu("down", lab.name)
    _assert_gone(lab)


# --------------------------------------------------------------------------- 8. small ones
def test_lab_before_the_verb(lab, tmp_path):
    lab.up(NP_PODS.format(replicas=1), tmp_path=tmp_path)
    res = netemu("--lab", lab.name, "get", "pods", "-o", "name")
    assert res.stdout.startswith("pod/np-pods-")
    res = netemu("--lab", lab.name, "exec", res.stdout.split("/")[1].strip(), "--", "hostname")
    assert res.stdout.startswith("np-pods-")


def test_an_empty_lab_file_is_an_error(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n")
    res = netemu("up", str(empty), check=False)
    assert res.returncode != 0 and f"{empty}: no objects" in res.stderr
    assert not os.path.exists("/run/netemu/empty")


# --------------------------------------------------------------------------- the suite's own leak check
def test_the_leak_check_only_counts_this_runs_labs():
    before = {"ne-other", "ne-mine_w1"}
    after = before | {"ne-person", "ne-person_w1", "ne-person_default_p", "ne-mine_default_p", "ne-mine", "ne-mine2"}
    assert run_leaks(before, after, {"mine"}) == ["ne-mine", "ne-mine_default_p"]
    assert run_leaks(_netns(), _netns(), {"x"}) == []


def test_concurrent_labs_of_others_do_not_count(tmp_path):
    """A lab this run did not start (as a person's would be) comes up during the run: not a leak."""
    from conftest import RUN_LABS

    stranger = Lab("s" + os.urandom(3).hex(), _free_index())
    RUN_LABS.discard(stranger.name)  # not this run's: as if another run or a person made it
    before = _netns()
    stranger.up(NP_PODS.format(replicas=1), tmp_path=tmp_path)
    try:
        new = _netns() - before
        assert new and run_leaks(before, _netns(), RUN_LABS) == []
    finally:
        stranger.down()
    assert stranger.netns() == []

