"""Recovery of manifests that lost their indentation: schema-guided, comment-aware, and a no-op on
well-indented YAML."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml
from pydantic import Field

from netemu.spec.documents import rendered_chunks
from netemu.spec.errors import SpecError
from netemu.spec.flat import looks_flattened, recover
from netemu.spec.load import load_files, load_text, recovered_yaml
from netemu.spec.models import KINDS, IntOrString, K8sModel, ObjectMeta

SEEDS = Path(__file__).resolve().parents[2] / "topologies" / "seeds"


def recovered(text: str, kinds=KINDS) -> list[dict]:
    docs = recover(text, kinds)
    assert docs is not None, "not recognised as flattened"
    return [yaml.safe_load(d.text) for d in docs]


# --------------------------------------------------------------------------- detection
def test_detection():
    assert looks_flattened("apiVersion: v1\nkind: Service\nmetadata:\nname: x\n")  # column 0
    assert looks_flattened("apiVersion: v1 kind: Service metadata: name: x")  # one line
    assert not looks_flattened((SEEDS / "deployment-services.yaml").read_text())
    assert not looks_flattened((SEEDS.parent / "lab.yaml").read_text())
    assert not looks_flattened("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
    assert not looks_flattened("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n")
    assert recover("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n", KINDS) is None


def test_well_indented_files_pass_through_byte_for_byte():
    for path in (SEEDS / "deployment-services.yaml", SEEDS.parent / "lab.yaml"):
        assert recovered_yaml(str(path)) == path.read_text()
    # in a mixed file only the flattened document changes
    np_svc = (SEEDS / "np-svc.yaml").read_text()
    first_doc = np_svc.split("---\n")[0]
    assert recovered_yaml(str(SEEDS / "np-svc.yaml")).startswith(first_doc + "---\n")


# --------------------------------------------------------------------------- the seeds
def test_seed_000_np_svc_is_re_indented_exactly():
    text = (SEEDS / "np-svc.yaml").read_text().split("---\n")[1]
    (doc,) = recover(text, KINDS)
    assert doc.recovered and doc.kind == "Service" and doc.notes == []
    assert doc.text == """\
apiVersion: v1
kind: Service
metadata:
  name: np-svc
spec:
  selector:
    app: np-pods
  ports:
  - name: http
    protocol: TCP
    port: 80
    targetPort: 80
    nodePort: 30000
  type: NodePort
