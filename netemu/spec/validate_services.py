"""Semantic checks of Services and EndpointSlices, one at a time; clashes between Services (node
ports, cluster IPs) are checked in :mod:`netemu.spec.validate`."""
from __future__ import annotations

import ipaddress
from typing import Optional

from netemu.spec.errors import Location, Report, join_path
from netemu.spec.families import IPV4, IPV6, ipv6_only, lab_families
from netemu.spec.models import EndpointSlice, LabSpec, Service, ServiceSpec
from netemu.spec.rules import (
    check_dns_label, check_dns_subdomain, check_port, check_port_name, parse_cidr, parse_ip, parse_port_range,
)
from netemu.spec.validate_pods import check_labels

MAX_AFFINITY_TIMEOUT = 86400  # one day, as kube-apiserver
EXTERNAL_TYPES = ("NodePort", "LoadBalancer")
SINGLE, PREFER_DUAL, REQUIRE_DUAL = "SingleStack", "PreferDualStack", "RequireDualStack"
IP_FAMILY_POLICIES = (PREFER_DUAL, REQUIRE_DUAL, SINGLE)  # sorted, as the API server lists them


def check_service(svc: Service, lab: LabSpec, loc: Location, report: Report) -> None:
    spec = svc.spec
    stype = spec.type or "ClusterIP"
    headless = spec.cluster_ip == "None"
    check_labels(spec.selector, "spec.selector", loc, report)
    _check_ports(svc, stype, headless, lab, loc, report)
    _check_cluster_ip(svc, stype, headless, lab, loc, report)
    _check_ip_families(svc, stype, lab, loc, report)
    if stype == "ExternalName":
        if not spec.external_name:
            report.error(loc, "spec.externalName", "required for type ExternalName")
        elif (why := check_dns_subdomain(spec.external_name.rstrip("."))) is not None:
            report.error(loc, "spec.externalName", why)
    _check_affinity(svc, loc, report)
    if spec.external_traffic_policy is not None and stype not in EXTERNAL_TYPES:
        report.error(loc, "spec.externalTrafficPolicy", f"may only be set for NodePort or LoadBalancer, not {stype}")
    if spec.load_balancer_source_ranges:
        if stype != "LoadBalancer":
            report.error(loc, "spec.loadBalancerSourceRanges", f"may only be set for LoadBalancer, not {stype}")
        for i, cidr in enumerate(spec.load_balancer_source_ranges):
            try:
                ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                report.lab_refuses(loc, f"spec.loadBalancerSourceRanges[{i}]",
                                   f"must be a CIDR like 10.0.0.0/8, got {cidr!r}")
    if spec.load_balancer_ip and (why := _address_error(spec.load_balancer_ip, lab)) is not None:
        report.lab_refuses(loc, "spec.loadBalancerIP", why)
    for i, ip in enumerate(spec.external_ips or []):
        if (why := _address_error(ip, lab)) is not None:
            report.lab_refuses(loc, f"spec.externalIPs[{i}]", why)


def _address_error(text: str, lab: LabSpec) -> Optional[str]:
    """An address a Service names (loadBalancerIP, externalIPs): IPv4, or IPv6 in a dual-stack lab."""
    ip = _ip(text)
    if ip is not None and ip.version == 6 and IPV6 in lab_families(lab) and str(text).strip() == str(text):
        return None
    return parse_ip(text)[1]


