"""Ingress in both families, with the NGINX Ingress controller's real nginx, in a dual-stack lab: nginx listens
on [::] too (the controller's pod has IPv6), the controller's PreferDualStack NodePort answers on a node's IPv6
address from the host, an IPv6-only backend Service is reached through its pods' IPv6 addresses, a dual-stack
one through both families; HTTPS over IPv6; IPv4 still works.

Traffic from the host only after the route is checked to go into the lab (`netemu check-route` and the
route's device)."""
from __future__ import annotations

import subprocess

import pytest

HTTP, HTTPS = 30110, 30111

MANIFESTS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: hname}
spec:
  replicas: 2
  selector: {matchLabels: {app: hname}}
  template:
    metadata: {labels: {app: hname}}
    spec:
      containers:
      - {name: echo-hname, image: sysnet4admin/echo-hname, ports: [{containerPort: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ip}
spec:
  replicas: 2
  selector: {matchLabels: {app: ip}}
  template:
    metadata: {labels: {app: ip}}
    spec:
      containers:
      - {name: echo-ip, image: sysnet4admin/echo-ip, ports: [{containerPort: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: hname6}
spec:
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv6]
  selector: {app: hname}
  ports: [{name: http, port: 80, targetPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: ip-ds}
spec:
  ipFamilyPolicy: PreferDualStack
  selector: {app: ip}
  ports: [{name: http, port: 80, targetPort: 80}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ds}
spec:
  ingressClassName: nginx
  rules:
  - http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: hname6, port: {number: 80}}}}
      - {path: /ip, pathType: Prefix, backend: {service: {name: ip-ds, port: {name: http}}}}
---
apiVersion: v1
kind: Service
metadata: {name: ingress-nginx-ds, namespace: ingress-nginx}
spec:
  type: NodePort
  ipFamilyPolicy: PreferDualStack
  selector: {app.kubernetes.io/name: ingress-nginx}
  ports:
  - {name: http, port: 80, targetPort: 80, nodePort: %d}
  - {name: https, port: 443, targetPort: 443, nodePort: %d}
""" % (HTTP, HTTPS)


@pytest.fixture
def lab(make_lab):
    """A dual-stack lab (its IPv6 ranges follow its index, like its IPv4 ones); make_lab tears it down and
    checks that nothing of it is left."""
    lab = make_lab()
    lab.default_spec = lab.dual_stack()
    return lab


def ip6_of(pod: dict) -> str | None:
    return next((a["ip"] for a in pod["status"].get("podIPs") or [] if ":" in a["ip"]), None)


def get(lab, url: str, timeout: float = 5) -> str:
    """curl -g from the host, after checking that the route to the address goes into this lab."""
    host = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    lab.host_safe(host)
    res = subprocess.run(["curl", "-sgk", "-m", str(timeout), url], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else f"<curl rc={res.returncode}>"


def test_ingress_over_ipv6(lab, tmp_path):
    lab.up(MANIFESTS, tmp_path=tmp_path)
    ctrl = [p for p in lab.get("pods", "-n", "ingress-nginx") if not p["metadata"].get("deletionTimestamp")]
    assert len(ctrl) == 1, ctrl
    ctrl = ctrl[0]
    ctrl_ip6 = ip6_of(ctrl)
    assert ctrl_ip6, ctrl["status"]
    hname = {p["metadata"]["name"]: p for p in lab.pods("app=hname")}
    ip_pods = lab.pods("app=ip")
    assert all(ip6_of(p) for p in [*hname.values(), *ip_pods])

    # nginx listens on [::] too, and hname6's upstream is its pods' IPv6 addresses
    conf = lab.exec(ctrl["metadata"]["name"], "cat", "/etc/nginx/nginx.conf", namespace="ingress-nginx").stdout
    assert "listen [::]:80 default_server reuseport backlog=4096;" in conf
    assert "listen [::]:443 default_server reuseport backlog=4096 ssl;" in conf
    for p in hname.values():
        assert f"server [{ip6_of(p)}]:80 max_fails=0;" in conf, conf
        assert f"server {p['status']['podIP']}:80 " not in conf
    for p in ip_pods:  # the dual-stack Service: both families, as ingress-nginx takes every slice
        assert f"server [{ip6_of(p)}]:80 max_fails=0;" in conf and f"server {p['status']['podIP']}:80 max_fails=0;" \
            in conf

    svc = lab.get("svc", "ingress-nginx-ds", "-n", "ingress-nginx")[0]["spec"]
    assert svc["ipFamilies"] == ["IPv4", "IPv6"], svc
    w1 = lab.node_ips6["w1-k8s"]
    assert f"ne-{lab.name}" in lab.run("check-route", w1).stdout
    url6 = f"http://[{w1}]:{HTTP}"

    # from the host, the NodePort on a node's IPv6 address: the IPv6-only backend's pods answer
    lab.wait_for(lambda: get(lab, url6 + "/") in hname, timeout=30, what="the ingress on the node's IPv6 address")
    seen = {get(lab, url6 + "/") for _ in range(12)}
    assert seen == set(hname), seen
    # the dual-stack backend: nginx round-robins over its pods' addresses of both families
    answers = [get(lab, url6 + "/ip") for _ in range(16)]
    assert all(a.startswith("request_method : GET | ip_dest: ") for a in answers), answers
    dests = {a.split("ip_dest: ")[1].split(" |")[0] for a in answers}
    assert {d for d in dests if ":" in d} and {d for d in dests if ":" not in d}, dests
    # echo-ip saw nginx's own address of the family it connected over
    assert any(a.strip().endswith(f"ip_src: {ctrl_ip6}") for a in answers), answers
    # HTTPS over IPv6 (the controller's fake certificate), and on every node
    assert get(lab, f"https://[{w1}]:{HTTPS}/") in hname
    for node in ("m-k8s", "w2-k8s", "w3-k8s"):
        assert get(lab, f"http://[{lab.node_ips6[node]}]:{HTTP}/") in hname
    # describe ingress: the IPv6-only backend's endpoints as kubectl prints them ([addr]:port)
    desc = lab.run("describe", "ingress", "ds").stdout
    assert "hname6:80 ([" in desc and "]:80" in desc, desc
    assert any(f"[{ip6_of(p)}]:80" in desc for p in hname.values()), desc
    # IPv4 still works
    assert get(lab, f"http://{lab.node_ips['w2-k8s']}:{HTTP}/") in hname
