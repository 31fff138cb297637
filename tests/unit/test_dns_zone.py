"""The zone view: what a build keeps, incremental rebuilds, the feed that swaps zones."""
from __future__ import annotations

import threading

import pytest

from netemu.dns.feed import ZoneFeed
from netemu.dns.zone import CLUSTER_IP, EXTERNAL_NAME, HEADLESS, NO_PORTS, ClusterZone, Port
from netemu.spec.models import EndpointSlice, Namespace, ObjectMeta, Pod, Service

MANAGED = {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}


def service(name: str, ns: str = "default", rv: str | None = None, **spec) -> Service:
    return Service.model_validate({"metadata": {"name": name, "namespace": ns, "resourceVersion": rv}, "spec": spec})


def endpoint_slice(svc: str, ips: list[str], rv: str | None = None, managed: bool = True, ns: str = "default",
                   refs: bool = False, ports=None) -> EndpointSlice:
    labels = {"kubernetes.io/service-name": svc, **(MANAGED if managed else {})}
    endpoints = [{"addresses": [ip], **({"targetRef": {"kind": "Pod", "name": f"pod-{i}"}} if refs else {})}
                 for i, ip in enumerate(ips)]
    return EndpointSlice.model_validate({"metadata": {"name": f"{svc}-x", "namespace": ns, "labels": labels,
                                                      "resourceVersion": rv},
                                         "endpoints": endpoints, "ports": ports})


def test_kinds_ports_and_defaults():
    zone = ClusterZone.build([
        service("a", clusterIP="10.96.0.1", ports=[{"name": "HTTP", "port": 80}, {"port": 53, "protocol": "UDP"}]),
        service("h", clusterIP="None"),
        service("e", type="ExternalName", externalName="example.com"),
    ], [], [])
    a, h, e = (zone.services[("default", n)] for n in "ahe")
    assert (a.kind, h.kind, e.kind) == (CLUSTER_IP, HEADLESS, EXTERNAL_NAME)
    assert a.ports == (Port("http", "tcp", 80), Port("", "udp", 53))  # names fold, TCP by default
    assert h.ports == NO_PORTS and h.cluster_ips == ()
    assert (zone.domain, zone.ttl, zone.pods_mode) == ("cluster.local", 30, "insecure")
    assert zone.fallthrough_zones == ("in-addr.arpa", "ip6.arpa")


def test_namespaces_given_or_inferred():
    svc = service("a", ns="shop", clusterIP="10.96.0.1")
    inferred = ClusterZone.build([svc], [], [])
    assert {"shop", "default", "kube-system"} <= inferred.namespaces
    given = ClusterZone.build([svc], [], [], namespaces=[Namespace(metadata=ObjectMeta(name="default"))])
    assert given.namespaces == {"default"} and not given.services  # shop does not exist: hidden


