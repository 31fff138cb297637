"""The lab's Kubernetes API through the official Python client (`kubernetes` on PyPI), from the host
with the kubeconfig `netemu up` writes, and from inside a pod with in-cluster config."""
from __future__ import annotations

import json
import sys
import textwrap
import threading
import time

import pytest

from conftest import NP_PODS, NP_SVC, kube_lab

kubernetes = pytest.importorskip("kubernetes", reason="the official Python client is a test dependency")
from kubernetes import client, config, watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with kube_lab(tmp_path_factory, "c", NP_PODS.format(replicas=2) + NP_SVC) as lab:
        lab.api_client = config.new_client_from_config(config_file=lab.kubeconfig)
        yield lab


def test_list_pods_for_all_namespaces(api):
    core = client.CoreV1Api(api.api_client)
    pods = core.list_pod_for_all_namespaces()
    names = {(p.metadata.namespace, p.metadata.name) for p in pods.items}
    assert sum(1 for ns, n in names if ns == "default" and n.startswith("np-pods-")) == 2
    assert ("kube-system", "kube-apiserver-m-k8s") in names
    assert int(pods.metadata.resource_version) > 0


def test_create_watch_patch_delete_a_configmap(api):
    core = client.CoreV1Api(api.api_client)
    w = watch.Watch()
    seen: list[tuple[str, str]] = []
    rv = core.list_namespaced_config_map("default").metadata.resource_version

    def follow():
        for ev in w.stream(core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=10):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.3)
    cm = core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="settings"), data={"a": "1"}))
    assert cm.metadata.uid and cm.metadata.resource_version
    patched = core.patch_namespaced_config_map("settings", "default", {"data": {"b": "2"}})
    assert patched.data == {"a": "1", "b": "2"}
    assert int(patched.metadata.resource_version) > int(cm.metadata.resource_version)
    # optimistic concurrency: an update with a stale resourceVersion is refused with 409
    cm.data = {"stale": "yes"}
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("settings", "default", cm)
    assert e.value.status == 409
    core.delete_namespaced_config_map("settings", "default")
    t.join(15)
    assert seen[:3] == [("ADDED", "settings"), ("MODIFIED", "settings"), ("DELETED", "settings")], seen
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("settings", "default")
    assert e.value.status == 404


def test_scale_a_deployment_through_the_scale_subresource(api):
    apps = client.AppsV1Api(api.api_client)
    apps.patch_namespaced_deployment_scale("np-pods", "default", {"spec": {"replicas": 3}})
    deadline = time.time() + 30
    while time.time() < deadline:
        d = apps.read_namespaced_deployment("np-pods", "default")
        if d.status.ready_replicas == 3:
            break
        time.sleep(0.2)
    assert d.status.ready_replicas == 3
    assert apps.read_namespaced_deployment_scale("np-pods", "default").spec.replicas == 3


def test_invalid_object_is_422_with_causes_and_nothing_is_created(api):
    apps = client.AppsV1Api(api.api_client)
    body = json.loads(json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "broken"},
        "spec": {"replicas": -1, "selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "x"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))
    with pytest.raises(ApiException) as e:
        apps.create_namespaced_deployment("default", body)
    assert e.value.status == 422
    status = json.loads(e.value.body)
    assert status["reason"] == "Invalid"
    assert any(c["field"] == "spec.replicas" for c in status["details"]["causes"])
    with pytest.raises(ApiException) as e:
        apps.read_namespaced_deployment("broken", "default")
    assert e.value.status == 404


def test_read_pod_log(api):
    core = client.CoreV1Api(api.api_client)
    pod = core.list_namespaced_pod("default", label_selector="app=np-pods").items[0].metadata.name
    assert "listening" in core.read_namespaced_pod_log(pod, "default")
    assert core.read_namespaced_pod_log(pod, "default", tail_lines=0) == ""


def test_a_pod_lists_pods_with_its_service_account_token(api, tmp_path):
    """In-cluster config: https://kubernetes.default.svc (10.x.0.1:443 -> m-k8s:6443), the mounted
    token and CA, from a process inside a pod."""
    script = tmp_path / "incluster.py"
    script.write_text(textwrap.dedent("""\
        from kubernetes import client, config
        config.load_incluster_config()
        pods = client.CoreV1Api().list_namespaced_pod("default")
        print("PODS", len(pods.items), flush=True)
        import time
        time.sleep(3600)
        """))
    manifest = tmp_path / "operator.yaml"
    manifest.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator"},
        "spec": {"containers": [{"name": "op", "image": "python", "command": [sys.executable, str(script)]}]}}))
    api.run("apply", "-f", str(manifest))
    log = api.wait_for(lambda: (lambda out: out if "PODS" in out else None)(
        api.run("logs", "operator", check=False).stdout), timeout=30, what="the in-cluster client")
    count = int(log.split("PODS")[1].split()[0])
    assert count == len(api.pods()), log  # np-pods and the operator itself
