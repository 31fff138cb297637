"""MetalLB's controller: the allocator (cases of metallb's allocator_test.go) and LoadBalancer
Services in a cluster (the seed 000 walkthrough, exhaustion, asked IPs, sharing, release)."""
from __future__ import annotations

import ipaddress
import os

import pytest

from netemu.control import metallb, nodes
from netemu.control.cluster import Cluster
from netemu.control.metallb import Allocation, Allocator, Config, Pool
from netemu.spec.load import load_text
from netemu.spec.metallb import IPAddressPool
from netemu.spec.models import Deployment, LabelSelector, Lab, LabNode, Service

SEED = os.path.join(os.path.dirname(__file__), "..", "..", "topologies", "seeds", "metallb-config.yaml")


def ip(s: str):
    return ipaddress.ip_address(s)


def net(s: str):
    return ipaddress.ip_network(s)


def ports(*specs: str) -> list[tuple[str, int]]:
    return [(p.split("/")[0].upper(), int(p.split("/")[1])) for p in specs]


# --------------------------------------------------------------------------- the allocator
@pytest.fixture
def assignment() -> Allocator:
    """The pools of allocator_test.go TestAssignment (IPv4 part)."""
    return Allocator(Config([
        Pool("test", [net("1.2.3.4/31")]),
        Pool("test2", [net("1.2.4.0/24")], avoid_buggy_ips=True),
    ]))


def test_assignment_like_metallb(assignment):
    a = assignment
    assert a.assign("s1", None, [ip("1.2.3.4")], []) is None  # assign s1
    assert a.assign("s1", None, [ip("1.2.3.4")], []) is None  # idempotent
    assert a.assign("s2", None, [ip("1.2.3.4")], []) is not None  # s2 can't grab s1's IP
    assert a.assign("s2", None, [ip("1.2.3.5")], []) is None  # s2 can get the other IP
    assert a.assign("s1", None, [ip("1.2.3.5")], []) is not None  # s1 now can't grab s2's IP
    a.unassign("s1")  # s1 frees its IP
    assert a.assign("s2", None, [ip("1.2.3.4")], []) is None  # s2 can grab s1's former IP
    assert a.assign("s1", None, [ip("1.2.3.5")], []) is None  # s1 can now grab s2's former IP
    assert a.assign("s3", None, [ip("1.2.4.0")], []) == '["1.2.4.0"] is not allowed in config'  # buggy .0
    assert a.assign("s3", None, [ip("1.2.4.255")], []) == '["1.2.4.255"] is not allowed in config'  # buggy .255
    assert a.assign("s3", None, [ip("1.2.4.254")], []) is None
    assert a.assign("s9", None, [ip("9.9.9.9")], []) == '["9.9.9.9"] is not allowed in config'


def test_sharing_rules_like_metallb(assignment):
    a = assignment
    assert a.assign("s3", None, [ip("1.2.4.254")], []) is None
    # s4 takes an IP, with sharing; then changes its sharing key in place (it is alone on the IP)
    assert a.assign("s4", None, [ip("1.2.4.3")], ports("tcp/80"), "sharing", "backend") is None
    assert a.assign("s4", None, [ip("1.2.4.3")], ports("tcp/80"), "share", "backend") is None
    # s3 can't share with s4: port conflict, wrong sharing key, wrong backend key
    assert a.assign("s3", None, [ip("1.2.4.3")], ports("tcp/80"), "share", "backend") == \
        'port TCP/80 is already in use on "1.2.4.3"'
    assert a.assign("s3", None, [ip("1.2.4.3")], ports("tcp/443"), "othershare", "backend") == \
        'can\'t change sharing key for "s3", address also in use by s4'
    assert a.assign("s3", None, [ip("1.2.4.3")], ports("tcp/443"), "share", "otherbackend") is not None
    # s3 takes the same IP as s4, and can change its ports while keeping it
    assert a.assign("s3", None, [ip("1.2.4.3")], ports("tcp/443"), "share", "backend") is None
    assert a.ips("s3") == a.ips("s4") == [ip("1.2.4.3")]
    assert a.assign("s3", None, [ip("1.2.4.3")], ports("udp/53"), "share", "backend") is None
    # ... but not its sharing or backend key
    assert a.assign("s3", None, [ip("1.2.4.3")], ports("tcp/443"), "othershare", "backend") is not None
    assert a.assign("s3", None, [ip("1.2.4.3")], ports("tcp/443"), "share", "otherbackend") is not None
    # s4 takes s3's former IP
    assert a.assign("s4", None, [ip("1.2.4.254")], []) is None


