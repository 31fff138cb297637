"""Limits that fail cleanly (issue 15), without root: a node's pod capacity (kubelet's maxPods, bounded by
its pod subnet and its bridge's ports) in the nodes, the scheduler and validation; enableServiceLinks;
what the kernel refuses at exec, worded as a runtime words it."""
from __future__ import annotations

import errno

import pytest

from netemu.control import podenv
from netemu.dataplane import launcher
from netemu.spec.defaults import BRIDGE_MAX_PODS, default_max_pods, node_pod_limit
from netemu.spec.errors import SpecError
from netemu.spec.load import load_text
from netemu.spec.models import Pod, Service
from clusters import ready_cluster
from test_control import deployment, kubelet_runs_everything


# ---------------------------------------------------------------------------- capacity
@pytest.mark.parametrize("prefix, pods", [(24, 110), (25, 110), (26, 61), (30, 1), (23, 509), (22, 1021),
                                          (21, BRIDGE_MAX_PODS), (16, BRIDGE_MAX_PODS)])
def test_max_pods_is_kubelets_default_raised_or_lowered_to_the_pod_subnet_never_past_the_bridge(prefix, pods):
    assert default_max_pods(prefix) == pods


def test_the_111th_pod_on_a_node_of_default_capacity_stays_pending():
    c, _ = ready_cluster(1)
    assert c.store.get("Node", "", "w1-k8s").status.capacity["pods"] == "110"
    c.apply([deployment(replicas=111)])
    c.reconcile()
    kubelet_runs_everything(c)
    pods = c.store.list("Pod", "default")
    assert sum(1 for p in pods if p.spec.node_name == "w1-k8s") == 110
    [pending] = [p for p in pods if not p.spec.node_name]
    cond = next(x for x in pending.status.conditions if x.type == "PodScheduled")
    assert (cond.status, cond.reason) == ("False", "Unschedulable")
    assert cond.message.startswith("0/2 nodes are available: 1 Too many pods, 1 node(s) had untolerated taint")


LAB = """\
apiVersion: netemu.dev/v1alpha1
kind: Lab
metadata: {{name: limits}}
spec:
  network: 192.168.9.0/24
  nodePodPrefix: {prefix}
  nodes:
  - {{name: m, ip: 192.168.9.10, role: control-plane}}
  - {{name: w, ip: 192.168.9.11, {node}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: p}}
spec: {{containers: [{{name: c, image: nginx}}]}}
"""


def lab_errors(node: str, prefix: int = 24) -> list[str]:
    try:
        load_text(LAB.format(node=node, prefix=prefix), "lab.yaml")
    except SpecError as e:
        return e.errors
    return []


def test_capacity_past_the_bridge_is_refused():
    [e] = lab_errors("capacity: {pods: 2000}", prefix=20)
    assert e == ("lab.yaml: document 1 (Lab/limits): spec.nodes[1].capacity.pods: must be <= 1023, got 2000: "
                 "each pod takes a port of the node's bridge (cni0), and a Linux bridge holds 1,023")
    assert lab_errors("capacity: {pods: 1023}", prefix=20) == []


def test_capacity_past_the_pod_subnet_is_refused():
    [e] = lab_errors("capacity: {pods: 300}")
    assert "spec.nodes[1].capacity.pods: must be <= 253, got 300: each pod takes an address of the node's pod " \
           "subnet, a /24 of podCIDR (spec.nodePodPrefix), which has 253" in e
    [e] = lab_errors("allocatable: {pods: 62}", prefix=26)
    assert "spec.nodes[1].allocatable.pods: must be <= 61, got 62" in e
    assert lab_errors("capacity: {pods: 5}") == []


def test_allocatable_past_the_default_capacity_is_refused():
    [e] = lab_errors("allocatable: {pods: 200}")
    assert "spec.nodes[1].allocatable.pods: must be <= capacity (110, kubelet's maxPods for this pod subnet), " \
           "got 200" in e
    assert lab_errors("allocatable: {pods: 200}, capacity: {pods: 250}") == []


def test_an_invalid_node_pod_prefix_is_reported_once():
    errors = lab_errors("capacity: {pods: 5}", prefix=31)
    assert len(errors) == 1 and "spec.nodePodPrefix" in errors[0]


def test_node_pod_limit_names_what_bounds_it():
    assert node_pod_limit(24)[0] == 253 and "/24" in node_pod_limit(24)[1]
    assert node_pod_limit(16)[0] == 1023 and "bridge" in node_pod_limit(16)[1]


# ---------------------------------------------------------------------------- enableServiceLinks
def _pod(**spec) -> Pod:
    return Pod.model_validate({"metadata": {"namespace": "default", "name": "p"},
                               "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}})


def _services(n: int) -> list[Service]:
    return [Service.model_validate({"metadata": {"namespace": "default", "name": f"s{i}"},
                                    "spec": {"clusterIP": f"10.96.{i // 250}.{i % 250 + 1}",
                                             "ports": [{"port": 80, "protocol": "TCP"}]}}) for i in range(n)]


def test_service_links_in_the_default_namespace_off_keep_the_master_only():
    svcs = _services(3)
    master = Service.model_validate({"metadata": {"namespace": "default", "name": "kubernetes"},
                                     "spec": {"clusterIP": "10.96.0.1",
                                              "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}})
    on = _pod()
    env = podenv.container_env(on, on.spec.containers[0], [*svcs, master], master=master)
    assert env["S2_SERVICE_HOST"] == "10.96.0.3" and env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    off = _pod(enableServiceLinks=False)
    env = podenv.container_env(off, off.spec.containers[0], [*svcs, master], master=master)
    assert not any(k.startswith("S") and k.endswith("_SERVICE_HOST") for k in env)
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and env["KUBERNETES_PORT_443_TCP_PORT"] == "443"


# ---------------------------------------------------------------------------- the kernel's exec limits
def test_two_thousand_services_fit_in_an_exec():
    pod = _pod()
    env = podenv.container_env(pod, pod.spec.containers[0], _services(2000))
    assert len(env) > 14_000
    assert not launcher.exceeds_exec_limits(["sleep", "3600"], env)


def test_past_max_arg_strlen_or_arg_max_exec_is_refused():
    assert launcher.exceeds_exec_limits(["sleep"], {"BIG": "x" * (128 * 1024)})  # one string too long
    assert not launcher.exceeds_exec_limits(["sleep"], {"BIG": "x" * (128 * 1024 - 5)})
    many = {f"V{i}": "y" * 1000 for i in range(10_000)}  # ~10 MB: past ARG_MAX at any stack limit
    assert launcher.exceeds_exec_limits(["sleep"], many)


def test_an_exec_the_kernel_refuses_is_worded_as_runc_words_it(monkeypatch):
    def e2big(*_):
        raise OSError(errno.E2BIG, "Argument list too long")
    monkeypatch.setattr(launcher.os, "execve", e2big)
    with pytest.raises(launcher.ExecFailed) as e:
        launcher._exec(["sleep", "1"], {"PATH": "/usr/bin:/bin"})
    assert str(e.value) == 'unable to start container process: exec: "sleep": argument list too long'
    with pytest.raises(launcher.ExecFailed, match=r'exec: "no-such-program": executable file not found in \$PATH'):
        launcher._exec(["no-such-program"], {"PATH": "/usr/bin:/bin"})
