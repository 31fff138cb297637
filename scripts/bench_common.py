"""What the Service benchmarks share: N ClusterIP Services with 2 endpoints each, and throwaway
network namespaces."""
from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netemu.spec.models import EndpointSlice, Service  # noqa: E402


def services_and_slices(n: int) -> tuple[list[Service], list[EndpointSlice]]:
    """Services svc<i> in 50 namespaces, 10.96.0.16 upwards; endpoints on w1 and w2 from 10.244.0.2."""
    svcs, slices = [], []
    base = int(ipaddress.ip_address("10.96.0.0"))
    for i in range(n):
        name = f"svc{i}"
        ns = f"ns{i % 50}"
        ip = str(ipaddress.ip_address(base + 16 + i))
        svcs.append(Service.model_validate({
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}))
        eps = [{"addresses": [str(ipaddress.ip_address(int(ipaddress.ip_address("10.244.0.0")) + 2 * i + e + 2))],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": "w1" if e == 0 else "w2"} for e in range(2)]
        slices.append(EndpointSlice.model_validate({
            "metadata": {"name": f"{name}-abcde", "namespace": ns, "resourceVersion": "1",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": eps,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
    return svcs, slices


def netns(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
