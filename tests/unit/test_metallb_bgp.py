"""MetalLB's BGP mode, the pure part: the kinds (BGPPeer, BGPAdvertisement, BFDProfile, Community) and the
legacy ConfigMap's BGP sections, MetalLB's validation messages, and what each node announces to each peer."""
from __future__ import annotations

import pytest

from test_metallb_l2 import make_cluster

from netemu.control import metallb, metallb_bgp
from netemu.spec import metallb_bgp as spec_bgp
from netemu.spec.errors import SpecError
from netemu.spec.load import load_text
from netemu.spec.metallb import BGPAdvertisement, BGPPeer, parse_legacy_config
from netemu.spec.models import EndpointSlice, Service

WORKERS = ["w1-k8s", "w2-k8s", "w3-k8s"]
ALL = ["m-k8s", *WORKERS]

POOL = """apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: %(name)s, namespace: metallb-system%(labels)s}
spec: {addresses: [%(addresses)s]}
"""


def pool(name="bgp-pool", addresses="10.10.10.0/24", labels=""):
    return POOL % dict(name=name, addresses=addresses, labels=f", labels: {{{labels}}}" if labels else "")


def peer(name="r1", my=64512, asn=64500, address="192.168.1.1", **spec):
    extra = "".join(f"\n  {k}: {v}" for k, v in spec.items())
    return (f"apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: {name}, namespace: metallb-system}}\n"
            f"spec:\n  myASN: {my}\n  peerASN: {asn}\n  peerAddress: {address}{extra}\n")


def adv(name="adv", **spec):
    extra = "".join(f"\n  {k}: {v}" for k, v in spec.items()) or " {}"
    return f"apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: {name}, namespace: metallb-system}}\nspec:{extra}\n"


def community(**aliases):
    items = ", ".join(f'{{name: {k}, value: "{v}"}}' for k, v in aliases.items())
    return (f"apiVersion: metallb.io/v1beta1\nkind: Community\nmetadata: {{name: communities, namespace: metallb-system}}\n"
            f"spec: {{communities: [{items}]}}\n")


def bfd(name="fast", **spec):
    extra = "".join(f"\n  {k}: {v}" for k, v in spec.items()) or " {}"
    return f"apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {{name: {name}, namespace: metallb-system}}\nspec:{extra}\n"


def objects(*docs):
    return load_text("---\n".join(docs), "bgp.yaml").objects


def errors_of(*docs) -> list[str]:
    with pytest.raises(SpecError) as e:
        objects(*docs)
    return e.value.errors


def cluster(*docs, labels=None):
    c = make_cluster()
    for name, extra in (labels or {}).items():
        node = c.store.find("Node", "", name)
        node.metadata.labels.update(extra)
        c.store.update(node)
    c.apply(objects(*docs))
    return c


