"""gcr.io/kuar-demo/kuard-amd64 ("Kubernetes Up And Running" demo): probes you can make fail.

Listens on 8080 (kuard's `--address`, honoured among the args) and on every declared TCP
containerPort. Endpoints, following kuard's own API:

    GET  /                      HTML page: hostname, version (the image tag), addresses, the
                                request, and the probes with buttons to make them fail or pass
    GET  /healthy, /ready       200 "ok"; while failing 500 "fail, N left" or "fail, permanent"
    GET  /healthy/api, /ready/api
                                JSON {"probePath", "failNext", "history": [{id, when, relWhen, code}]}
    PUT  /healthy/api, /ready/api  with JSON {"failNext": N}: fail the next N calls
                                (0 passes from now on, -1 fails until told otherwise), as the
                                page's Succeed / Fail / "fail for next N calls" links do
    POST /healthy/fail, /ready/fail     fail until passed again (failNext -1)
    POST /healthy/pass, /ready/pass     pass again (failNext 0)
    GET  /env, /env/api         JSON {"commandLine": [...], "env": {...}}
    POST /dns/api               JSON {"type": "A", "name": "alpaca-prod"}: a DNS query through
                                the pod's resolv.conf, answered as {"result": "<dig-like text>"}

Both probes pass from the start; `--readiness-fail-next N` and `--liveness-fail-next N` among
the args set them otherwise, as with kuard.
"""
from __future__ import annotations

import fcntl
import html
import json
import socket
import struct
import threading
import time
from collections import deque
from typing import Optional

from netemu.workloads import dnsquery
from netemu.workloads.httpbase import HTML, JSON, TEXT, Site, StandInHandler
from netemu.workloads.httpconn import serve_http
from netemu.workloads.listeners import Loop
from netemu.workloads.model import WorkloadContext, tcp_ports
from netemu.workloads.registry import parse_image

DEFAULT_PORT = 8080
MAX_HISTORY = 20
SIOCGIFADDR = 0x8915


class Probe:
    """One debug probe (liveness or readiness) whose answers can be scripted."""

    def __init__(self, path: str, fail_next: int = 0):
        self.path = path
        self.fail_next = fail_next
        self.history: deque[tuple[int, float, int]] = deque(maxlen=MAX_HISTORY)
        self.last_id = 0
        self.lock = threading.Lock()

    def answer(self) -> tuple[int, str]:
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                status, message = 500, f"fail, {self.fail_next} left"
            elif self.fail_next < 0:
                status, message = 500, "fail, permanent"
            else:
                status, message = 200, "ok"
            self.last_id += 1
            self.history.append((self.last_id, time.time(), status))
            return status, message

    def configure(self, fail_next: int) -> None:
        with self.lock:
            self.fail_next = fail_next

    def status(self) -> dict:
        with self.lock:
            now = time.time()
            return {"probePath": self.path, "failNext": self.fail_next,
                    "history": [{"id": i, "when": time.strftime("%H:%M:%S", time.localtime(t)),
                                 "relWhen": f"{now - t:.1f}s ago", "code": code}
                                for i, t, code in reversed(self.history)]}


class KuardSite(Site):
    server_header = ""  # Go's net/http sends none

    def __init__(self, ctx: WorkloadContext):
        super().__init__(ctx)
        self.version = parse_image(ctx.image).tag or "latest"
        self.liveness = Probe("/healthy", _int_flag(ctx.args, "--liveness-fail-next"))
        self.readiness = Probe("/ready", _int_flag(ctx.args, "--readiness-fail-next"))
        self.probes = {"healthy": self.liveness, "ready": self.readiness}


class KuardHandler(StandInHandler):
    server: KuardSite

    def in_thread(self) -> bool:
        return self.path_only.rstrip("/") == "/dns/api"  # a DNS query waits on the server

    def route(self) -> None:
        path, method = self.path_only.rstrip("/") or "/", self.command
        head, _, tail = path.lstrip("/").partition("/")
        probe = self.server.probes.get(head)
        if probe is not None:
            self._probe(probe, tail, method)
        elif path in ("/env", "/env/api") and method in ("GET", "HEAD"):
            self._json(200, {"commandLine": ["/kuard", *self.server.ctx.args], "env": self._env()})
        elif path == "/dns/api" and method == "POST":
            self._dns()
        elif (path == "/" or path.startswith("/-/")) and method in ("GET", "HEAD"):
            self.reply(200, self._page(), HTML)
        else:
            self.reply(404, "404 page not found\n", TEXT)

    def _probe(self, probe: Probe, tail: str, method: str) -> None:
        if tail == "" and method in ("GET", "HEAD"):
            status, message = probe.answer()
            self.reply(status, message, "text/plain")
        elif tail == "api" and method in ("GET", "HEAD"):
            self._json(200, probe.status())
        elif tail == "api" and method == "PUT":
            try:
                fail_next = int(json.loads(self.body or b"{}").get("failNext", 0))
            except (ValueError, TypeError, AttributeError) as e:
                self.reply(400, f"{e}\n", TEXT)
                return
            probe.configure(fail_next)
            self._json(200, probe.status())
        elif tail in ("fail", "pass") and method == "POST":
            probe.configure(-1 if tail == "fail" else 0)
            self._json(200, probe.status())
        else:
            self.reply(404, "404 page not found\n", TEXT)

    def _dns(self) -> None:
        try:
            request = json.loads(self.body or b"{}")
            result = dnsquery.query(str(request.get("name", "")), str(request.get("type", "A")))
        except (ValueError, AttributeError, OSError) as e:
            self.reply(400, f"{e}\n", TEXT)
            return
        self._json(200, {"result": result})

    def _env(self) -> dict[str, str]:
        env = {"HOSTNAME": self.server.hostname}
        env.update(self.server.ctx.env)
        return env

    def _json(self, status: int, data: dict) -> None:
        self.reply(status, json.dumps(data, indent=2) + "\n", JSON)

    def _page(self) -> str:
        site, e = self.server, html.escape
        host, port = self.local_address
        addrs = ", ".join(ipv4_addresses() or [site.ctx.pod_ip])
        request = "\n".join([self.requestline] + [f"{k}: {v}" for k, v in self.headers.items()])
        probes = "\n".join(_probe_panel(name, p) for name, p in (("Liveness", site.liveness),
                                                                 ("Readiness", site.readiness)))
        return PAGE.format(hostname=e(site.hostname), version=e(site.version), addrs=e(addrs),
                           server=e(f"{host}:{port}"), client=e(f"{self.client_address[0]}:{self.client_address[1]}"),
                           request=e(request), probes=probes)


