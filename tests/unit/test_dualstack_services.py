"""Dual-stack Services (issue 19): ipFamilyPolicy/ipFamilies defaulted and validated as kube-apiserver
does (initIPFamilyFields, ValidateServiceClusterIPsRelatedFields, ValidateServiceUpdate), one cluster
IP per family, EndpointSlices per address family as the EndpointSlice controller makes them, and
MetalLB's dual-stack allocation (internal/allocator, controller/service.go)."""
from __future__ import annotations

import ipaddress
import json
import random

import pytest

from netemu.control import endpoints, metallb, metallb_l2, nodes
from netemu.control.cluster import AdmissionError, Cluster
from netemu.control.ipam import allocate_cluster_ip
from netemu.control.metallb import DUAL, Allocator, Config, Pool
from netemu.spec.defaults import apply_defaults, default_lab
from netemu.spec.errors import Location, Report
from netemu.spec.models import (
    Condition, EndpointSlice, Lab, Pod, PodIP, Service, ServiceSpec,
)
from netemu.spec.validate_services import (
    check_endpoint_slice, check_service, cluster_ips_errors, init_ip_families, prepare_cluster_ips,
    upgrade_downgrade_errors,
)

V4, V6 = "IPv4", "IPv6"
BOTH = [V4, V6]
DUAL_LAB = {"network": "192.168.1.0/24,fd00:192:168:1::/64", "podCIDR": "172.16.0.0/16,fd00:10:244::/56",
            "serviceCIDR": "10.96.0.0/12,fd00:10:96::/112"}


def lab(dual: bool = True) -> Lab:
    lb = Lab.model_validate({"metadata": {"name": "unit"}, "spec": DUAL_LAB if dual else {}})
    return default_lab(lb)


def cluster(dual: bool = True) -> Cluster:
    lb = lab(dual)
    lb.spec.seed = 1
    c = Cluster(lb, clock=lambda: 1_700_000_000.0)
    c.bootstrap()
    for n in c.store.list("Node"):
        nodes.set_ready(c, n, True, "KubeletReady", "ok")
    return c


def svc(name: str = "s", selector=None, **spec) -> Service:
    s = Service.model_validate({"metadata": {"name": name, "namespace": "default"},
                                "spec": {"selector": {"app": "web"} if selector is None else selector,
                                         "ports": [{"port": 80}], **spec}})
    apply_defaults(s)
    return s


def spec(**kw) -> ServiceSpec:
    return svc(**kw).spec


def create(c: Cluster, s: Service) -> Service:
    c.apply([s])
    return c.store.get("Service", "default", s.metadata.name)


def messages(errors: list[tuple[str, str]]) -> list[str]:
    return [f"{p}: {t}" for p, t in errors]


# --------------------------------------------------------------------------- defaulting (initIPFamilyFields)
# (spec fields, lab dual?, expected ipFamilyPolicy, expected ipFamilies): the cases of the API server's
# TestInitIPFamilyFields / TestCreateInitIPFields that a lab can meet
DEFAULTS = [
    ({}, False, "SingleStack", [V4]),
    ({}, True, "SingleStack", [V4]),  # SingleStack in the primary family
    ({"ipFamilyPolicy": "PreferDualStack"}, False, "PreferDualStack", [V4]),  # no second family to have
    ({"ipFamilyPolicy": "PreferDualStack"}, True, "PreferDualStack", BOTH),
    ({"ipFamilyPolicy": "RequireDualStack"}, True, "RequireDualStack", BOTH),
    ({"ipFamilies": [V6]}, True, "SingleStack", [V6]),
    ({"ipFamilies": [V6], "ipFamilyPolicy": "PreferDualStack"}, True, "PreferDualStack", [V6, V4]),
    ({"clusterIP": "fd00:10:96::5"}, True, "SingleStack", [V6]),  # inferred from the address asked for
    ({"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5", "fd00:10:96::5"], "ipFamilyPolicy": "RequireDualStack"},
     True, "RequireDualStack", BOTH),
    ({"clusterIP": "None"}, False, "SingleStack", [V4]),  # headless with a selector: as any
    ({"clusterIP": "None", "ipFamilyPolicy": "PreferDualStack"}, True, "PreferDualStack", BOTH),
    # headless without a selector: RequireDualStack, both families even on a single-stack cluster
    ({"clusterIP": "None", "selector": {}}, False, "RequireDualStack", BOTH),
    ({"clusterIP": "None", "selector": {}}, True, "RequireDualStack", BOTH),
    ({"clusterIP": "None", "selector": {}, "ipFamilyPolicy": "SingleStack"}, True, "SingleStack", [V4]),
    ({"clusterIP": "None", "selector": {}, "ipFamilies": [V6]}, False, "RequireDualStack", [V6, V4]),
]


