"""`netemu capture`: tcpdump inside a node's or a pod's network namespace, to a pcap file or stdout."""
from __future__ import annotations

import os
import sys

from netemu.cli.client import CliError, Client, pick_lab


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser("capture", help="tcpdump inside a node or a pod: a pcap file, or a stream for Wireshark",
                       description="Capture packets inside a node's or a pod's network namespace with tcpdump. "
                       "The pcap goes to -w FILE, or to stdout with -w - (for Wireshark); tcpdump's own messages "
                       "go to stderr. Stops after -c packets, --duration seconds, or Ctrl-C.",
                       epilog="examples:\n"
                       "  netemu capture w1-k8s tcp port 30000 -w np.pcap -c 20\n"
                       "  netemu capture np-pods-5d8f7c9b4-x2k9q -w - | wireshark -k -i -\n"
                       "  netemu capture w1-k8s -i cni0 icmp --duration 10 -w ping.pcap\n"
                       "  netemu capture --segment arp -w arp.pcap      (the lab segment's bridge)\n"
                       "  netemu capture w1-k8s -w x.pcap -- tcp and not port 22   (-- : the rest is the filter)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", metavar="NODE|POD", help="a node or a pod (node/NAME or pod/NAME when a "
                   "name is both)")
    p.add_argument("filter", nargs=argparse.REMAINDER, metavar="FILTER",
                   help="a tcpdump (pcap-filter) expression, e.g. tcp port 80; options may come before or after it")
    _options(p, None)


def _options(p, default) -> None:
    """The options, also looked for among the filter's words (they may follow it)."""
    kw = {} if default is None else {"default": default}
    p.add_argument("-i", "--interface", metavar="IFACE", help="default: any on a node (eth0, cni0 and the pods' "
                   "veths), eth0 in a pod, br0 on the segment", **kw)
    p.add_argument("-w", "--write", metavar="FILE", help="pcap file, or - for stdout (default: a file named after "
                   "the target, e.g. w1-k8s.pcap)", **kw)
    p.add_argument("-c", "--count", type=int, metavar="N", help="stop after N packets", **kw)
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds", **kw)
    p.add_argument("-s", "--snaplen", type=int, metavar="BYTES", help="bytes of each packet to keep (default: all)",
                   **kw)
    p.add_argument("--segment", action="store_true", help="capture on the lab segment itself (bridge br0, which "
                   "sees every node's frames and the uplink's)", **kw)
    p.add_argument("-n", "--namespace", metavar="NS", help="the pod's Kubernetes namespace (default: default)", **kw)
    p.add_argument("--lab", metavar="NAME", help="the lab to talk to (default: the only lab up)", **kw)


def split_filter(args) -> list[str]:
    """Options given after the filter's first word land in args.filter: take them out."""
    import argparse

    words = list(args.filter or [])
    if "--" in words:  # everything after -- is the filter, as is
        i = words.index("--")
        head, tail = words[:i], words[i + 1:]
    else:
        head, tail = words, []
    mini = argparse.ArgumentParser(add_help=False, prog="netemu capture")
    _options(mini, argparse.SUPPRESS)
    found, rest = mini.parse_known_args(head)
    for key, value in vars(found).items():
        setattr(args, key, value)
    return rest + tail


def resolve(client: Client, target: str, namespace: str | None) -> tuple[str, str, str]:
    """(kind, name, netns) of NODE or POD (or node/NAME, pod/NAME)."""
    kind, _, name = target.rpartition("/")
    kind = {"node": "node", "no": "node", "nodes": "node", "pod": "pod", "po": "pod", "pods": "pod"}.get(kind.lower(), kind)
    if kind not in ("", "node", "pod"):
        raise CliError(f"{target}: capture works on a node or a pod (node/NAME, pod/NAME)")
    if kind in ("", "node"):
        try:
            return "node", name, client.call("node-netns", name=name)
        except CliError as e:
            if kind == "node":
                raise
            node_error = e
    try:
        rt = client.call("runtime", namespace=namespace or "default", name=name)
    except CliError as e:
        if "not found" in str(e).lower() and not kind:
            raise CliError(f'"{name}" is neither a node nor a pod{" in namespace " + namespace if namespace else ""} '
                           f"(node: {node_error}; pod: {e})") from None
        raise
    netns = rt["netns"]
    return "pod", name, netns.rsplit("/", 1)[-1]


def cmd_capture(args) -> int:
    from netemu.dataplane import capture
    from netemu.dataplane.names import switch_netns

    words = split_filter(args)
    lab = pick_lab(args.lab)
    if args.segment:
        if args.target:  # without a target, the first word of the filter lands in `target`
            words.insert(0, args.target)
        kind, name, netns = "segment", lab, switch_netns(lab)
    else:
        if not args.target:
            raise CliError("capture needs a node or a pod (or --segment)")
        kind, name, netns = resolve(Client(lab), args.target, args.namespace)
    iface = args.interface or {"node": "any", "pod": "eth0", "segment": "br0"}[kind]
    dest = args.write or f"{name}.pcap"
    if dest == "-" and sys.stdout.isatty():
        raise CliError("-w - writes pcap to stdout: pipe it (e.g. | wireshark -k -i -) or give a file")
    what = f"{kind} {name} ({netns}), interface {iface}" + (f", filter: {' '.join(words)}" if words else "")
    if dest == "-":
        print(f"netemu: capturing on {what}", file=sys.stderr)
        sys.stdout.flush()
        out = sys.stdout.buffer
        rc = _run(capture, netns, iface, out.fileno(), words, args)
    else:
        print(f"netemu: capturing on {what} into {dest}" + ("" if args.count or args.duration else
                                                              " (Ctrl-C stops)"), file=sys.stderr)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            rc = _run(capture, netns, iface, fd, words, args)
        finally:
            os.close(fd)
    if rc != 0:
        raise CliError(f"tcpdump exited with status {rc}", code=rc if 0 < rc < 126 else 1)
    return 0


def _run(capture, netns, iface, fd, words, args) -> int:
    try:
        return capture.capture(netns, iface, fd, words, count=args.count, duration=args.duration,
                               snaplen=args.snaplen)
    except capture.CaptureError as e:
        raise CliError(str(e)) from None