def svc(name="web", ip="10.10.10.1", policy="Cluster", app="web"):
    return Service.model_validate({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer", "selector": {"app": app}, "externalTrafficPolicy": policy,
                 "clusterIP": "10.96.0.50", "ports": [{"port": 80, "protocol": "TCP"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": i} for i in ip.split(",")]}}})


def slice_(service="web", endpoints=(("172.16.1.5", "w1-k8s", True),)):
    return EndpointSlice.model_validate({
        "metadata": {"name": f"{service}-x", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "endpoints": [{"addresses": [a], "nodeName": n, "conditions": {"ready": r}} for a, n, r in endpoints]})


def decide(c, services, slices, alive=None):
    return metallb_bgp.decide(services, slices, c.store.list("Node"), metallb.load_config(c), alive)


EVERYWHERE = (("172.16.1.5", "w1-k8s", True), ("172.16.2.5", "w2-k8s", True), ("172.16.3.5", "w3-k8s", True))


# --------------------------------------------------------------------------- the kinds
def test_kinds_load_with_the_crds_defaults_and_are_served_by_the_registry():
    from netemu.spec import registry

    p, a, b, co = objects(peer(holdTime="9s", bfdProfile="fast"), adv(communities='["64500:100"]'), bfd(),
                          community(vip="64500:1"))
    assert isinstance(p, BGPPeer) and p.api_version == "metallb.io/v1beta2"
    assert p.dump()["spec"] == {"myASN": 64512, "peerASN": 64500, "peerAddress": "192.168.1.1", "peerPort": 179,
                                "holdTime": "9s", "bfdProfile": "fast", "disableMP": False}
    assert isinstance(a, BGPAdvertisement)
    assert a.dump()["spec"] == {"aggregationLength": 32, "aggregationLengthV6": 128, "communities": ["64500:100"]}
    assert b.kind == "BFDProfile" and co.spec.communities[0].value == "64500:1"
    for kind in ("BGPPeer", "BGPAdvertisement", "BFDProfile", "Community"):
        res = registry.by_kind(kind)
        assert res.acted and "FRR" in res.note
    assert registry.lookup("bgppeers").version == "v1beta2"


def test_bgp_objects_load_without_a_warning_now_that_they_are_announced():
    spec = load_text(peer(), "bgp.yaml")
    assert not any("BGPPeer/r1" in w for w in spec.warnings), spec.warnings


def test_peer_at_v1beta1_is_refused_with_the_served_version():
    errs = errors_of(peer().replace("v1beta2", "v1beta1"))
    assert any("metallb.io/v1beta2" in e for e in errs)


@pytest.mark.parametrize("doc, path, message", [
    (peer(my=0), "spec.myASN", "missing local ASN"),
    (peer(asn=0), "spec.peerASN", "missing peer ASN and dynamicASN"),
    (peer(dynamicASN="internal"), "spec.dynamicASN", "both peer ASN and dynamicASN specified"),
    (peer(asn=0, dynamicASN="sideways"), "spec.dynamicASN", "invalid dynamicASN sideways"),
    (peer(asn=64512, ebgpMultiHop="true"), "spec.ebgpMultiHop", "invalid ebgp-multihop parameter set for an ibgp peer"),
    (peer(address="router"), "spec.peerAddress", 'invalid BGPPeer address "router"'),
    (peer(holdTime="1s"), "spec.holdTime", 'invalid BGPPeer timers: invalid hold time "1s": must be 0 or >=3s'),
    (peer(holdTime="9s", keepaliveTime="10s"), "spec.keepaliveTime",
     'invalid keepaliveTime "10s", must be lower than holdTime "9s"'),
    (peer(keepaliveTime="0.5s"), "spec.holdTime", "must be 0 or >=3s"),
    (peer(holdTime="ninety"), "spec.holdTime", 'time: invalid duration "ninety"'),
    (peer(connectTime="0s"), "spec.connectTime", "connect time should be between 1 seconds to 65535"),
    (peer(connectTime="1500ms"), "spec.connectTime", "connect time should contain a whole number of seconds"),
    (peer(routerID="me"), "spec.routerID", 'invalid router ID "me"'),
    (peer(sourceAddress="eth0"), "spec.sourceAddress", 'invalid source IP "eth0"'),
    (peer(peerPort=20000), "spec.peerPort", "must be in 0-16384"),
    (peer(my=4294967296), "spec.myASN", "must be in 0-4294967295"),
    (peer(password="x", passwordSecret="{name: s}"), "spec.passwordSecret",
     "can not have both password and secret ref set in peer config"),
    (peer(nodeSelectors="[{matchLabels: {a: b}}, {matchLabels: {a: b}}]"), "spec.nodeSelectors[1]",
     "duplicate definition of nodeSelectors"),
    (adv(aggregationLength=33), "spec.aggregationLength", "invalid aggregation length 33 for IPv4"),
    (adv(aggregationLength=0), "spec.aggregationLength", "greater than or equal to 1"),
    (adv(aggregationLengthV6=129), "spec.aggregationLengthV6", "invalid aggregation length 129 for IPv6"),
    (adv(communities='["1:2", "1:2"]'), "spec.communities[1]", "duplicate definition of community '1:2'"),
    (adv(communities='["70000:1"]'), "spec.communities[0]", 'invalid community "70000:1" in BGP advertisement'),
    (adv(communities='["big:1:2:3"]'), "spec.communities[0]", "invalid marker for large community"),
    (adv(peers="[r1, r1]"), "spec.peers[1]", "duplicate definition of peers 'r1'"),
    (adv(ipAddressPools="[a, a]"), "spec.ipAddressPools[1]", "duplicate definition of ipAddressPools 'a'"),
    (bfd(detectMultiplier=1), "spec.detectMultiplier",
     "invalid detect multiplier value: invalid value 1, must be in 2-255 range"),
    (bfd(receiveInterval=5), "spec.receiveInterval", "invalid receive interval value"),
    (bfd(transmitInterval=60001), "spec.transmitInterval", "invalid transmit interval value"),
    (bfd(echoInterval=9), "spec.echoInterval", "invalid echo interval value"),
    (bfd(minimumTtl=255), "spec.minimumTtl", "invalid minimum ttl value"),
    (community(a="1:2:3"), "spec.communities[0].value", 'parsing community "a": invalid community format: 1:2:3'),
])
def test_one_object_is_refused_with_metallbs_message(doc, path, message):
    errs = errors_of(doc)
    assert any(f"{path}: " in e and message in e for e in errs), errs


def test_good_objects_pass_and_an_alias_is_left_for_the_whole_config():
    (a,) = objects(adv(communities='["vip", "large:64500:1:2", "65535:65282"]'))
    assert spec_bgp.advertisement_problems(a) == []


def test_community_values_and_their_order():
    std, large = spec_bgp.parse_community("64500:100"), spec_bgp.parse_community("large:64500:1:2")
    assert (str(std), str(large), std.large, large.large) == ("64500:100", "64500:1:2", False, True)
    # MetalLB compares a standard community as the large <its 32 bits>:0:0
    assert sorted([large, std]) == [large, std]  # 64500 < 64500 << 16 | 100
    assert sorted([spec_bgp.parse_community("large:4227072100:0:1"), std])[0] == std
    with pytest.raises(spec_bgp.CommunityError) as e:
        spec_bgp.parse_community("vip")
    assert e.value.is_format


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("1m30s", 90), ("300ms", 0.3), ("0", 0), ("1h", 3600)])
def test_go_durations(text, seconds):
    assert spec_bgp.parse_duration(text) == pytest.approx(seconds)


def test_timers_derive_the_missing_one():
    assert spec_bgp.timers("9s", None) == (9, 3)
    assert spec_bgp.timers(None, "2s") == (6, 2)
    assert spec_bgp.timers("0s", None) == (0, 0)
    assert spec_bgp.timers(None, None) == (None, None)


# --------------------------------------------------------------------------- the whole configuration
def warnings_of(*docs, labels=None) -> list[str]:
    c = cluster(*docs, labels=labels)
    metallb.reconcile(c)
    return metallb.config_warnings(c)


@pytest.mark.parametrize("docs, message", [
    ((pool(), peer(bfdProfile="slow")), "BGPPeer r1: spec.bfdProfile: peer r1 referencing non existing bfd profile slow"),
    ((pool(), peer(), peer(name="r2")), "BGPPeer r2: peer r2 already exists"),
    ((pool(), peer(), peer(name="r2", holdTime="9s")),
     "peer 192.168.1.1 already exists, FRR mode doesn't support duplicate BGPPeers"),
    ((pool(), peer(), peer(name="r2", address="192.168.1.2", my=64513)),
     "has myAsn different from 192.168.1.1, in FRR mode all myAsn must be equal for the same VRF"),
    ((pool(), peer(), peer(name="r2", address="192.168.1.2", routerID="1.1.1.1")),
     "in FRR mode all RouterID must be equal"),
    ((pool(), peer(), adv(communities="[vip]")),
     'BGPAdvertisement adv: spec.communities[0]: invalid community "vip" in BGP advertisement'),
    ((pool(), peer(), adv(aggregationLength=16)),
     "invalid aggregation length 16: prefix 24 in this pool is more specific than the aggregation length for "
     "addresses 10.10.10.0/24"),
    ((pool(addresses="10.10.10.1-10.10.10.3"), peer(), adv(aggregationLength=30)),
     "invalid aggregation length 30: prefix 31 in this pool"),  # a range: its widest CIDR counts
    ((pool(), peer(), adv(localPref=100), adv(name="adv2", localPref=200, communities='["1:1"]')),
     "invalid local preference 200: local preferernce 100 was already set for the same type of BGP update"),
    ((pool(), peer(), adv(), adv(name="adv2")),
     "duplicate definition of bgpadvertisements. advertisement 1 and 2 are equal"),
    ((pool(addresses="fc00::/120"), peer(bfdProfile="echo"), bfd(name="echo", echoMode="true"), adv()),
     "pool bgp-pool has bgpadvertisement adv which references peer r1 which has bfd echo enabled"),
])
def test_the_whole_configuration_is_checked_and_told_as_warnings(docs, message):
    warnings = warnings_of(*docs)
    assert any(message in w for w in warnings), warnings


def test_local_preferences_may_differ_for_other_peers_nodes_or_aggregation():
    assert not warnings_of(pool(), peer(), peer(name="r2", address="192.168.1.2"),
                           adv(localPref=100, peers="[r1]"), adv(name="adv2", localPref=200, peers="[r2]"))
    assert not warnings_of(pool(), peer(), adv(localPref=100, aggregationLength=32, aggregationLengthV6=128),
                           adv(name="adv2", localPref=200, aggregationLength=24, aggregationLengthV6=120))
    assert not warnings_of(pool(), peer(), adv(localPref=100, nodeSelectors="[{matchLabels: {rack: a}}]"),
                           adv(name="adv2", localPref=200, nodeSelectors="[{matchLabels: {rack: b}}]"),
                           labels={"w1-k8s": {"rack": "a"}, "w2-k8s": {"rack": "b"}})


def test_a_refused_configuration_announces_nothing():
    c = cluster(pool(), peer(bfdProfile="missing"), adv())
    config = metallb.load_config(c)
    assert config.bgp.problems and not config.bgp.peers
    assert decide(c, [svc()], [slice_(endpoints=EVERYWHERE)]).routes == {}


# --------------------------------------------------------------------------- the legacy ConfigMap
LEGACY = """peers:
- peer-address: 192.168.1.1
  peer-asn: 64500
  my-asn: 64512
  hold-time: 9s
  password: secret
  node-selectors:
  - match-labels:
      rack: a
- peer-address: 192.168.1.2
  peer-asn: 64512
  my-asn: 64512
bfd-profiles:
- name: fast
  receive-interval: 300
  detect-multiplier: 3
bgp-communities:
  no-export: 65535:65281
address-pools:
- name: l2
  protocol: layer2
  addresses: [192.168.1.11-192.168.1.13]
- name: routed
  protocol: bgp
  addresses: [10.10.10.0/24]
  bgp-advertisements:
  - aggregation-length: 32
    localpref: 100
    communities: [no-export, 64500:7]
  - aggregation-length: 24
    aggregation-length-v6: 120
- name: plain
  protocol: bgp
  addresses: [10.20.0.0/24]
"""


def test_legacy_bgp_sections_become_metallbs_kinds_as_its_converter_names_them():
    cfg = parse_legacy_config(LEGACY)
    assert not cfg.errors, cfg.errors
    assert [p.metadata.name for p in cfg.pools] == ["l2"] and [p.metadata.name for p in cfg.bgp_pools] == ["routed",
                                                                                                            "plain"]
    bgp = cfg.bgp
    assert [(p.metadata.name, p.spec.peer_address, p.spec.hold_time) for p in bgp.peers] == [
        ("peer1", "192.168.1.1", "9s"), ("peer2", "192.168.1.2", "90s")]
    assert bgp.peers[0].spec.node_selectors[0].match_labels == {"rack": "a"} and bgp.peers[0].spec.password == "secret"
    assert [(a.metadata.name, a.spec.ip_address_pools, a.spec.aggregation_length, a.spec.local_pref,
             a.spec.communities) for a in bgp.advertisements] == [
        ("bgpadvertisement1", ["routed"], 32, 100, ["no-export", "64500:7"]),
        ("bgpadvertisement2", ["routed"], 24, None, None),  # its own LOCAL_PREF (none): another update
        ("bgpadvertisement3", ["plain"], 32, None, None)]  # a bgp pool without any: the defaults
    assert bgp.communities[0].metadata.name == "communities"
    assert [(x.name, x.value) for x in bgp.communities[0].spec.communities] == [("no-export", "65535:65281")]
    assert bgp.bfd_profiles[0].spec.receive_interval == 300 and bgp.bfd_profiles[0].spec.echo_mode is False
    assert not cfg.warnings, cfg.warnings  # BGP mode runs: nothing of it is "checked but not emulated"


def test_flattened_legacy_bgp_config_is_reindented():
    flat = "\n".join(line.strip() for line in LEGACY.splitlines())
    cfg = parse_legacy_config(flat)
    assert cfg.recovered and not cfg.errors, cfg.errors
    assert [p.spec.peer_address for p in cfg.bgp.peers] == ["192.168.1.1", "192.168.1.2"]
    assert cfg.bgp.advertisements[0].spec.communities == ["no-export", "64500:7"]


@pytest.mark.parametrize("text, path, message", [
    ("peers:\n- peer-address: 10.0.0.1\n  peer-asn: 64500\n", "peers[0].my-asn", "missing local ASN"),
    ("peers:\n- peer-address: 10.0.0.1\n  my-asn: 64500\n", "peers[0].peer-asn", "missing peer ASN"),
    ("peers:\n- peer-address: 10.0.0.1\n  my-asn: 1\n  peer-asn: 2\n  hold-time: 2s\n", "peers[0].hold-time",
     "must be 0 or >=3s"),
    ("peers:\n- peer-address: 10.0.0.1\n  my-asn: 1\n  peer-asn: 2\n  bfd-profile: nope\n", "peers[0].bfd-profile",
     "referencing non existing bfd profile nope"),
    ("peers:\n- peer-address: 10.0.0.1\n  my-asn: 1\n  peer-asn: 1\n  ebgp-multihop: true\n",
     "peers[0].ebgp-multihop", "invalid ebgp-multihop parameter set for an ibgp peer"),
    ("peers:\n- peer-address: 10.0.0.1\n  my-asn: 1\n  peer-asn: 2\n- peer-address: 10.0.0.1\n  my-asn: 1\n"
     "  peer-asn: 2\n", "peers[1]", "peer peer2 already exists"),
    ("peers:\n- peer-address: 10.0.0.1\n  my-asn: one\n  peer-asn: 2\n", "peers[0].my-asn", "must be an integer"),
    ("address-pools:\n- name: a\n  protocol: bgp\n  addresses: [10.0.0.0/24]\n  bgp-advertisements:\n"
     "  - aggregation-length: 8\n", "address-pools[0].bgp-advertisements[0].aggregation-length",
     "invalid aggregation length 8"),
    ("address-pools:\n- name: a\n  protocol: bgp\n  addresses: [10.0.0.0/24]\n  bgp-advertisements:\n"
     "  - communities: [nope]\n", "address-pools[0].bgp-advertisements[0].communities[0]",
     'invalid community "nope"'),
    ("bgp-communities:\n  bad: 1:2:3\n", "bgp-communities.bad", 'parsing community "bad"'),
    ("bfd-profiles:\n- name: b\n  detect-multiplier: 300\n", "bfd-profiles[0].detect-multiplier",
     "invalid detect multiplier value"),
    ("address-pools:\n- name: a\n  protocol: layer2\n  addresses: [10.0.0.0/24]\n  bgp-advertisements:\n"
     "  - localpref: 1\n", "address-pools[0].bgp-advertisements", "cannot have bgp-advertisements"),
])
def test_legacy_bgp_errors_name_the_configmaps_field(text, path, message):
    cfg = parse_legacy_config(text)
    assert any(e.path == path and message in e.text for e in cfg.errors), cfg.errors


def test_a_legacy_community_is_text_as_go_reads_it_not_a_base_60_number():
    cfg = parse_legacy_config("bgp-communities:\n  a: 64500:1\naddress-pools:\n- name: p\n  protocol: bgp\n"
                              "  addresses: [10.0.0.0/24]\n  bgp-advertisements:\n  - communities: [1:2]\n")
    assert not cfg.errors
    assert cfg.bgp.communities[0].spec.communities[0].value == "64500:1"
    assert cfg.bgp.advertisements[0].spec.communities == ["1:2"]


def test_legacy_bgp_pools_give_addresses_and_are_decided_on():
    c = cluster("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config, namespace: metallb-system}\n"
                "data:\n  config: |\n" + "".join(f"    {line}\n" for line in LEGACY.splitlines()),
                labels={"w1-k8s": {"rack": "a"}})
    config = metallb.load_config(c)
    assert [p.name for p in config.pools] == ["l2", "routed", "plain"]
    routed = config.pool_for([__import__("ipaddress").ip_address("10.10.10.1")])
    assert routed.name == "routed" and not routed.l2 and routed.bgp  # announced over BGP only
    result = decide(c, [svc()], [slice_(endpoints=EVERYWHERE)])
    # peer1 (eBGP, rack a only) on w1; peer2 (iBGP) everywhere
    assert result.routes["w1-k8s"]["peer1"] == [
        metallb_bgp.Route("10.10.10.0/24", None, (), (), ("default/web",), ("bgpadvertisement2",)),
        metallb_bgp.Route("10.10.10.1/32", None, ("64500:7", "65535:65281"), (), ("default/web",),
                          ("bgpadvertisement1",))]
    assert result.routes["w2-k8s"]["peer2"][1].local_pref == 100  # iBGP: LOCAL_PREF is sent
    assert "peer1" not in result.routes["w2-k8s"]


# --------------------------------------------------------------------------- decisions
BASIC = (pool(), peer(), adv())


def test_cluster_policy_every_ready_node_announces_a_host_route_to_each_peer():
    c = cluster(*BASIC)
    result = decide(c, [svc()], [slice_()])
    assert sorted(result.routes) == ALL  # the control plane's exclude label is dropped by make_cluster
    for node in ALL:
        assert result.routes_of(node, "r1") == [metallb_bgp.Route("10.10.10.1/32", None, (), (), ("default/web",),
                                                                  ("adv",))]
    assert result.status("default", "web") == [(n, ("r1",)) for n in ALL]


def test_no_endpoint_no_route_and_local_policy_only_nodes_with_a_ready_endpoint():
    c = cluster(*BASIC)
    none = decide(c, [svc()], [slice_(endpoints=(("172.16.1.5", "w1-k8s", False),))])
    assert none.routes == {} and set(none.services[("default", "web")].reasons.values()) == {"noEndpoints"}
    local = decide(c, [svc(policy="Local")], [slice_(endpoints=(("172.16.1.5", "w1-k8s", True),
                                                                ("172.16.2.5", "w2-k8s", False)))])
    assert sorted(local.routes) == ["w1-k8s"]
    assert local.services[("default", "web")].reasons == {"m-k8s": "noLocalEndpoints", "w2-k8s": "noLocalEndpoints",
                                                          "w3-k8s": "noLocalEndpoints"}


def test_an_address_with_an_entry_that_cannot_serve_is_not_healthy():
    eps = slice_(endpoints=(("172.16.1.5", "w1-k8s", True), ("172.16.1.5", "w1-k8s", False)))
    assert not metallb_bgp.has_healthy_endpoint([eps])
    assert metallb_bgp.has_healthy_endpoint([slice_()], "w1-k8s") and not metallb_bgp.has_healthy_endpoint(
        [slice_()], "w2-k8s")


def test_a_dead_speaker_a_not_ready_node_or_an_excluded_node_announce_nothing():
    c = cluster(*BASIC, labels={"w3-k8s": {"node.kubernetes.io/exclude-from-external-load-balancers": ""}})
    alive = {n: n != "w2-k8s" for n in ALL}
    result = decide(c, [svc()], [slice_(endpoints=EVERYWHERE)], alive)
    assert sorted(result.routes) == ["m-k8s", "w1-k8s"]
    reasons = result.services[("default", "web")].reasons
    assert reasons == {"w2-k8s": "nodeNotAvailable", "w3-k8s": "nodeLabeledExcludeBalancers"}
    node = c.store.find("Node", "", "w1-k8s")
    for cond in node.status.conditions:
        if cond.type == "Ready":
            cond.status = "False"
    assert "w1-k8s" not in decide(c, [svc()], [slice_(endpoints=EVERYWHERE)]).routes  # default: Ready nodes


def test_peer_and_advertisement_node_selectors():
    c = cluster(pool(), peer(nodeSelectors="[{matchLabels: {rack: a}}]"),
                peer(name="r2", address="192.168.1.2", nodeSelectors="[{matchLabels: {rack: b}}]"),
                adv(nodeSelectors="[{matchExpressions: [{key: rack, operator: Exists}]}]"),
                labels={"w1-k8s": {"rack": "a"}, "w2-k8s": {"rack": "b"}, "w3-k8s": {"rack": "a"}})
    result = decide(c, [svc()], [slice_(endpoints=EVERYWHERE)])
    assert {n: sorted(p) for n, p in result.routes.items()} == {"w1-k8s": ["r1"], "w2-k8s": ["r2"], "w3-k8s": ["r1"]}
    assert result.services[("default", "web")].reasons == {"m-k8s": "notOwner"}


def test_advertisement_peers_and_per_peer_local_preference_only_for_ibgp():
    c = cluster(pool(), peer(name="ebgp"), peer(name="ibgp", address="192.168.1.2", asn=64512),
                peer(name="dyn", address="192.168.1.3", asn=0, dynamicASN="internal"),
                adv(localPref=150, communities='["64500:1", "large:64500:0:9"]'),
                adv(name="only-ebgp", aggregationLength=24, aggregationLengthV6=120, peers="[ebgp]",
                    localPref=150))
    result = decide(c, [svc()], [slice_(endpoints=EVERYWHERE)])
    ebgp, ibgp, dyn = (result.routes_of("w1-k8s", p) for p in ("ebgp", "ibgp", "dyn"))
    assert [(r.prefix, r.local_pref) for r in ebgp] == [("10.10.10.0/24", None), ("10.10.10.1/32", None)]
    assert [(r.prefix, r.local_pref, r.communities, r.large_communities) for r in ibgp] == [
        ("10.10.10.1/32", 150, ("64500:1",), ("64500:0:9",))]
    assert [(r.prefix, r.local_pref) for r in dyn] == [("10.10.10.1/32", 150)]


def test_pools_by_name_and_selector_and_l2_beside_bgp():
    c = cluster(pool(name="l2", addresses="192.168.1.11-192.168.1.13"),
                pool(name="red", addresses="10.1.0.0/24", labels="color: red"),
                pool(name="blue", addresses="10.2.0.0/24"), peer(),
                adv(name="by-name", ipAddressPools="[blue]", communities='["1:1"]'),
                adv(name="by-label", ipAddressPoolSelectors="[{matchLabels: {color: red}}]", communities='["2:2"]'),
                "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2, namespace: metallb-system}\n"
                "spec: {ipAddressPools: [l2, blue]}\n")
    services = [svc("a", "10.1.0.5", app="a"), svc("b", "10.2.0.5", app="b"), svc("c", "192.168.1.11", app="c")]
    slices = [slice_(s, EVERYWHERE) for s in "abc"]
    result = decide(c, services, slices)
    assert [(r.prefix, r.communities) for r in result.routes_of("w1-k8s", "r1")] == [
        ("10.1.0.5/32", ("2:2",)), ("10.2.0.5/32", ("1:1",))]
    assert ("default", "c") not in result.services  # layer 2 only
    config = metallb.load_config(c)
    assert [a.name for a in config.by_name["blue"].l2] == ["l2"]  # blue: both protocols


def test_same_prefix_from_two_advertisements_and_two_services_is_one_route():
    c = cluster(pool(), peer(), adv(communities='["1:1"]'), adv(name="more", communities='["2:2", "1:1"]'),
                adv(name="agg", aggregationLength=24, aggregationLengthV6=120))
    services = [svc("a", "10.10.10.1", app="a"), svc("b", "10.10.10.2", app="b")]
    result = decide(c, services, [slice_("a", EVERYWHERE), slice_("b", EVERYWHERE)])
    routes = result.routes_of("w2-k8s", "r1")
    assert [(r.prefix, r.communities, r.services, r.advertisements) for r in routes] == [
        ("10.10.10.0/24", (), ("default/a", "default/b"), ("agg",)),
        ("10.10.10.1/32", ("1:1", "2:2"), ("default/a",), ("adv", "more")),
        ("10.10.10.2/32", ("1:1", "2:2"), ("default/b",), ("adv", "more"))]
    assert not result.errors


def test_ipv6_addresses_use_the_v6_aggregation_and_go_to_sessions_of_their_family():
    """MetalLB's FRR mode: a prefix goes to the peers whose session carries its family (the peerAddress's,
    both with dualStackAddressFamily); a dual-stack Service's IPv4 to IPv4 peers, its IPv6 to IPv6 peers."""
    c = cluster(pool(addresses='10.10.10.0/24, "fc00::/64"'), peer(), peer(name="r1-v6", address='"fd00:1::fe"'),
                peer(name="both", address="192.168.1.2", dualStackAddressFamily="true"), adv(aggregationLengthV6=64))
    result = decide(c, [svc(ip="10.10.10.1,fc00::5")], [slice_(endpoints=EVERYWHERE)])
    assert [r.prefix for r in result.routes_of("w1-k8s", "r1")] == ["10.10.10.1/32"]
    assert [r.prefix for r in result.routes_of("w1-k8s", "r1-v6")] == ["fc00::/64"]
    assert [r.prefix for r in result.routes_of("w1-k8s", "both")] == ["10.10.10.1/32", "fc00::/64"]
    assert result.status("default", "web")[0] == ("m-k8s", ("both", "r1", "r1-v6"))
    peers = {p.name: p for p in metallb.load_config(c).bgp.peers}
    assert (peers["both"].dual_stack, peers["r1"].dual_stack) == (True, False)
    assert [p.carries(6) for p in peers.values()] == [False, True, True]
    # an IPv6-only Service with IPv4 peers only: nothing to announce to anyone
    v4 = cluster(pool(addresses='"fc00::/64"'), peer(), adv())
    only6 = decide(v4, [svc(ip="fc00::5")], [slice_(endpoints=EVERYWHERE)])
    assert only6.routes == {} and only6.status("default", "web")[0] == ("m-k8s", ())


def test_services_outside_bgp_pools_or_without_addresses_are_left_out():
    c = cluster(*BASIC)
    pending = svc()
    pending.status.load_balancer.ingress = None
    other = svc("other", "172.30.0.1")
    cluster_ip = svc("cip")
    cluster_ip.spec.type = "ClusterIP"
    result = decide(c, [pending, other, cluster_ip], [slice_(s, EVERYWHERE) for s in ("web", "other", "cip")])
    assert result.routes == {} and result.services == {}


def test_no_configuration_or_no_peer_decides_nothing():
    c = cluster(pool(), adv())
    assert metallb.load_config(c).bgp.peers == []
    assert decide(c, [svc()], [slice_()]).routes == {}
    assert metallb_bgp.decide([svc()], [slice_()], [], None).routes == {}


def test_peers_resolve_timers_and_secrets():
    c = cluster(pool(), peer(keepaliveTime="3s", connectTime="5s", passwordSecret="{name: bgp-auth}",
                             bfdProfile="fast", ebgpMultiHop="true", vrf="red"), bfd(detectMultiplier=3), adv())
    (p,) = metallb.load_config(c).bgp.peers
    assert (p.hold_time, p.keepalive_time, p.connect_time, p.password_secret, p.bfd_profile, p.ebgp_multihop, p.vrf,
            p.ibgp, p.nodes) == (9, 3, 5, "bgp-auth", "fast", True, "red", False, frozenset(ALL))
    assert metallb.load_config(c).bgp.bfd_profiles["fast"].detect_multiplier == 3


def test_node_assigned_message_is_metallbs():
    assert metallb_bgp.node_assigned_message("w1-k8s") == 'announcing from node "w1-k8s" with protocol "bgp"'
