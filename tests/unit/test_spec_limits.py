"""Sanity limits of the spec layer, shared by lab files and the API: they say why instead of hanging.

YAML alias bombs and oversized documents are refused at once, names over 253 characters, replicas the
lab's pod subnets can never hold and hostNetwork pods are validation errors (kube-system's own
control-process pods excepted), and an empty file is an error rather than the default lab.
"""
from __future__ import annotations

import time

import pytest
import yaml

from netemu.spec import registry
from netemu.api.errors import ApiError
from netemu.spec.documents import YamlLimitError, check_aliases, safe_load_limited
from netemu.spec.errors import SpecError
from netemu.spec.load import load_files, load_text
from netemu.spec.models import Lab, LabNode

# the classic one (kubernetes/kubernetes#83253): 743 bytes, 9^9 strings once expanded
BOMB = """\
apiVersion: v1
data:
  a: &a ["web","web","web","web","web","web","web","web","web"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
kind: ConfigMap
metadata:
  name: yaml-bomb
  namespace: default
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as e:
        load_text(text, "t.yaml")
    return e.value.errors


def test_alias_bomb_is_refused_at_once():
    t0 = time.perf_counter()
    errors = errors_of(BOMB)
    assert time.perf_counter() - t0 < 1.0
    assert len(errors) == 1 and "excessive aliasing" in errors[0] and errors[0].startswith("t.yaml: document 1")


def test_a_self_containing_anchor_is_refused():
    assert "contains itself" in errors_of("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: r}\ndata: &a\n"
                                          "  x: *a\n")[0]


def test_ordinary_aliases_are_fine_and_walked_once():
    text = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, labels: &l {app: web}}\n"
            "spec:\n  replicas: 1\n  selector: {matchLabels: *l}\n  template:\n    metadata: {labels: *l}\n"
            "    spec: {containers: [{name: c, image: nginx}]}\n")
    assert [o.metadata.name for o in load_text(text, "t.yaml").objects] == ["web"]
    # a node repeated by aliases is looked at once: duplicate keys are reported once
    node = yaml.compose("a: &x {k: 1, k: 2}\nb: *x\nc: *x\n")
    from netemu.spec.documents import _duplicate_keys

    assert _duplicate_keys(node) == [("k", 0)]
    assert check_aliases(node) == 10  # two more copies of the mapping and its four scalars
    with pytest.raises(YamlLimitError):
        safe_load_limited(BOMB)


def test_oversized_documents_say_why_quickly():
    t0 = time.perf_counter()
    big = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n  a: " + "x" * (50 * 1024 * 1024) + "\n"
    errors = errors_of(big)
    assert time.perf_counter() - t0 < 5
    assert "50 MiB" in errors[0] and "3 MiB" in errors[0] and "1.5 MiB" in errors[0]
    # over the object limit, under the request limit: read, then refused
    errors = errors_of("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n  a: "
                       + "x" * (2 * 1024 * 1024) + "\n")
    assert "1.5 MiB" in errors[0] and "too large" in errors[0]
    # a ConfigMap's data: 1 MiB, as the API server counts it
    errors = errors_of("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n  a: "
                       + "x" * (1100 * 1024) + "\n")
    assert "data: Too long: must have at most 1048576 bytes" in errors[0]


def test_names_over_253_characters():
    errors = errors_of(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {'a' * 254}}}\n"
                       "spec: {containers: [{name: c, image: nginx}]}\n")
    assert "metadata.name: must be no more than 253 characters, got 254" in errors[0]
    # a kind netemu only stores has the same limit
    errors = errors_of(f"apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: {'d' * 300}}}\nspec: {{}}\n")
    assert any("must be no more than 253 characters, got 300" in e for e in errors), errors
    # 253 is a valid pod name: it runs (its kernel names are hashed, its hostname cut to 63)
    load_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {'a' * 253}}}\n"
              "spec: {containers: [{name: c, image: nginx}]}\n", "t.yaml")


def test_hostname_is_cut_to_a_dns_label():
    from netemu.control.podenv import pod_hostname
    from netemu.spec.models import Pod

    pod = Pod.model_validate({"metadata": {"name": "a" * 62 + "-b" + "c" * 100}, "spec": {"containers": []}})
    assert pod_hostname(pod) == "a" * 62  # 63 characters would end with '-': trimmed, as kubelet does
    pod = Pod.model_validate({"metadata": {"name": "x" * 253}, "spec": {"containers": []}})
    assert len(pod_hostname(pod)) == 63


def test_replicas_beyond_the_pod_subnets():
    errors = errors_of("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1000000\n"
                       "  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n"
                       "    spec: {containers: [{name: c, image: nginx}]}\n")
    assert len(errors) == 1
    assert "spec.replicas: 1000000 pods can never run here" in errors[0]
    assert "4 nodes hold at most 1012 pods" in errors[0] and "nodePodPrefix" in errors[0]
    # at the limit: fine
    load_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1012\n"
              "  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n"
              "    spec: {containers: [{name: c, image: nginx}]}\n", "t.yaml")


def test_host_network_is_refused_for_user_pods():
    errors = errors_of("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
                       "spec: {hostNetwork: true, containers: [{name: c, image: nginx}]}\n")
    assert "spec.hostNetwork: hostNetwork: true is not supported" in errors[0]
    errors = errors_of("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n"
                       "  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n"
                       "    spec: {hostNetwork: true, containers: [{name: c, image: nginx}]}\n")
    assert "spec.template.spec.hostNetwork" in errors[0]


def test_an_empty_file_is_an_error_naming_it(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n\n---\n")
    with pytest.raises(SpecError) as e:
        load_files([str(empty)])
    assert e.value.errors == [f"{empty}: no objects: the file is empty (or holds only comments)"]
    # manifests without a Lab document still get the seeds' lab
    only = tmp_path / "only.yaml"
    only.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    assert [n.name for n in load_files([str(only)]).lab.spec.nodes] == ["m-k8s", "w1-k8s", "w2-k8s", "w3-k8s"]


# --------------------------------------------------------------------------- the same limits through the API
@pytest.fixture
def st():
    from netemu.api.storage import Storage
    from netemu.control import nodes
    from netemu.control.cluster import Cluster
    from netemu.spec.defaults import default_lab

    lab = Lab()
    lab.metadata.name = "unit"
    lab.spec.nodes = [LabNode(name="m-k8s", ip="192.168.1.10", role="control-plane"),
                      LabNode(name="w1-k8s", ip="192.168.1.101")]
    default_lab(lab, file_stem="unit")
    c = Cluster(lab)
    s = Storage(c)
    c.bootstrap()
    for n in c.store.list("Node"):
        nodes.set_ready(c, n, True, "KubeletReady", "ok")
    return s


def _deployment(replicas: int, **pod_spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}], **pod_spec}}}}


def test_the_api_door_has_the_same_limits(st):
    deploy, pod, cm = (registry.by_kind(k) for k in ("Deployment", "Pod", "ConfigMap"))
    with pytest.raises(ApiError) as e:
        st.create(deploy, "default", _deployment(1000000))
    assert e.value.code == 422 and "can never run here" in e.value.message
    st.create(deploy, "default", _deployment(2))
    with pytest.raises(ApiError) as e:  # scale goes through the same validation
        st.patch_scale(deploy, "default", "web", b'{"spec":{"replicas":1000000}}', "application/merge-patch+json")
    assert e.value.code == 422 and "2 nodes hold at most 506 pods" in e.value.message
    with pytest.raises(ApiError) as e:
        st.create(pod, "default", {"metadata": {"name": "p"},
                                   "spec": {"hostNetwork": True, "containers": [{"name": "c", "image": "nginx"}]}})
    assert e.value.code == 422 and "hostNetwork" in e.value.message
    with pytest.raises(ApiError) as e:
        st.create(cm, "default", {"metadata": {"name": "big"}, "data": {"a": "x" * (1024 * 1024 + 1)}})
    assert e.value.code == 422 and "1048576" in e.value.message


def test_kube_systems_own_host_network_pods_stay_editable(st):
    pod = registry.by_kind("Pod")
    st.cluster.reconcile()
    own = [p for p in st.store.list("Pod", "kube-system") if p.spec.host_network]
    assert own, "the control process's mirror and kube-proxy pods share their node's network"
    body = st.get(pod, "kube-system", own[0].metadata.name)
    body["metadata"].setdefault("labels", {})["touched"] = "yes"
    out, _ = st.update(pod, "kube-system", own[0].metadata.name, body)
    assert out["metadata"]["labels"]["touched"] == "yes" and out["spec"]["hostNetwork"] is True
