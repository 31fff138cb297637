"""Resource names as kubectl accepts them (plural, singular, short names, `plural.group`, `kind/name`),
from the API's own table of kinds (netemu.spec.registry), and the REST paths they live at.

    core:           /api/v1/namespaces/{ns}/{plural}[/{name}[/{sub}]]
    groups:         /apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}[/{sub}]]
    cluster-scoped: the same without namespaces/{ns}; namespace None lists every namespace
"""
from __future__ import annotations

from typing import Optional
from urllib.parse import quote, urlencode

from netemu.spec import registry
from netemu.spec.registry import Resource
from netemu.cli.client import ApiCallError, CliError, Client

JSON = "application/json"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
MERGE_PATCH = "application/merge-patch+json"


def resource_of(text: str, client: Optional[Client] = None) -> Resource:
    """A resource by any name kubectl accepts; with a client, the lab's CustomResourceDefinitions too."""
    res = registry.lookup(text)
    if res is None and client is not None and learn_crds(client):
        res = registry.lookup(text)
    if res is None:
        raise CliError(f'the server doesn\'t have a resource type "{text}"')
    return res


def by_kind(kind: str, api_version: Optional[str] = None, client: Optional[Client] = None) -> Resource:
    def find() -> Optional[Resource]:
        return (registry.by_api_version(api_version, kind) if api_version else None) or registry.by_kind(kind)

    res = find()
    if res is None and client is not None and learn_crds(client):
        res = find()
    if res is None:
        raise CliError(f'the server doesn\'t have a resource type for kind "{kind}"'
                       + (f' in version "{api_version}"' if api_version else ""))
    return res


def learn_crds(client: Client) -> bool:
    """Know the kinds of the lab's CustomResourceDefinitions here too (names, paths, and the spec
    loader's stored kinds). False when the lab has none."""
    crds = registry.by_kind("CustomResourceDefinition")
    try:
        items = (client.rest("GET", path(crds)) or {}).get("items") or []
    except ApiCallError:
        return False
    return any([registry.register_crd(crd) is not None for crd in items])


def split_ref(first: str, second: Optional[str], client: Optional[Client] = None) -> tuple[Resource, Optional[str]]:
    """`pod np-1`, `pod/np-1` or `pods` -> (resource, name)."""
    if "/" in first and second is None:
        k, _, name = first.partition("/")
        return resource_of(k, client), name
    return resource_of(first, client), second


def path(res: Resource, namespace: Optional[str] = None, name: Optional[str] = None, sub: str = "",
         version: Optional[str] = None, query: Optional[dict] = None) -> str:
    """The REST path of a collection (name None) or an object; namespace None on a namespaced
    resource is the collection across every namespace."""
    v = version if version in res.versions else res.version
    out = f"/apis/{res.group}/{v}" if res.group else f"/api/{v}"
    if res.namespaced and namespace is not None:
        out += f"/namespaces/{quote(namespace, safe='')}"
    out += f"/{res.plural}"
    if name is not None:
        out += f"/{quote(name, safe='')}"
        if sub:
            out += f"/{sub}"
    q = {k: v for k, v in (query or {}).items() if v is not None and v != ""}
    return out + ("?" + urlencode(q) if q else "")


def namespace_for(res: Resource, args, default: str = "default") -> Optional[str]:
    """The namespace a verb works in: -n, or "default"; None for cluster-scoped kinds and for -A."""
    if not res.namespaced or getattr(args, "all_namespaces", False):
        return None
    return getattr(args, "namespace", None) or default


def list_objects(client: Client, res: Resource, namespace: Optional[str] = None, labels: Optional[str] = None,
                 fields: Optional[str] = None) -> list[dict]:
    """The objects of a kind (as the API serves them, each with its kind and apiVersion)."""
    doc = client.rest("GET", path(res, namespace, query={"labelSelector": labels, "fieldSelector": fields}))
    items = (doc or {}).get("items") or []
    for o in items:
        o.setdefault("kind", res.kind)
        o.setdefault("apiVersion", res.group_version)
    return items


def get_object(client: Client, res: Resource, namespace: Optional[str], name: str) -> dict:
    return client.rest("GET", path(res, namespace if res.namespaced else None, name))


def find_object(client: Client, res: Resource, namespace: Optional[str], name: str) -> Optional[dict]:
    """The object, or None when the API says it is not there."""
    try:
        return get_object(client, res, namespace, name)
    except ApiCallError as e:
        if e.status == 404:
            return None
        raise

