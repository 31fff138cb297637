"""A lab router's upstream session with the host, the pure part and the host-route code with `ip` faked:
the host's bgpd configuration (no zebra, one neighbor, only the lab's BGP pools accepted), the router's
host neighbor, what the host routes from what its bgpd learned (inside the pools, via the router, only
where the host routes nothing of that range), and the Lab document's `upstream` / `hostASN`."""
from __future__ import annotations

import types

import pytest

from test_metallb_bgp import adv, cluster, peer, pool

from netemu.control import metallb
from netemu.control.metallb_frr import HostConfig, host_routes_from, router_config
from netemu.dataplane import bgp as bgp_mod
from netemu.dataplane import frr
from netemu.dataplane.bgp import BgpSpeakers, decide_learned
from netemu.spec.errors import SpecError
from netemu.spec.load import load_text

IPS = {"m-k8s": "192.168.1.10", "w1-k8s": "192.168.1.101", "w2-k8s": "192.168.1.102", "w3-k8s": "192.168.1.103"}
ROUTER = "192.168.1.254"


def host_cfg(pools=("10.10.10.0/24",)) -> HostConfig:
    return HostConfig("host", 64499, "192.168.1.1", ROUTER, 64500, tuple(pools), "r1")


# --------------------------------------------------------------------------- configuration text
def test_the_hosts_bgpd_accepts_only_the_pools_from_its_one_neighbor_and_announces_nothing():
    files = host_cfg(("10.20.0.0/16", "10.10.10.0/24")).files()
    assert set(files) == {"bgpd"}  # no zebra, no bfdd
    text = files["bgpd"]
    assert ("ip prefix-list ne-host-pools seq 1 permit 10.10.10.0/24 le 32\n"
            "ip prefix-list ne-host-pools seq 2 permit 10.20.0.0/16 le 32\n"
            "ip prefix-list ne-host-pools seq 4294967295 deny any\n") in text
    assert "route-map ne-host-in permit 10\n match ip address prefix-list ne-host-pools\nexit\n" in text
    assert "route-map ne-host-out deny 10\nexit\n" in text
    assert "router bgp 64499\n bgp router-id 192.168.1.1\n" in text
    assert text.count(" remote-as ") == 1 and f" neighbor {ROUTER} remote-as 64500\n" in text
    assert f" neighbor {ROUTER} update-source 192.168.1.1\n" in text
    assert f"  neighbor {ROUTER} route-map ne-host-in in\n  neighbor {ROUTER} route-map ne-host-out out\n" in text
    assert "network" not in text and "redistribute" not in text
    # no pools: everything is refused
    none = host_cfg(()).files()["bgpd"]
    assert "permit 10." not in none and "ip prefix-list ne-host-pools seq 4294967295 deny any\n" in none


def test_the_upstream_router_has_the_host_as_a_neighbor_with_itself_as_next_hop():
    c = cluster(pool(), peer(address=ROUTER), adv())
    cfg = router_config("r1", ROUTER, 64500, metallb.load_config(c), IPS, upstream=("192.168.1.1", 64499))
    text = cfg.files()["bgpd"]
    assert " neighbor 192.168.1.1 remote-as 64499\n neighbor 192.168.1.1 description host\n" in text
    assert "  neighbor 192.168.1.1 activate\n  neighbor 192.168.1.1 next-hop-self\n" in text
    assert " neighbor 192.168.1.1 advertisement-interval 0\n" in text
    for ip in IPS.values():  # the nodes are still there
        assert f" neighbor {ip} remote-as 64512\n" in text
    plain = router_config("r1", ROUTER, 64500, metallb.load_config(c), IPS).files()["bgpd"]
    assert "192.168.1.1 " not in plain and "next-hop-self" not in plain


# --------------------------------------------------------------------------- learned -> host routes
def path(nexthop=ROUTER, valid=True, best=True):
    return {"valid": valid, "bestpath": best, "nexthops": [{"ip": nexthop, "afi": "ipv4", "used": True}]}


