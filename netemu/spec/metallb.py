"""MetalLB's configuration: the CRDs ``IPAddressPool`` / ``L2Advertisement`` (metallb.io/v1beta1) and
the legacy ConfigMap ``metallb-system/config`` (MetalLB <= 0.12, as blogs of that time show it); the BGP
mode's kinds (``BGPPeer`` metallb.io/v1beta2, ``BGPAdvertisement``, ``BFDProfile``, ``Community``), whose
checks live in :mod:`netemu.spec.metallb_bgp`.

The legacy format is turned into the CRDs, as MetalLB's own ``configmaptocrs`` converter does: each
``layer2`` address pool becomes an IPAddressPool plus an L2Advertisement naming it; ``peers``,
``bgp-communities``, ``bfd-profiles`` and the ``bgp-advertisements`` of ``bgp`` pools become BGPPeers,
a Community, BFDProfiles and BGPAdvertisements naming the ``bgp`` pools, which the nodes' FRR speakers
announce to the peers (netemu.control.metallb_bgp).

Blogs lose indentation inside the ``config: |`` block too (seed 000)::

    address-pools:
    - name: nginx-ip-range
    protocol: layer2
    address:
    - 192.168.1.11-192.168.1.13

YAML reads ``protocol`` as a top-level key there. The re-indenter below puts every key back where
MetalLB's config schema says it belongs (``protocol`` is a pool's field), as netemu's manifest
recovery does for Kubernetes objects. ``address:`` (MetalLB's parser rejects it: the field is
``addresses``) is taken as ``addresses`` with a warning.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import Field

from netemu.spec.errors import Location, Report, join_path
from netemu.spec.models import ConfigMap, K8sModel, LabelSelector, ObjectMeta

API_VERSION = "metallb.io/v1beta1"
API_VERSION_V1BETA2 = "metallb.io/v1beta2"  # BGPPeer's
NAMESPACE = "metallb-system"  # where MetalLB reads its configuration
LEGACY_CONFIGMAP = "config"
LEGACY_KEY = "config"

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


# --------------------------------------------------------------------------- the CRDs
class ServiceAllocation(K8sModel):
    priority: Optional[int] = None
    namespaces: Optional[list[str]] = None
    namespace_selectors: Optional[list[LabelSelector]] = None
    service_selectors: Optional[list[LabelSelector]] = None


class IPAddressPoolSpec(K8sModel):
    addresses: list[str]
    # the CRD's defaults (the API server fills them in, so `get -o yaml` shows them)
    auto_assign: Optional[bool] = True
    avoid_buggy_ips: Optional[bool] = Field(default=False, alias="avoidBuggyIPs")
    service_allocation: Optional[ServiceAllocation] = None


class IPAddressPool(K8sModel):
    api_version: str = API_VERSION
    kind: Literal["IPAddressPool"] = "IPAddressPool"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: IPAddressPoolSpec


class PreferredNodeSelector(K8sModel):
    weight: int
    preference: LabelSelector


class L2AdvertisementSpec(K8sModel):
    ip_address_pools: Optional[list[str]] = None
    ip_address_pool_selectors: Optional[list[LabelSelector]] = None
    node_selectors: Optional[list[LabelSelector]] = None
    interfaces: Optional[list[str]] = None
    service_selectors: Optional[list[LabelSelector]] = None
    preferred_node_selectors: Optional[list[PreferredNodeSelector]] = None


class L2Advertisement(K8sModel):
    api_version: str = API_VERSION
    kind: Literal["L2Advertisement"] = "L2Advertisement"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    # blogs often write an L2Advertisement with no spec at all: every pool, every node
    spec: L2AdvertisementSpec = Field(default_factory=L2AdvertisementSpec)


# BGP mode's kinds, as MetalLB v0.13/v0.14 reads them (api/v1beta2/bgppeer_types.go, api/v1beta1/
# bgpadvertisement_types.go, bfdprofile_types.go, community_types.go). Durations are Go's ("90s", "1m30s").
# netemu checks them (netemu.spec.metallb_bgp) and decides announcements (netemu.control.metallb_bgp);
# no speaker speaks BGP yet.
class SecretReference(K8sModel):
    name: Optional[str] = None
    namespace: Optional[str] = None


class BGPPeerSpec(K8sModel):
    my_asn: Optional[int] = Field(default=None, alias="myASN")
    peer_asn: Optional[int] = Field(default=None, alias="peerASN")
    dynamic_asn: Optional[str] = Field(default=None, alias="dynamicASN")  # internal | external
    peer_address: Optional[str] = None
    source_address: Optional[str] = None
    peer_port: Optional[int] = 179  # the CRD's default
    hold_time: Optional[str] = None
    keepalive_time: Optional[str] = None
    connect_time: Optional[str] = None
    router_id: Optional[str] = Field(default=None, alias="routerID")
    node_selectors: Optional[list[LabelSelector]] = None
    password: Optional[str] = None
    password_secret: Optional[SecretReference] = None
    bfd_profile: Optional[str] = None
    enable_graceful_restart: Optional[bool] = None
    ebgp_multi_hop: Optional[bool] = Field(default=None, alias="ebgpMultiHop")
    vrf: Optional[str] = None
    disable_mp: Optional[bool] = Field(default=False, alias="disableMP")  # the CRD's default
    # newer MetalLB (v0.15+): the session carries both families (an IPv4 session IPv6 prefixes too and the
    # reverse); unset, only the family of peerAddress, as disableMP has no effect there any more
    dual_stack_address_family: Optional[bool] = Field(default=None, alias="dualStackAddressFamily")


class BGPPeer(K8sModel):
    api_version: str = API_VERSION_V1BETA2
    kind: Literal["BGPPeer"] = "BGPPeer"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: BGPPeerSpec = Field(default_factory=BGPPeerSpec)


class BGPAdvertisementSpec(K8sModel):
    aggregation_length: Optional[int] = 32  # the CRD's defaults
    aggregation_length_v6: Optional[int] = Field(default=128, alias="aggregationLengthV6")
    local_pref: Optional[int] = None
    communities: Optional[list[str]] = None
    ip_address_pools: Optional[list[str]] = None
    ip_address_pool_selectors: Optional[list[LabelSelector]] = None
    node_selectors: Optional[list[LabelSelector]] = None
    peers: Optional[list[str]] = None


class BGPAdvertisement(K8sModel):
    api_version: str = API_VERSION
    kind: Literal["BGPAdvertisement"] = "BGPAdvertisement"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: BGPAdvertisementSpec = Field(default_factory=BGPAdvertisementSpec)


class BFDProfileSpec(K8sModel):
    receive_interval: Optional[int] = None  # milliseconds (FRR's default 300)
    transmit_interval: Optional[int] = None  # milliseconds (FRR's default 300)
    detect_multiplier: Optional[int] = None  # FRR's default 3
    echo_interval: Optional[int] = None  # milliseconds (FRR's default 50)
    echo_mode: Optional[bool] = None
    passive_mode: Optional[bool] = None
    minimum_ttl: Optional[int] = None


class BFDProfile(K8sModel):
    api_version: str = API_VERSION
    kind: Literal["BFDProfile"] = "BFDProfile"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: BFDProfileSpec = Field(default_factory=BFDProfileSpec)


class CommunityAlias(K8sModel):
    name: Optional[str] = None
    value: Optional[str] = None


class CommunitySpec(K8sModel):
    communities: Optional[list[CommunityAlias]] = None


class Community(K8sModel):
    api_version: str = API_VERSION
    kind: Literal["Community"] = "Community"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: CommunitySpec = Field(default_factory=CommunitySpec)


BGP_KINDS = ("BGPPeer", "BGPAdvertisement", "BFDProfile", "Community")

# for the lead to merge into models.KINDS / API_VERSIONS / NAMESPACED
KINDS: dict[str, type[K8sModel]] = {"IPAddressPool": IPAddressPool, "L2Advertisement": L2Advertisement,
                                    "BGPPeer": BGPPeer, "BGPAdvertisement": BGPAdvertisement,
                                    "BFDProfile": BFDProfile, "Community": Community}
API_VERSIONS: dict[str, tuple[str, ...]] = {k: (API_VERSION,) for k in KINDS}
API_VERSIONS["BGPPeer"] = (API_VERSION_V1BETA2,)
NAMESPACED = set(KINDS)


def register() -> None:
    """Make the loader, the store and the flattened-manifest recovery know the CRDs (idempotent):
    run when this module is loaded, which netemu.spec.models' last lines make sure of."""
    import sys

    from netemu.spec import models

    models.KINDS.update(KINDS)
    models.API_VERSIONS.update(API_VERSIONS)
    models.NAMESPACED.update(NAMESPACED)
    convert = sys.modules.get("netemu.spec.convert")
    if getattr(convert, "MODELS", None) is not None:  # a copy made when convert was imported (if it is yet)
        convert.MODELS.update(KINDS)