def test_pool_allocation_exhaustion_release_and_sharing():
    """allocator_test.go TestPoolAllocation, IPv4: pool 'test' has 4 addresses."""
    a = Allocator(Config([
        Pool("not_this_one", [net("192.168.0.0/16")]),
        Pool("test", [net("1.2.3.4/31"), net("1.2.3.10/31")]),
    ]))
    got = {}
    for s in ("s1", "s2", "s3", "s4"):
        ips, err = a.allocate_from_pool(s, None, 4, "test", [])
        assert err is None
        got[s] = ips[0]
    assert [str(got[s]) for s in ("s1", "s2", "s3", "s4")] == ["1.2.3.4", "1.2.3.5", "1.2.3.10", "1.2.3.11"]
    for s in ("s5", "s6"):
        assert a.allocate_from_pool(s, None, 4, "test", []) == ([], "no available IPs in pool test")
    a.unassign("s1")
    assert a.allocate_from_pool("s5", None, 4, "test", []) == ([ip("1.2.3.4")], None)  # s1's former IP
    assert a.allocate_from_pool("s6", None, 4, "test", [])[1] is not None
    a.unassign("s5")  # and comes back wanting to share
    assert a.allocate_from_pool("s5", None, 4, "test", ports("tcp/80"), "share")[0] == [ip("1.2.3.4")]
    assert a.allocate_from_pool("s6", None, 4, "test", ports("tcp/443"), "share")[0] == [ip("1.2.3.4")]
    assert a.allocate_from_pool("s7", None, 4, "test", ports("tcp/443"), "share")[1] is not None  # port taken
    assert a.allocate_from_pool("s8", None, 4, "nope", [])[1] == 'unknown pool "nope"'


def test_any_pool_lowest_free_address_in_pool_order():
    """allocator_test.go TestAllocation: two pools of 2; then no more."""
    a = Allocator(Config([Pool("test1", [net("1.2.3.4/31")]), Pool("test2", [net("1.2.3.10/31")])]))
    got = [a.allocate(f"s{i}", None, 4, [])[0] for i in range(1, 5)]
    assert [str(x[0]) for x in got] == ["1.2.3.4", "1.2.3.5", "1.2.3.10", "1.2.3.11"]
    assert a.allocate("s5", None, 4, []) == ([], "no available IPs")
    a.unassign("s1")
    assert a.allocate("s5", None, 4, ports("tcp/80"), "share") == ([ip("1.2.3.4")], None)
    assert a.allocate("s6", None, 4, ports("tcp/443"), "share") == ([ip("1.2.3.4")], None)  # shares s5's
    assert a.allocate("s2", None, 4, []) == ([ip("1.2.3.5")], None)  # already has one: keeps it


def test_avoid_buggy_ips_and_auto_assign():
    a = Allocator(Config([Pool("manual", [net("10.0.0.0/30")], auto_assign=False),
                          Pool("buggy", [net("10.0.1.254/31"), net("10.0.2.0/31")], avoid_buggy_ips=True)]))
    assert a.allocate("s1", None, 4, []) == ([ip("10.0.1.254")], None)  # not from 'manual', not .255
    assert a.allocate("s2", None, 4, []) == ([ip("10.0.2.1")], None)  # not .0
    assert a.allocate("s3", None, 4, []) == ([], "no available IPs")
    assert a.allocate_from_pool("s3", None, 4, "manual", []) == ([ip("10.0.0.0")], None)  # asked for: fine


