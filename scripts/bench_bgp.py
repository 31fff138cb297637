#!/usr/bin/env python3
"""MetalLB failover with real FRR, layer 3 (BGP) next to layer 2 in one lab and one run.

    sudo flock /tmp/netemu-bench.lock .venv/bin/python scripts/bench_bgp.py [--rounds 3]

The lab is topologies/bgp.yaml on its own addresses, plus a layer-2 pool on the lab segment. Two
LoadBalancer Services (externalTrafficPolicy Local, so a request fails only where the announcement is
stale, not because a live node forwards to a dead node's pod): one from the BGP pool (r1 spreads it
over the three workers, ECMP), one from the layer-2 pool (one announcing node). A client namespace on
the lab segment (never the host) sends a new HTTP request every 10 ms, each with a 250 ms deadline.

For each case, from just before the lab op (`netemu node down`, or `netemu speaker kill`):
  cut        the node's cable down (the switch port, polled): the CLI's own start-up and the API call
  fib        r1's kernel route to the BGP LB IP without the node's next hop (polled every 5 ms)
  recovered  the first request that succeeded after the last failed one was sent (every later one
             succeeded): what a client sees
BGP runs with BFD (300 ms x 3, so 0.9 s detection) and without it (hold time 3 s). Before each BFD
round the script waits for r1's BFD sessions to be up again (a round right after `node up` would
otherwise fall back to the hold time). Layer 2: `node down` of the announcing node.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

NET = "192.168.251"
BGP_POOL = "10.251.10.0/24"
L2_POOL = f"{NET}.240-{NET}.250"
ROUTER = f"{NET}.254"
WORKERS = {"w1-k8s": f"{NET}.101", "w2-k8s": f"{NET}.102", "w3-k8s": f"{NET}.103"}
BFD_DETECT = 0.9  # 300 ms x 3
HOLD = 3.0

PEER = """apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: r1, namespace: metallb-system}}
spec: {{myASN: 64512, peerASN: 64500, peerAddress: "{router}", holdTime: 3s{bfd}}}
"""
EXTRA = f"""
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: l2-pool, namespace: metallb-system}}
spec: {{addresses: ["{L2_POOL}"]}}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {{name: l2-adv, namespace: metallb-system}}
spec: {{ipAddressPools: [l2-pool]}}
---
apiVersion: v1
kind: Service
metadata:
  name: bgp-lb
  annotations: {{metallb.universe.tf/address-pool: bgp-pool}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {{app: np-pods}}
  ports: [{{port: 80}}]
---
apiVersion: v1
kind: Service
metadata:
  name: l2-lb
  annotations: {{metallb.universe.tf/address-pool: l2-pool}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {{app: np-pods}}
  ports: [{{port: 80}}]
"""

# Runs inside the client namespace: one new connection every 10 ms, each with its own deadline;
# prints "<CLOCK_MONOTONIC start> <1|0>" per request (the clock is the same in every namespace).
PROBER = r"""
import asyncio, sys, time
ip, seconds = sys.argv[1], float(sys.argv[2])
async def one(out):
    t = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(ip, 80), 0.25)
        w.write(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        ok = bool(await asyncio.wait_for(r.read(), 0.25))
        w.close()
    except Exception:
        ok = False
    out.append((t, ok))
async def main():
    out, tasks, end = [], [], time.monotonic() + seconds
    while time.monotonic() < end:
        tasks.append(asyncio.ensure_future(one(out)))
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    for t, ok in sorted(out):
        print(f"{t:.6f} {int(ok)}")
asyncio.run(main())
"""


def netemu(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "netemu", *args], capture_output=True, text=True, timeout=300)
    if check and r.returncode:
        raise SystemExit(f"netemu {' '.join(args)}: {r.stdout}{r.stderr}")
    return r


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def hops(ns: str, ip: str) -> set[str]:
    out = sh("ip", "-n", ns, "route", "show", ip, check=False).stdout
    return {w[w.index("via") + 1] for w in (line.split() for line in out.splitlines()) if "via" in w}


def bfd_up(lab: str) -> set[str]:
    """The workers' addresses whose BFD session r1 has up."""
    out = sh("vtysh", "--vty_socket", f"/run/frr/ne-{lab}_r1", "-c", "show bfd peers json", check=False).stdout
    try:
        peers = json.loads(out or "[]")
    except ValueError:
        return set()
    return {p.get("peer") for p in peers if p.get("status") == "up"}


def wait(pred, timeout=30.0, step=0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def lb_ip(lab: str, svc: str) -> str:
    def get():
        r = netemu("get", "svc", svc, "-o", "json", "--lab", lab, check=False)
        try:
            return (json.loads(r.stdout)["status"]["loadBalancer"].get("ingress") or [{}])[0].get("ip")
        except (ValueError, KeyError):
            return None
    if not wait(get, 30):
        raise SystemExit(f"{svc} got no EXTERNAL-IP")
    return get()


def announcer(lab: str, svc: str) -> str:
    return netemu("get", "svc", svc, "-o", "wide", "--lab", lab).stdout.splitlines()[1].split()[-1]


def pod_nodes(lab: str) -> list[str]:
    """The nodes of np-pods' ready pods."""
    pods = json.loads(netemu("get", "pods", "-l", "app=np-pods", "-o", "json", "--lab", lab).stdout)["items"]
    return sorted(p["spec"]["nodeName"] for p in pods if any(
        c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", [])))


def client_up(lab: str, client: str) -> None:
    sh("ip", "netns", "add", client)
    sh("ip", "-n", f"ne-{lab}", "link", "add", "zclient", "type", "veth", "peer", "name", "eth0", "netns", client)
    sh("ip", "-n", f"ne-{lab}", "link", "set", "zclient", "master", "br0", "up")
    sh("ip", "-n", client, "link", "set", "lo", "up")
    sh("ip", "-n", client, "addr", "add", f"{NET}.200/24", "dev", "eth0")
    sh("ip", "-n", client, "link", "set", "eth0", "up")
    sh("ip", "-n", client, "route", "add", BGP_POOL, "via", ROUTER)  # the pool via r1, as the host routes it


def recovered(samples: list[tuple[float, bool]], t0: float) -> float:
    """Seconds from t0 to the first success after the last failure (0 when nothing failed)."""
    after = [(t, ok) for t, ok in samples if t >= t0]
    fails = [i for i, (_, ok) in enumerate(after) if not ok]
    if not fails:
        return 0.0
    rest = after[fails[-1] + 1:]
    if not rest:
        return float("nan")  # still failing at the end of the window
    return rest[0][0] - t0


def port_down(lab: str, node: str) -> bool:
    from netemu.dataplane import names

    out = sh("ip", "-n", names.switch_netns(lab), "-o", "link", "show", "dev", names.switch_port(node), check=False).stdout
    return "state DOWN" in out or ",UP" not in out


def one_round(lab, client, ip, node, action, window) -> tuple[float, float, float]:
    """(cut, fib, recovered) seconds for one failure of node, then the node (or speaker) back."""
    prober = subprocess.Popen(["ip", "netns", "exec", client, sys.executable, "-c", PROBER, ip, str(window + 0.5)],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    t0 = time.monotonic()
    cmd = ["node", "down", node] if action == "node" else ["speaker", "kill", node]
    op = subprocess.Popen([sys.executable, "-m", "netemu", *cmd, "--lab", lab], stdout=subprocess.DEVNULL)
    fib = cut = float("nan")
    ns, node_ip = f"ne-{lab}_r1", WORKERS[node]
    bgp = ipaddress.ip_address(ip) in ipaddress.ip_network(BGP_POOL)
    while time.monotonic() - t0 < window and (fib != fib and bgp or cut != cut and action == "node"):
        if cut != cut and action == "node" and port_down(lab, node):
            cut = time.monotonic() - t0
        if fib != fib and bgp and node_ip not in hops(ns, ip):
            fib = time.monotonic() - t0
        time.sleep(0.003)
    out, _ = prober.communicate(timeout=window + 30)
    op.wait(60)
    samples = [(float(t), ok == "1") for t, ok in (line.split() for line in out.splitlines())]
    netemu(*(["node", "up", node] if action == "node" else ["speaker", "start", node]), "--lab", lab)
    return cut, fib, recovered(samples, t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    lab = f"bbgp{uuid.uuid4().hex[:4]}"
    client = f"ne-{lab}_zclient"
    src = open(os.path.join(os.path.dirname(HERE), "topologies", "bgp.yaml")).read()
    src = src.replace("name: bgp\n", f"name: {lab}\n", 1).replace("192.168.1.", f"{NET}.").replace(
        "10.10.10.0/24", BGP_POOL) + EXTRA
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, f"{lab}.yaml")
    with open(path, "w") as f:
        f.write(src)
    results: dict[str, list[tuple[float, float, float]]] = {}
    try:
        netemu("up", "-q", path)
        client_up(lab, client)
        bgp_ip, l2_ip = lb_ip(lab, "bgp-lb"), lb_ip(lab, "l2-lb")
        r1 = f"ne-{lab}_r1"
        for mode, bfd in (("BGP, BFD", ", bfdProfile: fast"), ("BGP, hold 3 s", "")):
            with open(os.path.join(tmp, "peer.yaml"), "w") as f:
                f.write(PEER.format(router=ROUTER, bfd=bfd))
            netemu("apply", "-f", os.path.join(tmp, "peer.yaml"), "--lab", lab)
            for action in ("node", "speaker"):
                for _ in range(args.rounds):
                    # Local policy: the nodes with a ready pod announce (pods move when a node stays down)
                    wait(lambda: len(pod_nodes(lab)) == 3, 60)
                    hosts = pod_nodes(lab)
                    workers = {WORKERS[n] for n in set(hosts)}
                    victim = "w2-k8s" if "w2-k8s" in hosts else hosts[0]
                    if not wait(lambda: hops(r1, bgp_ip) == workers, 60):  # noqa: B023
                        raise SystemExit(f"r1 has no three next hops for {bgp_ip}: {hops(r1, bgp_ip)}")
                    if bfd and not wait(lambda: bfd_up(lab) >= workers, 30):
                        raise SystemExit(f"r1's BFD sessions are not up: {bfd_up(lab)}")
                    time.sleep(1)
                    results.setdefault(f"{mode}, {action} down" if action == "node" else f"{mode}, speaker kill",
                                       []).append(one_round(lab, client, bgp_ip, victim, action,
                                                            4.0 if bfd else 7.0))
        for _ in range(args.rounds):
            node = announcer(lab, "l2-lb")
            if not wait(lambda: sh("ip", "netns", "exec", client, "curl", "-s", "-m", "0.5", f"http://{l2_ip}/",
                                   check=False).returncode == 0, 30):
                raise SystemExit(f"{l2_ip} does not answer")
            time.sleep(1)
            results.setdefault("layer 2, node down", []).append(one_round(lab, client, l2_ip, node, "node", 4.0))
    finally:
        sh("ip", "netns", "del", client, check=False)
        netemu("down", lab, check=False)
    def fmt(x: float) -> str:
        return "-" if x != x else f"{x:.3f}"

    print(f"\n{'case (medians, s)':<28} {'cut':>6} {'fib':>6} {'fib-cut':>7} {'recovered':>9} {'max':>6}  recovered / 0.9 s")
    for case, vals in results.items():
        cut = statistics.median(v[0] for v in vals)
        fib = statistics.median(v[1] for v in vals)
        rec = [v[2] for v in vals]
        med = statistics.median(rec)
        det = statistics.median(v[1] - v[0] for v in vals)
        print(f"{case:<28} {fmt(cut):>6} {fmt(fib):>6} {fmt(det):>7} {med:9.3f} {max(rec):6.3f}  {med / BFD_DETECT:5.2f}x")
    print("target: with BFD, node down recovered under 1 s and within 1.5x of BFD's detection time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
