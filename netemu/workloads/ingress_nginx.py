"""registry.k8s.io/ingress-nginx/controller: the NGINX Ingress controller, with real nginx.

As the image's /nginx-ingress-controller does, this stand-in watches the cluster, renders an
nginx.conf from the Ingresses (netemu.ingress, the same rules as ingress-nginx), runs
nginx (the host's /usr/sbin/nginx, Debian package nginx-light or nginx) as its child, and reloads
it when the configuration changes. nginx carries the traffic; this process only configures it.

- The cluster: the stand-in subscribes to the lab's control process (its Unix socket,
  NETEMU_API_SOCKET) with the API op ``ingress_watch`` and receives a snapshot of the Ingresses,
  IngressClasses, Services, EndpointSlices, TLS Secrets and ConfigMaps each time they change
  (netemu.ingress.watch, netemu.daemon.feeds).
- Files: /etc/nginx in the pod's own root (its writes stay in the pod; /tmp/nginx when the
  container's user cannot write /etc/nginx), so ``netemu exec -n ingress-nginx <pod> -- cat
  /etc/nginx/nginx.conf`` shows what runs, as in the real image. A stand-in run in a privileged pod
  (the host's files) writes /run/netemu/<lab>/ingress/<namespace>_<pod>/ and binds it on /etc/nginx
  in the pod's mount namespace. Certificates in /etc/nginx/ssl: the fake default one
  made at start (openssl), Secrets' certificates, self-signed ones for TLS hosts without a Secret.
- nginx: ``nginx -c /etc/nginx/nginx.conf -g 'daemon off;'``, a child of this process, in the
  pod's namespaces and cgroup. Every new configuration is tested (``nginx -t``) before nginx gets
  SIGHUP (a graceful reload: old workers finish their requests); a configuration that fails the
  test is logged and the running one kept. Endpoint changes also reload (ingress-nginx updates
  its Lua balancer instead; nginx-light has no Lua). A change is applied as soon as it arrives
  (render, `nginx -t`, SIGHUP: 20 ms to 200 ms on a busy two-core machine); changes arriving
  meanwhile are applied together. Once nginx answers with the new configuration (its id on
  127.0.0.1:10246/netemu/config-id), the stand-in reports the snapshot as applied (API op
  ``ingress_applied``): `netemu up` and `wait` count a lab ready only when its controllers serve
  the latest snapshot.
- Ports: 80 and 443 (nginx; --http-port/--https-port; on IPv6 too where the pod has it), /healthz, /metrics and
  /is-dynamic-lb-initialized on 10254 (this process; --healthz-port), nginx's own status server
  on 127.0.0.1:10246. Ready (for the kubelet) once nginx answers.
- Flags honoured: --ingress-class, --controller-class, --watch-ingress-without-class,
  --configmap, --default-ssl-certificate, --http-port, --https-port, --healthz-port,
  --status-port, --default-server-port; the others are accepted and ignored.
- SIGTERM: nginx quits gracefully (SIGQUIT, up to 10 seconds), the pod's directory is removed, the
  stand-in exits. If nginx dies, the stand-in exits 1 and the kubelet restarts the container; a
  restarted stand-in first stops what is left of the previous nginx (its process group).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Optional

from netemu.frames import digest, read_frames
from netemu.ingress import ControllerConfig, Rendered, render
from netemu.workloads.httpbase import TEXT, Site, StandInHandler
from netemu.workloads.httpconn import serve_http
from netemu.workloads.listeners import Loop, StartError, ipv6_enabled
from netemu.workloads.podlog import write_log
from netemu.workloads.model import WorkloadContext

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
OPENSSL = "openssl"
ETC_NGINX = "/etc/nginx"
FIRST_SNAPSHOT_TIMEOUT = 10.0
NGINX_START_TIMEOUT = 10.0
QUIT_TIMEOUT = 10.0
RELOAD_TIMEOUT = 5.0  # for nginx to serve a new configuration after SIGHUP
CONFIG_ID_TOKEN = "@NETEMU-CONFIG-ID@"
FAKE_CERT = "default-fake-certificate.pem"
FAKE_SUBJECT = "/O=Acme Co/CN=Kubernetes Ingress Controller Fake Certificate"


def find_nginx() -> Optional[str]:
    for p in NGINX_CANDIDATES:
        if os.access(p, os.X_OK):
            return p
    return shutil.which("nginx")


# --------------------------------------------------------------------------- flags
def parse_args(args: list[str]) -> tuple[ControllerConfig, int, list[str]]:
    """(config, healthz port, flags ignored) from the container's args."""
    cfg = ControllerConfig()
    healthz = 10254
    ignored = []
    for a in args:
        if not a.startswith("--"):
            continue  # /nginx-ingress-controller itself
        key, sep, value = a[2:].partition("=")
        if not sep:
            value = "true"
        try:
            if key == "ingress-class":
                cfg.ingress_class = value
            elif key == "controller-class":
                cfg.controller_class = value
            elif key == "watch-ingress-without-class":
                cfg.watch_without_class = value.lower() in ("true", "1", "yes")
            elif key == "configmap":
                cfg.configmap = value
            elif key == "default-ssl-certificate":
                cfg.default_ssl_certificate = value
            elif key == "http-port":
                cfg.http_port = int(value)
            elif key == "https-port":
                cfg.https_port = int(value)
            elif key == "status-port":
                cfg.status_port = int(value)
            elif key == "default-server-port":
                cfg.default_backend_port = int(value)
            elif key == "healthz-port":
                healthz = int(value)
            else:
                ignored.append(a)
        except ValueError:
            ignored.append(a)
    return cfg, healthz, ignored


