"""The one table of kinds: group, version, plural, scope, short names, what the lab does with them.

Spec loading, the API server (routes, discovery, OpenAPI, Tables) and the CLI all read this table, so
adding a kind is one entry here (plus a model in :mod:`netemu.spec.models` when the lab acts on it).
Kinds without a model are *stored*: kept and served as written, with a warning that the lab does not
act on them, so that upstream installer manifests apply whole. CustomResourceDefinitions add entries
at run time (:func:`register_crd`).

This module imports nothing heavy: the CLI reads it on every start.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Resource:
    kind: str
    group: str  # "" for the core group
    version: str  # the preferred (served and stored) version
    plural: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    singular: str = ""
    categories: tuple[str, ...] = ()
    # other versions served for the same objects (converted trivially: same fields)
    also_versions: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale", "log", "eviction", "binding", ...
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    # acted: the lab does something with it (a model in spec.models); stored: kept and served only
    acted: bool = False
    # what the lab does instead, for the warning on stored kinds ("" = nothing)
    note: str = ""
    builtin: bool = True  # False for kinds from CustomResourceDefinitions

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def versions(self) -> tuple[str, ...]:
        return (self.version, *self.also_versions)

    def api_versions(self) -> tuple[str, ...]:
        return tuple(f"{self.group}/{v}" if self.group else v for v in self.versions)

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    @property
    def qualified(self) -> str:
        """`deployments.apps`, as kubectl names resources of a group."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def resource_name(self) -> str:
        """kubectl's `<kind>.<group>` prefix, as in `deployment.apps/np-pods created`."""
        return f"{self.kind.lower()}.{self.group}" if self.group else self.kind.lower()


_RO = ("get", "list", "watch")
_NO_BGP = ("MetalLB's BGP mode: FRR in every node peers with the lab's routers (Lab spec.routers) or any peer; "
           "checked as MetalLB checks it")
_ALL = ("all",)


def _r(kind, group, version, plural, namespaced=True, short=(), **kw) -> Resource:
    return Resource(kind, group, version, plural, namespaced, tuple(short), **kw)