# --------------------------------------------------------------------------- addresses
class AddressError(ValueError):
    pass


def parse_addresses(text: str) -> list[IPNetwork]:
    """One entry of ``addresses``: a CIDR or a range ``a-b`` (summarized into CIDRs, in order), as
    MetalLB's ParseCIDR; the messages are MetalLB's."""
    text = str(text).strip()
    if "-" not in text:
        try:
            return [ipaddress.ip_network(text, strict=False)]
        except ValueError:
            raise AddressError(f"invalid CIDR {text!r} (a CIDR like 192.168.1.240/28 or a range like "
                               f"192.168.1.11-192.168.1.13)") from None
    first, _, last = text.partition("-")
    try:
        start = ipaddress.ip_address(first.strip())
    except ValueError:
        raise AddressError(f"invalid IP range {text!r}: invalid start IP {first.strip()!r}") from None
    try:
        end = ipaddress.ip_address(last.strip())
    except ValueError:
        raise AddressError(f"invalid IP range {text!r}: invalid end IP {last.strip()!r}") from None
    if start.version != end.version:
        raise AddressError(f"invalid IP range {text!r}: start and end are of different IP families")
    if start > end:
        raise AddressError(f"invalid IP range {text!r}: start IP {str(start)!r} is after the end IP {str(end)!r}")
    return list(ipaddress.summarize_address_range(start, end))


