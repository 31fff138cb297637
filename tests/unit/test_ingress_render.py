"""The ingress-nginx configuration: which Ingresses, servers, path order, upstreams, TLS, and the
rendered nginx.conf (checked with `nginx -t`, and served by a real nginx on loopback ports)."""
from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from netemu.ingress import (
    DEFAULT_UPSTREAM, ControllerConfig, build_model, handles, location_match, parse_annotations, render, tls_pem,
)

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
OPENSSL = shutil.which("openssl")
CFG = ControllerConfig(watch_without_class=True)


# --------------------------------------------------------------------------- building snapshots
def ingress(name, rules=None, *, ns="default", annotations=None, default_backend=None, tls=None, cls=None,
            created="2024-01-01T00:00:00Z"):
    spec = {}
    if rules is not None:
        spec["rules"] = rules
    if default_backend:
        spec["defaultBackend"] = backend(*default_backend)
    if tls:
        spec["tls"] = tls
    if cls:
        spec["ingressClassName"] = cls
    meta = {"name": name, "namespace": ns, "creationTimestamp": created}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def backend(svc, port):
    return {"service": {"name": svc, "port": {"number": port} if isinstance(port, int) else {"name": port}}}


def rule(paths, host=None):
    r = {"http": {"paths": [{"path": p, "pathType": t, "backend": backend(s, port)} for p, t, s, port in paths]}}
    if host:
        r["host"] = host
    return r


def service(name, ports=((None, 80),), ns="default", cluster_ip="10.96.0.50"):
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "selector": {"app": name},
                     "ports": [dict({"port": p, "targetPort": p, "protocol": "TCP"}, **({"name": n} if n else {}))
                               for n, p in ports]}}


