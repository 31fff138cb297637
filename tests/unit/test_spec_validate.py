"""Semantic validation: every invalid case is an error naming file, document and field; all errors of
a file are reported at once; unknown fields are warnings."""
from __future__ import annotations

import copy
import re

import pytest
import yaml

from netemu.spec.errors import SpecError
from netemu.spec.load import load_objects, load_text
from netemu.spec.models import Lab, LabNode


def deployment(name="web", labels=None):
    labels = labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels)},
                                  "spec": {"containers": [{"name": "c", "image": "nginx",
                                                           "ports": [{"name": "http", "containerPort": 80}]}]}}}}


def service(name="web", **spec):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], **spec}}


def lab_doc(**spec):
    base = {"network": "192.168.1.0/24", "gateway": "192.168.1.1",
            "nodes": [{"name": "m-k8s", "ip": "192.168.1.10", "role": "control-plane"},
                      {"name": "w1-k8s", "ip": "192.168.1.101"}]}
    base.update(spec)
    return {"apiVersion": "netemu.dev/v1alpha1", "kind": "Lab", "metadata": {"name": "t"}, "spec": base}


def put(doc: dict, path: str, value):
    """A copy of ``doc`` with ``value`` at a dotted path (``spec.ports[0].port``); None deletes."""
    doc = copy.deepcopy(doc)
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    node = doc
    for p in parts[:-1]:
        node = node[p]
    if value is None:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return doc


def errors_of(*docs) -> list[str]:
    text = yaml.safe_dump_all(docs, sort_keys=False)
    with pytest.raises(SpecError) as e:
        load_text(text, "t.yaml")
    return e.value.errors


def assert_error(errors: list[str], where: str, field: str, *words: str) -> None:
    """Some error is at ``where`` (``document 1 (Deployment/web)``; the name may differ when the test
    changed it) and ``field``, with ``words``."""
    kind_part = where.split("/")[0]
    hits = [e for e in errors if e.startswith(f"t.yaml: {kind_part}/") and f"): {field}: " in e]
    assert hits, f"no error at {where} {field} in:\n" + "\n".join(errors)
    assert any(all(w in h for w in words) for h in hits), f"{words} not in {hits}"


DEP = "document 1 (Deployment/web)"
SVC = "document 1 (Service/web)"
LAB = "document 1 (Lab/t)"


