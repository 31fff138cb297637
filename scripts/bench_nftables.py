"""Loading kube-proxy's nftables ruleset at 1,000 / 5,000 / 10,000 Services (run as root).

For N ClusterIP Services with 2 endpoints each (the shape of scripts/bench_iptables.py), each
load into its own fresh network namespace (ne-tnft-bench-*, removed at the start and the end):

  fast       netemu's strategy: NftSyncer's first full sync (fast form: one `numgen random mod k
             0 goto` rule per endpoint instead of an anonymous vmap per Service, elements of a map
             in one command), one `nft -f`
  kube-proxy render(view).text(): kube-proxy's own full-sync transaction, one `nft -f`
  named      the kube-proxy text with a named verdict map per Service instead of an anonymous one
  batched    the kube-proxy text, base objects first, then Services in transactions of --batch
  iptables   iptables-nft-restore of the iptables mode's payload for the same view (the lab's
             first sync: base chains and jumps plus the full payload)
  iptables-legacy   the same payload through iptables-legacy-restore (not run unless asked)

and at the largest size, on the loaded node, one endpoint of the last Service replaced: the
partial sync (render + `nft -f`) of the fast form, of the kube-proxy form, and the iptables
mode's minimal partial restore.

    sudo .venv/bin/python scripts/bench_nftables.py [--sizes 1000,5000,10000]
        [--strategies fast,kube-proxy,named,batched,iptables[,iptables-legacy]] [--batch 500]
        [--timeout 600]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_common, also when loaded by path

from bench_common import netns, services_and_slices  # noqa: E402
from netemu.dataplane.proxy.iptables.sync import IptablesSyncer  # noqa: E402
from netemu.dataplane.proxy.nftables.render import (
    KUBE_PROXY,
    NftRenderer,
    NftSettings,
    Tx,
    render,
    setup_ops,
    write_ops,
)
from netemu.dataplane.proxy.nftables.sync import NftSyncer
from netemu.dataplane.proxy.runner import NetnsRunner
from netemu.dataplane.proxy.view import build_view, refresh_view

PREFIX = "ne-tnft-bench"
NODE_IP = "192.168.77.10"
CLUSTER_CIDR = "10.244.0.0/16"
SETTINGS = NftSettings(service_cidrs=("10.96.0.0/12",))
STRATEGIES = ("fast", "kube-proxy", "named", "batched", "iptables", "iptables-legacy")
DEFAULT_STRATEGIES = STRATEGIES[:5]


# --------------------------------------------------------------------------- namespaces and tools
def netns_del(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def cleanup() -> None:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX):
            netns_del(name)


def run(ns: str, argv: list[str], stdin: str, timeout: float) -> float:
    """Run a tool in a namespace, return its wall-clock time (raise on failure)."""
    t0 = time.perf_counter()
    NetnsRunner(timeout).run(ns, argv, stdin)
    return time.perf_counter() - t0


def nft(ns: str, text: str, timeout: float) -> float:
    return run(ns, ["nft", "-f", "-"], text, timeout)


# --------------------------------------------------------------------------- alternative loads
_VMAP = re.compile(r"^add rule (\S+) (\S+) (\S+) numgen random mod (\d+) vmap \{ (.*) \}$")


def named_vmaps(text: str) -> str:
    """kube-proxy's text with each anonymous `vmap { ... }` replaced by a named map."""
    out = []
    for line in text.splitlines():
        m = _VMAP.match(line)
        if not m:
            out.append(line)
            continue
        fam, table, chain, n, entries = m.groups()
        name = "lb-" + chain.split("-", 1)[1]
        out.append(f"add map {fam} {table} {name} {{ typeof numgen random mod {n} : verdict ; }}")
        out.append(f"add element {fam} {table} {name} {{ {entries} }}")
        out.append(f"add rule {fam} {table} {chain} numgen random mod {n} vmap @{name}")
    return "\n".join(out) + "\n"


def batched(view, batch: int) -> list[str]:
    """kube-proxy's objects and rule forms, loaded as base objects then `batch` Services per
    transaction (each transaction only adds: no anonymous set of another batch is touched)."""
    r = NftRenderer(KUBE_PROXY, SETTINGS)
    r.update(view)
    ctx = r.context
    assert ctx is not None
    head = Tx(ctx.family)
    setup_ops(head, ctx, fresh=True)
    out = [head.text()]
    keys = r.service_keys()
    for i in range(0, len(keys), batch):
        tx = Tx(ctx.family)
        write_ops(tx, ctx, (p for key in keys[i:i + batch] for p in r.ports(key)), set(), flush=False,
                  on_elem=tx.element)
        out.append(tx.text())
    return out


def iptables_payload(view) -> str:
    from netemu.dataplane.proxy.iptables.render import base_payload   # the lab's first sync: base chains + payload
    return base_payload() + IptablesSyncer().sync(view).payload


