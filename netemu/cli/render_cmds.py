"""`render` (offline: what kube-proxy would write on a node) and `rules` (what a node has now)."""
from __future__ import annotations

import sys

from netemu.cli.client import CliError, Client, pick_lab


def cmd_render(args) -> int:
    from netemu.control.endpoints import slices_from_pods
    from netemu.spec.errors import SpecError
    from netemu.spec.load import load_files

    try:
        spec = load_files(args.filename)
    except SpecError as e:
        raise CliError(str(e)) from None
    services = [o for o in spec.objects if o.kind == "Service"]
    slices = [o for o in spec.objects if o.kind == "EndpointSlice"]
    pods = [o for o in spec.objects if o.kind == "Pod"]
    # Services without a clusterIP (or nodePort) get one as the API server would give it,
    # deterministically for the file's lab and seed
    missing = [s for s in services if not s.spec.cluster_ip and s.spec.type != "ExternalName"]
    if missing:
        from netemu.control.cluster import AdmissionError, Cluster

        cluster = Cluster(spec.lab)
        try:
            cluster.apply(services)
        except AdmissionError as e:
            raise CliError(str(e)) from None
        for s in missing:
            print(f"# netemu: {s.metadata.namespace}/{s.metadata.name} had no clusterIP: allocated "
                  f"{s.spec.cluster_ip}", file=sys.stderr)
    if pods:
        slices += slices_from_pods(services, pods)
    from netemu.dataplane.proxy.iptables import base_jump_rules, render
    from netemu.dataplane.proxy.view import build_view

    view = build_view(services, slices, node_name=args.node_name, node_ips=args.node_ip or [],
                      cluster_cidr=args.cluster_cidr, localhost_nodeports=args.localhost_nodeports,
                      nfacct=args.nfacct, masquerade_all=args.masquerade_all)
    if args.mode == "nftables":
        from netemu.dataplane.proxy.nftables import NftSettings
        from netemu.dataplane.proxy.nftables import render as nft_render

        rs = nft_render(view, NftSettings(service_cidrs=tuple(args.service_cidr or [spec.lab.spec.service_cidr])))
        sys.stdout.write(rs.fast_text() if args.fast else rs.text())
        return 0
    if args.mode == "ipvs":
        from netemu.dataplane.proxy.ipvs import IpvsSettings, render_text

        scheduler = getattr(args, "ipvs_scheduler", None) or spec.lab.spec.ipvs_scheduler
        sys.stdout.write(render_text(view, IpvsSettings(scheduler=scheduler), jumps=args.jumps))
        return 0
    if args.mode != "iptables":
        raise CliError(f"render {args.mode}: not implemented yet (iptables and nftables work)")
    if args.jumps:
        for rule in base_jump_rules():
            print(rule)
    sys.stdout.write(render(view).payload())
    return 0


def cmd_rules(args) -> int:
    client = Client(pick_lab(args.lab))
    sys.stdout.write(client.call("rules", name=args.node))
    return 0
