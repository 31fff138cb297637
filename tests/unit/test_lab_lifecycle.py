"""The pure parts of a lab's life cycle: the host and owner locks, the CLI's transport errors (a stopped or
dying control process becomes a sentence, never a traceback), `--lab` before the verb, and where the VM
cannot see a checkout."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import types

import pytest

from netemu import locks, paths
from netemu.cli import client as client_mod
from netemu.cli.client import Client, LabConnectionLost, LabNotRunning, LabUnresponsive


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    d = tmp_path / "run"
    monkeypatch.setattr(paths, "RUN_DIR", str(d))
    return d


# --------------------------------------------------------------------------- locks
def test_host_lock_is_exclusive_between_processes_and_reentrant_within_one(run_dir):
    with locks.host_lock():
        with locks.host_lock():  # re-entrant: no self-deadlock
            pass
        code = ("import sys; from netemu import paths, locks; paths.RUN_DIR = sys.argv[1]\n"
                "try:\n    with locks.host_lock(timeout=0.3): print('got')\n"
                "except locks.LockTimeout as e: print('timeout', e)\n")
        out = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True).stdout
        assert out.startswith("timeout") and "try again" in out
    out = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True).stdout
    assert out.strip() == "got"


def test_the_run_dir_goes_with_the_last_lab_but_not_under_a_holder(run_dir):
    with locks.host_lock():
        locks.remove_run_dir_if_unused()  # the holder is creating something: kept
        assert (run_dir / ".lock").exists()
    locks.remove_run_dir_if_unused()
    assert not run_dir.exists()
    os.makedirs(run_dir / "somelab")
    locks.remove_run_dir_if_unused()
    assert (run_dir / "somelab").exists()
    assert paths.running_labs() == ["somelab"]  # the lock file is no lab


def test_owner_lock_follows_its_holder_and_is_seen_without_taking_it(run_dir):
    fd = locks.claim_owner("lab1")
    assert fd is not None and locks.owner_alive("lab1")
    code = ("import sys; from netemu import paths, locks; paths.RUN_DIR = sys.argv[1]\n"
            "print(locks.claim_owner('lab1', wait=0.2), locks.owner_alive('lab1'))\n")
    out = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True).stdout
    assert out.split() == ["None", "True"]
    # a forked child keeps it when the parent lets go (that is how the control process holds it)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    os.close(fd)
    assert locks.owner_alive("lab1")
    os.write(w, b"x")
    os.waitpid(pid, 0)
    os.close(w)
    assert not locks.owner_alive("lab1")
    fd2, exists = locks.wait_owner("lab1", timeout=0.5)
    assert fd2 is not None and exists
    os.close(fd2)
    assert locks.wait_owner("gone", timeout=0.1) == (None, False)


def test_claims_are_read_back_and_fall_back_to_the_state_file(run_dir):
    os.makedirs(paths.lab_dir("a"))
    locks.write_claim("a", {"spec": {"network": "10.1.0.0/24"}})
    assert locks.read_claim("a")["spec"]["network"] == "10.1.0.0/24"
    os.makedirs(paths.lab_dir("old"))
    with open(paths.state_file("old"), "w") as f:
        f.write('{"lab": {"spec": {"network": "10.2.0.0/24"}}}')
    assert locks.read_claim("old") == {"spec": {"network": "10.2.0.0/24"}}
    assert locks.read_claim("none") is None


# --------------------------------------------------------------------------- up's preflight (daemon/lifecycle)
def _spec(network="192.168.1.0/24", pod_cidr="172.16.0.0/16", service_cidr="10.96.0.0/12", uplink=None):
    return types.SimpleNamespace(network=network, gateway=network.rsplit(".", 1)[0] + ".1", pod_cidr=pod_cidr,
                                 service_cidr=service_cidr, uplink=uplink, proxy_mode="iptables",
                                 nodes=[types.SimpleNamespace(name="m-k8s", ip=network.rsplit(".", 1)[0] + ".10")])


def test_a_lab_may_not_take_another_labs_ranges_or_uplink():
    from netemu.daemon.lifecycle import lab_overlaps

    theirs = {"network": "192.168.1.0/24", "podCIDR": "10.200.0.0/16", "serviceCIDR": "10.96.0.0/12",
              "uplink": "lab-ns/eth1"}
    claims = {"lab": theirs, "crashed": None, "me": {"network": "192.168.1.0/24"}}
    assert lab_overlaps("me", _spec(), claims) == [
        'lab network 192.168.1.0/24 overlaps the lab network 192.168.1.0/24 of lab "lab"',
        'service CIDR 10.96.0.0/12 overlaps the service CIDR 10.96.0.0/12 of lab "lab"']
    # the other lab's pod CIDR inside this lab's service CIDR, the same uplink written the same way
    mine = _spec("192.168.2.0/24", "172.17.0.0/16", "10.192.0.0/10", uplink="lab-ns/eth1")
    assert lab_overlaps("me", mine, claims) == [
        'service CIDR 10.192.0.0/10 overlaps the pod CIDR 10.200.0.0/16 of lab "lab"',
        'uplink lab-ns/eth1 is already the uplink of lab "lab"']
    # eth1 of the host is not eth1 of a namespace; an unreadable reference is no match
    assert lab_overlaps("me", _spec("192.168.2.0/24", "172.17.0.0/16", "10.112.0.0/12", uplink="eth1"), claims) == []
    assert lab_overlaps("me", _spec("192.168.2.0/24", "172.17.0.0/16", "10.112.0.0/12", uplink="eth1"),
                        {"x": {"uplink": "/eth1"}}) == []


ROUTES = [
    {"dst": "default", "gateway": "10.0.2.2", "dev": "eth0"},
    {"dst": "10.0.2.0/24", "dev": "eth0", "protocol": "kernel", "prefsrc": "10.0.2.15"},
    {"type": "local", "dst": "192.168.1.7", "dev": "eth1", "table": "local"},
    {"dst": "192.168.0.0/16", "gateway": "10.0.2.3", "dev": "eth0"},
    {"dst": "192.168.1.0/24", "dev": "eth1"},
    {"dst": "192.168.1.99", "dev": "tun0", "table": "100"},
    {"dst": "fd00::/8", "dev": "eth0"},
]
LINKS = [
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
    {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "10.0.2.15", "prefixlen": 24},
                                     {"family": "inet6", "local": "fd00::15", "prefixlen": 64}]},
    {"ifname": "eth1", "addr_info": [{"family": "inet", "local": "192.168.1.7", "prefixlen": 24}]},
]


def test_a_lab_network_the_host_routes_or_holds_is_refused():
    from netemu.daemon.lifecycle import host_conflicts

    assert host_conflicts("192.168.1.0/24", ROUTES, LINKS) == [
        "route 192.168.0.0/16 via 10.0.2.3 dev eth0 (table main) already covers 192.168.1.0/24",
        "route 192.168.1.0/24 dev eth1 (table main) already covers 192.168.1.0/24",
        "route 192.168.1.99 dev tun0 (table 100) already covers 192.168.1.0/24",
        "address 192.168.1.7/24 on eth1 is inside 192.168.1.0/24"]
    # the lab's uplink (its routes and address go with it into the lab) is left out
    assert host_conflicts("192.168.1.0/24", ROUTES, LINKS, own_link="eth1") == [
        "route 192.168.0.0/16 via 10.0.2.3 dev eth0 (table main) already covers 192.168.1.0/24",
        "route 192.168.1.99 dev tun0 (table 100) already covers 192.168.1.0/24"]
    assert host_conflicts("172.31.0.0/24", ROUTES, LINKS) == []  # the default route covers everything: never
    assert host_conflicts("fd00:1::/64", ROUTES, LINKS) == [
        "route fd00::/8 dev eth0 (table main) already covers fd00:1::/64"]


def test_up_claims_a_free_lab_sweeps_a_crashed_one_and_refuses_a_taken_one(run_dir, monkeypatch):
    from netemu.daemon import lifecycle
    from netemu.dataplane import hostnet

    swept, warnings = [], []
    monkeypatch.setattr(lifecycle, "sweep", lambda name: swept.append(name) or [])
    monkeypatch.setattr(hostnet, "host_routes", lambda: ROUTES[:3])
    monkeypatch.setattr(hostnet, "host_addresses", lambda: LINKS[:2])
    lab1 = types.SimpleNamespace(spec=_spec())
    os.makedirs(paths.lab_dir("lab1"))  # left by a lab whose control process died: no owner, no pid
    fd = lifecycle.claim("lab1", lab1, warn=warnings.append)
    try:
        assert swept == ["lab1"] and warnings == ['lab "lab1" was not shut down cleanly: removing what it left behind']
        assert lifecycle.claimed_spec("lab1") == {
            "network": "192.168.1.0/24", "gateway": "192.168.1.1", "podCIDR": "172.16.0.0/16",
            "serviceCIDR": "10.96.0.0/12", "uplink": None, "proxyMode": "iptables",
            "nodes": [{"name": "m-k8s", "ip": "192.168.1.10"}]}
        with pytest.raises(lifecycle.LifecycleError, match='lab "lab1" is starting: another `netemu up`'):
            lifecycle.claim("lab1", lab1)  # its owner lock is held, its control process not there yet
        with pytest.raises(lifecycle.LifecycleError) as e:
            lifecycle.claim("lab2", types.SimpleNamespace(spec=_spec(pod_cidr="172.17.0.0/16",
                                                                     service_cidr="10.112.0.0/12")))
        assert str(e.value) == (
            'cannot start lab "lab2": its addresses are already in use on this host:\n'
            '  - lab network 192.168.1.0/24 overlaps the lab network 192.168.1.0/24 of lab "lab1"\n'
            "(give the lab other CIDRs in its Lab document: spec.network, spec.podCIDR, spec.serviceCIDR)")
        assert not os.path.exists(paths.lab_dir("lab2")) and swept == ["lab1"]
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the CLI's transport errors
def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


class FakeControlProcess:
    """A Unix socket server that misbehaves in one chosen way."""

    def __init__(self, path: str, behaviour: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.behaviour = behaviour
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            _read_request(conn)
            if self.behaviour == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
            elif self.behaviour == "cut-stream":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json-seq\r\nTransfer-Encoding: chunked"
                             b"\r\n\r\n" + b"%x\r\n" % 17 + b'{"progress": "x"}\r\n' + b"\r\n")
                conn.close()
            elif self.behaviour == "end-stream":  # a complete stream without its result
                body = b'{"progress": "x"}\n'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json-seq\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                conn.close()
            elif self.behaviour == "silent":
                self.stop.wait(5)
                conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("behaviour,exc,words", [
    ("reset", LabConnectionLost, "closed the connection"),
    ("silent", LabUnresponsive, "did not answer within 0.5s"),
    ("cut-stream", LabConnectionLost, "closed the connection"),
    ("end-stream", LabConnectionLost, "before the wait ended"),
])
def test_a_misbehaving_control_process_is_a_clear_error(run_dir, behaviour, exc, words):
    os.makedirs(paths.lab_dir("x"))
    server = FakeControlProcess(paths.api_socket("x"), behaviour)
    try:
        c = Client("x", timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(exc) as e:
            c.wait(lambda msg, final: None, timeout=1)
        assert words in str(e.value) and time.monotonic() - t0 < 3
        if behaviour != "end-stream":  # (that one is a complete answer to a plain GET)
            with pytest.raises(client_mod.CliError):
                c.rest("GET", "/api/v1/pods")
    finally:
        server.close()


def test_no_control_process_at_all(run_dir):
    os.makedirs(paths.lab_dir("x"))
    with pytest.raises(LabNotRunning) as e:
        Client("x", timeout=0.5).call("get")
    assert "`netemu down x`" in str(e.value)


# --------------------------------------------------------------------------- --lab before the verb
@pytest.mark.parametrize("argv,lab", [
    (["--lab", "a", "get", "pods"], "a"),
    (["--lab=a", "get", "pods"], "a"),
    (["get", "pods", "--lab", "a"], "a"),
    (["--lab", "a", "exec", "p", "--", "ls", "--lab", "z"], "a"),
    (["--lab", "a", "down"], "a"),
])
def test_lab_before_or_after_the_verb(argv, lab):
    from netemu.cli import main as cli

    seen = {}
    orig = cli.dispatch
    cli.dispatch = lambda args: seen.update(lab=args.lab, command=getattr(args, "command", None)) or 0
    try:
        assert cli.main(argv) == 0
    finally:
        cli.dispatch = orig
    assert seen["lab"] == lab
    if "exec" in argv:
        assert seen["command"] == ["ls", "--lab", "z"]


def test_lab_before_a_verb_without_labs_is_an_error(capsys):
    from netemu.cli import main as cli

    assert cli.main(["--lab", "a", "up", "x.yaml"]) == 1
    assert "--lab does not apply to `netemu up`" in capsys.readouterr().err
    assert cli.main(["--lab", "a", "get", "pods", "--lab", "b"]) == 1
    assert "different labs" in capsys.readouterr().err


# --------------------------------------------------------------------------- the VM's view of the host
def test_what_the_vm_guest_cannot_see():
    from netemu.vmtest.kit import checkout_problem, hidden_in_guest

    assert hidden_in_guest("/tmp/clone/netemu") == "/tmp"
    assert hidden_in_guest("/run/x") == "/run"
    assert hidden_in_guest("/tmpfoo") is None and hidden_in_guest("/work/main") is None
    problem = checkout_problem()
    if problem is None:
        assert hidden_in_guest(client_mod.__file__) is None
    else:
        assert "not visible in the guest" in problem