def slice_(svc, addrs, port=80, port_name=None, ns="default", ready=True):
    p = {"port": port, "protocol": "TCP"}
    if port_name:
        p["name"] = port_name
    return {"kind": "EndpointSlice", "metadata": {"name": f"{svc}-abc", "namespace": ns,
                                                  "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [p],
            "endpoints": [{"addresses": [a], "conditions": {"ready": ready if isinstance(ready, bool) else ready[i]}}
                          for i, a in enumerate(addrs)]}


def snap(ingresses, services=(), slices=(), secrets=(), classes=(), configmaps=()):
    return {"ingresses": list(ingresses), "services": list(services), "endpointSlices": list(slices),
            "secrets": list(secrets), "ingressClasses": list(classes), "configMaps": list(configmaps)}


NGINX_CLASS = {"metadata": {"name": "nginx", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
               "spec": {"controller": "k8s.io/ingress-nginx"}}


def seed_snapshot():
    """Seed 000 after conversion: no host, "" -> hname-svc-default, /ip -> ip-svc, rewrite-target /."""
    ing = ingress("ingress-nginx", [{"http": {"paths": [
        {"pathType": "ImplementationSpecific", "backend": backend("hname-svc-default", 80)},
        {"path": "/ip", "pathType": "ImplementationSpecific", "backend": backend("ip-svc", 80)}]}}],
        annotations={"nginx.ingress.kubernetes.io/rewrite-target": "/"})
    return snap([ing], [service("hname-svc-default"), service("ip-svc", cluster_ip="10.96.0.51")],
                [slice_("hname-svc-default", ["172.16.1.2", "172.16.2.2", "172.16.3.2"]),
                 slice_("ip-svc", ["172.16.1.3"])], classes=[NGINX_CLASS])


def server(model, host):
    return next(s for s in model.servers if s.hostname == host)


def paths(srv, enforce=None):
    e = srv.enforce_regex() if enforce is None else enforce
    return [location_match(l, e) for l in srv.locations]


# --------------------------------------------------------------------------- the model
def test_seed_routes_by_path_with_rewrite():
    model = build_model(seed_snapshot(), CFG)
    (srv,) = model.servers
    assert srv.hostname == "_"
    assert srv.enforce_regex()  # rewrite-target makes every location a regular expression
    assert paths(srv) == ['~* "^/ip"', '~* "^/"']
    ip, root = srv.locations
    assert (ip.upstream, root.upstream) == ("default-ip-svc-80", "default-hname-svc-default-80")
    assert not root.is_default  # the empty path replaced the default backend's root
    ups = {u.name: u.servers for u in model.upstreams}
    assert ups["default-hname-svc-default-80"] == ["172.16.1.2:80", "172.16.2.2:80", "172.16.3.2:80"]
    r = render(seed_snapshot(), CFG, conf_dir="/x", cert_dir="/x/ssl")
    block = r.text[r.text.index('location ~* "^/ip"'):]
    assert 'rewrite "(?i)/ip" / break;' in block[:block.index("}")]
    root_block = r.text[r.text.index('location ~* "^/" {'):]
    assert "rewrite" not in root_block[:root_block.index("}")]  # path equals the target: no rewrite


def test_prefix_becomes_prefix_slash_and_exact_without_rewrite():
    ing = ingress("a", [rule([("/foo", "Prefix", "s", 80), ("/bar", "Exact", "s", 80), ("/bar", "Prefix", "t", 80),
                              ("/baz", "ImplementationSpecific", "s", 80)])])
    model = build_model(snap([ing], [service("s"), service("t")],
                             [slice_("s", ["10.0.0.1"]), slice_("t", ["10.0.0.2"])]), CFG)
    srv = server(model, "_")
    assert not srv.enforce_regex()
    got = [(location_match(l, False), l.upstream) for l in srv.locations]
    # ingress-nginx's order: by path, descending, then by length, longest first (stable)
    assert got == [('"/foo/"', "default-s-80"), ('"/baz/"', "default-s-80"), ('"/bar/"', "default-t-80"),
                   ('= "/foo"', "default-s-80"), ('= "/baz"', "default-s-80"), ('= "/bar"', "default-s-80"),
                   ('"/"', DEFAULT_UPSTREAM)]


def test_regex_locations_longest_first():
    ing = ingress("a", [rule([("/a", "Prefix", "s", 80), ("/a/bb", "Prefix", "s", 80), ("/a/b", "Prefix", "s", 80),
                              ("/", "Prefix", "s", 80)])],
                  annotations={"nginx.ingress.kubernetes.io/use-regex": "true"})
    model = build_model(snap([ing], [service("s")], [slice_("s", ["10.0.0.1"])]), CFG)
    assert paths(server(model, "_")) == ['~* "^/a/bb"', '~* "^/a/b"', '~* "^/a"', '~* "^/"']


def test_hosts_get_servers_and_rules_without_host_go_to_the_default_server():
    a = ingress("a", [rule([("/", "Prefix", "web", 80)], host="foo.example.com"),
                      rule([("/", "Prefix", "api", 80)], host="bar.example.com"),
                      rule([("/any", "Prefix", "web", 80)])])
    model = build_model(snap([a], [service("web"), service("api")], [slice_("web", ["10.0.0.1"]),
                                                                     slice_("api", ["10.0.0.2"])]), CFG)
    assert [s.hostname for s in model.servers] == ["_", "bar.example.com", "foo.example.com"]
    assert server(model, "bar.example.com").locations[0].upstream == "default-api-80"
    assert [l.path for l in server(model, "_").locations] == ["/any/", "/any", "/"]


def test_default_backend_without_rules_is_the_catch_all():
    a = ingress("a", default_backend=("fallback", 8080))
    model = build_model(snap([a], [service("fallback", ports=((None, 8080),))],
                             [slice_("fallback", ["10.0.0.9"], port=8080)]), CFG)
    root = server(model, "_").locations[0]
    assert (root.path, root.upstream, root.is_default) == ("/", "default-fallback-8080", False)


def test_default_backend_with_rules_serves_the_hosts_root():
    a = ingress("a", [rule([("/app", "Prefix", "web", 80)], host="foo.io")], default_backend=("fallback", 80))
    model = build_model(snap([a], [service("web"), service("fallback")],
                             [slice_("web", ["10.0.0.1"]), slice_("fallback", ["10.0.0.9"])]), CFG)
    assert server(model, "foo.io").locations[-1].upstream == "default-fallback-80"
    assert server(model, "_").locations[0].upstream == DEFAULT_UPSTREAM


def test_first_ingress_keeps_a_path_and_later_ones_are_named():
    old = ingress("old", [rule([("/x", "Prefix", "s", 80)])], created="2024-01-01T00:00:00Z")
    new = ingress("new", [rule([("/x", "Prefix", "t", 80)])], created="2024-01-02T00:00:00Z")
    warnings: list[str] = []
    model = build_model(snap([new, old], [service("s"), service("t")],
                             [slice_("s", ["10.0.0.1"]), slice_("t", ["10.0.0.2"])]), CFG, warnings)
    assert {l.upstream for l in server(model, "_").locations if l.path.startswith("/x")} == {"default-s-80"}
    assert any("already defined by Ingress default/old" in w for w in warnings)


def test_endpoints_ready_only_named_ports_and_service_upstream():
    a = ingress("a", [rule([("/", "Prefix", "s", "http")])])
    svc = service("s", ports=(("http", 80), ("metrics", 9000)))
    sl = slice_("s", ["10.0.0.3", "10.0.0.1", "10.0.0.2"], port=8080, port_name="http", ready=[True, True, False])
    model = build_model(snap([a], [svc], [sl]), CFG)
    assert model.upstreams[0].servers == ["10.0.0.1:8080", "10.0.0.3:8080"]
    b = ingress("a", [rule([("/", "Prefix", "s", "http")])],
                annotations={"nginx.ingress.kubernetes.io/service-upstream": "true"})
    model = build_model(snap([b], [svc], [sl]), CFG)
    assert model.upstreams[0].servers == ["10.96.0.50:80"]


def test_no_endpoints_and_missing_service_answer_503():
    a = ingress("a", [rule([("/x", "Prefix", "gone", 80), ("/y", "Prefix", "empty", 80)])])
    r = render(snap([a], [service("empty")], [slice_("empty", [])]), CFG, conf_dir="/c", cert_dir="/c/ssl")
    assert r.text.count("return 503;") == 4  # /x/, = /x, /y/, = /y
    assert "upstream default-gone-80" not in r.text
    assert any('service "default/gone" not found' in w for w in r.warnings)
    assert any("no active endpoints" in w for w in r.warnings)


def test_ingress_classes():
    other = {"metadata": {"name": "traefik"}, "spec": {"controller": "traefik.io/ingress-controller"}}
    plain = {"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}
    cfg = ControllerConfig()
    assert handles(ingress("a", [], cls="nginx"), [plain], cfg)
    assert not handles(ingress("a", [], cls="traefik"), [plain, other], cfg)
    assert not handles(ingress("a", [], cls="nginx"), [], cfg)  # no such IngressClass
    assert not handles(ingress("a", []), [plain], cfg)  # no class, ours is not the default
    assert handles(ingress("a", []), [NGINX_CLASS], cfg)
    assert handles(ingress("a", []), [plain], ControllerConfig(watch_without_class=True))
    assert handles(ingress("a", [], annotations={"kubernetes.io/ingress.class": "nginx"}), [], cfg)
    assert not handles(ingress("a", [], annotations={"kubernetes.io/ingress.class": "gce"}), [NGINX_CLASS], cfg)


def test_annotations_are_checked_before_they_reach_the_configuration():
    s, notes = parse_annotations({"nginx.ingress.kubernetes.io/rewrite-target": "/x; return 200",
                                  "nginx.ingress.kubernetes.io/ssl-redirect": "maybe",
                                  "nginx.ingress.kubernetes.io/configuration-snippet": "more_set_headers x",
                                  "nginx.ingress.kubernetes.io/proxy-body-size": "8m"})
    assert s.rewrite_target == "" and s.ssl_redirect is None and s.proxy_body_size == "8m"
    assert len(notes) == 3


# --------------------------------------------------------------------------- TLS
def _selfsigned(tmp_path, cn="foo.io"):
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", f"/CN={cn}", "-keyout", str(tmp_path / "k"), "-out", str(tmp_path / "c")],
                   check=True, capture_output=True)
    return (tmp_path / "c").read_bytes(), (tmp_path / "k").read_bytes()


def tls_secret(name, crt, key, ns="default"):
    return {"kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": name, "namespace": ns},
            "data": {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()}}


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_tls_from_secret_self_signed_when_missing_and_ssl_redirect(tmp_path):
    crt, key = _selfsigned(tmp_path)
    a = ingress("a", [rule([("/", "Prefix", "s", 80)], host="foo.io"), rule([("/", "Prefix", "s", 80)], host="bar.io"),
                      rule([("/", "Prefix", "s", 80)], host="plain.io")],
                tls=[{"hosts": ["foo.io"], "secretName": "foo-tls"}, {"hosts": ["bar.io"], "secretName": "nope"}])
    r = render(snap([a], [service("s")], [slice_("s", ["10.0.0.1"])], [tls_secret("foo-tls", crt, key)]), CFG,
               conf_dir="/c", cert_dir="/c/ssl")
    assert r.files == {"default-foo-tls.pem": crt.rstrip(b"\n") + b"\n" + key.rstrip(b"\n") + b"\n"}
    assert r.self_signed == {"self-signed-bar.io.pem": "bar.io"}
    servers = {s.hostname: s for s in r.model.servers}
    assert servers["foo.io"].tls and servers["bar.io"].tls and not servers["plain.io"].tls
    blocks = {h: r.text[r.text.index(f"## start server {h}"):r.text.index(f"## end server {h}")] for h in servers}
    assert "return 308 https://$host$redirect_uri;" in blocks["foo.io"]
    assert "ssl_certificate /c/ssl/default-foo-tls.pem;" in blocks["foo.io"]
    assert "return 308" not in blocks["plain.io"] and "return 308" not in blocks["_"]
    assert "ssl_certificate " not in blocks["plain.io"]  # the default (fake) certificate
    assert any('secret "default/nope" not found' in w for w in r.warnings)


def test_ssl_redirect_annotations():
    tls = [{"hosts": ["foo.io"]}]
    off = ingress("a", [rule([("/", "Prefix", "s", 80)], host="foo.io")], tls=tls,
                  annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "false"})
    r = render(snap([off], [service("s")], [slice_("s", ["10.0.0.1"])]), CFG, conf_dir="/c", cert_dir="/c/ssl")
    assert "return 308" not in r.text and r.self_signed == {"self-signed-foo.io.pem": "foo.io"}
    force = ingress("a", [rule([("/", "Prefix", "s", 80)])],
                    annotations={"nginx.ingress.kubernetes.io/force-ssl-redirect": "true"})
    r = render(snap([force], [service("s")], [slice_("s", ["10.0.0.1"])]), CFG, conf_dir="/c", cert_dir="/c/ssl")
    assert "return 308 https://$host$redirect_uri;" in r.text


