"""The ingress-nginx controller's settings: its flags and the global settings of its ConfigMap
(:class:`ControllerConfig`), and an Ingress's nginx.ingress.kubernetes.io/* annotations
(:class:`LocationSettings`, :func:`parse_annotations`). Keys netemu does not support are named in
the notes returned and ignored; values that could break out of the configuration's syntax are
refused.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

CONTROLLER_CLASS = "k8s.io/ingress-nginx"
INGRESS_CLASS = "nginx"
CONTROLLER_NAMESPACE = "ingress-nginx"  # where ingress-nginx's deploy manifest puts the controller
ANNOTATION_PREFIX = "nginx.ingress.kubernetes.io/"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
TLS_SECRET_TYPE = "kubernetes.io/tls"

# what may go into the configuration between double quotes: no quote, backslash-quote, control
# characters or newlines (ingress-nginx validates its annotations with similar rules)
SAFE_TEXT = re.compile(r'^[^"\\\x00-\x1f\x7f;{}]*$')
SAFE_REGEX = re.compile(r'^[^"\x00-\x1f\x7f]*$')
_SAFE_WORD = re.compile(r'^[^\s"\'\\;{}]+$')  # unquoted in the configuration (a rewrite target, a URL)
_SIZE = re.compile(r"^\d+[kKmMgG]?$")


# --------------------------------------------------------------------------- settings
@dataclass
class ControllerConfig:
    """The controller's flags and the global settings of its ConfigMap."""
    ingress_class: str = INGRESS_CLASS
    controller_class: str = CONTROLLER_CLASS
    watch_without_class: bool = False
    default_ssl_certificate: Optional[str] = None  # "namespace/name" of a TLS Secret
    configmap: Optional[str] = None  # "namespace/name"
    http_port: int = 80
    https_port: int = 443
    status_port: int = 10246  # nginx's own /healthz and /nginx_status, on 127.0.0.1
    max_open_files: int = 0  # worker_rlimit_nofile (the pod's hard limit); 0: not set
    default_backend_port: int = 8181
    # the pod has IPv6 (ingress-nginx's isIPV6Enabled: an IPv6 address in the pod; a dual-stack lab's
    # pods have one): its servers listen on [::] too, unless the ConfigMap's disable-ipv6 says not to
    ipv6: bool = False
    # from the ConfigMap
    disable_ipv6: bool = False
    ssl_redirect: bool = True
    http_redirect_code: int = 308
    worker_processes: str = "auto"
    max_worker_connections: int = 16384
    access_log: bool = True
    keepalive_connections: int = 320
    keepalive_requests: int = 10000
    keepalive_timeout: int = 60
    proxy_connect_timeout: int = 5
    proxy_read_timeout: int = 60
    proxy_send_timeout: int = 60
    proxy_body_size: str = "1m"
    proxy_next_upstream_tries: int = 3
    proxy_buffering: str = "off"
    use_forwarded_headers: bool = False

    @property
    def listen_ipv6(self) -> bool:
        """IsIPV6Enabled of ingress-nginx's template: the pod has IPv6 and disable-ipv6 is not set."""
        return self.ipv6 and not self.disable_ipv6

    def with_configmap(self, data: dict[str, str]) -> tuple["ControllerConfig", list[str]]:
        """A copy with the ConfigMap's settings applied; unknown or bad keys are named."""
        out = ControllerConfig(**vars(self))
        notes = []
        for key, value in (data or {}).items():
            attr = _CONFIGMAP_KEYS.get(key)
            if attr is None:
                notes.append(f"ConfigMap key {key!r} is not supported by netemu's controller: ignored")
                continue
            try:
                setattr(out, attr, _CONFIGMAP_PARSERS[attr](value))
            except (ValueError, TypeError):
                notes.append(f"ConfigMap key {key!r}: bad value {value!r}: ignored")
        return out, notes


def _bool(v: Any) -> bool:
    text = str(v).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(v)


def _size(v: Any) -> str:
    if not _SIZE.match(str(v).strip()):
        raise ValueError(v)
    return str(v).strip()


def _workers(v: Any) -> str:
    text = str(v).strip()
    if text != "auto" and not text.isdigit():
        raise ValueError(v)
    return text


def _buffering(v: Any) -> str:
    return "on" if _bool(v) else "off"