@pytest.mark.parametrize("fields,dual,policy,families", DEFAULTS)
def test_defaulting_as_the_api_server(fields, dual, policy, families):
    s = spec(**fields)
    prepare_cluster_ips(s, None)
    assert init_ip_families(s, None, BOTH if dual else [V4]) == []
    assert (s.ip_family_policy, s.ip_families) == (policy, families)


# (spec fields, lab dual?, expected errors): the API server's messages
REFUSED = [
    ({"ipFamilyPolicy": "RequireDualStack"}, False,
     ['spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack '
      'services']),
    ({"ipFamilies": [V6]}, False, ['spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster']),
    ({"ipFamilies": [V4, V6], "ipFamilyPolicy": "PreferDualStack"}, False,
     ['spec.ipFamilies[1]: Invalid value: "IPv6": not configured on this cluster']),
    ({"clusterIP": "fd00:10:96::5"}, False,
     ['spec.clusterIPs[0]: Invalid value: []string{"fd00:10:96::5"}: IPv6 is not configured on this cluster']),
    ({"ipFamilies": [V4, V4], "ipFamilyPolicy": "PreferDualStack"}, True,
     ['spec.ipFamilies[1]: Duplicate value: "IPv4"']),
    ({"ipFamilies": [V4, V6, V4], "ipFamilyPolicy": "PreferDualStack"}, True,
     ['spec.ipFamilies[2]: Duplicate value: "IPv4"']),
    ({"ipFamilies": ["IPv5"]}, True, ['spec.ipFamilies[0]: Unsupported value: "IPv5": supported values: "IPv4", '
                                      '"IPv6"']),
    ({"ipFamilyPolicy": "DualStack"}, True,
     ['spec.ipFamilyPolicy: Unsupported value: "DualStack": supported values: "PreferDualStack", '
      '"RequireDualStack", "SingleStack"']),
    ({"ipFamilies": [V4, V6]}, True,
     ["spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when "
      "multiple IP families are specified"]),
    ({"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5", "fd00:10:96::5"]}, True,
     ["spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when "
      "multiple cluster IPs are specified"]),
    ({"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5", "10.96.0.6"], "ipFamilyPolicy": "PreferDualStack"}, True,
     ['spec.clusterIPs: Invalid value: []string{"10.96.0.5", "10.96.0.6"}: may specify no more than one IP for '
      'each IP family']),
    ({"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5", "fd00:10:96::5", "10.96.0.6"],
      "ipFamilyPolicy": "PreferDualStack"}, True,
     ['spec.clusterIPs: Invalid value: []string{"10.96.0.5", "fd00:10:96::5", "10.96.0.6"}: may only hold up to '
      '2 values']),
    ({"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.6"]}, True,
     ['spec.clusterIPs: Invalid value: []string{"10.96.0.6"}: first value must match `clusterIP`']),
    ({"clusterIP": "10.96.0.5", "ipFamilies": [V6]}, True,
     ['spec.clusterIPs[0]: Invalid value: "10.96.0.5": expected an IPv6 value as indicated by `ipFamilies[0]`']),
    ({"clusterIP": "None", "clusterIPs": ["None", "10.96.0.5"]}, True,
     ["spec.clusterIPs: Invalid value: []string{\"None\", \"10.96.0.5\"}: 'None' must be the first and only "
      "value"]),
]


@pytest.mark.parametrize("fields,dual,errors", REFUSED)
def test_refused_with_the_api_servers_messages(fields, dual, errors):
    s = spec(**fields)
    prepare_cluster_ips(s, None)
    assert messages(init_ip_families(s, None, BOTH if dual else [V4])) == errors


