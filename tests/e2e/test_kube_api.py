"""The lab's Kubernetes API, driven by the real kubectl as the seeds' users drive a kubeadm cluster.

One lab for the module (kubectl's commands build on each other as in a walkthrough); each test
names what it checks. Skipped, with the reason, where kubectl is not installed.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import time

import pytest

from conftest import KUBECTL, NP_PODS, NP_SVC, curl, jsonpath, kube_lab, kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed on this machine")]

SEEDS = os.path.join(os.path.dirname(__file__), "..", "..", "topologies", "seeds")


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    def fast_metrics(lab):  # `kubectl top` needs two samples: seconds apart, not metrics-server's 15 s
        lab.default_spec = {"metricResolutionSeconds": 2}

    with kube_lab(tmp_path_factory, "k", NP_PODS.format(replicas=3) + NP_SVC, shape=fast_metrics) as lab:
        yield lab


# ---------------------------------------------------------------------- reading
def test_get_nodes_wide_lists_the_lab_nodes_with_their_addresses(kube):
    out = kubectl(kube, "get", "nodes", "-o", "wide").stdout
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
    assert set(rows) == set(kube.node_ips)
    for node, ip in kube.node_ips.items():
        assert rows[node][1] == "Ready" and rows[node][5] == ip
    assert rows["m-k8s"][2] == "control-plane"


def test_kube_system_looks_like_kubeadms(kube):
    pods = json.loads(kubectl(kube, "get", "pods", "-n", "kube-system", "-o", "json").stdout)["items"]
    names = {p["metadata"]["name"] for p in pods}
    for comp in ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler"):
        assert f"{comp}-m-k8s" in names
    proxies = [p for p in pods if p["metadata"]["labels"].get("k8s-app") == "kube-proxy"]
    assert sorted(p["spec"]["nodeName"] for p in proxies) == sorted(kube.node_ips)
    assert any(n.startswith("coredns-") for n in names)
    # the kube-proxy pod's log is the proxier's sync log
    log = kubectl(kube, "logs", "-n", "kube-system", proxies[0]["metadata"]["name"]).stdout
    assert "sync" in log
    cs = kubectl(kube, "get", "componentstatuses").stdout
    assert "scheduler" in cs and "Healthy" in cs


def test_jsonpath_label_selector_and_field_selector(kube):
    names = jsonpath(kube, "get", "pods", "-l", "app=np-pods", "-o", "jsonpath={.items[*].metadata.name}").split()
    assert len(names) == 3 and all(n.startswith("np-pods-") for n in names)
    node = jsonpath(kube, "get", "pod", names[0], "-o", "jsonpath={.spec.nodeName}")
    on_node = jsonpath(kube, "get", "pods", "-A", "--field-selector", f"spec.nodeName={node}",
                       "-o", "jsonpath={.items[*].metadata.name}").split()
    assert names[0] in on_node
    assert all(n not in on_node for n in names[1:]
               if jsonpath(kube, "get", "pod", n, "-o", "jsonpath={.spec.nodeName}") != node)
    assert jsonpath(kube, "get", "svc", "np-svc", "-o", "jsonpath={.spec.ports[0].nodePort}") == "30000"


def test_errors_read_as_a_real_servers(kube):
    res = kubectl(kube, "get", "deployment", "nope", check=False)
    assert res.returncode == 1
    assert 'deployments.apps "nope" not found' in res.stderr
    res = kubectl(kube, "scale", "deployment", "np-pods", "--replicas=-1", check=False)
    assert res.returncode != 0


def test_unauthenticated_requests_get_401(kube):
    server = json.load(open(f"/run/netemu/{kube.name}/apiserver.json"))["server"]
    assert server.startswith("https://127.0.0.1:")
    res = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", f"{server}/api/v1/pods"],
                         capture_output=True, text=True, timeout=10)
    assert res.stdout == "401"
    res = subprocess.run(["curl", "-sk", "-H", "Authorization: Bearer forged.token.here", "-o", "/dev/null",
                          "-w", "%{http_code}", f"{server}/api/v1/pods"], capture_output=True, text=True, timeout=10)
    assert res.stdout == "401"


def test_nothing_listens_on_a_non_loopback_host_address(kube):
    port = json.load(open(f"/run/netemu/{kube.name}/apiserver.json"))["port"]
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    assert out.strip(), "the API server should listen"
    assert all("127.0.0.1:" in line for line in out.splitlines()), out


# ---------------------------------------------------------------------- the seeds' walkthroughs
def test_create_expose_scale_and_curl_the_nodeport(kube):
    kubectl(kube, "create", "deployment", "web", "--image=sysnet4admin/echo-hname", "--replicas=2")
    kubectl(kube, "expose", "deployment", "web", "--type=NodePort", "--name=web-svc", "--port=80")
    port = int(jsonpath(kube, "get", "svc", "web-svc", "-o", "jsonpath={.spec.ports[0].nodePort}"))
    assert 30000 <= port <= 32767
    kubectl(kube, "scale", "deployment", "web", "--replicas=3")
    kubectl(kube, "rollout", "status", "deployment/web", "--timeout=60s", timeout=90)
    pods = set(jsonpath(kube, "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}").split())
    assert len(pods) == 3
    answers = {curl(kube, kube.node_ips["w1-k8s"], port).strip() for _ in range(12)}
    assert answers <= pods and len(answers) >= 2, answers
    kubectl(kube, "delete", "svc", "web-svc")
    kubectl(kube, "delete", "deployment", "web")


def test_apply_the_seeds_manifest_and_apply_again_is_unchanged(kube):
    path = os.path.join(SEEDS, "deployment-services.yaml")
    out = kubectl(kube, "apply", "-f", path).stdout
    assert "created" in out
    again = kubectl(kube, "apply", "-f", path).stdout
    assert "created" not in again and ("unchanged" in again or "configured" in again), again
    kubectl(kube, "delete", "-f", path, "--wait=false")


def test_edit_rolls_out_and_rollout_undo_goes_back(kube):
    editor = kube.tmp / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's#image: sysnet4admin/echo-hname#image: nginx#' \"$1\"\n")
    editor.chmod(editor.stat().st_mode | stat.S_IEXEC)
    kubectl(kube, "edit", "deployment", "np-pods", env={"EDITOR": str(editor), "KUBE_EDITOR": str(editor)})
    kubectl(kube, "rollout", "status", "deployment/np-pods", "--timeout=60s", timeout=90)
    assert jsonpath(kube, "get", "deploy", "np-pods", "-o", "jsonpath={.spec.template.spec.containers[0].image}") \
        == "nginx"
    history = kubectl(kube, "rollout", "history", "deployment/np-pods").stdout
    assert "REVISION" in history and "2" in history.split()
    kubectl(kube, "rollout", "undo", "deployment/np-pods")
    kube.wait_for(lambda: jsonpath(kube, "get", "deploy", "np-pods", "-o",
                                   "jsonpath={.spec.template.spec.containers[0].image}") == "sysnet4admin/echo-hname",
                  what="the undo")
    kubectl(kube, "rollout", "status", "deployment/np-pods", "--timeout=60s", timeout=90)


def test_get_pods_watch_shows_a_deleted_pod_terminating_and_its_replacement(kube):
    victim = jsonpath(kube, "get", "pods", "-l", "app=np-pods", "-o", "jsonpath={.items[0].metadata.name}")
    proc = subprocess.Popen([KUBECTL, "get", "pods", "-w"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, KUBECONFIG=kube.kubeconfig))
    try:
        time.sleep(1.0)
        kubectl(kube, "delete", "pod", victim)
        time.sleep(1.5)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    lines = out.splitlines()
    assert any(ln.startswith(victim) and "Terminating" in ln for ln in lines), out
    seen = {ln.split()[0] for ln in lines[1:]}
    assert any(n.startswith("np-pods-") and n != victim for n in seen - {victim}), out


def test_logs_and_logs_follow(kube):
    pod = jsonpath(kube, "get", "pods", "-l", "app=np-pods", "-o", "jsonpath={.items[0].metadata.name}")
    assert "listening" in kubectl(kube, "logs", pod).stdout
    proc = subprocess.Popen([KUBECTL, "logs", "-f", pod], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, KUBECONFIG=kube.kubeconfig))
    try:
        time.sleep(0.5)
        ip = jsonpath(kube, "get", "pod", pod, "-o", "jsonpath={.status.podIP}")
        kube.exec(pod, "curl", "-s", f"http://{ip}/from-the-test")
        time.sleep(1.0)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "/from-the-test" in out


def test_events_sorted_and_describe(kube):
    out = kubectl(kube, "get", "events", "--sort-by=.lastTimestamp").stdout
    assert "Scheduled" in out
    desc = kubectl(kube, "describe", "svc", "np-svc").stdout
    assert "NodePort:" in desc and "30000/TCP" in desc and "Endpoints:" in desc


def test_drain_and_uncordon(kube):
    out = kubectl(kube, "drain", "w3-k8s", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s",
                  timeout=90).stdout
    assert "node/w3-k8s drained" in out
    nodes = kubectl(kube, "get", "nodes").stdout
    assert "SchedulingDisabled" in [ln for ln in nodes.splitlines() if ln.startswith("w3-k8s")][0]
    on_w3 = jsonpath(kube, "get", "pods", "--field-selector", "spec.nodeName=w3-k8s",
                     "-o", "jsonpath={.items[*].metadata.name}").split()
    assert not [p for p in on_w3 if p.startswith("np-pods-")]
    kubectl(kube, "uncordon", "w3-k8s")
    assert "SchedulingDisabled" not in kubectl(kube, "get", "node", "w3-k8s").stdout


def test_top_and_autoscale(kube):
    kube.wait_for(lambda: kubectl(kube, "top", "pods", check=False).returncode == 0, timeout=40,
                  what="metrics")
    top = kubectl(kube, "top", "pods").stdout
    assert top.splitlines()[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    kubectl(kube, "autoscale", "deployment", "np-pods", "--min=1", "--max=10", "--cpu-percent=50")
    hpa = kubectl(kube, "get", "hpa").stdout
    assert "np-pods" in hpa and "Deployment/np-pods" in hpa
    kubectl(kube, "delete", "hpa", "np-pods")


def test_apply_an_ingress_and_get_ingress(kube):
    # seed 000's Ingress, indented (kubectl parses files itself: it cannot read the blog's flattened copy,
    # which `netemu up` and `netemu apply` re-indent)
    ing = kube.tmp / "ingress.yaml"
    ing.write_text("""\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ingress-nginx
  annotations:
    nginx.ingress.kubernetes.io/rewrite-target: /