def pool_networks(pool: IPAddressPool) -> list[IPNetwork]:
    """A pool's CIDRs in declaration order; entries that do not parse are skipped (validation says so)."""
    out: list[IPNetwork] = []
    for a in pool.spec.addresses or []:
        try:
            out += parse_addresses(a)
        except AddressError:
            continue
    return out


# --------------------------------------------------------------------------- validation
def check_selector(sel: LabelSelector, path: str, loc: Location, report: Report) -> None:
    for i, req in enumerate(sel.match_expressions or []):
        p = f"{path}.matchExpressions[{i}]"
        if req.operator in ("In", "NotIn") and not req.values:
            report.error(loc, f"{p}.values", f"must be non-empty for operator {req.operator}")
        if req.operator in ("Exists", "DoesNotExist") and req.values:
            report.error(loc, f"{p}.values", f"must be empty for operator {req.operator}")


def _check_duplicates(values: list, path: str, what: str, loc: Location, report: Report) -> None:
    seen = []
    for i, v in enumerate(values):
        dumped = v.dump() if hasattr(v, "dump") else v
        if dumped in seen:
            report.error(loc, f"{path}[{i}]", f"duplicate definition of {what}")
        seen.append(dumped)


def _namespace_note(obj: K8sModel, loc: Location, report: Report) -> None:
    ns = obj.metadata.namespace
    if ns and ns != NAMESPACE:
        report.warn(loc, "metadata.namespace", f"MetalLB reads its configuration from namespace {NAMESPACE}, "
                                               f"not {ns}; netemu uses it anyway")


def check_pool(pool: IPAddressPool, loc: Location, report: Report) -> None:
    spec = pool.spec
    _namespace_note(pool, loc, report)
    if not spec.addresses:
        report.error(loc, "spec.addresses", "pool has no prefixes defined: give at least one CIDR or range")
    for i, a in enumerate(spec.addresses or []):
        try:
            parse_addresses(a)
        except AddressError as e:
            report.error(loc, f"spec.addresses[{i}]", str(e))
    sa = spec.service_allocation
    if sa is not None:
        if sa.priority is not None and sa.priority < 0:
            report.error(loc, "spec.serviceAllocation.priority", f"must be >= 0, got {sa.priority}")
        _check_duplicates(sa.namespaces or [], "spec.serviceAllocation.namespaces", "namespace", loc, report)
        for name in ("namespace_selectors", "service_selectors"):
            sels = getattr(sa, name) or []
            key = "namespaceSelectors" if name == "namespace_selectors" else "serviceSelectors"
            _check_duplicates(sels, f"spec.serviceAllocation.{key}", "selector", loc, report)
            for i, sel in enumerate(sels):
                check_selector(sel, f"spec.serviceAllocation.{key}[{i}]", loc, report)


