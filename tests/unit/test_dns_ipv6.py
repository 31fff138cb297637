"""DNS for IPv6 and dual-stack clusters, as CoreDNS's kubernetes plugin answers.

CoreDNS's own IPv6 cases from handler_test.go (svc6, hdls1's 5678:abcd:: endpoints,
svc-dual-stack), reverse_test.go (ip6.arpa) and ns_test.go (dns6-service) run in
test_dns_answer.py against the same cluster; here are the rest of its IPv6 cases
(kubernetes_test.go: TestEndpointHostname, TestServices' dual-stack SRV, TestServicesAuthority's
IPv6 local addresses), then a dual-stack lab's objects as its controllers write them (Service
ipFamilies/clusterIPs, one EndpointSlice per address family, Pod podIPs [v4, v6]) and the answers
CoreDNS gives for them, and the server answering over IPv6.

The rules these cases pin down, from CoreDNS's sources (plugin/kubernetes, plugin/backend_lookup.go):
- A and AAAA pick the addresses of their family from the same hits: a Service or endpoint with
  none of that family exists, so the other type is NOERROR with no data (and the SOA);
- SRV has one record per distinct (target, port) and one additional A or AAAA per distinct
  (target, address); weights share 100 among all hits, duplicates included;
- an endpoint without a hostname is named by its address, ':' -> '-' ('0' after a trailing '-');
- PTR in ip6.arpa: 32 nibbles, reversed, name a ClusterIP's Service or else every endpoint with
  that address; unknown addresses fall through (kubeadm) to nothing: SERVFAIL;
- ``pods insecure`` answers any name spelling an address; ``pods verified`` knows a pod by its
  status.podIP only (CoreDNS's pod index), so a dual-stack pod's IPv6 name is NXDOMAIN there.
"""
from __future__ import annotations

import ipaddress
import re
import shutil
import socket
import subprocess
import urllib.request

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from netemu.dns import lookup
from netemu.dns.feed import ZoneFeed
from netemu.dns.names import dashed, ip_from_pod_label, ip_from_reverse
from netemu.dns.server import serve
from netemu.dns.zone import Address, ClusterZone
from netemu.spec.models import EndpointSlice, Pod, Service

from test_dns_answer import SERIAL, Case, ask, check, records, section, soa

LAB_SOA = soa(minttl=30, ttl=30)
HTTP = [{"name": "http", "protocol": "TCP", "port": 80}]
MANAGED = {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}


def rev(ip: str) -> str:
    """The reverse name of an address: nibbles in ip6.arpa, octets in in-addr.arpa."""
    return ipaddress.ip_address(ip).reverse_pointer + "."


# ----------------------------------------------------------------------------- objects
def svc(name: str, families=("IPv4",), ips=(), policy: str = "SingleStack", ns: str = "default",
        ports=HTTP, **spec) -> Service:
    """A Service as the API server stores it: clusterIPs one per family, clusterIP the first."""
    ips = list(ips)
    body = {"ipFamilies": list(families), "ipFamilyPolicy": policy, "clusterIPs": ips, "clusterIP": ips[0],
            "ports": ports, **spec}
    return Service.model_validate({"metadata": {"name": name, "namespace": ns}, "spec": body})


