"""`top pods`, `top nodes` (metrics.k8s.io/v1beta1 PodMetrics and NodeMetrics from the lab's API),
`autoscale` (a HorizontalPodAutoscaler POSTed to the API), and the HorizontalPodAutoscaler's
description (`describe_hpa`, for get_cmds' DESCRIBERS; `get hpa` prints the server's Table).
"""
from __future__ import annotations

import argparse
import math
import re
import time
from fractions import Fraction
from typing import Optional

from netemu.cli.client import CliError, Client, pick_lab

# netemu.cli.tables (the API's printers) is imported where it is used: every verb's parser loads this module

POD_COLUMNS = ["NAME", "CPU(cores)", "MEMORY(bytes)"]
NODE_COLUMNS = ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]  # newest kubectl: CPU(%), MEMORY(%)


# --------------------------------------------------------------------------- the parser
def add_parsers(sub) -> None:
    """Add `top` and `autoscale` to netemu's verbs (argparse subparsers)."""
    p = sub.add_parser("top", help="CPU and memory of pods or nodes, measured from their cgroups",
                       epilog="examples:\n  netemu top pods\n  netemu top pods -A --sort-by=cpu\n  netemu top nodes",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["pods", "pod", "po", "nodes", "node", "no"], metavar="pods|nodes")
    p.add_argument("name", nargs="?")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-l", "--selector", help="label selector (pods)")
    p.add_argument("--sort-by", choices=["cpu", "memory"], help="largest first")
    p.add_argument("--no-headers", action="store_true")
    p.add_argument("--sum", action="store_true", help="print the sum of the pods' usage (pods)")
    p.add_argument("--lab", metavar="NAME", help="the lab to talk to (default: the only lab up)")
    p.add_argument("-n", "--namespace", metavar="NS", help="Kubernetes namespace (default: default)")

    p = sub.add_parser("autoscale", help="create a HorizontalPodAutoscaler for a deployment",
                       epilog="example: netemu autoscale deployment php-apache --min=1 --max=10 --cpu-percent=50")
    p.add_argument("resource", help="deployment|replicaset (or kind/NAME)")
    p.add_argument("name_arg", nargs="?", metavar="NAME")
    p.add_argument("--min", type=int, default=-1, help="lower limit of replicas (default: 1)")
    p.add_argument("--max", type=int, default=-1, required=True, help="upper limit of replicas")
    p.add_argument("--cpu-percent", type=int, default=-1,
                   help="target average CPU utilization, in percent of the request (default: 80)")
    p.add_argument("--name", help="the autoscaler's name (default: the target's)")
    p.add_argument("--lab", metavar="NAME", help="the lab to talk to (default: the only lab up)")
    p.add_argument("-n", "--namespace", metavar="NS", help="Kubernetes namespace (default: default)")


# --------------------------------------------------------------------------- top
def format_cpu(milli: Optional[int]) -> str:
    return "<unknown>" if milli is None else f"{milli}m"


def format_memory(nbytes: Optional[int]) -> str:
    return "<unknown>" if nbytes is None else f"{nbytes // (1024 * 1024)}Mi"


def percent(used: Optional[int], available: Optional[int]) -> str:
    if used is None or available is None:
        return "<unknown>"
    return f"{int(used / available * 100) if available else 0}%"


def pod_rows(items: list[dict], all_namespaces: bool, sort_by: Optional[str] = None) -> tuple[list[str], list[list[str]]]:
    items = _sorted(items, sort_by, all_namespaces)
    headers = (["NAMESPACE"] if all_namespaces else []) + POD_COLUMNS
    rows = [([m["namespace"]] if all_namespaces else []) +
            [m["name"], format_cpu(m["cpu_milli"]), format_memory(m["memory_bytes"])] for m in items]
    return headers, rows


def node_rows(items: list[dict], sort_by: Optional[str] = None) -> tuple[list[str], list[list[str]]]:
    items = _sorted(items, sort_by, False)
    rows = []
    for m in items:
        if m["cpu_milli"] is None:
            rows.append([m["name"], "<unknown>", "<unknown>", "<unknown>", "<unknown>"])
            continue
        rows.append([m["name"], format_cpu(m["cpu_milli"]), percent(m["cpu_milli"], m["cpu_allocatable_milli"]),
                     format_memory(m["memory_bytes"]),
                     percent(m["memory_bytes"], m["memory_allocatable_bytes"])])
    return NODE_COLUMNS, rows


def _sorted(items: list[dict], sort_by: Optional[str], by_namespace: bool) -> list[dict]:
    if sort_by == "cpu":
        return sorted(items, key=lambda m: -(m["cpu_milli"] or 0))
    if sort_by == "memory":
        return sorted(items, key=lambda m: -(m["memory_bytes"] or 0))
    return sorted(items, key=lambda m: ((m.get("namespace") or "") if by_namespace else "", m["name"]))


_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$")
_SUFFIX = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
           "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
           "P": Fraction(10**15), "E": Fraction(10**18), "Ki": Fraction(2**10), "Mi": Fraction(2**20),
           "Gi": Fraction(2**30), "Ti": Fraction(2**40), "Pi": Fraction(2**50), "Ei": Fraction(2**60)}