def check_l2_advertisement(adv: L2Advertisement, loc: Location, report: Report) -> None:
    spec = adv.spec
    _namespace_note(adv, loc, report)
    _check_duplicates(spec.ip_address_pools or [], "spec.ipAddressPools", "pool", loc, report)
    for key, sels in (("ipAddressPoolSelectors", spec.ip_address_pool_selectors),
                      ("nodeSelectors", spec.node_selectors), ("serviceSelectors", spec.service_selectors)):
        _check_duplicates(sels or [], f"spec.{key}", "selector", loc, report)
        for i, sel in enumerate(sels or []):
            check_selector(sel, f"spec.{key}[{i}]", loc, report)
    for i, p in enumerate(spec.preferred_node_selectors or []):
        if not 1 <= p.weight <= 100:
            report.error(loc, f"spec.preferredNodeSelectors[{i}].weight", f"must be in 1-100, got {p.weight}")
        check_selector(p.preference, f"spec.preferredNodeSelectors[{i}].preference", loc, report)
    for i, name in enumerate(spec.interfaces or []):
        if not name or len(name) > 15 or "/" in name or " " in name:
            report.error(loc, f"spec.interfaces[{i}]", f"not an interface name: {name!r}")


@dataclass
class PoolSource:
    """A pool and where it was declared, for checks across documents."""

    name: str
    loc: Location
    path: str  # field path of the pool in its document
    addresses: list[tuple[str, str]]  # (field path, text)


def check_pools_across(sources: list[PoolSource], report: Report) -> None:
    """Across every pool of the files (and within each): names defined twice, CIDRs that overlap
    (MetalLB refuses such a configuration as a whole)."""
    names: dict[str, PoolSource] = {}
    nets: list[tuple[IPNetwork, PoolSource]] = []
    for src in sources:
        if src.name in names and names[src.name] is not src:
            report.error(src.loc, join_path(src.path, "name") if src.path else "metadata.name",
                         f"duplicate definition of pool {src.name!r} (also in {names[src.name].loc.where()})")
            continue
        names[src.name] = src
        for path, text in src.addresses:
            try:
                parsed = parse_addresses(text)
            except AddressError:
                continue
            for n in parsed:
                hit = next(((m, o) for m, o in nets if m.version == n.version and m.overlaps(n)), None)
                if hit is not None:
                    where = "the same pool" if hit[1] is src else f"pool {hit[1].name!r} ({hit[1].loc.where()})"
                    report.error(src.loc, path, f"CIDR {str(n)!r} in pool {src.name!r} overlaps with already defined "
                                                f"CIDR {str(hit[0])!r} of {where}")
                    break
            nets += [(n, src) for n in parsed]


# --------------------------------------------------------------------------- the legacy ConfigMap
def is_legacy_configmap(obj: Any) -> bool:
    return (isinstance(obj, ConfigMap) and obj.metadata.name == LEGACY_CONFIGMAP
            and (obj.metadata.namespace or "default") == NAMESPACE and LEGACY_KEY in (obj.data or {}))