def _check_ports(svc: Service, stype: str, headless: bool, lab: LabSpec, loc: Location, report: Report) -> None:
    ports = svc.spec.ports or []
    if not ports and stype != "ExternalName" and not headless:
        report.error(loc, "spec.ports", "required: a Service needs at least one port (only ExternalName and "
                                        "headless Services, clusterIP: None, may have none)")
    node_port_range, _ = parse_port_range(lab.node_port_range)
    names: set[str] = set()
    seen: set[tuple[int, str]] = set()
    for i, p in enumerate(ports):
        path = f"spec.ports[{i}]"
        if (why := check_port(p.port)) is not None:
            report.error(loc, join_path(path, "port"), why)
        if len(ports) > 1 and not p.name:
            report.error(loc, join_path(path, "name"), "required when a Service has more than one port")
        if p.name:
            if (why := check_dns_label(p.name)) is not None:
                report.error(loc, join_path(path, "name"), why)
            elif p.name in names:
                report.error(loc, join_path(path, "name"), f"duplicate port name {p.name!r}")
            names.add(p.name)
        key = (p.port, p.protocol or "TCP")
        if key in seen:
            report.error(loc, path, f"duplicate port {p.port}/{key[1]}")
        seen.add(key)
        if isinstance(p.target_port, int):
            # targetPort defaults to port: a bad port is reported once, as the port
            if p.target_port != p.port and (why := check_port(p.target_port)) is not None:
                report.error(loc, join_path(path, "targetPort"), why)
        elif p.target_port is not None and (why := check_port_name(p.target_port)) is not None:
            report.error(loc, join_path(path, "targetPort"), f"a port name {why}")
        if p.node_port is not None:
            if stype not in EXTERNAL_TYPES:
                report.error(loc, join_path(path, "nodePort"),
                             f"may only be set for type NodePort or LoadBalancer, not {stype}")
            elif node_port_range and not node_port_range[0] <= p.node_port <= node_port_range[1]:
                report.lab_refuses(loc, join_path(path, "nodePort"),
                                   f"{p.node_port} is outside the lab's nodePortRange {lab.node_port_range}")


def _check_cluster_ip(svc: Service, stype: str, headless: bool, lab: LabSpec, loc: Location,
                      report: Report) -> None:
    ip_text = svc.spec.cluster_ip
    if headless and stype in EXTERNAL_TYPES:
        report.error(loc, "spec.clusterIP", f"may not be None (headless) for type {stype}")
    if not ip_text or headless:
        return
    if stype == "ExternalName":
        report.error(loc, "spec.clusterIP", "must be empty for type ExternalName")
        return
    ip = _ip(ip_text)
    if ip is None:
        report.lab_refuses(loc, "spec.clusterIP", f'must be an IP address, got {ip_text!r} (or "None" for a '
                                                  f"headless Service, or empty)")
        return
    _check_service_range(ip, "spec.clusterIP", lab, loc, report)


def _check_service_range(ip, path: str, lab: LabSpec, loc: Location, report: Report) -> None:
    """A cluster IP of the lab's service range of its family (a family the lab lacks is said elsewhere)."""
    if ip.version == 6 and ipv6_only(lab):
        net6, dns = _net(lab.service_cidr), _ip(lab.cluster_dns)
        if net6 is None or net6.version != 6:
            return  # the lab's own error says why
        if ip not in net6 or ip == net6.network_address:
            report.lab_refuses(loc, path, f"{ip} is not in the lab's serviceCIDR {lab.service_cidr}")
        elif ip == dns:
            report.lab_refuses(loc, path, f"{ip} is the cluster DNS address (clusterDNS)")
        return
    if ip.version == 4 and ipv6_only(lab):
        return  # IPv4 is not configured on this lab (see _check_ip_families)
    if ip.version == 4:
        net, _ = parse_cidr(lab.service_cidr)
        if net is None:
            return  # the lab's own error says why
        if ip not in net or ip in (net.network_address, net.broadcast_address):
            report.lab_refuses(loc, path, f"{ip} is not in the lab's serviceCIDR {lab.service_cidr}")
        elif str(ip) == lab.cluster_dns:
            report.lab_refuses(loc, path, f"{ip} is the cluster DNS address (clusterDNS)")
        return
    net6 = _net(lab.service_cidr6)
    if net6 is None or net6.version != 6:
        return  # not configured on this lab (see _check_ip_families), or the lab's own error
    if ip not in net6 or ip == net6.network_address:
        report.lab_refuses(loc, path, f"{ip} is not in the lab's IPv6 serviceCIDR {lab.service_cidr6}")


