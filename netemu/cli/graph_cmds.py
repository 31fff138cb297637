"""`netemu graph`: a picture of the running lab (DOT, Mermaid, SVG/PNG through graphviz)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from netemu.cli.client import CliError, Client, pick_lab

FORMATS = ("dot", "mermaid", "svg", "png")
_EXT = {".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".mermaid": "mermaid", ".md": "mermaid", ".svg": "svg",
        ".png": "png"}
KINDS = ("Node", "Pod", "Deployment", "ReplicaSet", "Service", "EndpointSlice")


def add_parser(sub) -> None:
    """The verb's arguments (for netemu/cli/main.py)."""
    import argparse

    p = sub.add_parser("graph", help="draw the lab: nodes, pods by deployment, services, endpoints, LB IPs",
                       description="Draw the running lab from its live state: nodes on the lab segment, pods "
                       "grouped by deployment, services and their endpoints, LoadBalancer IPs and the node "
                       "announcing each. DOT and Mermaid are text; SVG and PNG need graphviz's `dot`.",
                       epilog="examples:\n  netemu graph | dot -Tsvg > lab.svg\n  netemu graph -o svg -f lab.svg\n"
                       "  netemu graph -o mermaid            (paste into a Markdown ```mermaid block)\n"
                       "  netemu graph -f lab.svg --watch 2   (redraw when the lab changes)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", choices=FORMATS, help="dot (default), mermaid, svg or png "
                   "(default from -f's extension: .dot .gv .mmd .svg .png)")
    p.add_argument("-f", "--file", metavar="FILE", help="write here instead of stdout")
    p.add_argument("-n", "--namespace", metavar="NS", help="only this Kubernetes namespace (nodes are always drawn)")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="keep redrawing FILE when the lab changes")
    p.add_argument("--lab", metavar="NAME", help="the lab to talk to (default: the only lab up)")


def fetch(client: Client, namespace=None) -> dict:
    """Everything graph.build needs, from the API."""
    from netemu.cli.kinds import by_kind, list_objects

    objects = {kind: list_objects(client, by_kind(kind)) for kind in KINDS}
    try:
        events = [_event_view(e) for e in list_objects(client, by_kind("Event"), fields="reason=nodeAssigned")]
    except CliError:
        events = []
    announcers = None
    try:  # an op the MetalLB speaker may offer: {ip: node}
        announcers = client.call("announcements")
    except CliError:
        pass
    if isinstance(announcers, dict) and isinstance(announcers.get("by_ip"), dict):
        announcers = announcers["by_ip"]
    try:
        lab = client.call("lab")
    except CliError:
        lab = None
    return {"objects": objects, "events": events, "announcers": announcers if isinstance(announcers, dict) else None,
            "lab": lab, "namespace": namespace}


def _event_view(e: dict) -> dict:
    """An API Event in the flat form netemu.cli.graph reads."""
    from netemu.cli.tables import parse_ts

    inv = e.get("involvedObject") or {}
    return {"kind": inv.get("kind"), "namespace": inv.get("namespace") or (e.get("metadata") or {}).get("namespace"),
            "name": inv.get("name"), "reason": e.get("reason"), "message": e.get("message"),
            "last": parse_ts(e.get("lastTimestamp")) or parse_ts(e.get("firstTimestamp")) or 0.0}


def picture(data: dict):
    from netemu.cli import graph

    return graph.build(data["objects"], announcers=data.get("announcers"), events=data.get("events") or (),
                       lab=data.get("lab"), namespace=data.get("namespace"))


def render(pic, fmt: str) -> bytes:
    from netemu.cli import graph

    if fmt == "mermaid":
        return graph.to_mermaid(pic).encode()
    dot = graph.to_dot(pic)
    return dot.encode() if fmt == "dot" else run_dot(dot, fmt)


def run_dot(dot: str, fmt: str) -> bytes:
    exe = shutil.which("dot")
    if exe is None:
        raise CliError(f"-o {fmt} needs graphviz's `dot`, which is not installed (Debian: apt-get install graphviz); "
                       "-o dot and -o mermaid work without it")
    res = subprocess.run([exe, f"-T{fmt}"], input=dot.encode(), capture_output=True, timeout=120)
    if res.returncode != 0:
        raise CliError(f"dot -T{fmt} failed: {res.stderr.decode(errors='replace').strip()}")
    return res.stdout


def _write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def cmd_graph(args) -> int:
    fmt = args.output
    if fmt is None and args.file:
        fmt = _EXT.get(os.path.splitext(args.file)[1].lower())
    fmt = fmt or "dot"
    if args.watch is not None and not args.file:
        raise CliError("--watch needs -f FILE")
    if fmt == "png" and not args.file and sys.stdout.isatty():
        raise CliError("PNG is binary: write it to a file (-f lab.png) or pipe it")
    client = Client(pick_lab(args.lab))
    last = None
    while True:
        pic = picture(fetch(client, args.namespace))
        key = repr(pic)  # what the drawing depends on (no timestamps or resource versions)
        if key != last:
            out = render(pic, fmt)
            if args.file:
                _write(args.file, out)
                if args.watch is not None:
                    print(f"{time.strftime('%H:%M:%S')} wrote {args.file}", file=sys.stderr)
            else:
                sys.stdout.buffer.write(out)
                sys.stdout.flush()
            last = key
        if args.watch is None:
            return 0
        time.sleep(max(0.2, args.watch))
