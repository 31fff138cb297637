"""`netemu bgp`: MetalLB's BGP sessions as FRR sees them, in every node's speaker and every lab router, and
the host's own bgpd when a router has ``upstream: true`` (kind host)."""
from __future__ import annotations

import json
import sys

from netemu.cli.client import CliError, Client, pick_lab


def rows(instances: dict) -> list[list[str]]:
    out = []
    order = {"host": 0, "router": 1}
    for name, inst in sorted(instances.items(), key=lambda kv: (order.get(kv[1].get("kind"), 2), kv[0])):
        summary = inst.get("summary")
        if summary is None:
            out.append([name, inst.get("kind", ""), "-", "-", "-", "not running", "-", "-", "-"])
            continue
        if "error" in summary:
            out.append([name, inst.get("kind", ""), "-", "-", "-", summary["error"][:40], "-", "-", "-"])
            continue
        fam = summary.get("ipv4Unicast") or {}
        peers = fam.get("peers") or {}
        if not peers:
            out.append([name, inst.get("kind", ""), str(fam.get("as", "")), "-", "-", "no peers", "-", "-", "-"])
        for addr, p in sorted(peers.items()):
            out.append([name, inst.get("kind", ""), str(fam.get("as", "")), addr, str(p.get("remoteAs", "")),
                        p.get("state", ""), p.get("peerUptime", ""), str(p.get("pfxRcd", p.get("prefixReceivedCount", 0))),
                        str(p.get("pfxSnt", 0))])
    return out


def cmd_bgp(args) -> int:
    lab = pick_lab(args.lab)
    res = Client(lab).call("bgp", **({"node": args.node} if args.node else {}))
    inst = res.get("instances") or {}
    if args.output == "json":
        json.dump(inst, sys.stdout, indent=2)
        print()
        return 0
    for w in res.get("warnings") or []:
        print(f"warning: {w}", file=sys.stderr)
    if not inst:
        raise CliError(f'no BGP speaker or router runs in lab "{lab}" (MetalLB BGP mode needs a BGPPeer; '
                       "routers come from the Lab document's spec.routers)")
    table = [["NAME", "KIND", "AS", "PEER", "PEER-AS", "STATE", "UPTIME", "PFX-RCVD", "PFX-SENT"]] + rows(inst)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0