def _check_ip_families(svc: Service, stype: str, lab: LabSpec, loc: Location, report: Report) -> None:
    """ipFamilies, ipFamilyPolicy and clusterIPs as the API server validates them, and what the lab's
    families allow. What depends on the stored object (an update's policy change, an ExternalName's
    fields carried over from the old type) is admission's (netemu.control.services)."""
    spec = svc.spec
    if stype == "ExternalName":
        return
    for path, text in cluster_ips_errors(spec):
        report.error(loc, path, text)
    families = lab_families(lab)
    ips = _effective_cluster_ips(spec)
    for i, text in enumerate(ips):
        if text == "None":
            break
        ip = _ip(text)
        if ip is None:
            continue
        fam = IPV6 if ip.version == 6 else IPV4
        if i >= len(spec.ip_families or []) and fam not in families:
            report.lab_refuses(loc, f"spec.clusterIPs[{i}]", f"Invalid value: {_go(ips)}: {fam} is not configured "
                                                              "on this cluster")
        elif i > 0 and (spec.cluster_ips or [])[i:i + 1] == [text]:
            _check_service_range(ip, f"spec.clusterIPs[{i}]", lab, loc, report)
    if spec.cluster_ip == "None" and not spec.selector:
        return  # headless without a selector: any families, whatever the lab has
    if spec.ip_family_policy == REQUIRE_DUAL and len(families) < 2:
        report.lab_refuses(loc, "spec.ipFamilyPolicy", f'Invalid value: "{REQUIRE_DUAL}": this cluster is not '
                                                       "configured for dual-stack services")
    for i, fam in enumerate(spec.ip_families or []):
        if fam in (IPV4, IPV6) and fam not in families:
            report.lab_refuses(loc, f"spec.ipFamilies[{i}]", f'Invalid value: "{fam}": not configured on this '
                                                             "cluster")


# --------------------------------------------------------------------------- IP families (kube-apiserver)
def cluster_ips_errors(spec: ServiceSpec) -> list[tuple[str, str]]:
    """ValidateServiceClusterIPsRelatedFields: clusterIP and clusterIPs in step, families and policy
    of the known values, at most one cluster IP per family, each of its ipFamilies entry's family.
    (path, text) pairs in the API server's words."""
    out: list[tuple[str, str]] = []
    if (spec.type or "ClusterIP") == "ExternalName":
        return out
    cip = spec.cluster_ip or ""
    ips = list(spec.cluster_ips or [])
    if cip:
        if ips and ips[0] != cip:
            out.append(("spec.clusterIPs", f"Invalid value: {_go(ips)}: first value must match `clusterIP`"))
    elif ips:
        out.append(("spec.clusterIPs", f"Invalid value: {_go(ips)}: must be empty when `clusterIP` is not "
                                       "specified"))
    seen: set[str] = set()
    for i, fam in enumerate(spec.ip_families or []):
        if fam not in (IPV4, IPV6):
            out.append((f"spec.ipFamilies[{i}]", f'Unsupported value: "{fam}": supported values: "IPv4", "IPv6"'))
        if fam in seen:
            out.append((f"spec.ipFamilies[{i}]", f'Duplicate value: "{fam}"'))
        seen.add(fam)
    policy = spec.ip_family_policy
    if policy is not None and policy not in IP_FAMILY_POLICIES:
        out.append(("spec.ipFamilyPolicy", f'Unsupported value: "{policy}": supported values: '
                                           + ", ".join(f'"{p}"' for p in IP_FAMILY_POLICIES)))
    bad = False
    for i, text in enumerate(ips):
        if i == 0 and text == "None":
            if len(ips) > 1:
                bad = True
                out.append(("spec.clusterIPs", f"Invalid value: {_go(ips)}: 'None' must be the first and only value"))
            continue
        if _ip(text) is None:
            bad = True
            out.append((f"spec.clusterIPs[{i}]", f'Invalid value: "{text}": must be a valid IP address, (e.g. '
                                                 "10.9.8.7 or 2001:db8::ffff)"))
    if len(ips) > 2:
        out.append(("spec.clusterIPs", f"Invalid value: {_go(ips)}: may only hold up to 2 values"))
    if bad:
        return out  # the checks below would only echo a bad address
    if len(ips) > 1 and len({_ip(t).version for t in ips}) < 2:
        out.append(("spec.clusterIPs", f"Invalid value: {_go(ips)}: may specify no more than one IP for each IP "
                                       "family"))
    fams = spec.ip_families or []
    if ips != ["None"]:
        for i, text in enumerate(ips[:len(fams)]):
            v6 = _ip(text).version == 6
            if fams[i] == IPV4 and v6 or fams[i] == IPV6 and not v6:
                out.append((f"spec.clusterIPs[{i}]", f'Invalid value: "{text}": expected an {fams[i]} value as '
                                                     f"indicated by `ipFamilies[{i}]`"))
    return out


