"""The ingress-nginx controller's configuration, pure: Ingresses, Services, EndpointSlices and TLS
Secrets in, an nginx.conf out, built the way ingress-nginx builds it.

Input is the objects as the API shows them (JSON dicts, Ingresses already in their v1 form), so the
controller pod needs nothing but the standard library. The steps follow ingress-nginx's
`getBackendServers` (internal/ingress/controller/controller.go) and its nginx.tmpl:

- which Ingresses are ours (:func:`handles`): spec.ingressClassName naming an IngressClass whose
  controller is ours, else the `kubernetes.io/ingress.class` annotation, else (no class at all) when
  our IngressClass is the default one or --watch-ingress-without-class is set;
- Ingresses in creation order; one server per host, plus the catch-all server ``_`` that takes the
  rules without a host; every server starts with a root location to the default backend (404), or to
  the Ingress's defaultBackend;
- paths: empty is ``/``, ImplementationSpecific is read as Prefix (ingress-nginx's
  SetDefaultNGINXPathType); the first Ingress to claim a host+path+pathType keeps it; a Prefix path
  ``/foo`` becomes ``location /foo/`` plus ``location = /foo`` (Kubernetes' element-wise prefix),
  unless it rewrites or uses regular expressions;
- locations sorted longest path first; when any location of a server rewrites (rewrite-target) or
  uses regular expressions (use-regex), every location of that server becomes a case-insensitive
  regular expression anchored at the start (``location ~* "^/ip"``), and the order decides;
- rewrite-target: ``rewrite "(?i)<path>" <target> break;`` (capture groups of a use-regex path work);
- upstreams are the Service's ready endpoints (pod IP:port; the Service's port resolved by number or
  name to the EndpointSlice port of the same name), round robin, kept-alive connections, no passive
  failure marking (ingress-nginx's upstream-max-fails 0) and a retry on the next endpoint after a
  connection error (proxy_next_upstream error timeout, 3 tries); `service-upstream: "true"` uses the
  ClusterIP instead; no endpoint: 503; the endpoints of every slice, so a dual-stack Service's pods
  are there by both addresses and an IPv6-only Service's by their IPv6 ones (``[addr]:port``);
- IPv6: where the controller's pod has IPv6 (a dual-stack lab), every server listens on ``[::]`` too
  with the same options (ingress-nginx's IsIPV6Enabled; the ConfigMap's disable-ipv6 turns it off);
- TLS: a host listed in spec.tls gets the certificate of its kubernetes.io/tls Secret (tls.crt and
  tls.key, base64), or a self-signed one made for it when the Secret is missing or unusable (the
  controller pod makes it); every other server answers HTTPS with the controller's default
  certificate ("Kubernetes Ingress Controller Fake Certificate"); HTTP requests to a host with a
  certificate get ``308`` to https (ssl-redirect, on by default; force-ssl-redirect for any host).

Annotations (nginx.ingress.kubernetes.io/...): rewrite-target, use-regex, ssl-redirect,
force-ssl-redirect, app-root, backend-protocol (HTTP, HTTPS, AUTO_HTTP), service-upstream,
upstream-vhost, x-forwarded-prefix, permanent-redirect(-code), temporal-redirect,
proxy-{connect,send,read}-timeout, proxy-body-size, proxy-next-upstream-tries; others are named in
the controller's log and ignored (snippets never reach the configuration). ConfigMap keys: see
ControllerConfig.with_configmap. Values that could break out of the configuration's syntax are
refused.

Modules, from objects to text: ``watch`` (the snapshot of the cluster a controller follows),
``settings`` (flags, ConfigMap, annotations), ``model`` (which Ingresses; servers, locations,
upstreams), ``render`` (the nginx.conf and the files it refers to; the controller pod,
netemu.workloads.ingress_nginx, writes them).
"""
from netemu.ingress.model import DEFAULT_UPSTREAM, Model, build_model, handles, tls_pem
from netemu.ingress.render import Rendered, location_match, render
from netemu.ingress.settings import ControllerConfig, parse_annotations

__all__ = ["DEFAULT_UPSTREAM", "ControllerConfig", "Model", "Rendered", "build_model", "handles", "location_match",
           "parse_annotations", "render", "tls_pem"]