# --------------------------------------------------------------------------- certificates
def make_certificate(path: str, subject: str, hosts: list[str]) -> None:
    """A self-signed certificate and its key in one PEM file (P-256, one year), made with openssl."""
    d = tempfile.mkdtemp(dir=os.path.dirname(path))
    try:
        crt, key = os.path.join(d, "tls.crt"), os.path.join(d, "tls.key")
        cmd = [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-days", "365", "-subj", subject, "-keyout", key, "-out", crt]
        if hosts:
            cmd += ["-addext", "subjectAltName=" + ",".join(f"DNS:{h}" for h in hosts)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"openssl failed: {res.stderr.strip()}")
        with open(crt, "rb") as f:
            pem = f.read()
        with open(key, "rb") as f:
            pem += f.read()
        _write(path, pem, 0o600)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _write(path: str, data: bytes, mode: int = 0o644) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the feed
def subscribe(path: str, pod: str) -> socket.socket:
    from netemu.workloads.labapi import open_feed

    try:
        return open_feed(path, "ingress_watch", {"pod": pod})
    except OSError as e:
        raise StartError(f"cannot reach the lab's control process at {path}: {e}") from None


# --------------------------------------------------------------------------- the controller
class Controller:
    def __init__(self, ctx: WorkloadContext, cfg: ControllerConfig, nginx: str, base: str, conf_dir: str,
                 api: str = ""):
        self.ctx = ctx
        self.api = api
        self.pod_key = f"{ctx.namespace}/{ctx.pod_name}"
        self.cfg = cfg
        self.nginx = nginx
        self.base = base  # the directory on the host's file system
        self.conf_dir = conf_dir  # the same directory as nginx sees it (/etc/nginx when bind-mounted)
        self.cert_dir = os.path.join(conf_dir, "ssl")
        self.conf = os.path.join(conf_dir, "nginx.conf")
        self.proc: Optional[subprocess.Popen] = None
        self.latest: Optional[tuple[dict, str]] = None  # the newest snapshot and its digest
        self.changed = threading.Event()
        self.first = threading.Event()
        self.lock = threading.Lock()
        self.stopping = False
        self.reloads = 0
        self.failed_reloads = 0
        self.last_ok = True
        self.config_id = ""  # what nginx runs: the SHA-256 of its configuration (16 hex digits)
        self._warned: set[str] = set()
        self._made_certs: set[str] = set()

    # ------------------------------------------------------------------ rendering
    def render(self, snap: dict) -> Rendered:
        return render(snap, self.cfg, conf_dir=self.conf_dir, cert_dir=self.cert_dir, default_cert=FAKE_CERT,
                      config_id=CONFIG_ID_TOKEN)

    def materialize(self, r: Rendered) -> None:
        for name, data in r.files.items():
            path = os.path.join(self.cert_dir, name)
            try:
                with open(path, "rb") as f:
                    if f.read() == data:
                        continue
            except OSError:
                pass
            _write(path, data, 0o600)
        for name, host in r.self_signed.items():
            path = os.path.join(self.cert_dir, name)
            if name in self._made_certs and os.path.exists(path):
                continue
            make_certificate(path, f"/O=netemu/CN={host}", [host])
            self._made_certs.add(name)
            write_log(f"netemu ingress-nginx: made a self-signed certificate for {host}\n")
        for w in r.warnings:
            if w not in self._warned:
                write_log(f"netemu ingress-nginx: warning: {w}\n")
        self._warned = set(r.warnings)

    def test(self, conf: str) -> tuple[bool, str]:
        res = subprocess.run([self.nginx, "-t", "-q", "-c", conf, "-p", self.conf_dir + "/", "-e", "stderr"],
                             capture_output=True, text=True, timeout=30)
        return res.returncode == 0, (res.stderr or res.stdout).strip()

    def apply(self, snap: dict, first: bool = False) -> bool:
        """Render, write, test, and (unless first) reload and wait until nginx serves the new
        configuration. True when nginx runs (or will run, if first) the configuration of ``snap``."""
        r = self.render(snap)
        self.materialize(r)
        config_id = hashlib.sha256(r.text.encode()).hexdigest()[:16]
        if config_id == self.config_id:
            return True
        candidate = self.conf + ".new"
        _write(candidate, r.text.replace(CONFIG_ID_TOKEN, config_id).encode())
        ok, out = self.test(candidate)
        if not ok:
            self.failed_reloads += 1
            self.last_ok = False
            write_log(f"netemu ingress-nginx: error: the new configuration fails `nginx -t`, keeping the "
                      f"running one:\n{out}\n")
            return False
        os.replace(candidate, self.conf)
        self.config_id = config_id
        self.last_ok = True
        if first:
            return True
        self.reloads += 1
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGHUP)
        served = self.wait_served(config_id)
        ingresses = ", ".join(r.model.ingresses) or "no Ingress"
        write_log(f"netemu ingress-nginx: configuration changed ({ingresses}; "
                  f"{sum(len(u.servers) for u in r.model.upstreams)} endpoints): nginx reloaded"
                  + ("" if served else f" (not serving it after {RELOAD_TIMEOUT:g}s)") + "\n")
        return served

    def served_id(self) -> str:
        try:
            with socket.create_connection(("127.0.0.1", self.cfg.status_port), timeout=1) as s:
                s.sendall(b"GET /netemu/config-id HTTP/1.0\r\nHost: localhost\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            return data.partition(b"\r\n\r\n")[2].decode(errors="replace").strip()
        except OSError:
            return ""

    def wait_served(self, config_id: str) -> bool:
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while time.monotonic() < deadline:
            if self.served_id() == config_id:
                return True
            time.sleep(0.002)
        return False

    def ack(self, snapshot_digest: str) -> None:
        """Tell the control process which snapshot nginx serves (``up`` waits for it)."""
        try:
            from netemu.workloads.labapi import call

            call(self.api, "ingress_applied", {"pod": self.pod_key, "digest": snapshot_digest})
        except OSError as e:
            write_log(f"netemu ingress-nginx: cannot report to the control process: {e}\n")

    # ------------------------------------------------------------------ nginx
    def start_nginx(self) -> None:
        # its own process group (master and workers), so that a restarted stand-in can stop it all
        self.proc = subprocess.Popen([self.nginx, "-c", self.conf, "-p", self.conf_dir + "/", "-e", "stderr",
                                      "-g", "daemon off;"], stdin=subprocess.DEVNULL, close_fds=True,
                                     process_group=0)
        deadline = time.monotonic() + NGINX_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(f"nginx exited at start with status {self.proc.returncode} (see above)")
            if self.nginx_healthy():
                return
            time.sleep(0.02)
        raise StartError(f"nginx did not answer on 127.0.0.1:{self.cfg.status_port} within {NGINX_START_TIMEOUT:g}s")

    def nginx_healthy(self, timeout: float = 1.0) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.cfg.status_port), timeout=timeout) as s:
                s.sendall(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
                return s.recv(64).startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
        except OSError:
            return False

    def watch_nginx(self) -> None:
        code = self.proc.wait()
        if self.stopping:
            return
        write_log(f"netemu ingress-nginx: nginx exited with status {code}; exiting\n")
        os._exit(1)

    def stop(self, *_args) -> None:
        self.stopping = True
        write_log("netemu ingress-nginx: stopping: nginx finishes its requests (SIGQUIT)\n")
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGQUIT)
                self.proc.wait(QUIT_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(self.base, ignore_errors=True)
        os._exit(0)

    # ------------------------------------------------------------------ following the cluster
    def follow(self, sock: socket.socket) -> None:
        for frame in read_frames(sock):
            try:
                snap = json.loads(frame)
            except ValueError:
                continue
            with self.lock:
                self.latest = (snap, digest(frame))
            self.first.set()
            self.changed.set()
        if self.stopping:
            return
        write_log("netemu ingress-nginx: the control process closed the feed; exiting\n")
        self.stop()

    def sync_loop(self) -> None:
        """Apply the latest snapshot as soon as one arrives (a removed endpoint must leave nginx before
        its pod's network does); snapshots arriving meanwhile are coalesced into the next pass."""
        while True:
            self.changed.wait()
            self.changed.clear()
            with self.lock:
                latest = self.latest
            if latest is None or self.stopping:
                continue
            snap, snapshot_digest = latest
            try:
                self.apply(snap)
            except Exception as e:  # keep serving with the running configuration
                write_log(f"netemu ingress-nginx: error: {type(e).__name__}: {e}\n")
            # processed, applied or not (a configuration nginx refuses is logged, not waited for)
            self.ack(snapshot_digest)


class HealthzSite(Site):
    server_header = ""

    def __init__(self, ctx: WorkloadContext, controller: Controller):
        super().__init__(ctx)
        self.controller = controller


class HealthzHandler(StandInHandler):
    server: HealthzSite
    runs_in_thread = True  # /healthz asks nginx (up to half a second)

    def route(self) -> None:
        c = self.server.controller
        if self.path_only == "/healthz":
            alive = c.proc is not None and c.proc.poll() is None and c.nginx_healthy(0.5)
            self.reply(200 if alive else 500, "ok" if alive else "nginx is not running")
        elif self.path_only == "/is-dynamic-lb-initialized":
            self.reply(200, "ok")
        elif self.path_only == "/metrics":
            ns, pod = c.ctx.namespace, c.ctx.pod_name
            labels = f'controller_class="{c.cfg.controller_class}",controller_namespace="{ns}",controller_pod="{pod}"'
            self.reply(200, "".join([
                f"nginx_ingress_controller_config_hash{{{labels}}} {int(c.config_id or '0', 16)}\n",
                f"nginx_ingress_controller_config_last_reload_successful{{{labels}}} {1 if c.last_ok else 0}\n",
                f'nginx_ingress_controller_success{{{labels}}} {c.reloads}\n',
                f'nginx_ingress_controller_errors{{{labels}}} {c.failed_reloads}\n',
            ]), "text/plain; version=0.0.4")
        else:
            self.reply(404, "404 page not found\n", TEXT)


# --------------------------------------------------------------------------- set-up
def _open_files_limit() -> int:
    """What nginx's workers may raise their descriptor limit to (worker_rlimit_nofile)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else 1 << 20
    return max(1024, min(limit, 1 << 20))


def _pod_dir(api_socket: str, ctx: WorkloadContext) -> str:
    return os.path.join(os.path.dirname(api_socket), "ingress", f"{ctx.namespace}_{ctx.pod_name}")


def _own_dir() -> str:
    """In a pod with a root of its own: /etc/nginx itself, as in the image (or /tmp/nginx for a user
    that may not write it)."""
    for d in (ETC_NGINX, "/tmp/nginx"):
        try:
            os.makedirs(d, mode=0o755, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK):
            return d
    raise StartError("cannot write /etc/nginx nor /tmp/nginx in the pod")


def _same_pod(pid: int) -> bool:
    """The process is in our network and mount namespaces: this pod's."""
    try:
        return all(os.stat(f"/proc/{pid}/ns/{ns}").st_ino == os.stat(f"/proc/self/ns/{ns}").st_ino
                   for ns in ("net", "mnt"))
    except OSError:
        return False


def _stop_previous(base: str) -> None:
    """The nginx left by this container's previous run (the stand-in was killed; the kubelet restarts
    the container but leaves the pod's other processes): its master and workers, one process group,
    hold the ports. Stop them so that the new nginx can bind."""
    try:
        with open(os.path.join(base, "nginx.pid")) as f:
            pgid = int(f.read().strip())
        with open(f"/proc/{pgid}/comm") as f:
            if f.read().strip() != "nginx" or not _same_pod(pgid):
                return
    except (OSError, ValueError):
        return
    members = [int(d) for d in os.listdir("/proc") if d.isdigit() and _pgid(int(d)) == pgid]
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        return
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in members):
        time.sleep(0.02)


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


