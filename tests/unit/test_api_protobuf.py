"""Kubernetes protobuf request bodies (netemu.api.protobuf): kubectl's typed clients send them.

Bodies are built with a tiny encoder below (as go-to-protobuf's marshalers write them: every non-pointer
field, empty or not; pointer fields only when set), plus real captures of kubectl v1.32 requests in
fixtures/kubectl_*.pb (taken from a loopback listener that answered discovery and saved the POST body).
"""
import asyncio
import base64
from pathlib import Path

import pytest

from netemu.spec import protobuf_schema
from netemu.api.errors import ApiError
from netemu.api.protobuf import MAGIC, ProtobufError, decode

FIXTURES = Path(__file__).parent / "fixtures"


# ---------------------------------------------------------------- a tiny protobuf encoder
def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32/int64: ten-byte two's complement, as Go writes them
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def v(num: int, n: int) -> bytes:
    """A varint field."""
    return varint(num << 3) + varint(n)


def ld(num: int, data) -> bytes:
    """A length-delimited field: string, bytes or an embedded message."""
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def msg(num: int, *fields: bytes) -> bytes:
    return ld(num, b"".join(fields))


def entry(num: int, key: str, value) -> bytes:
    """One map<string, ...> entry: key = 1, value = 2."""
    return msg(num, ld(1, key), ld(2, value))


def envelope(api_version: str, kind: str, *fields: bytes) -> bytes:
    """magic + runtime.Unknown{typeMeta = 1 {apiVersion = 1, kind = 2}, raw = 2}."""
    return MAGIC + msg(1, ld(1, api_version), ld(2, kind)) + ld(2, b"".join(fields)) + ld(3, "") + ld(4, "")


def object_meta(name: str = "", labels: dict | None = None, extra: bytes = b"") -> bytes:
    """ObjectMeta as Go writes a fresh one: all its non-pointer fields, empty, and an empty Time."""
    out = ld(1, name) + ld(2, "") + ld(3, "") + ld(4, "") + ld(5, "") + ld(6, "") + v(7, 0) + ld(8, b"")
    for k, val in (labels or {}).items():
        out += entry(11, k, val)
    return out + extra


def intstr_int(num: int, n: int) -> bytes:
    return msg(num, v(1, 0), v(2, n), ld(3, ""))


def intstr_str(num: int, s: str) -> bytes:
    return msg(num, v(1, 1), v(2, 0), ld(3, s))


def container(name: str, image: str, extra: bytes = b"") -> bytes:
    # name, image, workingDir, resources (empty), terminationMessagePath, imagePullPolicy, stdin, stdinOnce,
    # tty, terminationMessagePolicy: what Go writes for an otherwise empty Container
    return (ld(1, name) + ld(2, image) + ld(5, "") + ld(8, b"") + ld(13, "") + ld(14, "") + v(16, 0)
            + v(17, 0) + v(18, 0) + ld(20, "") + extra)


def deployment_body(replicas: int) -> bytes:
    labels = {"app": "web"}
    pod_spec = (msg(2, container("nginx", "nginx")) + ld(3, "") + ld(6, "") + ld(8, "") + ld(9, "")
                + ld(10, "") + v(11, 0) + v(12, 0) + v(13, 0) + ld(16, "") + ld(17, "") + ld(19, "")
                + ld(24, ""))
    spec = (v(1, replicas)
            + msg(2, entry(1, "app", "web"))                          # selector.matchLabels
            + msg(3, msg(1, object_meta(labels=labels)), msg(2, pod_spec))  # template
            + msg(4, ld(1, ""))                                       # strategy {type: ""}
            + v(5, 0) + v(7, 0))                                      # minReadySeconds, paused
    status = v(1, 0) + v(2, 0) + v(3, 0) + v(4, 0) + v(5, 0) + v(7, 0)
    return envelope("apps/v1", "Deployment", msg(1, object_meta("web", labels)), msg(2, spec), msg(3, status))


# ---------------------------------------------------------------- synthetic bodies
def test_deployment_like_kubectl_create_deployment():
    assert decode(deployment_body(2)) == {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}},
        },
    }


def test_present_pointer_zero_is_kept_and_empty_non_pointer_dropped():
    d = decode(deployment_body(0))
    assert d["spec"]["replicas"] == 0
    assert "minReadySeconds" not in d["spec"] and "paused" not in d["spec"] and "strategy" not in d["spec"]
    assert "status" not in d
    # absent pointer: no key at all
    body = envelope("apps/v1", "Deployment", msg(1, object_meta("web")), msg(2, msg(2, b"")))
    assert decode(body) == {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                            "spec": {"selector": {}}}  # a set pointer (selector) stays, even empty


