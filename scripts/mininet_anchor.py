#!/usr/bin/python3
"""The Mininet anchor of the lab benchmark (scripts/bench_lab.py): N hosts in the lab's shape.

A core LinuxBridge (the lab segment) linked to NODES node bridges, the hosts spread over them
round-robin as pods over nodes; no controller. Run as its own process by the benchmark, so that
its time includes the interpreter start and Mininet's imports, as `netemu up`'s does.

Prints `up` once every host is configured and one ping has crossed the net (h1 to the last host,
inside Mininet's namespaces), then stops the net; the benchmark times both from outside. Bridges
are named mnb* (in the root namespace), hosts h* (in namespaces of their own).

Usage (root, system python with the apt package mininet):  mininet_anchor.py N [NODES]
"""
import sys


def main() -> int:
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.nodelib import LinuxBridge

    n = int(sys.argv[1])
    nodes = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    setLogLevel("warning")
    net = Mininet(switch=LinuxBridge, controller=None, build=False, waitConnected=False)
    core = net.addSwitch("mnb0")
    bridges = [net.addSwitch(f"mnb{i}") for i in range(1, nodes + 1)]
    for br in bridges:
        net.addLink(core, br)
    hosts = []
    for i in range(1, n + 1):
        host = net.addHost(f"h{i}")
        net.addLink(host, bridges[(i - 1) % nodes])
        hosts.append(host)
    try:
        net.start()  # builds (hosts addressed by their shells), then starts the bridges
        lost = net.ping([hosts[0], hosts[-1]], timeout=2) if len(hosts) > 1 else 0.0
        if lost:
            print(f"ping h1 -> {hosts[-1].name} lost {lost:.0f}%", file=sys.stderr)
            return 1
        print("up", flush=True)
    finally:
        net.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