def _own_mount_namespace() -> bool:
    """True in a pod: the launcher forked us into the sandbox's mount namespace, not its own (a test
    running the stand-in on the host shares its parent's, and /etc/nginx is then left alone)."""
    try:
        return os.stat("/proc/self/ns/mnt").st_ino != os.stat(f"/proc/{os.getppid()}/ns/mnt").st_ino
    except OSError:
        return False


def _bind_etc_nginx(base: str) -> str:
    """Show the pod's configuration at /etc/nginx, in the pod's own mount namespace only (a restarted
    container finds its bind mount in place: the pod's directory is kept, only emptied)."""
    if not _own_mount_namespace() or not os.path.isdir(ETC_NGINX):
        return base
    try:
        if os.path.samefile(ETC_NGINX, base):  # bound by this container's previous run
            return ETC_NGINX
    except OSError:
        pass
    res = subprocess.run(["mount", "--bind", base, ETC_NGINX], capture_output=True, text=True)
    return ETC_NGINX if res.returncode == 0 else base


def _empty_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    for name in os.listdir(path):
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.unlink(p)
            except OSError:
                pass


def start_ingress_nginx(ctx: WorkloadContext, loop: Loop) -> None:
    cfg, healthz_port, ignored = parse_args(ctx.args)
    nginx = find_nginx()
    if nginx is None:
        raise StartError("nginx is not installed on this machine: the ingress controller runs the host's nginx "
                         "(apt-get install nginx-light)")
    if shutil.which(OPENSSL) is None:
        raise StartError("openssl is not installed on this machine: the ingress controller needs it for its "
                         "default certificate (apt-get install openssl)")
    api = ctx.env.get("NETEMU_API_SOCKET", "")
    if not api:
        raise StartError("NETEMU_API_SOCKET is not set: this stand-in needs the lab's control process")
    base = _own_dir() if ctx.contained else _pod_dir(api, ctx)
    _stop_previous(base)
    _empty_dir(base)
    for sub in ("ssl", "tmp/client_body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        os.makedirs(os.path.join(base, sub), mode=0o700, exist_ok=True)
    conf_dir = base if ctx.contained else _bind_etc_nginx(base)
    cfg.max_open_files = _open_files_limit()
    cfg.ipv6 = ipv6_enabled()  # a dual-stack lab's pod: nginx listens on [::] too
    c = Controller(ctx, cfg, nginx, base, conf_dir, api)
    if ignored:
        write_log(f"netemu ingress-nginx: flags accepted and ignored: {' '.join(ignored)}\n")
    try:
        make_certificate(os.path.join(c.cert_dir, FAKE_CERT), FAKE_SUBJECT, ["ingress.local"])
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        raise StartError(f"cannot make the default certificate: {e}") from None

    sock = subscribe(api, c.pod_key)
    threading.Thread(target=c.follow, args=(sock,), name="ingress-feed", daemon=True).start()
    if not c.first.wait(FIRST_SNAPSHOT_TIMEOUT):
        raise StartError("no snapshot of the cluster from the control process")
    c.changed.clear()
    with c.lock:
        snap, snapshot_digest = c.latest
    if not c.apply(snap, first=True):
        raise StartError("the first configuration fails `nginx -t` (see above)")
    c.start_nginx()
    c.ack(snapshot_digest)
    signal.signal(signal.SIGTERM, c.stop)
    signal.signal(signal.SIGINT, c.stop)
    threading.Thread(target=c.watch_nginx, name="nginx-watch", daemon=True).start()
    threading.Thread(target=c.sync_loop, name="ingress-sync", daemon=True).start()  # changes since the first
    serve_http(loop, healthz_port, HealthzHandler, HealthzSite(ctx, c))
    write_log(f"netemu ingress-nginx: nginx {nginx} running (pid {c.proc.pid}), configuration {c.conf}; "
              f"class {cfg.ingress_class} ({cfg.controller_class}); HTTP {cfg.http_port}, HTTPS {cfg.https_port}, "
              f"healthz {healthz_port}\n")