spec:
  ingressClassName: nginx
  rules:
  - http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: np-svc, port: {number: 80}}
""")
    assert "ingress.networking.k8s.io/ingress-nginx created" in kubectl(kube, "apply", "-f", str(ing)).stdout
    out = kubectl(kube, "get", "ingress").stdout
    assert out.splitlines()[0].split()[:3] == ["NAME", "CLASS", "HOSTS"]
    assert out.splitlines()[1].split()[:2] == ["ingress-nginx", "nginx"]


def test_a_bad_object_is_refused_whole_and_creates_nothing(kube):
    bad = kube.tmp / "bad.yaml"
    bad.write_text(NP_PODS.format(replicas=-1).replace("np-pods", "badpods"))
    res = kubectl(kube, "apply", "-f", str(bad), check=False)
    assert res.returncode != 0
    assert "spec.replicas" in res.stderr and "Invalid value: -1" in res.stderr, res.stderr
    assert kubectl(kube, "get", "deployment", "badpods", check=False).returncode != 0
    assert not jsonpath(kube, "get", "pods", "-l", "app=badpods", "-o", "jsonpath={.items[*].metadata.name}")


def test_crd_adds_its_resource_and_stored_kinds_apply(kube):
    crd = kube.tmp / "crd.yaml"
    crd.write_text("""\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd]}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object,
    x-kubernetes-preserve-unknown-fields: true}}}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
