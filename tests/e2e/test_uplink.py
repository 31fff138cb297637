"""A real interface on the lab segment (`up --uplink`), with a veth pair standing in for it and a
namespace playing the laptop on the other end: the laptop curls a NodePort and arpings a node;
an interface carrying a default route is refused (in a throw-away namespace with its own default
route, never the host's); `down`, also after a crash, gives the interface back as it was.

Only links and namespaces named ne-tupl-* are made here; the host's routes are compared before and
after each test."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import time
import uuid

import pytest

from conftest import NP_PODS, NP_SVC, netemu

HNAME = (NP_PODS + NP_SVC).format(replicas=3)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def ipj(*args: str) -> list:
    out = ip("-j", *args).stdout.strip()
    return json.loads(out) if out else []


def link(name: str, netns: str | None = None) -> dict | None:
    res = subprocess.run(["ip", *(["-n", netns] if netns else []), "-j", "-d", "link", "show", "dev", name],
                         capture_output=True, text=True)
    return json.loads(res.stdout)[0] if res.returncode == 0 and res.stdout.strip() else None


def addrs(name: str, netns: str | None = None) -> set[str]:
    out = ipj(*(["-n", netns] if netns else []), "-4", "addr", "show", "dev", name)
    return {f"{a['local']}/{a['prefixlen']}" for a in out[0]["addr_info"]} if out else set()


def routes(netns: str | None = None) -> list[str]:
    return sorted(ip(*(["-n", netns] if netns else []), "-4", "route", "show", "table", "all").stdout.splitlines())


def my_routes(lab, lp) -> list[str]:
    """The host's routes that concern this test (other labs may come and go on the machine meanwhile)."""
    prefix = lab.network.rsplit(".", 1)[0] + "."
    return [r for r in routes() if lp.uplink in r or prefix in r or r.startswith("default")]


@pytest.fixture(autouse=True)
def host_default_route_untouched():
    before = ip("route", "show", "default").stdout
    yield
    assert ip("route", "show", "default").stdout == before, "the host's default route changed"


class Laptop:
    """veth ne-tupl-<id> (the uplink, in the root namespace) <-> lan0 in namespace ne-tupl-<id>l."""

    def __init__(self, network: str):
        tag = uuid.uuid4().hex[:6]
        self.uplink = f"ne-tupl-{tag}"
        self.netns = f"ne-tupl-{tag}l"
        net = ipaddress.ip_network(network)
        self.prefix = net.prefixlen
        self.host_side_ip = str(net.network_address + 2)   # like the VM's address on a host-only network
        self.ip = str(net.network_address + 50)

    def create(self) -> None:
        ip("netns", "add", self.netns)
        ip("link", "add", self.uplink, "type", "veth", "peer", "name", "lan0", "netns", self.netns)
        ip("link", "set", self.uplink, "mtu", "1500")
        ip("addr", "add", f"{self.host_side_ip}/{self.prefix}", "dev", self.uplink)
        ip("link", "set", self.uplink, "up")
        ip("-n", self.netns, "addr", "add", f"{self.ip}/{self.prefix}", "dev", "lan0")
        ip("-n", self.netns, "link", "set", "lan0", "up")
        ip("-n", self.netns, "link", "set", "lo", "up")

    def run(self, *cmd: str, timeout: float = 15) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.netns, *cmd], capture_output=True, text=True,
                              timeout=timeout)

    def destroy(self) -> None:
        ip("link", "del", self.uplink, check=False)
        ip("netns", "del", self.netns, check=False)


@pytest.fixture
def laptop(lab):
    lp = Laptop(lab.network)
    lp.create()
    yield lp
    lab.down()
    lp.destroy()


def _daemon_pid(lab) -> int:
    with open(f"/run/netemu/{lab.name}/daemon.pid") as f:
        return int(f.read())


def _assert_given_back(lp: Laptop, before: dict) -> None:
    now = link(lp.uplink)
    assert now is not None, f"{lp.uplink} did not come back to the host"
    assert now["address"] == before["address"] and now["mtu"] == before["mtu"]
    assert "UP" in now["flags"] and not now.get("master")
    assert addrs(lp.uplink) == {f"{lp.host_side_ip}/{lp.prefix}"}
    # the pair is whole: the laptop's end still exists and is connected
    assert lp.run("ip", "-j", "link", "show", "lan0").returncode == 0


