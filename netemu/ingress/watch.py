"""What an ingress controller watches, as one snapshot of the cluster (pure).

ingress-nginx watches Ingresses, IngressClasses, Services, EndpointSlices, Secrets and its
ConfigMap through the API server; here the control process builds one snapshot of them and streams
it to the controller pods (netemu.daemon.feeds), as JSON:

    {"ingresses": [...], "ingressClasses": [...], "services": [...], "endpointSlices": [...],
     "secrets": [...], "configMaps": [...]}

Objects are as the API shows them (Ingresses in their v1 form), without status and bookkeeping
metadata, and only what a controller can use: the Services the Ingresses name and their slices, TLS
Secrets (and any Secret an Ingress names), the ConfigMaps of the controller's namespace. So a change
to an unrelated Service or its endpoints changes nothing, and the feed sends nothing.
"""
from __future__ import annotations

from netemu.ingress.settings import CONTROLLER_NAMESPACE, TLS_SECRET_TYPE
from netemu.wellknown import SERVICE_NAME_LABEL

WATCHED = ("Ingress", "IngressClass", "Service", "EndpointSlice", "Secret", "ConfigMap")
_DROP_META = ("uid", "resourceVersion", "generation", "managedFields", "ownerReferences", "generateName")


def _clean(obj) -> dict:
    d = obj.dump()
    d.pop("status", None)
    meta = d.get("metadata") or {}
    for k in _DROP_META:
        meta.pop(k, None)
    return d


def snapshot(store) -> dict:
    """The objects the controllers need, as JSON-ready dicts (see the module docs)."""
    ingresses = sorted(store.list("Ingress"), key=lambda o: (o.metadata.namespace, o.metadata.name))
    wanted_svcs: set[tuple[str, str]] = set()
    wanted_secrets: set[tuple[str, str]] = set()
    for ing in ingresses:
        ns = ing.metadata.namespace or "default"
        spec = ing.spec
        backends = [spec.default_backend] if spec.default_backend else []
        for rule in spec.rules or []:
            for p in (rule.http.paths if rule.http else []):
                backends.append(p.backend)
        for b in backends:
            if b is not None and b.service is not None:
                wanted_svcs.add((ns, b.service.name))
        for tls in spec.tls or []:
            if tls.secret_name:
                wanted_secrets.add((ns, tls.secret_name))
    services = [s for s in store.list("Service") if (s.metadata.namespace, s.metadata.name) in wanted_svcs]
    slices = [s for s in store.list("EndpointSlice")
              if (s.metadata.namespace, (s.metadata.labels or {}).get(SERVICE_NAME_LABEL)) in wanted_svcs]
    secrets = [s for s in store.list("Secret")
               if s.type == TLS_SECRET_TYPE or (s.metadata.namespace, s.metadata.name) in wanted_secrets]
    configmaps = store.list("ConfigMap", CONTROLLER_NAMESPACE)

    def ordered(objs):
        return [_clean(o) for o in sorted(objs, key=lambda o: (o.metadata.namespace or "", o.metadata.name))]

    return {
        "ingresses": [_clean(i) for i in ingresses],
        "ingressClasses": ordered(store.list("IngressClass")),
        "services": ordered(services),
        "endpointSlices": ordered(slices),
        "secrets": ordered(secrets),
        "configMaps": ordered(configmaps),
    }
