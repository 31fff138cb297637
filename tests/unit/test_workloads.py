"""Built-in stand-ins for container images: which program an image gets, and what each one
answers, checked against real processes forked from this one and bound to 127.0.0.1."""
from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from netemu.workloads import (BUILTIN_NAMES, PortSpec, WorkloadContext, dnsquery, parse_image, registry, resolve,
                              run_builtin, runner)
from netemu.workloads.testing import Launcher, free_port, http_request, udp_ask, wait_for

HOSTNAME = socket.gethostname()
TIME_LOCAL = r"\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}"


@pytest.fixture
def launcher(tmp_path):
    pods = Launcher(tmp_path)
    yield pods
    pods.kill_all()


# ---------------------------------------------------------------------------------- resolve
@pytest.mark.parametrize("image, builtin", [
    ("sysnet4admin/echo-hname", "echo-hname"),
    ("docker.io/sysnet4admin/echo-hname:latest", "echo-hname"),
    ("sysnet4admin/echo-ip", "echo-ip"),
    ("nginx", "nginx"),
    ("nginx:1.25", "nginx"),
    ("docker.io/library/nginx:latest", "nginx"),
    ("library/nginx:1.27-alpine", "nginx"),
    ("nginx@sha256:" + "ab" * 32, "nginx"),
    ("mirror.gcr.io/library/nginx:stable@sha256:" + "cd" * 32, "nginx"),
    ("nginxdemos/hello", "hello"),
    ("nginxdemos/hello:latest", "hello"),
    ("nginxdemos/hello:plain-text", "hello-plain"),
    ("gcr.io/kuar-demo/kuard-amd64:1", "kuard"),
    ("gcr.io/kuar-demo/kuard-amd64:2", "kuard"),
    ("gcr.io/kuar-demo/kuard-amd64:blue", "kuard"),
    ("gcr.io/kuar-demo/kuard-arm64:3", "kuard"),
    ("ghcr.io/subicura/counter:latest", "counter"),
    ("localhost:5000/subicura/counter:v1", "counter"),
    ("busybox", "sleep"),
    ("busybox:1.36", "sleep"),
    ("alpine:3.19", "sleep"),
    ("centos:7", "sleep"),
    ("docker.io/library/ubuntu:22.04", "sleep"),
    ("debian:bookworm-slim", "sleep"),
    ("quay.io/acme/shop:1.0", "generic"),
    ("myapp", "generic"),
    ("nginxinc/nginx-unprivileged", "generic"),
    (None, "generic"),
])
def test_resolve_picks_the_stand_in_whatever_the_registry_tag_or_digest(image, builtin):
    program = resolve(image, None, None)
    assert (program.kind, program.name) == ("builtin", builtin)
    assert program.name in BUILTIN_NAMES


def test_stand_ins_listen_on_their_images_own_ports_by_default():
    ports = {img: resolve(img, None, None).default_ports for img in
             ("sysnet4admin/echo-hname", "sysnet4admin/echo-ip", "nginx", "nginxdemos/hello:plain-text",
              "gcr.io/kuar-demo/kuard-amd64:1", "ghcr.io/subicura/counter", "unknown/thing", "busybox")}
    assert ports == {"sysnet4admin/echo-hname": (80,), "sysnet4admin/echo-ip": (80,), "nginx": (80,),
                     "nginxdemos/hello:plain-text": (80,), "gcr.io/kuar-demo/kuard-amd64:1": (8080,),
                     "ghcr.io/subicura/counter": (3000,), "unknown/thing": (80,), "busybox": ()}


@pytest.mark.parametrize("image, expected", [
    ("nginx", (None, "nginx", None, None)),
    ("nginx:1.25", (None, "nginx", "1.25", None)),
    ("docker.io/library/nginx:latest", ("docker.io", "nginx", "latest", None)),
    ("localhost:5000/team/app:v2@sha256:00ff", ("localhost:5000", "team/app", "v2", "sha256:00ff")),
    ("gcr.io/kuar-demo/kuard-amd64:1", ("gcr.io", "kuar-demo/kuard-amd64", "1", None)),
    ("sysnet4admin/echo-ip", (None, "sysnet4admin/echo-ip", None, None)),
])
def test_parse_image(image, expected):
    ref = parse_image(image)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected


def test_command_replaces_the_entrypoint_and_args_follow_it():
    program = resolve("nginx", ["sh", "-c", "echo hi; sleep 1"], ["extra"])
    assert program.kind == "exec"
    assert program.argv == ("sh", "-c", "echo hi; sleep 1", "extra")
    assert program.name == "sh" and program.warning is None


def test_a_command_missing_here_is_warned_about():
    program = resolve("busybox", ["/no/such/binary-netemu"], None)
    assert program.kind == "exec" and "not installed" in program.warning