_CONFIGMAP_KEYS = {
    "ssl-redirect": "ssl_redirect", "http-redirect-code": "http_redirect_code",
    "worker-processes": "worker_processes", "max-worker-connections": "max_worker_connections",
    "disable-access-log": "access_log", "upstream-keepalive-connections": "keepalive_connections",
    "upstream-keepalive-requests": "keepalive_requests", "upstream-keepalive-timeout": "keepalive_timeout",
    "proxy-connect-timeout": "proxy_connect_timeout", "proxy-read-timeout": "proxy_read_timeout",
    "proxy-send-timeout": "proxy_send_timeout", "proxy-body-size": "proxy_body_size",
    "proxy-next-upstream-tries": "proxy_next_upstream_tries", "proxy-buffering": "proxy_buffering",
    "use-forwarded-headers": "use_forwarded_headers", "disable-ipv6": "disable_ipv6",
}
_CONFIGMAP_PARSERS = {
    "ssl_redirect": _bool, "http_redirect_code": int, "worker_processes": _workers,
    "max_worker_connections": int, "access_log": lambda v: not _bool(v), "keepalive_connections": int,
    "keepalive_requests": int, "keepalive_timeout": int, "proxy_connect_timeout": int,
    "proxy_read_timeout": int, "proxy_send_timeout": int, "proxy_body_size": _size,
    "proxy_next_upstream_tries": int, "proxy_buffering": _buffering, "use_forwarded_headers": _bool,
    "disable_ipv6": _bool,
}


@dataclass
class LocationSettings:
    """An Ingress's nginx.ingress.kubernetes.io/* annotations, parsed (for its locations)."""
    rewrite_target: str = ""
    use_regex: bool = False
    ssl_redirect: Optional[bool] = None  # None: the ConfigMap's
    force_ssl_redirect: bool = False
    app_root: str = ""
    backend_protocol: str = "HTTP"
    service_upstream: bool = False
    upstream_vhost: str = ""
    x_forwarded_prefix: str = ""
    permanent_redirect: str = ""
    permanent_redirect_code: int = 301
    temporal_redirect: str = ""
    proxy_connect_timeout: Optional[int] = None
    proxy_read_timeout: Optional[int] = None
    proxy_send_timeout: Optional[int] = None
    proxy_body_size: Optional[str] = None
    proxy_next_upstream_tries: Optional[int] = None


_ANNOTATIONS = {
    "rewrite-target": ("rewrite_target", "word"), "use-regex": ("use_regex", _bool),
    "ssl-redirect": ("ssl_redirect", _bool), "force-ssl-redirect": ("force_ssl_redirect", _bool),
    "app-root": ("app_root", "word"), "backend-protocol": ("backend_protocol", "protocol"),
    "service-upstream": ("service_upstream", _bool), "upstream-vhost": ("upstream_vhost", "text"),
    "x-forwarded-prefix": ("x_forwarded_prefix", "text"), "permanent-redirect": ("permanent_redirect", "word"),
    "permanent-redirect-code": ("permanent_redirect_code", int), "temporal-redirect": ("temporal_redirect", "word"),
    "proxy-connect-timeout": ("proxy_connect_timeout", int), "proxy-read-timeout": ("proxy_read_timeout", int),
    "proxy-send-timeout": ("proxy_send_timeout", int), "proxy-body-size": ("proxy_body_size", _size),
    "proxy-next-upstream-tries": ("proxy_next_upstream_tries", int),
}


def parse_annotations(annotations: Optional[dict[str, str]], where: str = "") -> tuple[LocationSettings, list[str]]:
    s = LocationSettings()
    notes = []
    for key, value in (annotations or {}).items():
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        name = key[len(ANNOTATION_PREFIX):]
        spec = _ANNOTATIONS.get(name)
        if spec is None:
            notes.append(f"{where}annotation {key} is not supported by netemu's controller: ignored")
            continue
        attr, kind = spec
        try:
            if kind == "text":
                if not SAFE_TEXT.match(str(value)):
                    raise ValueError(value)
                parsed: Any = str(value)
            elif kind == "word":
                if not _SAFE_WORD.match(str(value)):
                    raise ValueError(value)
                parsed = str(value)
            elif kind == "protocol":
                parsed = str(value).strip().upper()
                if parsed not in ("HTTP", "HTTPS", "AUTO_HTTP"):
                    notes.append(f"{where}annotation {key}: {value!r} is not supported here (HTTP, HTTPS, "
                                 "AUTO_HTTP): HTTP is used")
                    parsed = "HTTP"
            else:
                parsed = kind(value)
        except (ValueError, TypeError):
            notes.append(f"{where}annotation {key}: invalid value {value!r}: ignored")
            continue
        setattr(s, attr, parsed)
    return s, notes
