"""Pods are containers (issue 13, item 10): their own PID namespace and /proc, Docker's default
capabilities (no CAP_SYS_ADMIN: no setns, no mount), writes that stay in the pod, the securityContext
honoured; `privileged: true` keeps the host's processes and files."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest

import conftest
from conftest import _free_index, _netns, netemu

pytestmark = pytest.mark.e2e

DEFAULT_CAPS = 0xA80425FB  # CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW
#                            SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
CAP_SYS_ADMIN = 1 << 21
CAP_NET_BIND_SERVICE = 1 << 10

PODS = """\
---
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  containers:
  - {name: sh, image: busybox}
---
apiVersion: v1
kind: Pod
metadata: {name: echo}
spec:
  containers:
  - {name: echo, image: sysnet4admin/echo-hname}
---
apiVersion: v1
kind: Pod
metadata: {name: user}
spec:
  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, supplementalGroups: [4000]}
  containers:
  - name: sh
    image: busybox
    command: [sh, -c, "echo started as $(id -u):$(id -g); exec sleep 100000"]
---
apiVersion: v1
kind: Pod
metadata: {name: ro}
spec:
  containers:
  - name: sh
    image: busybox
    command: [sleep, "100000"]
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
  - {name: rw, image: busybox, command: [sleep, "100000"]}
---
apiVersion: v1
kind: Pod
metadata: {name: priv}
spec:
  containers:
  - name: sh
    image: busybox
    command: [sleep, "100000"]
    securityContext: {privileged: true}
"""
ROOTLESS = """\
apiVersion: v1
kind: Pod
metadata: {name: rootless}
spec:
  securityContext: {runAsNonRoot: true}
  containers:
  - name: bad
    image: busybox
    command: [sleep, "100000"]
    securityContext: {runAsUser: 0}
