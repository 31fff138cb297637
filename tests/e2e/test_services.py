"""Services on iptables, with real traffic: NodePort, ClusterIP, balancing, affinity, traffic
policies, readiness, no-endpoint rejects."""
from __future__ import annotations

import collections
import subprocess
import time

import pytest

from conftest import NP_PODS, NP_SVC, curl


@pytest.fixture(params=["iptables", "nftables"])
def lab(make_lab, request):
    """The whole service suite runs in every proxy mode this kernel supports (IPVS: see
    test_ipvs_vm.py, in a VM)."""
    lab = make_lab()
    lab.default_spec = {"proxyMode": request.param}
    lab.mode = request.param
    return lab

HNAME = NP_PODS + NP_SVC

ECHO_IP = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ip-pods
spec:
  replicas: 1
  selector:
    matchLabels: {app: ip-pods}
  template:
    metadata:
      labels: {app: ip-pods}
    spec:
      containers:
      - name: echo-ip
        image: sysnet4admin/echo-ip
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: ip-local
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: ip-pods}
  ports:
  - port: 80
    nodePort: 30080
"""


def names_seen(lab, address: str, port: int, n: int) -> collections.Counter:
    return collections.Counter(curl(lab, address, port).strip() for _ in range(n))


def test_nodeport_on_every_node_and_balancing(lab, tmp_path):
    lab.up(HNAME.format(replicas=3), tmp_path=tmp_path)
    pods = {p["metadata"]["name"] for p in lab.pods()}
    for node in ("w1-k8s", "w2-k8s", "w3-k8s"):
        assert curl(lab, lab.node_ips[node], 30000).strip() in pods
    seen = names_seen(lab, lab.node_ips["w1-k8s"], 30000, 60)
    assert set(seen) == pods, f"every pod answers through the NodePort: {seen}"

    svc = lab.get("svc", "np-svc")[0]
    cip = svc["spec"]["clusterIP"]
    # ClusterIP from a pod (including hairpin: a pod reaching its own service) and from a node
    some = sorted(pods)[0]
    got = collections.Counter(lab.exec(some, "curl", "-s", "-m", "2", cip).stdout.strip() for _ in range(30))
    assert set(got) == pods
    got = collections.Counter(lab.node_exec("w2-k8s", "curl", "-s", "-m", "2", cip).stdout.strip() for _ in range(20))
    assert set(got) <= pods and len(got) >= 2
    # the rules are kube-proxy's
    rules = lab.run("rules", "w1-k8s").stdout
    if lab.mode == "iptables":
        assert "-A KUBE-SERVICES" in rules and "KUBE-SVC-" in rules and "KUBE-SEP-" in rules
        assert "-m statistic --mode random --probability 0.333" in rules
        assert '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in rules
    else:
        assert "table ip kube-proxy" in rules and "map service-ips" in rules
        assert "service-" in rules and "endpoint-" in rules and "numgen random" in rules

    # scaling shows up in the endpoints and in the answers
    lab.run("scale", "deployment", "np-pods", "--replicas=5")
    lab.run("rollout", "status", "deployment/np-pods")
    pods5 = {p["metadata"]["name"] for p in lab.pods()}
    lab.wait_for(lambda: set(names_seen(lab, lab.node_ips["w3-k8s"], 30000, 50)) == pods5, timeout=20,
                 what="all five pods behind the NodePort")
    ep = lab.run("get", "endpoints", "np-svc").stdout
    assert "+ 2 more..." in ep


def test_expose_and_tables(lab, tmp_path):
    lab.up(HNAME.format(replicas=2), tmp_path=tmp_path)
    out = lab.run("expose", "deployment", "np-pods", "--type=NodePort", "--name=np-svc2", "--port=80").stdout
    assert "service/np-svc2 exposed" in out
    svc = lab.get("svc", "np-svc2")[0]
    port = svc["spec"]["ports"][0]["nodePort"]
    assert 30000 <= port <= 32767 and port != 30000
    pods = {p["metadata"]["name"] for p in lab.pods()}
    lab.wait_for(lambda: curl(lab, lab.node_ips["w1-k8s"], port).strip() in pods, what="the exposed NodePort")
    table = lab.run("get", "svc").stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert any(line.split()[0] == "np-svc" and "80:30000/TCP" in line for line in table)
    slices = lab.get("endpointslices")
    assert any(s["metadata"]["labels"]["kubernetes.io/service-name"] == "np-svc2" and len(s["endpoints"]) == 2
               for s in slices)


def test_expose_with_a_bad_port_is_refused_and_changes_nothing(lab, tmp_path):
    lab.up(HNAME.format(replicas=2), tmp_path=tmp_path)
    res = lab.run("expose", "deployment", "np-pods", "--port=99999", "--name=bad", check=False)
    assert res.returncode == 1
    assert res.stderr.startswith('Error from server (Invalid): Service "bad" is invalid: spec.ports[0].port: ')
    assert "99999" in res.stderr
    assert "bad" not in {s["metadata"]["name"] for s in lab.get("svc")}
    missing = lab.run("get", "svc", "bad", check=False)
    assert missing.returncode == 1 and 'services "bad" not found' in missing.stderr
    # kube-proxy still programs the lab: the old NodePort answers everywhere, a new Service works
    pods = {p["metadata"]["name"] for p in lab.pods()}
    for node in ("w1-k8s", "w2-k8s", "w3-k8s"):
        assert curl(lab, lab.node_ips[node], 30000).strip() in pods
    assert lab.run("expose", "deployment", "np-pods", "--type=NodePort", "--name=good", "--port=80").stdout.strip() \
        == "service/good exposed"
    port = lab.get("svc", "good")[0]["spec"]["ports"][0]["nodePort"]
    lab.wait_for(lambda: curl(lab, lab.node_ips["w2-k8s"], port).strip() in pods, what="the new NodePort")


def test_external_traffic_policy_local_keeps_source_ip(lab, tmp_path):
    lab.up(ECHO_IP, tmp_path=tmp_path)
    pod = lab.pods()[0]
    node = pod["spec"]["nodeName"]
    other = next(n for n in ("w1-k8s", "w2-k8s", "w3-k8s") if n != node)
    out = curl(lab, lab.node_ips[node], 30080)
    assert lab.gateway in out, f"the pod sees the host's own address: {out!r}"
    # a node without a local endpoint drops the connection (no masquerade to a remote pod)
    lab.host_safe(lab.node_ips[other])
    res = subprocess.run(["curl", "-s", "-m", "2", f"http://{lab.node_ips[other]}:30080/"], capture_output=True)
    assert res.returncode != 0


def test_session_affinity_sticks(lab, tmp_path):
    manifest = HNAME.format(replicas=3) + "  sessionAffinity: ClientIP\n"
    lab.up(manifest, tmp_path=tmp_path)
    seen = names_seen(lab, lab.node_ips["w1-k8s"], 30000, 15)
    assert len(seen) == 1, f"ClientIP affinity keeps one client on one pod: {seen}"


def test_readiness_removes_and_restores_endpoint(lab, tmp_path):
    manifest = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: alpaca-prod
spec:
  replicas: 2
  selector:
    matchLabels: {app: alpaca}
  template:
    metadata:
      labels: {app: alpaca}
    spec:
      containers:
      - name: kuard
        image: gcr.io/kuar-demo/kuard-amd64:1
        ports:
        - containerPort: 8080
        readinessProbe:
          httpGet: {path: /ready, port: 8080}
          periodSeconds: 1
          failureThreshold: 2
          successThreshold: 1
---
apiVersion: v1
kind: Service
metadata:
  name: alpaca-service
spec:
  selector: {app: alpaca}
  ports:
  - port: 8080
    targetPort: 8080
"""
    lab.up(manifest, tmp_path=tmp_path)
    pods = lab.pods()
    victim = pods[0]
    ip = victim["status"]["podIP"]

    def endpoints():
        return lab.get("endpoints", "alpaca-service")[0]

    def ready_ips():
        return {a["ip"] for s in endpoints().get("subsets", []) for a in s.get("addresses", [])}
    assert ip in ready_ips()
    # make the pod's /ready fail, as the seed's walkthrough clicks "fail" in kuard's UI
    lab.exec(pods[1]["metadata"]["name"], "curl", "-s", "-m", "2", "-X", "POST", f"http://{ip}:8080/ready/fail")
    t0 = time.time()
    lab.wait_for(lambda: ip not in ready_ips(), timeout=10, what="the endpoint to leave")
    assert time.time() - t0 < 1 * 2 + 3  # periodSeconds x failureThreshold plus a small delay
    svc_ip = lab.get("svc", "alpaca-service")[0]["spec"]["clusterIP"]
    pages = [lab.node_exec("w1-k8s", "curl", "-s", "-m", "2", f"http://{svc_ip}:8080/").stdout for _ in range(10)]
    assert all(pods[1]["metadata"]["name"] in page for page in pages)
    assert not any(victim["metadata"]["name"] in page for page in pages)
    lab.exec(pods[1]["metadata"]["name"], "curl", "-s", "-m", "2", "-X", "POST", f"http://{ip}:8080/ready/pass")
    lab.wait_for(lambda: ip in ready_ips(), timeout=10, what="the endpoint to come back")


