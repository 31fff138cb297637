"""Service and EndpointSlice builders for the proxy renderers' tests, and the inputs of kube-proxy's
TestOverall*Rules tests (the same in its iptables, IPVS and nftables suites)."""
from __future__ import annotations

from netemu.spec.models import EndpointSlice, Service

NODE = "test-node"


def svc(ns: str, name: str, **spec) -> Service:
    status = spec.pop("status", {})
    return Service.model_validate({"metadata": {"namespace": ns, "name": name}, "spec": spec, "status": status})


def port(name="p80", port=80, protocol="TCP", **extra) -> dict:
    return {"name": name, "port": port, "protocol": protocol, **extra}


def slice_(ns: str, name: str, endpoints: list, ports: list, n: int = 1, address_type="IPv4") -> EndpointSlice:
    return EndpointSlice.model_validate({
        "metadata": {"namespace": ns, "name": f"{name}-{n}", "labels": {"kubernetes.io/service-name": name}},
        "addressType": address_type, "endpoints": endpoints, "ports": ports})


def ep(ip: str, node: str | None = None, **conditions) -> dict:
    out: dict = {"addresses": [ip]}
    if node:
        out["nodeName"] = node
    if conditions:
        out["conditions"] = conditions
    return out


def overall_inputs():
    services = [
        svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port()]),
        svc("ns2", "svc2", type="LoadBalancer", externalTrafficPolicy="Local", clusterIP="172.30.0.42",
            ports=[port(nodePort=3001)], externalIPs=["192.168.99.22"], healthCheckNodePort=30000,
            status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}),
        svc("ns3", "svc3", type="NodePort", clusterIP="172.30.0.43", ports=[port(nodePort=3003)]),
        svc("ns4", "svc4", type="NodePort", clusterIP="172.30.0.44", externalIPs=["192.168.99.33"],
            ports=[port(targetPort=80)]),
        svc("ns5", "svc5", type="LoadBalancer", externalTrafficPolicy="Cluster", clusterIP="172.30.0.45",
            ports=[port(nodePort=3002)], healthCheckNodePort=30000,
            loadBalancerSourceRanges=[" 203.0.113.0/25"],  # whitespace must be tolerated
            sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 10800}},
            status={"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}]}}),
        svc("ns6", "svc6", type="ClusterIP", clusterIP="172.30.0.46", ports=[port(targetPort=80)]),
    ]
    slices = [
        slice_("ns1", "svc1", [ep("10.180.0.1")], [port()]),
        slice_("ns2", "svc2", [ep("10.180.0.2")], [port()]),  # no nodeName: not local
        slice_("ns3", "svc3", [ep("10.180.0.3")], [port()]),
        slice_("ns4", "svc4", [ep("10.180.0.4"), ep("10.180.0.5", NODE)], [port()]),
        slice_("ns5", "svc5", [ep("10.180.0.3")], [port()]),
    ]
    return services, slices