BUILTIN: tuple[Resource, ...] = (
    # ---------------------------------------------------------------- core/v1
    _r("Pod", "", "v1", "pods", short=("po",), categories=_ALL, acted=True,
       subresources=("status", "log", "eviction", "binding", "exec", "attach", "portforward", "ephemeralcontainers")),
    _r("Service", "", "v1", "services", short=("svc",), categories=_ALL, acted=True, subresources=("status",)),
    _r("Endpoints", "", "v1", "endpoints", short=("ep",), acted=True,
       note="a view of the lab's EndpointSlices"),
    _r("Node", "", "v1", "nodes", False, short=("no",), acted=True, subresources=("status",)),
    _r("Namespace", "", "v1", "namespaces", False, short=("ns",), acted=True, subresources=("status",),
       verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    _r("ConfigMap", "", "v1", "configmaps", short=("cm",), acted=True),
    _r("Secret", "", "v1", "secrets", acted=True),
    _r("Event", "", "v1", "events", short=("ev",), acted=True),
    _r("ServiceAccount", "", "v1", "serviceaccounts", short=("sa",), acted=True,  # pods get its token
       subresources=("token",)),
    _r("PersistentVolumeClaim", "", "v1", "persistentvolumeclaims", short=("pvc",), subresources=("status",)),
    _r("PersistentVolume", "", "v1", "persistentvolumes", False, short=("pv",), subresources=("status",)),
    _r("ResourceQuota", "", "v1", "resourcequotas", short=("quota",), subresources=("status",)),
    _r("LimitRange", "", "v1", "limitranges", short=("limits",)),
    _r("ReplicationController", "", "v1", "replicationcontrollers", short=("rc",), subresources=("status", "scale")),
    _r("PodTemplate", "", "v1", "podtemplates"),
    _r("ComponentStatus", "", "v1", "componentstatuses", False, short=("cs",), verbs=("get", "list"), acted=True),
    # ---------------------------------------------------------------- apps
    _r("Deployment", "apps", "v1", "deployments", short=("deploy",), categories=_ALL, acted=True,
       subresources=("status", "scale")),
    _r("ReplicaSet", "apps", "v1", "replicasets", short=("rs",), categories=_ALL, acted=True,
       subresources=("status", "scale")),
    _r("DaemonSet", "apps", "v1", "daemonsets", short=("ds",), categories=_ALL, subresources=("status",), acted=True),
    _r("StatefulSet", "apps", "v1", "statefulsets", short=("sts",), categories=_ALL, subresources=("status", "scale")),
    _r("ControllerRevision", "apps", "v1", "controllerrevisions"),
    # ---------------------------------------------------------------- batch
    _r("Job", "batch", "v1", "jobs", categories=_ALL, subresources=("status",), acted=True),
    _r("CronJob", "batch", "v1", "cronjobs", short=("cj",), categories=_ALL, subresources=("status",)),
    # ---------------------------------------------------------------- autoscaling, policy
    _r("HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers", short=("hpa",),
       categories=_ALL, also_versions=("v1",), acted=True, subresources=("status",)),
    _r("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets", short=("pdb",), subresources=("status",),
       acted=True),
    # ---------------------------------------------------------------- discovery, networking
    _r("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", acted=True),
    _r("Ingress", "networking.k8s.io", "v1", "ingresses", short=("ing",), acted=True, subresources=("status",)),
    _r("IngressClass", "networking.k8s.io", "v1", "ingressclasses", False, acted=True),
    _r("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies", short=("netpol",),
       note="network policies are not enforced"),
    # ---------------------------------------------------------------- events.k8s.io
    _r("Event", "events.k8s.io", "v1", "events", short=("ev",), acted=True),
    # ---------------------------------------------------------------- rbac
    _r("Role", "rbac.authorization.k8s.io", "v1", "roles", note="RBAC is not enforced"),
    _r("ClusterRole", "rbac.authorization.k8s.io", "v1", "clusterroles", False, note="RBAC is not enforced"),
    _r("RoleBinding", "rbac.authorization.k8s.io", "v1", "rolebindings", note="RBAC is not enforced"),
    _r("ClusterRoleBinding", "rbac.authorization.k8s.io", "v1", "clusterrolebindings", False,
       note="RBAC is not enforced"),
    # ---------------------------------------------------------------- storage, scheduling, coordination
    _r("StorageClass", "storage.k8s.io", "v1", "storageclasses", False, short=("sc",)),
    _r("CSIDriver", "storage.k8s.io", "v1", "csidrivers", False),
    _r("PriorityClass", "scheduling.k8s.io", "v1", "priorityclasses", False, short=("pc",), acted=True,
       note="pods get their priority from it; the scheduler preempts by it"),
    _r("Lease", "coordination.k8s.io", "v1", "leases"),
    _r("RuntimeClass", "node.k8s.io", "v1", "runtimeclasses", False),
    # ---------------------------------------------------------------- admission, extension
    _r("ValidatingWebhookConfiguration", "admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations",
       False, note="webhooks are not called"),
    _r("MutatingWebhookConfiguration", "admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations",
       False, note="webhooks are not called"),
    _r("CustomResourceDefinition", "apiextensions.k8s.io", "v1", "customresourcedefinitions", False,
       short=("crd", "crds"), subresources=("status",), acted=True),
    _r("APIService", "apiregistration.k8s.io", "v1", "apiservices", False, subresources=("status",),
       note="aggregated APIs are served by the lab itself where it has them (metrics.k8s.io)"),
    _r("CertificateSigningRequest", "certificates.k8s.io", "v1", "certificatesigningrequests", False,
       short=("csr",), subresources=("status", "approval")),
    _r("FlowSchema", "flowcontrol.apiserver.k8s.io", "v1", "flowschemas", False, subresources=("status",)),
    _r("PriorityLevelConfiguration", "flowcontrol.apiserver.k8s.io", "v1", "prioritylevelconfigurations", False,
       subresources=("status",)),
    # ---------------------------------------------------------------- reviews (answered, never stored)
    _r("SelfSubjectAccessReview", "authorization.k8s.io", "v1", "selfsubjectaccessreviews", False,
       verbs=("create",), acted=True),
    _r("SelfSubjectRulesReview", "authorization.k8s.io", "v1", "selfsubjectrulesreviews", False,
       verbs=("create",), acted=True),
    _r("SubjectAccessReview", "authorization.k8s.io", "v1", "subjectaccessreviews", False,
       verbs=("create",), acted=True),
    _r("SelfSubjectReview", "authentication.k8s.io", "v1", "selfsubjectreviews", False, verbs=("create",),
       acted=True),
    _r("TokenReview", "authentication.k8s.io", "v1", "tokenreviews", False, verbs=("create",), acted=True),
    # ---------------------------------------------------------------- metallb.io
    _r("IPAddressPool", "metallb.io", "v1beta1", "ipaddresspools", acted=True),
    _r("L2Advertisement", "metallb.io", "v1beta1", "l2advertisements", acted=True),
    # BGP mode: checked as MetalLB checks it (netemu.spec.metallb_bgp), announced by no speaker yet
    _r("BGPPeer", "metallb.io", "v1beta2", "bgppeers", acted=True, note=_NO_BGP),
    _r("BGPAdvertisement", "metallb.io", "v1beta1", "bgpadvertisements", acted=True, note=_NO_BGP),
    _r("BFDProfile", "metallb.io", "v1beta1", "bfdprofiles", acted=True, note=_NO_BGP),
    _r("Community", "metallb.io", "v1beta1", "communities", acted=True, note=_NO_BGP),
    _r("ServiceL2Status", "metallb.io", "v1beta1", "servicel2statuses"),
    # ---------------------------------------------------------------- metrics.k8s.io (read only)
    _r("PodMetrics", "metrics.k8s.io", "v1beta1", "pods", verbs=_RO, acted=True),
    _r("NodeMetrics", "metrics.k8s.io", "v1beta1", "nodes", False, verbs=_RO, acted=True),
)

# the pairs the API serves twice (core Event and events.k8s.io Event): kind lookups take the first
_by_kind: dict[str, Resource] = {}
_by_gvr: dict[tuple[str, str, str], Resource] = {}  # (group, version, plural)
_crds: dict[str, Resource] = {}  # CRD name -> resource


def _index(res: Resource) -> None:
    _by_kind.setdefault(res.kind, res)
    for v in res.versions:
        _by_gvr[(res.group, v, res.plural)] = res


for _res in BUILTIN:
    _index(_res)


def all_resources() -> list[Resource]:
    return list(BUILTIN) + list(_crds.values())


def by_kind(kind: str) -> Optional[Resource]:
    return _by_kind.get(kind)


def by_gvr(group: str, version: str, plural: str) -> Optional[Resource]:
    return _by_gvr.get((group, version, plural))


def by_api_version(api_version: str, kind: str) -> Optional[Resource]:
    group, _, version = api_version.rpartition("/")
    for res in all_resources():
        if res.kind == kind and res.group == group and version in res.versions:
            return res
    return None


def lookup(text: str) -> Optional[Resource]:
    """What kubectl accepts on its command line: plural, singular, short name, kind, `plural.group`."""
    t = text.lower()
    for res in all_resources():
        if res.group == "metrics.k8s.io" or (res.kind == "Event" and res.group):
            continue  # served, but not what `get pods` / `get events` mean
        names = {res.plural, res.singular_name, res.kind.lower(), *res.short_names}
        if t in names or t in {f"{n}.{res.group}" for n in names if res.group}:
            return res
    return None


def groups() -> dict[str, list[str]]:
    """group -> versions served, the preferred first (core group under "")."""
    out: dict[str, list[str]] = {}
    for res in all_resources():
        vs = out.setdefault(res.group, [])
        for v in res.versions:
            if v not in vs:
                vs.append(v)
    for vs in out.values():  # highest version first, as the API server orders them
        vs.sort(key=_version_priority)
    return out


def resources_of(group: str, version: str) -> list[Resource]:
    return [r for r in all_resources() if r.group == group and version in r.versions]


def _version_priority(v: str) -> tuple:
    import re

    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
    if not m:
        return (3, v)
    stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0))