def test_args_alone_are_the_command_of_a_shell_image():
    program = resolve("busybox", None, ["sleep", "3600"])
    assert (program.kind, program.argv) == ("exec", ("sleep", "3600"))


def test_args_alone_go_to_a_stand_in():
    program = resolve("gcr.io/kuar-demo/kuard-amd64:1", None, ["--address=:9000"])
    assert (program.kind, program.name) == ("builtin", "kuard")


def test_shell_image_without_command_sleeps_and_says_why():
    program = resolve("alpine", None, None)
    assert program.name == "sleep"
    assert "exit" in program.warning and "sleep infinity" in program.warning


def test_unknown_image_gets_the_generic_page_with_a_warning():
    program = resolve("acme/shop:3", None, None, ports=[PortSpec(8080), PortSpec(53, "UDP")])
    assert program.name == "generic"
    assert program.warning.startswith("unknown image acme/shop:3")
    assert "8080/TCP" in program.warning and "53/UDP" in program.warning


def test_redis_runs_the_real_server_in_memory_when_installed(monkeypatch):
    monkeypatch.setattr(registry.shutil, "which", lambda cmd: f"/usr/bin/{cmd}")
    program = resolve("redis:7-alpine", None, None)
    assert (program.kind, program.name) == ("exec", "redis-server")
    argv = " ".join(repr(a) for a in program.argv)
    for pair in ("'--port' '6379'", "'--bind' '0.0.0.0'", "'--protected-mode' 'no'", "'--save' ''",
                 "'--appendonly' 'no'", "'--daemonize' 'no'"):
        assert pair in argv
    declared = resolve("redis", None, ["redis-server", "--maxmemory", "10mb"], ports=[PortSpec(7000)])
    assert declared.argv[:3] == ("redis-server", "--port", "7000")
    assert declared.argv[-2:] == ("--maxmemory", "10mb") and declared.argv.count("redis-server") == 1
    own = resolve("redis", None, ["--port", "7001"])
    assert own.default_ports == (7001,) and own.argv[-2:] == ("--port", "7001")


def test_redis_falls_back_to_the_built_in_server(monkeypatch):
    monkeypatch.setattr(registry.shutil, "which", lambda cmd: None)
    program = resolve("docker.io/library/redis:latest", None, None)
    assert (program.kind, program.name, program.default_ports) == ("builtin", "redis", (6379,))
    assert "built-in redis" in program.warning


def test_every_builtin_name_resolve_can_give_has_a_runner():
    assert BUILTIN_NAMES == set(runner.BUILTINS)


