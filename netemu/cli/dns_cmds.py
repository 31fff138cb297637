"""`netemu dns NAME [TYPE] [--from POD]`: ask the lab's cluster DNS, as a pod would.

The query leaves from inside a pod's network namespace (or a node's), to the kube-dns
ClusterIP, through kube-proxy's rules like any pod's lookup; short names are tried with the
pod's search list and ndots:5, as the pod's resolver does. `--server` takes an IPv4 or an IPv6
address (asked over IPv6 from the pod or node, e.g. a dual-stack kube-dns's IPv6 ClusterIP)."""
from __future__ import annotations

import ipaddress
import socket
import time

from netemu.cli.client import CliError, Client, pick_lab


def search_list(namespace: str, domain: str) -> list[str]:
    return [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]


def candidates(name: str, searches: list[str], ndots: int = 5) -> list[str]:
    """The names a glibc resolver tries, in order (resolv.conf `search` and `options ndots`)."""
    if name.endswith("."):
        return [name]
    expanded = [f"{name}.{s}." for s in searches]
    if name.count(".") >= ndots:
        return [name + "."] + expanded
    return expanded + [name + "."]


def server_address(server: str, port: int = 53) -> tuple[int, tuple, str]:
    """(socket family, address to send to, how to show it) for --server: an IPv6 address (also written
    in brackets) gets an IPv6 socket and is shown as [addr]:53; anything else is IPv4's, as before."""
    text = server.strip()
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return socket.AF_INET, (text, port), f"{text}:{port}"
    if ip.version == 6:
        return socket.AF_INET6, (str(ip), port, 0, 0), f"[{ip}]:{port}"
    return socket.AF_INET, (str(ip), port), f"{ip}:{port}"


def cmd_dns(args) -> int:
    from dnslib import QTYPE, RCODE, DNSRecord

    from netemu.dataplane import nsutil

    lab = pick_lab(args.lab)
    client = Client(lab)
    spec = client.call("lab")["spec"]
    server = args.server or spec.get("clusterDNS", "10.96.0.10")
    family, address, shown = server_address(server)
    domain = spec.get("clusterDomain", "cluster.local")
    namespace = args.namespace or "default"
    if args.from_pod:
        rt = client.call("runtime", namespace=namespace, name=args.from_pod)
        netns = "/run/netns/" + rt["netns"]
        where = f"pod {namespace}/{args.from_pod}"
    else:
        node = args.node or "m-k8s"
        netns = "/run/netns/" + client.call("node_netns", name=node)
        where = f"node {node}"
    qtype = args.type.upper()
    if qtype not in QTYPE.reverse:
        raise CliError(f"unknown record type {args.type!r}")
    names = candidates(args.name, search_list(namespace, domain)) if args.search else [
        args.name if args.name.endswith(".") else args.name + "."]
    for qname in names:
        q = DNSRecord.question(qname, qtype)
        sock = nsutil.socket_in(netns, family, socket.SOCK_DGRAM)
        sock.settimeout(args.timeout)
        t0 = time.perf_counter()
        try:
            sock.sendto(q.pack(), address)
            data, _ = sock.recvfrom(65535)
        except socket.timeout:
            raise CliError(f"no answer from {server} within {args.timeout:g}s (asked from {where})") from None
        except OSError as e:
            raise CliError(f"cannot reach {server} from {where}: {e.strerror or e}") from None
        finally:
            sock.close()
        ms = (time.perf_counter() - t0) * 1000
        reply = DNSRecord.parse(data)
        rcode = RCODE.get(reply.header.rcode)
        last = qname == names[-1]
        # like a resolver: NXDOMAIN (or empty) moves on to the next search domain
        if rcode == "NXDOMAIN" and not last:
            if args.verbose:
                print(f";; {qname} {qtype}: NXDOMAIN, trying the next search domain")
            continue
        print(f";; {where} -> {shown}, {ms:.2f} ms, status: {rcode}, flags: "
              f"{' '.join(f for f in ('qr', 'aa', 'tc', 'rd', 'ra') if getattr(reply.header, f, 0))}")
        print(f";; QUESTION: {qname} IN {qtype}")
        if reply.rr:
            print(";; ANSWER:")
            for rr in reply.rr:
                print(rr.toZone())
        if reply.auth and (args.verbose or not reply.rr):
            print(";; AUTHORITY:")
            for rr in reply.auth:
                print(rr.toZone())
        if reply.ar and args.verbose:
            print(";; ADDITIONAL:")
            for rr in reply.ar:
                print(rr.toZone())
        return 0 if rcode == "NOERROR" else 1
    return 1