# ------------------------------------------------------------------ CustomResourceDefinitions
def register_crd(crd: dict) -> Optional[Resource]:
    """Serve a CRD's resource (its storage version first); None when the CRD is not usable."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, kind, plural = spec.get("group"), names.get("kind"), names.get("plural")
    versions = [v.get("name") for v in spec.get("versions") or [] if v.get("served", True) and v.get("name")]
    if not (group and kind and plural and versions):
        return None
    storage = next((v.get("name") for v in spec.get("versions") or [] if v.get("storage")), versions[0])
    others = tuple(v for v in versions if v != storage)
    existing = _by_gvr.get((group, storage, plural))
    if existing is not None and existing.builtin:
        return existing  # a CRD for a kind the lab has built in (metallb.io): keep ours
    subs = tuple(k for k in ((spec.get("versions") or [{}])[0].get("subresources") or {}))
    res = Resource(kind, group, storage, plural, spec.get("scope", "Namespaced") == "Namespaced",
                   tuple(names.get("shortNames") or ()), singular=names.get("singular", ""),
                   categories=tuple(names.get("categories") or ()), also_versions=others,
                   subresources=subs, builtin=False)
    _crds[(crd.get("metadata") or {}).get("name", plural + "." + group)] = res
    _index(res)
    return res


def unregister_crd(name: str) -> None:
    res = _crds.pop(name, None)
    if res is None:
        return
    if _by_kind.get(res.kind) is res:
        del _by_kind[res.kind]
    for v in res.versions:
        if _by_gvr.get((res.group, v, res.plural)) is res:
            del _by_gvr[(res.group, v, res.plural)]