def _probe_panel(title: str, probe: Probe) -> str:
    state = probe.status()
    n = state["failNext"]
    desc = "Probe is succeeding" if n == 0 else (f"Probe will fail for next {n} calls" if n > 0
                                                 else "Probe will permanently fail")
    rows = "".join(f"<tr><td>{h['id']}</td><td>{h['when']}</td><td>{h['relWhen']}</td>"
                   f"<td>{h['code']}</td></tr>" for h in state["history"])
    links = " ".join(f'<a href="#" onclick="return setProbe(\'{probe.path}\', {k})">{label}</a>'
                     for k, label in ((0, "Succeed"), (-1, "Fail"), (1, "1"), (2, "2"), (3, "3"),
                                      (5, "5"), (10, "10")))
    return (f"<h2>{title} probe</h2><p>Path <code>{probe.path}</code>. {desc}.</p>"
            f"<p>{links} (numbers: fail for next N calls)</p>"
            f"<table><tr><th>ID</th><th>When</th><th>Ago</th><th>Code</th></tr>{rows}</table>")


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>KUAR Demo</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 60em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 2px 8px; }}
pre {{ background: #f4f4f4; padding: 8px; }}
</style>
<script>
function setProbe(path, n) {{
  fetch(path + "/api", {{method: "PUT", body: JSON.stringify({{failNext: n}})}})
    .then(function () {{ location.reload(); }});
  return false;
}}
function dnsQuery() {{
  var req = {{type: document.getElementById("qtype").value, name: document.getElementById("qname").value}};
  fetch("/dns/api", {{method: "POST", body: JSON.stringify(req)}})
    .then(function (r) {{ return r.json(); }})
    .then(function (j) {{ document.getElementById("dnsresult").textContent = j.result; }});
  return false;
}}
</script>
</head>
<body>
<h1>KUAR Demo</h1>
<p>Hostname: <b>{hostname}</b> &middot; Version: <b>{version}</b> &middot; Addresses: {addrs}</p>
<p>Served from {server} to {client}. <a href="/env">Environment</a></p>
<h2>Request</h2>
<pre>{request}</pre>
{probes}
<h2>DNS Query</h2>
<form onsubmit="return dnsQuery()">
<select id="qtype"><option>A</option><option>AAAA</option><option>SRV</option><option>PTR</option>
<option>CNAME</option><option>TXT</option></select>
<input id="qname" placeholder="name"> <button type="submit">Query</button>
</form>
<pre id="dnsresult"></pre>
</body>
</html>
"""


def ipv4_addresses() -> list[str]:
    """The container's non-loopback IPv4 addresses, one per interface."""
    found: list[str] = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _index, name in socket.if_nameindex():
                try:
                    raw = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
                except OSError:
                    continue
                ip = socket.inet_ntoa(raw[20:24])
                if not ip.startswith("127.") and ip not in found:
                    found.append(ip)
    except OSError:
        pass
    return found


def _flag(args: list[str], name: str) -> Optional[str]:
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def _int_flag(args: list[str], name: str) -> int:
    value = _flag(args, name)
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def address_port(args: list[str]) -> int:
    """The port of kuard's `--address` (`:8080`, `0.0.0.0:9000`), else 8080."""
    value = _flag(args, "--address")
    port = value.rsplit(":", 1)[-1] if value else ""
    return int(port) if port.isdigit() else DEFAULT_PORT


def start_kuard(ctx: WorkloadContext, loop: Loop) -> None:
    site = KuardSite(ctx)
    ports = [address_port(ctx.args)]
    for port in tcp_ports(ctx, ports[0]):
        if port not in ports:
            ports.append(port)
    for port in ports:
        serve_http(loop, port, KuardHandler, site)
