#!/usr/bin/env python3
"""kube-proxy iptables benchmark (issue 3): render and apply times against a bare restore.

For 1,000 / 5,000 / 10,000 ClusterIP Services with 2 endpoints each, on one node (a throwaway
network namespace), with the iptables-nft and iptables-legacy backends:

  render   build the node's view and the full iptables-restore payload (netemu.dataplane.proxy)
  apply    netemu's first sync on a fresh node: base chains and jumps plus the payload, one
           `iptables-restore --noflush` inside the namespace (what the lab's kube-proxy runs)
  floor    a bare `iptables-restore --noflush` of the same payload into another fresh namespace
  change   one endpoint of the last Service replaced: re-render (cached per service) plus apply of
           the minimal partial payload, on the loaded node
  1-rule floor  a bare restore of one new chain with one rule on the same loaded node: what any
                change costs with that tool at that size
  resync   for reference: kube-proxy's own partial sync (rewrites KUBE-SERVICES and friends)

Run as root: .venv/bin/python scripts/bench_iptables.py [--sizes 1000,5000,10000]
Namespaces are named ne-benchipt-*; they are removed at the end (and at the start).
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netemu.dataplane.proxy.iptables.render import base_payload  # noqa: E402
from netemu.dataplane.proxy.iptables.sync import IptablesSyncer  # noqa: E402
from netemu.dataplane.proxy.runner import NetnsRunner, RunError  # noqa: E402
from netemu.dataplane.proxy.view import build_view, refresh_view  # noqa: E402
from bench_common import netns, services_and_slices  # noqa: E402

PREFIX = "ne-benchipt"
NODE_IP = "192.168.77.10"
CLUSTER_CIDR = "10.244.0.0/16"


def restore(ns: str, tool: str, payload: str) -> float:
    t0 = time.perf_counter()
    try:
        NetnsRunner(timeout=None).run(ns, [tool, "--noflush", "-w"], payload)
    except RunError as e:
        raise SystemExit(str(e)[:600]) from None
    return time.perf_counter() - t0


def cleanup() -> None:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX):
            subprocess.run(["ip", "netns", "del", name])


def bench(n: int, tool: str) -> dict:
    svcs, slices = services_and_slices(n)
    gc.collect()
    gc.freeze()  # the inputs are long-lived objects of the store, as in the lab's control process
    t0 = time.perf_counter()
    view = build_view(svcs, slices, node_name="w1", node_ips=[NODE_IP], cluster_cidr=CLUSTER_CIDR)
    syncer = IptablesSyncer()
    res = syncer.sync(view)
    render = time.perf_counter() - t0
    node, floor_ns = f"{PREFIX}-{n}-node", f"{PREFIX}-{n}-floor"
    netns(node)
    netns(floor_ns)
    try:
        payload = base_payload() + res.payload
        t1 = time.perf_counter()
        restore(node, tool, payload)
        apply = time.perf_counter() - t1
        floor = restore(floor_ns, tool, payload)

        # one endpoint of the last Service moves: what the lab's loop does on such a change
        last = slices[-1].model_copy(deep=True)
        last.endpoints[0].addresses = ["10.244.255.254"]
        last.metadata.resource_version = "2"
        key = f"{last.metadata.namespace}/{last.metadata.labels['kubernetes.io/service-name']}"
        t2 = time.perf_counter()
        view2 = refresh_view(view, [key], [svcs[-1]], [last])
        delta = syncer.sync(view2, changed=[key])
        restore(node, tool, delta.payload)
        change = time.perf_counter() - t2
        # the smallest change the tool can make on this loaded table: one new chain with one rule
        # (iptables-nft-restore reads the table's chains and rules before any change: that is most of it)
        change_floor = min(restore(node, tool, f"*nat\n:KUBE-BENCH-PROBE{i} - [0:0]\n"
                                                f"-A KUBE-BENCH-PROBE{i} -j RETURN\nCOMMIT\n") for i in range(3))

        # kube-proxy's own partial sync for the same change, for reference
        kp = IptablesSyncer(kube_proxy_compatible=True)
        kp.sync(view)
        t3 = time.perf_counter()
        kp_delta = kp.sync(view2, changed=[key])
        restore(node, tool, kp_delta.payload)
        resync = time.perf_counter() - t3
    finally:
        subprocess.run(["ip", "netns", "del", node])
        subprocess.run(["ip", "netns", "del", floor_ns])
    return {"render": render, "apply": apply, "floor": floor, "change": change, "change_floor": change_floor, "change_lines": delta.payload.count("\n"),
            "resync": resync, "lines": payload.count("\n")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,5000,10000")
    ap.add_argument("--backends", default="nft,legacy")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    cleanup()
    rows = []
    for backend in args.backends.split(","):
        tool = f"iptables-{backend}-restore"
        if shutil.which(tool) is None:
            print(f"{tool}: not installed, skipped")
            continue
        for n in [int(x) for x in args.sizes.split(",")]:
            r = bench(n, tool)
            rows.append((backend, n, r))
            print(f"{backend:>6} {n:>6} services: render {r['render']:.2f}s apply {r['apply']:.2f}s "
                  f"floor {r['floor']:.2f}s change {r['change'] * 1000:.0f}ms", flush=True)
    cleanup()
    print()
    hdr = (f"{'backend':<8}{'services':>9}{'lines':>9}{'render':>9}{'apply':>9}{'floor':>9}{'apply/floor':>12}"
           f"{'full sync/floor':>16}{'1 change':>10}{'1-rule floor':>13}{'kube-proxy partial':>19}")
    print(hdr)
    print("-" * len(hdr))
    for backend, n, r in rows:
        print(f"{backend:<8}{n:>9}{r['lines']:>9}{r['render']:>8.2f}s{r['apply']:>8.2f}s{r['floor']:>8.2f}s"
              f"{r['apply'] / r['floor']:>11.2f}x{(r['render'] + r['apply']) / r['floor']:>15.2f}x"
              f"{r['change'] * 1000:>8.0f}ms{r['change_floor'] * 1000:>11.0f}ms{r['resync'] * 1000:>17.0f}ms")
    print("\nfull sync = render + apply. 1 change = re-render + apply of the minimal payload "
          "(a KUBE-SVC chain and its KUBE-SEP chains), at the size of the row;\n1-rule floor = a bare restore "
          "of one new chain with one rule on the same loaded node (best of 3).")
    print("targets: full sync within 1.2x of the bare restore; one change at 10,000 services < 100 ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