def test_the_package_imports_nothing_but_the_standard_library():
    # the launcher imports it before forking every pod: third-party weight would be in each pod
    code = ("import sys, sysconfig; before = set(sys.modules); import netemu.workloads;"
            "std = sysconfig.get_paths()['stdlib'];"
            "print([n for n in set(sys.modules) - before if getattr(sys.modules[n], '__file__', None)"
            " and not sys.modules[n].__file__.startswith(std) and not n.startswith('netemu')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_run_builtin_rejects_an_unknown_name():
    ctx = WorkloadContext("p", "default", "127.0.0.1", "n", "x", "c", [], {}, [])
    with pytest.raises(ValueError, match="no built-in program named 'nope'"):
        run_builtin("nope", ctx)


# ----------------------------------------------------------------------- echo-hname, generic
def test_echo_hname_answers_its_hostname_on_any_path_with_keep_alive(launcher):
    port = free_port()
    pod = launcher.start("echo-hname", "sysnet4admin/echo-hname", ports=[port])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    bodies, sockets = [], []
    for path in ("/", "/any/path?x=1"):
        conn.request("GET", path, headers={"User-Agent": "tester/1.0"})
        r = conn.getresponse()
        bodies.append((r.status, r.getheader("Content-Type"), r.read().decode()))
        sockets.append(conn.sock)
    conn.close()
    assert sockets[0] is sockets[1] is not None  # both requests on one kept-alive connection
    assert bodies == [(200, "text/html; charset=utf-8", HOSTNAME + "\n")] * 2
    line = (rf'^127\.0\.0\.1 - - \[{TIME_LOCAL}\] "GET /any/path\?x=1 HTTP/1\.1" '
            rf'200 {len(HOSTNAME) + 1} "-" "tester/1\.0"$')
    assert wait_for(lambda: re.search(line, pod.log_text(), re.M)), pod.log_text()  # logged just after replying


def test_an_idle_stand_in_has_no_thread_but_its_main_one(launcher):
    port = free_port()
    pod = launcher.start("echo-hname", ports=[port])
    assert http_request(port)[0] == 200
    assert wait_for(lambda: pod.threads() == 1)


def test_generic_answers_the_hostname_on_every_declared_port(launcher):
    ports = [free_port(), free_port()]
    launcher.start("generic", "acme/shop", ports=ports)
    for port in ports:
        status, headers, body = http_request(port, "/whatever")
        assert (status, body, headers["server"]) == (200, HOSTNAME + "\n", "netemu")


def test_udp_ports_answer_a_datagram_with_the_same_text(launcher):
    tcp, udp = free_port(), free_port(socket.SOCK_DGRAM)
    launcher.start("echo-hname", ports=[PortSpec(tcp), PortSpec(udp, "UDP")])
    assert udp_ask(udp) == HOSTNAME + "\n"
    assert http_request(tcp)[2] == HOSTNAME + "\n"


# ------------------------------------------------------------------------------------ echo-ip
def test_echo_ip_shows_method_server_and_client_addresses(launcher):
    port = free_port()
    launcher.start("echo-ip", "sysnet4admin/echo-ip", ports=[port])
    status, headers, body = http_request(port, "/ip", source="127.0.0.2")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert body == "request_method : GET | ip_dest: 127.0.0.1 | ip_src: 127.0.0.2\n"
    assert http_request(port, method="POST", body=b"x=1")[2].startswith("request_method : POST | ")


def test_echo_ip_over_udp(launcher):
    tcp, udp = free_port(), free_port(socket.SOCK_DGRAM)
    launcher.start("echo-ip", ports=[PortSpec(tcp), PortSpec(udp, "UDP", "dns")])
    assert udp_ask(udp, source="127.0.0.3") == "request_method : UDP | ip_dest: 127.0.0.1 | ip_src: 127.0.0.3\n"


# ------------------------------------------------------------------------ HTTP/1.x plumbing
def _raw_exchange(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    while len(rest) < length:
        rest += sock.recv(4096)
    return head + b"\r\n\r\n" + rest


def test_http_1_0_keep_alive_and_chunked_bodies_keep_the_connection_in_step(launcher):
    port = free_port()
    launcher.start("echo-ip", ports=[port])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        first = _raw_exchange(s, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert b"Connection: keep-alive" in first
        chunked = (b"POST /form HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        assert b"request_method : POST" in _raw_exchange(s, chunked)
        assert b"request_method : DELETE" in _raw_exchange(s, b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        reply = _raw_exchange(s, b"GET / HTTP/1.0\r\n\r\n")
        assert b"Connection: close" in reply
        assert s.recv(10) == b""  # closed after an HTTP/1.0 exchange without keep-alive


# -------------------------------------------------------------------------------------- nginx
def test_nginx_welcome_page_and_404(launcher):
    port = free_port()
    launcher.start("nginx", "nginx:1.25", ports=[port])
    status, headers, body = http_request(port)
    assert status == 200 and headers["server"] == "nginx"
    assert "<title>Welcome to nginx!</title>" in body and "<h1>Welcome to nginx!</h1>" in body
    assert http_request(port, "/index.html")[2] == body
    status, _, missing = http_request(port, "/missing.png")
    assert status == 404 and "<h1>404 Not Found</h1>" in missing and "nginx" in missing
    assert http_request(port, "/", method="POST", body=b"")[0] == 405
    status, headers, head_body = http_request(port, method="HEAD")
    assert (status, head_body, int(headers["content-length"])) == (200, "", len(body.encode()))


# -------------------------------------------------------------------------------------- hello
def test_hello_page_shows_server_address_name_date_uri_and_request_id(launcher):
    port = free_port()
    launcher.start("hello", "nginxdemos/hello", ports=[port])
    status, headers, body = http_request(port, "/some/path?x=1")
    assert status == 200 and headers["cache-control"] == "no-cache"
    assert f"<span>127.0.0.1:{port}</span>" in body and f"<span>{HOSTNAME}</span>" in body
    assert "<span>/some/path?x=1</span>" in body and re.search(TIME_LOCAL, body)
    first_id = re.search(r"Request ID: ([0-9a-f]{32})", body).group(1)
    second_id = re.search(r"Request ID: ([0-9a-f]{32})", http_request(port)[2]).group(1)
    assert first_id != second_id


def test_hello_plain_text_lines(launcher):
    port = free_port()
    launcher.start("hello-plain", "nginxdemos/hello:plain-text", ports=[port])
    status, headers, body = http_request(port, "/x?y")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    lines = body.splitlines()
    assert [line.split(":")[0] for line in lines] == ["Server address", "Server name", "Date", "URI", "Request ID"]
    assert lines[0] == f"Server address: 127.0.0.1:{port}" and lines[1] == f"Server name: {HOSTNAME}"
    assert re.fullmatch(f"Date: {TIME_LOCAL}", lines[2]) and lines[3] == "URI: /x?y"
    assert re.fullmatch(r"Request ID: [0-9a-f]{32}", lines[4])


# -------------------------------------------------------------------------------------- kuard
@pytest.fixture
def kuard(launcher):
    own, declared = free_port(), free_port()
    launcher.start("kuard", "gcr.io/kuar-demo/kuard-amd64:2", ports=[declared],
                   env={"FOO": "bar"}, args=[f"--address=:{own}"])
    return own, declared


def test_kuard_serves_its_page_on_its_own_port_and_the_declared_one(kuard):
    for port in kuard:
        status, _, body = http_request(port)
        assert status == 200 and "KUAR Demo" in body
        assert f"Hostname: <b>{HOSTNAME}</b>" in body and "Version: <b>2</b>" in body


def test_kuard_readiness_fail_and_pass_round_trip(kuard):
    port = kuard[0]
    assert http_request(port, "/ready")[::2] == (200, "ok")
    assert http_request(port, "/ready/fail", method="POST")[0] == 200
    assert http_request(port, "/ready")[::2] == (500, "fail, permanent")
    assert http_request(kuard[1], "/ready")[0] == 500  # one process, one state, every port
    assert http_request(port, "/healthy")[::2] == (200, "ok")  # liveness is separate
    http_request(port, "/ready/pass", method="POST")
    assert http_request(port, "/ready")[::2] == (200, "ok")


def test_kuard_fail_next_n_through_its_api(kuard):
    port = kuard[0]
    status, _, body = http_request(port, "/healthy/api", method="PUT", body=json.dumps({"failNext": 2}).encode())
    assert status == 200 and json.loads(body)["failNext"] == 2
    answers = [http_request(port, "/healthy")[::2] for _ in range(3)]
    assert answers == [(500, "fail, 1 left"), (500, "fail, 0 left"), (200, "ok")]
    state = json.loads(http_request(port, "/healthy/api")[2])
    assert state["probePath"] == "/healthy" and state["failNext"] == 0
    assert [h["code"] for h in state["history"]] == [200, 500, 500]  # newest first


def test_kuard_env_shows_environment_and_args(kuard):
    status, headers, body = http_request(kuard[0], "/env/api")
    data = json.loads(body)
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert data["env"]["FOO"] == "bar" and data["commandLine"] == ["/kuard", f"--address=:{kuard[0]}"]
    assert json.loads(http_request(kuard[0], "/env")[2]) == data
    assert http_request(kuard[0], "/nope")[0] == 404


def test_kuard_probe_can_start_failing_from_its_flags(launcher):
    port = free_port()
    launcher.start("kuard", "gcr.io/kuar-demo/kuard-amd64:1", args=[f"--address=:{port}", "--readiness-fail-next=1"])
    assert [http_request(port, "/ready")[0] for _ in range(2)] == [500, 200]


def test_kuard_dns_query_tries_the_search_domains(tmp_path, monkeypatch):
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    monkeypatch.setattr(dnsquery, "DNS_PORT", server.getsockname()[1])
    asked = []

    def answer():
        for _ in range(2):
            data, client = server.recvfrom(4096)
            request = DNSRecord.parse(data)
            asked.append(str(request.q.qname))
            reply = request.reply()
            if str(request.q.qname) == "alpaca-prod.default.svc.cluster.local.":
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("10.96.0.12"), ttl=30))
            else:
                reply.header.rcode = RCODE.NXDOMAIN
            server.sendto(reply.pack(), client)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\nsearch nosuch.local default.svc.cluster.local\n")
    try:
        result = dnsquery.query("alpaca-prod", "A", resolv_conf=str(conf))
    finally:
        thread.join(5)
        server.close()
    assert asked == ["alpaca-prod.nosuch.local.", "alpaca-prod.default.svc.cluster.local."]
    assert "status: NOERROR" in result
    assert "alpaca-prod.default.svc.cluster.local.\t30\tIN\tA\t10.96.0.12" in result


# -------------------------------------------------------------------------------- start-up
def test_a_taken_port_makes_the_stand_in_exit_1_with_the_reason(launcher):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pod = launcher.start("nginx", ports=[port], ready=False)
        assert pod.wait_exit() == 1
    assert f"bind() to 127.0.0.1:{port}/TCP failed (98: Address already in use)" in pod.log_text()


def test_sleep_just_sleeps(launcher):
    pod = launcher.start("sleep", "busybox")
    time.sleep(0.2)
    assert pod.poll() is None and pod.threads() == 1
    assert "listening on no ports" in pod.log_text()


def test_a_malformed_request_gets_400_and_an_access_log_line(launcher):
    port = free_port()
    pod = launcher.start("nginx", ports=[port])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GARBAGE\r\n\r\n")  # one word: taken as HTTP/0.9, so a bare error page comes back
        assert b"400 - Bad request syntax" in s.recv(4096)
    assert wait_for(lambda: '"GARBAGE" 400 0' in pod.log_text()), pod.log_text()
    assert http_request(port)[0] == 200
