"""Loading lab files: the seed manifests (flattened as the blogs show them) load to the right objects,
defaults are applied, the default lab is the seeds' one, YAML errors name file, document and line."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from netemu.spec.defaults import image_pull_policy, lab_name_from_file
from netemu.spec.errors import SpecError
from netemu.spec.load import load_files, load_objects, load_text, recovered_yaml
from netemu.spec.models import ConfigMap, Deployment, Lab, Service

SEEDS = Path(__file__).resolve().parents[2] / "topologies" / "seeds"
LAB_FILE = SEEDS.parent / "lab.yaml"


def load_seed(name: str):
    return load_files([str(SEEDS / name)])


def by_name(objects, kind: str, name: str):
    found = [o for o in objects if o.kind == kind and o.metadata.name == name]
    assert len(found) == 1, f"{kind}/{name} not loaded: {[(o.kind, o.metadata.name) for o in objects]}"
    return found[0]


# --------------------------------------------------------------------------- the seeds
def test_seed_000_np_svc_nodeport_service_and_its_deployment():
    spec = load_seed("np-svc.yaml")
    assert [(o.kind, o.metadata.name) for o in spec.objects] == [("Deployment", "np-pods"), ("Service", "np-svc")]
    dep = by_name(spec.objects, "Deployment", "np-pods")
    assert dep.spec.replicas == 1
    assert dep.spec.template.spec.containers[0].image == "sysnet4admin/echo-hname"
    assert dep.spec.template.metadata.labels == {"app": "np-pods"}
    svc = by_name(spec.objects, "Service", "np-svc")
    assert svc.metadata.namespace == "default"
    assert svc.spec.type == "NodePort"
    assert svc.spec.selector == {"app": "np-pods"}
    (port,) = svc.spec.ports
    assert (port.name, port.protocol, port.port, port.target_port, port.node_port) == ("http", "TCP", 80, 80, 30000)
    assert f"{SEEDS / 'np-svc.yaml'}: document 2 had lost its indentation; netemu re-indented it by its schema" in spec.warnings[0]


def test_seed_001_counter_one_liners_with_inline_separator():
    spec = load_seed("counter.yaml")
    assert [(o.kind, o.metadata.name) for o in spec.objects] == [
        ("Deployment", "counter"), ("Deployment", "redis"), ("Service", "redis"),
        ("Service", "counter-app"), ("Service", "counter-lb")]
    counter = by_name(spec.objects, "Deployment", "counter")
    assert counter.spec.selector.match_labels == {"app": "counter", "tier": "app"}
    assert counter.spec.template.metadata.labels == {"app": "counter", "tier": "app"}
    (c,) = counter.spec.template.spec.containers
    assert (c.name, c.image, c.image_pull_policy) == ("counter", "ghcr.io/subicura/counter:latest", "Always")
    assert {e.name: e.value for e in c.env} == {"REDIS_HOST": "redis", "REDIS_PORT": "6379"}
    redis = by_name(spec.objects, "Deployment", "redis")
    assert redis.spec.selector.match_labels == {"app": "counter", "tier": "db"}
    (rc,) = redis.spec.template.spec.containers
    assert (rc.name, rc.image, rc.ports[0].container_port, rc.ports[0].protocol) == ("redis", "redis", 6379, "TCP")
    redis_svc = by_name(spec.objects, "Service", "redis")
    assert redis_svc.spec.type == "ClusterIP" and redis_svc.spec.selector == {"app": "counter", "tier": "db"}
    assert [(p.port, p.target_port, p.protocol) for p in redis_svc.spec.ports] == [(6379, 6379, "TCP")]
    app = by_name(spec.objects, "Service", "counter-app")
    assert app.spec.type == "NodePort" and app.spec.selector == {"app": "counter", "tier": "app"}
    assert [(p.port, p.target_port, p.node_port) for p in app.spec.ports] == [(3000, 3000, 31000)]
    lb = by_name(spec.objects, "Service", "counter-lb")
    assert lb.spec.type == "LoadBalancer" and lb.spec.external_traffic_policy == "Cluster"
    assert [(p.port, p.target_port, p.node_port) for p in lb.spec.ports] == [(30000, 3000, None)]
    assert spec.sources[id(lb)] == f"{SEEDS / 'counter.yaml'}: document 5"


def test_seed_002_nginx_hello_with_commented_namespace():
    spec = load_seed("nginx-hello.yaml")
    dep = by_name(spec.objects, "Deployment", "nginx-hello")
    assert dep.metadata.namespace == "default"  # `# namespace: default` is a comment
    assert dep.metadata.labels == {"app": "nginx-hello"}
    assert dep.spec.replicas == 2
    assert dep.spec.selector.match_labels == {"app": "nginx-hello"}
    assert dep.spec.template.metadata.labels == {"app": "nginx-hello"}
    assert dep.spec.template.spec.containers[0].image == "nginxdemos/hello"
    svc = by_name(spec.objects, "Service", "nginxhello-svc")
    assert (svc.spec.type, svc.spec.session_affinity, svc.spec.selector) == ("LoadBalancer", "None", {"app": "nginx-hello"})
    assert [(p.name, p.port, p.target_port, p.protocol) for p in svc.spec.ports] == [("http", 80, 80, "TCP")]


def test_seed_004_deployment_services_well_indented():
    spec = load_seed("deployment-services.yaml")
    assert [(o.kind, o.metadata.name) for o in spec.objects] == [
        ("Deployment", "alpaca-prod"), ("Service", "alpaca-service"),
        ("Deployment", "bandicoot-prod"), ("Service", "bandicoot-service")]
    alpaca = by_name(spec.objects, "Deployment", "alpaca-prod")
    assert alpaca.spec.replicas == 3
    assert alpaca.metadata.labels == {"ver": "1", "app": "alpaca", "env": "prod"}
    assert alpaca.spec.template.spec.containers[0].ports[0].container_port == 8080
    assert alpaca.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"
    bandicoot = by_name(spec.objects, "Service", "bandicoot-service")
    assert bandicoot.spec.selector == {"app": "bandicoot"}
    assert [(p.port, p.target_port) for p in bandicoot.spec.ports] == [(9090, 9090)]
    assert spec.warnings == []  # nothing to recover, nothing unknown


def test_seed_000_ingress_controller_service_keeps_its_typo_as_a_warning():
    spec = load_seed("ingress-nginx-controller.yaml")
    svc = by_name(spec.objects, "Service", "nginx-ingress-controller")
    assert svc.metadata.namespace == "ingress-nginx"
    assert svc.spec.selector == {"app.kubernetes.io/name": "ingress-nginx"}
    assert [(p.name, p.port, p.node_port, p.target_port) for p in svc.spec.ports] == [
        ("http", 80, 30100, 80), ("https", 443, 30101, 443)]
    path = SEEDS / "ingress-nginx-controller.yaml"
    assert (f"{path}: document 1 (Service/nginx-ingress-controller): spec.ports[0].target: "
            "unknown field, ignored (did you mean targetPort?)") in spec.warnings


def test_seed_000_metallb_configmap_keeps_its_block_as_written():
    spec = load_seed("metallb-config.yaml")
    cm = by_name(spec.objects, "ConfigMap", "config")
    assert isinstance(cm, ConfigMap) and cm.metadata.namespace == "metallb-system"
    assert cm.data == {"config": "address-pools:\n- name: nginx-ip-range\nprotocol: layer2 # 로드 밸런서의 동작 방식\n"
                                 "address:\n- 192.168.1.11-192.168.1.13 # 로드 밸런서의 Ext 주소\n"}


def test_the_lab_file_and_seeds_give_the_seeds_lab():
    spec = load_files([str(LAB_FILE)])
    assert spec.lab.metadata.name == "lab"
    assert [(n.name, n.ip, n.role) for n in spec.lab.spec.nodes] == [
        ("m-k8s", "192.168.1.10", "control-plane"), ("w1-k8s", "192.168.1.101", "worker"),
        ("w2-k8s", "192.168.1.102", "worker"), ("w3-k8s", "192.168.1.103", "worker")]
    seeds = load_seed("np-svc.yaml")
    assert seeds.lab.metadata.name == "np-svc"
    assert seeds.lab.spec.nodes == spec.lab.spec.nodes
    assert (seeds.lab.spec.gateway, seeds.lab.spec.cluster_dns) == ("192.168.1.1", "10.96.0.10")


# --------------------------------------------------------------------------- defaults
def test_api_defaults_are_filled_in():
    spec = load_text("""\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        image: nginx:1.25
        ports: [{containerPort: 80, name: http}]
        readinessProbe: {httpGet: {port: http}}
        livenessProbe: {tcpSocket: {port: 80}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  sessionAffinity: ClientIP
  selector: {app: web}
  ports: [{port: 8080}]
""", "d.yaml")
    dep, svc = spec.objects
    assert dep.metadata.namespace == svc.metadata.namespace == "default"
    assert isinstance(dep, Deployment)
    assert (dep.spec.replicas, dep.spec.revision_history_limit, dep.spec.progress_deadline_seconds) == (1, 10, 600)
    assert dep.spec.strategy.type == "RollingUpdate"
    assert dep.spec.strategy.rolling_update == {"maxSurge": "25%", "maxUnavailable": "25%"}
    pod = dep.spec.template.spec
    assert (pod.restart_policy, pod.dns_policy, pod.termination_grace_period_seconds) == ("Always", "ClusterFirst", 30)
    c = pod.containers[0]
    assert c.image_pull_policy == "IfNotPresent" and c.ports[0].protocol == "TCP"
    r = c.readiness_probe
    assert (r.http_get.path, r.http_get.scheme, r.initial_delay_seconds, r.period_seconds, r.timeout_seconds,
            r.failure_threshold, r.success_threshold) == ("/", "HTTP", 0, 10, 1, 3, 1)
    assert c.liveness_probe.period_seconds == 2  # what is given stays
    assert isinstance(svc, Service)
    assert (svc.spec.type, svc.spec.internal_traffic_policy, svc.spec.external_traffic_policy) == ("ClusterIP", "Cluster", None)
    assert (svc.spec.ports[0].protocol, svc.spec.ports[0].target_port) == ("TCP", 8080)
    assert svc.spec.session_affinity_config.client_ip.timeout_seconds == 10800
    assert svc.dump()["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}


@pytest.mark.parametrize("image,policy", [
    ("nginx", "Always"), ("nginx:latest", "Always"), ("nginx:1.25", "IfNotPresent"),
    ("localhost:5000/app", "Always"), ("localhost:5000/app:v2", "IfNotPresent"),
    ("redis@sha256:abcd", "IfNotPresent"), ("gcr.io/kuar-demo/kuard-amd64:1", "IfNotPresent"),
])
def test_image_pull_policy_default(image, policy):
    assert image_pull_policy(image) == policy


@pytest.mark.parametrize("stem,name", [
    ("lab", "lab"), ("My_Lab.v2", "my-lab-v2"), ("deployment-services", "deployment-services"),
    ("a-very-long-file-name-for-a-lab", "a-very-long-file-nam"), ("--", "lab"), ("x" * 19 + "-y", "x" * 19),
])
def test_lab_name_from_the_file_stem(stem, name):
    assert lab_name_from_file(stem) == name


def test_lab_name_precedence():
    doc = "apiVersion: netemu.dev/v1alpha1\nkind: Lab\nmetadata: {name: fromdoc}\n"
    assert load_text(doc, "file.yaml").lab.metadata.name == "fromdoc"
    assert load_text(doc, "file.yaml", lab_name="given").lab.metadata.name == "given"
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
    assert load_text(cm, "My File.yaml").lab.metadata.name == "my-file"


def test_a_lab_on_another_network_gets_the_seed_layout_there():
    spec = load_text("apiVersion: netemu.dev/v1alpha1\nkind: Lab\nspec:\n  network: 10.10.0.0/24\n"
                     "  serviceCIDR: 10.20.0.0/16\n", "other.yaml")
    assert spec.lab.spec.gateway == "10.10.0.1"
    assert spec.lab.spec.cluster_dns == "10.20.0.10"
    assert [n.ip for n in spec.lab.spec.nodes] == ["10.10.0.10", "10.10.0.101", "10.10.0.102", "10.10.0.103"]


def test_require_lab():
    with pytest.raises(SpecError, match="a Lab document"):
        load_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n", "t.yaml", require_lab=True)


# --------------------------------------------------------------------------- documents
def test_yaml_syntax_error_names_file_document_and_line():
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n\n---\napiVersion: v1\nkind: Service\n" \
           "metadata:\n  name: b\n spec: {}\n"
    with pytest.raises(SpecError) as e:
        load_text(text, "bad.yaml")
    (err,) = e.value.errors
    assert err.startswith("bad.yaml: document 2, line 11: YAML syntax error: ")


def test_tabs_in_a_well_indented_file_are_a_syntax_error_not_a_recovery():
    text = "apiVersion: v1\nkind: Service\nmetadata:\n\tname: x\n"
    with pytest.raises(SpecError) as e:
        load_text(text, "tab.yaml")
    assert e.value.errors[0].startswith("tab.yaml: document 1, line 4: YAML syntax error")


def test_empty_documents_are_skipped_and_not_counted():
    text = "---\n# only a comment\n---\n\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n---\n---\n" \
           "apiVersion: v1\nkind: Service\nmetadata: {name: two}\nspec: {ports: [{port: 0}]}\n"
    with pytest.raises(SpecError) as e:
        load_text(text, "t.yaml")
    assert e.value.errors == ["t.yaml: document 2 (Service/two): spec.ports[0].port: must be between 1 and 65535, got 0"]


def test_kind_list_is_expanded_with_item_paths():
    text = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: team}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: web, namespace: team}
  spec:
    replicas: -2
    selector: {matchLabels: {app: web}}
    template:
      metadata: {labels: {app: web}}
      spec: {containers: [{name: c, image: nginx}]}
"""
    with pytest.raises(SpecError) as e:
        load_text(text, "list.yaml")
    assert e.value.errors == ["list.yaml: document 1 (Deployment/web): items[1].spec.replicas: must be >= 0, got -2"]
    spec = load_text(text.replace("-2", "2"), "list.yaml")
    assert [(o.kind, o.metadata.name, o.metadata.namespace) for o in spec.objects] == [
        ("Namespace", "team", None), ("Deployment", "web", "team")]


def test_duplicate_keys_are_a_warning_with_the_line():
    text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\nspec: {ports: [{port: 80}]}\n"
    spec = load_text(text, "dup.yaml")
    assert spec.objects[0].metadata.name == "b"
    assert spec.warnings == ['dup.yaml: document 1, line 5: key "name" appears twice in one mapping; the last one wins']


def test_stdin_is_dash(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("apiVersion: v1\nkind: Namespace\nmetadata: {name: fromstdin}\n"))
    spec = load_files(["-"])
    assert spec.objects[0].metadata.name == "fromstdin" and spec.lab.metadata.name == "lab"
    assert spec.sources[id(spec.objects[0])] == "<stdin>: document 1"


def test_several_files_number_their_documents_separately(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    b.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n---\napiVersion: v1\nkind: Namespace\n"
                 "metadata: {name: a}\n")
    with pytest.raises(SpecError) as e:
        load_files([str(a), str(b)])
    assert e.value.errors == [f"{b}: document 2 (Namespace/a): metadata.name: Namespace a is defined twice "
                              f"(also in {a}: document 1 (Namespace/a))"]


def test_unreadable_file_is_a_spec_error(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="nope.yaml: cannot read: No such file"):
        load_files([missing])
    with pytest.raises(SpecError, match="cannot read"):
        recovered_yaml(missing)


def test_load_objects_applies_defaults(tmp_path):
    f = tmp_path / "more.yaml"
    f.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n")
    (svc,), warnings = load_objects([str(f)], Lab())
    assert (svc.metadata.namespace, svc.spec.type, svc.spec.ports[0].target_port) == ("default", "ClusterIP", 80)


def test_the_seed_files_are_the_blogs_text(tmp_path):
    """The flattened manifests are kept as the blogs show them: no line of them is indented."""
    for name in ("np-svc.yaml", "counter.yaml", "nginx-hello.yaml", "ingress-nginx-controller.yaml",
                 "metallb-config.yaml"):
        text = (SEEDS / name).read_text(encoding="utf-8")
        flattened = text.split("---\n")[-1]
        assert not any(line.startswith((" ", "\t")) for line in flattened.splitlines()), name
    assert os.path.getsize(SEEDS / "counter.yaml") > 0
    assert len((SEEDS / "counter.yaml").read_text().splitlines()[4]) > 300  # one manifest, one line