def test_service_ports_and_int_or_string_target_port():
    def port(name, number, target: bytes, node_port=0):
        return msg(1, ld(1, name), ld(2, "TCP"), v(3, number), target, v(5, node_port))

    spec = (port("http", 80, intstr_int(4, 8080), 30080) + port("https", 443, intstr_str(4, "https"))
            + port("plain", 53, intstr_int(4, 0))
            + entry(2, "app", "web") + ld(3, "") + ld(4, "NodePort") + ld(7, "") + v(12, 0) + v(13, 0))
    d = decode(envelope("v1", "Service", msg(1, object_meta("web")), msg(2, spec), msg(3, msg(1, b""))))
    assert d == {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080},
                      {"name": "https", "protocol": "TCP", "port": 443, "targetPort": "https"},
                      {"name": "plain", "protocol": "TCP", "port": 53}],  # targetPort 0: unset, defaulted later
            "selector": {"app": "web"}, "type": "NodePort",
        },
    }


def test_configmap_data_and_binary_data():
    body = envelope("v1", "ConfigMap", msg(1, object_meta("cfg")), entry(2, "color", "blue"),
                    entry(2, "size", "10"), entry(3, "blob", b"\x00\xff"))
    assert decode(body) == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                            "data": {"color": "blue", "size": "10"},
                            "binaryData": {"blob": base64.b64encode(b"\x00\xff").decode()}}


def test_eviction_with_delete_options():
    opts = (v(1, 0) + msg(2, ld(1, "uid-1"), ld(2, "42")) + ld(4, "Foreground") + ld(5, "All"))
    body = envelope("policy/v1", "Eviction", msg(1, object_meta("web-1", extra=ld(3, "default"))), msg(2, opts))
    assert decode(body) == {
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": "web-1", "namespace": "default"},
        "deleteOptions": {"gracePeriodSeconds": 0, "preconditions": {"uid": "uid-1", "resourceVersion": "42"},
                          "propagationPolicy": "Foreground", "dryRun": ["All"]},
    }


def test_delete_options_under_any_group_version():
    body = envelope("apps/v1", "DeleteOptions", v(1, 30), v(3, 1))
    assert decode(body) == {"apiVersion": "apps/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 30,
                            "orphanDependents": True}


def test_times_quantities_negative_ints_inline_structs():
    meta = object_meta("p")
    # creationTimestamp 2026-01-02T03:04:05Z with nanos (JSON keeps seconds), deletionGracePeriodSeconds -1
    meta = meta.replace(ld(8, b""), msg(8, v(1, 1767323045), v(2, 500))) + v(10, -1)
    probe = msg(10, msg(1, msg(2, ld(1, "/healthz"), intstr_int(2, 8080), ld(3, ""), ld(4, ""))),
                v(2, 3), v(3, 0))
    resources = msg(8, entry(1, "cpu", ld(1, "500m")), entry(2, "memory", ld(1, "64Mi")))
    c = ld(1, "app") + ld(2, "img") + resources + probe + msg(15, v(4, 1000), v(5, 0))
    volume = msg(1, ld(1, "cfg"), msg(2, msg(19, msg(1, ld(1, "settings")), v(3, 0o644))))
    spec = volume + msg(2, c) + ld(3, "Always")
    d = decode(envelope("v1", "Pod", msg(1, meta), msg(2, spec)))
    assert d["metadata"] == {"name": "p", "creationTimestamp": "2026-01-02T03:04:05Z",
                             "deletionGracePeriodSeconds": -1}
    assert d["spec"]["volumes"] == [{"name": "cfg", "configMap": {"name": "settings", "defaultMode": 0o644}}]
    ctr = d["spec"]["containers"][0]
    assert ctr["resources"] == {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}}
    assert ctr["livenessProbe"] == {"httpGet": {"path": "/healthz", "port": 8080}, "initialDelaySeconds": 3}
    assert ctr["securityContext"] == {"runAsUser": 1000, "runAsNonRoot": False}  # pointers: kept when false
    assert d["spec"]["restartPolicy"] == "Always"


def test_micro_time_and_empty_time():
    ev = (msg(1, object_meta("e")) + msg(2, ld(1, "Pod")) + ld(3, "Started")
          + msg(10, v(1, 1767323045), v(2, 123456789)) + msg(6, b""))
    d = decode(envelope("v1", "Event", ev))
    assert d["eventTime"] == "2026-01-02T03:04:05.123456Z"
    assert "firstTimestamp" not in d


