#!/usr/bin/env python3
"""NDP reply latency (issue 19): the speaker's Neighbor Advertisement for an IPv6 LoadBalancer IP against
the node kernel's own NA for the node's address, in one run, interleaved.

Two namespaces of its own and a veth pair between them (nothing else is touched):

    eth0 [ne-bndp-n1] fd00:99:1::11  the node: a Speaker announcing fd00:99:1::200, its kernel owning ::11
    eth0 [ne-bndp-cl] fd00:99:1::2   the client: sends Neighbor Solicitations from a raw packet socket

The client (a separate process, so it never waits for the speaker's GIL) times each solicitation from
its send to the matching advertisement's arrival, alternating between the two targets. Rows:

    speaker  the speaker answers from its raw socket (the lab's way in IPVS mode)
    proxy    kernel_reply: the speaker programs a proxy NDP entry and the node's kernel answers
             (the lab's way in iptables and nftables modes)
    kernel   the node's own address, answered by its kernel (the reference)

Run as root: .venv/bin/python scripts/bench_ndp.py [--count 200] [--rounds 5]
The probe alone (what tests/e2e/test_speaker_ndp.py runs): bench_ndp.py probe NETNS TARGET... --count N
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netemu.dataplane import ndp, nsutil  # noqa: E402

PREFIX = "ne-bndp-"
NODE, CLIENT = PREFIX + "n1", PREFIX + "cl"
NET = "fd00:99:1::"
IPS = {NODE: NET + "11", CLIENT: NET + "2"}
VIP = NET + "200"


# --------------------------------------------------------------------------- the probe (client side)
def probe(netns: str, targets: list[str], count: int, gap: float = 0.01, timeout: float = 1.0,
          iface: str = "eth0") -> dict[str, list[float]]:
    """Round trips in microseconds per target: solicitation sent (multicast, with the source
    link-layer option, as a kernel sends it) to the advertisement for that target received; the
    targets alternate, ``count`` probes each; a probe unanswered within ``timeout`` is left out."""
    from netemu.dataplane.speaker import attach_filter

    with nsutil.in_netns(netns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        attach_filter(s, ndp.icmpv6_filter(ndp.ICMPV6_NA))
        s.bind((iface, ndp.ETH_P_IPV6))
        with open("/proc/thread-self/net/if_inet6") as f:
            mine = [a for a, scope, _ in ndp.parse_if_inet6(f.read(), iface) if scope == 0]
    mac = bytes(s.getsockname()[4])
    src = mine[0]
    frames = {t: ndp.neighbor_solicitation(mac, src, ipaddress.IPv6Address(t).packed) for t in targets}
    out: dict[str, list[float]] = {t: [] for t in targets}
    try:
        for _ in range(count):
            for t in targets:
                want = ipaddress.IPv6Address(t).packed
                s.settimeout(timeout)
                t0 = time.perf_counter_ns()
                s.send(frames[t])
                end = time.monotonic() + timeout
                while True:
                    try:
                        frame = s.recv(2048)
                    except socket.timeout:
                        break
                    na = ndp.parse_na(frame)
                    if na is not None and na.target == want and na.solicited and na.dst == src:
                        out[t].append((time.perf_counter_ns() - t0) / 1000)
                        break
                    s.settimeout(max(0.001, end - time.monotonic()))
                time.sleep(gap)
    finally:
        s.close()
    return out


def run_probe(netns: str, targets: list[str], count: int, timeout: float = 1.0) -> dict[str, list[float]]:
    """The probe in a process of its own (this script's `probe` command)."""
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "probe", netns, *targets, "--count", str(count),
                          "--timeout", str(timeout)], capture_output=True, text=True,
                         timeout=60 + count * len(targets) * (timeout + 0.05))
    if res.returncode != 0:
        raise RuntimeError(f"probe failed: {res.stderr.strip()}")
    return json.loads(res.stdout)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


# --------------------------------------------------------------------------- the segment
def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(list(argv), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip()}")
    return res


IPV6_QUIET = {"disable_ipv6": "0", "accept_ra": "0", "accept_dad": "0", "autoconf": "0"}


