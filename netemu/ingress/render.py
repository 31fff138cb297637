"""The nginx.conf for a snapshot of the cluster, in the layout of ingress-nginx's nginx.tmpl
(:func:`render`: the text and the files it refers to; the controller pod writes them).
"""
from __future__ import annotations

from dataclasses import dataclass

from netemu.ingress.model import (
    DEFAULT_SERVER, DEFAULT_UPSTREAM, Location, Model, Server, build_model, meta_of, needs_rewrite, tls_pem,
)
from netemu.ingress.settings import ControllerConfig

# ingress-nginx's defaults (its ConfigMap can change some, see ControllerConfig.with_configmap)
SSL_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
               "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
               "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384")
LOG_FORMAT = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
              '"$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
              '[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length '
              '$upstream_response_time $upstream_status $request_id')


@dataclass
class Rendered:
    text: str
    files: dict[str, bytes]  # file name (relative to the certificate directory) -> content
    self_signed: dict[str, str]  # file name -> host to make a self-signed certificate for
    warnings: list[str]
    model: Model


# --------------------------------------------------------------------------- the text
def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _q_dollar(text: str) -> str:
    """Quoted for `set`, which resolves variables: a literal $ becomes ${literal_dollar} (ingress-nginx's
    escapeLiteralDollar)."""
    return _q(text).replace("$", "${literal_dollar}")


def _q_regex(text: str) -> str:
    # a regular expression keeps its backslashes; only the quote needs escaping
    return '"' + text.replace('"', '\\"') + '"'


def location_match(loc: Location, enforce_regex: bool) -> str:
    """buildLocation in ingress-nginx's template.go."""
    if enforce_regex:
        return f'~* {_q_regex("^" + loc.path)}'
    if loc.path_type == "Exact":
        return f"= {_q(loc.path)}"
    return _q(loc.path)


def render(objects: dict, cfg: ControllerConfig, *, conf_dir: str, cert_dir: str,
           default_cert: str = "default-fake-certificate.pem", config_id: str = "") -> Rendered:
    """The nginx.conf for a snapshot (``objects``: ingresses, ingressClasses, services, endpointSlices,
    secrets, configMaps as API JSON). Paths in the text: ``conf_dir`` for nginx's own files (pid, temp
    directories), ``cert_dir`` for certificates (``default_cert`` is the fallback certificate there).
    ``config_id`` is what nginx answers on 127.0.0.1:<status port>/netemu/config-id, so that the
    controller can tell when a reload is done."""
    warnings: list[str] = []
    if cfg.configmap:
        ns, _, name = cfg.configmap.partition("/")
        for cm in objects.get("configMaps") or []:
            if (meta_of(cm).get("namespace"), meta_of(cm).get("name")) == (ns, name):
                cfg, notes = cfg.with_configmap(cm.get("data") or {})
                warnings += notes
    model = build_model(objects, cfg, warnings)
    files: dict[str, bytes] = {}
    self_signed: dict[str, str] = {}
    secrets = {(meta_of(s).get("namespace", "default"), meta_of(s).get("name")): s for s in objects.get("secrets") or []}
    if cfg.default_ssl_certificate:
        ns, _, name = cfg.default_ssl_certificate.partition("/")
        secret = secrets.get((ns, name))
        pem, why = tls_pem(secret) if secret is not None else (None, f'secret "{cfg.default_ssl_certificate}" '
                                                                     "not found")
        if pem is not None:
            default_cert = f"{ns}-{name}.pem"
            files[default_cert] = pem
        else:
            warnings.append(f"--default-ssl-certificate: {why}: using the fake certificate")
    for server in model.servers:
        if server.cert is None:
            continue
        if server.cert.startswith("self-signed-"):
            self_signed[server.cert] = server.hostname
        else:
            ns_name = server.cert[:-len(".pem")]
            for (ns, name), secret in secrets.items():
                if f"{ns}-{name}" == ns_name:
                    pem, _ = tls_pem(secret)
                    if pem is not None:
                        files[server.cert] = pem
    text = _text(model, cfg, conf_dir=conf_dir, cert_dir=cert_dir, default_cert=default_cert, config_id=config_id)
    return Rendered(text, files, self_signed, warnings, model)