def prepare_cluster_ips(spec: ServiceSpec, old: Optional[ServiceSpec]) -> None:
    """What the API server does to clusterIP and clusterIPs before allocating: an update keeps the
    allocated values the client left out (patchAllocatedValues), and the two fields are kept in step
    (NormalizeClusterIPs: an old client writes only clusterIP)."""
    if old is not None and (old.type or "ClusterIP") != "ExternalName" and (spec.type or "ClusterIP") != "ExternalName":
        if not spec.cluster_ip:
            spec.cluster_ip = old.cluster_ip
        if not spec.cluster_ips and old.cluster_ips:
            spec.cluster_ips = list(old.cluster_ips)
    if old is None:
        if spec.cluster_ip and not spec.cluster_ips:
            spec.cluster_ips = [spec.cluster_ip]
        return
    if old.cluster_ips and not spec.cluster_ips and (old.cluster_ip or "") == (spec.cluster_ip or ""):
        spec.cluster_ips = list(old.cluster_ips)
    if (old.cluster_ip or "") != (spec.cluster_ip or ""):
        same = list(old.cluster_ips or []) == list(spec.cluster_ips or [])
        if old.cluster_ip and not spec.cluster_ip:
            if same:
                spec.cluster_ips = None
        elif same:
            spec.cluster_ips = [spec.cluster_ip] if spec.cluster_ip else None


