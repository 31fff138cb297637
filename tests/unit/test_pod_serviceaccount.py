"""In-cluster config for pods, as a kubelet provides it: the API server's Service variables in
every namespace, and the ServiceAccount token volume (files, bind, automount rules)."""
from __future__ import annotations

import os
import stat

import pytest

from netemu import paths
from netemu.control import podenv
from netemu.control.addons import kubernetes_service
from netemu.dataplane import podfiles
from netemu.dataplane.kubelet import Kubelet
from netemu.spec.models import Lab, Pod, Service

SA_FILES = {"token": b"header.claims.sig", "ca.crt": b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"}


def pod(ns: str = "default", name: str = "p", **spec) -> Pod:
    return Pod.model_validate({
        "metadata": {"namespace": ns, "name": name, "uid": f"uid-{ns}-{name}"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": "w1-k8s", **spec},
        "status": {"podIP": "172.16.1.5"},
    })


def master(lab: Lab | None = None) -> Service:
    svc = [o for o in kubernetes_service(lab or Lab(), "192.168.1.10") if o.kind == "Service"][0]
    return svc


def svc(ns: str, name: str, ip: str, ports: list[dict]) -> Service:
    return Service.model_validate({"metadata": {"namespace": ns, "name": name},
                                   "spec": {"clusterIP": ip, "ports": ports}})


MASTER_ENV = {
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
    "KUBERNETES_PORT": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
    "KUBERNETES_PORT_443_TCP_PORT": "443",
    "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
}


# ------------------------------------------------------------------ environment
@pytest.mark.parametrize("ns", ["default", "kube-system", "team-a"])
def test_master_service_variables_in_every_namespace(ns):
    p = pod(ns)
    own = [svc(ns, "web", "10.96.5.5", [{"name": "http", "port": 80, "protocol": "TCP"}])]
    env = podenv.container_env(p, p.spec.containers[0], own, master=master())
    for k, v in MASTER_ENV.items():
        assert env[k] == v, k
    assert env["WEB_SERVICE_HOST"] == "10.96.5.5"  # the namespace's own Services still come too


def test_master_alone_and_from_the_lab_service_cidr():
    lab = Lab.model_validate({"spec": {"serviceCIDR": "10.120.0.0/16"}})
    p = pod("other")
    env = podenv.container_env(p, p.spec.containers[0], [], master=master(lab))
    assert env["KUBERNETES_SERVICE_HOST"] == "10.120.0.1"
    assert env["KUBERNETES_PORT_443_TCP_ADDR"] == "10.120.0.1"
    assert env["KUBERNETES_PORT"] == "tcp://10.120.0.1:443"


def test_default_namespace_lists_the_master_once():
    p = pod("default")
    m = master()
    env = podenv.container_env(p, p.spec.containers[0], [m], master=m)
    assert {k: env[k] for k in MASTER_ENV} == MASTER_ENV
    assert [s.metadata.name for s in podenv.pod_services(p, [m], m)] == ["kubernetes"]


def test_a_kubernetes_service_of_the_pods_namespace_wins():
    p = pod("team-a")
    mine = svc("team-a", "kubernetes", "10.96.9.9", [{"port": 8080, "protocol": "TCP"}])
    env = podenv.container_env(p, p.spec.containers[0], [mine], master=master())
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.9.9"
    assert "KUBERNETES_PORT_443_TCP" not in env  # not a mix of the two


def test_service_links_off_keeps_only_the_master():
    p = pod("team-a", enableServiceLinks=False)
    own = [svc("team-a", "web", "10.96.5.5", [{"port": 80, "protocol": "TCP"}])]
    env = podenv.container_env(p, p.spec.containers[0], own, master=master())
    assert "WEB_SERVICE_HOST" not in env
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"


def test_user_env_overrides_and_expands_master_variables():
    p = Pod.model_validate({
        "metadata": {"namespace": "x", "name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "env": [
            {"name": "API", "value": "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}]}]}})
    env = podenv.container_env(p, p.spec.containers[0], [], master=master())
    assert env["API"] == "https://10.96.0.1:443"
    assert env["KUBERNETES_SERVICE_PORT"] == "6443"


def test_without_a_master_nothing_changes():
    p = pod("x")
    env = podenv.container_env(p, p.spec.containers[0], [])
    assert not any(k.startswith("KUBERNETES_") for k in env)


# ------------------------------------------------------------------ the token volume's files
def test_write_makes_the_three_files_and_a_read_only_bind(tmp_path):
    p = pod("team-a")
    sa_dir = str(tmp_path / "sa" / "uid")
    binds = podfiles.write(str(tmp_path / "etc"), p, Lab(), sa_files=SA_FILES, sa_dir=sa_dir)
    assert binds[:2] == [(str(tmp_path / "etc" / "resolv.conf"), "/etc/resolv.conf"),
                         (str(tmp_path / "etc" / "hosts"), "/etc/hosts")]
    assert binds[2] == (sa_dir, "/var/run/secrets/kubernetes.io/serviceaccount", "ro")
    assert sorted(os.listdir(sa_dir)) == ["ca.crt", "namespace", "token"]
    with open(os.path.join(sa_dir, "token"), "rb") as f:
        assert f.read() == SA_FILES["token"]
    with open(os.path.join(sa_dir, "ca.crt"), "rb") as f:
        assert f.read() == SA_FILES["ca.crt"]
    with open(os.path.join(sa_dir, "namespace"), "rb") as f:
        assert f.read() == b"team-a"  # the pod's namespace when the callable did not say
    assert stat.S_IMODE(os.stat(sa_dir).st_mode) == 0o755
    for name in ("token", "ca.crt", "namespace"):  # readable by the container's user, whoever it is
        assert stat.S_IMODE(os.stat(os.path.join(sa_dir, name)).st_mode) == 0o644
    assert not os.listdir(tmp_path / "etc").count("serviceaccount")  # nothing for `ip netns exec` to bind


def test_write_uses_the_given_namespace_file_and_rewrites(tmp_path):
    p = pod("team-a")
    sa_dir = str(tmp_path / "sa")
    podfiles.write(str(tmp_path / "etc"), p, Lab(), sa_files={**SA_FILES, "namespace": b"team-a"}, sa_dir=sa_dir)
    podfiles.write(str(tmp_path / "etc"), p, Lab(), sa_files={**SA_FILES, "token": b"new"}, sa_dir=sa_dir)
    with open(os.path.join(sa_dir, "token"), "rb") as f:
        assert f.read() == b"new"
    assert sorted(os.listdir(sa_dir)) == ["ca.crt", "namespace", "token"]  # no temporary files left


def test_write_without_sa_files_has_no_mount(tmp_path):
    binds = podfiles.write(str(tmp_path / "etc"), pod(), Lab(), sa_files=None, sa_dir=str(tmp_path / "sa"))
    assert [b[1] for b in binds] == ["/etc/resolv.conf", "/etc/hosts"]
    assert not (tmp_path / "sa").exists()
    assert [b[1] for b in podfiles.write(str(tmp_path / "etc2"), pod(), Lab())] == ["/etc/resolv.conf", "/etc/hosts"]


def test_write_rejects_other_file_names(tmp_path):
    with pytest.raises(ValueError):
        podfiles.write(str(tmp_path / "etc"), pod(), Lab(), sa_files={"../evil": b"x"}, sa_dir=str(tmp_path / "sa"))


# ------------------------------------------------------------------ automountServiceAccountToken
def test_automount_rules():
    assert podfiles.automount_token(pod()) is True
    assert podfiles.automount_token(pod(automountServiceAccountToken=False)) is False
    sa_off = {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False}
    assert podfiles.automount_token(pod(), sa_off) is False
    assert podfiles.automount_token(pod(automountServiceAccountToken=True), sa_off) is True  # the pod wins
    assert podfiles.automount_token(pod(), {"kind": "ServiceAccount"}) is True


def test_automount_reads_a_stored_service_account_object():
    from netemu.spec import models

    stored = getattr(models, "StoredObject", None)
    if stored is None:
        pytest.skip("no StoredObject model yet")
    sa = stored.model_validate({"apiVersion": "v1", "kind": "ServiceAccount",
                                "metadata": {"name": "robot", "namespace": "x"},
                                "automountServiceAccountToken": False})
    assert podfiles.automount_token(pod("x", serviceAccountName="robot"), sa) is False


def test_service_account_name():
    assert podfiles.service_account_name(pod()) == "default"
    assert podfiles.service_account_name(pod(serviceAccountName="robot")) == "robot"


# ------------------------------------------------------------------ the kubelet's side
class _Store:
    def __init__(self, objects=()):
        self.objects = {(o["kind"], o["namespace"], o["name"]): o for o in objects}

    def find(self, kind, namespace, name):
        return self.objects.get((kind, namespace, name))


class _Cluster:
    def __init__(self, objects=()):
        self.store = _Store(objects)
        self.lab = Lab()


def _kubelet(sa_files, objects=()):
    return Kubelet("unitlab", _Cluster(objects), None, None, None, lambda: None, lambda: 0, sa_files=sa_files)


def test_kubelet_asks_the_callable_unless_automount_is_off(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RUN_DIR", str(tmp_path))
    asked = []

    def sa_files(p):
        asked.append((p.metadata.namespace, podfiles.service_account_name(p)))
        return dict(SA_FILES)

    k = _kubelet(sa_files, [{"kind": "ServiceAccount", "namespace": "x", "name": "quiet",
                             "automountServiceAccountToken": False}])
    assert k._service_account_files(pod("x")) == SA_FILES
    assert k._service_account_files(pod("x", automountServiceAccountToken=False)) is None
    assert k._service_account_files(pod("x", serviceAccountName="quiet")) is None
    assert k._service_account_files(pod("x", serviceAccountName="quiet", automountServiceAccountToken=True)) == SA_FILES
    assert asked == [("x", "default"), ("x", "quiet")]
    # the tokens live under the lab's run directory (removed by `down`), in a root-only directory
    sa_dir = k._sa_dir("uid-1")
    assert sa_dir.startswith(os.path.join(str(tmp_path), "unitlab") + os.sep)
    parent = os.path.dirname(sa_dir)
    assert stat.S_IMODE(os.stat(parent).st_mode) == 0o700


def test_kubelet_without_callable_or_pki_mounts_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RUN_DIR", str(tmp_path))
    assert _kubelet(None)._service_account_files(pod()) is None
    assert _kubelet(lambda p: None)._service_account_files(pod()) is None
    assert not os.listdir(tmp_path)


def test_lab_daemon_sa_files_without_pki_is_none():
    from netemu.daemon.lab import LabDaemon

    d = LabDaemon.__new__(LabDaemon)  # only the method's own attribute matters
    assert d.sa_files(pod()) is None


def test_lab_daemon_sa_files_with_pki():
    pki_mod = pytest.importorskip("netemu.api.pki")
    from netemu.daemon.lab import LabDaemon

    d = LabDaemon.__new__(LabDaemon)
    d.api_pki = pki_mod.make_pki("unit", ["192.168.1.10", "10.96.0.1"], ["kubernetes.default.svc"])
    files = d.sa_files(pod("team-a", serviceAccountName="robot"))
    assert set(files) == {"token", "ca.crt", "namespace"}
    assert files["namespace"] == b"team-a"
    assert files["ca.crt"] == d.api_pki.ca_cert_pem
    if hasattr(pki_mod, "verify_token"):
        assert pki_mod.verify_token(d.api_pki, files["token"].decode()) == "system:serviceaccount:team-a:robot"


# ------------------------------------------------------------------ the mount, in a throwaway namespace
def _in_child(fn) -> None:
    """Run fn in a forked child with its own mount namespace; fail with its error."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            from netemu.dataplane import nsutil

            nsutil.unshare(nsutil.CLONE_NEWNS)
            nsutil.mount(None, "/", None, nsutil.MS_REC | nsutil.MS_SLAVE)
            fn()
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            import traceback

            os.write(w, traceback.format_exc().encode()[-4000:] or repr(e).encode())
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, err.decode(errors="replace")


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")


@needs_root
def test_missing_mount_point_is_made_in_the_pods_namespace_only(tmp_path):
    from netemu.dataplane import launcher, nsutil

    base = tmp_path / "run"
    (base / "netemu" / "lab").mkdir(parents=True)
    (base / "netemu" / "lab" / "log").write_text("log")
    (base / "pidfile").write_text("42")
    (base / "sub").mkdir()
    os.symlink("netemu", base / "link")
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("tok")
    alias = tmp_path / "varrun"  # /var/run -> /run
    os.symlink(base, alias)
    target = str(alias / "secrets" / "kubernetes.io" / "serviceaccount")

    def inside():
        nsutil.mount("t", str(base / "sub"), "tmpfs", 0)  # a submount, as /run/lock or /run/user are
        with open(base / "sub" / "inner", "w") as f:
            f.write("inner")
        launcher.apply_binds([[str(sa), target, "ro"]])
        with open(os.path.join(target, "token")) as f:
            assert f.read() == "tok"
        try:
            open(os.path.join(target, "token"), "w")
        except OSError as e:
            assert e.errno == 30, e  # EROFS: read-only for the pod
        else:
            raise AssertionError("the token volume is writable")
        # everything the covered directory held is still there, live, with its submounts
        assert (base / "netemu" / "lab" / "log").read_text() == "log"
        assert (base / "pidfile").read_text() == "42"
        assert (base / "sub" / "inner").read_text() == "inner"
        assert os.readlink(base / "link") == "netemu"
        (base / "netemu" / "lab" / "new").write_text("through")  # writes reach the real directory

    _in_child(inside)
    # the host saw nothing of it, but the write through a re-bound directory
    assert sorted(os.listdir(base)) == ["link", "netemu", "pidfile", "sub"]
    assert not os.path.exists(base / "secrets")
    assert os.listdir(base / "sub") == []
    assert (base / "netemu" / "lab" / "new").read_text() == "through"


@needs_root
def test_existing_target_and_file_binds(tmp_path):
    from netemu.dataplane import launcher

    target = tmp_path / "existing"
    target.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "namespace").write_text("x")
    etc_file = tmp_path / "hosts"
    etc_file.write_text("host's")
    mine = tmp_path / "mine"
    mine.write_text("pod's")

    def inside():
        launcher.apply_binds([[str(mine), str(etc_file)], [str(mine), str(tmp_path / "absent-file")],
                              [str(src), str(target), "ro"]])
        assert etc_file.read_text() == "pod's"
        assert not (tmp_path / "absent-file").exists()  # a file's missing target is not made
        assert (target / "namespace").read_text() == "x"

    _in_child(inside)
    assert etc_file.read_text() == "host's"
    assert os.listdir(target) == []
