"""kind-style kubeconfig merge and removal."""
from __future__ import annotations

import base64
import multiprocessing
import os
import pwd
import socket
import ssl
import stat
import threading
import time

import pytest
import yaml

from netemu.api import kubeconfig as K
from netemu.api import pki as P

SERVER = "https://127.0.0.1:6443"

OTHER = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "prod", "cluster": {"server": "https://prod.example:6443"}}],
    "users": [{"name": "prod-admin", "user": {"token": "secret"}}],
    "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod-admin", "namespace": "web"}}],
    "current-context": "prod",
    "preferences": {"colors": True},
}


@pytest.fixture(scope="module")
def pki() -> P.LabPki:
    return P.make_pki("lab", ["127.0.0.1"], ["localhost"])


@pytest.fixture
def cfg_path(tmp_path) -> str:
    path = tmp_path / "home" / ".kube" / "config"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(OTHER))
    path.chmod(0o600)
    return str(path)


def _load(path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _names(cfg, section) -> list[str]:
    return [e["name"] for e in cfg.get(section) or []]


def _merge(path, lab, pki, server=SERVER):
    return K.merge(path, lab, server, pki, os.getuid(), os.getgid())


def test_render_names_and_credentials(pki):
    cfg = K.render("lab", SERVER, pki)
    assert cfg["current-context"] == "netemu-lab"
    assert _names(cfg, "clusters") == _names(cfg, "users") == _names(cfg, "contexts") == ["netemu-lab"]
    assert cfg["contexts"][0]["context"] == {"cluster": "netemu-lab", "user": "netemu-lab"}
    cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
    assert cluster["server"] == SERVER
    assert base64.b64decode(cluster["certificate-authority-data"]) == pki.ca_cert_pem
    assert base64.b64decode(user["client-certificate-data"]) == pki.client_cert_pem
    assert base64.b64decode(user["client-key-data"]) == pki.client_key_pem


def test_merge_into_new_file_creates_private_dir_and_file(tmp_path, pki):
    path = tmp_path / "home" / ".kube" / "config"
    assert _merge(str(path), "lab", pki) == str(path)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_uid == os.getuid()
    cfg = _load(path)
    assert cfg["current-context"] == "netemu-lab" and cfg["kind"] == "Config"
    assert _names(cfg, "contexts") == ["netemu-lab"]
    assert "extensions" not in cfg["contexts"][0]["context"]  # nothing was current before
    # neither our flock file's twin nor client-go's lock is left: kubectl would fail on config.lock
    assert not (path.parent / "config.lock").exists()
    assert sorted(os.listdir(path.parent)) == [".config.netemu-lock", "config"]


def test_merge_keeps_other_entries_and_becomes_current(cfg_path, pki):
    _merge(cfg_path, "lab", pki)
    cfg = _load(cfg_path)
    assert cfg["current-context"] == "netemu-lab"
    assert _names(cfg, "clusters") == ["prod", "netemu-lab"]
    assert _names(cfg, "users") == ["prod-admin", "netemu-lab"]
    assert _names(cfg, "contexts") == ["prod", "netemu-lab"]
    assert cfg["contexts"][0] == OTHER["contexts"][0] and cfg["users"][0] == OTHER["users"][0]
    assert cfg["preferences"] == {"colors": True}
    assert stat.S_IMODE(os.stat(cfg_path).st_mode) == 0o600


def test_merge_again_replaces_our_entries(cfg_path, pki):
    _merge(cfg_path, "lab", pki)
    _merge(cfg_path, "lab", pki, server="https://127.0.0.1:7443")
    cfg = _load(cfg_path)
    assert _names(cfg, "clusters") == ["prod", "netemu-lab"]
    assert cfg["clusters"][1]["cluster"]["server"] == "https://127.0.0.1:7443"
    # the second merge must still remember prod, not itself, as the context to return to
    K.remove(cfg_path, "lab")
    assert _load(cfg_path)["current-context"] == "prod"


def test_remove_restores_the_previous_state(cfg_path, pki):
    _merge(cfg_path, "lab", pki)
    assert K.remove(cfg_path, "lab") is True
    assert _load(cfg_path) == OTHER
    assert stat.S_IMODE(os.stat(cfg_path).st_mode) == 0o600


def test_remove_leaves_a_context_the_user_switched_to(cfg_path, pki):
    _merge(cfg_path, "lab", pki)
    cfg = _load(cfg_path)
    cfg["current-context"] = "prod"
    with open(cfg_path, "w") as f:
        yaml.safe_dump(cfg, f)
    K.remove(cfg_path, "lab")
    assert _load(cfg_path)["current-context"] == "prod"


def test_remove_of_the_only_context_drops_current_context(tmp_path, pki):
    path = str(tmp_path / "config")
    _merge(path, "lab", pki)
    assert K.remove(path, "lab") is True
    cfg = _load(path)
    assert "current-context" not in cfg
    assert cfg["clusters"] == cfg["users"] == cfg["contexts"] == []


def test_stacked_labs_unwind_to_the_original_context(cfg_path, pki):
    _merge(cfg_path, "a", pki)
    _merge(cfg_path, "b", pki)
    K.remove(cfg_path, "a")  # b's recorded previous (netemu-a) now points past a, to prod
    assert _load(cfg_path)["current-context"] == "netemu-b"
    K.remove(cfg_path, "b")
    assert _load(cfg_path) == OTHER


def test_remove_leaves_a_file_that_does_not_mention_us_alone(cfg_path):
    before = open(cfg_path, "rb").read()
    st = os.stat(cfg_path)
    assert K.remove(cfg_path, "lab") is False
    assert open(cfg_path, "rb").read() == before
    assert os.stat(cfg_path).st_ino == st.st_ino  # not even rewritten


@pytest.mark.parametrize("content", [b"clusters: [unclosed\n", b"- just\n- a list\n", b"\xff\xfe\x00garbage",
                                     b"clusters: {netemu-lab: 1}\ncurrent-context: netemu-lab\n"])
def test_remove_never_raises_on_garbled_files(tmp_path, content):
    path = tmp_path / "config"
    path.write_bytes(content)
    assert K.remove(str(path), "lab") is False
    assert path.read_bytes() == content


def test_remove_of_a_missing_file_is_a_no_op(tmp_path):
    assert K.remove(str(tmp_path / "nope" / "config"), "lab") is False
    assert not (tmp_path / "nope").exists()


def test_merge_refuses_to_clobber_a_garbled_file(tmp_path, pki):
    path = tmp_path / "config"
    path.write_bytes(b"clusters: [unclosed\n")
    with pytest.raises(K.KubeconfigError):
        _merge(str(path), "lab", pki)
    assert path.read_bytes() == b"clusters: [unclosed\n"
    assert not (tmp_path / "config.lock").exists()


def test_merge_into_an_empty_file(tmp_path, pki):
    path = tmp_path / "config"
    path.write_bytes(b"")
    _merge(str(path), "lab", pki)
    assert _names(_load(path), "contexts") == ["netemu-lab"]


def test_merge_keeps_a_symlinked_kubeconfig_a_symlink(tmp_path, pki):
    real = tmp_path / "real-config"
    real.write_text(yaml.safe_dump(OTHER))
    link = tmp_path / "config"
    link.symlink_to(real)
    _merge(str(link), "lab", pki)
    assert link.is_symlink()
    assert _names(_load(real), "contexts") == ["prod", "netemu-lab"]


def _merge_many(path: str, labs: list[str], barrier) -> None:
    barrier.wait()
    the_pki = P.make_pki("x", ["127.0.0.1"], ["localhost"])
    for lab in labs:
        _merge(path, lab, the_pki)


def test_concurrent_merges_from_processes_all_land(cfg_path):
    ctx = multiprocessing.get_context("fork")
    n = 6
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=_merge_many, args=(cfg_path, [f"p{i}-{j}" for j in range(5)], barrier))
             for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * n
    cfg = _load(cfg_path)
    expected = {"prod"} | {f"netemu-p{i}-{j}" for i in range(n) for j in range(5)}
    assert set(_names(cfg, "contexts")) == expected
    assert set(_names(cfg, "users")) == expected - {"prod"} | {"prod-admin"}
    assert not os.path.exists(cfg_path + ".lock")