def test_not_ready_endpoints_are_left_out_unless_published():
    sl = EndpointSlice.model_validate({
        "metadata": {"name": "db-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "db"}},
        "endpoints": [{"addresses": ["172.16.0.1"], "conditions": {"ready": False}},
                      {"addresses": ["172.16.0.2"], "conditions": {"ready": True}}]})
    plain = ClusterZone.build([service("db", clusterIP="None")], [sl], [])
    published = ClusterZone.build([service("db", clusterIP="None", publishNotReadyAddresses=True)], [sl], [])
    assert [a.ip for g in plain.services[("default", "db")].endpoints for a in g.addresses] == ["172.16.0.2"]
    assert [a.ip for g in published.services[("default", "db")].endpoints for a in g.addresses] == \
        ["172.16.0.1", "172.16.0.2"]


def test_reverse_maps_and_orphan_slices():
    zone = ClusterZone.build([service("db", clusterIP="10.96.0.9")],
                             [endpoint_slice("db", ["172.16.0.1"]), endpoint_slice("gone", ["172.16.0.7"])], [])
    assert zone.service_ptr["10.96.0.9"] == ("db", "default", "svc")
    assert zone.endpoint_ptr["172.16.0.1"] == [("172-16-0-1", "db", "default", "svc")]
    assert zone.endpoint_ptr["172.16.0.7"] == [("172-16-0-7", "gone", "default", "svc")]


# ----------------------------------------------------------------------------- incremental builds
def test_unchanged_services_are_reused_changed_ones_rebuilt():
    services = [service("a", rv="1", clusterIP="None"), service("b", rv="2", clusterIP="None")]
    slices = [endpoint_slice("a", ["172.16.0.1"], rv="3"), endpoint_slice("b", ["172.16.0.2"], rv="4")]
    first = ClusterZone.build(services, slices, [])
    slices[1] = endpoint_slice("b", ["172.16.0.2", "172.16.0.3"], rv="5")
    second = ClusterZone.build(services, slices, [], previous=first)
    assert second.services[("default", "a")] is first.services[("default", "a")]
    assert second.services[("default", "b")] is not first.services[("default", "b")]
    assert len(second.services[("default", "b")].endpoints[0].addresses) == 2
    assert "172.16.0.3" in second.endpoint_ptr and "172.16.0.3" not in first.endpoint_ptr


def test_objects_without_resource_version_are_never_reused():
    services = [service("a", clusterIP="None")]
    first = ClusterZone.build(services, [endpoint_slice("a", ["172.16.0.1"])], [])
    second = ClusterZone.build(services, [endpoint_slice("a", ["172.16.0.1"])], [], previous=first)
    assert second.services[("default", "a")] is not first.services[("default", "a")]


def test_unmanaged_slices_borrow_pod_hostnames_and_follow_pod_changes():
    """A slice the EndpointSlice controller does not manage gets hostnames from its pods, so its
    entry is rebuilt each time: a pod's hostname may change while the slice does not."""
    svc = service("db", rv="1", clusterIP="None")
    sl = endpoint_slice("db", ["172.16.0.1"], rv="2", managed=False, refs=True)

    def pod(hostname: str) -> Pod:
        return Pod.model_validate({"metadata": {"name": "pod-0", "namespace": "default"},
                                   "spec": {"containers": [{"name": "c"}], "hostname": hostname, "subdomain": "db"}})

    first = ClusterZone.build([svc], [sl], [pod("db-0")])
    second = ClusterZone.build([svc], [sl], [pod("db-zero")], previous=first)
    assert first.services[("default", "db")].endpoints[0].addresses[0].hostname == "db-0"
    assert second.services[("default", "db")].endpoints[0].addresses[0].hostname == "db-zero"
    # a managed slice is taken as the controller wrote it: no hostname means the dashed IP
    managed = ClusterZone.build([svc], [endpoint_slice("db", ["172.16.0.1"], rv="2", refs=True)], [pod("db-0")])
    assert managed.services[("default", "db")].endpoints[0].addresses[0].hostname == "172-16-0-1"


def test_bad_pods_mode_is_refused():
    with pytest.raises(ValueError, match="pods_mode"):
        ClusterZone.build([], [], [], pods_mode="sometimes")


# ----------------------------------------------------------------------------- the feed
def test_feed_swaps_and_tells_subscribers():
    feed = ZoneFeed()
    assert feed.current() is None and not feed.wait(0)
    seen = []
    unsubscribe = feed.subscribe(seen.append)
    z1, z2 = ClusterZone.empty(), ClusterZone.empty(ttl=5)
    feed.publish(z1)
    assert feed.current() is z1 and feed.wait(0)
    unsubscribe()
    feed.publish(z2)
    assert feed.current() is z2 and seen == [z1]


def test_feed_publish_from_another_thread():
    feed = ZoneFeed()
    zone = ClusterZone.empty()
    t = threading.Thread(target=feed.publish, args=(zone,))
    t.start()
    assert feed.wait(2) and feed.current() is zone
    t.join()