def test_validation_reports_what_the_lab_cannot_give_when_the_file_is_loaded():
    def errors_of(dual: bool, **fields) -> list[str]:
        report = Report()
        check_service(svc(**fields), lab(dual).spec, Location("t.yaml", 1), report)
        return report.errors

    single = errors_of(False, ipFamilyPolicy="RequireDualStack")
    assert len(single) == 1 and "this cluster is not configured for dual-stack services" in single[0]
    assert errors_of(True, ipFamilyPolicy="RequireDualStack") == []
    assert any("not configured on this cluster" in e for e in errors_of(False, ipFamilies=[V6]))
    assert any("IPv6 is not configured on this cluster" in e for e in errors_of(False, clusterIP="fd00:10:96::5"))
    assert errors_of(True, clusterIP="fd00:10:96::5") == []
    assert any("not in the lab's IPv6 serviceCIDR fd00:10:96::/112" in e
               for e in errors_of(True, clusterIP="fd00:99::5"))
    assert any("not in the lab's IPv6 serviceCIDR" in e for e in errors_of(
        True, clusterIP="10.96.0.5", clusterIPs=["10.96.0.5", "fd00:99::5"], ipFamilyPolicy="PreferDualStack"))
    assert any('Duplicate value: "IPv4"' in e for e in errors_of(True, ipFamilies=[V4, V4]))
    # headless without a selector asks for nothing the lab must have
    assert errors_of(False, clusterIP="None", selector={}, ipFamilyPolicy="RequireDualStack") == []
    # an offline render of an IPv6 Service against an IPv4 lab: warned, rendered
    report = Report(rendering=True)
    check_service(svc(clusterIP="fd00:10:96::5", ipFamilies=[V6]), lab(False).spec, Location("t.yaml", 1), report)
    assert report.errors == [] and any("not configured on this cluster" in w for w in report.warnings)


def test_external_name_has_no_families():
    assert cluster_ips_errors(spec(type="ExternalName", externalName="example.com", ipFamilies=[V4])) == []
    c = cluster()
    s = create(c, svc("ext", selector={}, type="ExternalName", externalName="example.com"))
    assert (s.spec.ip_families, s.spec.ip_family_policy, s.spec.cluster_ips) == (None, None, None)
    with pytest.raises(AdmissionError) as e:
        c.apply([svc("ext2", selector={}, type="ExternalName", externalName="example.com", ipFamilies=[V4],
                     ipFamilyPolicy="SingleStack")])
    assert str(e.value) == ('Service "ext2" is invalid: [spec.ipFamilies: Forbidden: may not be set for ExternalName '
                            'services, spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services]')
    # a ClusterIP Service turned ExternalName drops the families it carried (dropTypeDependentFields)
    web = create(c, svc("web"))
    turned = web.model_copy(deep=True)
    turned.spec.type, turned.spec.external_name = "ExternalName", "example.com"
    turned.spec.cluster_ip = turned.spec.cluster_ips = None
    c.apply([turned])
    got = c.store.get("Service", "default", "web")
    assert (got.spec.ip_families, got.spec.ip_family_policy, got.spec.cluster_ip) == (None, None, None)


# --------------------------------------------------------------------------- allocation in a lab
def test_ipv4_lab_services_are_single_stack_ipv4():
    c = cluster(dual=False)
    s = create(c, svc())
    assert s.spec.ip_family_policy == "SingleStack" and s.spec.ip_families == [V4]
    assert s.spec.cluster_ips == [s.spec.cluster_ip] and ipaddress.ip_address(s.spec.cluster_ip).version == 4
    with pytest.raises(AdmissionError, match="this cluster is not configured for dual-stack services"):
        c.apply([svc("req", ipFamilyPolicy="RequireDualStack")])
    p = create(c, svc("pref", ipFamilyPolicy="PreferDualStack"))
    assert p.spec.ip_families == [V4] and len(p.spec.cluster_ips) == 1