# --------------------------------------------------------------------------- one size
def bench(n: int, strategies: list[str], batch: int, timeout: float, change: bool) -> dict:
    svcs, slices = services_and_slices(n)
    out: dict = {"n": n}
    t0 = time.perf_counter()
    view = build_view(svcs, slices, node_name="w1", node_ips=[NODE_IP], cluster_cidr=CLUSTER_CIDR)
    out["view"] = time.perf_counter() - t0

    # the change measured at the largest size: one endpoint of the last Service replaced
    last = slices[-1].model_copy(deep=True)
    last.endpoints[0].addresses = ["10.244.255.254"]
    key = f"{last.metadata.namespace}/{last.metadata.labels['kubernetes.io/service-name']}"

    for strategy in strategies:
        ns = f"{PREFIX}-{strategy}-{n}"
        netns(ns)
        try:
            if strategy == "fast":
                t1 = time.perf_counter()
                syncer = NftSyncer("fast", SETTINGS)
                syncer.reset(fresh=True)
                res = syncer.sync(view, now=0)
                out["fast_render"] = time.perf_counter() - t1
                out["fast_lines"] = res.payload.count("\n")
                out["fast"] = nft(ns, res.payload, timeout)
                if change:
                    t2 = time.perf_counter()
                    view2 = refresh_view(view, [key], [svcs[-1]], [last])
                    d = syncer.sync(view2, [key], now=10)
                    out["fast_change_render"] = time.perf_counter() - t2
                    out["fast_change"] = nft(ns, d.payload, timeout) + out["fast_change_render"]
                    out["fast_change_ops"] = d.operations
            elif strategy == "kube-proxy":
                t1 = time.perf_counter()
                text = render(view, SETTINGS).text()
                out["kp_render"] = time.perf_counter() - t1
                out["kp_lines"] = text.count("\n")
                try:
                    out["kube-proxy"] = nft(ns, text, timeout)
                except subprocess.TimeoutExpired:
                    out["kube-proxy"] = None
                    continue
                if change:
                    syncer = NftSyncer(KUBE_PROXY, SETTINGS)
                    syncer.sync(view, now=0)
                    t2 = time.perf_counter()
                    view2 = refresh_view(view, [key], [svcs[-1]], [last])
                    d = syncer.sync(view2, [key], now=10)
                    rendered = time.perf_counter() - t2
                    out["kp_change"] = rendered + nft(ns, d.payload, timeout)
                    out["kp_change_ops"] = d.operations
            elif strategy == "named":
                text = named_vmaps(render(view, SETTINGS).text())
                try:
                    out["named"] = nft(ns, text, timeout)
                except subprocess.TimeoutExpired:
                    out["named"] = None
            elif strategy == "batched":
                total = 0.0
                for tx in batched(view, batch):
                    total += nft(ns, tx, timeout)
                out["batched"] = total
            elif strategy == "iptables-legacy":
                # for reference only, and only ever inside the throwaway namespace
                out["iptables-legacy"] = run(ns, ["iptables-legacy-restore", "--noflush", "-w"], iptables_payload(view),
                                             timeout)
            elif strategy == "iptables":
                payload = iptables_payload(view)
                out["ipt_lines"] = payload.count("\n")
                out["iptables"] = run(ns, ["iptables-nft-restore", "--noflush", "-w"], payload, timeout)
                if change:
                    syncer_i = IptablesSyncer()
                    syncer_i.sync(view)
                    t2 = time.perf_counter()
                    view2 = refresh_view(view, [key], [svcs[-1]], [last])
                    d = syncer_i.sync(view2, changed=[key])
                    rendered = time.perf_counter() - t2
                    out["ipt_change"] = rendered + run(ns, ["iptables-nft-restore", "--noflush", "-w"], d.payload,
                                                       timeout)
        finally:
            netns_del(ns)
    return out


def _fmt(v: Optional[float], timeout: float) -> str:
    if v is None:
        return f">{timeout:.0f}s"
    return f"{v:.2f}s"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,5000,10000")
    ap.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                    help=f"some of {','.join(STRATEGIES)}")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--timeout", type=float, default=600.0, help="give up on one load after this many seconds")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    strategies = [s for s in args.strategies.split(",") if s]
    for s in strategies:
        if s not in STRATEGIES:
            raise SystemExit(f"unknown strategy {s}")
    sizes = [int(x) for x in args.sizes.split(",")]
    cleanup()
    rows = []
    try:
        for n in sizes:
            r = bench(n, strategies, args.batch, args.timeout, change=(n == max(sizes)))
            rows.append(r)
            print(f"{n:>6} services: " + "  ".join(f"{s} {_fmt(r.get(s), args.timeout)}" for s in strategies
                                                    if s in r), flush=True)
    finally:
        cleanup()
    print()
    cols = [s for s in strategies]
    width = {c: max(12, len(c) + 2) for c in cols}
    hdr = f"{'services':>9}" + "".join(f"{c:>{width[c]}}" for c in cols) + (f"{'fast/iptables':>15}" if
                                                                            {"fast", "iptables"} <= set(cols) else "")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        line = f"{r['n']:>9}" + "".join(f"{_fmt(r.get(c), args.timeout):>{width[c]}}" for c in cols)
        if {"fast", "iptables"} <= set(cols) and r.get("fast") and r.get("iptables"):
            line += f"{r['fast'] / r['iptables']:>14.2f}x"
        print(line)
    big = rows[-1]
    print(f"\nload = the `nft -f` (or iptables-nft-restore) call alone, into a fresh namespace; "
          f"rendering the fast payload took {big.get('fast_render', 0):.2f}s at {big['n']} services "
          f"({big.get('fast_lines', 0)} lines; kube-proxy text {big.get('kp_lines', 0)} lines, "
          f"iptables payload {big.get('ipt_lines', 0)} lines).")
    changes = [("fast partial sync", "fast_change", "fast_change_ops"), ("kube-proxy partial sync", "kp_change",
                                                                          "kp_change_ops"),
               ("iptables minimal partial", "ipt_change", None)]
    for label, k, ops in changes:
        if k in big:
            extra = f" ({big[ops]} operations)" if ops and ops in big else ""
            print(f"one endpoint changed at {big['n']}: {label} {big[k] * 1000:.0f} ms render+apply{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