def test_unknown_fields_are_skipped():
    body = envelope("v1", "ConfigMap", msg(1, object_meta("cfg") + ld(999, "future")), entry(2, "a", "b"),
                    v(77, 5))
    assert decode(body) == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                            "data": {"a": "b"}}


def test_repeated_message_field_occurrences_merge():
    spec = msg(2, entry(1, "a", "1")) + msg(2, entry(1, "b", "2")) + v(1, 1)
    d = decode(envelope("apps/v1", "Deployment", msg(2, spec)))
    assert d["spec"] == {"replicas": 1, "selector": {"matchLabels": {"a": "1", "b": "2"}}}


@pytest.mark.parametrize("body, words", [
    (b'{"kind": "ConfigMap"}', "prefix"),
    (MAGIC + b"\x0a\x05\x0a\x02v1", "truncated"),
    (envelope("v1", "Gadget", b""), "no protobuf schema"),
    (envelope("example.com/v1", "Deployment", b""), "no protobuf schema"),
    (envelope("v1", "ConfigMap", v(1, 3)), "wire type"),
    (envelope("v1", "ConfigMap", msg(1, ld(1, b"\xff\xfe"))), "UTF-8"),
    (envelope("v1", "ConfigMap", b"\x0b"), "wire type"),
    (envelope("v1", "ConfigMap", b"\x10" + b"\xff" * 11), "varint"),
    (MAGIC + msg(1, ld(1, "v1")), "no kind"),
    (MAGIC + msg(1, ld(1, "v1"), ld(2, "ConfigMap")) + ld(3, "gzip"), "content encoding"),
])
def test_errors(body, words):
    with pytest.raises(ProtobufError, match=words):
        decode(body)
    assert issubclass(ProtobufError, ValueError)


def test_raw_extension_nesting_limit():
    body = envelope("v1", "ConfigMap", msg(1, object_meta("x")))
    for _ in range(150):
        body = envelope("apps/v1", "ControllerRevision", msg(2, ld(1, body)), v(3, 1))
    with pytest.raises(ProtobufError, match="deeply"):
        decode(body)


def test_raw_extension_json_and_protobuf():
    inner = envelope("v1", "ConfigMap", msg(1, object_meta("x")))
    for data, want in ((b'{"spec": {"a": 1}}', {"spec": {"a": 1}}),
                       (inner, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})):
        d = decode(envelope("apps/v1", "ControllerRevision", msg(1, object_meta("r")), msg(2, ld(1, data)),
                            v(3, 2)))
        assert d == {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "r"},
                     "data": want, "revision": 2}


# ---------------------------------------------------------------- real kubectl v1.32 requests
def fixture(name: str) -> dict:
    return decode((FIXTURES / name).read_bytes())


def test_kubectl_create_deployment():
    # kubectl create deployment x --image=nginx --replicas=2
    assert fixture("kubectl_create_deployment.pb") == {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "x", "labels": {"app": "x"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "x"}},
                              "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}},
    }


def test_kubectl_create_deployment_zero_replicas():
    # kubectl create deployment zero --image=nginx:1.27 --replicas=0 --port=80
    d = fixture("kubectl_create_deployment_zero.pb")
    assert d["spec"]["replicas"] == 0
    assert d["spec"]["template"]["spec"]["containers"] == [
        {"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]


def test_kubectl_create_configmap():
    # kubectl create configmap cfg --from-literal=color=blue --from-literal=size=10
    assert fixture("kubectl_create_configmap.pb") == {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
        "data": {"color": "blue", "size": "10"}}


def test_kubectl_create_services():
    # kubectl create service nodeport web --tcp=80:8080 --node-port=30080
    assert fixture("kubectl_create_service_nodeport.pb") == {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080,
                            "nodePort": 30080}],
                 "selector": {"app": "web"}, "type": "NodePort"}}
    # kubectl create service clusterip api --tcp=443:https
    assert fixture("kubectl_create_service_clusterip.pb")["spec"]["ports"] == [
        {"name": "443-https", "protocol": "TCP", "port": 443, "targetPort": "https"}]