def quantity(q) -> Optional[Fraction]:
    """A Kubernetes quantity (`250m`, `1500000n`, `64Mi`, `2`, `1e3`); None when it is not one."""
    if q is None:
        return None
    m = _QUANTITY.match(str(q).strip())
    if not m:
        return None
    try:
        number = Fraction(m.group(1))
    except ValueError:
        return None
    suffix = m.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * Fraction(10) ** int(suffix[1:])
    return number * _SUFFIX[suffix]


def _milli(q) -> Optional[int]:
    v = quantity(q)
    return None if v is None else math.ceil(v * 1000)


def _bytes(q) -> Optional[int]:
    v = quantity(q)
    return None if v is None else math.ceil(v)


def pod_usage(m: dict) -> dict:
    """A PodMetrics as a row: the sum of its containers' usage."""
    cpu = mem = 0
    for c in m.get("containers") or []:
        usage = c.get("usage") or {}
        cpu += _milli(usage.get("cpu")) or 0
        mem += _bytes(usage.get("memory")) or 0
    meta = m.get("metadata") or {}
    return {"namespace": meta.get("namespace"), "name": meta.get("name"), "cpu_milli": cpu, "memory_bytes": mem}


def node_usage(node: dict, m: Optional[dict]) -> dict:
    """A Node and its NodeMetrics (None: no metrics yet) as a row."""
    alloc = (node.get("status") or {}).get("allocatable") or (node.get("status") or {}).get("capacity") or {}
    usage = (m or {}).get("usage") or {}
    return {"name": node["metadata"]["name"],
            "cpu_milli": _milli(usage.get("cpu")) if m else None,
            "memory_bytes": _bytes(usage.get("memory")) if m else None,
            "cpu_allocatable_milli": _milli(alloc.get("cpu")), "memory_allocatable_bytes": _bytes(alloc.get("memory"))}


def cmd_top(args) -> int:
    from netemu.cli import tables
    from netemu.cli.kinds import by_kind, find_object, get_object, list_objects

    client = Client(pick_lab(args.lab))
    nodes = args.what in ("nodes", "node", "no")
    if nodes:
        node_res, metrics_res = by_kind("Node"), by_kind("NodeMetrics")
        if args.name:
            objs = [get_object(client, node_res, None, args.name)]
            m = find_object(client, metrics_res, None, args.name)
            metrics = {args.name: m} if m else {}
        else:
            objs = list_objects(client, node_res, None, args.selector)
            metrics = {m["metadata"]["name"]: m for m in list_objects(client, metrics_res, None, args.selector)}
        items = [node_usage(n, metrics.get(n["metadata"]["name"])) for n in objs]
        headers, rows = node_rows(items, args.sort_by)
        _print(headers, rows, args.no_headers)
        return 0
    ns = None if args.all_namespaces else (args.namespace or "default")
    pod_res, metrics_res = by_kind("Pod"), by_kind("PodMetrics")
    if args.name:
        m = find_object(client, metrics_res, ns or "default", args.name)
        items = [pod_usage(m)] if m else []
    else:
        items = [pod_usage(m) for m in list_objects(client, metrics_res, ns, args.selector)]
    if not items:
        if args.name:
            p = find_object(client, pod_res, ns or "default", args.name)
            pods = [p] if p else []
        else:
            pods = list_objects(client, pod_res, ns, args.selector)
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        if live:  # the pods exist: their metrics are not there yet (two samples are needed)
            p = live[0]
            raise CliError(f"Metrics not available for pod {p['metadata'].get('namespace', 'default')}/"
                           f"{p['metadata']['name']}, age: {tables.age(p)}")
        if args.name:
            raise CliError(f'pods "{args.name}" not found')
        where = "" if ns is None else f" in {ns} namespace"
        print(f"No resources found{where}.")
        return 0
    headers, rows = pod_rows(items, ns is None, args.sort_by)
    if args.sum:
        total_cpu = sum(m["cpu_milli"] or 0 for m in items)
        total_mem = sum(m["memory_bytes"] or 0 for m in items)
        pad = [""] * (len(headers) - 2)
        rows.append(pad + ["________", "________"])
        rows.append(pad + [format_cpu(total_cpu), format_memory(total_mem)])
    _print(headers, rows, args.no_headers)
    return 0


def _print(headers: list[str], rows: list[list[str]], no_headers: bool) -> None:
    from netemu.cli import tables

    text = tables.render(headers, rows)
    if no_headers:
        text = "\n".join(text.splitlines()[1:])
    if text:
        print(text)


