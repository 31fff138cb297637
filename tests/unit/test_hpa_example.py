"""The registry.k8s.io/hpa-example stand-in (php-apache): CPU work on every request, "OK!"."""
from __future__ import annotations

import http.client
import os
import resource
import threading
import time

import pytest

from netemu.workloads import hpa_example
from netemu.workloads.listeners import Loop
from netemu.workloads.model import PortSpec, WorkloadContext
from netemu.workloads.testing import free_port


def _serve(args=()):
    port = free_port()
    ctx = WorkloadContext(pod_name="php-apache-1", namespace="default", pod_ip="127.0.0.1", node_name="w1",
                          image="registry.k8s.io/hpa-example", container_name="php-apache",
                          ports=[PortSpec(port)], args=list(args))
    loop = Loop("127.0.0.1")
    hpa_example.start_hpa_example(ctx, loop)
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return port


def _get(port, path="/"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        conn.close()


def test_answers_ok_after_the_loop_and_404_elsewhere():
    port = _serve(["--iterations", "1000"])
    status, headers, body = _get(port)
    assert (status, body) == (200, "OK!")
    assert headers["Server"].startswith("Apache/2.4") and headers["X-Powered-By"].startswith("PHP/5")
    assert _get(port, "/index.php")[2] == "OK!"
    status, _, body = _get(port, "/nope")
    assert status == 404 and "The requested URL /nope was not found on this server." in body


def test_loop_is_index_php():
    x = 0.0001
    for _ in range(1001):
        x += x ** 0.5
    assert hpa_example.burn(1000) == pytest.approx(x)
    assert hpa_example._iterations(["--iterations=5"]) == 5
    assert hpa_example._iterations(["x"]) == hpa_example.ITERATIONS


def test_a_request_costs_tens_of_milliseconds_of_cpu():
    port = _serve()
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for _ in range(3):
        assert _get(port)[2] == "OK!"
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / 3
    assert 0.01 < cpu < 1.0, cpu  # ~80 ms on a current server core
    assert time.perf_counter() - t0 < 10
    if os.environ.get("NETEMU_PRINT_COSTS"):
        print(f"hpa-example: {cpu * 1000:.1f} ms of CPU per request")
