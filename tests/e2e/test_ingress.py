"""Ingress with the NGINX Ingress controller (real nginx in the controller pod), from the host:
seed 000's walkthrough as pasted, host rules, TLS, rewrite-target, default backend, and a backend
scaled while traffic flows."""
from __future__ import annotations

import base64
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import curl

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "ingress.yaml"
HTTP, HTTPS = 30100, 30101


def seed_manifests() -> str:
    """topologies/ingress.yaml: the walkthrough's deployments and services, the seed's Ingress and
    controller Service as the blog shows them (flattened, with placeholders)."""
    return TOPOLOGY.read_text()


def seed_part(kind_line: str) -> str:
    docs = seed_manifests().split("\n---\n")
    return next(d for d in docs if kind_line in d).rstrip("\n") + "\n"


APPS = "\n---\n".join(d for d in seed_manifests().split("\n---\n") if "kind: Ingress" not in d
                      and "nginx-ingress-controller" not in d).rstrip("\n") + "\n"

HELLO = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - {name: hello, image: "nginxdemos/hello:plain-text", ports: [{containerPort: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  selector: {app: hello}
  ports: [{name: web, port: 8080, targetPort: 80}]
"""

HOSTS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: hosts
spec:
  ingressClassName: nginx
  tls:
  - hosts: [foo.example.com]
    secretName: foo-tls
  - hosts: [bar.example.com]
  rules:
  - host: foo.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: hname-svc-default, port: {number: 80}}}}
  - host: bar.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: ip-svc, port: {name: http}}}}
  - host: plain.example.com
    http:
      paths:
      - {path: /exact, pathType: Exact, backend: {service: {name: ip-svc, port: {number: 80}}}}
      - {path: /app, pathType: Prefix, backend: {service: {name: hname-svc-default, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: rewrite
  annotations:
    nginx.ingress.kubernetes.io/use-regex: "true"
    nginx.ingress.kubernetes.io/rewrite-target: /$2
spec:
  ingressClassName: nginx
  rules:
  - host: rx.example.com
    http:
      paths:
      - {path: /app(/|$)(.*), pathType: ImplementationSpecific, backend: {service: {name: hello, port: {name: web}}}}
"""

CATCH_ALL = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: catch-all}
spec:
  defaultBackend:
    service: {name: hello, port: {number: 8080}}
"""


# --------------------------------------------------------------------------- helpers
def node_ip(lab, node: str = "w1-k8s") -> str:
    ip = lab.node_ips[node]
    lab.host_safe(ip)
    return ip


def request(lab, url: str, host: str | None = None, resolve: str | None = None, timeout: float = 5) -> tuple[str, str]:
    """(status code, body) with curl from the host; -k for HTTPS; --resolve for SNI."""
    m = re.match(r"https?://([^/:]+)", url)
    lab.host_safe(resolve or m.group(1))
    cmd = ["curl", "-sk", "-m", str(timeout), "-o", "-", "-w", "\n%{http_code} %{redirect_url}"]
    if host:
        cmd += ["-H", f"Host: {host}"]
    if resolve:
        cmd += ["--resolve", f"{m.group(1)}:{HTTPS}:{resolve}"]
    res = subprocess.run(cmd + [url], capture_output=True, text=True)
    if res.returncode != 0:
        return f"<curl rc={res.returncode}>", ""
    body, _, tail = res.stdout.rpartition("\n")
    return tail.strip(), body


def certificate_subject(lab, ip: str, server_name: str | None) -> str:
    lab.host_safe(ip)
    cmd = ["openssl", "s_client", "-connect", f"{ip}:{HTTPS}"] + (["-servername", server_name] if server_name else [])
    out = subprocess.run(cmd, input="", capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"^subject=(.*)$", out, re.M)
    return m.group(1) if m else out[-300:]


def controller_pod(lab) -> dict:
    pods = [p for p in lab.get("pods", "-n", "ingress-nginx") if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 1, pods
    return pods[0]


def hname_pods(lab) -> set[str]:
    return {p["metadata"]["name"] for p in lab.pods("app=in-hname-pod")}


# --------------------------------------------------------------------------- seed 000
def test_seed_walkthrough_as_pasted(lab, tmp_path):
    up = lab.up(seed_manifests(), tmp_path=tmp_path)
    warnings = up.stderr + up.stdout
    assert "[경로], [클러스터 IP 서비스 이름], [서비스 포트]" in warnings and "this path is skipped" in warnings
    assert "[api 버전] is a placeholder" in warnings
    assert "spec.ports[0].target: unknown field" in warnings

    ctrl = controller_pod(lab)
    assert ctrl["metadata"]["labels"]["app.kubernetes.io/name"] == "ingress-nginx"
    ctrl_node, ctrl_ip = ctrl["spec"]["nodeName"], ctrl["status"]["podIP"]
    table = lab.run("get", "ingress").stdout.splitlines()
    assert table[0].split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert table[1].split()[:5] == ["ingress-nginx", "<none>", "*", lab.node_ips[ctrl_node], "80"]

    names = hname_pods(lab)
    for node in ("w1-k8s", "w2-k8s", "w3-k8s"):  # the NodePort on every node
        ip = node_ip(lab, node)
        seen = {curl(lab, ip, HTTP, "/").strip() for _ in range(9)}
        assert seen <= names and len(seen) >= 2, (seen, names)
        out = curl(lab, ip, HTTP, "/ip")
        assert out.startswith("request_method : GET | ip_dest: 172.") and out.strip().endswith(f"ip_src: {ctrl_ip}")
    ip = node_ip(lab)
    assert curl(lab, ip, HTTP, "/IP/anything?x=1").startswith("request_method : GET")  # ~* "^/ip", rewritten to /
    assert curl(lab, ip, HTTP, "/something/else").strip() in names  # the empty path is "/"

    status, body = request(lab, f"https://{ip}:{HTTPS}/")
    assert status.startswith("200") and body.strip() in names
    status, body = request(lab, f"https://{ip}:{HTTPS}/ip")
    assert body.startswith("request_method : GET")
    assert "Kubernetes Ingress Controller Fake Certificate" in certificate_subject(lab, ip, None)

    conf = lab.exec(ctrl["metadata"]["name"], "cat", "/etc/nginx/nginx.conf", namespace="ingress-nginx").stdout
    assert 'location ~* "^/ip" {' in conf and 'rewrite "(?i)/ip" / break;' in conf
    desc = lab.run("describe", "ingress", "ingress-nginx").stdout
    assert "/ip    ip-svc:80 (" in desc and "hname-svc-default:80 (" in desc


# --------------------------------------------------------------------------- v1, hosts, TLS
def test_hosts_tls_rewrite_and_default_backend(lab, tmp_path):
    lab.up(APPS + "---\n" + HELLO, tmp_path=tmp_path)
    assert not lab.get("pods", "-n", "ingress-nginx")  # no Ingress yet: no controller

    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=foo.example.com", "-addext", "subjectAltName=DNS:foo.example.com",
                    "-keyout", str(tmp_path / "tls.key"), "-out", str(tmp_path / "tls.crt")],
                   check=True, capture_output=True)
    secret = ("apiVersion: v1\nkind: Secret\nmetadata: {name: foo-tls}\ntype: kubernetes.io/tls\ndata:\n"
              f"  tls.crt: {base64.b64encode((tmp_path / 'tls.crt').read_bytes()).decode()}\n"
              f"  tls.key: {base64.b64encode((tmp_path / 'tls.key').read_bytes()).decode()}\n")
    more = tmp_path / "ingress.yaml"
    more.write_text(HOSTS + "---\n" + secret + "---\n" + seed_part("nginx-ingress-controller"))
    lab.run("apply", "-f", str(more))  # the controller comes with the first Ingress
    ip = node_ip(lab)
    lab.wait_for(lambda: request(lab, f"http://{ip}:{HTTP}/exact", host="plain.example.com")[0].startswith("200"),
                 timeout=60, what="the controller to serve the Ingresses")

    # ssl-redirect for TLS hosts (308, trailing slash dropped, no port), none for plain.example.com
    assert request(lab, f"http://{ip}:{HTTP}/a/", host="foo.example.com")[0] == "308 https://foo.example.com/a"
    assert request(lab, f"http://{ip}:{HTTP}/", host="bar.example.com")[0].startswith("308 https://bar.example.com")
    status, body = request(lab, f"https://foo.example.com:{HTTPS}/", resolve=ip)
    assert status.startswith("200") and body.strip() in hname_pods(lab)
    status, body = request(lab, f"https://bar.example.com:{HTTPS}/x", resolve=ip)
    assert body.startswith("request_method : GET")
    assert "CN = foo.example.com" in certificate_subject(lab, ip, "foo.example.com")  # from the Secret
    bar = certificate_subject(lab, ip, "bar.example.com")  # no Secret: a self-signed one for the host
    assert "CN = bar.example.com" in bar and "netemu" in bar
    assert "Fake Certificate" in certificate_subject(lab, ip, "nobody.example.com")

    # Exact and Prefix; anything else on a known host, and unknown hosts: the default backend's 404
    assert request(lab, f"http://{ip}:{HTTP}/exact", host="plain.example.com")[1].startswith("request_method")
    assert request(lab, f"http://{ip}:{HTTP}/exact/more", host="plain.example.com")[0].startswith("404")
    assert request(lab, f"http://{ip}:{HTTP}/app", host="plain.example.com")[0].startswith("200")
    assert request(lab, f"http://{ip}:{HTTP}/app/x/y", host="plain.example.com")[0].startswith("200")
    assert request(lab, f"http://{ip}:{HTTP}/apple", host="plain.example.com")[0].startswith("404")
    assert request(lab, f"http://{ip}:{HTTP}/", host="nobody.example.com")[0].startswith("404")

    # rewrite-target with capture groups
    status, body = request(lab, f"http://{ip}:{HTTP}/app/hello/world?q=1", host="rx.example.com")
    assert status.startswith("200") and "URI: /hello/world?q=1" in body, body
    assert "URI: /\n" in request(lab, f"http://{ip}:{HTTP}/app", host="rx.example.com")[1]

    rows = {r.split()[0]: r.split() for r in lab.run("get", "ing").stdout.splitlines()[1:]}
    assert rows["hosts"][1:3] == ["nginx", "foo.example.com,bar.example.com,plain.example.com"]
    assert rows["hosts"][-3:-1] == ["80,", "443"]

    # an Ingress with only a default backend takes every host nothing else matches
    (tmp_path / "catch.yaml").write_text(CATCH_ALL)
    lab.run("apply", "-f", str(tmp_path / "catch.yaml"))
    lab.wait_for(lambda: "URI: /anything" in request(lab, f"http://{ip}:{HTTP}/anything",
                                                     host="nobody.example.com")[1], what="the catch-all Ingress")
    # no endpoints: 503
    lab.run("scale", "deployment", "in-ip-pod", "--replicas=0")
    lab.wait_for(lambda: request(lab, f"http://{ip}:{HTTP}/exact", host="plain.example.com")[0].startswith("503"),
                 what="503 without endpoints")


# --------------------------------------------------------------------------- traffic while scaling
class Load(threading.Thread):
    """Requests one after the other (a new connection each, as the blog's loop), counting failures."""

    def __init__(self, url: str, pause: float = 0.01, timeout: float = 20):
        super().__init__(daemon=True)
        self.url, self.pause, self.timeout = url, pause, timeout
        self.ok = 0
        self.failures: list[str] = []
        self.names: set[str] = set()
        self.slowest = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.time()
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout) as r:
                    self.names.add(r.read().decode().strip())
                    self.ok += 1
            except (urllib.error.URLError, OSError) as e:
                self.failures.append(f"{time.strftime('%X')} {e}")
            self.slowest = max(self.slowest, time.time() - t0)
            time.sleep(self.pause)


def test_backend_scaled_while_traffic_flows(lab, tmp_path):
    lab.up(seed_manifests(), tmp_path=tmp_path)
    ip = node_ip(lab)
    before = hname_pods(lab)
    load = Load(f"http://{ip}:{HTTP}/")
    load.start()
    try:
        time.sleep(1)
        for replicas in (6, 1, 3):
            lab.run("scale", "deployment", "in-hname-pod", f"--replicas={replicas}")
            lab.run("rollout", "status", "deployment/in-hname-pod", timeout=120)
            lab.wait_for(lambda: len(hname_pods(lab)) == replicas, what=f"{replicas} replicas")
            time.sleep(1.5)
        victim = sorted(hname_pods(lab))[0]
        lab.run("delete", "pod", victim)
        lab.wait_for(lambda: victim not in hname_pods(lab) and len(hname_pods(lab)) == 3, what="a replacement pod")
        time.sleep(1.5)
    finally:
        load.stop.set()
        load.join(30)
    assert load.ok > 100
    assert not load.failures, f"{len(load.failures)} of {load.ok + len(load.failures)} requests failed: " \
                              f"{load.failures[:5]}"
    assert len(load.names - before) >= 3, "new pods were never reached"  # the scale-up's pods answered
    assert all(n.startswith("in-hname-pod-") for n in load.names), load.names
    print(f"{load.ok} requests, none failed, slowest {load.slowest:.2f}s")