# MetalLB 0.12's config schema (its configFile struct): object -> {key: shape}. A shape is
# ("scalar",), ("list", item), ("map",) (free-form) or ("obj", name).
_SCALAR = ("scalar",)
_SCHEMA: dict[str, dict[str, tuple]] = {
    "top": {"peers": ("list", ("obj", "peer")), "bgp-communities": ("map",),
            "address-pools": ("list", ("obj", "pool")), "bfd-profiles": ("list", ("obj", "bfd"))},
    "pool": {"name": _SCALAR, "protocol": _SCALAR, "addresses": ("list", _SCALAR),
             "address": ("list", _SCALAR),  # not MetalLB's, but what blogs write
             "auto-assign": _SCALAR, "avoid-buggy-ips": _SCALAR,
             "bgp-advertisements": ("list", ("obj", "bgpadv"))},
    "bgpadv": {"aggregation-length": _SCALAR, "aggregation-length-v6": _SCALAR, "localpref": _SCALAR,
               "communities": ("list", _SCALAR)},
    "peer": {"my-asn": _SCALAR, "peer-asn": _SCALAR, "peer-address": _SCALAR, "source-address": _SCALAR,
             "peer-port": _SCALAR, "hold-time": _SCALAR, "keepalive-time": _SCALAR, "router-id": _SCALAR,
             "node-selectors": ("list", ("obj", "nodesel")), "password": _SCALAR, "bfd-profile": _SCALAR,
             "ebgp-multihop": _SCALAR},
    "nodesel": {"match-labels": ("map",), "match-expressions": ("list", ("obj", "expr"))},
    "expr": {"key": _SCALAR, "operator": _SCALAR, "values": ("list", _SCALAR)},
    "bfd": {"name": _SCALAR, "receive-interval": _SCALAR, "transmit-interval": _SCALAR,
            "detect-multiplier": _SCALAR, "echo-interval": _SCALAR, "echo-mode": _SCALAR,
            "passive-mode": _SCALAR, "minimum-ttl": _SCALAR},
}
_LINE = re.compile(r"^(?P<dash>-\s+|-$)?(?:(?P<key>[A-Za-z0-9_.\-/]+):(?:\s+(?P<value>.*))?|(?P<scalar>.+))?$")


def _strip_comment(line: str) -> str:
    """``key: value # comment`` -> ``key: value`` (a # inside quotes stays)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


class ConfigLoader(yaml.SafeLoader):
    """YAML as MetalLB's Go parser reads it: ``64500:100`` (a community) is text, not YAML 1.1's
    base-60 number 3870100."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, re.compile(r"(?!.*:)" + rx.pattern, rx.flags) if tag.endswith((":int", ":float")) else rx)
            for tag, rx in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _scalar(text: str) -> Any:
    try:
        return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError:
        return text


@dataclass
class _Frame:
    shape: tuple  # ("obj", name) | ("map",) | ("list", item)
    value: Any  # dict or list


def _fits(shape: tuple, key: str) -> bool:
    return shape[0] == "list" and shape[1][0] == "obj" and key in _SCHEMA[shape[1][1]]


def reindent_legacy(text: str) -> dict:
    """Rebuild a legacy config whose lines all start at column 0, by MetalLB's schema: a key goes to
    the innermost open object that has it as a field not yet set; a ``-`` opens an item of the
    innermost open list whose items can hold what follows."""
    root: dict = {}
    stack = [_Frame(("obj", "top"), root)]
    lines = [_strip_comment(raw).strip() for raw in text.splitlines()]
    lines = [x for x in lines if x]
    for idx, line in enumerate(lines):
        m = _LINE.match(line)
        if m is None:
            continue
        nxt = lines[idx + 1] if idx + 1 < len(lines) else ""
        key = m.group("key")
        if m.group("dash") is not None:
            lists = [i for i in range(len(stack) - 1, -1, -1) if stack[i].shape[0] == "list"]
            if not lists:
                continue
            if key is not None:
                target = next((i for i in lists if _fits(stack[i].shape, key)), lists[0])
            elif m.group("scalar") is not None:
                target = next((i for i in lists if stack[i].shape[1] == _SCALAR), lists[0])
            else:  # a bare '-': an item whose keys follow on the next lines
                target = lists[0]
            del stack[target + 1:]
            lst = stack[-1]
            item_shape = lst.shape[1]
            if key is None and m.group("scalar") is not None:
                lst.value.append(_scalar(m.group("scalar")))
                continue
            item: dict = {}
            lst.value.append(item)
            stack.append(_Frame(item_shape if item_shape[0] == "obj" else ("map",), item))
            if key is not None:
                _put(stack, key, m.group("value"), nxt)
            continue
        if key is None:
            continue
        target = next((i for i in range(len(stack) - 1, -1, -1)
                       if stack[i].shape[0] == "obj" and key in _SCHEMA[stack[i].shape[1]]
                       and key not in stack[i].value), None)
        if target is None:  # a free-form map takes it, else it is an unknown key of the innermost object
            target = next((i for i in range(len(stack) - 1, -1, -1) if stack[i].shape[0] == "map"), None)
        if target is None:
            target = next(i for i in range(len(stack) - 1, -1, -1) if isinstance(stack[i].value, dict))
        del stack[target + 1:]
        _put(stack, key, m.group("value"), nxt)
    return root