def test_concurrent_merges_from_threads_all_land(cfg_path):
    # flock is per open file description, so threads of one process exclude each other too
    barrier = threading.Barrier(4)
    threads = [threading.Thread(target=_merge_many, args=(cfg_path, [f"t{i}-{j}" for j in range(5)], barrier))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(_names(_load(cfg_path), "contexts")) == 1 + 4 * 5


def test_merge_waits_for_a_kubectl_lock(cfg_path, pki):
    lock = cfg_path + ".lock"
    open(lock, "x").close()  # kubectl (client-go) is writing the file
    t = threading.Thread(target=_merge, args=(cfg_path, "lab", pki))
    t.start()
    time.sleep(0.3)
    assert _load(cfg_path) == OTHER
    os.unlink(lock)
    t.join(10)
    assert _load(cfg_path)["current-context"] == "netemu-lab"


def test_merge_breaks_a_stale_kubectl_lock(cfg_path, pki, monkeypatch):
    monkeypatch.setattr(K, "LOCK_WAIT", 0.1)
    open(cfg_path + ".lock", "x").close()
    _merge(cfg_path, "lab", pki)
    assert _load(cfg_path)["current-context"] == "netemu-lab"
    assert not os.path.exists(cfg_path + ".lock")


def test_merged_credentials_complete_a_tls_handshake(tmp_path, pki):
    path = tmp_path / "config"
    _merge(str(path), "lab", pki)
    cfg = _load(path)
    cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
    (tmp_path / "c.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
    (tmp_path / "c.key").write_bytes(base64.b64decode(user["client-key-data"]))
    client_ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    client_ctx.load_cert_chain(str(tmp_path / "c.crt"), str(tmp_path / "c.key"))
    server_ctx = P.server_ssl_context(pki, str(tmp_path / "pki"))
    a, b = socket.socketpair()
    seen = {}

    def serve():
        with server_ctx.wrap_socket(a, server_side=True) as s:
            seen["user"] = P.client_identity(s.getpeercert())
            s.sendall(b"ok")

    t = threading.Thread(target=serve)
    t.start()
    with client_ctx.wrap_socket(b, server_hostname="localhost") as c:
        assert c.recv(2) == b"ok"
    t.join(10)
    assert seen["user"] == "kubernetes-admin"


def test_target_path_prefers_first_kubeconfig_entry(tmp_path):
    env = {"KUBECONFIG": f"{os.pathsep}{tmp_path}/a{os.pathsep}{tmp_path}/b", "SUDO_UID": "1234", "SUDO_GID": "99"}
    assert K.target_path(env) == (f"{tmp_path}/a", 1234, 99)


def test_target_path_uses_the_sudo_users_home():
    me = pwd.getpwuid(os.getuid())
    env = {"SUDO_USER": me.pw_name, "SUDO_UID": str(me.pw_uid), "SUDO_GID": str(me.pw_gid), "HOME": "/root"}
    assert K.target_path(env) == (os.path.join(me.pw_dir, ".kube", "config"), me.pw_uid, me.pw_gid)



def test_target_path_falls_back_to_sudo_uid():
    other = next(u for u in pwd.getpwall() if u.pw_uid != os.getuid() and u.pw_dir != pwd.getpwuid(os.getuid()).pw_dir)
    env = {"SUDO_USER": "no-such-user-netemu", "SUDO_UID": str(other.pw_uid), "SUDO_GID": str(other.pw_gid)}
    assert K.target_path(env) == (os.path.join(other.pw_dir, ".kube", "config"), other.pw_uid, other.pw_gid)


def test_target_path_without_sudo_is_the_current_users():
    me = pwd.getpwuid(os.getuid())
    assert K.target_path({}) == (os.path.join(me.pw_dir, ".kube", "config"), os.getuid(), os.getgid())