def test_service_without_endpoints_rejects_at_once(lab, tmp_path):
    manifest = """\
apiVersion: v1
kind: Service
metadata:
  name: nobody
spec:
  type: NodePort
  selector: {app: nobody}
  ports:
  - port: 80
    nodePort: 30099
"""
    lab.up(manifest, tmp_path=tmp_path)
    lab.host_safe(lab.node_ips["w1-k8s"])
    t0 = time.time()
    res = subprocess.run(["curl", "-s", "-m", "5", f"http://{lab.node_ips['w1-k8s']}:30099/"], capture_output=True)
    assert res.returncode == 7, "connection refused (REJECT), not a timeout"
    assert time.time() - t0 < 1.0
    cip = lab.get("svc", "nobody")[0]["spec"]["clusterIP"]
    res = lab.node_exec("w2-k8s", "curl", "-s", "-m", "5", f"http://{cip}/", check=False)
    assert res.returncode == 7


def test_delete_pod_during_curl_loop(lab, tmp_path):
    lab.up(HNAME.format(replicas=3), tmp_path=tmp_path)
    victim = lab.pods()[0]["metadata"]["name"]
    lab.run("delete", "pod", victim, "--grace-period=1")
    failures = 0
    for _ in range(40):
        out = curl(lab, lab.node_ips["w1-k8s"], 30000, timeout=2)
        failures += out.startswith("<curl")
        time.sleep(0.05)
    assert failures <= 2, f"{failures} of 40 requests failed while a pod was replaced"
    names = {p["metadata"]["name"] for p in lab.pods()}
    assert victim not in names and len(names) == 3