"""


@pytest.fixture(scope="module")
def clab(tmp_path_factory):
    lab = conftest.TestLab(f"c{uuid.uuid4().hex[:6]}", _free_index())
    tmp = tmp_path_factory.mktemp("containers")
    try:
        lab.up(PODS, tmp_path=tmp)
        yield lab
    finally:
        lab.down()
        assert not [n for n in _netns() if n.startswith(f"ne-{lab.name}")]


def _running(lab: "conftest.TestLab", pod: str) -> bool:
    p = lab.get("pod", pod)[0]
    return p["status"].get("phase") == "Running" and all(
        s.get("ready") for s in p["status"].get("containerStatuses") or [{}])


def sh(lab: "conftest.TestLab", pod: str, script: str, *, container: str | None = None, check: bool = True):
    args = ["exec", pod, "--lab", lab.name, *(["-c", container] if container else []), "--", "sh", "-c", script]
    return netemu(*args, check=check, timeout=30)


def status_mask(lab: "conftest.TestLab", pod: str, field: str, container: str | None = None) -> int:
    out = sh(lab, pod, f"grep '^{field}:' /proc/self/status", container=container).stdout
    return int(out.split()[1], 16)


def host_caps() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))


def container_pid(lab: "conftest.TestLab", pod: str, container: str) -> int:
    from netemu.cli.client import Client

    rt = Client(lab.name).call("runtime", namespace="default", name=pod)
    return int(rt["containers"][container]["pid"])


# ---------------------------------------------------------------------- processes
def test_a_pod_sees_only_its_own_processes(clab):
    host_sleep = subprocess.Popen(["sleep", "300"])
    try:
        pids = sh(clab, "plain", "ls /proc | grep -E '^[0-9]+$'").stdout.split()
        ps = sh(clab, "plain", "ps -e -o pid=,comm=").stdout
        assert "1" in pids and len(pids) < 10, pids  # the pause, the container, this shell and ls
        assert str(host_sleep.pid) not in pids and str(os.getpid()) not in pids
        assert all(int(p) < 100 for p in pids), ps
        first = sh(clab, "plain", "cat /proc/1/cmdline | tr '\\0' ' '").stdout
        assert "sleep infinity" in first  # PID 1 is the pod's pause process
        # the container's process, seen from the host, is in a PID namespace of its own
        pid = container_pid(clab, "plain", "sh")
        assert os.stat(f"/proc/{pid}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino
        with open(f"/proc/{pid}/status") as f:
            nspid = next(line for line in f if line.startswith("NSpid:")).split()[1:]
        assert len(nspid) == 2 and int(nspid[1]) < 10
    finally:
        host_sleep.kill()
        host_sleep.wait()


def test_a_pod_cannot_kill_a_host_process(clab):
    host_sleep = subprocess.Popen(["sleep", "300"])
    try:
        res = sh(clab, "plain", f"kill -9 {host_sleep.pid}", check=False)
        assert res.returncode != 0
        time.sleep(0.3)
        assert host_sleep.poll() is None, "the host's process was killed from a pod"
    finally:
        host_sleep.kill()
        host_sleep.wait()


# ---------------------------------------------------------------------- files
def test_writes_stay_in_the_pod(clab):
    name = f"/etc/netemu-test-{clab.name}"
    try:
        res = sh(clab, "plain", f"echo from-the-pod > {name} && cat {name} && echo x >> /usr/bin/netemu-{clab.name}")
        assert res.stdout.strip() == "from-the-pod"
        assert not os.path.exists(name), "a pod wrote the host's /etc"
        assert not os.path.exists(f"/usr/bin/netemu-{clab.name}")
        # another pod has a root of its own
        assert sh(clab, "echo", f"cat {name}", check=False).returncode != 0
        # the host's programs still run in pods, and the host's tree is there to read
        assert sh(clab, "plain", "python3 -c 'print(6*7)'").stdout.strip() == "42"
        assert "root:" in sh(clab, "plain", "head -1 /etc/passwd").stdout
        # the pod files still reach the pod, and the host's /run (every lab's sockets) does not
        assert clab.dns_ip in sh(clab, "plain", "cat /etc/resolv.conf").stdout
        assert "token" in sh(clab, "plain", "ls /var/run/secrets/kubernetes.io/serviceaccount").stdout
        assert sh(clab, "plain", "ls /run/netemu", check=False).returncode != 0
        assert sh(clab, "plain", "ls /run/netns", check=False).returncode != 0
    finally:
        for p in (name, f"/usr/bin/netemu-{clab.name}"):
            if os.path.exists(p):
                os.unlink(p)


def test_a_replaced_pod_starts_from_the_hosts_files_again(clab, tmp_path):
    sh(clab, "plain", "echo old > /etc/netemu-replaced")
    clab.run("delete", "pod", "plain")
    doc = tmp_path / "plain.yaml"
    doc.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: plain}\nspec:\n"
                   "  containers:\n  - {name: sh, image: busybox}\n")
    clab.run("apply", "-f", str(doc))
    clab.wait_for(lambda: _running(clab, "plain"), timeout=30, what="plain Running again")
    assert sh(clab, "plain", "cat /etc/netemu-replaced", check=False).returncode != 0


# ---------------------------------------------------------------------- capabilities and namespaces
def test_default_capabilities(clab):
    want = DEFAULT_CAPS & host_caps()
    assert status_mask(clab, "plain", "CapEff") == want
    assert status_mask(clab, "plain", "CapBnd") == want
    assert status_mask(clab, "plain", "CapInh") == 0
    assert status_mask(clab, "plain", "NoNewPrivs") == 0  # allowPrivilegeEscalation defaults to true
    # the containers' own processes too: a command, and a built-in stand-in (a fork of the launcher)
    for pod, container in (("plain", "sh"), ("echo", "echo")):
        with open(f"/proc/{container_pid(clab, pod, container)}/status") as f:
            caps = {k: int(v, 16) for k, v in (line.split(":") for line in f if line.startswith("Cap"))}
        assert caps["CapEff"] == want and caps["CapBnd"] == want, (pod, caps)
    if shutil.which("capsh"):
        out = sh(clab, "plain", "capsh --print").stdout
        current = next(line for line in out.splitlines() if line.startswith("Current"))
        assert "cap_net_bind_service" in current and "cap_sys_admin" not in current


def test_no_setns_and_no_mount_in_a_pod(clab):
    for script in ("nsenter --net=/proc/1/ns/net true", "nsenter --net=/proc/self/ns/net true",
                   "nsenter --mount=/proc/self/ns/mnt true", "unshare -n true", "mount -t tmpfs none /mnt",
                   "mount -o remount,rw /proc/sys"):
        res = sh(clab, "plain", script, check=False)
        assert res.returncode != 0, (script, res.stdout, res.stderr)
    err = sh(clab, "plain", "nsenter --net=/proc/self/ns/net true", check=False).stderr
    assert "Operation not permitted" in err
    # only the pod's own interfaces: nothing of the host's or another lab's
    links = sh(clab, "plain", "ls /sys/class/net").stdout.split()
    assert sorted(links) == ["eth0", "lo"]
    # the kernel's knobs are read-only, its memory and keys masked
    assert sh(clab, "plain", "echo 1 > /proc/sys/net/ipv4/ip_forward", check=False).returncode != 0
    assert sh(clab, "plain", "echo c > /proc/sysrq-trigger", check=False).returncode != 0
    for masked in ("kcore", "keys", "timer_list"):
        if os.path.exists(f"/proc/{masked}"):
            assert sh(clab, "plain", f"wc -c < /proc/{masked}").stdout.strip() == "0", masked


def test_a_device_made_in_a_pod_cannot_be_opened(clab):
    res = sh(clab, "plain", "mknod /tmp/disk b 254 0 && head -c 1 /tmp/disk", check=False)
    assert res.returncode != 0 and ("Permission denied" in res.stderr or "not permitted" in res.stderr), res


# ---------------------------------------------------------------------- securityContext
def test_run_as_user_group_and_groups(clab):
    assert sh(clab, "user", "id -u").stdout.strip() == "1000"
    assert sh(clab, "user", "id -g").stdout.strip() == "3000"
    groups = set(sh(clab, "user", "id -G").stdout.split())
    assert {"3000", "2000", "4000"} <= groups
    assert status_mask(clab, "user", "CapEff") == 0  # a user other than root has no capabilities
    assert "started as 1000:3000" in clab.run("logs", "user").stdout
    res = sh(clab, "user", "touch /etc/netemu-user", check=False)
    assert res.returncode != 0 and "Permission denied" in res.stderr


def test_read_only_root_filesystem_and_no_new_privileges(clab):
    res = sh(clab, "ro", "touch /etc/netemu-ro", check=False)
    assert res.returncode != 0 and "Read-only file system" in res.stderr
    assert sh(clab, "ro", "touch /tmp/x", check=False).returncode != 0
    assert sh(clab, "ro", "echo ok > /dev/shm/x && cat /dev/shm/x").stdout.strip() == "ok"
    assert status_mask(clab, "ro", "NoNewPrivs") == 1
    assert status_mask(clab, "ro", "CapEff") == CAP_NET_BIND_SERVICE & host_caps()
    # the pod's other container has its own settings: a writable root, the default capabilities
    assert sh(clab, "ro", "touch /etc/netemu-rw && echo ok", container="rw").stdout.strip() == "ok"
    assert status_mask(clab, "ro", "CapEff", container="rw") == DEFAULT_CAPS & host_caps()


def test_privileged_keeps_the_hosts_view(clab):
    name = f"/tmp/netemu-privileged-{clab.name}"
    try:
        pids = sh(clab, "priv", "ls /proc").stdout.split()
        assert str(os.getpid()) in pids  # the host's processes
        sh(clab, "priv", f"echo host > {name}")
        with open(name) as f:
            assert f.read().strip() == "host"  # the host's files
        eff = status_mask(clab, "priv", "CapEff")
        assert eff & CAP_SYS_ADMIN and eff == host_caps()
    finally:
        if os.path.exists(name):
            os.unlink(name)


def test_run_as_non_root_refuses_root(clab, tmp_path):
    doc = tmp_path / "rootless.yaml"
    doc.write_text(ROOTLESS)
    clab.run("apply", "-f", str(doc))

    def waiting():
        st = (clab.get("pod", "rootless")[0]["status"].get("containerStatuses") or [{}])[0]
        return (st.get("state") or {}).get("waiting")

    w = clab.wait_for(lambda: (waiting() or {}).get("reason") == "CreateContainerConfigError" and waiting(),
                      timeout=30, what="CreateContainerConfigError")
    assert "runAsUser breaks non-root policy" in w.get("message", "")


def test_invalid_security_contexts_are_refused(clab, tmp_path):
    doc = tmp_path / "bad.yaml"
    doc.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n"
                   "  securityContext: {runAsUser: -1}\n"
                   "  containers:\n  - name: c\n    image: busybox\n"
                   "    securityContext: {privileged: true, allowPrivilegeEscalation: false}\n")
    res = clab.run("apply", "-f", str(doc), check=False)
    assert res.returncode != 0
    assert "spec.securityContext.runAsUser" in res.stderr and "2147483647" in res.stderr
    assert "cannot set `allowPrivilegeEscalation` to false and `privileged` to true" in res.stderr
    assert clab.run("get", "pod", "bad", check=False).returncode != 0  # nothing was made


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed on this machine")
def test_kubectl_exec_is_contained_too(clab, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(netemu("kubeconfig", "--lab", clab.name).stdout)
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))

    def kubectl(*args):
        return subprocess.run(["kubectl", *args], capture_output=True, text=True, env=env, timeout=60)

    out = kubectl("exec", "user", "--", "sh", "-c", "id -u; grep CapEff /proc/self/status; ls /proc | grep -c '^[0-9]'")
    uid, caps, count = out.stdout.split("\n")[:3]
    assert uid == "1000" and int(caps.split()[1], 16) == 0 and int(count) < 10
    out = kubectl("exec", "ro", "-c", "rw", "--", "sh", "-c", "grep CapEff /proc/self/status")
    assert int(out.stdout.split()[1], 16) == DEFAULT_CAPS & host_caps()
    res = kubectl("exec", "plain", "--", "nsenter", "--net=/proc/self/ns/net", "true")
    assert res.returncode != 0 and "Operation not permitted" in res.stderr
    res = kubectl("get", "pod", "user", "-o", "json")
    sc = json.loads(res.stdout)["spec"]["securityContext"]
    assert sc == {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [4000]}


# ---------------------------------------------------------------------- the sandbox
def _pause_of(pid: int) -> int:
    """PID 1 of the PID namespace of process pid (the pod's pause process), found among the host's processes."""
    ns = os.stat(f"/proc/{pid}/ns/pid").st_ino
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}/ns/pid").st_ino != ns:
                continue
            with open(f"/proc/{name}/status") as f:
                nspid = next(line for line in f if line.startswith("NSpid:")).split()[1:]
        except (OSError, StopIteration):
            continue
        if len(nspid) > 1 and nspid[-1] == "1":
            return int(name)
    raise AssertionError(f"no pause process in the PID namespace of {pid}")


def _cgroup_procs(pid: int) -> str:
    """The cgroup.procs file of process pid's cgroup (v2, or v1's pids controller, as netemu.dataplane.cgroups)."""
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    path = next(p for _, ctrl, p in lines if ctrl == ("" if v2 else "pids"))
    procs = f"/sys/fs/cgroup{'' if v2 else '/pids'}{path}/cgroup.procs"
    assert "/netemu/" in procs, procs  # the pod's own cgroup
    return procs


def _ns_inits(cgroup_procs: str) -> list[int]:
    """The processes of a pod's cgroup that are PID 1 of a namespace: its pause processes."""
    out = []
    with open(cgroup_procs) as f:
        pids = [int(x) for x in f.read().split()]
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                nspid = next(line for line in f if line.startswith("NSpid:")).split()[1:]
        except (OSError, StopIteration):
            continue
        if len(nspid) > 1 and nspid[-1] == "1":
            out.append(p)
    return out