def test_one_cluster_ip_per_family_in_ipfamilies_order():
    c = cluster()
    s = create(c, svc("pref", ipFamilyPolicy="PreferDualStack"))
    assert s.spec.ip_families == BOTH
    v4, v6 = (ipaddress.ip_address(x) for x in s.spec.cluster_ips)
    assert s.spec.cluster_ip == str(v4)
    assert v4 in ipaddress.ip_network("10.96.0.0/12") and v6 in ipaddress.ip_network("fd00:10:96::/112")
    s6 = create(c, svc("six", ipFamilies=[V6], ipFamilyPolicy="RequireDualStack"))
    assert s6.spec.ip_families == [V6, V4]
    assert [ipaddress.ip_address(x).version for x in s6.spec.cluster_ips] == [6, 4]
    assert s6.spec.cluster_ip == s6.spec.cluster_ips[0]
    asked = create(c, svc("asked", clusterIP="10.96.0.50", clusterIPs=["10.96.0.50", "fd00:10:96::50"],
                          ipFamilyPolicy="RequireDualStack"))
    assert asked.spec.cluster_ips == ["10.96.0.50", "fd00:10:96::50"]
    with pytest.raises(AdmissionError, match="provided IP is already allocated"):
        c.apply([svc("again", clusterIP="fd00:10:96::50")])
    with pytest.raises(AdmissionError, match="The range of valid IPs is fd00:10:96::/112"):
        c.apply([svc("out", clusterIP="10.96.0.51", clusterIPs=["10.96.0.51", "fd00:99::1"],
                     ipFamilyPolicy="PreferDualStack")])
    headless = create(c, svc("hl", clusterIP="None", ipFamilyPolicy="PreferDualStack"))
    assert headless.spec.cluster_ips == ["None"] and headless.spec.ip_families == BOTH
    # kube-dns stays SingleStack in the primary family
    dns = [s for s in c.store.list("Service") if s.metadata.name == "kube-dns"]
    assert all(s.spec.ip_families == [V4] for s in dns)


def test_policy_changes_add_and_release_the_secondary_ip():
    c = cluster()
    s = create(c, svc("web"))
    first = s.spec.cluster_ip
    up = s.model_copy(deep=True)
    up.spec.ip_family_policy = "PreferDualStack"
    c.apply([up])
    s = c.store.get("Service", "default", "web")
    assert s.spec.ip_families == BOTH and s.spec.cluster_ips[0] == first and len(s.spec.cluster_ips) == 2
    # an update that leaves a PreferDualStack Service as it is keeps it
    c.apply([s.model_copy(deep=True)])
    assert c.store.get("Service", "default", "web").spec.cluster_ips == s.spec.cluster_ips
    down = s.model_copy(deep=True)
    down.spec.ip_family_policy = "SingleStack"
    c.apply([down])
    s = c.store.get("Service", "default", "web")
    assert (s.spec.ip_families, s.spec.cluster_ips) == ([V4], [first])
    # the primary family cannot change
    flip = s.model_copy(deep=True)
    flip.spec.ip_families = [V6]
    flip.spec.cluster_ip = flip.spec.cluster_ips = None
    with pytest.raises(AdmissionError, match="expected an IPv6 value as indicated by `ipFamilies"):
        c.apply([flip])  # the kept cluster IP is IPv4 (patchAllocatedValues), as the API server says


def test_update_rules_as_validate_service_update():
    old = spec(clusterIP="10.96.0.5", clusterIPs=["10.96.0.5", "fd00:10:96::5"], ipFamilyPolicy="PreferDualStack",
               ipFamilies=BOTH)
    new = old.model_copy(deep=True)
    new.cluster_ips = ["10.96.0.5"]
    assert messages(init_ip_families(new, old, BOTH)) == [
        "spec.ipFamilyPolicy: Invalid value: \"PreferDualStack\": must be 'SingleStack' to release the secondary "
        "cluster IP"]
    new = old.model_copy(deep=True)
    new.cluster_ips = ["10.96.0.5", "fd00:10:96::6"]
    assert messages(upgrade_downgrade_errors(new, old)) == [
        'spec.clusterIPs[1]: Invalid value: []string{"10.96.0.5", "fd00:10:96::6"}: may not change once set']
    new = old.model_copy(deep=True)
    new.ip_families = [V6, V4]
    assert any("may not change once set" in m for m in messages(upgrade_downgrade_errors(new, old)))