def eps(service: str, family: str, endpoints: list[dict], ports=HTTP, ns: str = "default") -> EndpointSlice:
    """One of the EndpointSlice controller's slices (one per address family of the Service)."""
    suffix = "v4" if family == "IPv4" else "v6"
    return EndpointSlice.model_validate({
        "metadata": {"name": f"{service}-{suffix}", "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service, **MANAGED}},
        "addressType": family, "endpoints": endpoints, "ports": ports})


def ep(ip: str, hostname: str = "", ready: bool = True) -> dict:
    out = {"addresses": [ip], "conditions": {"ready": ready}}
    if hostname:
        out["hostname"] = hostname
    return out


def pod(name: str, ips: list[str], ns: str = "default") -> Pod:
    """A pod as the kubelet reports it: podIP the first of podIPs."""
    return Pod.model_validate({"metadata": {"name": name, "namespace": ns},
                               "spec": {"containers": [{"name": "c"}]},
                               "status": {"phase": "Running", "podIP": ips[0],
                                          "podIPs": [{"ip": ip} for ip in ips]}})


# ----------------------------------------------------------------------------- kubernetes_test.go
@pytest.mark.parametrize("ip,label", [
    ("10.11.12.13", "10-11-12-13"),
    ("2001:db8:3333:4444:5555:6666:7777:8888", "2001-db8-3333-4444-5555-6666-7777-8888"),
    ("2001:db8:3333:4444:5555:6666::", "2001-db8-3333-4444-5555-6666--0"),  # may not end in '-'
    ("fd00:10:244:1::5", "fd00-10-244-1--5"),
    ("::1", "--1"),
])
def test_coredns_endpoint_hostname(ip, label):
    """TestEndpointHostname's address cases: the label of an endpoint without a hostname."""
    assert dashed(ip) == label


def test_coredns_endpoint_hostname_in_the_zone():
    """The zone names hostname-less endpoints that way; the name answers its AAAA."""
    s = svc("h", ips=["None"], families=("IPv6",))
    sl = eps("h", "IPv6", [ep("2001:db8:3333:4444:5555:6666::"), ep("2001:db8::7", hostname="named")])
    zone = ClusterZone.build([s], [sl], [], serial=SERIAL)
    entry = zone.services[("default", "h")]
    assert entry.endpoints[0].addresses == (Address("2001:db8:3333:4444:5555:6666::", "2001-db8-3333-4444-5555-6666--0"),
                                            Address("2001:db8::7", "named"))
    name = "2001-db8-3333-4444-5555-6666--0.h.default.svc.cluster.local."
    check(ask(zone, name, "AAAA"), Case("", "", "NOERROR", [f"{name} 30 IN AAAA 2001:db8:3333:4444:5555:6666::"]))


def test_coredns_services_dual_stack_srv_hits():
    """TestServices: svc-dual-stack's SRV lookup yields one hit per ClusterIP, both on the
    Service's name (they become one SRV record with two additional addresses)."""
    s = svc("svc-dual-stack", ("IPv4", "IPv6"), ["10.0.0.2", "10::2"], "PreferDualStack", ns="testns")
    zone = ClusterZone.build([s], [], [], domain="interwebs.test", ttl=5, serial=SERIAL, namespaces=["testns"])
    name = tuple("svc-dual-stack.testns.svc.interwebs.test".split("."))
    q = lookup.Query(zone, name, name, ("interwebs", "test"))
    assert [(h.host, h.port, ".".join(h.owner)) for h in lookup.services(q, "SRV")] == [
        ("10.0.0.2", 80, "svc-dual-stack.testns.svc.interwebs.test"),
        ("10::2", 80, "svc-dual-stack.testns.svc.interwebs.test")]


AUTHORITY_CASES = [
    # (local IPs, qtype, answer, extra) for ns.dns.interwebs.test.: TestServicesAuthority
    (["1.2.3.4"], "A", ["ns.dns.interwebs.test. 5 IN A 1.2.3.4"], []),
    (["1.2.3.4"], "AAAA", [], []),
    (["1:2::3:4"], "A", [], []),
    (["1:2::3:4"], "AAAA", ["ns.dns.interwebs.test. 5 IN AAAA 1:2::3:4"], []),
    (["1.2.3.4", "1:2::3:4"], "A", ["ns.dns.interwebs.test. 5 IN A 1.2.3.4"], []),
    (["1.2.3.4", "1:2::3:4"], "AAAA", ["ns.dns.interwebs.test. 5 IN AAAA 1:2::3:4"], []),
]


@pytest.mark.parametrize("local,qtype,answer_rrs,extra", AUTHORITY_CASES)
def test_coredns_services_authority(local, qtype, answer_rrs, extra):
    """With no Service behind the server's own addresses, ns.dns.<zone> is those addresses,
    each under its own type (the other type is NODATA)."""
    zone = ClusterZone.build([], [], [], domain="interwebs.test", ttl=5, serial=SERIAL, dns_server_ips=local)
    ns = [] if answer_rrs else [soa("interwebs.test.")]
    check(ask(zone, "ns.dns.interwebs.test.", qtype), Case("", "", "NOERROR", answer_rrs, ns, extra))


def test_coredns_services_authority_ns_of_both_families():
    """The NS query names ns.dns once, with an A and an AAAA record as additional data."""
    zone = ClusterZone.build([], [], [], domain="interwebs.test", ttl=5, serial=SERIAL,
                             dns_server_ips=["1.2.3.4", "1:2::3:4"])
    check(ask(zone, "interwebs.test.", "NS"), Case(
        "", "", "NOERROR", ["interwebs.test. 5 IN NS ns.dns.interwebs.test."],
        extra=["ns.dns.interwebs.test. 5 IN A 1.2.3.4", "ns.dns.interwebs.test. 5 IN AAAA 1:2::3:4"]))


# ----------------------------------------------------------------------------- a dual-stack lab
V6_POD1, V6_POD2 = "fd00:10:244:1::5", "fd00:10:244:2::7"


@pytest.fixture(scope="module")
def dual_zone() -> ClusterZone:
    """kube-dns SingleStack IPv4 (kubeadm); Services of every policy; a headless dual-stack
    Service with and one without pod hostnames; pods with podIPs of both families."""
    services = [
        svc("kube-dns", ips=["10.96.0.10"], ns="kube-system",
            ports=[{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53}]),
        svc("v4", ips=["10.96.0.20"]),
        svc("v6", ("IPv6",), ["fd00:10:96::14"]),
        svc("dual", ("IPv4", "IPv6"), ["10.96.0.30", "fd00:10:96::1e"], "PreferDualStack",
            ports=HTTP + [{"name": "dns", "port": 53, "protocol": "UDP"}]),
        svc("req", ("IPv4", "IPv6"), ["10.96.0.40", "fd00:10:96::28"], "RequireDualStack"),
        svc("db", ("IPv4", "IPv6"), ["None"], "PreferDualStack"),
        svc("web", ("IPv4", "IPv6"), ["None"], "RequireDualStack"),
        svc("h6", ("IPv6",), ["None"]),
        svc("empty6", ("IPv6",), ["None"]),
    ]
    slices = [
        eps("kube-dns", "IPv4", [ep("172.16.0.2")], [{"name": "dns", "port": 53, "protocol": "UDP"}],
            ns="kube-system"),
        eps("dual", "IPv4", [ep("172.16.1.5"), ep("172.16.2.7")]),
        eps("dual", "IPv6", [ep(V6_POD1), ep(V6_POD2)]),
        eps("db", "IPv4", [ep("172.16.1.5"), ep("172.16.2.7"), ep("172.16.3.9", ready=False)]),
        eps("db", "IPv6", [ep(V6_POD1), ep(V6_POD2), ep("fd00:10:244:3::9", ready=False)]),
        eps("web", "IPv4", [ep("172.16.1.6", "web-0"), ep("172.16.2.8", "web-1")]),
        eps("web", "IPv6", [ep("fd00:10:244:1::6", "web-0"), ep("fd00:10:244:2::8", "web-1")]),
        eps("h6", "IPv6", [ep("fd00:10:244:1::a")], ports=None),
        eps("empty6", "IPv6", []),
    ]
    pods = [pod("dns-x", ["172.16.0.2", "fd00:10:244::2"], "kube-system"),
            pod("a", ["172.16.1.5", V6_POD1]), pod("b", ["172.16.2.7", V6_POD2])]
    return ClusterZone.build(services, slices, pods, serial=SERIAL, dns_server_ips=["172.16.0.2", "fd00:10:244::2"])


def _n(name: str) -> str:
    return f"{name}.default.svc.cluster.local."


DUAL_CASES = [
    # ClusterIP Services: A is the IPv4 ClusterIP, AAAA the IPv6 one; none of a family is NODATA
    Case(_n("v4"), "A", "NOERROR", [f"{_n('v4')} 30 IN A 10.96.0.20"]),
    Case(_n("v4"), "AAAA", "NOERROR", ns=[LAB_SOA]),
    Case(_n("v6"), "AAAA", "NOERROR", [f"{_n('v6')} 30 IN AAAA fd00:10:96::14"]),
    Case(_n("v6"), "A", "NOERROR", ns=[LAB_SOA]),
    Case(_n("dual"), "A", "NOERROR", [f"{_n('dual')} 30 IN A 10.96.0.30"]),
    Case(_n("dual"), "AAAA", "NOERROR", [f"{_n('dual')} 30 IN AAAA fd00:10:96::1e"]),
    Case(_n("req"), "AAAA", "NOERROR", [f"{_n('req')} 30 IN AAAA fd00:10:96::28"]),
    Case(_n("nosuch"), "AAAA", "NXDOMAIN", ns=[LAB_SOA]),
    # SRV on a dual-stack ClusterIP: one target (the Service), 2 ports x 2 IPs = 4 hits: 25 each
    Case(_n("dual"), "SRV", "NOERROR",
         [f"{_n('dual')} 30 IN SRV 0 25 80 {_n('dual')}", f"{_n('dual')} 30 IN SRV 0 25 53 {_n('dual')}"],
         extra=[f"{_n('dual')} 30 IN A 10.96.0.30", f"{_n('dual')} 30 IN AAAA fd00:10:96::1e"]),
    Case("_http._tcp." + _n("dual"), "SRV", "NOERROR",
         [f"_http._tcp.{_n('dual')} 30 IN SRV 0 50 80 {_n('dual')}"],
         extra=[f"{_n('dual')} 30 IN A 10.96.0.30", f"{_n('dual')} 30 IN AAAA fd00:10:96::1e"]),
    Case("_http._tcp." + _n("v6"), "SRV", "NOERROR",
         [f"_http._tcp.{_n('v6')} 30 IN SRV 0 100 80 {_n('v6')}"],
         extra=[f"{_n('v6')} 30 IN AAAA fd00:10:96::14"]),
    # the endpoints of a ClusterIP Service answer by name, of their own family
    Case("fd00-10-244-1--5." + _n("dual"), "AAAA", "NOERROR", [f"fd00-10-244-1--5.{_n('dual')} 30 IN AAAA {V6_POD1}"]),
    Case("fd00-10-244-1--5." + _n("dual"), "A", "NOERROR", ns=[LAB_SOA]),
    Case("172-16-1-5." + _n("dual"), "AAAA", "NOERROR", ns=[LAB_SOA]),
    # headless dual-stack without hostnames: the ready endpoints of each family
    Case(_n("db"), "A", "NOERROR", [f"{_n('db')} 30 IN A 172.16.1.5", f"{_n('db')} 30 IN A 172.16.2.7"]),
    Case(_n("db"), "AAAA", "NOERROR", [f"{_n('db')} 30 IN AAAA {V6_POD1}", f"{_n('db')} 30 IN AAAA {V6_POD2}"]),
    Case("fd00-10-244-3--9." + _n("db"), "AAAA", "NXDOMAIN", ns=[LAB_SOA]),  # not ready
    # ...and SRV: a target per address (named by it), 4 hits: 25 each
    Case("_http._tcp." + _n("db"), "SRV", "NOERROR",
         [f"_http._tcp.{_n('db')} 30 IN SRV 0 25 80 {h}.{_n('db')}"
          for h in ("172-16-1-5", "172-16-2-7", "fd00-10-244-1--5", "fd00-10-244-2--7")],
         extra=[f"172-16-1-5.{_n('db')} 30 IN A 172.16.1.5", f"172-16-2-7.{_n('db')} 30 IN A 172.16.2.7",
                f"fd00-10-244-1--5.{_n('db')} 30 IN AAAA {V6_POD1}",
                f"fd00-10-244-2--7.{_n('db')} 30 IN AAAA {V6_POD2}"]),
    Case("fd00-10-244-2--7." + _n("db"), "SRV", "NOERROR",
         [f"fd00-10-244-2--7.{_n('db')} 30 IN SRV 0 100 80 fd00-10-244-2--7.{_n('db')}"],
         extra=[f"fd00-10-244-2--7.{_n('db')} 30 IN AAAA {V6_POD2}"]),
    # headless dual-stack with hostnames (a StatefulSet): one target per pod, both of its
    # addresses as additional records; the weights count the 4 hits
    Case(_n("web"), "SRV", "NOERROR",
         [f"{_n('web')} 30 IN SRV 0 25 80 web-0.{_n('web')}", f"{_n('web')} 30 IN SRV 0 25 80 web-1.{_n('web')}"],
         extra=[f"web-0.{_n('web')} 30 IN A 172.16.1.6", f"web-0.{_n('web')} 30 IN AAAA fd00:10:244:1::6",
                f"web-1.{_n('web')} 30 IN A 172.16.2.8", f"web-1.{_n('web')} 30 IN AAAA fd00:10:244:2::8"]),
    Case("web-0." + _n("web"), "A", "NOERROR", [f"web-0.{_n('web')} 30 IN A 172.16.1.6"]),
    Case("web-0." + _n("web"), "AAAA", "NOERROR", [f"web-0.{_n('web')} 30 IN AAAA fd00:10:244:1::6"]),
    Case("web-0." + _n("web"), "SRV", "NOERROR",
         [f"web-0.{_n('web')} 30 IN SRV 0 50 80 web-0.{_n('web')}"],
         extra=[f"web-0.{_n('web')} 30 IN A 172.16.1.6", f"web-0.{_n('web')} 30 IN AAAA fd00:10:244:1::6"]),
    # headless IPv6-only, port-less: AAAA, A is NODATA, SRV too (no ports: no record, name exists)
    Case(_n("h6"), "AAAA", "NOERROR", [f"{_n('h6')} 30 IN AAAA fd00:10:244:1::a"]),
    Case(_n("h6"), "A", "NOERROR", ns=[LAB_SOA]),
    Case(_n("h6"), "SRV", "NOERROR", ns=[LAB_SOA]),
    Case(_n("empty6"), "AAAA", "NXDOMAIN", ns=[LAB_SOA]),  # headless without endpoints
    # kube-dns stays IPv4 (SingleStack): its name has no AAAA
    Case("kube-dns.kube-system.svc.cluster.local.", "AAAA", "NOERROR", ns=[LAB_SOA]),
]


@pytest.mark.parametrize("case", DUAL_CASES, ids=str)
def test_dual_stack_lab(dual_zone, case):
    check(ask(dual_zone, case.qname, case.qtype), case)


def test_ns_is_kube_dns_although_the_dns_pod_has_an_ipv6_address(dual_zone):
    """The DNS pod's IPv6 address is no endpoint of SingleStack kube-dns; its IPv4 one is, so
    NS names kube-dns with its one ClusterIP."""
    reply = ask(dual_zone, "cluster.local.", "NS")
    assert section(reply.rr) == records(["cluster.local. 30 IN NS kube-dns.kube-system.svc.cluster.local."])
    assert section(reply.ar) == records(["kube-dns.kube-system.svc.cluster.local. 30 IN A 10.96.0.10"])


def test_ns_of_a_dual_stack_kube_dns_gives_both_addresses_per_server_address():
    """kube-dns made RequireDualStack: each of the server's addresses finds kube-dns through its
    slice, and each adds both ClusterIPs (CoreDNS does not dedupe the additional section)."""
    s = svc("kube-dns", ("IPv4", "IPv6"), ["10.96.0.10", "fd00:10:96::a"], "RequireDualStack", ns="kube-system",
            ports=[{"name": "dns", "port": 53, "protocol": "UDP"}])
    slices = [eps("kube-dns", "IPv4", [ep("172.16.0.2")], ns="kube-system"),
              eps("kube-dns", "IPv6", [ep("fd00:10:244::2")], ns="kube-system")]
    zone = ClusterZone.build([s], slices, [], serial=SERIAL, dns_server_ips=["172.16.0.2", "fd00:10:244::2"])
    reply = ask(zone, "cluster.local.", "NS")
    name = "kube-dns.kube-system.svc.cluster.local."
    assert section(reply.rr) == records([f"cluster.local. 30 IN NS {name}"])
    assert section(reply.ar) == records([f"{name} 30 IN A 10.96.0.10", f"{name} 30 IN AAAA fd00:10:96::a"] * 2)
    check(ask(zone, name, "AAAA"), Case("", "", "NOERROR", [f"{name} 30 IN AAAA fd00:10:96::a"]))


# ----------------------------------------------------------------------------- PTR in ip6.arpa
PTR_CASES = [
    ("fd00:10:96::1e", ["dual.default.svc.cluster.local."]),             # an IPv6 ClusterIP
    ("10.96.0.30", ["dual.default.svc.cluster.local."]),                 # its IPv4 twin
    ("fd00:10:96::14", ["v6.default.svc.cluster.local."]),
    # an endpoint address: every Service whose slices hold it, by the endpoint's name
    (V6_POD1, ["fd00-10-244-1--5.dual.default.svc.cluster.local.", "fd00-10-244-1--5.db.default.svc.cluster.local."]),
    ("fd00:10:244:1::6", ["web-0.web.default.svc.cluster.local."]),      # by hostname, as in IPv4
    ("172.16.1.6", ["web-0.web.default.svc.cluster.local."]),
    ("fd00:10:244:1::a", ["fd00-10-244-1--a.h6.default.svc.cluster.local."]),
]


@pytest.mark.parametrize("ip,targets", PTR_CASES, ids=[c[0] for c in PTR_CASES])
def test_ptr_in_ip6_arpa(dual_zone, ip, targets):
    name = rev(ip)
    check(ask(dual_zone, name, "PTR"), Case("", "", "NOERROR", [f"{name} 30 IN PTR {t}" for t in targets]))


def test_ptr_nibbles_echo_the_case_asked(dual_zone):
    name = rev("fd00:10:96::1e").replace("e.1", "E.1").replace("f.ip6.arpa", "F.IP6.ARPA")
    assert "E.1" in name and name.endswith("F.IP6.ARPA.")
    check(ask(dual_zone, name, "PTR"), Case("", "", "NOERROR", [f"{name} 30 IN PTR dual.default.svc.cluster.local."]))


@pytest.mark.parametrize("name", [
    rev("fd00:10:244:3::9"),                 # a not-ready endpoint: not named
    rev("fd00:10:96::99"),                   # nothing there
    "0.0.d.f.ip6.arpa.",                     # not a whole address
    "x.y.ip6.arpa.",
])
def test_unknown_ip6_arpa_names_fall_through_to_servfail(dual_zone, name):
    """kubeadm's 'fallthrough in-addr.arpa ip6.arpa', with nothing behind: SERVFAIL."""
    reply = ask(dual_zone, name, "PTR")
    assert RCODE[reply.header.rcode] == "SERVFAIL" and not reply.rr and not reply.auth and reply.header.aa == 0


def test_ip6_arpa_without_fallthrough_is_nxdomain_with_the_zones_soa():
    zone = ClusterZone.build([svc("v6", ("IPv6",), ["fd00:10:96::14"])], [], [], serial=SERIAL,
                             fallthrough_zones=())
    check(ask(zone, rev("fd00:10:96::15"), "PTR"), Case("", "", "NXDOMAIN", ns=[soa("ip6.arpa.", 30, 30)]))
    check(ask(zone, "ip6.arpa.", "SOA"), Case("", "", "NOERROR", [soa("ip6.arpa.", 30, 30)]))


def test_a_non_canonical_cluster_ip_is_found_by_its_canonical_reverse_name():
    s = svc("long", ("IPv6",), ["fd00:10:96:0:0:0:0:1f"])
    zone = ClusterZone.build([s], [], [], serial=SERIAL)
    name = rev("fd00:10:96::1f")
    check(ask(zone, name, "PTR"), Case("", "", "NOERROR", [f"{name} 30 IN PTR long.default.svc.cluster.local."]))
    check(ask(zone, _n("long"), "AAAA"), Case("", "", "NOERROR", [f"{_n('long')} 30 IN AAAA fd00:10:96::1f"]))


@pytest.mark.parametrize("ip", ["fd00:10:96::1e", "2001:db8::", "::1", "fd00:10:244:1::5"])
def test_reverse_name_round_trip(ip):
    assert ip_from_reverse(tuple(rev(ip).rstrip(".").split("."))) == ip


# ----------------------------------------------------------------------------- pods
POD_INSECURE_CASES = [
    Case("fd00-10-244-1--5.default.pod.cluster.local.", "AAAA", "NOERROR",
         ["fd00-10-244-1--5.default.pod.cluster.local. 30 IN AAAA fd00:10:244:1::5"]),
    Case("fd00-10-244-1--5.default.pod.cluster.local.", "A", "NOERROR", ns=[LAB_SOA]),
    Case("172-16-1-5.default.pod.cluster.local.", "AAAA", "NOERROR", ns=[LAB_SOA]),
    # every spelling of the address answers, with the address as spelled
    Case("fd00-10-244-1-0-0-0-5.default.pod.cluster.local.", "AAAA", "NOERROR",
         ["fd00-10-244-1-0-0-0-5.default.pod.cluster.local. 30 IN AAAA fd00:10:244:1::5"]),
    Case("FD00-10-244-1--5.default.pod.cluster.local.", "AAAA", "NOERROR",
         ["FD00-10-244-1--5.default.pod.cluster.local. 30 IN AAAA fd00:10:244:1::5"]),
    # an IPv4-mapped address is an IPv4 one to CoreDNS (Go's To4): an A record, no AAAA
    Case("--ffff-ac10-105.default.pod.cluster.local.", "A", "NOERROR",
         ["--ffff-ac10-105.default.pod.cluster.local. 30 IN A 172.16.1.5"]),
    Case("--ffff-ac10-105.default.pod.cluster.local.", "AAAA", "NOERROR", ns=[LAB_SOA]),
    Case("fd00-10-244-1---5.default.pod.cluster.local.", "AAAA", "NXDOMAIN", ns=[LAB_SOA]),  # ':::'
    Case("fd00-10-244-1--5.nosuchns.pod.cluster.local.", "AAAA", "NXDOMAIN", ns=[LAB_SOA]),
]


@pytest.mark.parametrize("case", POD_INSECURE_CASES, ids=str)
def test_pods_insecure_ipv6(dual_zone, case):
    check(ask(dual_zone, case.qname, case.qtype), case)


@pytest.mark.parametrize("label,ip", [
    ("fd00-10-244-1--5", "fd00:10:244:1::5"),
    ("1-2-3-4", "1.2.3.4"),
    ("1--2-3", "1::2:3"),           # a '--' makes it IPv6 whatever the count
    ("a-b-c-d", "a.b.c.d"),         # three dashes: read as IPv4 (then not an address)
])
def test_pod_labels_spell_addresses_like_coredns(label, ip):
    assert ip_from_pod_label(label) == ip


def test_pods_verified_know_a_dual_stack_pod_by_its_primary_address_only():
    """CoreDNS keeps status.podIP of each pod and finds verified pods by it: the IPv6 name of a
    pod in an IPv4-primary cluster is NXDOMAIN (use 'pods insecure', kubeadm's default)."""
    pods = [pod("a", ["172.16.1.5", V6_POD1]), pod("six", ["fd00:10:244:9::3"], "v6ns")]
    zone = ClusterZone.build([], [], pods, serial=SERIAL, pods_mode="verified", namespaces=["default", "v6ns"])
    check(ask(zone, "172-16-1-5.default.pod.cluster.local."),
          Case("", "", "NOERROR", ["172-16-1-5.default.pod.cluster.local. 30 IN A 172.16.1.5"]))
    check(ask(zone, "fd00-10-244-1--5.default.pod.cluster.local.", "AAAA"), Case("", "", "NXDOMAIN", ns=[LAB_SOA]))
    # a pod whose podIP is IPv6 is found by it, spelled as the kubelet wrote it
    check(ask(zone, "fd00-10-244-9--3.v6ns.pod.cluster.local.", "AAAA"),
          Case("", "", "NOERROR", ["fd00-10-244-9--3.v6ns.pod.cluster.local. 30 IN AAAA fd00:10:244:9::3"]))
    check(ask(zone, "fd00-10-244-9-0-0-0-3.v6ns.pod.cluster.local.", "AAAA"), Case("", "", "NXDOMAIN", ns=[LAB_SOA]))
    check(ask(zone, "fd00-10-244-9--3.default.pod.cluster.local.", "AAAA"), Case("", "", "NXDOMAIN", ns=[LAB_SOA]))


# ----------------------------------------------------------------------------- the zone's build
def test_ipv6_slices_are_kept_per_family_and_fqdn_slices_dropped():
    s = svc("dual", ("IPv4", "IPv6"), ["10.96.0.30", "fd00:10:96::1e"], "PreferDualStack")
    fqdn = EndpointSlice.model_validate({
        "metadata": {"name": "dual-fqdn", "namespace": "default", "labels": {"kubernetes.io/service-name": "dual"}},
        "addressType": "FQDN", "endpoints": [{"addresses": ["example.com"]}], "ports": HTTP})
    zone = ClusterZone.build([s], [eps("dual", "IPv4", [ep("172.16.1.5")]), eps("dual", "IPv6", [ep(V6_POD1)]), fqdn],
                             [], serial=SERIAL)
    entry = zone.services[("default", "dual")]
    assert entry.cluster_ips == ("10.96.0.30", "fd00:10:96::1e")
    assert [g.addresses for g in entry.endpoints] == [(Address("172.16.1.5", "172-16-1-5"),),
                                                      (Address(V6_POD1, "fd00-10-244-1--5"),)]


def test_a_service_with_only_cluster_ip_set_still_answers_aaaa():
    """Hand-written objects without clusterIPs: clusterIP alone decides."""
    s = Service.model_validate({"metadata": {"name": "old", "namespace": "default"},
                                "spec": {"clusterIP": "fd00:10:96::50", "ports": HTTP}})
    zone = ClusterZone.build([s], [], [], serial=SERIAL)
    check(ask(zone, _n("old"), "AAAA"), Case("", "", "NOERROR", [f"{_n('old')} 30 IN AAAA fd00:10:96::50"]))
    check(ask(zone, _n("old"), "A"), Case("", "", "NOERROR", ns=[LAB_SOA]))


# ----------------------------------------------------------------------------- the server over IPv6
def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return r.read().decode()


def _query(host: str, port: int, qname: str, qtype: str, tcp: bool = False) -> DNSRecord:
    return DNSRecord.parse(DNSRecord.question(qname, qtype).send(host, port, tcp=tcp, timeout=2, ipv6=":" in host))


@needs_ipv6
def test_server_on_both_families_counts_each_clients_family(dual_zone):
    """Bound to '::' the server answers IPv4 and IPv6 clients on one port, as CoreDNS's '.:53'
    does, and its metrics label each request with the client's family (1: IPv4, 2: IPv6)."""
    with serve("::", ZoneFeed(dual_zone), port=0, metrics_port=0, health_port=None, ready_port=None) as srv:
        for host in ("127.0.0.1", "::1"):
            for tcp in (False, True):
                reply = _query(host, srv.port, _n("dual"), "AAAA", tcp=tcp)
                assert [str(rr.rdata) for rr in reply.rr] == ["fd00:10:96::1e"], (host, tcp)
        _query("::1", srv.port, _n("dual"), "AAAA")  # a repeat, from the cache
        text = _metrics(srv.metrics_port)
    assert srv.metrics.server == f"dns://:{srv.port}"
    counts = {(m[0], m[1]): int(m[2]) for m in
              re.findall(r'coredns_dns_requests_total\{[^}]*proto="(\w+)",family="(\d)",type="AAAA"\} (\d+)', text)}
    assert counts == {("udp", "1"): 1, ("tcp", "1"): 1, ("udp", "2"): 2, ("tcp", "2"): 1}


@needs_ipv6
def test_server_on_an_ipv6_address_only():
    zone = ClusterZone.build([svc("v6", ("IPv6",), ["fd00:10:96::14"])], [], [], serial=SERIAL)
    with serve("::1", zone, port=0, metrics_port=None, health_port=None, ready_port=None) as srv:
        reply = _query("::1", srv.port, _n("v6"), "AAAA")
        assert [str(rr.rdata) for rr in reply.rr] == ["fd00:10:96::14"]
        reply = _query("::1", srv.port, rev("fd00:10:96::14"), "PTR")
        assert [str(rr.rdata) for rr in reply.rr] == ["v6.default.svc.cluster.local."]
        assert QTYPE[reply.rr[0].rtype] == "PTR"


def test_server_on_ipv4_is_unchanged():
    """An IPv4 bind stays IPv4-only and counts family 1."""
    with serve("127.0.0.1", ClusterZone.build([svc("v4", ips=["10.96.0.20"])], [], []), port=0,
               metrics_port=None, health_port=None, ready_port=None) as srv:
        assert srv._udp.family == socket.AF_INET
        assert [str(rr.rdata) for rr in _query("127.0.0.1", srv.port, _n("v4"), "A").rr] == ["10.96.0.20"]
        assert {k.family for k in srv.metrics._cells} == {"1"}


@needs_ipv6
def test_server_on_every_address_takes_both_families():
    """bind '' is CoreDNS's '.:53': one dual-stack socket where the kernel has IPv6."""
    zone = ClusterZone.build([svc("v6", ("IPv6",), ["fd00:10:96::14"])], [], [], serial=SERIAL)
    with serve("", zone, port=0, metrics_port=None, health_port=None, ready_port=None) as srv:
        assert srv.bind == "::" and srv.metrics.server == f"dns://:{srv.port}"
        for host in ("127.0.0.1", "::1"):
            assert [str(rr.rdata) for rr in _query(host, srv.port, _n("v6"), "AAAA").rr] == ["fd00:10:96::14"]


def test_server_on_every_address_without_ipv6_is_ipv4(monkeypatch):
    import netemu.dns.server as server_module

    monkeypatch.setattr(server_module, "_ipv6_available", lambda: False)
    with serve("", ClusterZone.build([svc("v4", ips=["10.96.0.20"])], [], []), port=0,
               metrics_port=None, health_port=None, ready_port=None) as srv:
        assert srv.bind == "0.0.0.0" and srv._udp.family == socket.AF_INET
        assert [str(rr.rdata) for rr in _query("127.0.0.1", srv.port, _n("v4"), "A").rr] == ["10.96.0.20"]


@needs_ipv6
@pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed")
def test_dig_aaaa_and_ip6_arpa_over_ipv6(dual_zone):
    """What a pod's dig asks in a dual-stack lab: AAAA, SRV with AAAA glue, -x of an IPv6 address."""
    with serve("::", dual_zone, port=0, metrics_port=None, health_port=None, ready_port=None) as srv:
        def dig(*args: str) -> list[str]:
            return subprocess.run(["dig", "@::1", "-p", str(srv.port), "+time=2", "+tries=1", "+short", *args],
                                  capture_output=True, text=True, timeout=10).stdout.split()

        assert dig("AAAA", "dual.default.svc.cluster.local") == ["fd00:10:96::1e"]
        assert dig("A", "dual.default.svc.cluster.local") == ["10.96.0.30"]
        assert sorted(dig("AAAA", "db.default.svc.cluster.local")) == [V6_POD1, V6_POD2]
        assert dig("-x", "fd00:10:96::1e") == ["dual.default.svc.cluster.local."]
        assert dig("-x", "fd00:10:244:1::6") == ["web-0.web.default.svc.cluster.local."]
        assert dig("AAAA", "fd00-10-244-1--5.default.pod.cluster.local") == [V6_POD1]
