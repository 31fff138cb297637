"""In-cluster config in real pods: the API server's Service variables in every namespace, and the
ServiceAccount token volume at /var/run/secrets/kubernetes.io/serviceaccount, which exists only in
the pods' mount namespaces (never on the host, before, during or after the lab)."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import uuid

import pytest

SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

PODS = """\
apiVersion: v1
kind: Namespace
metadata:
  name: team-a
---
apiVersion: v1
kind: Pod
metadata:
  name: envdump
spec:
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "env; echo ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); exec sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: envdump
  namespace: team-a
spec:
  serviceAccountName: robot
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "env; echo ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); exec sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: notoken
spec:
  automountServiceAccountToken: false
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "exec sleep 3600"]
"""


def _host_run_secrets() -> list[str] | None:
    try:
        return sorted(os.listdir("/run/secrets"))
    except FileNotFoundError:
        return None


def _env_of(log: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in log.splitlines() if "=" in line and not line.startswith("ns="))


def test_pods_get_master_service_env_and_token_volume(lab, tmp_path):
    host_before = _host_run_secrets()
    lab.up(PODS, tmp_path=tmp_path)
    lab.wait_for(lambda: all("ns=" in lab.run("logs", "envdump", "-n", ns).stdout for ns in ("default", "team-a")),
                 what="the pods' env dumps")
    master_ip = lab.get("service", "kubernetes", "-n", "default")[0]["spec"]["clusterIP"]
    assert master_ip == lab.service_cidr.split("/")[0][:-1] + "1"
    for ns in ("default", "team-a"):  # kubelet gives the master Service's variables in every namespace
        env = _env_of(lab.run("logs", "envdump", "-n", ns).stdout)
        assert env.get("KUBERNETES_SERVICE_HOST") == master_ip, (ns, env)
        assert env.get("KUBERNETES_SERVICE_PORT") == "443"
        assert env.get("KUBERNETES_SERVICE_PORT_HTTPS") == "443"
        assert env.get("KUBERNETES_PORT") == f"tcp://{master_ip}:443"
        assert env.get("KUBERNETES_PORT_443_TCP") == f"tcp://{master_ip}:443"
        assert env.get("KUBERNETES_PORT_443_TCP_PROTO") == "tcp"
        assert env.get("KUBERNETES_PORT_443_TCP_PORT") == "443"
        assert env.get("KUBERNETES_PORT_443_TCP_ADDR") == master_ip

    assert _host_run_secrets() == host_before, "the lab made /run/secrets on the host"
    pki_dir = f"/run/netemu/{lab.name}/pki"
    assert os.path.isdir(pki_dir), "every lab has an API server and its CA"
    client_problem = _check_token_volumes(lab, pki_dir)

    lab.down()
    assert _host_run_secrets() == host_before, "netemu down left /run/secrets behind"
    assert not os.path.exists(f"/run/netemu/{lab.name}")
    assert client_problem is None, client_problem


def _check_token_volumes(lab, pki_dir: str) -> str | None:
    for ns, sa in (("default", "default"), ("team-a", "robot")):
        assert lab.exec("envdump", "cat", f"{SA_MOUNT}/namespace", namespace=ns).stdout == ns
        assert f"ns={ns}" in lab.run("logs", "envdump", "-n", ns).stdout  # the container read it itself
        listing = lab.exec("envdump", "ls", SA_MOUNT, namespace=ns).stdout.split()
        assert sorted(listing) == ["ca.crt", "namespace", "token"]
        token = lab.exec("envdump", "cat", f"{SA_MOUNT}/token", namespace=ns).stdout
        ca = lab.exec("envdump", "cat", f"{SA_MOUNT}/ca.crt", namespace=ns).stdout
        assert token.count(".") == 2 and "BEGIN CERTIFICATE" in ca
        res = lab.exec("envdump", "sh", "-c", f"echo x > {SA_MOUNT}/token", namespace=ns, check=False)
        assert res.returncode != 0 and "Read-only" in res.stderr, res  # read-only for the pod
        # the pod's /run is its own: the host's (every lab's sockets, /run/netns) is not there
        assert lab.exec("envdump", "ls", "/run/netemu", namespace=ns, check=False).returncode != 0
        from netemu.api import pki as pki_mod

        pki = pki_mod.load(pki_dir)
        assert ca.encode() == pki.ca_cert_pem
        assert pki_mod.verify_token(pki, token) == f"system:serviceaccount:{ns}:{sa}"
    res = lab.exec("notoken", "ls", "/var/run/secrets", check=False)
    assert res.returncode != 0, f"automountServiceAccountToken: false, yet: {res.stdout}"
    return _clients_in_pod(lab)


# Run inside the pod with the container's own KUBERNETES_* variables (`netemu exec` does not give
# them): first a plain HTTPS request with the mounted token and CA, then the official client.
INCLUSTER = """\
import glob, json, os, ssl, sys, urllib.request
# the container's process (the pod has a PID namespace of its own: its number there is not the host's)
for path in sorted(glob.glob("/proc/[0-9]*/environ")):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        continue
    if b"KUBERNETES_SERVICE_HOST=" in data and path != "/proc/%d/environ" % os.getpid():
        break