""")
    kubectl(kube, "apply", "-f", str(crd))
    kube.wait_for(lambda: "widgets" in kubectl(kube, "api-resources", check=False).stdout, what="discovery")
    widget = kube.tmp / "widget.yaml"
    widget.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n")
    kubectl(kube, "apply", "-f", str(widget))
    assert jsonpath(kube, "get", "wd", "w1", "-o", "jsonpath={.spec.size}") == "3"
    assert "robot" in kubectl(kube, "get", "sa").stdout
    assert "reader" in kubectl(kube, "get", "roles").stdout


INSTALLER = """\
apiVersion: v1
kind: Namespace
metadata: {name: addon-system}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: ipaddresspools.metallb.io}
spec:
  group: metallb.io
  scope: Namespaced
  names: {kind: IPAddressPool, plural: ipaddresspools, listKind: IPAddressPoolList, singular: ipaddresspool}
  versions: [{name: v1beta1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: controller, namespace: addon-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: addon:controller}
rules: [{apiGroups: [""], resources: [services], verbs: [get, list, watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: addon:controller}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: addon:controller}
subjects: [{kind: ServiceAccount, name: controller, namespace: addon-system}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: addon-webhook}
webhooks:
- name: ipaddresspoolvalidationwebhook.metallb.io
  admissionReviewVersions: [v1]
  sideEffects: None
  clientConfig: {service: {name: webhook-service, namespace: addon-system, path: /validate}}
  rules: [{apiGroups: [metallb.io], apiVersions: [v1beta1], operations: [CREATE], resources: [ipaddresspools]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: controller, namespace: addon-system}
spec:
  selector: {matchLabels: {app: addon-controller}}
  template:
    metadata: {labels: {app: addon-controller}}
    spec:
      serviceAccountName: controller
      securityContext: {runAsNonRoot: true, runAsUser: 65534}
      containers:
      - name: controller
        image: quay.io/metallb/controller:v0.14.9
        args: [--port=7472, --log-level=info]
        ports: [{containerPort: 7472, name: monitoring}, {containerPort: 9443, name: webhook-server}]
        livenessProbe: {httpGet: {path: /metrics, port: monitoring}, initialDelaySeconds: 1, periodSeconds: 1}
        readinessProbe: {httpGet: {path: /metrics, port: monitoring}, initialDelaySeconds: 1, periodSeconds: 1}
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true,
                          capabilities: {drop: [ALL]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: metrics-server, namespace: kube-system}
spec:
  selector: {matchLabels: {k8s-app: metrics-server}}
  template:
    metadata: {labels: {k8s-app: metrics-server}}
    spec:
      containers:
      - name: metrics-server
        image: registry.k8s.io/metrics-server/metrics-server:v0.7.2
        args: [--cert-dir=/tmp, --secure-port=10250]
        ports: [{containerPort: 10250, name: https}]
        readinessProbe: {httpGet: {path: /readyz, port: https, scheme: HTTPS}, initialDelaySeconds: 1,
                         periodSeconds: 1}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: speaker, namespace: addon-system}
spec:
  selector: {matchLabels: {app: speaker}}
  template:
    metadata: {labels: {app: speaker}}
    spec: {containers: [{name: speaker, image: quay.io/metallb/speaker:v0.14.9}]}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  group: metrics.k8s.io
  version: v1beta1
  service: {name: metrics-server, namespace: kube-system}
  groupPriorityMinimum: 100
  versionPriority: 100
  insecureSkipTLSVerify: true
"""


def test_an_upstream_style_installer_applies_whole_and_its_addons_become_ready(kube):
    path = kube.tmp / "installer.yaml"
    path.write_text(INSTALLER)
    res = kubectl(kube, "apply", "-f", str(path))
    assert res.stdout.count("created") == 10, res.stdout
    assert "RBAC is not enforced" in res.stderr  # said once per stored kind, as a warning
    for ns, label in (("addon-system", "app=addon-controller"), ("kube-system", "k8s-app=metrics-server")):
        kube.wait_for(lambda: kubectl(kube, "get", "pods", "-n", ns, "-l", label, "-o",
                                      "jsonpath={.items[*].status.containerStatuses[*].ready}").stdout == "true",
                      timeout=30, what=f"{label} Ready")
    kube.wait_for(lambda: "True" in kubectl(kube, "get", "apiservice", "v1beta1.metrics.k8s.io").stdout,
                  what="the APIService Available")
    # the lab's own MetalLB keeps serving its kinds (the CRD does not replace them)
    assert "ipaddresspools" in kubectl(kube, "api-resources", "--api-group=metallb.io").stdout
    kubectl(kube, "delete", "-f", str(path), "--wait=false")


def test_server_side_apply_dry_run_and_delete_all(kube):
    cm = kube.tmp / "cm.yaml"
    cm.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa, labels: {batch: one}}\ndata: {a: '1'}\n")
    out = kubectl(kube, "apply", "--server-side", "-f", str(cm)).stdout
    assert "configmap/ssa serverside-applied" in out
    cm.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa, labels: {batch: one}}\ndata: {a: '2'}\n")
    kubectl(kube, "apply", "--server-side", "-f", str(cm))
    assert jsonpath(kube, "get", "cm", "ssa", "-o", "jsonpath={.data.a}") == "2"
    dry = kube.tmp / "dry.yaml"
    dry.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dry, labels: {batch: one}}\n")
    assert "(server dry run)" in kubectl(kube, "apply", "--dry-run=server", "-f", str(dry)).stdout
    assert kubectl(kube, "get", "cm", "dry", check=False).returncode != 0
    kubectl(kube, "create", "configmap", "other", "--from-literal=x=y")
    kubectl(kube, "label", "cm", "other", "batch=one")
    out = kubectl(kube, "delete", "cm", "-l", "batch=one").stdout
    assert 'configmap "ssa" deleted' in out and 'configmap "other" deleted' in out
    assert not jsonpath(kube, "get", "cm", "-l", "batch=one", "-o", "jsonpath={.items[*].metadata.name}")


def test_loadbalancer_expose_and_describe(kube):
    pool = kube.tmp / "pool.yaml"
    base = ".".join(kube.gateway.split(".")[:3])
    pool.write_text(f"""\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: lab-pool, namespace: metallb-system}}