# --------------------------------------------------------------------------- autoscale
def cmd_autoscale(args) -> int:
    from netemu.cli.kinds import by_kind, get_object, path, split_ref

    client = Client(pick_lab(args.lab))
    res, name = split_ref(args.resource, args.name_arg, client)
    if not name:
        raise CliError("autoscale needs a name: netemu autoscale deployment NAME --max=N")
    if "scale" not in res.subresources:
        raise CliError(f"cannot autoscale a {res.kind}: it has no scale subresource (deployments and replicasets do)")
    if args.max < 1:
        raise CliError("--max=MAXPODS is required and must be at least 1")
    min_replicas = args.min if args.min >= 0 else None
    if min_replicas is not None and min_replicas > args.max:
        raise CliError(f"--max={args.max} must be larger or equal to --min={min_replicas}")
    ns = args.namespace or "default"
    target = get_object(client, res, ns, name)
    hpa_name = args.name or name
    spec: dict = {"scaleTargetRef": {"apiVersion": target.get("apiVersion") or res.group_version, "kind": res.kind,
                                     "name": name}, "maxReplicas": args.max}
    if min_replicas is not None:
        spec["minReplicas"] = min_replicas
    if args.cpu_percent >= 0:  # none: the API's default, 80% of the cpu request
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": args.cpu_percent}}}]
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": hpa_name, "namespace": ns}, "spec": spec}
    client.rest("POST", path(by_kind("HorizontalPodAutoscaler"), ns, version="v2"), hpa)
    print(f"horizontalpodautoscaler.autoscaling/{hpa_name} autoscaled")
    return 0


# --------------------------------------------------------------------------- describe hpa
def describe_hpa(hpa: dict, client=None) -> str:
    """kubectl describe hpa (without the events, which describe prints after)."""
    from netemu.cli import tables

    meta, spec, st = hpa["metadata"], hpa.get("spec") or {}, hpa.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    width = 55
    lines: list[str] = []

    def kv(key: str, val) -> None:
        lines.append(f"{key + ':':<{width}}{val}")

    kv("Name", meta["name"])
    kv("Namespace", meta.get("namespace", "default"))
    labels = meta.get("labels") or {}
    kv("Labels", "\n".join(f"{k}={v}" for k, v in labels.items()) or "<none>")
    ann = meta.get("annotations") or {}
    kv("Annotations", "\n".join(f"{k}: {v}" for k, v in ann.items()) or "<none>")
    kv("CreationTimestamp", _describe_time(meta.get("creationTimestamp")))
    kv("Reference", f"{ref.get('kind', '')}/{ref.get('name', '')}")
    kv("Metrics", "( current / target )")
    statuses = st.get("currentMetrics") or []
    for i, m in enumerate(spec.get("metrics") or []):
        cur = statuses[i] if i < len(statuses) else {}
        if m.get("type") == "Resource":
            res = m.get("resource") or {}
            target = res.get("target") or {}
            current = ((cur.get("resource") or {}).get("current")) or {}
            if target.get("averageValue") is not None:
                kv(f"  resource {res.get('name')} on pods",
                   f"{current.get('averageValue', '<unknown>')} / {target['averageValue']}")
            else:
                shown = (f"{current['averageUtilization']}% ({current.get('averageValue', '?')})"
                         if current.get("averageUtilization") is not None else "<unknown>")
                kv(f"  resource {res.get('name')} on pods  (as a percentage of request)",
                   f"{shown} / {target.get('averageUtilization', '<auto>')}%")
        else:
            kv(f"  {m.get('type', '?')} metric", "<unknown> (netemu has no custom or external metrics API)")
    kv("Min replicas", spec.get("minReplicas", "<unset>"))
    kv("Max replicas", spec.get("maxReplicas", 0))
    behavior = spec.get("behavior")
    if behavior:
        lines.append("Behavior:")
        for side, title in (("scaleUp", "Scale Up"), ("scaleDown", "Scale Down")):
            rules = behavior.get(side) or {}
            lines.append(f"  {title}:")
            w = rules.get("stabilizationWindowSeconds")
            lines.append(f"    Stabilization Window: {w if w is not None else '<controller default>'} seconds")
            lines.append(f"    Select Policy: {rules.get('selectPolicy', 'Max')}")
            lines.append("    Policies:")
            for p in rules.get("policies") or []:
                lines.append(f"      - Type: {p['type']:<7} Value: {p['value']}  Period: {p['periodSeconds']} seconds")
    kv(f"{ref.get('kind', 'Deployment')} pods",
       f"{st.get('currentReplicas', 0)} current / {st.get('desiredReplicas', 0)} desired")
    conds = st.get("conditions") or []
    if conds:
        lines.append("Conditions:")
        rows = [[c["type"], c["status"], c.get("reason", ""), c.get("message", "")] for c in conds]
        body = tables.render(["Type", "Status", "Reason", "Message"], rows).splitlines()
        sep = tables.render(["Type", "Status", "Reason", "Message"],
                            [["-" * 4, "-" * 6, "-" * 6, "-" * 7]] + rows).splitlines()[1]
        lines += ["  " + body[0], "  " + sep] + ["  " + line for line in body[1:]]
    return "\n".join(lines)


def _describe_time(ts: Optional[str]) -> str:
    from netemu.cli import tables

    t = tables.parse_ts(ts)
    return "<unknown>" if t is None else time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(t))