def test_learned_prefixes_inside_the_pools_via_the_router_become_host_routes():
    learned = {"routes": {
        "10.10.10.1/32": [path()],
        "10.10.10.0/24": [path()],  # an aggregate (aggregationLength) inside the pool
        "10.10.10.2/32": [path(valid=False)],  # not valid: not routed, not a refusal
        "10.10.10.3/32": [path(best=False)],
        "10.10.11.0/24": [path()],  # outside the pool
        "0.0.0.0/0": [path()],
        "10.10.10.4/32": [path(nexthop="192.168.1.102")],  # a third-party next hop (a node): not taken
    }}
    wanted, refused = host_routes_from(learned, ["10.10.10.0/24"], [ROUTER])
    assert wanted == {"10.10.10.1/32": ROUTER, "10.10.10.0/24": ROUTER}
    assert any(r.startswith("10.10.11.0/24: outside the lab's BGP pools") for r in refused)
    assert any(r.startswith("0.0.0.0/0: outside") for r in refused)
    assert any(r.startswith("10.10.10.4/32: next hop 192.168.1.102 is not the upstream router") for r in refused)
    assert host_routes_from({}, ["10.10.10.0/24"], [ROUTER]) == ({}, [])
    assert host_routes_from({"routes": {"10.10.10.1/32": [path()]}}, [], [ROUTER])[0] == {}


def test_a_learned_prefix_is_routed_only_where_the_host_routes_nothing_of_it():
    routes = [{"dst": "default", "gateway": "10.0.0.1", "dev": "eth0"},
              {"dst": "10.0.0.0/24", "dev": "eth0", "protocol": "kernel"},
              {"dst": "10.10.10.128/25", "dev": "wg0", "table": "100"},
              {"dst": "10.10.10.255", "dev": "x", "type": "broadcast", "table": "local"}]
    out = decide_learned({"10.10.10.1/32": ROUTER, "10.10.10.200/32": ROUTER, "10.10.10.0/24": ROUTER,
                          "10.0.0.7/32": ROUTER, "10.30.0.1/32": ROUTER}, routes)
    assert out == {"10.10.10.1/32": ROUTER, "10.10.10.200/32": None, "10.10.10.0/24": None,
                   "10.0.0.7/32": None, "10.30.0.1/32": ROUTER}


# --------------------------------------------------------------------------- the host's routes, `ip` faked
class FakeIp:
    def __init__(self, routes=()):
        self.routes = [dict(r) for r in routes]
        self.cmds: list[str] = []

    def batch(self, cmds):
        for c in cmds:
            self.cmds.append(c)
            w = c.split()
            dst = w[2]
            if w[1] == "del":
                self.routes = [r for r in self.routes if not (r.get("dst") in (dst, dst.removesuffix("/32"))
                                                               and r.get("protocol") == "bgp")]
            elif w[1] == "replace":
                self.routes.append({"dst": dst.removesuffix("/32"), "gateway": w[4], "dev": w[6], "protocol": w[8]})

    def json(self, args):
        return [dict(r) for r in self.routes]


@pytest.fixture
def fake_ip(monkeypatch):
    ip = FakeIp([{"dst": "default", "gateway": "10.0.0.1", "dev": "eth0"},
                 {"dst": "192.168.1.0/24", "dev": "ne-up", "protocol": "kernel"},
                 {"dst": "10.10.10.128/25", "dev": "wg0"}])
    monkeypatch.setattr(bgp_mod, "ip_batch", ip.batch)
    monkeypatch.setattr(bgp_mod, "ip_json", ip.json)
    return ip


def test_learned_routes_are_added_with_proto_bgp_via_the_lab_link_and_removed_when_withdrawn(fake_ip):
    sp = BgpSpeakers("up", lambda n: f"ne-up_{n}")
    sp._apply_learned({"10.10.10.1/32": ROUTER, "10.10.10.130/32": ROUTER})
    assert f"route replace 10.10.10.1/32 via {ROUTER} dev ne-up proto bgp" in fake_ip.cmds
    assert not any("10.10.10.130" in c for c in fake_ip.cmds)  # the host routes 10.10.10.128/25 already
    assert sp.learned == {"10.10.10.1/32": ROUTER}
    assert any("10.10.10.130/32" in w and "10.10.10.128/25" in w for w in sp.warnings)
    fake_ip.cmds.clear()
    sp._apply_learned({"10.10.10.1/32": ROUTER})  # nothing new: nothing done
    assert fake_ip.cmds == []
    sp._apply_learned({})
    assert fake_ip.cmds == [f"route del 10.10.10.1/32 via {ROUTER} dev ne-up proto bgp"]
    assert sp.learned == {}


