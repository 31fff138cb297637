"""The ingress-nginx configuration in both families: servers listen on [::] too where the controller's pod
has IPv6 (ingress-nginx's buildHTTPListener/buildHTTPSListener with IsIPV6Enabled), the ConfigMap's
disable-ipv6 turns that off, upstreams take IPv6 endpoints as ``[addr]:port``; an IPv4 controller's
configuration is unchanged; a real nginx serves it over IPv6 on loopback."""
from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from netemu.ingress import ControllerConfig, build_model, render
from netemu.ingress.model import _ip_sort_key, host_port
from test_ingress_render import (
    NGINX, NGINX_CLASS, _complex_snapshot, _free_port, _prepare_dir, _selfsigned, backend, ingress, rule,
    seed_snapshot, service, slice_, snap,
)

CFG = ControllerConfig(watch_without_class=True)
CFG6 = ControllerConfig(watch_without_class=True, ipv6=True)


def slice6(svc, addrs, port=80, port_name=None):
    s = slice_(svc, addrs, port=port, port_name=port_name)
    s["addressType"] = "IPv6"
    s["metadata"]["name"] = f"{svc}-v6"
    return s


def listens(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("listen ")]


def test_listen_on_ipv6_with_the_same_options():
    s = seed_snapshot()
    s["ingresses"].append(ingress("h", [rule([("/", "Prefix", "ip-svc", 80)], host="a.example")]))
    r = render(s, CFG6, conf_dir="/c", cert_dir="/c/ssl")
    assert listens(r.text) == [
        # the catch-all server, then the host's (servers sorted by name)
        "listen 80 default_server reuseport backlog=4096;", "listen [::]:80 default_server reuseport backlog=4096;",
        "listen 443 default_server reuseport backlog=4096 ssl;",
        "listen [::]:443 default_server reuseport backlog=4096 ssl;",
        "listen 80;", "listen [::]:80;", "listen 443 ssl;", "listen [::]:443 ssl;",
        # nginx's own servers stay on loopback IPv4
        "listen 127.0.0.1:8181 default_server;", "listen 127.0.0.1:10246;"]


def test_ipv4_controller_configuration_is_unchanged():
    """Without IPv6 in the pod, not a byte changes; with it, only the [::] listen lines are added."""
    s = seed_snapshot()
    v4 = render(s, CFG, conf_dir="/c", cert_dir="/c/ssl").text
    v6 = render(s, CFG6, conf_dir="/c", cert_dir="/c/ssl").text
    assert "[::]" not in v4
    assert "\n".join(line for line in v6.splitlines() if "listen [::]" not in line) + "\n" == v4
    assert v6.count("listen [::]") == 2


def test_disable_ipv6_in_the_configmap():
    cm = {"metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
          "data": {"disable-ipv6": "true"}}
    cfg = ControllerConfig(watch_without_class=True, ipv6=True, configmap="ingress-nginx/ingress-nginx-controller")
    s = seed_snapshot()
    s["configMaps"] = [cm]
    r = render(s, cfg, conf_dir="/c", cert_dir="/c/ssl")
    assert "[::]" not in r.text and not r.warnings
    assert cfg.listen_ipv6 and not cfg.with_configmap({"disable-ipv6": "true"})[0].listen_ipv6
    assert cfg.with_configmap({"disable-ipv6": "false"})[0].listen_ipv6
    # an IPv4 controller has nothing to disable
    assert not ControllerConfig().with_configmap({"disable-ipv6": "false"})[0].listen_ipv6


def test_ipv6_only_service_upstream_has_bracketed_endpoints():
    a = ingress("a", [rule([("/", "Prefix", "s6", "http")])])
    svc = service("s6", ports=(("http", 80),), cluster_ip="fd00:10:96::2a")
    svc["spec"].update(ipFamilies=["IPv6"], ipFamilyPolicy="SingleStack", clusterIPs=["fd00:10:96::2a"])
    sl = slice6("s6", ["fd00:10:244:2::5", "fd00:10:244:1::9", "fd00:10:244:1::10"], port=8080, port_name="http")
    r = render(snap([a], [svc], [sl]), CFG6, conf_dir="/c", cert_dir="/c/ssl")
    up = r.model.upstreams[0]
    assert up.servers == ["[fd00:10:244:1::9]:8080", "[fd00:10:244:1::10]:8080", "[fd00:10:244:2::5]:8080"]
    assert "        server [fd00:10:244:1::9]:8080 max_fails=0;" in r.text.splitlines()
    # service-upstream: the (IPv6) ClusterIP
    b = ingress("a", [rule([("/", "Prefix", "s6", "http")])],
                annotations={"nginx.ingress.kubernetes.io/service-upstream": "true"})
    assert build_model(snap([b], [svc], [sl]), CFG6).upstreams[0].servers == ["[fd00:10:96::2a]:80"]


