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
    from netemu.dataplane.proxy.iptables.render import base_jump_rules, render
    from netemu.dataplane.proxy.view import KUBE_PROXY_TEST_OPTIONS, build_view

    options = {"nfacct": args.nfacct, **(KUBE_PROXY_TEST_OPTIONS if args.fake_proxier else {}),
               "localhost_nodeports": args.localhost_nodeports, "masquerade_all": args.masquerade_all,
               "node_port_addresses": _nodeport_addresses(args)}
    view = build_view(services, slices, node_name=args.node_name, node_ips=args.node_ip or [],
                      cluster_cidr=args.cluster_cidr, **options)
    if args.mode == "nftables":
        from netemu.dataplane.proxy.nftables.render import NftSettings
        from netemu.dataplane.proxy.nftables.render import render as nft_render

        rs = nft_render(view, NftSettings(service_cidrs=tuple(args.service_cidr or [spec.lab.spec.service_cidr])))
        sys.stdout.write(rs.fast_text() if args.fast else rs.text())
        return 0
    if args.mode == "ipvs":
        from netemu.dataplane.proxy.ipvs.render import IpvsSettings, render_text

        scheduler = getattr(args, "ipvs_scheduler", None) or spec.lab.spec.ipvs_scheduler
        sys.stdout.write(render_text(view, IpvsSettings(scheduler=scheduler), jumps=args.jumps))
        return 0
    if args.jumps:
        for rule in base_jump_rules():
            print(rule)
    sys.stdout.write(render(view).payload())
    return 0


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