def test_ipv6_cluster_ip_allocation_covers_the_first_65536_addresses():
    rng = random.Random(1)
    for cidr in ("fd00:10:96::/112", "fd00:10:96::/64"):
        for _ in range(50):
            ip = ipaddress.ip_address(allocate_cluster_ip(cidr, [], rng))
            off = int(ip) - int(ipaddress.ip_network(cidr).network_address)
            assert 1 + 256 <= off < 65536  # the upper band first
    # a small range: every address but the network's, the last one included (no broadcast in IPv6)
    got = set()
    for _ in range(15):
        got.add(allocate_cluster_ip("fd00::/124", got, rng))
    assert got == {f"fd00::{i:x}" for i in range(1, 16)}


# --------------------------------------------------------------------------- EndpointSlices per family
def pod(name: str, ip4: str, ip6: str | None, node: str = "w1-k8s") -> Pod:
    p = Pod.model_validate({"metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
                            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx",
                                                                       "ports": [{"containerPort": 80}]}]}})
    p.status.phase = "Running"
    p.status.pod_ip = ip4
    p.status.pod_ips = [PodIP(ip=ip4), *([PodIP(ip=ip6)] if ip6 else [])]
    p.status.conditions = [Condition(type="Ready", status="True")]
    return p


PODS = [pod("a", "172.16.1.2", "fd00:10:244:1::2"), pod("b", "172.16.2.2", "fd00:10:244:2::2", "w2-k8s"),
        pod("c", "172.16.3.2", None, "w3-k8s")]


def slices_of(c: Cluster, name: str) -> dict[str, list[EndpointSlice]]:
    out: dict[str, list[EndpointSlice]] = {}
    for s in c.store.select("EndpointSlice", "default", {"kubernetes.io/service-name": name}):
        out.setdefault(s.address_type, []).append(s)
    return out


def addresses(slices: list[EndpointSlice]) -> list[str]:
    return sorted(a for s in slices for ep in s.endpoints for a in ep.addresses)