for kv in data.split(b"\\0"):
    k, _, v = kv.decode().partition("=")
    if k.startswith("KUBERNETES_"):
        os.environ[k] = v
sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
url = "https://%s:%s/api/v1/namespaces/%s/pods" % (os.environ["KUBERNETES_SERVICE_HOST"],
      os.environ["KUBERNETES_SERVICE_PORT"], open(sa + "namespace").read())
req = urllib.request.Request(url, headers={"Authorization": "Bearer " + open(sa + "token").read()})
body = json.load(urllib.request.urlopen(req, context=ssl.create_default_context(cafile=sa + "ca.crt"), timeout=10))
print("raw", body["kind"])
from kubernetes import client, config
config.load_incluster_config()
try:
    print("client", client.CoreV1Api().list_namespaced_pod(open(sa + "namespace").read()).kind)
except client.ApiException as e:
    print("client-error", e.status)
"""


def _clients_in_pod(lab) -> str | None:
    """In-cluster config as a controller uses it, from inside a pod: the Service variables, token
    and CA where kubelet puts them, through the `kubernetes` Service. Returns why the official
    client failed, if it did for a reason outside the pod's set-up."""
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        return None
    pod = lab.get("pods", "envdump")[0]
    pid = int(pod["status"]["containerStatuses"][0]["containerID"].rsplit("/", 1)[1])
    res = lab.exec("envdump", sys.executable, "-c", INCLUSTER, str(pid), check=False, timeout=60)
    assert res.returncode == 0, res
    assert "raw PodList" in res.stdout, res  # token, CA and Service address are right
    if "client-error 401" in res.stdout:
        return ("the official Python client sends `Authorization: bearer <token>` (lower case, which "
                "kube-apiserver accepts: it compares the scheme case-insensitively) and netemu's API server "
                "answers 401 (netemu/daemon/apiserver.py checks startswith(\"Bearer \"))")
    assert "client PodList" in res.stdout, res
    return None


# ------------------------------------------------------------------ the launcher alone
def _recv(sock, timeout: float = 10) -> dict:
    ready, _, _ = select.select([sock], [], [], timeout)
    assert ready, "the launcher did not answer"
    return json.loads(sock.recv(1 << 20))


def test_launcher_mounts_token_volume_in_the_sandbox_only(tmp_path):
    """The mount itself, without an API server: a sandbox made by a real launcher in a namespace
    of this test's own sees the volume read-only where clients look; the host sees nothing."""
    from netemu.dataplane import launcher

    host_before = _host_run_secrets()
    host_run = set(os.listdir("/run"))
    netns = f"ne-t{uuid.uuid4().hex[:6]}-sa"
    sa_dir = tmp_path / "sa"
    sa_dir.mkdir(mode=0o755)
    for name, data in (("token", "a.b.c"), ("ca.crt", "CA"), ("namespace", "team-a")):
        (sa_dir / name).write_text(data)
    subprocess.run(["ip", "netns", "add", netns], check=True)
    pid, sock = launcher.start()
    try:
        client = launcher.LauncherClient(pid, sock)
        client.request("sandbox", netns=f"/run/netns/{netns}", hostname="sa-probe",
                       binds=[[str(sa_dir), SA_MOUNT, "ro"]])
        reply = _recv(sock)
        assert "sandbox" in reply, reply
        fds = reply["sandbox"]
        enter = ["nsenter", f"--net=/run/netns/{netns}", f"--uts=/proc/{pid}/fd/{fds['uts']}",
                 f"--mount=/proc/{pid}/fd/{fds['mnt']}", "--"]

        def inside(*cmd: str) -> subprocess.CompletedProcess:
            return subprocess.run([*enter, *cmd], capture_output=True, text=True, timeout=10)

        assert inside("cat", f"{SA_MOUNT}/namespace").stdout == "team-a"
        assert inside("cat", f"{SA_MOUNT}/token").stdout == "a.b.c"
        res = inside("sh", "-c", f"echo x > {SA_MOUNT}/token")
        assert res.returncode != 0 and "Read-only" in res.stderr, res
        assert inside("hostname").stdout.strip() == "sa-probe"
        seen = set(inside("ls", "-A", "/run").stdout.split())
        assert "secrets" in seen
        # a pod's /run is its own (netemu.dataplane.rootfs): none of the host's entries, every lab's
        # sockets and /run/netns among them, is there
        assert not (host_run - {"secrets", "lock"}) & seen, f"the pod sees the host's /run: {sorted(seen)}"
        assert _host_run_secrets() == host_before  # while the sandbox lives, too
        client.request("release", fds=[fds["uts"], fds["mnt"]])
        assert _recv(sock).get("released")
    finally:
        sock.close()  # the launcher exits when its control socket closes
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        subprocess.run(["ip", "netns", "del", netns], check=False)
    assert _host_run_secrets() == host_before
    assert (sa_dir / "token").read_text() == "a.b.c"


@pytest.fixture(autouse=True)
def _no_host_secrets_left():
    before = _host_run_secrets()
    yield
    assert _host_run_secrets() == before