def test_tls_secret_checks():
    assert tls_pem({"metadata": {"name": "x"}, "data": {"tls.crt": "!!", "tls.key": "x"}})[0] is None
    assert tls_pem({"metadata": {"name": "x"}, "data": {"tls.crt": base64.b64encode(b"hello").decode(),
                                                        "tls.key": ""}})[1].endswith("no certificate in tls.crt")


def test_configmap_settings():
    cm = {"metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
          "data": {"disable-access-log": "true", "worker-processes": "1", "nonsense": "x"}}
    cfg = ControllerConfig(configmap="ingress-nginx/ingress-nginx-controller", watch_without_class=True)
    r = render(seed_snapshot() | {"configMaps": [cm]}, cfg, conf_dir="/c", cert_dir="/c/ssl")
    assert "access_log off;" in r.text and "worker_processes 1;" in r.text
    assert any("'nonsense' is not supported" in w for w in r.warnings)


# --------------------------------------------------------------------------- nginx itself
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare_dir(tmp_path, crt_key):
    (tmp_path / "ssl").mkdir()
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / sub).mkdir(parents=True)
    crt, key = crt_key
    (tmp_path / "ssl" / "default-fake-certificate.pem").write_bytes(crt + key)


def _complex_snapshot(crt, key):
    a = ingress("a", [rule([("/", "Prefix", "web", 80), ("/api", "Exact", "api", "http")], host="foo.io"),
                      rule([("/v1(/|$)(.*)", "ImplementationSpecific", "api", "http")], host="rx.io")],
                tls=[{"hosts": ["foo.io"], "secretName": "foo-tls"}],
                annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "8m"})
    b = ingress("b", [rule([("/v1(/|$)(.*)", "ImplementationSpecific", "api", "http")], host="rx.io")],
                annotations={"nginx.ingress.kubernetes.io/rewrite-target": "/$2",
                             "nginx.ingress.kubernetes.io/use-regex": "true"}, created="2023-01-01T00:00:00Z")
    return snap([a, b, *seed_snapshot()["ingresses"]],
                [service("web"), service("api", ports=(("http", 80),)), *seed_snapshot()["services"]],
                [slice_("web", ["10.0.0.1", "10.0.0.2"]), slice_("api", ["10.0.0.3"], port_name="http"),
                 *seed_snapshot()["endpointSlices"]], [tls_secret("foo-tls", crt, key)], [NGINX_CLASS])