def segment_up(prefix: str, ips: dict[str, str]) -> dict[str, str]:
    """Two namespaces joined by a veth pair (eth0 each), IPv6 only, no DAD, no router advertisements,
    the first one forwarding as a lab's node does; returns each namespace's eth0 MAC."""
    a, b = list(ips)
    for ns in (a, b):
        sh("ip", "netns", "add", ns)
    sh("ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
    macs = {}
    for ns in (a, b):
        values = {}
        for scope in ("all", "default", "eth0"):
            values.update({f"net.ipv6.conf.{scope}.{k}": v for k, v in IPV6_QUIET.items()})
        if ns == a:
            values["net.ipv6.conf.all.forwarding"] = "1"
        nsutil.write_sysctl_in(ns, values)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "addr", "add", f"{ips[ns]}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        macs[ns] = re.search(r"link/ether ([0-9a-f:]{17})", sh("ip", "-n", ns, "-o", "link", "show", "eth0").stdout)[1]
    deadline = time.monotonic() + 5  # the link-local addresses come with the carrier
    while time.monotonic() < deadline:
        if all("fe80::" in sh("ip", "-n", ns, "-6", "-o", "addr", "show", "dev", "eth0").stdout for ns in (a, b)):
            break
        time.sleep(0.02)
    return macs


def segment_down(prefix: str) -> None:
    for line in sh("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(prefix):
            sh("ip", "netns", "del", name, check=False)


def measure(kernel_reply: bool, count: int, rounds: int) -> tuple[list[float], list[float], dict]:
    from netemu.dataplane.speaker import Speaker

    sp = Speaker("n1", NODE, kernel_reply=kernel_reply)
    try:
        sp.set_announced({VIP})
        time.sleep(0.1)
        run_probe(CLIENT, [VIP, IPS[NODE]], 5)  # warm up (neighbour entries, caches)
        lb, node = [], []
        for _ in range(rounds):
            got = run_probe(CLIENT, [VIP, IPS[NODE]], count)
            lb += got[VIP]
            node += got[IPS[NODE]]
        return lb, node, sp.stats.as_dict()
    finally:
        sp.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser("probe", help="time solicitations from NETNS to TARGETs; prints JSON (microseconds)")
    p.add_argument("netns")
    p.add_argument("targets", nargs="+")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--count", type=int, default=200, help="probes per target per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if args.cmd == "probe":
        print(json.dumps(probe(args.netns, args.targets, args.count, timeout=args.timeout)))
        return 0
    if os.geteuid() != 0:
        print("run as root: it builds two network namespaces", file=sys.stderr)
        return 2
    segment_down(PREFIX)
    try:
        segment_up(PREFIX, IPS)
        rows = []
        for mode, kernel_reply in (("speaker", False), ("proxy", True)):
            lb, node, stats = measure(kernel_reply, args.count, args.rounds)
            rows.append((mode, lb, node, stats))
    finally:
        segment_down(PREFIX)
    print(f"\nNS -> NA round trip from a client namespace (us), {args.rounds} x {args.count} probes per target,"
          f" LB IP and node IP interleaved")
    print(f"{'':<34}{'p50':>8}{'p99':>8}{'n':>6}   {'p50 ratio to the kernel':>24}")
    for mode, lb, node, stats in rows:
        label = {"speaker": "LB IP, speaker's raw socket", "proxy": "LB IP, proxy NDP (kernel_reply)"}[mode]
        print(f"{label:<34}{pct(lb, 50):>8.1f}{pct(lb, 99):>8.1f}{len(lb):>6}   "
              f"{statistics.median(lb) / statistics.median(node):>23.2f}x")
        print(f"{'  node IP, its kernel (same run)':<34}{pct(node, 50):>8.1f}{pct(node, 99):>8.1f}{len(node):>6}")
        print(f"  speaker stats: replies {stats['replies']}, kernel_replies {stats['kernel_replies']}, "
              f"requests {stats['requests']}, ignored {stats['ignored']}")
    print("target: within 1.1x of the kernel's own NA")
    return 0


if __name__ == "__main__":
    sys.exit(main())