def test_service_allocation_pins_pools_by_priority():
    sel = LabelSelector.model_validate({"matchLabels": {"team": "a"}})
    a = Allocator(Config([
        Pool("everyone", [net("10.0.0.0/30")]),
        Pool("ns-low", [net("10.1.0.0/30")], allocation=Allocation(20, {"team-a"}, [])),
        Pool("ns-high", [net("10.2.0.0/30")], allocation=Allocation(10, {"team-a"}, [])),
        Pool("labelled", [net("10.3.0.0/30")], allocation=Allocation(0, set(), [sel])),
    ]))

    def svc(ns: str, labels=None) -> Service:
        return Service.model_validate({"metadata": {"name": "x", "namespace": ns, "labels": labels}})

    assert a.allocate("a1", svc("team-a"), 4, [])[0] == [ip("10.2.0.0")]  # priority 10 first
    assert a.allocate("b1", svc("team-b", {"team": "a"}), 4, [])[0] == [ip("10.3.0.0")]
    assert a.allocate("c1", svc("other"), 4, [])[0] == [ip("10.0.0.0")]  # pinned pools are not for others
    assert a.assign("c2", svc("other"), [ip("10.2.0.1")], []) == "pool ns-high not compatible for ip assignment"


# --------------------------------------------------------------------------- in a cluster
def make_cluster(seed: int = 1) -> Cluster:
    lab = Lab()
    lab.metadata.name = "unit"
    lab.spec.seed = seed
    lab.spec.nodes = [LabNode(name="m-k8s", ip="192.168.1.10", role="control-plane")] + [
        LabNode(name=f"w{i}-k8s", ip=f"192.168.1.10{i}") for i in (1, 2, 3)]
    c = Cluster(lab, clock=lambda: 1_700_000_000.0)
    c.bootstrap()
    for n in c.store.list("Node"):
        nodes.set_ready(c, n, True, "KubeletReady", "ok")
    return c


def seed_config():
    with open(SEED, encoding="utf-8") as f:
        return load_text(f.read(), "metallb-config.yaml").objects[0]


def deployment(name="nginx", replicas=3) -> Deployment:
    lb = {"app": name}
    return Deployment.model_validate({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": lb},
                 "template": {"metadata": {"labels": lb},
                              "spec": {"containers": [{"name": "c", "image": "nginx",
                                                       "ports": [{"containerPort": 80}]}]}}}})


def lb(name: str, port: int = 80, annotations=None, selector=None, **spec) -> Service:
    return Service.model_validate({
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"type": "LoadBalancer", "selector": selector or {"app": "nginx"},
                 "ports": [{"port": port, "targetPort": 80, "protocol": "TCP"}], **spec}})


def run(c: Cluster) -> None:
    """The controllers, then MetalLB's (as the lead will wire it into CONTROLLERS)."""
    for _ in range(3):
        c.reconcile()
        metallb.reconcile(c)


def external_ip(c: Cluster, name: str) -> str | None:
    svc = c.store.get("Service", "default", name)
    ing = svc.status.load_balancer.ingress
    return ing[0].ip if ing else None


def events(c: Cluster, name: str) -> list[tuple[str, str, str]]:
    return [(e.type, e.reason, e.message) for e in c.events_for("Service", "default", name)]