@pytest.mark.skipif(NGINX is None or OPENSSL is None, reason="nginx and openssl are needed")
def test_rendered_configuration_passes_nginx_t(tmp_path):
    crt, key = _selfsigned(tmp_path)
    _prepare_dir(tmp_path, (crt, key))
    r = render(_complex_snapshot(crt, key), CFG, conf_dir=str(tmp_path), cert_dir=str(tmp_path / "ssl"))
    for name, data in r.files.items():
        (tmp_path / "ssl" / name).write_bytes(data)
    for name in r.self_signed:
        (tmp_path / "ssl" / name).write_bytes(crt + key)
    (tmp_path / "nginx.conf").write_text(r.text)
    res = subprocess.run([NGINX, "-t", "-c", str(tmp_path / "nginx.conf"), "-p", f"{tmp_path}/", "-e", "stderr"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr + "\n" + r.text
    assert 'rewrite "(?i)/v1(/|$)(.*)" /$2 break;' in r.text


class _Backend(http.server.BaseHTTPRequestHandler):
    name = "?"

    def do_GET(self):
        body = json.dumps({"backend": self.name, "path": self.path, "host": self.headers.get("Host"),
                           "proto": self.headers.get("X-Forwarded-Proto")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def _backend(name):
    handler = type(f"B{name}", (_Backend,), {"name": name})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _get(url, host=None):
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(req, timeout=5) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


@pytest.mark.skipif(NGINX is None or OPENSSL is None, reason="nginx and openssl are needed")
def test_real_nginx_routes_as_rendered(tmp_path):
    """The seed's Ingress plus a TLS host, served by nginx on loopback ports, backends on loopback."""
    crt, key = _selfsigned(tmp_path, "foo.io")
    _prepare_dir(tmp_path, (crt, key))
    hname, ip, web = _backend("hname"), _backend("ip"), _backend("web")
    ports = {n: b.server_address[1] for n, b in (("hname", hname), ("ip", ip), ("web", web))}
    s = seed_snapshot()
    s["endpointSlices"] = [slice_("hname-svc-default", ["127.0.0.1"], port=ports["hname"]),
                           slice_("ip-svc", ["127.0.0.1"], port=ports["ip"]),
                           slice_("web", ["127.0.0.1"], port=ports["web"])]
    s["services"].append(service("web"))
    s["ingresses"].append(ingress("tls", [rule([("/", "Prefix", "web", 80)], host="foo.io")],
                                  tls=[{"hosts": ["foo.io"], "secretName": "foo-tls"}]))
    s["secrets"] = [tls_secret("foo-tls", crt, key)]
    cfg = ControllerConfig(watch_without_class=True, http_port=_free_port(), https_port=_free_port(),
                           status_port=_free_port(), default_backend_port=_free_port())
    r = render(s, cfg, conf_dir=str(tmp_path), cert_dir=str(tmp_path / "ssl"))
    for name, data in r.files.items():
        (tmp_path / "ssl" / name).write_bytes(data)
    conf = tmp_path / "nginx.conf"
    conf.write_text(r.text.replace("user root;\n", "").replace("access_log /dev/stdout", "access_log off; #"))
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", f"{tmp_path}/", "-e", "stderr", "-g", "daemon off;"],
                            stderr=subprocess.PIPE)
    try:
        base, tls_base = f"http://127.0.0.1:{cfg.http_port}", f"https://127.0.0.1:{cfg.https_port}"
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", cfg.status_port), 0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        status, body, _ = _get(base + "/")
        assert status == 200 and json.loads(body)["backend"] == "hname"
        status, body, _ = _get(base + "/ip")
        assert json.loads(body) | {"host": None} == {"backend": "ip", "path": "/", "host": None, "proto": "http"}
        status, body, _ = _get(base + "/IP/deeper?x=1")  # case-insensitive regex, rewritten to /
        assert json.loads(body)["backend"] == "ip" and json.loads(body)["path"] == "/?x=1"
        status, body, _ = _get(base + "/anything")
        assert json.loads(body)["path"] == "/anything" and json.loads(body)["backend"] == "hname"
        status, _, headers = _get(base + "/a/", host="foo.io")  # TLS host: ssl-redirect, trailing slash dropped
        assert status == 308 and headers["Location"] == "https://foo.io/a"
        status, body, _ = _get(tls_base + "/x", host="foo.io")
        assert status == 200 and json.loads(body) | {"host": None} == {"backend": "web", "path": "/x", "host": None,
                                                                       "proto": "https"}
        status, body, _ = _get(tls_base + "/")  # HTTPS to the default server (fake certificate)
        assert json.loads(body)["backend"] == "hname"
        ip.shutdown()
        ip.server_close()
        status, _, _ = _get(base + "/ip")
        assert status == 502  # the only endpoint refuses
        status, _, _ = _get(f"http://127.0.0.1:{cfg.status_port}/healthz")
        assert status == 200
    finally:
        proc.terminate()
        proc.wait(10)
        for b in (hname, web):
            b.shutdown()


# --------------------------------------------------------------------------- the feed, the addon, the table
def _cluster(text):
    pytest.importorskip("netemu.spec.ingress")
    from netemu.spec import convert

    if "Ingress" not in convert.MODELS or not hasattr(convert, "PREPARE"):
        pytest.skip("Ingress is not wired into netemu.spec yet")
    from netemu.control.cluster import Cluster
    from netemu.spec.load import load_text

    from netemu.control.nodes import set_ready

    spec = load_text(text, "lab.yaml")
    c = Cluster(spec.lab, clock=lambda: 1_700_000_000.0)
    c.bootstrap()
    for node in c.store.list("Node"):
        set_ready(c, node, True, "KubeletReady", "kubelet is posting ready status")
    c.apply(spec.objects)
    return c


APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: sysnet4admin/echo-hname}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: unrelated}
spec: {selector: {app: other}, ports: [{port: 80}]}
"""
ING = """\
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  rules:
  - http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"""


def test_addon_appears_with_an_ingress_and_status_follows_the_controller():
    from netemu.control import ingress_addon
    from netemu.control.pods import set_condition

    c = _cluster(APP + ING)
    c.reconcile()
    dep = c.store.find("Deployment", "ingress-nginx", "ingress-nginx-controller")
    assert dep is not None and c.store.find("IngressClass", "", "nginx") is not None
    assert dep.spec.template.metadata.labels["app.kubernetes.io/component"] == "controller"
    (pod,) = c.store.list("Pod", "ingress-nginx")
    assert pod.spec.node_name and pod.spec.node_name != "m-k8s"
    assert c.store.get("Ingress", "default", "web").status.load_balancer.ingress is None
    set_condition(pod, "Ready", True, c.now_str())
    c.store.update(pod)
    ingress_addon.reconcile(c)
    node = c.store.get("Node", "", pod.spec.node_name)
    ip = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    assert [i.ip for i in c.store.get("Ingress", "default", "web").status.load_balancer.ingress] == [ip]


def test_no_addon_without_ingress_or_when_turned_off_or_brought_along():
    c = _cluster(APP)
    c.reconcile()
    assert c.store.find("Deployment", "ingress-nginx", "ingress-nginx-controller") is None
    lab_off = "apiVersion: netemu.dev/v1alpha1\nkind: Lab\nspec: {ingress: false}\n---\n"
    c = _cluster(lab_off + APP + ING)
    if getattr(c.lab.spec, "ingress", "absent") == "absent":
        pytest.skip("LabSpec.ingress is not wired yet")
    c.reconcile()
    assert c.store.find("Deployment", "ingress-nginx", "ingress-nginx-controller") is None
    own = APP.replace("sysnet4admin/echo-hname", "registry.k8s.io/ingress-nginx/controller:v1.9.4")
    c = _cluster(own + ING)
    c.reconcile()
    assert c.store.find("Deployment", "ingress-nginx", "ingress-nginx-controller") is None


def test_seed_service_alone_brings_the_controller():
    c = _cluster(APP + "---\napiVersion: v1\nkind: Service\nmetadata: {name: nginx-ingress-controller, namespace: "
                       "ingress-nginx}\nspec:\n  type: NodePort\n  selector: {app.kubernetes.io/name: ingress-nginx}\n"
                       "  ports: [{name: http, port: 80, nodePort: 30100}]\n")
    c.reconcile()
    assert c.store.find("Deployment", "ingress-nginx", "ingress-nginx-controller") is not None


def test_feed_sends_what_the_controller_needs_and_only_changes():
    from netemu.daemon.feeds import IngressPublisher
    from netemu.ingress.watch import snapshot

    c = _cluster(APP + ING)
    c.reconcile()
    s = snapshot(c.store)
    assert [i["metadata"]["name"] for i in s["ingresses"]] == ["web"]
    assert [x["metadata"]["name"] for x in s["services"]] == ["web"]  # not `unrelated`
    assert all(x["metadata"]["labels"]["kubernetes.io/service-name"] == "web" for x in s["endpointSlices"])
    assert [x["metadata"]["name"] for x in s["configMaps"]] == ["ingress-nginx-controller"]
    assert "status" not in s["ingresses"][0]
    feed = IngressPublisher()
    assert feed.update(c.store) and feed.frame
    assert not feed.update(c.store)  # nothing changed
    other = c.store.get("Service", "default", "unrelated")
    other.metadata.labels = {"x": "y"}
    c.store.update(other)
    assert not feed.update(c.store)  # an unrelated Service: same snapshot, nothing sent
    web = c.store.get("Service", "default", "web")
    web.metadata.labels = {"x": "y"}
    c.store.update(web)
    assert feed.update(c.store)


def test_wildcard_host_certificate_file_name():
    a = ingress("a", [rule([("/", "Prefix", "s", 80)], host="*.foo.io")], tls=[{"hosts": ["*.foo.io"]}])
    r = render(snap([a], [service("s")], [slice_("s", ["10.0.0.1"])]), CFG, conf_dir="/c", cert_dir="/c/ssl")
    assert r.self_signed == {"self-signed-_wildcard_.foo.io.pem": "*.foo.io"}
    assert 'server_name "*.foo.io";' in r.text


def test_feed_knows_which_controller_serves_the_current_snapshot():
    import asyncio

    from netemu.daemon.feeds import IngressPublisher
    from netemu.frames import digest

    c = _cluster(APP + ING)
    c.reconcile()
    feed = IngressPublisher()
    feed.update(c.store)
    assert feed.digest == digest(feed.frame[4:]) and feed.settled(c.store)  # nobody subscribed yet

    class Writer:  # what serve() needs of an asyncio.StreamWriter
        def __init__(self):
            self.data, self.closing = b"", False

        def is_closing(self):
            return self.closing

        def write(self, b):
            self.data += b

        async def drain(self):
            self.closing = True

    (pod,) = c.store.list("Pod", "ingress-nginx")
    key = f"ingress-nginx/{pod.metadata.name}"
    w = Writer()
    feed.subscribers[w] = key
    feed._send(w)
    assert w.data == feed.frame
    assert feed.pending(c.store) == [key] and not feed.settled(c.store)
    feed.applied(key, feed.digest)
    assert feed.settled(c.store)
    web = c.store.get("Service", "default", "web")
    web.metadata.labels = {"changed": "yes"}
    c.store.update(web)
    assert feed.update(c.store) and feed.pending(c.store) == [key]  # a new snapshot, not served yet
    c.delete_pod(pod)
    assert feed.settled(c.store)  # a terminating controller is not waited for
    asyncio.run(feed.serve(w, key))  # ends when the connection closes, and forgets it
    assert w not in feed.subscribers and key not in feed.acks


def test_get_ingress_row():
    from netemu.api import tables as api_tables
    from netemu.cli import tables

    def row(ing: dict, wide: bool = False) -> list[str]:
        return tables.table_rows(api_tables.table("Ingress", "networking.k8s.io", [ing], 1_700_000_000.0), wide)[0]

    ing = ingress("ingress-nginx", [{"http": {}}])
    ing["status"] = {"loadBalancer": {"ingress": [{"ip": "192.168.1.102"}]}}
    assert row(ing)[:5] == ["ingress-nginx", "<none>", "*", "192.168.1.102", "80"]
    five = ingress("x", [{"host": h} for h in ("a", "b", "c", "d", "e")])
    assert row(five)[2] == "a,b,c + 2 more..."
    ing2 = ingress("x", [{"host": "foo.io"}], cls="nginx", tls=[{"hosts": ["foo.io"]}])
    ing2["status"] = {"loadBalancer": {"ingress": [{"ip": "192.168.1.101"}, {"ip": "192.168.1.102"}]}}
    assert row(ing2)[1:5] == ["nginx", "foo.io", "192.168.1.101,192.168.1.102", "80, 443"]