spec: {{addresses: ["{base}.11-{base}.13"]}}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {{name: lab-l2, namespace: metallb-system}}
""")
    kubectl(kube, "create", "namespace", "metallb-system", check=False)
    kubectl(kube, "apply", "-f", str(pool))
    kubectl(kube, "expose", "deployment", "np-pods", "--type=LoadBalancer", "--name=np-lb", "--port=80")
    ip = kube.wait_for(lambda: jsonpath(kube, "get", "svc", "np-lb", "-o",
                                        "jsonpath={.status.loadBalancer.ingress[0].ip}"), what="the LB IP")
    assert ip == f"{base}.11"
    desc = kubectl(kube, "describe", "svc", "np-lb").stdout
    assert f"LoadBalancer Ingress:     {ip}" in desc and "IPAllocated" in desc
    kubectl(kube, "delete", "svc", "np-lb")


def test_get_endpoints_watch_sees_a_scale(kube):
    proc = subprocess.Popen([KUBECTL, "get", "endpoints", "np-svc", "--watch"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, KUBECONFIG=kube.kubeconfig))
    try:
        time.sleep(1.0)
        kubectl(kube, "scale", "deployment", "np-pods", "--replicas=4")
        time.sleep(3.0)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        kubectl(kube, "scale", "deployment", "np-pods", "--replicas=3")
    lines = [ln for ln in out.splitlines()[1:] if ln.startswith("np-svc")]
    assert len(lines) >= 2, out
    assert "more" in lines[-1] or lines[-1].count(":80") >= 3, out


def test_down_removes_the_context_up_merged(make_lab, tmp_path, own_kubeconfig):
    lab = make_lab()
    lab.up(tmp_path=tmp_path)
    text = own_kubeconfig.read_text()
    assert f"netemu-{lab.name}" in text and f"current-context: netemu-{lab.name}" in text
    assert oct(own_kubeconfig.stat().st_mode & 0o777) == "0o600"
    lab.down()
    assert f"netemu-{lab.name}" not in own_kubeconfig.read_text()


def test_auth_can_i_whoami_and_create_token(kube):
    assert kubectl(kube, "auth", "can-i", "delete", "pods").stdout.strip() == "yes"
    who = kubectl(kube, "auth", "whoami").stdout
    assert "kubernetes-admin" in who and "system:masters" in who
    token = kubectl(kube, "create", "token", "default").stdout.strip()
    server = json.load(open(f"/run/netemu/{kube.name}/apiserver.json"))["server"]
    code = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                           f"Authorization: Bearer {token}", f"{server}/api/v1/namespaces/default/pods"],
                          capture_output=True, text=True, timeout=10)
    assert code.stdout == "200"
    assert kubectl(kube, "create", "token", "nobody", check=False).returncode != 0
