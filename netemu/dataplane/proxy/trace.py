"""`netemu trace` for every proxy mode, run by the control process (its `trace` op): which rules a new
connection hits on a node, and the node's conntrack entries for connections to the same address.

The mode picks the tracer:
- iptables: the node's live `iptables-save`, followed by iptables/trace.py (kube-proxy's tracePacket
  model): nat KUBE-SERVICES, then, with the destination rewritten, the filter chains;
- nftables: the `kube-proxy` table kube-proxy writes for the node's current view (the lab loads an
  equivalent form of it), rendered once and followed by nftables/trace.py (kube-proxy's nftablesTracer);
- ipvs: no rule walk to show, only the conntrack entries (which real server the kernel picked).

In a dual-stack lab each destination is traced through the rules of its own family (the node's
ip6tables-save, or the `ip6 kube-proxy` table, for an IPv6 address).

Every mode answers in one shape (per destination: the entry, the matched rules by depth, the chains,
the DNAT targets, the verdicts, masquerading, conntrack), which the CLI prints.
"""
from __future__ import annotations

from netemu.dataplane import capture
from netemu.dataplane.proxy.addresses import IPV4, IPV6

VERDICTS = ("ACCEPT", "DROP", "REJECT")


class TraceError(RuntimeError):
    """Why a node cannot be traced now, for the user."""


def trace(proxy, node: str, mode: str, src: str, dests: list[dict]) -> dict:
    """Trace new connections from `src` to each destination ({via, ip, port, proto}) on `node` of a
    KubeProxy in proxy mode `mode`; then each destination's conntrack entries on the node."""
    n = proxy.nodes[node]
    netns = n.netns
    try:
        local = capture.local_addresses(netns)
    except capture.CaptureError as e:
        raise TraceError(str(e)) from None
    if mode == "iptables":
        saved: dict[str, object] = {}
        results = []
        for d in dests:
            fam = _family(d["ip"])
            if fam not in saved:
                if n.proxier(fam) is None:
                    raise TraceError(f"kube-proxy on {node} has no {fam} rules in this lab")
                try:
                    text = proxy.rules(node, fam) if len(n.proxiers) > 1 else proxy.rules(node)
                    saved[fam] = capture.SavedRuleset.parse(text)
                except capture.CaptureError as e:
                    raise TraceError(str(e)) from None
            results.append(iptables_result(saved[fam], d, src, local))
    elif mode == "nftables":
        by_family: dict[str, list[int]] = {}
        for i, d in enumerate(dests):
            by_family.setdefault(_family(d["ip"]), []).append(i)
        results = [None] * len(dests)
        for idx in by_family.values():  # one render per family
            for i, r in zip(idx, _nftables_results(n, [dests[i] for i in idx], src, local)):
                results[i] = r
    else:  # ipvs: the kernel's choice is in conntrack; `netemu rules NODE` shows the virtual servers
        results = [{**d, "src": src, "entry": "", "nat": [], "filter": [], "chains": [], "dnat": [], "verdicts": [],
                    "masquerade": False, "no_walk": True} for d in dests]
    for r, d in zip(results, dests):
        try:
            entries = capture.conntrack_entries(netns, d["ip"], int(d["port"]), d["proto"])
        except capture.CaptureError as e:
            entries, r["conntrack_error"] = [], str(e)
        r["conntrack"] = [{"src": f"{e.src}:{e.sport}", "dst": f"{e.dst}:{e.dport}", "state": e.state,
                           "dnat": e.dnat, "snat": e.snat, "flags": list(e.flags), "raw": e.raw} for e in entries]
    return {"node": node, "netns": netns, "mode": mode, "src": src, "results": results}


def _family(ip: str) -> str:
    return IPV6 if ":" in ip else IPV4


def iptables_result(rules, dest: dict, src: str, local_ips: set[str]) -> dict:
    """iptables mode: the rules a new connection hits in an iptables-save ruleset, table by table."""
    from netemu.dataplane.proxy.iptables.trace import trace_packet

    kw = dict(src=src, dst=dest["ip"], dport=int(dest["port"]), proto=dest["proto"], local_ips=local_ips)
    nat = trace_packet(rules.only("nat"), **kw)
    full = trace_packet(rules, **kw)
    filt = full.matches[len(nat.matches):]
    entry = "OUTPUT" if src in local_ips else "PREROUTING"
    chains = sorted({w for r in full.matches for w in r.split() if w.startswith(("KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-",
                                                                                 "KUBE-SVL-", "KUBE-FW-"))})
    dnat = [o for o in nat.outputs if o not in VERDICTS]
    verdicts = [o for o in full.outputs[len(nat.outputs):] if o in VERDICTS]
    return {**dest, "src": src, "entry": entry,
            "nat": [{"depth": d, "rule": r} for d, r in capture.indent_matches(nat.matches, ["KUBE-SERVICES"])],
            "filter": [{"depth": d, "rule": r} for d, r in capture.indent_matches(filt, [
                "KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL"])],
            "chains": chains, "dnat": dnat, "verdicts": verdicts, "masquerade": full.masquerade}


def _nftables_results(n, dests: list[dict], src: str, local_ips: set[str]) -> list[dict]:
    """nftables mode: the table kube-proxy writes for the node's view, rendered once for every destination
    (all of one family: the view of that family)."""
    from netemu.dataplane.proxy.nftables.render import render
    from netemu.dataplane.proxy.nftables.trace import trace_packet

    if n.backend.mode != "nftables":
        raise TraceError("this lab's kube-proxy is not in nftables mode")
    fam = _family(dests[0]["ip"]) if dests else IPV4
    fp = n.proxier(fam)
    if fp is None:
        raise TraceError(f"kube-proxy on {n.name} has no {fam} rules in this lab")
    view = fp.view
    if view is None:
        raise TraceError(f"kube-proxy on {n.name} has not synced yet")
    state = render(view, fp.backend.syncer.renderer.settings).state()
    return [nftables_result(d, trace_packet(state, src, d["ip"], int(d["port"]), d["proto"],
                                            sorted(local_ips) or [n.ip]), src, local_ips)
            for d in dests]


def nftables_result(dest: dict, t, src: str, local_ips: set[str]) -> dict:
    """A trace of nftables/trace.py in the same result shape as the iptables mode's."""
    outs = list(dict.fromkeys(o for o, _ in t.outputs))
    chains = sorted({w.split()[0] for r in t.matches for w in r.split("goto ")[1:] + r.split("jump ")[1:]
                     if w.startswith(("service-", "endpoint-", "external-", "firewall-"))})
    entry = "output" if src in local_ips else "prerouting"
    return {**dest, "src": src, "entry": entry,
            "nat": [{"depth": d - 1, "chain": c, "rule": r} for d, c, r in t.steps],
            "filter": [], "chains": chains, "dnat": [o for o in outs if o not in VERDICTS],
            "verdicts": [o for o in outs if o in VERDICTS], "masquerade": t.masq}