def init_ip_families(spec: ServiceSpec, old: Optional[ServiceSpec], families: list[str]) -> list[tuple[str, str]]:
    """kube-apiserver's initIPFamilyFields: default ipFamilyPolicy and ipFamilies for the cluster's
    families (``families``, primary first) and refuse what the cluster cannot give. Changes ``spec``;
    returns the errors as (path, text). Run after prepare_cluster_ips."""
    if (spec.type or "ClusterIP") == "ExternalName":
        return []
    if _matching_prefer_dual_stack(spec, old):
        return []  # a PreferDualStack Service is only up- or downgraded when asked
    headless_selectorless = spec.cluster_ip == "None" and not spec.selector
    if spec.ip_family_policy is None:
        if old is not None and old.ip_family_policy is not None:
            spec.ip_family_policy = old.ip_family_policy  # an update keeps the policy it had
        elif headless_selectorless:
            spec.ip_family_policy = REQUIRE_DUAL
        else:
            spec.ip_family_policy = SINGLE
    errors = cluster_ips_errors(spec)
    if errors:
        return errors
    policy = spec.ip_family_policy
    if old is not None:
        if policy == SINGLE:
            # SingleStack with the fields as they were: the secondary IP and family are given up
            if list(old.cluster_ips or []) == list(spec.cluster_ips or []) and len(spec.cluster_ips or []) > 1:
                spec.cluster_ips = spec.cluster_ips[:1]
            if list(old.ip_families or []) == list(spec.ip_families or []) and len(spec.ip_families or []) > 1:
                spec.ip_families = spec.ip_families[:1]
        else:
            if spec.cluster_ips and len(spec.cluster_ips) < len(old.cluster_ips or []):
                errors.append(("spec.ipFamilyPolicy", f'Invalid value: "{policy}": must be \'SingleStack\' to release '
                                                      "the secondary cluster IP"))
            if spec.ip_families and len(spec.ip_families) < len(old.ip_families or []):
                errors.append(("spec.ipFamilyPolicy", f'Invalid value: "{policy}": must be \'SingleStack\' to release '
                                                      "the secondary IP family"))
    if policy == SINGLE:
        if len(spec.cluster_ips or []) == 2:
            errors.append(("spec.ipFamilyPolicy", f'Invalid value: "{policy}": must be \'RequireDualStack\' or '
                                                  "'PreferDualStack' when multiple cluster IPs are specified"))
        if len(spec.ip_families or []) == 2:
            errors.append(("spec.ipFamilyPolicy", f'Invalid value: "{policy}": must be \'RequireDualStack\' or '
                                                  "'PreferDualStack' when multiple IP families are specified"))
    fams = list(spec.ip_families or [])
    for i, text in enumerate(spec.cluster_ips or []):
        if text == "None":
            break
        fam = IPV6 if _ip(text).version == 6 else IPV4
        if i >= len(fams):
            if fam not in families:
                errors.append((f"spec.clusterIPs[{i}]", f"Invalid value: {_go(spec.cluster_ips)}: {fam} is not "
                                                        "configured on this cluster"))
            else:
                fams.append(fam)  # inferred from the address asked for
    spec.ip_families = fams or None
    if errors:
        return errors
    if headless_selectorless:
        # headless without a selector may have both families even on a single-stack cluster
        fams = fams or [families[0]]
        if len(fams) < 2 and policy != SINGLE:
            fams.append(IPV6 if fams[0] == IPV4 else IPV4)
        spec.ip_families = fams
        return []
    if policy == REQUIRE_DUAL and len(families) < 2:
        errors.append(("spec.ipFamilyPolicy", f'Invalid value: "{REQUIRE_DUAL}": this cluster is not configured '
                                              "for dual-stack services"))
    for i, fam in enumerate(fams):
        if fam not in families:
            errors.append((f"spec.ipFamilies[{i}]", f'Invalid value: "{fam}": not configured on this cluster'))
    if errors:
        return errors
    fams = fams or [families[0]]
    if policy != SINGLE and len(fams) == 1 and len(families) == 2:
        fams.append(IPV6 if fams[0] == IPV4 else IPV4)
    spec.ip_families = fams
    return []


def upgrade_downgrade_errors(spec: ServiceSpec, old: ServiceSpec) -> list[tuple[str, str]]:
    """ValidateServiceUpdate's dual-stack part: the primary family stays, and the secondary cluster IP
    and family go only with ipFamilyPolicy SingleStack. (The primary cluster IP itself may change here,
    as it always could in netemu; kube-apiserver refuses that too.)"""
    if "ExternalName" in ((spec.type or "ClusterIP"), (old.type or "ClusterIP")):
        return []
    out: list[tuple[str, str]] = []
    new_headless, old_headless = spec.cluster_ips == ["None"], old.cluster_ips == ["None"]
    new_ips, old_ips = list(spec.cluster_ips or []), list(old.cluster_ips or [])
    if not (new_headless and old_headless):
        if len(old_ips) == len(new_ips):
            for i in range(1, len(old_ips)):
                if old_ips[i] != new_ips[i]:
                    out.append((f"spec.clusterIPs[{i}]", f"Invalid value: {_go(new_ips)}: may not change once set"))
        elif len(old_ips) > len(new_ips):
            if not new_ips:
                out.append(("spec.clusterIPs[0]", f"Invalid value: {_go(new_ips)}: primary clusterIP can not be unset"))
            if len(new_ips) == 1 and spec.ip_family_policy != SINGLE:
                out.append(("spec.ipFamilyPolicy", f"Invalid value: {_policy(spec)}: must be set to 'SingleStack' "
                                                   "when releasing the secondary clusterIP"))
    if new_headless or old_headless:
        return out  # headless Services may change families
    new_f, old_f = list(spec.ip_families or []), list(old.ip_families or [])
    if len(old_f) == len(new_f):
        if old_f != new_f:
            out.append(("spec.ipFamilies[0]", f"Invalid value: {_go(new_f, 'core.IPFamily')}: may not change once set"))
    elif len(old_f) > len(new_f):
        if new_f and new_f[0] != old_f[0]:
            out.append(("spec.ipFamilies[0]", f"Invalid value: {_go(new_ips)}: may not change once set"))
        if len(new_f) == 1 and spec.ip_family_policy != SINGLE:
            out.append(("spec.ipFamilyPolicy", f"Invalid value: {_policy(spec)}: must be set to 'SingleStack' when "
                                               "releasing the secondary ipFamily"))
    elif old_f and new_f and new_f[0] != old_f[0]:
        out.append(("spec.ipFamilies[0]", f"Invalid value: {_go(new_ips)}: may not change once set"))
    return out


