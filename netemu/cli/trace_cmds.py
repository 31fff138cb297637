"""`netemu trace`: which rules a connection to a service hits on a node, and, when a connection is
live, its conntrack entry (where the kernel sent it).

The lab's control process traces, for every proxy mode (its `trace` op, netemu/dataplane/proxy/trace.py):
iptables mode follows the node's live `iptables-save` (kube-proxy's own tracePacket model), nftables
mode the `kube-proxy` table it renders for the node (kube-proxy's nftablesTracer model); IPVS mode has
no rule walk to show: only the conntrack entries (which real server the kernel picked). Here: which
node, from where, to which of the Service's addresses; and the printing.
"""
from __future__ import annotations

import ipaddress
import json
import sys
from typing import Optional

from netemu.cli.client import CliError, Client, pick_lab
from netemu.cli.tables import host_port


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser("trace", help="which kube-proxy rules a connection hits on a node, and its conntrack entry",
                       description="Follow a new connection through a node's live kube-proxy rules (iptables-save "
                       "in the node's namespace): the chains it walks (KUBE-SERVICES, KUBE-NODEPORTS, KUBE-EXT-*, "
                       "KUBE-SVC-*, KUBE-SEP-*), the DNAT targets it may get, whether it is masqueraded; and the "
                       "node's conntrack entries for connections to that address (the DNAT target each got).",
                       epilog="examples:\n"
                       "  netemu trace np-svc --node w1-k8s                 every way in: clusterIP, nodePort, LB IPs\n"
                       "  netemu trace 192.168.1.101:30000                  a NodePort (the node is the one with that IP)\n"
                       "  netemu trace np-svc --from <pod>                  from a pod, on the pod's node\n"
                       "  curl -s 192.168.1.101:30000; netemu trace 192.168.1.101:30000   (with its conntrack entry)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="SERVICE|IP:PORT")
    p.add_argument("--node", help="the node whose rules to follow (default: the --from pod's node, or the node "
                   "owning IP)")
    p.add_argument("--from", dest="from_pod", metavar="POD", help="the connection comes from this pod")
    p.add_argument("--src", metavar="IP", help="the connection's source address (default: the host, the lab's gateway)")
    p.add_argument("--port", help="only this service port (number or name)")
    p.add_argument("-p", "--protocol", choices=["tcp", "udp", "sctp"], help="for IP:PORT (default tcp)")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.add_argument("-n", "--namespace", metavar="NS", help="the service's (and --from pod's) namespace")
    p.add_argument("--lab", metavar="NAME", help="the lab to talk to (default: the only lab up)")


def _hostport(text: str) -> Optional[tuple[str, int]]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host, int(port)


def _node_ips(nodes: list[dict]) -> dict[str, list[str]]:
    """Each node's InternalIPs in order (a dual-stack node lists its IPv4 one, then its IPv6 one)."""
    out: dict[str, list[str]] = {}
    for n in nodes:
        for a in (n.get("status") or {}).get("addresses") or []:
            if a.get("type") == "InternalIP":
                out.setdefault(n["metadata"]["name"], []).append(a["address"])
    return out


def _family(ip: str) -> str:
    return "IPv6" if ":" in ip else "IPv4"


def destinations(svc: dict, node_ips, port_filter: Optional[str]) -> list[dict]:
    """Every way into a Service's ports: its clusterIP of each family, the nodePort on the node's address
    of each of the Service's families (the other family's kube-proxy ignores the Service), externalIPs,
    LB IPs. node_ips: the node's addresses (or one address)."""
    sp, st = svc.get("spec") or {}, svc.get("status") or {}
    if isinstance(node_ips, str) or node_ips is None:
        node_ips = [node_ips] if node_ips else []
    cluster_ips = [ip for ip in (sp.get("clusterIPs") or [sp.get("clusterIP")]) if ip and ip != "None"]
    families = sp.get("ipFamilies") or [_family(ip) for ip in cluster_ips]
    np_ips = [ip for ip in node_ips if _family(ip) in families] or node_ips[:1]
    out = []
    ports = sp.get("ports") or []
    if port_filter:
        ports = [p for p in ports if str(p.get("port")) == port_filter or p.get("name") == port_filter
                 or str(p.get("nodePort")) == port_filter]
        if not ports:
            raise CliError(f'service {svc["metadata"]["name"]} has no port {port_filter}')
    for p in ports:
        proto = (p.get("protocol") or "TCP").lower()
        pname = f"port {p['name']}" if p.get("name") else f"port {p['port']}"
        for ip in cluster_ips:
            out.append({"via": f"ClusterIP ({pname})", "ip": ip, "port": p["port"], "proto": proto})
        for ip in np_ips if p.get("nodePort") else ():
            out.append({"via": f"NodePort {p['nodePort']} ({pname})", "ip": ip, "port": p["nodePort"],
                        "proto": proto})
        for ip in sp.get("externalIPs") or []:
            out.append({"via": f"externalIP ({pname})", "ip": ip, "port": p["port"], "proto": proto})
        for ing in (st.get("loadBalancer") or {}).get("ingress") or []:
            if ing.get("ip"):
                out.append({"via": f"LoadBalancer IP ({pname})", "ip": ing["ip"], "port": p["port"], "proto": proto})
    return out


def cmd_trace(args) -> int:
    from netemu.cli.kinds import by_kind, get_object, list_objects

    client = Client(pick_lab(args.lab))
    ns = args.namespace or "default"
    lab = client.call("lab")
    node_ips = _node_ips(list_objects(client, by_kind("Node")))
    node = args.node
    if node and node not in node_ips:
        raise CliError(f'node "{node}" not found (nodes: {", ".join(node_ips)})')
    src, src_what = args.src, "--src"
    srcs: dict[str, str] = {}   # a source per family for destinations of both (a pod's, the host's)
    if args.from_pod:
        pod = get_object(client, by_kind("Pod"), ns, args.from_pod)
        st = pod.get("status") or {}
        src = st.get("podIP")
        if not src:
            raise CliError(f'pod "{args.from_pod}" has no IP yet')
        srcs = {_family(a["ip"]): a["ip"] for a in reversed(st.get("podIPs") or []) if a.get("ip")}
        src_what = f"pod {args.from_pod}"
        node = node or (pod.get("spec") or {}).get("nodeName")
    if not src:
        src, src_what = lab["spec"].get("gateway", "192.168.1.1"), "the host, at the lab's gateway address"
        if lab["spec"].get("gateway6"):
            srcs = {"IPv4": src, "IPv6": lab["spec"]["gateway6"]}

    hp = _hostport(args.target)
    if hp:
        ip, port = hp
        if not node:
            node = next((n for n, nips in node_ips.items() if ip in nips), None)
        dests = [{"via": f"{ip}:{port}", "ip": ip, "port": port, "proto": args.protocol or "tcp"}]
        title = f"{args.target}"
    else:
        svc = get_object(client, by_kind("Service"), ns, args.target)
        if (svc.get("spec") or {}).get("type") == "ExternalName":
            raise CliError(f"service {args.target} is an ExternalName ({svc['spec'].get('externalName')}): "
                           "DNS only, no rules")
        if not node:
            raise CliError(f"which node's rules? add --node NODE (one of: {', '.join(node_ips)})")
        dests = destinations(svc, node_ips.get(node), args.port)
        title = f"service {ns + '/' if ns != 'default' else ''}{args.target}"
    if not node:
        raise CliError(f"which node's rules? add --node NODE (one of: {', '.join(node_ips)})")

    # one call per family of destinations, each from the source of its family when there is one
    by_src: dict[str, list[int]] = {}
    for i, d in enumerate(dests):
        by_src.setdefault(srcs.get(_family(d["ip"]), src), []).append(i)
    results: list = [None] * len(dests)
    for s, idx in by_src.items():
        doc = client.call("trace", name=node, src=s, destinations=[dests[i] for i in idx])
        for i, r in zip(idx, doc["results"]):
            results[i] = r
    mode, netns = doc["mode"], doc["netns"]
    if args.output == "json":
        json.dump({"node": node, "netns": netns, "mode": mode, "src": src, "results": results}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    src = " and ".join(by_src)   # one address per family traced
    print(f"{title} on node {node} (netns {netns}, {mode} mode), a new connection from {src} ({src_what}):")
    for r in results:
        print()
        print(f"{host_port(r['ip'], r['port'])}/{r['proto']}  [{r['via']}]")
        if r.get("no_walk"):
            print(f"  IPVS mode: no rule walk to show (`netemu rules {node}` lists the virtual servers)")
        elif mode == "nftables":
            table = "ip6" if _family(r["ip"]) == "IPv6" else "ip"
            print(f"  table {table} kube-proxy, {r['entry']}: the rules that match, chain by chain")
            chain = None
            for m in r["nat"]:
                if m["chain"] != chain:
                    chain = m["chain"]
                    print("    " + "  " * m["depth"] + f"chain {chain}")
                print("    " + "  " * (m["depth"] + 1) + m["rule"])
        else:
            print(f"  nat {r['entry']} -> KUBE-SERVICES")
            for m in r["nat"]:
                print("    " + "  " * m["depth"] + m["rule"])
        if not r["nat"] and not r.get("no_walk"):
            print("    (no kube-proxy rule matches: the destination is not rewritten)")
        if r["filter"]:
            print("  filter")
            for m in r["filter"]:
                print("    " + "  " * m["depth"] + m["rule"])
        if r["dnat"]:
            picker = "numgen" if mode == "nftables" else "statistic"
            how = f"one of, chosen by the {picker} rules: " if len(r["dnat"]) > 1 else ""
            print(f"  => DNAT to {how}{', '.join(r['dnat'])}")
        if "REJECT" in r["verdicts"] or "DROP" in r["verdicts"]:
            print(f"  => {', '.join(r['verdicts'])} (a service without endpoints, or a firewall rule)")
        if not r.get("no_walk"):
            print("  => masqueraded (the 0x4000 mark: the backend sees the node's address)" if r["masquerade"] else
                  "  => not masqueraded (the backend sees the client's address)")
        if r.get("conntrack_error"):
            print(f"  conntrack: {r['conntrack_error']}")
        elif not r["conntrack"]:
            print(f"  conntrack: no connection to {host_port(r['ip'], r['port'])} on {node} now "
                  "(make one and trace again while it is open or in TIME_WAIT)")
        else:
            print(f"  conntrack on {node}: {len(r['conntrack'])} connection(s) to {host_port(r['ip'], r['port'])}")
            for c in r["conntrack"]:
                nat = f"  DNAT -> {c['dnat']}" if c["dnat"] else "  (not DNATed)"
                snat = f"  SNAT -> {c['snat']}" if c["snat"] else ""
                print(f"    {c['state'] or r['proto']:<12} {c['src']} -> {c['dst']}{nat}{snat}")
    return 0
