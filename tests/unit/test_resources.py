"""Resource quantities, the pod-level cgroup settings kubelet derives from requests and limits (v1 and
v2), reading usage back from cgroup files, and the `top` tables. No root: cgroups are plain
directories here."""
from __future__ import annotations

import os
from fractions import Fraction
from types import SimpleNamespace

import pytest

from netemu.cli import top_cmds
from netemu.dataplane import metrics as metrics_mod
from netemu.dataplane import resources
from netemu.dataplane.metrics import MetricsCollector, PodRef, top_nodes, top_pods
from netemu.spec.autoscaling import (
    QuantityError, format_milli, format_quantity, milli_value, parse_quantity, resource_problems, value,
)
from netemu.spec.models import Container, Pod, PodSpec


# --------------------------------------------------------------------------- quantities
@pytest.mark.parametrize("text,exact", [
    ("50m", Fraction(1, 20)), ("0.5", Fraction(1, 2)), ("1", 1), (".5", Fraction(1, 2)), ("+2", 2),
    ("128Mi", 128 << 20), ("1Gi", 1 << 30), ("1G", 10 ** 9), ("1.5Gi", 3 << 29), ("1k", 1000), ("1Ki", 1024),
    ("1e3", 1000), ("1E3", 1000), ("1.5e-3", Fraction(3, 2000)), ("100u", Fraction(1, 10000)), ("3n", Fraction(3, 10 ** 9)),
    ("2E", 2 * 10 ** 18), ("1Ei", 1 << 60), ("0", 0), ("-1", -1),
    (1, 1), (0.25, Fraction(1, 4)), (2.0, 2),
])
def test_parse_quantity(text, exact):
    assert parse_quantity(text) == exact


@pytest.mark.parametrize("bad", ["", "m", "1mm", "1 Gi", "1KB", "abc", "1.2.3", "Gi", "1e", "--1", True])
def test_parse_quantity_rejects(bad):
    with pytest.raises(QuantityError):
        parse_quantity(bad)


def test_milli_and_whole_values_round_up_like_quantity():
    assert milli_value("50m") == 50
    assert milli_value("0.5") == 500
    assert milli_value("1") == 1000
    assert milli_value("0.1m") == 1  # MilliValue() rounds up
    assert milli_value("2.5") == 2500
    assert value("128Mi") == 134217728
    assert value("0.5") == 1  # Value() rounds up
    assert value("1.5Ki") == 1536
    assert value("129e6") == 129000000


@pytest.mark.parametrize("milli,text", [(0, "0"), (1, "1m"), (250, "250m"), (1500, "1500m"), (2000, "2"),
                                        (12_000_000, "12k"), (10_485_760_000, "10485760"), (10 ** 12, "1G"), (10 ** 9, "1M")])
def test_format_milli_is_canonical_decimal_si(milli, text):
    assert format_milli(milli) == text


def test_format_quantity():
    assert format_quantity("0.5") == "500m"
    assert format_quantity("1000m") == "1"


# --------------------------------------------------------------------------- pod settings
def pod(*containers, init=()) -> Pod:
    def c(i, r):
        return Container.model_validate({"name": f"c{i}", "image": "nginx", "resources": r} if r is not None
                                        else {"name": f"c{i}", "image": "nginx"})
    return Pod(spec=PodSpec(containers=[c(i, r) for i, r in enumerate(containers)],
                            init_containers=[c(100 + i, r) for i, r in enumerate(init)] or None))


def test_seed_values_give_burstable_shares_and_quota():
    # the seed's walkthrough: requests cpu 10m, limits cpu 50m
    res = resources.pod_resources(pod({"requests": {"cpu": "10m"}, "limits": {"cpu": "50m"}}).spec)
    assert res.qos == "Burstable"
    assert res.cpu_shares == 10  # 10m * 1024 / 1000
    assert res.cpu_quota_us == 5000 and res.cpu_period_us == 100_000  # 5% of a core
    assert res.memory_limit_bytes is None
    assert res.files(v2=False) == [("cpu.shares", "10"), ("cpu.cfs_period_us", "100000"),
                                   ("cpu.cfs_quota_us", "5000")]
    assert res.files(v2=True) == [("cpu.weight", "1"), ("cpu.max", "5000 100000"), ("memory.max", "max")]