def test_a_killed_sandbox_is_made_again(clab):
    """kubelet's SandboxChanged: the pause process is SIGKILLed (the kernel takes the pod's processes with
    it); the pod gets a new sandbox in its network namespace (same IP), its container restarts (one more
    RESTARTS) and serves again; the old sandbox's descriptors and pause are gone."""
    clab.wait_for(lambda: _running(clab, "echo"), timeout=30, what="echo Running")
    before = clab.get("pod", "echo")[0]
    ip, node = before["status"]["podIP"], before["spec"]["nodeName"]
    restarts = before["status"]["containerStatuses"][0]["restartCount"]
    pid = container_pid(clab, "echo", "echo")
    launcher = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])  # the container's parent
    assert "netemu.dataplane.launcher" in open(f"/proc/{launcher}/cmdline").read()
    launcher_fds = len(os.listdir(f"/proc/{launcher}/fd"))
    procs = _cgroup_procs(pid)
    pause = _pause_of(pid)
    assert pause != pid and _ns_inits(procs) == [pause]
    os.kill(pause, 9)  # this lab's own pause process

    def recovered():
        p = clab.get("pod", "echo")[0]
        st = p["status"]["containerStatuses"][0]
        return (_running(clab, "echo") and st["restartCount"] == restarts + 1 and "running" in st["state"]
                and st.get("containerID") != f"netemu://{pid}" and p)

    after = clab.wait_for(recovered, timeout=15, what="echo restarted in a new sandbox")
    assert after["status"]["podIP"] == ip and after["metadata"]["uid"] == before["metadata"]["uid"]
    events = [e for e in clab.get("events") if e["involvedObject"]["name"] == "echo"
              and e["reason"] == "SandboxChanged"]
    assert events and events[0]["type"] == "Normal", events
    assert events[0]["message"] == "Pod sandbox changed, it will be killed and re-created."
    new = container_pid(clab, "echo", "echo")
    new_pause = _pause_of(new)
    assert new_pause != pause and os.path.exists(f"/proc/{new_pause}")
    assert _ns_inits(procs) == [new_pause]  # the same cgroup, one pause in it
    # it serves again, from the node, at the same address
    out = clab.node_exec(node, "curl", "-s", "-m", "3", f"http://{ip}:80/", check=False).stdout
    assert "echo" in out, out
    # the old sandbox's descriptors were released: the launcher holds as many as before
    clab.wait_for(lambda: len(os.listdir(f"/proc/{launcher}/fd")) == launcher_fds, timeout=5,
                  what=f"the launcher's descriptors back to {launcher_fds}")
