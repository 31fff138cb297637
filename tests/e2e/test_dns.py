"""Cluster DNS in real labs: dig and a real resolver inside pods, the seeds' walkthroughs."""
from __future__ import annotations

import os
import time

from conftest import curl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: sysnet4admin/echo-hname
        ports:
        - {name: http, containerPort: 80}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
---
apiVersion: v1
kind: Service
metadata:
  name: web-headless
spec:
  clusterIP: None
  selector: {app: web}
  ports:
  - {name: http, port: 80}
---
apiVersion: v1
kind: Namespace
metadata:
  name: other
---
apiVersion: v1
kind: Service
metadata:
  name: far
  namespace: other
spec:
  selector: {app: web}
  ports:
  - {port: 8080, targetPort: 80}
"""


def dig(lab, pod, *args):
    return lab.exec(pod, "dig", "+short", "+time=2", "+tries=1", *args).stdout.split()


def test_names_records_and_rcodes_from_a_pod(lab, tmp_path):
    lab.up(WEB, tmp_path=tmp_path)
    pod = lab.pods("app=web")[0]["metadata"]["name"]
    web_ip = lab.get("svc", "web")[0]["spec"]["clusterIP"]
    far_ip = lab.get("svc", "far", "-n", "other")[0]["spec"]["clusterIP"]
    # short name through the pod's search list, name.namespace, FQDN
    assert dig(lab, pod, "+search", "web") == [web_ip]
    assert dig(lab, pod, "+search", "far.other") == [far_ip]
    assert dig(lab, pod, "web.default.svc.cluster.local") == [web_ip]
    assert dig(lab, pod, "WEB.Default.SVC.cluster.local") == [web_ip]  # case-insensitive
    # SRV for a named port
    srv = dig(lab, pod, "SRV", "_http._tcp.web.default.svc.cluster.local")
    assert srv == ["0", "100", "80", "web.default.svc.cluster.local."]
    # PTR of the ClusterIP
    assert dig(lab, pod, "-x", web_ip) == ["web.default.svc.cluster.local."]
    # the kube-dns service itself
    assert dig(lab, pod, "kube-dns.kube-system.svc.cluster.local") == [lab.dns_ip]
    # NXDOMAIN with the SOA, as CoreDNS answers
    out = lab.exec(pod, "dig", "+time=2", "+tries=1", "nothere.default.svc.cluster.local").stdout
    assert "status: NXDOMAIN" in out and "SOA" in out and "flags: qr aa rd" in out
    # a real resolver library (glibc, through /etc/resolv.conf) inside the pod
    out = lab.exec(pod, "python3", "-c", "import socket; print(socket.gethostbyname('web'))").stdout.strip()
    assert out == web_ip
    # the netemu dns verb asks the same server the same way
    res = lab.run("dns", "web", "--from", pod)
    assert web_ip in res.stdout and "NOERROR" in res.stdout


def test_headless_follows_a_scale_quickly(lab, tmp_path):
    lab.up(WEB, tmp_path=tmp_path)
    pod = lab.pods("app=web")[0]["metadata"]["name"]
    ips = sorted(p["status"]["podIP"] for p in lab.pods("app=web"))
    assert sorted(dig(lab, pod, "web-headless.default.svc.cluster.local")) == ips
    lab.run("scale", "deployment", "web", "--replicas=4")
    lab.run("rollout", "status", "deployment/web")
    t0 = time.time()
    want = sorted(p["status"]["podIP"] for p in lab.pods("app=web"))
    lab.wait_for(lambda: sorted(dig(lab, pod, "web-headless.default.svc.cluster.local")) == want, timeout=10,
                 interval=0.05, what="the headless answer to follow the scale")
    assert time.time() - t0 < 5
    # a new Service answers right after it is created
    extra = tmp_path / "extra.yaml"
    extra.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: late\nspec:\n  selector: {app: web}\n"
                     "  ports:\n  - {port: 81, targetPort: 80}\n")
    lab.run("apply", "-f", str(extra))
    late_ip = lab.get("svc", "late")[0]["spec"]["clusterIP"]
    lab.wait_for(lambda: dig(lab, pod, "late.default.svc.cluster.local") == [late_ip], timeout=5, interval=0.05,
                 what="the new Service's name")


def test_seed_counter_app_counts_through_redis_by_name(lab, tmp_path):
    """Seed 001 as the blog shows it (one-line manifests): counter finds `redis` by name."""
    with open(os.path.join(REPO, "topologies", "seeds", "counter.yaml")) as f:
        seed = f.read()
    lab.up(seed, tmp_path=tmp_path)
    node_ip = lab.node_ips["w1-k8s"]
    counts = [curl(lab, node_ip, 31000).strip() for _ in range(3)]
    assert all(c.isdigit() for c in counts), counts
    assert [int(c) for c in counts] == list(range(int(counts[0]), int(counts[0]) + 3))
    svc = lab.get("svc", "counter-lb")[0]
    assert svc["spec"]["type"] == "LoadBalancer"


def test_seed_nginx_walkthrough_curls_by_name(lab, tmp_path):
    """Seed 002: `curl nginx-svc` and `curl nginx-svc.nginx.svc.cluster.local` from a pod."""
    manifest = """\
apiVersion: v1
kind: Namespace
metadata: {name: nginx}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: nginx01, namespace: nginx}
spec:
  replicas: 2
  selector: {matchLabels: {app: nginx01}}
  template:
    metadata: {labels: {app: nginx01}}
    spec:
      containers: [{name: nginx, image: nginx}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cent-tools, namespace: nginx}
spec:
  replicas: 1
  selector: {matchLabels: {app: cent-tools}}
  template:
    metadata: {labels: {app: cent-tools}}
    spec:
      containers: [{name: tools, image: centos}]
---
apiVersion: v1
kind: Service
metadata: {name: nginx-svc, namespace: nginx}
spec:
  selector: {app: nginx01}
  ports: [{port: 80}]
"""
    lab.up(manifest, tmp_path=tmp_path)
    tools = [p for p in lab.get("pods", "-n", "nginx") if p["metadata"]["name"].startswith("cent-tools")][0]
    name = tools["metadata"]["name"]
    for target in ("nginx-svc", "nginx-svc.nginx.svc.cluster.local"):
        res = lab.exec(name, "curl", "-s", "-m", "3", target, namespace="nginx", check=False)
        assert "Welcome to nginx!" in res.stdout, (target, res.stdout, res.stderr)
