"""kubectl-like output and kernel object naming, without root."""
from __future__ import annotations

from netemu.cli import tables
from netemu.cli.main import build_parser
from netemu.dataplane import names


def test_human_duration_matches_kubectl():
    assert [tables.human_duration(s) for s in (5, 119, 125, 600, 3 * 3600, 5 * 3600 + 60, 30 * 3600,
                                               50 * 3600, 9 * 86400)] == \
        ["5s", "119s", "2m5s", "10m", "3h", "5h1m", "30h", "2d2h", "9d"]


def test_pod_status_column():
    base = {"metadata": {"name": "p"}, "spec": {"nodeName": "w1", "containers": [{"name": "c"}]}}
    running = {**base, "status": {"phase": "Running", "containerStatuses": [
        {"name": "c", "ready": True, "restartCount": 0, "state": {"running": {}}}]}}
    assert tables.pod_status(running) == "Running"
    crash = {**base, "status": {"phase": "Running", "containerStatuses": [
        {"name": "c", "ready": False, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}
    assert tables.pod_status(crash) == "CrashLoopBackOff"
    terminating = {**running, "metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    assert tables.pod_status(terminating) == "Terminating"
    pending = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Pending"}}
    assert tables.pod_status(pending) == "Pending"
    row = tables.pod_row(running, True, 0)
    assert row[1] == "1/1" and row[2] == "Running" and row[6] == "w1"


def test_service_columns():
    svc = {"metadata": {"name": "np-svc"}, "spec": {"type": "NodePort", "clusterIP": "10.96.1.2",
                                                    "ports": [{"port": 80, "nodePort": 30000, "protocol": "TCP"}]}}
    row = tables.service_row(svc, False, 0)
    assert row[:5] == ["np-svc", "NodePort", "10.96.1.2", "<none>", "80:30000/TCP"]
    lb = {"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.96.1.3",
                                               "ports": [{"port": 80, "nodePort": 31000}]}, "status": {}}
    assert tables.external_ip(lb) == "<pending>"


def test_endpoints_column_truncates_like_kubectl():
    slices = [{"ports": [{"port": 80}], "endpoints": [{"addresses": [f"10.0.0.{i}"], "conditions": {"ready": True}}
                                                      for i in range(5)]}]
    assert tables.endpoints_text(slices) == "10.0.0.0:80,10.0.0.1:80,10.0.0.2:80 + 2 more..."


def test_table_alignment():
    out = tables.render(["NAME", "READY"], [["a-long-name", "1/1"], ["b", "0/1"]])
    lines = out.splitlines()
    assert lines[0].index("READY") == lines[1].index("1/1") == len("a-long-name") + 3


def test_names_fit_interfaces_and_do_not_collide():
    assert names.host_link("lab") == "ne-lab"
    long = names.host_link("a-very-long-lab-name")
    assert len(long) <= 15 and long.startswith("ne-")
    assert len(names.pod_veth("default", "x" * 60)) <= 15
    assert names.pod_netns("lab", "default", "p") == "ne-lab-p"
    assert names.pod_netns("lab", "kube-system", "p") == "ne-lab-p.kube-system"
    # lab "a" must not sweep lab "a-b"'s namespaces
    assert names.belongs_to("a", "ne-a-w1", ["a-b"])
    assert not names.belongs_to("a", "ne-a-b-w1", ["a-b"])
    assert not names.belongs_to("a", "ne-a-b", ["a-b"])
    assert not names.belongs_to("a", "ne-ab-w1", [])


def test_cli_parses_kubectl_style_commands():
    p = build_parser()
    a = p.parse_args(["get", "pods", "-o", "wide", "-n", "kube-system"])
    assert (a.resource, a.output, a.namespace) == ("pods", "wide", "kube-system")
    a = p.parse_args(["exec", "pod-1", "--", "curl", "-s", "10.0.0.1"])
    assert a.command[-3:] == ["curl", "-s", "10.0.0.1"]
    a = p.parse_args(["expose", "deployment", "np-pods", "--type=NodePort", "--name=np-svc2", "--port=80"])
    assert (a.type, a.service_name, a.port) == ("NodePort", "np-svc2", 80)