def test_dual_stack_service_has_both_families_ipv4_first():
    """ingress-nginx takes the endpoints of every slice of the Service (one per family)."""
    a = ingress("a", [rule([("/", "Prefix", "ds", 80)])])
    svc = service("ds", cluster_ip="10.96.0.60")
    sl4 = slice_("ds", ["172.16.2.4", "172.16.1.7"])
    sl6 = slice6("ds", ["fd00:10:244:2::4", "fd00:10:244:1::7"])
    model = build_model(snap([a], [svc], [sl6, sl4]), CFG6)
    assert model.upstreams[0].servers == ["172.16.1.7:80", "172.16.2.4:80", "[fd00:10:244:1::7]:80",
                                          "[fd00:10:244:2::4]:80"]


def test_host_port_and_sort_key():
    assert host_port("10.0.0.1", 80) == "10.0.0.1:80"
    assert host_port("fd00::1", "443") == "[fd00::1]:443"
    keys = ["10.0.0.10:80", "[fd00::2]:80", "10.0.0.9:80", "[fd00::10]:80", "[fd00::2]:79"]
    assert sorted(keys, key=_ip_sort_key) == ["10.0.0.9:80", "10.0.0.10:80", "[fd00::2]:79", "[fd00::2]:80",
                                              "[fd00::10]:80"]


def test_ipv6_configuration_passes_nginx_t(tmp_path):
    if NGINX is None:
        pytest.skip("nginx is needed")
    crt, key = _selfsigned(tmp_path)
    _prepare_dir(tmp_path, (crt, key))
    s = _complex_snapshot(crt, key)
    s["endpointSlices"].append(slice6("api", ["fd00:10:244:1::3"], port_name="http"))
    r = render(s, CFG6, conf_dir=str(tmp_path), cert_dir=str(tmp_path / "ssl"))
    assert "listen [::]:443 default_server reuseport backlog=4096 ssl;" in r.text
    for name, data in r.files.items():
        (tmp_path / "ssl" / name).write_bytes(data)
    for name in r.self_signed:
        (tmp_path / "ssl" / name).write_bytes(crt + key)
    (tmp_path / "nginx.conf").write_text(r.text)
    res = subprocess.run([NGINX, "-t", "-c", str(tmp_path / "nginx.conf"), "-p", f"{tmp_path}/", "-e", "stderr"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr + "\n" + r.text


def _loopback6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class _Backend6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"backend": "v6", "client": self.client_address[0], "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_real_nginx_over_ipv6(tmp_path):
    """nginx on [::] (loopback ports) proxies to an IPv6-only Service's endpoint on ::1, and still
    answers on IPv4."""
    if NGINX is None:
        pytest.skip("nginx is needed")
    if not _loopback6():
        pytest.skip("no IPv6 loopback here")
    crt, key = _selfsigned(tmp_path)
    _prepare_dir(tmp_path, (crt, key))
    srv = _Backend6(("::1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    svc = service("s6", cluster_ip="fd00:10:96::2a")
    svc["spec"]["ipFamilies"] = ["IPv6"]
    s = snap([ingress("a", [rule([("/", "Prefix", "s6", 80)])])], [svc], [slice6("s6", ["::1"], port=port)],
             classes=[NGINX_CLASS])
    cfg = ControllerConfig(watch_without_class=True, ipv6=True, http_port=_free_port(), https_port=_free_port(),
                           status_port=_free_port(), default_backend_port=_free_port())
    r = render(s, cfg, conf_dir=str(tmp_path), cert_dir=str(tmp_path / "ssl"))
    conf = tmp_path / "nginx.conf"
    conf.write_text(r.text.replace("user root;\n", "").replace("access_log /dev/stdout", "access_log off; #"))
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", f"{tmp_path}/", "-e", "stderr", "-g", "daemon off;"],
                            stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", cfg.status_port), 0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        for base in (f"http://[::1]:{cfg.http_port}", f"http://127.0.0.1:{cfg.http_port}"):
            with urllib.request.urlopen(base + "/x", timeout=5) as resp:
                doc = json.loads(resp.read())
            assert doc["backend"] == "v6" and doc["path"] == "/x" and doc["client"] == "::1", (base, doc)
    finally:
        proc.terminate()
        proc.wait(10)
        srv.shutdown()
        srv.server_close()