def _text(model: Model, cfg: ControllerConfig, *, conf_dir: str, cert_dir: str, default_cert: str,
          config_id: str) -> str:
    out: list[str] = []
    w = out.append
    w("# Configuration rendered by netemu's ingress-nginx controller (the layout of ingress-nginx's nginx.tmpl).")
    w(f"# Ingresses: {', '.join(model.ingresses) or '(none)'}")
    w("")
    w("user root;")
    w(f"worker_processes {cfg.worker_processes};")
    w(f"pid {conf_dir}/nginx.pid;")
    if cfg.max_open_files:
        w(f"worker_rlimit_nofile {cfg.max_open_files};")
    w("worker_shutdown_timeout 240s;")
    w("error_log stderr notice;")
    w("")
    w("events {")
    w("    multi_accept on;")
    connections = cfg.max_worker_connections
    if cfg.max_open_files:  # ingress-nginx keeps them within the descriptors a worker may open
        connections = min(connections, max(512, cfg.max_open_files - 1024))
    w(f"    worker_connections {connections};")
    w("    use epoll;")
    w("}")
    w("")
    w("http {")
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        w(f"    {kind}_temp_path {conf_dir}/tmp/{kind};")
    w("    types {")
    w("        text/html html htm;")
    w("        text/plain txt;")
    w("        application/json json;")
    w("    }")
    w("    default_type text/html;")
    w("    sendfile on;")
    w("    tcp_nopush on;")
    w("    tcp_nodelay on;")
    w("    keepalive_timeout 75s;")
    w("    keepalive_requests 1000;")
    w("    client_body_buffer_size 8k;")
    w("    client_header_buffer_size 1k;")
    w("    large_client_header_buffers 4 8k;")
    w("    server_tokens off;")
    w("    server_names_hash_bucket_size 64;")
    w("    map_hash_bucket_size 64;")
    w("    variables_hash_bucket_size 256;")
    w("    variables_hash_max_size 2048;")
    w("    underscores_in_headers off;")
    w("    ignore_invalid_headers on;")
    w("    absolute_redirect on;")
    w("    port_in_redirect off;")
    w("")
    w(f"    log_format upstreaminfo '{LOG_FORMAT}';")
    w("    access_log /dev/stdout upstreaminfo;" if cfg.access_log else "    access_log off;")
    w("")
    w("    # See https://www.nginx.com/blog/websocket-nginx")
    w("    map $http_upgrade $connection_upgrade {")
    w("        default upgrade;")
    w("        ''      '';" if cfg.keepalive_connections > 0 else "        ''      close;")
    w("    }")
    w("    # a variable holding a literal $ (geo does not resolve variables), for paths written into `set`")
    w("    geo $literal_dollar {")
    w('        default "$";')
    w("    }")
    w("    # ssl-redirect drops a trailing slash, as ingress-nginx's Lua does (preserve-trailing-slash false)")
    w("    map $request_uri $redirect_uri {")
    w('        "~^(?<keep>.*)/$" $keep;')
    w("        default $request_uri;")
    w("    }")
    if cfg.use_forwarded_headers:
        w("    map $http_x_forwarded_proto $pass_access_scheme { default $http_x_forwarded_proto; '' $scheme; }")
    else:
        w("    map $scheme $pass_access_scheme { default $scheme; }")
    w("")
    w("    ssl_protocols TLSv1.2 TLSv1.3;")
    w(f"    ssl_ciphers '{SSL_CIPHERS}';")
    w("    ssl_prefer_server_ciphers on;")
    w("    ssl_session_cache shared:SSL:10m;")
    w("    ssl_session_timeout 10m;")
    w("    ssl_session_tickets off;")
    w("    ssl_buffer_size 4k;")
    w(f"    ssl_certificate {cert_dir}/{default_cert};")
    w(f"    ssl_certificate_key {cert_dir}/{default_cert};")
    w("")
    w(f"    upstream {DEFAULT_UPSTREAM} {{")
    w(f"        server 127.0.0.1:{cfg.default_backend_port};")
    w("    }")
    for up in model.upstreams:
        w("")
        w(f"    # {up.namespace}/{up.service} port {up.port}" + (f": {up.problem}" if up.problem else ""))
        if not up.servers:
            continue
        w(f"    upstream {up.name} {{")
        for s in up.servers:
            w(f"        server {s} max_fails=0;")
        if cfg.keepalive_connections > 0:
            w(f"        keepalive {cfg.keepalive_connections};")
            w(f"        keepalive_timeout {cfg.keepalive_timeout}s;")
            w(f"        keepalive_requests {cfg.keepalive_requests};")
        w("    }")
    live = {u.name for u in model.upstreams if u.servers} | {DEFAULT_UPSTREAM}
    for server in model.servers:
        w("")
        w(f"    ## start server {server.hostname}")
        w("    server {")
        w(f"        server_name {_q(server.hostname)};")
        default = " default_server reuseport backlog=4096" if server.hostname == DEFAULT_SERVER else ""
        w(f"        listen {cfg.http_port}{default};")
        if cfg.listen_ipv6:  # ingress-nginx's buildHTTPListener: the same options on [::]
            w(f"        listen [::]:{cfg.http_port}{default};")
        w(f"        listen {cfg.https_port}{default} ssl;")
        if cfg.listen_ipv6:
            w(f"        listen [::]:{cfg.https_port}{default} ssl;")
        if server.cert is not None:
            w(f"        ssl_certificate {cert_dir}/{server.cert};")
            w(f"        ssl_certificate_key {cert_dir}/{server.cert};")
        w('        set $proxy_upstream_name "-";')
        w('        set $proxy_alternative_upstream_name "";')
        enforce = server.enforce_regex()
        for loc in server.locations:
            _location(w, server, loc, enforce, cfg, live)
        w("    }")
        w(f"    ## end server {server.hostname}")
    w("")
    w("    # backend for when default-backend-service is not configured or it does not have endpoints")
    w("    server {")
    w(f"        listen 127.0.0.1:{cfg.default_backend_port} default_server;")
    w('        set $proxy_upstream_name "internal";')
    w("        access_log off;")
    w("        location / {")
    w("            return 404;")
    w("        }")
    w("    }")
    w("")
    w("    # default server, used for NGINX healthcheck and access to nginx stats")
    w("    server {")
    w(f"        listen 127.0.0.1:{cfg.status_port};")
    w('        set $proxy_upstream_name "internal";')
    w("        keepalive_timeout 0;")
    w("        access_log off;")
    w("        location /healthz {")
    w("            return 200;")
    w("        }")
    w("        location /nginx_status {")
    w("            stub_status on;")
    w("        }")
    w("        location = /netemu/config-id {")
    w(f"            return 200 {_q(config_id)};")
    w("        }")
    w("        location / {")
    w("            return 404;")
    w("        }")
    w("    }")
    w("}")
    return "\n".join(out) + "\n"


