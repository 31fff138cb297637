#!/usr/bin/env python3
"""MetalLB BGP failover with real FRR: time from `node down` (and from a speaker kill) to the router's FIB
without that node's next hop, with BFD (300 ms x 3) and without it (hold time 3 s).

    sudo flock /tmp/netemu-bench.lock .venv/bin/python scripts/bench_bgp.py [--rounds 3]

The clock starts just before the lab op is sent (the op's own latency is included) and stops at the first
`ip -n <router> route show <LB IP>` without the node's address (polled every 5 ms).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

PEER = """apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: r1, namespace: metallb-system}}
spec: {{myASN: 64512, peerASN: 64500, peerAddress: "{router}", holdTime: 3s{bfd}}}
"""


def netemu(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "netemu", *args], capture_output=True, text=True, timeout=300)
    if check and r.returncode:
        raise SystemExit(f"netemu {' '.join(args)}: {r.stdout}{r.stderr}")
    return r


def hops(ns: str, ip: str) -> set[str]:
    out = subprocess.run(["ip", "-n", ns, "route", "show", ip], capture_output=True, text=True).stdout
    return {w[w.index("via") + 1] for w in (line.split() for line in out.splitlines()) if "via" in w}


def wait(pred, timeout=30.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def measure(lab, ns, ip, node, node_ip, action) -> float:
    t0 = time.monotonic()
    cmd = ["node", "down", node] if action == "node" else ["speaker", "kill", node]
    p = subprocess.Popen([sys.executable, "-m", "netemu", *cmd, "--lab", lab], stdout=subprocess.DEVNULL)
    took = None
    while time.monotonic() - t0 < 15:
        if node_ip not in hops(ns, ip):
            took = time.monotonic() - t0
            break
        time.sleep(0.005)
    p.wait(60)
    netemu(*(["node", "up", node] if action == "node" else ["speaker", "start", node]), "--lab", lab)
    return took if took is not None else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    lab = f"bbgp{uuid.uuid4().hex[:4]}"
    net = "192.168.251.0/24"
    base = net.rsplit(".", 1)[0]
    router = f"{base}.254"
    src = open(os.path.join(os.path.dirname(HERE), "topologies", "bgp.yaml")).read()
    src = src.replace("name: bgp\n", f"name: {lab}\n", 1).replace("192.168.1.", f"{base}.").replace(
        "10.10.10.0/24", "10.251.10.0/24")
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, f"{lab}.yaml")
    with open(path, "w") as f:
        f.write(src)
    results: dict[str, list[float]] = {}
    try:
        netemu("up", path)
        netemu("expose", "deployment", "np-pods", "--type=LoadBalancer", "--name=np-lb", "--port=80", "--lab", lab)
        ns = f"ne-{lab}_r1"
        ip = str(ipaddress.ip_network("10.251.10.0/24").network_address + 1)
        workers = {f"{base}.101", f"{base}.102", f"{base}.103"}
        for mode, bfd in (("bfd", ", bfdProfile: fast"), ("hold", "")):
            with open(os.path.join(tmp, "peer.yaml"), "w") as f:
                f.write(PEER.format(router=router, bfd=bfd))
            netemu("apply", "-f", os.path.join(tmp, "peer.yaml"), "--lab", lab)
            for action in ("node", "speaker"):
                for _ in range(args.rounds):
                    if not wait(lambda: hops(ns, ip) == workers, 30):
                        raise SystemExit(f"r1 has no three next hops for {ip}: {hops(ns, ip)}")
                    time.sleep(1)
                    results.setdefault(f"{mode}/{action}", []).append(
                        measure(lab, ns, ip, "w2-k8s", f"{base}.102", action))
    finally:
        netemu("down", lab, check=False)
    detect = 0.9
    print(f"{'case':<16} {'median s':>9} {'max s':>7}  x BFD detection (0.9 s)")
    for case, vals in results.items():
        med = statistics.median(vals)
        print(f"{case:<16} {med:9.3f} {max(vals):7.3f}  {med / detect:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
