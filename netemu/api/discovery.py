"""Discovery documents from the table of kinds: the legacy form (/api, /apis, /apis/<g>/<v>) and the
aggregated form (apidiscovery.k8s.io/v2) kubectl asks for first, so that one request tells it
everything."""
from __future__ import annotations

from netemu.spec import registry
from netemu.spec.registry import Resource

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_BETA = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"

KUBE_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-netemu", "gitCommit": "netemu",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23",
                "compiler": "gc", "platform": "linux/amd64"}

# subresource -> (kind it answers with, its group/version, verbs)
_SUB_KIND = {"status": (None, None, ("get", "patch", "update")),
             "scale": ("Scale", "autoscaling/v1", ("get", "patch", "update")),
             "eviction": ("Eviction", "policy/v1", ("create",)),
             "binding": ("Binding", "v1", ("create",)),
             "log": ("Pod", "v1", ("get",)),
             "exec": ("PodExecOptions", "v1", ("create", "get")),
             "attach": ("PodAttachOptions", "v1", ("create", "get")),
             "portforward": ("PodPortForwardOptions", "v1", ("create", "get")),
             "ephemeralcontainers": ("Pod", "v1", ("get", "patch", "update")),
             "approval": (None, None, ("get", "patch", "update")),
             "token": ("TokenRequest", "authentication.k8s.io/v1", ("create",))}


def _api_resource(res: Resource) -> list[dict]:
    out = [{"name": res.plural, "singularName": res.singular_name, "namespaced": res.namespaced,
            "kind": res.kind, "verbs": list(res.verbs)}]
    if res.short_names:
        out[0]["shortNames"] = list(res.short_names)
    if res.categories:
        out[0]["categories"] = list(res.categories)
    for sub in res.subresources:
        kind, gv, verbs = _SUB_KIND.get(sub, (None, None, ("get",)))
        entry = {"name": f"{res.plural}/{sub}", "singularName": "", "namespaced": res.namespaced,
                 "kind": kind or res.kind, "verbs": list(verbs)}
        if gv:
            g, _, v = gv.rpartition("/")
            entry.update(group=g, version=v) if g else entry.update(version=v)
        out.append(entry)
    return out


def api_versions() -> dict:
    return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
        {"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}


def resource_list(group: str, version: str) -> dict:
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": [r for res in registry.resources_of(group, version) for r in _api_resource(res)]}


def _group(name: str, versions: list[str]) -> dict:
    vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": vs, "preferredVersion": vs[0]}


def group_list() -> dict:
    groups = [_group(g, versions) for g, versions in registry.groups().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group(name: str) -> dict | None:
    versions = registry.groups().get(name)
    if not versions or not name:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def _discovery_resource(res: Resource, version: str) -> dict:
    d = {"resource": res.plural, "responseKind": {"group": res.group, "version": version, "kind": res.kind},
         "scope": "Namespaced" if res.namespaced else "Cluster", "singularResource": res.singular_name,
         "verbs": list(res.verbs)}
    if res.short_names:
        d["shortNames"] = list(res.short_names)
    if res.categories:
        d["categories"] = list(res.categories)
    subs = []
    for sub in res.subresources:
        kind, gv, verbs = _SUB_KIND.get(sub, (None, None, ("get",)))
        g, _, v = (gv or f"{res.group}/{version}").rpartition("/")
        subs.append({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": kind or res.kind},
                     "verbs": list(verbs)})
    if subs:
        d["subresources"] = subs
    return d


def aggregated(core: bool, api_version: str = "apidiscovery.k8s.io/v2") -> dict:
    """/api (core=True) or /apis as an APIGroupDiscoveryList."""
    items = []
    for group_name, versions in registry.groups().items():
        if bool(group_name) == core:
            continue
        items.append({"metadata": {"name": group_name, "creationTimestamp": None}, "versions": [
            {"version": v, "freshness": "Current",
             "resources": [_discovery_resource(r, v) for r in registry.resources_of(group_name, v)]}
            for v in versions]})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}
