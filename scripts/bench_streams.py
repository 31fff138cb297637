#!/usr/bin/env python3
"""Streams benchmark (issue 14): `kubectl port-forward` throughput and `kubectl exec` round trip.

- port-forward: a pod sends --megabytes (1 GB by default) on each connection to its port 9000; we
  read it through `kubectl port-forward` (WebSocket-tunnelled SPDY, kubectl 1.32's default; and
  plain SPDY), next to its floor: the same transfer over a direct TCP connection made inside the
  pod's network namespace. Target: >= 1 Gbit/s through kubectl, with its ratio to the floor.
- exec: `kubectl exec <pod> -- true` next to `kubectl version --client` (kubectl's own start-up),
  medians of --rounds runs. Target: within 50 ms.

Its own lab (`benchstreams`, 192.168.253.0/24); every byte goes over 127.0.0.1 or stays inside the
lab's namespaces. Run as root:  .venv/bin/python scripts/bench_streams.py [--megabytes 1024]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
NETEMU = [sys.executable, "-m", "netemu"]
LAB = "benchstreams"
PORT = 9000

# the sender: the host's python3, in the pod; each connection gets the size it asks for (8 digits)
SENDER = r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000)); s.listen(16)
buf = b"x" * (1 << 20)
while True:
    c, _ = s.accept()
    want = b""
    while len(want) < 12:
        d = c.recv(12 - len(want))
        if not d: break
        want += d
    n = int(want or b"0")
    while n > 0:
        c.sendall(buf[:min(n, len(buf))]); n -= len(buf)
    c.close()
"""

LAB_DOC = f"""\
apiVersion: netemu.dev/v1alpha1
kind: Lab
metadata: {{name: {LAB}}}
spec:
  network: 192.168.253.0/24
  gateway: 192.168.253.1
  podCIDR: 172.31.0.0/16
  serviceCIDR: 10.253.0.0/16
  clusterDNS: 10.253.0.10
  nodes:
  - {{name: m-k8s, ip: 192.168.253.10, role: control-plane}}
  - {{name: w1-k8s, ip: 192.168.253.101}}
---
apiVersion: v1
kind: Pod
metadata: {{name: sender}}
spec:
  containers:
  - name: sender
    image: python
    command: ["python3", "-c", {json.dumps(SENDER)}]
    ports: [{{containerPort: {PORT}}}]
"""


def receive(sock: socket.socket, nbytes: int) -> tuple[int, float]:
    """Ask for nbytes, read until EOF; (bytes, seconds)."""
    sock.sendall(b"%012d" % nbytes)
    buf = bytearray(1 << 20)
    got, t0 = 0, time.perf_counter()
    while True:
        n = sock.recv_into(buf)
        if not n:
            break
        got += n
    return got, time.perf_counter() - t0


def direct(netns: str, nbytes: int) -> tuple[int, float]:
    from netemu.daemon.portforward import _socket_in_netns

    for _ in range(100):  # the sender listens a moment after its pod is Running
        s = _socket_in_netns(f"/run/netns/{netns}", socket.AF_INET)
        s.setblocking(True)
        try:
            s.connect(("127.0.0.1", PORT))
            break
        except ConnectionRefusedError:
            s.close()
            time.sleep(0.1)
    with s:
        return receive(s, nbytes)


def through_kubectl(env: dict, local: int, nbytes: int, websockets: bool) -> tuple[int, float]:
    e = dict(env, KUBECTL_PORT_FORWARD_WEBSOCKETS="true" if websockets else "false")
    pf = subprocess.Popen(["kubectl", "port-forward", "pod/sender", f"{local}:{PORT}"], env=e,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = pf.stdout.readline()
        if "Forwarding from" not in line:
            raise RuntimeError(f"kubectl port-forward: {line}{pf.stdout.read() if pf.poll() is not None else ''}")
        s = socket.create_connection(("127.0.0.1", local))
        with s:
            return receive(s, nbytes)
    finally:
        pf.terminate()
        pf.wait(10)


def median_time(argv: list[str], env: dict, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--megabytes", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    if shutil.which("kubectl") is None:
        print("kubectl is not installed", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="bench-streams-")
    kubeconfig = os.path.join(tmp, "kubeconfig")
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    lab_file = os.path.join(tmp, "lab.yaml")
    with open(lab_file, "w") as f:
        f.write(LAB_DOC)
    subprocess.run(NETEMU + ["down", LAB], env=env, capture_output=True)
    subprocess.run(NETEMU + ["up", lab_file], env=env, check=True, capture_output=True)
    try:
        netns = next(n.split()[0] for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                          text=True).stdout.splitlines()
                     if n.split()[0] == f"ne-{LAB}_default_sender")
        nbytes = args.megabytes << 20
        rows = []
        got, secs = direct(netns, nbytes)
        floor = got * 8 / secs / 1e9
        rows.append(("direct TCP in the pod's namespace (floor)", got, secs, floor))
        for ws, label in ((True, "kubectl port-forward (WebSocket-tunnelled SPDY)"),
                          (False, "kubectl port-forward (SPDY/3.1)")):
            got, secs = through_kubectl(env, 19300 + ws, nbytes, ws)
            rows.append((label, got, secs, got * 8 / secs / 1e9))
        print(f"\nport-forward: {args.megabytes} MB from a pod")
        print(f"  {'path':<50} {'bytes':>12} {'seconds':>8} {'Gbit/s':>8} {'of floor':>9}")
        for label, got, secs, gbps in rows:
            print(f"  {label:<50} {got:>12} {secs:>8.2f} {gbps:>8.2f} {gbps / floor:>8.0%}")
        ok_pf = all(r[3] >= 1.0 and r[1] == nbytes for r in rows[1:])

        exec_t = median_time(["kubectl", "exec", "sender", "--", "true"], env, args.rounds)
        exec_spdy = median_time(["kubectl", "exec", "sender", "--", "true"],
                                dict(env, KUBECTL_REMOTE_COMMAND_WEBSOCKETS="false"), args.rounds)
        start = median_time(["kubectl", "version", "--client"], env, args.rounds)
        print(f"\nexec round trip: median of {args.rounds}")
        print(f"  {'kubectl version --client':<50} {start * 1000:>8.1f} ms")
        print(f"  {'kubectl exec sender -- true (WebSocket)':<50} {exec_t * 1000:>8.1f} ms  "
              f"(+{(exec_t - start) * 1000:.1f} ms)")
        print(f"  {'kubectl exec sender -- true (SPDY)':<50} {exec_spdy * 1000:>8.1f} ms  "
              f"(+{(exec_spdy - start) * 1000:.1f} ms)")
        ok_exec = exec_t - start <= 0.050
        print(f"\ntargets: port-forward >= 1 Gbit/s: {'met' if ok_pf else 'NOT met'}; "
              f"exec within 50 ms of kubectl's start-up: {'met' if ok_exec else 'NOT met'}")
        return 0 if ok_pf and ok_exec else 1
    finally:
        subprocess.run(NETEMU + ["down", LAB], env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