@pytest.mark.parametrize("path,value,field,words", [
    ("spec.replicas", -1, "spec.replicas", ("must be >= 0, got -1",)),
    ("spec.selector", None, "spec.selector", ("required",)),
    ("spec.selector", {}, "spec.selector", ("must not be empty",)),
    ("spec.selector.matchLabels", {"app": "other"}, "spec.template.metadata.labels", ("do not match", "app: other")),
    ("spec.selector", {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]},
     "spec.template.metadata.labels", ("do not match",)),
    ("spec.selector", {"matchExpressions": [{"key": "app", "operator": "In"}]},
     "spec.selector.matchExpressions[0].values", ("non-empty",)),
    ("metadata.name", "Web_1", "metadata.name", ("RFC 1123 subdomain",)),
    ("metadata.namespace", "a.b", "metadata.namespace", ("RFC 1123 label",)),
    ("metadata.labels", {"bad key!": "x"}, "metadata.labels", ("qualified name",)),
    ("spec.template.spec.containers", [{"name": "c", "image": "a"}, {"name": "c", "image": "b"}],
     "spec.template.spec.containers[1].name", ("duplicate container name 'c'",)),
    ("spec.template.spec.containers[0].name", "C_1", "spec.template.spec.containers[0].name", ("RFC 1123 label",)),
    ("spec.template.spec.containers[0].image", None, "spec.template.spec.containers[0].image", ("required",)),
    ("spec.template.spec.containers[0].ports[0].containerPort", 70000,
     "spec.template.spec.containers[0].ports[0].containerPort", ("between 1 and 65535", "70000")),
    ("spec.template.spec.containers[0].ports[0].containerPort", "http",
     "spec.template.spec.containers[0].ports[0].containerPort", ("must be an integer", '"http"')),
    ("spec.template.spec.containers[0].ports", [{"name": "p", "containerPort": 80}, {"name": "p", "containerPort": 81}],
     "spec.template.spec.containers[0].ports[1].name", ("duplicate port name 'p'",)),
    ("spec.template.spec.containers[0].ports[0].protocol", "tcp",
     "spec.template.spec.containers[0].ports[0].protocol", ("must be one of 'TCP', 'UDP' or 'SCTP'", '"tcp"')),
    ("spec.template.spec.containers[0].readinessProbe", {"httpGet": {"port": 80}, "tcpSocket": {"port": 80}},
     "spec.template.spec.containers[0].readinessProbe", ("exactly one handler", "httpGet and tcpSocket")),
    ("spec.template.spec.containers[0].readinessProbe", {"periodSeconds": 2},
     "spec.template.spec.containers[0].readinessProbe", ("exactly one handler", "got none")),
    ("spec.template.spec.containers[0].livenessProbe", {"httpGet": {"port": "metrics"}},
     "spec.template.spec.containers[0].livenessProbe.httpGet.port", ("no container port named 'metrics'", "http")),
    ("spec.template.spec.containers[0].readinessProbe", {"tcpSocket": {"port": 80}, "periodSeconds": 0},
     "spec.template.spec.containers[0].readinessProbe.periodSeconds", (">= 1",)),
    ("spec.template.spec.restartPolicy", "Never", "spec.template.spec.restartPolicy", ("must be Always",)),
    ("spec.template.spec.containers[0].env", [{"name": "A", "value": 1}],
     "spec.template.spec.containers[0].env[0].value", ("must be a string", 'quote it: "1"')),
    ("spec.strategy", {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}, "spec.strategy.rollingUpdate",
     ("Recreate",)),
    ("spec.strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}},
     "spec.strategy.rollingUpdate", ("may not both be 0",)),
])
def test_deployment_errors_name_file_document_and_field(path, value, field, words):
    assert_error(errors_of(put(deployment(), path, value)), DEP, field, *words)


@pytest.mark.parametrize("path,value,field,words", [
    ("metadata.name", "1web", "metadata.name", ("RFC 1035 label",)),
    ("spec.ports", None, "spec.ports", ("required",)),
    ("spec.ports", [{"port": 80}, {"port": 81}], "spec.ports[0].name", ("required when a Service has more than one port",)),
    ("spec.ports", [{"name": "a", "port": 80}, {"name": "a", "port": 81}], "spec.ports[1].name", ("duplicate port name",)),
    ("spec.ports", [{"name": "a", "port": 80}, {"name": "b", "port": 80}], "spec.ports[1]", ("duplicate port 80/TCP",)),
    ("spec.ports[0].port", 0, "spec.ports[0].port", ("between 1 and 65535",)),
    ("spec.ports[0].port", None, "spec.ports[0].port", ("required",)),
    ("spec.ports[0].targetPort", 99999, "spec.ports[0].targetPort", ("between 1 and 65535",)),
    ("spec.ports[0].targetPort", [8080], "spec.ports[0].targetPort", ("must be an integer or a string",)),
    ("spec.ports[0].nodePort", 30080, "spec.ports[0].nodePort", ("only be set for type NodePort or LoadBalancer",)),
    ("spec.clusterIP", "192.168.7.7", "spec.clusterIP", ("not in the lab's serviceCIDR 10.96.0.0/12",)),
    ("spec.clusterIP", "10.96.0.10", "spec.clusterIP", ("cluster DNS",)),
    ("spec.clusterIP", "nope", "spec.clusterIP", ("must be an IP address", "headless")),
    ("spec.type", "External", "spec.type", ("must be one of", "ExternalName")),
    ("spec.sessionAffinity", "Sticky", "spec.sessionAffinity", ("must be one of 'None' or 'ClientIP'",)),
    ("spec.loadBalancerSourceRanges", ["10.0.0.0/8"], "spec.loadBalancerSourceRanges", ("only be set for LoadBalancer",)),
    ("spec.externalTrafficPolicy", "Local", "spec.externalTrafficPolicy", ("NodePort or LoadBalancer",)),
])
def test_service_errors_name_file_document_and_field(path, value, field, words):
    assert_error(errors_of(put(service(), path, value)), SVC, field, *words)