def test_seed_000_walkthrough_first_address_of_the_pool():
    c = make_cluster()
    c.apply([seed_config(), deployment()])
    c.apply([lb("nginx-lb")])  # kubectl expose deployment nginx --type=LoadBalancer --name=nginx-lb --port=80
    run(c)
    assert external_ip(c, "nginx-lb") == "192.168.1.11"
    svc = c.store.get("Service", "default", "nginx-lb")
    assert svc.metadata.annotations == {"metallb.io/ip-allocated-from-pool": "nginx-ip-range"}
    assert svc.status.load_balancer.dump() == {"ingress": [{"ip": "192.168.1.11", "ipMode": "VIP"}]}
    assert events(c, "nginx-lb") == [("Normal", "IPAllocated", 'Assigned IP ["192.168.1.11"]')]
    assert {e.source for e in c.events_for("Service", "default", "nginx-lb")} == {"metallb-controller"}


def test_exhaustion_leaves_pending_with_an_event_until_an_address_is_released():
    c = make_cluster()
    c.apply([seed_config(), deployment()])
    for i in range(4):
        c.apply([lb(f"s{i}")])
    run(c)
    assert [external_ip(c, f"s{i}") for i in range(4)] == ["192.168.1.11", "192.168.1.12", "192.168.1.13", None]
    assert events(c, "s3") == [("Warning", "AllocationFailed", 'Failed to allocate IP for "default/s3": no available IPs')]
    run(c)
    assert [e.count for e in c.events_for("Service", "default", "s3")] == [1]  # not repeated every pass
    c.delete("Service", "default", "s1")  # release on delete
    run(c)
    assert external_ip(c, "s3") == "192.168.1.12"
    assert events(c, "s3")[-1] == ("Normal", "IPAllocated", 'Assigned IP ["192.168.1.12"]')


def test_type_change_releases_the_address():
    c = make_cluster()
    c.apply([seed_config(), deployment()])
    c.apply([lb("a")])
    run(c)
    assert external_ip(c, "a") == "192.168.1.11"
    svc = c.store.get("Service", "default", "a").model_copy(deep=True)
    svc.spec.type = "ClusterIP"
    for p in svc.spec.ports:
        p.node_port = None
    c.apply([svc])
    run(c)
    after = c.store.get("Service", "default", "a")
    assert after.status.load_balancer.ingress is None and not after.metadata.annotations
    c.apply([lb("b")])
    run(c)
    assert external_ip(c, "b") == "192.168.1.11"


def test_asked_addresses():
    c = make_cluster()
    c.apply([seed_config(), deployment()])
    c.apply([lb("by-spec", loadBalancerIP="192.168.1.13"),
             lb("by-annotation", annotations={"metallb.io/loadBalancerIPs": "192.168.1.12"}),
             lb("taken", annotations={"metallb.universe.tf/loadBalancerIPs": "192.168.1.13"}),
             lb("outside", loadBalancerIP="192.168.1.50"),
             lb("auto")])
    run(c)
    assert external_ip(c, "by-spec") == "192.168.1.13"
    assert external_ip(c, "by-annotation") == "192.168.1.12"
    assert external_ip(c, "auto") == "192.168.1.11"
    assert external_ip(c, "taken") is None and external_ip(c, "outside") is None
    assert events(c, "taken") == [("Warning", "AllocationFailed", 'Failed to allocate IP for "default/taken": '
                                   'can\'t change sharing key for "default/taken", address also in use by default/by-spec')]
    assert events(c, "outside") == [("Warning", "AllocationFailed", 'Failed to allocate IP for "default/outside": '
                                     '["192.168.1.50"] is not allowed in config')]
    # asking for another address moves the Service there
    svc = c.store.get("Service", "default", "auto").model_copy(deep=True)
    svc.metadata.annotations = {"metallb.io/loadBalancerIPs": "192.168.1.11"}
    c.apply([svc])
    run(c)
    assert external_ip(c, "auto") == "192.168.1.11"
    c.delete("Service", "default", "by-spec")
    run(c)
    assert external_ip(c, "taken") == "192.168.1.13"
    assert ("Warning", "deprecatedAnnotation", "Service uses deprecated annotation metallb.universe.tf/loadBalancerIPs") \
        in events(c, "taken")