def _pick(annotation, default):
    return default if annotation is None else annotation


def _location(w, server: Server, loc: Location, enforce: bool, cfg: ControllerConfig, live: set[str]) -> None:
    s = loc.settings
    w("")
    w(f"        location {location_match(loc, enforce)} {{")
    ns = loc.namespace
    name = loc.ingress.split("/", 1)[1] if loc.ingress else ""
    w(f'            set $namespace {_q(ns)};')
    w(f'            set $ingress_name {_q(name)};')
    w(f'            set $service_name {_q(loc.service)};')
    w(f'            set $service_port {_q(loc.service_port)};')
    w(f'            set $location_path {_q_dollar(loc.ingress_path or loc.path)};')
    w(f'            set $proxy_upstream_name {_q(loc.upstream)};')
    if s.app_root:
        w("            if ($uri = /) {")
        w(f"                return 302 $scheme://$http_host{s.app_root};")
        w("            }")
    ssl_redirect = cfg.ssl_redirect if s.ssl_redirect is None else s.ssl_redirect
    if s.force_ssl_redirect or (ssl_redirect and server.tls):
        w("            # enforce ssl on server side")
        w("            if ($pass_access_scheme = http) {")
        w(f"                return {cfg.http_redirect_code} https://$host$redirect_uri;")
        w("            }")
    if s.permanent_redirect:
        w(f"            return {s.permanent_redirect_code} {s.permanent_redirect};")
    elif s.temporal_redirect:
        w(f"            return 302 {s.temporal_redirect};")
    body_size = s.proxy_body_size or cfg.proxy_body_size
    w(f"            client_max_body_size {body_size};")
    host = _q(s.upstream_vhost) if s.upstream_vhost else "$http_host"
    w(f"            proxy_set_header Host {host};")
    w("            proxy_set_header Upgrade $http_upgrade;")
    w("            proxy_set_header Connection $connection_upgrade;")
    w("            proxy_set_header X-Request-ID $request_id;")
    w("            proxy_set_header X-Real-IP $remote_addr;")
    w("            proxy_set_header X-Forwarded-For $remote_addr;")
    w("            proxy_set_header X-Forwarded-Host $http_host;")
    w("            proxy_set_header X-Forwarded-Port $server_port;")
    w("            proxy_set_header X-Forwarded-Proto $pass_access_scheme;")
    w("            proxy_set_header X-Forwarded-Scheme $pass_access_scheme;")
    w("            proxy_set_header X-Scheme $pass_access_scheme;")
    w('            proxy_set_header Proxy "";')
    if s.x_forwarded_prefix:
        w(f"            proxy_set_header X-Forwarded-Prefix {_q(s.x_forwarded_prefix)};")
    w(f"            proxy_connect_timeout {_pick(s.proxy_connect_timeout, cfg.proxy_connect_timeout)}s;")
    w(f"            proxy_send_timeout {_pick(s.proxy_send_timeout, cfg.proxy_send_timeout)}s;")
    w(f"            proxy_read_timeout {_pick(s.proxy_read_timeout, cfg.proxy_read_timeout)}s;")
    w(f"            proxy_buffering {cfg.proxy_buffering};")
    w("            proxy_buffer_size 4k;")
    w("            proxy_buffers 4 4k;")
    w("            proxy_request_buffering on;")
    w("            proxy_http_version 1.1;")
    w("            proxy_cookie_domain off;")
    w("            proxy_cookie_path off;")
    w("            proxy_next_upstream error timeout;")
    w("            proxy_next_upstream_timeout 0;")
    w(f"            proxy_next_upstream_tries {_pick(s.proxy_next_upstream_tries, cfg.proxy_next_upstream_tries)};")
    if loc.upstream not in live:
        w("            # no endpoint to send to")
        w("            return 503;")
    else:
        proto = {"HTTPS": "https://", "AUTO_HTTP": "$scheme://"}.get(s.backend_protocol, "http://")
        if loc.upstream == DEFAULT_UPSTREAM:
            proto = "http://"
        if needs_rewrite(loc) and not loc.is_default:
            w(f"            rewrite {_q_regex('(?i)' + loc.path)} {s.rewrite_target} break;")
        w(f"            proxy_pass {proto}{loc.upstream};")
    w("        }")
