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
        # a session per row: IPv4's, then IPv6's (a dual-stack lab's IPv6 peers; one in both families shows
        # its IPv4 counts)
        fams = [summary.get(k) or {} for k in ("ipv4Unicast", "ipv6Unicast")]
        fam = fams[0] if fams[0] or not fams[1] else fams[1]
        seen: set = set()
        if not any(f.get("peers") for f in fams):
            out.append([name, inst.get("kind", ""), str(fam.get("as", "")), "-", "-", "no peers", "-", "-", "-"])
        for f in fams:
            for addr, p in sorted((f.get("peers") or {}).items()):
                if addr in seen:
                    continue
                seen.add(addr)
                out.append([name, inst.get("kind", ""), str(f.get("as", "")), addr, str(p.get("remoteAs", "")),
                            p.get("state", ""), p.get("peerUptime", ""),
                            str(p.get("pfxRcd", p.get("prefixReceivedCount", 0))), str(p.get("pfxSnt", 0))])
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