"""


def test_seed_001_one_liners_comments_and_inline_separator():
    fmt = recovered_yaml(str(SEEDS / "counter.yaml"))
    docs = list(yaml.safe_load_all(fmt))
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Deployment", "counter"), ("Deployment", "redis"), ("Service", "redis"),
        ("Service", "counter-app"), ("Service", "counter-lb")]
    # the blog's // comments come back as YAML comments, next to what they commented
    assert "# counter-app.yml\n# netemu: re-indented" in fmt
    assert "# Service 예시 // counter-redis-svc.yml\n# netemu: re-indented" in fmt
    assert '      protocol: TCP  # 하나의 YAML파일에 여러 개의 리소스를 정의할 "---" 구분자로 사용합니다.\n' in fmt
    assert "    nodePort: 31000  # counter app을 해당 노드의 31000으로 오픈한다.\n  selector:\n" in fmt
    # and what fmt shows is what the loader reads
    original = load_files([str(SEEDS / "counter.yaml")]).objects
    assert [o.dump() for o in load_text(fmt, "counter.yaml").objects] == [o.dump() for o in original]


def test_seed_002_comment_lines_stay_where_they_were():
    fmt = recovered_yaml(str(SEEDS / "nginx-hello.yaml"))
    assert "  name: nginx-hello\n  # namespace: default\n  labels:\n    app: nginx-hello\n" in fmt
    assert "        app: nginx-hello  # Service 등에서 참조할 Label 이름\n" in fmt


def test_seed_000_typo_stays_an_unknown_field_of_its_port():
    (doc,) = recovered((SEEDS / "ingress-nginx-controller.yaml").read_text())
    assert doc["spec"]["ports"][0] == {"name": "http", "protocol": "TCP", "port": 80, "target": 80, "nodePort": 30100}
    assert doc["spec"]["selector"] == {"app.kubernetes.io/name": "ingress-nginx"}
    assert doc["spec"]["type"] == "NodePort"


def test_seed_000_block_scalar_without_indentation_runs_to_the_end_of_the_document():
    (doc,) = recovered((SEEDS / "metallb-config.yaml").read_text())
    assert doc["metadata"] == {"namespace": "metallb-system", "name": "config"}
    assert doc["data"]["config"].splitlines() == [
        "address-pools:", "- name: nginx-ip-range", "protocol: layer2 # 로드 밸런서의 동작 방식", "address:",
        "- 192.168.1.11-192.168.1.13 # 로드 밸런서의 Ext 주소"]


SEED_000_INGRESS = """\
apiVersion: [api 버전]
kind: Ingress
metadata:
name: ingress-nginx
annotations:
nginx.ingress.kubernetes.io/rewrite-target: / # 메타데이터의 기록, 타겟은 "/"
spec:
rules:
- http:
paths:
- path:
backend:
serviceName: hname-svc-default # 클러스터 IP 서비스 이름
servicePort: 80
- path: /ip
backend:
serviceName: ip-svc
servicePort: 80
- path: [경로]
backend:
serviceName: [클러스터 IP 서비스 이름]
servicePort: [서비스 포트]
"""


class IngressBackend(K8sModel):
    service_name: Optional[str] = None
    service_port: Optional[IntOrString] = None


class HTTPIngressPath(K8sModel):
    path: Optional[str] = None
    backend: IngressBackend


class HTTPIngressRuleValue(K8sModel):
    paths: list[HTTPIngressPath]


class IngressRule(K8sModel):
    host: Optional[str] = None
    http: Optional[HTTPIngressRuleValue] = None


class IngressSpec(K8sModel):
    rules: Optional[list[IngressRule]] = None


class Ingress(K8sModel):
    kind: Literal["Ingress"] = "Ingress"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: IngressSpec


def test_a_kind_without_a_model_is_left_as_written():
    without = {k: v for k, v in KINDS.items() if k != "Ingress"}
    (doc,) = recover(SEED_000_INGRESS, without)
    assert not doc.recovered and doc.kind == "Ingress" and doc.text == SEED_000_INGRESS
    crontab = SEED_000_INGRESS.replace("kind: Ingress", "kind: CronTab")
    with pytest.raises(SpecError, match='unknown kind "CronTab"'):
        load_text(crontab, "crontab.yaml")


def test_adding_a_model_makes_the_seed_ingress_recoverable():
    (doc,) = recovered(SEED_000_INGRESS, {**KINDS, "Ingress": Ingress})
    assert doc["metadata"] == {"name": "ingress-nginx",
                               "annotations": {"nginx.ingress.kubernetes.io/rewrite-target": "/"}}
    paths = doc["spec"]["rules"][0]["http"]["paths"]
    assert paths[0] == {"path": None, "backend": {"serviceName": "hname-svc-default", "servicePort": 80}}
    assert paths[1] == {"path": "/ip", "backend": {"serviceName": "ip-svc", "servicePort": 80}}
    assert paths[2]["backend"]["serviceName"] == ["클러스터 IP 서비스 이름"]  # the blog's placeholder, a flow list
    assert len(paths) == 3


# --------------------------------------------------------------------------- the heuristics
def test_a_dash_opens_an_item_of_the_list_its_keys_fit():
    (doc,) = recovered("apiVersion: apps/v1 kind: Deployment metadata: name: two spec: selector: matchLabels: "
                       "app: two template: metadata: labels: app: two spec: containers: - name: web image: nginx "
                       "ports: - containerPort: 80 name: http - containerPort: 443 - name: sidecar image: busybox "
                       'command: - sleep - "3600" env: - name: A value: b')
    web, sidecar = doc["spec"]["template"]["spec"]["containers"]
    assert web == {"name": "web", "image": "nginx", "ports": [{"containerPort": 80, "name": "http"},
                                                              {"containerPort": 443}]}
    assert sidecar == {"name": "sidecar", "image": "busybox", "command": ["sleep", "3600"],
                       "env": [{"name": "A", "value": "b"}]}


def test_free_form_maps_end_at_a_key_of_an_enclosing_object():
    (doc,) = recovered("apiVersion: v1 kind: Service metadata: name: web labels: name: web app: x "
                       "spec: selector: app: web type: frontend ports: - port: 80 type: NodePort")
    assert doc["metadata"] == {"name": "web", "labels": {"name": "web", "app": "x"}}  # name was taken: a label
    assert doc["spec"]["selector"] == {"app": "web", "type": "frontend"}  # not a Service type: a label
    assert doc["spec"]["type"] == "NodePort"


def test_slash_comment_runs_to_the_next_key_valid_here():
    (doc,) = recovered("apiVersion: v1 kind: Service metadata: name: web labels: app: web // the app label "
                       "tier: front spec: ports: - port: 80 // note: see docs selector: app: web")
    # in a free-form map any key ends the comment; elsewhere only a key of an open object does
    assert doc["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert doc["spec"] == {"ports": [{"port": 80}], "selector": {"app": "web"}}


def test_slash_comment_on_a_flattened_line_ends_with_the_line():
    (doc,) = recovered("apiVersion: v1\nkind: Service\nmetadata:\nname: web\nspec:\nports: // the ports\n"
                       "- port: 80\n// the pods\nselector:\napp: web\n")
    assert doc["spec"] == {"ports": [{"port": 80}], "selector": {"app": "web"}}


def test_indented_block_in_a_flattened_document_ends_with_its_indentation():
    (doc,) = recovered("apiVersion: v1\nkind: ConfigMap\nmetadata:\nname: c\ndata:\nscript: |\n  echo hi\n"
                       "  echo there\nother: value\n")
    assert doc["data"] == {"script": "echo hi\necho there\n", "other": "value"}


def test_wrapped_plain_scalar_and_notes():
    docs = recover("apiVersion: v1\nkind: ConfigMap\nmetadata:\nname: c\nname: d\ndata:\nmotd: hello\nworld\n", KINDS)
    (doc,) = docs
    assert yaml.safe_load(doc.text)["data"] == {"motd": "hello world"}
    assert yaml.safe_load(doc.text)["metadata"] == {"name": "d"}
    assert doc.notes == ["name appears twice in one place; the last one wins"]
    # the loader passes the notes on as warnings
    spec = load_text("apiVersion: v1\nkind: Namespace\nmetadata:\nname: x\n- stray\n", "n.yaml")
    assert spec.objects[0].metadata.name == "x"
    assert "n.yaml: document 1: ignored a '-' that starts no list (line 5)" in spec.warnings


def test_quotes_keep_scalars_whole_and_typed():
    (doc,) = recovered('apiVersion: v1 kind: ConfigMap metadata: name: c data: greeting: "hello world: 1" '
                       "version: '2' flags: [a, b] empty: {}")
    assert doc["data"] == {"greeting": "hello world: 1", "version": "2", "flags": ["a", "b"], "empty": {}}


def test_two_flattened_documents_without_separator_line():
    text = ("apiVersion: v1\nkind: Namespace\nmetadata:\nname: one\n"
            "apiVersion: v1\nkind: Namespace\nmetadata:\nname: two\n")
    assert [d["metadata"]["name"] for d in recovered(text)] == ["one", "two"]
    assert rendered_chunks(text, KINDS).count("---\n") == 1


def test_a_flattened_lab_document():
    spec = load_text("apiVersion: netemu.dev/v1alpha1 kind: Lab metadata: name: flat spec: nodes: - name: m ip: "
                     "192.168.1.10 role: control-plane - name: w ip: 192.168.1.101 proxyMode: ipvs", "flat.yaml")
    assert spec.lab.metadata.name == "flat" and spec.lab.spec.proxy_mode == "ipvs"
    assert [(n.name, n.ip, n.role) for n in spec.lab.spec.nodes] == [
        ("m", "192.168.1.10", "control-plane"), ("w", "192.168.1.101", "worker")]


def test_a_flattened_document_without_kind_is_an_error():
    with pytest.raises(SpecError) as e:
        load_text("apiVersion: v1 kind: Namespace metadata: name: a\napiVersion: v1 metadata: name: b spec: x: y", "k.yaml")
    assert e.value.errors == ["k.yaml: document 2: kind: required field is missing (and without it netemu cannot "
                              "rebuild this manifest, which lost its indentation)"]


def test_a_misspelt_enum_value_stays_with_its_field():
    (doc,) = recovered("apiVersion: v1 kind: Service metadata: name: web spec: selector: app: web type: Nodeport "
                       "ports: - port: 80")
    assert doc["spec"]["selector"] == {"app": "web"} and doc["spec"]["type"] == "Nodeport"
    with pytest.raises(SpecError, match="spec.type: must be one of"):
        load_text("apiVersion: v1 kind: Service metadata: name: web spec: selector: app: web type: Nodeport "
                  "ports: - port: 80", "t.yaml")