def _put(stack: list[_Frame], key: str, value: Optional[str], nxt: str) -> None:
    frame = stack[-1]
    shape = _SCHEMA[frame.shape[1]].get(key) if frame.shape[0] == "obj" else _SCALAR
    if value is not None and value.strip():
        frame.value[key] = _scalar(value)
        return
    if shape is None:
        shape = ("list", _SCALAR) if nxt.startswith("-") else ("map",)
    if shape[0] == "list":
        frame.value[key] = []
        stack.append(_Frame(shape, frame.value[key]))
    elif shape[0] in ("map", "obj"):
        frame.value[key] = {}
        stack.append(_Frame(shape, frame.value[key]))
    else:
        frame.value[key] = None


def _all_at_column_zero(text: str) -> bool:
    lines = [x for x in text.splitlines() if x.strip() and not x.lstrip().startswith("#")]
    return bool(lines) and not any(x[0] in " \t" for x in lines)


@dataclass
class LegacyProblem:
    path: str  # inside data.config, e.g. address-pools[0].addresses[1]
    text: str


@dataclass
class LegacyConfig:
    pools: list[IPAddressPool] = field(default_factory=list)
    l2advertisements: list[L2Advertisement] = field(default_factory=list)
    warnings: list[LegacyProblem] = field(default_factory=list)
    errors: list[LegacyProblem] = field(default_factory=list)
    # (field path inside data.config, pool name, [(path, address text)]) for checks across documents
    pool_paths: list[tuple[str, str, list[tuple[str, str]]]] = field(default_factory=list)
    recovered: bool = False
    # BGP mode: the `protocol: bgp` pools (addresses announced over BGP, not by layer 2) and
    # the peers, advertisements, BFD profiles and communities (netemu.spec.metallb_bgp.LegacyBGP)
    bgp_pools: list[IPAddressPool] = field(default_factory=list)
    bgp: Any = None


def _bool(v: Any) -> Optional[bool]:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return None


def parse_legacy_config(text: str) -> LegacyConfig:
    """The ``config`` key of MetalLB's legacy ConfigMap -> IPAddressPools and L2Advertisements."""
    out = LegacyConfig()
    data: Any = None
    parse_error: Optional[str] = None
    try:
        from netemu.spec.documents import safe_load_limited

        data = safe_load_limited(text, ConfigLoader)  # a ConfigMap's value: user input, no alias bombs
    except yaml.YAMLError as e:
        parse_error = str(e).replace("\n", " ")
    if _all_at_column_zero(text):
        rebuilt = reindent_legacy(text)
        if rebuilt != data:
            out.recovered = True
            out.warnings.append(LegacyProblem("", "had lost its indentation; netemu re-indented it by MetalLB's "
                                                  "config schema (address-pools: name, protocol, addresses, ...)"))
            data, parse_error = rebuilt, None
    if parse_error is not None:
        out.errors.append(LegacyProblem("", f"could not parse config: {parse_error}"))
        return out
    if data is None:
        data = {}
    if not isinstance(data, dict):
        out.errors.append(LegacyProblem("", "must be a mapping with address-pools (MetalLB's configuration)"))
        return out
    for key in data:
        if key not in _SCHEMA["top"]:
            out.warnings.append(LegacyProblem(str(key), "unknown field, ignored"))
    pools = data.get("address-pools")
    bgp_pools: list[tuple[str, dict, IPAddressPool]] = []
    if pools is None:
        out.warnings.append(LegacyProblem("address-pools", "no address pools: no LoadBalancer IPs to give"))
    elif not isinstance(pools, list):
        out.errors.append(LegacyProblem("address-pools", "must be a list of pools"))
        return out
    names: dict[str, int] = {}
    for i, raw in enumerate(pools or []):
        _legacy_pool(raw, i, names, out, bgp_pools)
    from netemu.spec.metallb_bgp import legacy_bgp

    out.bgp, problems = legacy_bgp(data, bgp_pools)
    out.errors += [LegacyProblem(path, text) for path, text in problems]
    return out