def test_kubectl_create_other_kinds():
    # kubectl create secret generic s1 --from-literal=password=hunter2
    assert fixture("kubectl_create_secret.pb")["data"] == {"password": base64.b64encode(b"hunter2").decode()}
    # kubectl create cronjob cj --image=busybox --schedule='*/5 * * * *' -- date
    assert fixture("kubectl_create_cronjob.pb")["spec"] == {
        "schedule": "*/5 * * * *",
        "jobTemplate": {"metadata": {"name": "cj"}, "spec": {"template": {"spec": {
            "containers": [{"name": "cj", "image": "busybox", "command": ["date"]}],
            "restartPolicy": "OnFailure"}}}}}
    # kubectl create rolebinding rb1 --role=r1 --user=alice --serviceaccount=default:sa1
    rb = fixture("kubectl_create_rolebinding.pb")
    assert rb["subjects"] == [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
                              {"kind": "ServiceAccount", "name": "sa1", "namespace": "default"}]
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r1"}
    # kubectl create ingress ing --rule='foo.example.com/bar*=svc1:8080,tls=my-cert' --class=nginx
    assert fixture("kubectl_create_ingress.pb")["spec"] == {
        "tls": [{"hosts": ["foo.example.com"], "secretName": "my-cert"}],
        "rules": [{"host": "foo.example.com", "http": {"paths": [
            {"path": "/bar", "pathType": "Prefix",
             "backend": {"service": {"name": "svc1", "port": {"number": 8080}}}}]}}],
        "ingressClassName": "nginx"}
    # kubectl create poddisruptionbudget pdb1 --selector=app=web --min-available=0
    assert fixture("kubectl_create_pdb.pb")["spec"] == {"minAvailable": 0, "selector": {"matchLabels": {"app": "web"}}}
    # kubectl create quota q1 --hard=cpu=2,memory=1Gi,pods=10
    assert fixture("kubectl_create_quota.pb")["spec"] == {"hard": {"cpu": "2", "memory": "1Gi", "pods": "10"}}
    # kubectl autoscale deployment web --min=2 --max=5 --cpu-percent=80 (autoscaling/v1)
    hpa = fixture("kubectl_autoscale.pb")
    assert hpa["apiVersion"] == "autoscaling/v1" and hpa["spec"] == {
        "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
        "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80}
    # kubectl drain n1 --grace-period=7, without the eviction API: DELETE pod with DeleteOptions
    assert fixture("kubectl_drain_delete_options.pb") == {"apiVersion": "v1", "kind": "DeleteOptions",
                                                          "gracePeriodSeconds": 7}


# ---------------------------------------------------------------- the table and the server
def test_schema_is_closed():
    special = {"meta.v1.Time", "meta.v1.MicroTime", "resource.Quantity", "intstr.IntOrString",
               "runtime.RawExtension", "meta.v1.FieldsV1"}
    for name, fields in protobuf_schema.MESSAGES.items():
        for num, (jname, typ, flags) in fields.items():
            assert len(typ) == 1 or typ in protobuf_schema.MESSAGES or typ in special, (name, num, typ)
            assert jname or "n" in flags, (name, num)
    for kind in ("apps.v1.Deployment", "core.v1.Service", "core.v1.ConfigMap", "core.v1.Secret", "core.v1.Namespace",
                 "batch.v1.Job", "batch.v1.CronJob", "rbac.v1.Role", "rbac.v1.RoleBinding", "rbac.v1.ClusterRole",
                 "rbac.v1.ClusterRoleBinding", "core.v1.ServiceAccount", "networking.v1.Ingress",
                 "policy.v1.PodDisruptionBudget", "scheduling.v1.PriorityClass", "core.v1.ResourceQuota",
                 "autoscaling.v1.HorizontalPodAutoscaler", "autoscaling.v2.HorizontalPodAutoscaler",
                 "policy.v1.Eviction", "meta.v1.DeleteOptions", "core.v1.PodSpec", "core.v1.Affinity"):
        assert kind in protobuf_schema.MESSAGES, kind
    assert set(protobuf_schema.VERSIONS.values()) <= {n.rsplit(".", 1)[0] for n in protobuf_schema.MESSAGES}


class _Request:
    def __init__(self, body: bytes, ctype: str):
        self._body, self.headers = body, {"Content-Type": ctype}

    async def read(self) -> bytes:
        return self._body


def test_api_server_reads_protobuf_bodies():
    from netemu.daemon.apiserver import ApiServer

    server = ApiServer.__new__(ApiServer)  # _body needs no state
    pb = "application/vnd.kubernetes.protobuf"
    body = (FIXTURES / "kubectl_create_configmap.pb").read_bytes()
    assert asyncio.run(server._body(_Request(body, pb)))["data"] == {"color": "blue", "size": "10"}
    with pytest.raises(ApiError) as e:
        asyncio.run(server._body(_Request(b"k8s\x00\x0a\x01", pb)))
    assert e.value.code == 400 and e.value.reason == "BadRequest"