def test_laptop_reaches_nodeport_and_arp_through_uplink(lab, laptop, tmp_path):
    before = link(laptop.uplink)
    host_routes = my_routes(lab, laptop)
    res = lab.up(HNAME, tmp_path=tmp_path, extra_args=("--uplink", laptop.uplink))
    assert f"uplink {laptop.uplink}" in res.stdout + res.stderr
    # the interface left the host and is a port of the segment's bridge
    assert link(laptop.uplink) is None
    inside = link(laptop.uplink, f"ne-{lab.name}")
    assert inside and inside.get("master") == "br0" and "UP" in inside["flags"]
    assert inside["address"] == before["address"]
    # the host's end of the lab neither forwards nor answers ARP for the host's other addresses
    host_link = f"ne-{lab.name}"
    with open(f"/proc/sys/net/ipv4/conf/{host_link}/forwarding") as f:
        assert f.read().strip() == "0"
    with open(f"/proc/sys/net/ipv4/conf/{host_link}/arp_ignore") as f:
        assert f.read().strip() == "1"

    w1 = lab.node_ips["w1-k8s"]
    pods = {p["metadata"]["name"] for p in lab.pods("app=np-pods")}
    seen = []
    for _ in range(9):
        r = laptop.run("curl", "-s", "-m", "3", f"http://{w1}:30000")
        assert r.returncode == 0, r.stderr
        seen.append(r.stdout.strip())
    assert set(seen) <= pods and len(set(seen)) >= 2, seen
    # every node answers on its own address, and a NodePort on another node works too
    r = laptop.run("curl", "-s", "-m", "3", f"http://{lab.node_ips['w3-k8s']}:30000")
    assert r.stdout.strip() in pods

    # ARP: the node itself answers for its IP, with the MAC of its eth0
    node_mac = link("eth0", lab.node_netns("w1-k8s"))["address"]
    r = laptop.run("arping", "-c", "2", "-w", "5", "-I", "lan0", w1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert node_mac.lower() in r.stdout.lower(), r.stdout

    lab.down()
    _assert_given_back(laptop, before)
    assert my_routes(lab, laptop) == host_routes


def test_uplink_given_back_after_crash(lab, laptop, tmp_path):
    before = link(laptop.uplink)
    host_routes = my_routes(lab, laptop)
    lab.up(HNAME, tmp_path=tmp_path, extra_args=("--uplink", laptop.uplink))
    assert os.path.exists(f"/run/netemu/{lab.name}/uplink.json")
    os.kill(_daemon_pid(lab), signal.SIGKILL)
    time.sleep(0.2)
    res = netemu("down", lab.name)
    assert "given back" in res.stderr
    _assert_given_back(laptop, before)
    assert my_routes(lab, laptop) == host_routes
    assert not os.path.exists(f"/run/netemu/{lab.name}")


@pytest.fixture
def other_network():
    """A namespace with its own default route through d0 (a veth to d0p), an address outside the lab
    network and more routes: what a machine's main interface looks like, away from the host."""
    netns = f"ne-tupl-{uuid.uuid4().hex[:6]}d"
    ip("netns", "add", netns)
    n = lambda *a: ip("-n", netns, *a)  # noqa: E731
    n("link", "add", "d0", "type", "veth", "peer", "name", "d0p")
    n("link", "set", "d0p", "up")
    n("link", "set", "d0", "mtu", "1450")
    n("link", "set", "d0", "up")
    n("addr", "add", "10.9.9.2/24", "dev", "d0")
    n("addr", "add", "10.9.9.3/24", "dev", "d0", "label", "d0:1")
    n("route", "add", "default", "via", "10.9.9.1")
    n("route", "add", "10.50.0.0/16", "via", "10.9.9.254", "metric", "5", "table", "100")
    n("route", "add", "10.60.0.0/16", "via", "10.9.9.254", "proto", "static")
    yield netns
    ip("netns", "del", netns, check=False)


def test_default_route_interface_is_refused(lab, other_network, tmp_path):
    from netemu.dataplane import uplink

    hard, soft = uplink.refusals("d0", lab.network, netns=other_network)
    assert not hard
    assert any("default route" in s and other_network in s for s in soft), soft
    assert any("10.9.9.2/24" in s and "outside the lab network" in s for s in soft), soft
    assert any("10.60.0.0/16" in s for s in soft), soft
    # the peer end has no routes or addresses: nothing to refuse (a stand-in for a host-only NIC)
    assert uplink.refusals("d0p", lab.network, netns=other_network) == ([], [])
    # the host's namespace is not the one looked at
    assert uplink.refusals("d0", lab.network)[0] == ["there is no interface d0 in this host"]

    before_routes = routes(other_network)
    res = lab.up(HNAME, tmp_path=tmp_path, check=False, extra_args=("--uplink", f"{other_network}/d0"))
    assert res.returncode != 0
    assert "refusing" in res.stderr and "default route" in res.stderr and "--force-uplink" in res.stderr
    assert not os.path.exists(f"/run/netemu/{lab.name}")
    assert not [n for n in ip("netns", "list").stdout.split() if n.startswith(f"ne-{lab.name}")]
    assert routes(other_network) == before_routes

    res = netemu("up", str(tmp_path / f"{lab.name}.yaml"), "--uplink", "ne-tupl-none", check=False)
    assert res.returncode != 0 and "no interface ne-tupl-none" in res.stderr


def test_forced_uplink_state_restored_on_down(lab, other_network, tmp_path):
    """With --force-uplink the interface is taken; down gives back its name, ifindex, MAC, MTU,
    addresses (with labels), its default route and the routes in other tables."""
    before_link = link("d0", other_network)
    before_addrs = ip("-n", other_network, "-4", "addr", "show", "dev", "d0").stdout
    before_routes = routes(other_network)
    res = lab.up(HNAME, tmp_path=tmp_path, extra_args=("--uplink", f"{other_network}/d0", "--force-uplink"))
    assert "default route" in res.stderr  # said loudly
    assert link("d0", other_network) is None
    assert link("d0", f"ne-{lab.name}")["master"] == "br0"
    assert not [r for r in routes(other_network) if "default" in r]
    lab.down()
    after = link("d0", other_network)
    assert after is not None
    for key in ("ifindex", "ifname", "address", "mtu", "flags"):
        assert after[key] == before_link[key], key
    assert ip("-n", other_network, "-4", "addr", "show", "dev", "d0").stdout == before_addrs
    assert routes(other_network) == before_routes
    assert re.search(r"^default via 10\.9\.9\.1 dev d0", "\n".join(before_routes), re.M)


def test_uplink_reference_syntax():
    from netemu.dataplane.uplink import UplinkError, parse_ref

    assert parse_ref("eth1") == (None, "eth1")
    assert parse_ref("ne-tupl-x/d0") == ("ne-tupl-x", "d0")
    for bad in ("", "/eth1", "ns/", "eth 1", "a-very-long-interface-name"):
        with pytest.raises(UplinkError):
            parse_ref(bad)