def test_guaranteed_pod_gets_requests_from_limits():
    res = resources.pod_resources(pod({"limits": {"cpu": "500m", "memory": "128Mi"}}).spec)
    assert res.qos == "Guaranteed"
    assert res.cpu_shares == 512 and res.cpu_quota_us == 50_000
    assert res.memory_limit_bytes == 128 << 20
    assert res.files(v2=False)[-2:] == [("memory.limit_in_bytes", str(128 << 20)),
                                        ("memory.memsw.limit_in_bytes", str(128 << 20))]
    assert ("memory.max", str(128 << 20)) in res.files(v2=True)
    assert ("memory.swap.max", "0") in res.files(v2=True)
    # v2 weight from the shares, as runc converts them
    assert res.files(v2=True)[0] == ("cpu.weight", str(1 + (512 - 2) * 9999 // 262142))


def test_best_effort_pod_gets_minimum_shares_and_no_limits():
    res = resources.pod_resources(pod(None, {}).spec)
    assert res.qos == "BestEffort" and res.cpu_shares == 2
    assert res.files(v2=False) == [("cpu.shares", "2"), ("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "-1")]
    assert res.files(v2=True) == [("cpu.weight", "1"), ("cpu.max", "max 100000"), ("memory.max", "max")]


def test_limits_apply_only_when_every_container_declares_them():
    res = resources.pod_resources(pod({"limits": {"cpu": "100m", "memory": "64Mi"}},
                                      {"requests": {"cpu": "200m"}}).spec)
    assert res.qos == "Burstable"
    assert res.cpu_shares == 307  # (100m + 200m) * 1024 / 1000
    assert res.cpu_quota_us is None and res.memory_limit_bytes is None


def test_containers_sum_and_init_containers_take_the_max():
    spec = pod({"limits": {"cpu": "100m", "memory": "64Mi"}}, {"limits": {"cpu": "150m", "memory": "64Mi"}},
               init=[{"limits": {"cpu": "1", "memory": "32Mi"}}]).spec
    res = resources.pod_resources(spec)
    assert res.cpu_limit_milli == 1000  # max(100m + 150m, 1)
    assert res.cpu_quota_us == 100_000
    assert res.memory_limit_bytes == 128 << 20  # max(64Mi + 64Mi, 32Mi)
    assert resources.pod_cpu_request_milli(spec) == 1000


def test_shares_and_quota_bounds():
    assert resources.milli_cpu_to_shares(0) == 2
    assert resources.milli_cpu_to_shares(1) == 2
    assert resources.milli_cpu_to_shares(10_000_000) == 262_144
    assert resources.milli_cpu_to_quota(0) == 0
    assert resources.milli_cpu_to_quota(1) == 1000  # MinQuotaPeriod
    assert resources.milli_cpu_to_quota(2500) == 250_000
    assert resources.shares_to_weight(2) == 1 and resources.shares_to_weight(262_144) == 10_000
    assert resources.shares_to_weight(1024) == 39


def test_resource_problems_are_the_api_servers():
    c = Container.model_validate({"name": "c", "resources": {"requests": {"cpu": "100m", "memory": "lots"},
                                                             "limits": {"cpu": "50m"}}})
    problems = dict(resource_problems(c.resources))
    assert "resources.requests.memory" in problems
    assert problems["resources.requests.cpu"] == "must be less than or equal to cpu limit of 50m, got 100m"
    ok = Container.model_validate({"name": "c", "resources": {"requests": {"cpu": "10m"}, "limits": {"cpu": "50m"}}})
    assert resource_problems(ok.resources) == []


# --------------------------------------------------------------------------- writing to cgroups (fake dirs)
def fake_cgroups(tmp_path, v2: bool):
    if v2:
        bases = {"": str(tmp_path / "netemu" / "lab")}
    else:
        bases = {c: str(tmp_path / c / "netemu" / "lab") for c in ("cpu", "cpuacct", "memory", "pids")}
    return SimpleNamespace(available=True, v2=v2, bases=bases)


def make_pod_dirs(cg, pod_id: str, files: dict[str, dict[str, str]]) -> None:
    for ctrl, base in cg.bases.items():
        d = os.path.join(base, pod_id)
        os.makedirs(d, exist_ok=True)
        for name, text in files.get(ctrl, {}).items():
            with open(os.path.join(d, name), "w") as f:
                f.write(text)


V1_FILES = {"cpu": {"cpu.shares": "1024\n", "cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"},
            "memory": {"memory.limit_in_bytes": "9223372036854771712\n", "memory.memsw.limit_in_bytes": "x\n",
                       "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"}}
V2_FILES = {"": {"cpu.weight": "100\n", "cpu.max": "max 100000\n", "memory.max": "max\n",
                 "memory.swap.max": "max\n", "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"}}


def test_apply_on_v1_writes_the_controller_files(tmp_path):
    cg = fake_cgroups(tmp_path, v2=False)
    make_pod_dirs(cg, "uid-1", V1_FILES)
    p = pod({"requests": {"cpu": "10m"}, "limits": {"cpu": "50m", "memory": "64Mi"}})
    res = resources.apply_pod_resources(cg, "uid-1", p)
    assert res.cpu_quota_us == 5000
    assert resources.read_settings(cg, "uid-1") == {"cpu.shares": "10", "cpu.cfs_quota_us": "5000",
                                                    "cpu.cfs_period_us": "100000",
                                                    "memory.limit_in_bytes": str(64 << 20)}
    assert (tmp_path / "memory/netemu/lab/uid-1/memory.memsw.limit_in_bytes").read_text() == str(64 << 20)
    assert resources.oom_kills(cg, "uid-1") == 2


def test_apply_on_v2_writes_cpu_max_and_memory_max(tmp_path):
    cg = fake_cgroups(tmp_path, v2=True)
    make_pod_dirs(cg, "uid-2", V2_FILES)
    resources.apply_pod_resources(cg, "uid-2", pod({"limits": {"cpu": "250m", "memory": "1Gi"}}))
    got = resources.read_settings(cg, "uid-2")
    assert got == {"cpu.weight": str(1 + (256 - 2) * 9999 // 262142), "cpu.max": "25000 100000",
                   "memory.max": str(1 << 30)}
    assert (tmp_path / "netemu/lab/uid-2/memory.swap.max").read_text() == "0"
    assert resources.oom_kills(cg, "uid-2") == 1


def test_apply_fails_loudly_when_a_controller_file_is_missing(tmp_path):
    cg = fake_cgroups(tmp_path, v2=False)
    make_pod_dirs(cg, "uid-3", {"cpu": {"cpu.shares": ""}})  # no cfs files: cpu controller not usable
    with pytest.raises(resources.ResourceError, match="cpu.cfs_period_us"):
        resources.apply_pod_resources(cg, "uid-3", pod({"limits": {"cpu": "50m"}}))


def test_apply_skips_swap_when_the_kernel_has_no_swap_accounting(tmp_path):
    cg = fake_cgroups(tmp_path, v2=False)
    files = {k: dict(v) for k, v in V1_FILES.items()}
    del files["memory"]["memory.memsw.limit_in_bytes"]
    make_pod_dirs(cg, "uid-4", files)
    resources.apply_pod_resources(cg, "uid-4", pod({"limits": {"memory": "64Mi"}}))
    assert resources.read_settings(cg, "uid-4")["memory.limit_in_bytes"] == str(64 << 20)


def test_unavailable_cgroups_do_nothing():
    assert resources.apply_pod_resources(SimpleNamespace(available=False), "x", pod({})) is None
    assert metrics_mod.read_pod(SimpleNamespace(available=False), "x", 0.0) is None


# --------------------------------------------------------------------------- reading usage
def write_usage(cg, pod_id: str, cpu_ns: int, usage: int, inactive: int) -> None:
    if cg.v2:
        make_pod_dirs(cg, pod_id, {"": {"cpu.stat": f"usage_usec {cpu_ns // 1000}\nuser_usec 1\nsystem_usec 2\n",
                                        "memory.current": f"{usage}\n",
                                        "memory.stat": f"anon 1\nfile 2\ninactive_file {inactive}\nactive_file 3\n"}})
    else:
        make_pod_dirs(cg, pod_id, {"cpuacct": {"cpuacct.usage": f"{cpu_ns}\n"},
                                   "memory": {"memory.usage_in_bytes": f"{usage}\n",
                                              "memory.stat": f"cache 5\ninactive_file 7\ntotal_inactive_file {inactive}\n"}})


@pytest.mark.parametrize("v2", [False, True])
def test_collector_rates_cpu_between_two_samples_and_takes_the_working_set(tmp_path, v2):
    cg = fake_cgroups(tmp_path, v2=v2)
    refs = [PodRef("default", "web-1", "u1", "w1-k8s"), PodRef("default", "web-2", "u2", "w1-k8s"),
            PodRef("kube-system", "dns", "u3", "w2-k8s")]
    clock = [1000.0]
    col = MetricsCollector(cg, resolution=15, clock=lambda: clock[0])
    for i, ref in enumerate(refs):
        write_usage(cg, ref.uid, cpu_ns=10 ** 9, usage=(20 + i) << 20, inactive=4 << 20)
    assert col.due()
    col.sample(refs)
    assert col.snapshot() == {}  # one sample: no rate yet, as metrics-server
    assert not col.due(1010.0) and col.due(1015.0) and col.next_due == 1015.0
    clock[0] = 1015.0
    write_usage(cg, "u1", cpu_ns=10 ** 9 + 750_000_000, usage=30 << 20, inactive=2 << 20)  # 50m over 15 s
    write_usage(cg, "u2", cpu_ns=10 ** 9 + 1000, usage=21 << 20, inactive=4 << 20)  # ~0: rounds up to 1m
    write_usage(cg, "u3", cpu_ns=10 ** 9 + 15 * 10 ** 9, usage=40 << 20, inactive=50 << 20)  # a whole core
    col.sample(refs)
    snap = col.snapshot()
    assert snap[("default", "web-1")].cpu_milli == 50
    assert snap[("default", "web-1")].memory_bytes == 28 << 20
    assert snap[("default", "web-1")].window == 15.0 and snap[("default", "web-1")].timestamp == 1015.0
    assert snap[("default", "web-2")].cpu_milli == 1
    assert snap[("kube-system", "dns")].cpu_milli == 1000
    assert snap[("kube-system", "dns")].memory_bytes == 0  # never negative
    nodes = col.node_usage()
    assert nodes["w1-k8s"][:2] == (51, (28 << 20) + (17 << 20))
    assert nodes["w2-k8s"][:2] == (1000, 0)


def test_collector_forgets_pods_that_are_gone_or_replaced(tmp_path):
    cg = fake_cgroups(tmp_path, v2=False)
    col = MetricsCollector(cg, resolution=1, clock=lambda: 0.0)
    a = PodRef("default", "a", "u1", "w1")
    write_usage(cg, "u1", 0, 1, 0)
    col.sample([a], now=1.0)
    write_usage(cg, "u1", 10 ** 9, 1, 0)
    col.sample([a], now=2.0)
    assert col.snapshot()[("default", "a")].cpu_milli == 1000
    # same name, new pod (uid): starts over
    b = PodRef("default", "a", "u2", "w1")
    write_usage(cg, "u2", 0, 1, 0)
    col.sample([b], now=3.0)
    assert col.snapshot() == {}
    # a pod whose cgroup is gone is dropped
    col.sample([PodRef("default", "zzz", "nope", "w1")], now=4.0)
    assert col.snapshot() == {} and col.node_usage() == {}


def test_top_views(tmp_path):
    from netemu.control.cluster import Cluster
    from netemu.spec.models import Lab, LabNode
    from netemu.control import nodes

    lab = Lab()
    lab.metadata.name = "unit"
    # nodes of 2 CPUs and 2Gi, all of it allocatable (the Lab document sets them per node)
    size = {"capacity": {"cpu": "2", "memory": "2Gi"}, "allocatable": {"memory": "2Gi"}}
    lab.spec.nodes = [LabNode(name="w1-k8s", ip="192.168.1.101", **size),
                      LabNode(name="w2-k8s", ip="192.168.1.102", **size)]
    c = Cluster(lab)
    c.bootstrap()
    for n in c.store.list("Node"):
        nodes.set_ready(c, n, True, "KubeletReady", "ok")
    p = pod({"requests": {"cpu": "10m"}})
    p.metadata.name, p.metadata.namespace, p.spec.node_name = "web-1", "default", "w1-k8s"
    c.store.create(p)
    cg = fake_cgroups(tmp_path, v2=False)
    col = MetricsCollector(cg, resolution=1)
    ref = PodRef("default", "web-1", "u1", "w1-k8s")
    write_usage(cg, "u1", 0, 300 << 20, 0)
    col.sample([ref], now=10.0)
    write_usage(cg, "u1", 500_000_000, 300 << 20, 0)
    col.sample([ref], now=11.0)
    pods = top_pods(col, c.store, "default")
    assert [(m["name"], m["cpu_milli"], m["memory_bytes"]) for m in pods] == [("web-1", 500, 300 << 20)]
    assert top_pods(col, c.store, "kube-system") == []
    nodes_ = {m["name"]: m for m in top_nodes(col, c.store)}
    assert nodes_["w1-k8s"]["cpu_milli"] == 500 and nodes_["w1-k8s"]["cpu_allocatable_milli"] == 2000
    assert nodes_["w1-k8s"]["memory_allocatable_bytes"] == 2 << 30
    assert nodes_["w2-k8s"]["cpu_milli"] == 0  # ready, no pods: uses nothing
    headers, rows = top_cmds.node_rows(list(nodes_.values()))
    assert headers == ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]
    assert rows[0] == ["w1-k8s", "500m", "25%", "300Mi", "14%"]
    assert rows[1] == ["w2-k8s", "0m", "0%", "0Mi", "0%"]


def test_top_tables_like_kubectl():
    items = [{"namespace": "default", "name": "b", "cpu_milli": 3, "memory_bytes": 5 << 20},
             {"namespace": "default", "name": "a", "cpu_milli": 40, "memory_bytes": (7 << 20) + 100},
             {"namespace": "kube-system", "name": "coredns-x", "cpu_milli": 1, "memory_bytes": 9 << 20}]
    headers, rows = top_cmds.pod_rows(items, all_namespaces=False)
    assert headers == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert rows[:2] == [["a", "40m", "7Mi"], ["b", "3m", "5Mi"]]
    headers, rows = top_cmds.pod_rows(items, all_namespaces=True, sort_by="memory")
    assert headers[0] == "NAMESPACE" and rows[0] == ["kube-system", "coredns-x", "1m", "9Mi"]
    _, rows = top_cmds.node_rows([{"name": "w3-k8s", "cpu_milli": None, "memory_bytes": None,
                                   "cpu_allocatable_milli": 2000, "memory_allocatable_bytes": 1}])
    assert rows == [["w3-k8s", "<unknown>", "<unknown>", "<unknown>", "<unknown>"]]