def test_one_slice_per_family_with_the_pods_addresses_of_that_family():
    c = cluster()
    for p in PODS:
        c.store.create(p.model_copy(deep=True))
    create(c, svc("web", ipFamilyPolicy="PreferDualStack"))
    create(c, svc("web4"))
    create(c, svc("web6", ipFamilies=[V6]))
    endpoints.reconcile(c)
    web = slices_of(c, "web")
    assert sorted(web) == BOTH and all(len(v) == 1 for v in web.values())
    assert addresses(web[V4]) == ["172.16.1.2", "172.16.2.2", "172.16.3.2"]
    assert addresses(web[V6]) == ["fd00:10:244:1::2", "fd00:10:244:2::2"]  # c has no IPv6 address
    for sl in (v[0] for v in web.values()):  # named and labelled as the controller does
        assert sl.metadata.generate_name == "web-" and sl.metadata.name.startswith("web-")
        assert sl.metadata.labels == {"kubernetes.io/service-name": "web",
                                      "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
        assert sl.metadata.owner_references[0].kind == "Service"
    assert sorted(slices_of(c, "web4")) == [V4]
    assert sorted(slices_of(c, "web6")) == [V6] and addresses(slices_of(c, "web6")[V6]) == [
        "fd00:10:244:1::2", "fd00:10:244:2::2"]
    # the v1 Endpoints view has the primary family only
    view = endpoints.endpoints_view(c.store.get("Service", "default", "web"),
                                    [s for v in web.values() for s in v])
    assert sorted(a["ip"] for a in view["subsets"][0]["addresses"]) == ["172.16.1.2", "172.16.2.2", "172.16.3.2"]
    # a downgrade drops the IPv6 slice; a Service without endpoints of a family keeps an empty one
    s = c.store.get("Service", "default", "web").model_copy(deep=True)
    s.spec.ip_family_policy = "SingleStack"
    c.apply([s])
    endpoints.reconcile(c)
    assert sorted(slices_of(c, "web")) == [V4]
    create(c, svc("none", selector={"app": "nothing"}, ipFamilyPolicy="RequireDualStack"))
    endpoints.reconcile(c)
    empty = slices_of(c, "none")
    assert sorted(empty) == BOTH and all(s.endpoints == [] for v in empty.values() for s in v)


def test_offline_slices_per_family():
    s = svc("web", clusterIP="10.96.0.5", clusterIPs=["10.96.0.5", "fd00:10:96::5"], ipFamilies=BOTH,
            ipFamilyPolicy="PreferDualStack")
    out = endpoints.slices_from_pods([s], PODS)
    assert [(x.metadata.name, x.address_type, len(x.endpoints)) for x in out] == [
        ("web-0", V4, 3), ("web-1", V6, 2)]
    plain = endpoints.slices_from_pods([svc("old", clusterIP="10.96.0.6")], PODS)  # no families: its IP's
    assert [x.address_type for x in plain] == [V4]


def test_ipv6_slice_addresses_are_checked():
    def errors_of(address_type: str, address: str) -> list[str]:
        es = EndpointSlice.model_validate({"metadata": {"name": "x"}, "addressType": address_type,
                                           "endpoints": [{"addresses": [address]}]})
        report = Report()
        check_endpoint_slice(es, Location("t.yaml", 1), report)
        return report.errors

    assert errors_of(V6, "fd00::1") == []
    assert any("must be a valid IPv6 address" in e for e in errors_of(V6, "10.0.0.1"))
    assert any("must be a valid IPv6 address" in e for e in errors_of(V6, "nope"))
    assert errors_of(V4, "10.0.0.1") == []


# --------------------------------------------------------------------------- MetalLB
def ip(text: str):
    return ipaddress.ip_address(text)


def allocator(*pools: tuple[str, list[str]]) -> Allocator:
    return Allocator(Config([Pool(name=n, cidrs=[ipaddress.ip_network(x) for x in cidrs]) for n, cidrs in pools]))


def policy(p: str) -> Service:
    return svc(ipFamilyPolicy=p)


def test_dual_stack_allocation_takes_one_of_each_from_one_pool():
    a = allocator(("v4", ["192.168.1.240/30"]), ("dual", ["192.168.2.0/30", "fd00:192:168:1::240/126"]))
    # the first pool with both families, IPv4 first
    assert a.allocate("s1", policy("RequireDualStack"), DUAL, []) == ([ip("192.168.2.0"), ip("fd00:192:168:1::240")],
                                                                      None)
    assert a.pool("s1") == "dual"
    # single-stack Services of either family
    assert a.allocate("s2", policy("SingleStack"), 4, []) == ([ip("192.168.1.240")], None)
    assert a.allocate("s3", policy("SingleStack"), 6, []) == ([ip("fd00:192:168:1::241")], None)
    # PreferDualStack falls back to a pool with the primary family only
    b = allocator(("v4", ["192.168.1.240/32"]), ("v6", ["fd00::240/128"]))
    assert b.allocate("p", policy("PreferDualStack"), DUAL, []) == ([ip("192.168.1.240")], None)
    assert b.allocate("q", policy("PreferDualStack"), DUAL, []) == ([ip("fd00::240")], None)  # then the other's
    assert b.allocate("r", policy("RequireDualStack"), DUAL, []) == ([], "no available IPs")
    c = allocator(("v4", ["192.168.1.240/32"]), ("v6", ["fd00::240/128"]))
    assert c.allocate("r", policy("RequireDualStack"), DUAL, []) == ([], "no available IPs")  # no pool has both
    assert c.allocate_from_pool("r", policy("RequireDualStack"), DUAL, "v4", []) == (
        [], "no available IPs in pool v4 for dual IPFamily")
    # the additional family for a PreferDualStack Service holding one address, from its pool
    d = allocator(("dual", ["192.168.2.0/31", "fd00::/127"]))
    assert d.allocate("p", policy("SingleStack"), 4, []) == ([ip("192.168.2.0")], None)
    assert d.allocate_additional("p", policy("PreferDualStack"), ip("192.168.2.0"), "dual", []) == (ip("fd00::"), None)
    assert d.ips("p") == [ip("192.168.2.0"), ip("fd00::")]


def test_service_family_from_its_cluster_ips():
    assert metallb.service_family(svc(clusterIP="10.96.0.5")) == 4
    assert metallb.service_family(svc(clusterIP="fd00::5")) == 6
    assert metallb.service_family(svc(clusterIP="10.96.0.5", clusterIPs=["10.96.0.5", "fd00::5"])) == DUAL


POOLS = {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
         "metadata": {"name": "lab", "namespace": "metallb-system"},
         "spec": {"addresses": ["192.168.1.240-192.168.1.250", "fd00:192:168:1::240-fd00:192:168:1::250"]}}


def lb_cluster():
    from netemu.spec.metallb import IPAddressPool, L2Advertisement

    c = cluster()
    c.apply([IPAddressPool.model_validate(POOLS),
             L2Advertisement.model_validate({"metadata": {"name": "l2", "namespace": "metallb-system"}})])
    for p in PODS:
        c.store.create(p.model_copy(deep=True))
    return c


def lb(name: str, annotations=None, **spec) -> Service:
    s = svc(name, type="LoadBalancer", **spec)
    s.metadata.annotations = annotations
    return s


def ingress(c: Cluster, name: str) -> list[str]:
    s = c.store.get("Service", "default", name)
    return [i.ip for i in s.status.load_balancer.ingress or []]


def events(c: Cluster, name: str) -> list[tuple[str, str]]:
    return [(e.reason, e.message) for e in c.events_for("Service", "default", name)]


def test_load_balancer_gets_one_ip_per_family_and_the_winner_announces_both():
    c = lb_cluster()
    c.apply([lb("dual", ipFamilyPolicy="PreferDualStack"), lb("four"), lb("six", ipFamilies=[V6]),
             lb("asked", {"metallb.universe.tf/loadBalancerIPs": "192.168.1.245,fd00:192:168:1::245"},
                ipFamilyPolicy="RequireDualStack"),
             lb("asked6", loadBalancerIP="fd00:192:168:1::246", ipFamilies=[V6]),
             lb("wrong", loadBalancerIP="192.168.1.247", ipFamilyPolicy="RequireDualStack")])
    metallb.reconcile(c)
    assert ingress(c, "dual") == ["192.168.1.240", "fd00:192:168:1::240"]
    assert ingress(c, "four") == ["192.168.1.241"]
    assert ingress(c, "six") == ["fd00:192:168:1::241"]
    assert ingress(c, "asked") == ["192.168.1.245", "fd00:192:168:1::245"]
    assert ingress(c, "asked6") == ["fd00:192:168:1::246"]
    assert ingress(c, "wrong") == []
    assert ("AllocationFailed", 'Failed to allocate IP for "default/wrong": requested loadBalancer IP(s) '
            '["192.168.1.247"] does not match the ipFamily of the service') in events(c, "wrong")
    assert ("IPAllocated", 'Assigned IP ["192.168.1.240" "fd00:192:168:1::240"]') in events(c, "dual")
    # kept across passes
    metallb.reconcile(c)
    assert ingress(c, "dual") == ["192.168.1.240", "fd00:192:168:1::240"]
    # layer 2: one election per Service, its node answers for both addresses
    endpoints.reconcile(c)
    result = metallb_l2.reconcile(c)
    node = result.node_of("default", "dual")
    assert node is not None
    assert result.by_ip["192.168.1.240"] == result.by_ip["fd00:192:168:1::240"] == node
    assert {"192.168.1.240", "fd00:192:168:1::240"} <= result.ips_of(node)
    assert result.by_ip["fd00:192:168:1::241"] == result.node_of("default", "six")


def test_prefer_dual_stack_gains_and_loses_its_second_address():
    c = lb_cluster()
    c.apply([lb("web")])
    metallb.reconcile(c)
    assert ingress(c, "web") == ["192.168.1.240"]
    up = c.store.get("Service", "default", "web").model_copy(deep=True)
    up.spec.ip_family_policy = "PreferDualStack"
    c.apply([up])
    metallb.reconcile(c)
    assert ingress(c, "web") == ["192.168.1.240", "fd00:192:168:1::240"]
    assert ("IPAllocated", 'Assigned additional IP "fd00:192:168:1::240"') in events(c, "web")
    down = c.store.get("Service", "default", "web").model_copy(deep=True)
    down.spec.ip_family_policy = "SingleStack"
    c.apply([down])
    metallb.reconcile(c)
    assert ingress(c, "web") == ["192.168.1.240"]


def test_prefer_dual_stack_with_an_ipv4_pool_only_keeps_one_and_says_why_once():
    from netemu.spec.metallb import IPAddressPool

    c = cluster()
    c.apply([IPAddressPool.model_validate({**POOLS, "spec": {"addresses": ["192.168.1.240/30"]}})])
    c.apply([lb("web", ipFamilyPolicy="PreferDualStack")])
    for _ in range(3):
        metallb.reconcile(c)
    assert ingress(c, "web") == ["192.168.1.240"]
    failed = [e for e in events(c, "web") if e[0] == "AdditionalAssignFailed"]
    assert failed == [("AdditionalAssignFailed", "cannot assign additional IP in PreferDualStack: no available IPs "
                                                 "in pool lab for ipv6 IPFamily")]


def test_ipv6_load_balancer_and_external_ips_in_a_dual_stack_lab():
    def errors_of(dual: bool, **fields) -> list[str]:
        report = Report()
        check_service(svc(**fields), lab(dual).spec, Location("t.yaml", 1), report)
        return report.errors

    assert errors_of(True, type="LoadBalancer", loadBalancerIP="fd00:192:168:1::240") == []
    assert errors_of(True, externalIPs=["fd00:192:168:1::99", "192.168.1.99"]) == []
    assert any("only IPv4 is supported" in e for e in errors_of(False, type="LoadBalancer",
                                                                 loadBalancerIP="fd00:192:168:1::240"))


# --------------------------------------------------------------------------- through the API (kubectl's path)
def storage(dual: bool):
    from netemu.api.storage import Storage

    c = cluster(dual)
    return Storage(c)


def test_kubectl_create_and_patch_through_the_api():
    from netemu.api.errors import ApiError
    from netemu.spec import registry

    SVC = registry.by_kind("Service")
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np6"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}],
                     "ipFamilyPolicy": "PreferDualStack"}}
    st = storage(True)
    obj, _ = st.create(SVC, "default", json.loads(json.dumps(body)))
    assert obj["spec"]["ipFamilies"] == BOTH and obj["spec"]["ipFamilyPolicy"] == "PreferDualStack"
    assert len(obj["spec"]["clusterIPs"]) == 2 and obj["spec"]["clusterIP"] == obj["spec"]["clusterIPs"][0]
    down, _ = st.patch(SVC, "default", "np6", b'{"spec":{"ipFamilyPolicy":"SingleStack"}}',
                       "application/merge-patch+json")
    assert down["spec"]["ipFamilies"] == [V4] and down["spec"]["clusterIPs"] == obj["spec"]["clusterIPs"][:1]
    up, _ = st.patch(SVC, "default", "np6", b'{"spec":{"ipFamilyPolicy":"RequireDualStack"}}',
                     "application/merge-patch+json")
    assert up["spec"]["ipFamilies"] == BOTH and up["spec"]["clusterIPs"][0] == obj["spec"]["clusterIPs"][0]
    st4 = storage(False)
    body["spec"]["ipFamilyPolicy"] = "RequireDualStack"
    with pytest.raises(ApiError) as e:
        st4.create(SVC, "default", body)
    assert e.value.code == 422
    assert e.value.message == ('Service "np6" is invalid: spec.ipFamilyPolicy: Invalid value: "RequireDualStack": '
                               "this cluster is not configured for dual-stack services")


def test_prefer_dual_stack_in_a_single_stack_lab_stays_single():
    from netemu.spec.metallb import IPAddressPool

    c = cluster(dual=False)
    c.apply([IPAddressPool.model_validate(POOLS)])
    c.apply([lb("web", ipFamilyPolicy="PreferDualStack")])
    for _ in range(3):
        metallb.reconcile(c)
    assert ingress(c, "web") == ["192.168.1.240"]
    assert [r for r, _ in events(c, "web")] == ["IPAllocated"]
