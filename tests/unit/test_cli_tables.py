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


def _table(kind: str, group: str, objs: list[dict], now: float = 1_700_000_000.0) -> dict:
    from netemu.api import tables as api_tables

    return api_tables.table(kind, group, objs, now)


def _pod(name: str, ns: str = "default", ip: str = "172.16.1.5") -> dict:
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": "2023-11-14T22:12:20Z"},
            "spec": {"nodeName": "w1-k8s", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": ip, "containerStatuses": [
                {"name": "c", "ready": True, "restartCount": 0, "state": {"running": {}}}]}}


def test_server_tables_print_like_kubectl():
    t = _table("Pod", "", [_pod("np-pods-a"), _pod("np-pods-bb")])
    lines = tables.print_table(t).splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert lines[1].split() == ["np-pods-a", "1/1", "Running", "0", "60s"]
    wide = tables.print_table(t, wide=True).splitlines()
    assert wide[0].split()[5:] == ["IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]
    assert "NOMINATED NODE   READINESS GATES" in wide[0]
    assert wide[2].split()[5:] == ["172.16.1.5", "w1-k8s", "<none>", "<none>"]
    everywhere = tables.print_table(t, with_namespace=True, kind_prefix="pod").splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert everywhere[1].split()[:2] == ["default", "pod/np-pods-a"]


def test_service_columns():
    svc = {"metadata": {"name": "np-svc", "namespace": "default"},
           "spec": {"type": "NodePort", "clusterIP": "10.96.1.2", "selector": {"app": "np"},
                    "ports": [{"port": 80, "nodePort": 30000, "protocol": "TCP"}]}}
    lb = {"metadata": {"name": "lb", "namespace": "default"},
          "spec": {"type": "LoadBalancer", "clusterIP": "10.96.1.3", "ports": [{"port": 80, "nodePort": 31000}]},
          "status": {}}
    rows = tables.table_rows(_table("Service", "", [svc, lb]), wide=False)
    assert rows[0][:5] == ["np-svc", "NodePort", "10.96.1.2", "<none>", "80:30000/TCP"]
    assert rows[1][3] == "<pending>"
    assert tables.table_header(_table("Service", "", [svc]), wide=True)[-1] == "SELECTOR"


def test_endpoints_column_truncates_like_kubectl():
    ep = {"metadata": {"name": "np-svc", "namespace": "default"},
          "subsets": [{"addresses": [{"ip": f"10.0.0.{i}"} for i in range(5)], "ports": [{"port": 80}]}]}
    assert tables.table_rows(_table("Endpoints", "", [ep]), wide=False)[0][1] == \
        "10.0.0.0:80,10.0.0.1:80,10.0.0.2:80 + 2 more..."


def test_cells_as_kubectl_prints_them():
    assert [tables.cell_text(v) for v in (None, True, False, 3, 2.0, "a\nb", "x")] == \
        ["<none>", "true", "false", "3", "2", "a...", "x"]


def test_table_alignment():
    out = tables.render(["NAME", "READY"], [["a-long-name", "1/1"], ["b", "0/1"]])
    lines = out.splitlines()
    assert lines[0].index("READY") == lines[1].index("1/1") == len("a-long-name") + 3


def test_names_fit_interfaces_and_do_not_collide():
    assert names.host_link("lab") == "ne-lab"
    long = names.host_link("a-very-long-lab-name")
    assert len(long) <= 15 and long.startswith("ne-")
    assert len(names.pod_veth("default", "x" * 60)) <= 15
    assert names.pod_netns("lab", "default", "p") == "ne-lab_default_p"
    assert names.pod_netns("lab", "kube-system", "p") == "ne-lab_kube-system_p"
    # lab "a" must not sweep lab "a-b"'s namespaces (more in test_names.py)
    assert names.belongs_to("a", "ne-a_w1")
    assert not names.belongs_to("a", "ne-a-b_w1")
    assert not names.belongs_to("a", "ne-a-b")
    assert not names.belongs_to("a", "ne-ab_w1")


def test_cli_parses_kubectl_style_commands():
    p = build_parser()
    a = p.parse_args(["get", "pods", "-o", "wide", "-n", "kube-system"])
    assert (a.resource, a.output, a.namespace) == ("pods", "wide", "kube-system")
    a = p.parse_args(["exec", "pod-1", "--", "curl", "-s", "10.0.0.1"])
    assert a.command[-3:] == ["curl", "-s", "10.0.0.1"]
    a = p.parse_args(["expose", "deployment", "np-pods", "--type=NodePort", "--name=np-svc2", "--port=80"])
    assert (a.type, a.service_name, a.port) == ("NodePort", "np-svc2", 80)