def _legacy_pool(raw: Any, i: int, names: dict[str, int], out: LegacyConfig,
                 bgp_pools: list[tuple[str, dict, IPAddressPool]]) -> None:
    base = f"address-pools[{i}]"
    if not isinstance(raw, dict):
        out.errors.append(LegacyProblem(base, "must be a mapping (name, protocol, addresses)"))
        return
    for key in raw:
        if key not in _SCHEMA["pool"]:
            out.warnings.append(LegacyProblem(f"{base}.{key}", "unknown field, ignored"))
    name = raw.get("name")
    if not name or not isinstance(name, str):
        out.errors.append(LegacyProblem(f"{base}.name", "missing pool name"))
        return
    if name in names:
        out.errors.append(LegacyProblem(f"{base}.name", f"duplicate definition of pool {name!r} "
                                                         f"(also address-pools[{names[name]}])"))
        return
    names[name] = i
    protocol = raw.get("protocol")
    addr_key = "addresses"
    addresses = raw.get("addresses")
    if "address" in raw:
        if addresses is None:
            addr_key, addresses = "address", raw.get("address")
            out.warnings.append(LegacyProblem(f"{base}.address", "MetalLB's field is 'addresses'; netemu read "
                                                                  "'address' as 'addresses'"))
        else:
            out.warnings.append(LegacyProblem(f"{base}.address", "ignored: 'addresses' is also given"))
    if isinstance(addresses, str):
        addresses = [addresses]
    if not addresses or not isinstance(addresses, list):
        out.errors.append(LegacyProblem(f"{base}.addresses", "pool has no prefixes defined"))
        return
    entries = []
    bad = False
    for j, a in enumerate(addresses):
        path = f"{base}.{addr_key}[{j}]"
        try:
            parse_addresses(str(a))
        except AddressError as e:
            out.errors.append(LegacyProblem(path, f"{e} in pool {name!r}"))
            bad = True
        entries.append((path, str(a)))
    auto = raw.get("auto-assign", True)
    buggy = raw.get("avoid-buggy-ips", False)
    if _bool(auto) is None:
        out.errors.append(LegacyProblem(f"{base}.auto-assign", f"must be true or false, got {auto!r}"))
        bad = True
    if _bool(buggy) is None:
        out.errors.append(LegacyProblem(f"{base}.avoid-buggy-ips", f"must be true or false, got {buggy!r}"))
        bad = True
    if not protocol:
        out.errors.append(LegacyProblem(f"{base}.protocol", "address pool is missing the protocol field "
                                                            "(layer2 or bgp)"))
        return
    if protocol not in ("layer2", "bgp"):
        out.errors.append(LegacyProblem(f"{base}.protocol", f"unknown protocol {protocol!r} (layer2 or bgp)"))
        return
    if protocol == "layer2" and raw.get("bgp-advertisements"):
        out.errors.append(LegacyProblem(f"{base}.bgp-advertisements", "cannot have bgp-advertisements "
                                                                      "configuration element in a layer2 address pool"))
        return
    if bad:
        return
    out.pool_paths.append((base, name, entries))
    meta = dict(name=name, namespace=NAMESPACE)
    pool = IPAddressPool(metadata=ObjectMeta(**meta), spec=IPAddressPoolSpec(
        addresses=[str(a).strip() for a in addresses], auto_assign=_bool(auto), avoid_buggy_ips=_bool(buggy)))
    if protocol == "bgp":  # no L2Advertisement: announced by the BGPAdvertisements made from it
        out.bgp_pools.append(pool)
        bgp_pools.append((base, raw, pool))
        return
    out.pools.append(pool)
    out.l2advertisements.append(L2Advertisement(metadata=ObjectMeta(**meta),
                                                spec=L2AdvertisementSpec(ip_address_pools=[name])))