def test_sharing_with_allow_shared_ip():
    c = make_cluster()
    c.apply([seed_config(), deployment()])
    share = {"metallb.universe.tf/allow-shared-ip": "web"}
    c.apply([lb("http", 80, share), lb("https", 443, share), lb("http-again", 80, share), lb("alone", 443)])
    run(c)
    assert external_ip(c, "http") == external_ip(c, "https") == "192.168.1.11"
    assert external_ip(c, "http-again") == "192.168.1.12"  # port 80 is taken on .11
    assert external_ip(c, "alone") == "192.168.1.13"  # no sharing key: an address of its own
    # externalTrafficPolicy Local shares only with the same selector (backend key)
    c.apply([lb("local", 8080, {"metallb.io/allow-shared-ip": "web"}, selector={"app": "other"},
                externalTrafficPolicy="Local", loadBalancerIP="192.168.1.11")])
    run(c)
    assert external_ip(c, "local") is None


def test_address_pool_annotation_and_manual_pools():
    c = make_cluster()
    manual = IPAddressPool.model_validate({"metadata": {"name": "manual", "namespace": "metallb-system"},
                                           "spec": {"addresses": ["192.168.2.255-192.168.3.1"], "autoAssign": False,
                                                    "avoidBuggyIPs": True}})
    c.store.create(manual)
    c.apply([seed_config(), deployment()])
    c.apply([lb("pinned", annotations={"metallb.universe.tf/address-pool": "manual"}), lb("auto"),
             lb("nowhere", annotations={"metallb.io/address-pool": "missing"})])
    run(c)
    assert external_ip(c, "pinned") == "192.168.3.1"  # not .2.255 nor .3.0 (avoidBuggyIPs)
    assert external_ip(c, "auto") == "192.168.1.11"
    assert events(c, "nowhere") == [("Warning", "AllocationFailed",
                                     'Failed to allocate IP for "default/nowhere": unknown pool "missing"')]


def test_load_balancer_class_and_no_configuration_are_left_alone():
    c = make_cluster()
    c.apply([deployment(), lb("no-metallb")])
    run(c)
    assert external_ip(c, "no-metallb") is None and events(c, "no-metallb") == []  # MetalLB is not installed
    c.apply([seed_config(), lb("other", loadBalancerClass="example.com/lb")])
    run(c)
    assert external_ip(c, "other") is None and events(c, "other") == []
    assert external_ip(c, "no-metallb") == "192.168.1.11"
    c.delete("ConfigMap", "metallb-system", "config")  # the configuration goes: so do the addresses
    run(c)
    assert external_ip(c, "no-metallb") is None


def test_deterministic():
    def build():
        c = make_cluster(seed=7)
        c.apply([seed_config(), deployment()])
        for i in range(5):
            c.apply([lb(f"s{i}", annotations={"metallb.io/allow-shared-ip": "k"} if i % 2 else None, port=80 + i)])
        run(c)
        c.delete("Service", "default", "s0")
        run(c)
        return [(s.metadata.name, external_ip(c, s.metadata.name)) for s in c.store.list("Service")]

    assert build() == build()


def test_restart_keeps_addresses():
    """The allocator is rebuilt from the Services' status: a new controller keeps every address."""
    c = make_cluster()
    c.apply([seed_config(), deployment()])
    c.apply([lb("a"), lb("b"), lb("c")])
    run(c)
    c.delete("Service", "default", "a")
    run(c)
    before = {s.metadata.name: external_ip(c, s.metadata.name) for s in c.store.list("Service")}
    c.__dict__.pop("_metallb_controller", None)  # a fresh controller (daemon restart)
    c.apply([lb("d")])
    run(c)
    after = {s.metadata.name: external_ip(c, s.metadata.name) for s in c.store.list("Service")}
    assert {k: after[k] for k in before} == before
    assert after["d"] == "192.168.1.11"  # the address 'a' left