def test_a_restarted_control_process_adopts_its_learned_routes_and_removes_stale_ones(fake_ip):
    fake_ip.routes += [{"dst": "10.10.10.1", "gateway": ROUTER, "dev": "ne-up", "protocol": "bgp"},
                       {"dst": "10.10.10.9", "gateway": ROUTER, "dev": "ne-up", "protocol": "bgp"},
                       {"dst": "10.10.10.7", "gateway": "10.0.0.1", "dev": "eth0", "protocol": "bgp"}]
    sp = BgpSpeakers("up", lambda n: f"ne-up_{n}")
    sp._apply_learned({"10.10.10.1/32": ROUTER})
    assert sp.learned == {"10.10.10.1/32": ROUTER}
    assert fake_ip.cmds == [f"route del 10.10.10.9 via {ROUTER} dev ne-up proto bgp"]  # not the host's own (eth0)


def test_the_poller_routes_what_the_hosts_bgpd_learned_and_nothing_once_it_is_gone(fake_ip, monkeypatch):
    sp = BgpSpeakers("up", lambda n: f"ne-up_{n}")
    sp.host = host_cfg()
    learned = {"routes": {"10.10.10.1/32": [path()], "10.99.0.0/16": [path()]}}
    inst = types.SimpleNamespace(pid=lambda d: 42, vtysh=lambda *a, **k: __import__("json").dumps(learned))
    sp.instances[frr.HOST] = inst
    sp.poll_learned()
    assert sp.learned == {"10.10.10.1/32": ROUTER}
    assert any("10.99.0.0/16: outside the lab's BGP pools" in w for w in sp.warnings)
    inst.pid = lambda d: None  # the host's bgpd died: its routes go
    sp.poll_learned()
    assert sp.learned == {}


# --------------------------------------------------------------------------- the host's bgpd process
def test_the_hosts_bgpd_runs_without_zebra_on_the_gateway_only(monkeypatch, tmp_path):
    monkeypatch.setattr(frr, "RUN_DIR", str(tmp_path))
    seen = []
    monkeypatch.setattr(frr.subprocess, "run", lambda argv, **kw: seen.append(argv))
    inst = frr.FrrInstance("up", frr.HOST, None, daemons=("bgpd",), listen="192.168.1.1")
    assert inst.dir == str(tmp_path / "ne-up__host")
    inst._start("bgpd")
    argv = seen[0]
    assert argv[0] == "/usr/lib/frr/bgpd" and "ip" not in argv
    assert argv[argv.index("-l") + 1] == "192.168.1.1" and "-Z" in argv and argv[argv.index("-P") + 1] == "0"
    assert "-z" not in argv and "-A" not in argv
    with pytest.raises(ValueError):
        inst._start("zebra")
    node = frr.FrrInstance("up", "w1", "ne-up_w1")
    node._start("bgpd")
    assert seen[1][:4] == ["ip", "netns", "exec", "ne-up_w1"] and "-Z" not in seen[1]


# --------------------------------------------------------------------------- the Lab document
LAB = """apiVersion: netemu.dev/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  nodes:
  - {name: m-k8s, ip: 192.168.1.10, role: control-plane}
  - {name: w1-k8s, ip: 192.168.1.101}
  routers:
%s
---
apiVersion: v1
kind: Namespace
metadata: {name: x}
"""


def test_upstream_and_host_asn_load():
    r = load_text(LAB % "  - {name: r1, ip: 192.168.1.254, asn: 64500, upstream: true}", "bgp.yaml").lab.spec.routers[0]
    assert r.upstream and r.host_asn is None
    r = load_text(LAB % "  - {name: r1, ip: 192.168.1.254, asn: 64500, upstream: true, hostASN: 65001}",
                  "bgp.yaml").lab.spec.routers[0]
    assert r.host_asn == 65001


@pytest.mark.parametrize("routers, words", [
    ("  - {name: r1, ip: 192.168.1.254, asn: 64500, hostASN: 65001}",
     "spec.routers[0].hostASN: the host's ASN is for the upstream session: set upstream: true"),
    ("  - {name: r1, ip: 192.168.1.254, asn: 64500, upstream: true, hostASN: 0}",
     "spec.routers[0].hostASN: must be between 1 and 4294967295, got 0"),
    ("  - {name: r1, ip: 192.168.1.254, asn: 1, upstream: true}\n  - {name: r2, ip: 192.168.1.253, asn: 1, upstream: true}",
     "spec.routers[1].upstream: only one router may have the host's BGP session (spec.routers[0] has it)"),
])
def test_upstream_errors(routers, words):
    with pytest.raises(SpecError) as e:
        load_text(LAB % routers, "bgp.yaml")
    assert any(words in x for x in e.value.errors), e.value.errors
