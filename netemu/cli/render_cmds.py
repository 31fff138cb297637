"""`render` (offline: what kube-proxy would write on a node) and `rules` (what a node has now)."""
from __future__ import annotations

import sys

from netemu.cli.client import CliError, Client, pick_lab


def cmd_render(args) -> int:
    """What kube-proxy would write for any cluster's objects: values the lab would refuse (a ClusterIP
    outside its serviceCIDR, a nodePort outside its range) are warned about and rendered as written."""
    from netemu.control.endpoints import slices_from_pods
    from netemu.spec.errors import SpecError
    from netemu.spec.load import load_files

    try:
        spec = load_files(args.filename, rendering=True)
    except SpecError as e:
        raise CliError(str(e)) from None
    for warning in spec.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    services = [o for o in spec.objects if o.kind == "Service"]
    slices = [o for o in spec.objects if o.kind == "EndpointSlice"]
    pods = [o for o in spec.objects if o.kind == "Pod"]
    _allocate_missing(spec.lab, services)
    if pods:
        slices += slices_from_pods(services, pods)
    from netemu.dataplane.proxy.view import KUBE_PROXY_TEST_OPTIONS

    options = {"nfacct": args.nfacct, **(KUBE_PROXY_TEST_OPTIONS if args.fake_proxier else {}),
               "localhost_nodeports": args.localhost_nodeports, "masquerade_all": args.masquerade_all,
               "node_port_addresses": _nodeport_addresses(args)}
    fams = service_families(services)
    for fam in fams:
        if len(fams) > 1:  # each family is its own kube-proxy, loaded by its own tool
            print(f"# {fam}: {_LOADERS[args.mode][fam]}")
        sys.stdout.write(_render_family(args, spec.lab, services, slices, options, fam, single=len(fams) == 1))
    return 0


# what loads each family's output (a header names it when both families are printed)
_LOADERS = {"iptables": {"IPv4": "iptables-restore --noflush", "IPv6": "ip6tables-restore --noflush"},
            "nftables": {"IPv4": "table ip kube-proxy", "IPv6": "table ip6 kube-proxy"},
            "ipvs": {"IPv4": "IPv4 virtual servers, ipsets, iptables",
                     "IPv6": "IPv6 virtual servers, ipsets, ip6tables"}}


def service_families(services: list) -> list[str]:
    """The IP families to render, IPv4 first: those of the Services' clusterIPs (a dual-stack Service
    has both); IPv4 when no Service has a cluster IP (kube-proxy's node-wide rules)."""
    from netemu.dataplane.proxy.addresses import IPV4, IPV6, family_of, parse_ip

    found = set()
    for s in services:
        for ip in (s.spec.cluster_ips or []) or [s.spec.cluster_ip or ""]:
            addr = parse_ip(ip)
            if addr is not None:
                found.add(family_of(addr))
    return [f for f in (IPV4, IPV6) if f in found] or [IPV4]


def _of_family(values, family: str) -> list[str]:
    """The values (addresses or CIDRs, each may be "a,b") of one family; kube-proxy's flags take both."""
    from netemu.dataplane.proxy.addresses import IPV4

    out = []
    for text in values or []:
        for v in text.split(","):
            v = v.strip()
            if v and (":" in v) == (family != IPV4):
                out.append(v)
    return out


def _render_family(args, lab, services, slices, options, family: str, *, single: bool) -> str:
    from netemu.dataplane.proxy.addresses import IPV4
    from netemu.dataplane.proxy.iptables.render import base_jump_rules, render
    from netemu.dataplane.proxy.view import build_view

    if single and family == IPV4:
        node_ips, cluster_cidr = args.node_ip or [], args.cluster_cidr   # as written, as before
    else:
        node_ips = _of_family(args.node_ip, family)
        cluster_cidr = next(iter(_of_family([args.cluster_cidr] if args.cluster_cidr else [], family)), None)
    view = build_view(services, slices, node_name=args.node_name, node_ips=node_ips,
                      cluster_cidr=cluster_cidr, ip_family=family, **options)
    if args.mode == "nftables":
        from netemu.dataplane.proxy.nftables.render import NftSettings
        from netemu.dataplane.proxy.nftables.render import render as nft_render

        cidrs = args.service_cidr or [c for c in (lab.spec.service_cidr, getattr(lab.spec, "service_cidr6", None)) if c]
        # the renderer keeps the CIDRs of the view's family
        rs = nft_render(view, NftSettings(service_cidrs=tuple(c.strip() for t in cidrs for c in t.split(","))))
        return rs.fast_text() if args.fast else rs.text()
    if args.mode == "ipvs":
        from netemu.dataplane.proxy.ipvs.render import IpvsSettings, render_text

        scheduler = getattr(args, "ipvs_scheduler", None) or lab.spec.ipvs_scheduler
        return render_text(view, IpvsSettings(scheduler=scheduler), jumps=args.jumps)
    out = ""
    if args.jumps:
        out = "".join(f"{rule}\n" for rule in base_jump_rules())
    return out + render(view).payload()


def _nodeport_addresses(args) -> tuple[str, ...]:
    """kube-proxy's --nodeport-addresses: CIDRs (or "primary"), comma separated, the flag repeatable."""
    return tuple(a.strip() for text in args.nodeport_addresses or [] for a in text.split(",") if a.strip())


def _allocate_missing(lab, services: list) -> None:
    """Services without a clusterIP get one (and the nodePorts they lack) as the API server gives them
    on create, deterministically for the file's lab and seed, around what the other Services hold;
    those others are rendered as written."""
    missing = [s for s in services if not s.spec.cluster_ip and s.spec.type != "ExternalName"]
    if not missing:
        return
    from netemu.control.cluster import AdmissionError, Cluster
    from netemu.spec.rules import parse_ip

    cluster = Cluster(lab)
    asked = {id(s) for s in missing}
    for s in services:  # taken, whatever the lab thinks of them (an unparseable IP takes nothing)
        if id(s) in asked or parse_ip(s.spec.cluster_ip or "")[0] is None:
            continue
        held = s.model_copy(deep=True)
        held.metadata.namespace = held.metadata.namespace or "default"
        if cluster.store.find("Service", held.metadata.namespace, held.metadata.name) is None:
            cluster.store.create(held)
    try:
        cluster.apply(missing)
    except AdmissionError as e:
        raise CliError(str(e)) from None
    for s in missing:
        print(f"# netemu: {s.metadata.namespace}/{s.metadata.name} had no clusterIP: allocated "
              f"{s.spec.cluster_ip}", file=sys.stderr)


def cmd_rules(args) -> int:
    client = Client(pick_lab(args.lab))
    sys.stdout.write(client.call("rules", name=args.node))
    return 0