def _matching_prefer_dual_stack(spec: ServiceSpec, old: Optional[ServiceSpec]) -> bool:
    """isMatchingPreferDualStackClusterIPFields: an update of a PreferDualStack Service that leaves its
    cluster IPs and families as they are (so a lab's change of families never adds or drops an IP)."""
    if old is None or spec.ip_family_policy is None:
        return False
    if (old.type or "ClusterIP") != (spec.type or "ClusterIP") or spec.type == "ExternalName":
        return False
    if spec.ip_family_policy != PREFER_DUAL or old.ip_family_policy not in (None, PREFER_DUAL):
        return False
    return list(old.cluster_ips or []) == list(spec.cluster_ips or []) and \
        list(old.ip_families or []) == list(spec.ip_families or [])


def _effective_cluster_ips(spec: ServiceSpec) -> list[str]:
    return list(spec.cluster_ips or ([spec.cluster_ip] if spec.cluster_ip else []))


def _policy(spec: ServiceSpec) -> str:
    return f'"{spec.ip_family_policy}"' if spec.ip_family_policy is not None else "null"


def _go(values: list[str], kind: str = "string") -> str:
    """A list as Go's %#v prints it in the API server's messages: []string{"10.96.0.1", "fd00::1"}."""
    return f"[]{kind}{{" + ", ".join(f'"{v}"' for v in values) + "}"


def _ip(text: Optional[str]):
    try:
        return ipaddress.ip_address(str(text).strip()) if text else None
    except ValueError:
        return None


def _net(text: Optional[str]):
    try:
        return ipaddress.ip_network(str(text), strict=False) if text else None
    except ValueError:
        return None


def _check_affinity(svc: Service, loc: Location, report: Report) -> None:
    spec = svc.spec
    cfg = spec.session_affinity_config
    if spec.session_affinity == "ClientIP":
        timeout = cfg.client_ip.timeout_seconds if cfg and cfg.client_ip else None
        if timeout is not None and not 1 <= timeout <= MAX_AFFINITY_TIMEOUT:
            report.error(loc, "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                         f"must be between 1 and {MAX_AFFINITY_TIMEOUT}, got {timeout}")
    elif cfg is not None and cfg.client_ip is not None:
        report.error(loc, "spec.sessionAffinityConfig", "may only be set when sessionAffinity is ClientIP")


def check_endpoint_slice(es: EndpointSlice, loc: Location, report: Report) -> None:
    for i, ep in enumerate(es.endpoints):
        if not ep.addresses:
            report.error(loc, f"endpoints[{i}].addresses", "must have at least one address")
        if es.address_type == "IPv4":
            for j, address in enumerate(ep.addresses):
                if (why := parse_ip(address)[1]) is not None:
                    report.lab_refuses(loc, f"endpoints[{i}].addresses[{j}]", why)
        elif es.address_type == "IPv6":
            for j, address in enumerate(ep.addresses):
                ip = _ip(address)
                if ip is None or ip.version != 6 or str(address).strip() != str(address):
                    report.lab_refuses(loc, f"endpoints[{i}].addresses[{j}]",
                                       f"must be a valid IPv6 address, got {address!r}")
    for i, p in enumerate(es.ports or []):
        if p.port is not None and (why := check_port(p.port)) is not None:
            report.error(loc, f"ports[{i}].port", why)
