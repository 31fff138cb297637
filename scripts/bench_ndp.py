#!/usr/bin/env python3
"""NDP reply latency (issue 19): the speaker's Neighbor Advertisement for an IPv6 LoadBalancer IP against
the node kernel's own NA for the node's address, and against the IPv4 rows (ARP), in one run, interleaved.

Two namespaces of its own and a veth pair between them (nothing else is touched):

    eth0 [ne-bndp-n1] fd00:99:1::11 10.99.1.11  the node: a Speaker announcing fd00:99:1::200 and 10.99.1.200
    eth0 [ne-bndp-cl] fd00:99:1::2  10.99.1.2   the client: Neighbor Solicitations and ARP requests from raw sockets

The client (a separate process, so it never waits for the speaker's GIL) times each solicitation (ARP
request) from its send to the matching advertisement's (reply's) arrival, alternating between the four
targets. Two speakers in turn, each row per family:

    speaker       the speaker answers from its raw sockets (the lab's way in IPVS mode)
    kernel_reply  the speaker programs proxy NDP / proxy ARP entries and the node's kernel answers
                  (the lab's way in iptables and nftables modes)
    node IP       the node's own address, answered by its kernel (the reference)

On this 2-core machine (6.18 kernel, other labs running) the kernel's own NA takes 2-3x its own ARP
reply (not measured why; likely its ICMPv6 output path against ARP's direct send), so "within 1.1x of the IPv4 row" can only
hold against the kernel's own NA: kernel_reply's IPv6 LB IP comes out 0.84-1.08x of it, the speaker's
raw socket 1.7-2.2x (a thread wake-up per solicitation, as for ARP).

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
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netemu.dataplane import ndp, nsutil  # noqa: E402

PREFIX = "ne-bndp-"
NODE, CLIENT = PREFIX + "n1", PREFIX + "cl"
NET = "fd00:99:1::"
IPS = {NODE: NET + "11", CLIENT: NET + "2"}
VIP = NET + "200"
NET4 = "10.99.1."
IPS4 = {NODE: NET4 + "11", CLIENT: NET4 + "2"}
VIP4 = NET4 + "200"


# --------------------------------------------------------------------------- the probe (client side)
def probe(netns: str, targets: list[str], count: int, gap: float = 0.01, timeout: float = 1.0,
          iface: str = "eth0") -> dict[str, list[float]]:
    """Round trips in microseconds per target: an IPv6 target's Neighbor Solicitation (multicast, with
    the source link-layer option, as a kernel sends it) or an IPv4 target's ARP request (broadcast)
    from its send to the answer for that target; the targets alternate, ``count`` probes each; a
    probe unanswered within ``timeout`` is left out."""
    from netemu.dataplane.speaker import ARP_REQUEST, BROADCAST, ETH_P_ARP, arp_frame, attach_filter

    v6 = [t for t in targets if ipaddress.ip_address(t).version == 6]
    v4 = [t for t in targets if ipaddress.ip_address(t).version == 4]
    with nsutil.in_netns(netns):
        s6 = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        attach_filter(s6, ndp.icmpv6_filter(ndp.ICMPV6_NA))
        s6.bind((iface, ndp.ETH_P_IPV6))
        s4 = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        s4.bind((iface, ETH_P_ARP))
        with open("/proc/thread-self/net/if_inet6") as f:
            mine6 = [a for a, scope, _ in ndp.parse_if_inet6(f.read(), iface) if scope == 0]
        mine4 = None
        if v4:
            probe_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe_sock.connect((v4[0], 9))  # no packet: the source address the kernel would use
            mine4 = socket.inet_aton(probe_sock.getsockname()[0])
            probe_sock.close()
    mac = bytes(s6.getsockname()[4])
    src6 = mine6[0] if v6 else None
    frames = {}
    for t in v6:
        frames[t] = ndp.neighbor_solicitation(mac, src6, ipaddress.IPv6Address(t).packed)
    for t in v4:
        frames[t] = arp_frame(ARP_REQUEST, mac, mac, mine4, b"\x00" * 6, socket.inet_aton(t), BROADCAST)

    def answered(t: str, frame: bytes) -> bool:
        if t in v4:  # an ARP reply from the target to us
            return frame[20:22] == b"\x00\x02" and frame[28:32] == socket.inet_aton(t) and frame[38:42] == mine4
        na = ndp.parse_na(frame)
        return na is not None and na.target == ipaddress.IPv6Address(t).packed and na.solicited and na.dst == src6

    out: dict[str, list[float]] = {t: [] for t in targets}
    try:
        for _ in range(count):
            for t in targets:
                s = s4 if t in v4 else s6
                s.settimeout(timeout)
                t0 = time.perf_counter_ns()
                s.send(frames[t])
                end = time.monotonic() + timeout
                while True:
                    try:
                        frame = s.recv(2048)
                    except socket.timeout:
                        break
                    if answered(t, frame):
                        out[t].append((time.perf_counter_ns() - t0) / 1000)
                        break
                    s.settimeout(max(0.001, end - time.monotonic()))
                time.sleep(gap)
    finally:
        s4.close()
        s6.close()
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


def segment_up(prefix: str, ips: dict[str, str], ips4: Optional[dict[str, str]] = None) -> dict[str, str]:
    """Two namespaces joined by a veth pair (eth0 each), IPv6 (and IPv4 addresses if given), no DAD, no
    router advertisements, the first one forwarding as a lab's node does; returns each eth0's MAC."""
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
        if ips4:
            sh("ip", "-n", ns, "addr", "add", f"{ips4[ns]}/24", "dev", "eth0")
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


def measure(kernel_reply: bool, count: int, rounds: int) -> tuple[dict[str, list[float]], dict]:
    """Round trips per target (the LB IPs and the node IPs of both families) with one speaker."""
    from netemu.dataplane.speaker import Speaker

    targets = [VIP, IPS[NODE], VIP4, IPS4[NODE]]
    sp = Speaker("n1", NODE, kernel_reply=kernel_reply)
    try:
        sp.set_announced({VIP, VIP4})
        time.sleep(0.1)
        run_probe(CLIENT, targets, 5)  # warm up (neighbour entries, caches)
        out: dict[str, list[float]] = {t: [] for t in targets}
        for _ in range(rounds):
            for t, values in run_probe(CLIENT, targets, count).items():
                out[t] += values
        return out, sp.stats.as_dict()
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
        segment_up(PREFIX, IPS, IPS4)
        sh("ip", "-n", NODE, "link", "add", "cni0", "type", "bridge")  # where proxy ARP's /32 route points
        sh("ip", "-n", NODE, "link", "set", "cni0", "up")
        rows = [(mode, *measure(kernel_reply, args.count, args.rounds))
                for mode, kernel_reply in (("speaker", False), ("kernel_reply", True))]
    finally:
        segment_down(PREFIX)
    print(f"\nround trip from a client namespace (us): NS -> NA (IPv6), ARP request -> reply (IPv4); "
          f"{args.rounds} x {args.count} probes per target, the four targets interleaved")
    print(f"{'':<40}{'p50':>8}{'p99':>8}{'n':>6}{'p50 / own':>11}{'p50 / IPv4':>12}")
    for mode, got, stats in rows:
        how = {"speaker": "speaker's raw socket", "kernel_reply": "kernel_reply (proxy NDP / ARP)"}[mode]
        print(f"{mode}: LB IPs answered by the {how}; node IPs by the node's kernel")
        for lb, node, v4lb, label in ((VIP, IPS[NODE], VIP4, "IPv6 LB IP"), (VIP4, IPS4[NODE], None, "IPv4 LB IP")):
            ratio4 = f"{statistics.median(got[lb]) / statistics.median(got[v4lb]):>11.2f}x" if v4lb else ""
            print(f"  {label:<38}{pct(got[lb], 50):>8.1f}{pct(got[lb], 99):>8.1f}{len(got[lb]):>6}"
                  f"{statistics.median(got[lb]) / statistics.median(got[node]):>10.2f}x{ratio4}")
            fam = "IPv6" if lb == VIP else "IPv4"
            print(f"  {'  ' + fam + ' node IP, its kernel':<38}{pct(got[node], 50):>8.1f}{pct(got[node], 99):>8.1f}"
                  f"{len(got[node]):>6}")
        print(f"  speaker stats: replies {stats['replies']}, kernel_replies {stats['kernel_replies']}, "
              f"requests {stats['requests']}, ignored {stats['ignored']}")
    print("targets: the IPv6 LB IP within 1.1x of the kernel's own NA, and of the IPv4 row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