class MetalLBConfigError(ValueError):
    def __init__(self, errors: list[str], warnings: list[str]):
        self.errors, self.warnings = errors, warnings
        super().__init__("; ".join(errors))


def _legacy_text(path: str, text: str) -> str:
    return f"data.config: {path}: {text}" if path else f"data.config: {text}"


def legacy_from_configmap(cm: ConfigMap) -> tuple[LegacyConfig, list[str]]:
    """MetalLB's legacy ConfigMap -> (what it holds, warnings). Raises MetalLBConfigError when the
    configuration is invalid (MetalLB would refuse it and keep running without it)."""
    parsed = parse_legacy_config((cm.data or {}).get(LEGACY_KEY, ""))
    warnings = [_legacy_text(w.path, w.text) for w in parsed.warnings]
    if parsed.errors:
        raise MetalLBConfigError([_legacy_text(e.path, e.text) for e in parsed.errors], warnings)
    return parsed, warnings


def pools_from_configmap(cm: ConfigMap) -> tuple[list[IPAddressPool], list[L2Advertisement], list[str]]:
    """MetalLB's legacy ConfigMap -> (layer 2 pools, L2 advertisements, warnings); see
    :func:`legacy_from_configmap`."""
    parsed, warnings = legacy_from_configmap(cm)
    return parsed.pools, parsed.l2advertisements, warnings


def check_legacy_configmap(cm: ConfigMap, loc: Location, report: Report) -> LegacyConfig:
    """Validation of the legacy ConfigMap, in the loader's terms (`data.config.address-pools[0]...`)."""
    parsed = parse_legacy_config((cm.data or {}).get(LEGACY_KEY, ""))
    for w in parsed.warnings:
        report.warn(loc, join_path("data.config", w.path), w.text)
    for e in parsed.errors:
        report.error(loc, join_path("data.config", e.path), e.text)
    return parsed


# --------------------------------------------------------------------------- one entry point
def validate_metallb(obj: K8sModel, loc: Location, report: Report) -> Optional[list[PoolSource]]:
    """Checks for one object (call from validate_object); returns its pools for
    :func:`check_pools_across`, or None when the object is not MetalLB's."""
    if isinstance(obj, IPAddressPool):
        check_pool(obj, loc, report)
        return [PoolSource(obj.metadata.name or "?", loc, "",
                           [(f"spec.addresses[{i}]", a) for i, a in enumerate(obj.spec.addresses or [])])]
    if isinstance(obj, L2Advertisement):
        check_l2_advertisement(obj, loc, report)
        return []
    if isinstance(obj, (BGPPeer, BGPAdvertisement, BFDProfile, Community)):
        from netemu.spec.metallb_bgp import OBJECT_CHECKS

        _namespace_note(obj, loc, report)
        for path, text in OBJECT_CHECKS[type(obj)](obj):
            report.error(loc, path, text)
        return []
    if is_legacy_configmap(obj):
        parsed = check_legacy_configmap(obj, loc, report)
        return [PoolSource(name, loc, join_path("data.config", path),
                           [(join_path("data.config", p), t) for p, t in entries])
                for path, name, entries in parsed.pool_paths]
    return None


__all__ = [
    "register", "API_VERSION", "NAMESPACE", "KINDS", "API_VERSIONS", "NAMESPACED", "IPAddressPool", "IPAddressPoolSpec",
    "ServiceAllocation", "L2Advertisement", "L2AdvertisementSpec", "PreferredNodeSelector", "parse_addresses",
    "pool_networks", "AddressError", "is_legacy_configmap", "parse_legacy_config", "pools_from_configmap",
    "check_legacy_configmap", "check_pool", "check_l2_advertisement", "check_pools_across", "validate_metallb",
    "PoolSource", "MetalLBConfigError", "reindent_legacy", "legacy_from_configmap", "BGPPeer", "BGPPeerSpec",
    "BGPAdvertisement", "BGPAdvertisementSpec", "BFDProfile", "BFDProfileSpec", "Community", "CommunitySpec",
    "CommunityAlias", "SecretReference", "BGP_KINDS", "API_VERSION_V1BETA2",
]

register()  # loaded with netemu.spec.models (its last lines), whichever of the two came first
