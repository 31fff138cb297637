"""Limits that end cleanly instead of failing for ever (issue 15), on one small lab: a control plane and
one worker that holds CAPACITY pods (its Lab document's capacity). 2,000 Services in one namespace and
its pods still start, built-in stand-ins and exec'd programs alike (their environment, ~14,000
variables, is too big for one launcher message: it travels in a memfd); `enableServiceLinks: false`
leaves the Services' variables out but not the API server's; an environment past the kernel's exec limit
fails that container with the runtime's words and nothing else; the pod one past the node's capacity
stays Pending with kube-scheduler's reason, and one bound to the full node is rejected by its kubelet.
"""
from __future__ import annotations

import pytest

from conftest import NP_PODS, kube_lab

pytestmark = pytest.mark.e2e

CAPACITY = 8
SERVICES = 2000


def _one_worker_of_small_capacity(lab) -> None:
    lab.node_ips = {n: lab.node_ips[n] for n in ("m-k8s", "w1-k8s")}
    lab.node_fields["w1-k8s"] = f"capacity: {{pods: {CAPACITY}}}"


def _services(n: int) -> str:
    return "".join(f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{ports: [{{port: 80}}]}}\n"
                   for i in range(n))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    # the Services come with the lab: `apply` of 2,000 objects, one request each, takes twice as long
    with kube_lab(tmp_path_factory, "l", NP_PODS.format(replicas=1) + _services(SERVICES),
                  _one_worker_of_small_capacity) as lab:
        yield lab


def _apply(lab, text: str, name: str) -> None:
    path = lab.tmp / name
    path.write_text(text)
    lab.run("apply", "-f", str(path), timeout=120)


def _sleeper(name: str, spec: str = "", env: str = "") -> str:
    return (f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{spec}  containers:\n"
            f"  - {{name: c, image: busybox, command: [sleep, '3600']{env}}}\n")


def _running(lab, *names: str):
    def check():
        pods = {p["metadata"]["name"]: p for p in lab.pods()}
        ok = all(pods.get(n, {}).get("status", {}).get("phase") == "Running" for n in names)
        return pods if ok else False
    return check


def _environ(pod: dict) -> dict[str, str]:
    """An exec'd program's environment, as the kernel shows it."""
    pid = int(pod["status"]["containerStatuses"][0]["containerID"].split("//")[1])
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v]
    return {k.decode(): v.decode() for k, v in pairs}


def _np_pods_running(lab, n: int):
    def check():
        pods = [p for p in lab.pods("app=np-pods") if p["status"].get("phase") == "Running"]
        return pods if len(pods) >= n else False
    return check


def test_pods_start_among_2000_services_and_service_links_off_leaves_theirs_out(small):
    _apply(small, _sleeper("links") + _sleeper("nolinks", "  enableServiceLinks: false\n"), "pods.yaml")
    small.run("scale", "deployment", "np-pods", "--replicas=2")  # a built-in stand-in among the Services
    pods = small.wait_for(_running(small, "links", "nolinks"), timeout=60, what="both pods Running")
    small.wait_for(_np_pods_running(small, 2), timeout=60, what="2 np-pods Running")
    last = small.get("services", f"s{SERVICES - 1}")[0]["spec"]["clusterIP"]
    master = small.get("services", "kubernetes")[0]["spec"]["clusterIP"]
    env = _environ(pods["links"])
    assert env[f"S{SERVICES - 1}_SERVICE_HOST"] == last
    assert sum(1 for k in env if k.endswith("_SERVICE_HOST")) == SERVICES + 1  # and the master's
    env = _environ(pods["nolinks"])
    assert [k for k in env if k.endswith("_SERVICE_HOST")] == ["KUBERNETES_SERVICE_HOST"]
    assert env["KUBERNETES_SERVICE_HOST"] == master and env["KUBERNETES_SERVICE_PORT"] == "443"


def test_an_environment_past_the_kernels_limit_fails_that_container_as_a_runtime_says(small):
    """One variable over MAX_ARG_STRLEN (128 KiB): execve fails with E2BIG, for an exec'd program and for a
    built-in stand-in (the image's program would be exec'd) alike; the rest of the lab goes on."""
    big = ", env: [{name: BIG, value: " + "x" * (200 * 1024) + "}]"
    _apply(small, _sleeper("toobig", env=big) + f"  - {{name: web, image: nginx{big}}}\n", "toobig.yaml")

    def failed():
        out = small.run("describe", "pod", "toobig", check=False).stdout
        return out if all(f'exec: "{p}": argument list too long' in out for p in ("sleep", "nginx")) else False
    out = small.wait_for(failed, timeout=30, what="both containers' events naming the limit")
    assert "unable to start container process" in out and "Failed" in out
    statuses = small.get("pods", "toobig")[0]["status"]["containerStatuses"]
    assert {s["lastState"]["terminated"]["reason"] for s in statuses} == {"StartError"}
    small.run("delete", "pod", "toobig", "--grace-period", "0")
    small.wait_for(lambda: all(p["metadata"]["name"] != "toobig" for p in small.pods(running_only=False)),
                   timeout=30, what="toobig gone (it holds a place on the node until then)")


def test_the_pod_one_past_the_nodes_capacity_stays_pending_as_kube_scheduler_says(small):
    on_node = [p for p in small.get("pods", "-A") if p["spec"].get("nodeName") == "w1-k8s"
               and p["status"].get("phase") not in ("Succeeded", "Failed")]  # kube-proxy and coredns too
    np_pods = len(small.pods("app=np-pods"))
    small.run("scale", "deployment", "np-pods", f"--replicas={np_pods + CAPACITY - len(on_node) + 1}")

    def one_pending():
        pending = [p for p in small.pods("app=np-pods") if not p["spec"].get("nodeName")]
        return pending if len(pending) == 1 else False
    [pod] = small.wait_for(one_pending, timeout=30, what="one np-pods pod left unscheduled")
    want = ("0/2 nodes are available: 1 Too many pods, 1 node(s) had untolerated taint "
            "{node-role.kubernetes.io/control-plane: }. preemption: 0/2 nodes are available: "
            "1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling.")
    name = pod["metadata"]["name"]

    def described():
        out = small.run("describe", "pod", name).stdout
        return out if want in out else False
    out = small.wait_for(described, timeout=15, what="the FailedScheduling event")
    assert "FailedScheduling" in out and small.get("pods", name)[0]["status"]["phase"] == "Pending"
    # bound to the full node by name, past the scheduler: its kubelet rejects it
    _apply(small, _sleeper("bound", "  nodeName: w1-k8s\n"), "bound.yaml")

    def rejected():
        st = small.get("pods", "bound")[0]["status"]
        return st if st.get("phase") == "Failed" else False
    st = small.wait_for(rejected, timeout=15, what="the kubelet's rejection")
    assert st["reason"] == "OutOfpods"
    assert st["message"].startswith("Pod was rejected: Node didn't have enough resource: pods, requested: 1, ")
    assert st["message"].endswith(f"capacity: {CAPACITY}")