def test_node_port_must_be_inside_the_labs_range():
    doc = service(type="NodePort", ports=[{"port": 80, "nodePort": 29999}])
    assert_error(errors_of(doc), SVC, "spec.ports[0].nodePort", "outside the lab's nodePortRange 30000-32767")
    custom = put(lab_doc(nodePortRange="31000-31010"), "metadata.name", "t")
    errors = errors_of(custom, put(doc, "spec.ports[0].nodePort", 30000))
    assert_error(errors, "document 2 (Service/web)", "spec.ports[0].nodePort", "31000-31010")


def test_external_name_and_headless_rules():
    ext = service(type="ExternalName", ports=[])
    assert_error(errors_of(ext), SVC, "spec.externalName", "required for type ExternalName")
    assert_error(errors_of(put(ext, "spec.clusterIP", "10.96.0.5") | {}), SVC, "spec.clusterIP", "must be empty")
    # ExternalName and headless Services may have no ports
    load_text(yaml.safe_dump_all([put(ext, "spec.externalName", "db.example.com"),
                                  service("hl", clusterIP="None", ports=[])]), "t.yaml")
    headless_np = service(type="NodePort", clusterIP="None")
    assert_error(errors_of(headless_np), SVC, "spec.clusterIP", "may not be None")


def test_session_affinity_timeout_range():
    doc = service(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86401}})
    assert_error(errors_of(doc), SVC, "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "between 1 and 86400")
    ok = load_text(yaml.safe_dump(put(doc, "spec.sessionAffinityConfig.clientIP.timeoutSeconds", 60)), "t.yaml")
    assert ok.objects[0].spec.session_affinity_config.client_ip.timeout_seconds == 60


def test_load_balancer_source_ranges_must_be_cidrs():
    doc = service(type="LoadBalancer", loadBalancerSourceRanges=["10.0.0.0/8", "10.0.0.300/8"])
    assert_error(errors_of(doc), SVC, "spec.loadBalancerSourceRanges[1]", "must be a CIDR", "10.0.0.300/8")


def test_duplicate_node_ports_across_services():
    a = service("a", type="NodePort", ports=[{"port": 80, "nodePort": 30000}])
    b = service("b", type="NodePort", ports=[{"port": 81, "nodePort": 30000}])
    errors = errors_of(a, b)
    assert_error(errors, "document 2 (Service/b)", "spec.ports[0].nodePort",
                 "30000/TCP is already used by Service default/a", "t.yaml: document 1")


def test_duplicate_objects_in_the_input():
    errors = errors_of(deployment(), service(), deployment())
    assert_error(errors, "document 3 (Deployment/web)", "metadata.name",
                 "Deployment default/web is defined twice", "document 1")
    # the same name in another namespace or of another kind is fine
    load_text(yaml.safe_dump_all([deployment(), put(deployment(), "metadata.namespace", "other"), service()]), "t.yaml")


def test_unknown_kind_and_api_version_are_errors():
    errors = errors_of({"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "x"}})
    assert_error(errors, "document 1 (CronTab/x)", "kind", 'unknown kind "CronTab"', "Deployment", "Service", "Pod")
    errors = errors_of(put(deployment(), "apiVersion", "extensions/v1beta1"))
    assert_error(errors, DEP, "apiVersion", '"extensions/v1beta1"', "use apps/v1")
    errors = errors_of(put(deployment(), "kind", None))
    from netemu.spec.convert import supported_kinds

    assert errors == [f"t.yaml: document 1 (?/web): kind: required field is missing (netemu knows {supported_kinds()}, "
                      "and Lab)"]
    assert "Deployment, EndpointSlice" in errors[0]


def test_all_errors_are_reported_at_once():
    bad_dep = put(put(deployment(), "spec.replicas", -1), "spec.selector.matchLabels", {"app": "x"})
    bad_svc = put(service(), "spec.ports[0].port", 0)
    with pytest.raises(SpecError) as e:
        load_text(yaml.safe_dump_all([bad_dep, bad_svc, lab_doc(gateway="10.0.0.1")]), "t.yaml")
    fields = {m.split(": ")[2] for m in e.value.errors}
    assert {"spec.replicas", "spec.template.metadata.labels", "spec.ports[0].port", "spec.gateway"} <= fields
    assert str(e.value).startswith(f"{len(e.value.errors)} problems:\n")


def test_unknown_fields_are_warnings_with_their_path():
    doc = put(deployment(), "spec.template.spec.containers[0].ports[0].contanerPort", 81)
    doc = put(doc, "spec.replica", 3)
    spec = load_text(yaml.safe_dump(doc), "t.yaml")
    assert "t.yaml: document 1 (Deployment/web): spec.replica: unknown field, ignored (did you mean replicas?)" \
        in spec.warnings
    assert any(w.startswith("t.yaml: document 1 (Deployment/web): "
                            "spec.template.spec.containers[0].ports[0].contanerPort: unknown field") for w in spec.warnings)


def test_secret_data_must_be_base64():
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"pw": "not base64!"}}
    assert_error(errors_of(doc), "document 1 (Secret/s)", "data.pw", "base64")


# --------------------------------------------------------------------------- the Lab document
@pytest.mark.parametrize("spec,field,words", [
    ({"network": "192.168.1.0/33"}, "spec.network", ("must be a CIDR",)),
    ({"network": "192.168.1.5/24"}, "spec.network", ("host bits", "192.168.1.0/24")),
    ({"podCIDR": "172.16.0.0"}, "spec.podCIDR", ("prefix length",)),
    ({"serviceCIDR": "fd00::/108"}, "spec.serviceCIDR",
     ("is IPv6 but spec.network is IPv4", "serviceCIDR: 10.96.0.0/12,fd00::/108")),
    ({"gateway": "10.1.1.1"}, "spec.gateway", ("inside spec.network 192.168.1.0/24",)),
    ({"gateway": "192.168.1.255"}, "spec.gateway", ("host address",)),
    ({"gateway": "192.168.1.0"}, "spec.gateway", ("host address",)),
    ({"podCIDR": "192.168.0.0/16"}, "spec.podCIDR", ("overlaps spec.network 192.168.1.0/24",)),
    ({"serviceCIDR": "172.16.0.0/12"}, "spec.serviceCIDR", ("overlaps spec.podCIDR 172.16.0.0/16",)),
    ({"clusterDNS": "10.200.0.10"}, "spec.clusterDNS", ("inside spec.serviceCIDR 10.96.0.0/12",)),
    ({"podCIDR": "172.16.0.0/24"}, "spec.podCIDR", ("room for 1 node subnets of /24", "2 nodes")),
    ({"nodePodPrefix": 31}, "spec.nodePodPrefix", ("between",)),
    ({"nodePortRange": "32767-30000"}, "spec.nodePortRange", ("1 <= A < B <= 65535",)),
    ({"nodePortRange": "30000"}, "spec.nodePortRange", ("like 30000-32767",)),
    ({"proxyMode": "userspace"}, "spec.proxyMode", ("must be one of 'iptables', 'nftables' or 'ipvs'", '"userspace"')),
    ({"ipvsScheduler": "fastest"}, "spec.ipvsScheduler", ("must be one of",)),
    ({"nodes": [{"name": "m", "ip": "192.168.1.10", "role": "control-plane"}]}, "spec.nodes", ("at least one node with role worker",)),
    ({"nodes": [{"name": "a", "ip": "192.168.1.10"}, {"name": "a", "ip": "192.168.1.11"}]}, "spec.nodes[1].name",
     ("duplicate node name 'a'",)),
    ({"nodes": [{"name": "a", "ip": "192.168.1.10"}, {"name": "b", "ip": "192.168.1.10"}]}, "spec.nodes[1].ip",
     ("duplicate node address 192.168.1.10",)),
    ({"nodes": [{"name": "a", "ip": "192.168.2.10"}]}, "spec.nodes[0].ip", ("inside spec.network",)),
    ({"nodes": [{"name": "a", "ip": "192.168.1.1"}]}, "spec.nodes[0].ip", ("is the gateway",)),
    ({"nodes": [{"name": "A_1", "ip": "192.168.1.10"}]}, "spec.nodes[0].name", ("RFC 1123 label",)),
    ({"nodes": [{"name": "a", "ip": "192.168.1.10", "role": "master"}]}, "spec.nodes[0].role",
     ("must be one of 'control-plane' or 'worker'",)),
])
def test_lab_errors_name_file_document_and_field(spec, field, words):
    assert_error(errors_of(lab_doc(**spec)), LAB, field, *words)


def test_lab_name_rules():
    assert_error(errors_of(put(lab_doc(), "metadata.name", "a-very-long-lab-name-indeed")), "document 1 (Lab/a-very-long-lab-name-indeed)",
                 "metadata.name", "no more than 20 characters")
    with pytest.raises(SpecError, match="lab name 'Bad_Name'"):
        load_text(yaml.safe_dump(lab_doc()), "t.yaml", lab_name="Bad_Name")


def test_a_second_lab_document_is_an_error():
    errors = errors_of(lab_doc(), lab_doc())
    assert_error(errors, "document 2 (Lab/t)", "kind", "a second Lab document", "document 1")


# --------------------------------------------------------------------------- apply to a running lab
def running_lab() -> Lab:
    lab = Lab()
    lab.metadata.name = "run"
    lab.spec.node_port_range = "31000-31999"
    lab.spec.nodes = [LabNode(name="w1-k8s", ip="192.168.1.101")]
    return lab


def test_load_objects_validates_against_the_running_lab(tmp_path):
    f = tmp_path / "more.yaml"
    f.write_text(yaml.safe_dump_all([service(type="NodePort", ports=[{"port": 80, "nodePort": 30000}])]))
    with pytest.raises(SpecError) as e:
        load_objects([str(f)], running_lab())
    assert e.value.errors == [f"{f}: document 1 (Service/web): spec.ports[0].nodePort: "
                              "30000 is outside the lab's nodePortRange 31000-31999"]
    f.write_text(yaml.safe_dump_all([service(type="NodePort", ports=[{"port": 80, "nodePort": 31000}])]))
    objs, warnings = load_objects([str(f)], running_lab())
    assert objs[0].spec.ports[0].node_port == 31000 and warnings == []


def test_load_objects_refuses_a_lab_document(tmp_path):
    f = tmp_path / "more.yaml"
    f.write_text(yaml.safe_dump_all([lab_doc(), deployment()]))
    with pytest.raises(SpecError) as e:
        load_objects([str(f)], running_lab())
    assert e.value.errors[0].startswith(f"{f}: document 1 (Lab/t): kind: a Lab document only goes to `netemu up`")


def test_pod_on_an_unknown_node_is_a_warning():
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"nodeName": "w9-k8s", "containers": [{"name": "c", "image": "nginx"}]}}
    spec = load_text(yaml.safe_dump(pod), "t.yaml")
    assert any("spec.nodeName: no node 'w9-k8s' in this lab" in w for w in spec.warnings)


def test_a_malformed_field_does_not_hide_the_other_errors():
    errors = errors_of(lab_doc(proxyMode="userspace", podCIDR="192.168.0.0/16",
                               nodes=[{"name": "w", "ip": "192.168.1.1", "role": "boss"}]))
    assert_error(errors, LAB, "spec.proxyMode", "must be one of")
    assert_error(errors, LAB, "spec.podCIDR", "overlaps spec.network")
    assert_error(errors, LAB, "spec.nodes[0].ip", "is the gateway")
    assert_error(errors, LAB, "spec.nodes[0].role", "must be one of")
    # the role was dropped to look further; "no worker" would only echo the role's error
    assert not any("at least one node with role worker" in e for e in errors)
    errors = errors_of(service(ports=[{"port": 80, "targetPort": [1]}, {"port": 80}]))
    assert_error(errors, SVC, "spec.ports[0].targetPort", "must be an integer or a string")
    assert_error(errors, SVC, "spec.ports[1]", "duplicate port 80/TCP")
