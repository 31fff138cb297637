"""The ARP speaker alone, on a tiny segment of its own (root only).

    [ne-tspk-sw: br0] ── eth0 [ne-tspk-n1] 10.99.0.11   speaker, DNAT 10.99.0.100:80 -> 10.99.0.11:8080
                      ── eth0 [ne-tspk-n2] 10.99.0.12   speaker, DNAT 10.99.0.100:80 -> 10.99.0.12:8080
                      ── eth0 [ne-tspk-cl] 10.99.0.2    client: arping, ip neigh, TCP

The VIP 10.99.0.100 is on no interface: the speaker's ARP reply brings the client's frames to the
node, the DNAT rule (kube-proxy's KUBE-SERVICES does the same) brings them to a local socket.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import threading
import time

import pytest

from netemu.dataplane import nsutil

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="builds network namespaces: run as root"),
              pytest.mark.skipif(shutil.which("arping") is None, reason="needs arping (Debian package arping)")]

PREFIX = "ne-tspk-"
SW, N1, N2, CL = PREFIX + "sw", PREFIX + "n1", PREFIX + "n2", PREFIX + "cl"
IPS = {N1: "10.99.0.11", N2: "10.99.0.12", CL: "10.99.0.2"}
VIP = "10.99.0.100"
OTHER = "10.99.0.101"  # in the same segment, announced by nobody
SERVER_PORT = 8080


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    res = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({res.returncode}): {res.stdout}{res.stderr}")
    return res


def _ours() -> list[str]:
    out = sh("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def _cleanup() -> None:
    for ns in _ours():
        sh("ip", "netns", "del", ns, check=False)


def _mac(ns: str) -> str:
    out = sh("ip", "-n", ns, "-o", "link", "show", "eth0").stdout
    return re.search(r"link/ether ([0-9a-f:]{17})", out).group(1)


class Server(threading.Thread):
    """A TCP server in a node namespace that says which node it is."""

    def __init__(self, ns: str):
        super().__init__(daemon=True)
        self.name_ = ns.removeprefix(PREFIX)
        self.sock = nsutil.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((IPS[ns], SERVER_PORT))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.sendall(self.name_.encode() + b"\n")

    def stop(self) -> None:
        self.stopping = True
        self.join(timeout=2)
        self.sock.close()


@pytest.fixture(scope="module")
def segment():
    _cleanup()
    try:
        sh("ip", "netns", "add", SW)
        sh("ip", "-n", SW, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", SW, "link", "set", "br0", "up")
        sh("ip", "-n", SW, "link", "set", "lo", "up")
        for i, ns in enumerate((N1, N2, CL)):
            sh("ip", "netns", "add", ns)
            port = f"p{i}"
            sh("ip", "-n", SW, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", SW, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{IPS[ns]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            for path in ("/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6"):
                nsutil.write_sysctl_in(ns, {path.removeprefix("/proc/sys/").replace("/", "."): "1"})
        for ns in (N1, N2):  # the pod bridge, where kernel_reply mode points the VIP's /32 route
            sh("ip", "-n", ns, "link", "add", "cni0", "type", "bridge")
            sh("ip", "-n", ns, "link", "set", "cni0", "up")
        for ns in (N1, N2):  # kube-proxy's part: the LoadBalancer IP is DNATed in PREROUTING
            sh("ip", "netns", "exec", ns, "iptables", "-t", "nat", "-A", "PREROUTING", "-d", f"{VIP}/32", "-p", "tcp",
               "--dport", "80", "-j", "DNAT", "--to-destination", f"{IPS[ns]}:{SERVER_PORT}")
        servers = [Server(N1), Server(N2)]
        for s in servers:
            s.start()
        yield {"macs": {ns: _mac(ns) for ns in (N1, N2, CL)}}
        for s in servers:
            s.stop()
    finally:
        _cleanup()
    assert not _ours(), "namespaces left behind"


@pytest.fixture
def speakers(segment):
    """Both nodes' speakers on one shared SpeakerThread (the daemon's way)."""
    from netemu.dataplane.speaker import Speaker, SpeakerThread

    with SpeakerThread() as thread:
        sp = {ns: Speaker(ns.removeprefix(PREFIX), ns, loop=thread) for ns in (N1, N2)}
        sh("ip", "-n", CL, "neigh", "flush", "dev", "eth0")
        yield sp
        for s in sp.values():
            s.close()


@pytest.fixture
def kernel_speakers(segment):
    """Both nodes' speakers in kernel_reply mode (the lab's way in iptables and nftables modes)."""
    from netemu.dataplane.speaker import Speaker, SpeakerThread

    with SpeakerThread() as thread:
        sp = {ns: Speaker(ns.removeprefix(PREFIX), ns, loop=thread, kernel_reply=True) for ns in (N1, N2)}
        sh("ip", "-n", CL, "neigh", "flush", "dev", "eth0")
        yield sp
        for s in sp.values():
            s.close()
    for ns in (N1, N2):
        assert kernel_entries(ns) == ("", ""), "kernel ARP entries left behind"


def kernel_entries(ns: str) -> tuple[str, str]:
    """(proxy neighbour entries, speaker routes) of a node, as text."""
    return (sh("ip", "-n", ns, "neigh", "show", "proxy").stdout.strip(),
            sh("ip", "-n", ns, "route", "show", "proto", "77").stdout.strip())


_REPLY = re.compile(r"bytes from ([0-9a-f:]{17}) \(([\d.]+)\): index=\d+ time=([\d.]+) (usec|msec|sec)")


def arping(ip: str, count: int = 2, wait: float = 0.0, deadline: float = 3.0) -> list[tuple[str, float]]:
    """(replying MAC, round trip in ms) per reply, from the client namespace."""
    args = ["ip", "netns", "exec", CL, "arping", "-c", str(count), "-w", str(deadline), "-I", "eth0"]
    if wait:
        args += ["-W", str(wait)]
    res = sh(*args, ip, check=False, timeout=deadline + 10)
    out = []
    for mac, _, t, unit in _REPLY.findall(res.stdout):
        out.append((mac, float(t) * {"usec": 1e-3, "msec": 1.0, "sec": 1e3}[unit]))
    return out


def tcp_get(ip: str, port: int = 80) -> str:
    s = nsutil.socket_in(CL, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((ip, port))
        return s.recv(100).decode().strip()
    finally:
        s.close()


def neigh_mac(ip: str) -> str | None:
    out = sh("ip", "-n", CL, "neigh", "show", ip, "dev", "eth0").stdout
    m = re.search(r"lladdr ([0-9a-f:]{17})", out)
    return m.group(1) if m else None


class Capture:
    """ARP frames seen by a namespace's eth0, with their arrival times."""

    def __init__(self, ns: str):
        from netemu.dataplane.speaker import ETH_P_ARP

        with nsutil.in_netns(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
            self.sock.bind(("eth0", ETH_P_ARP))
        self.sock.settimeout(0.05)

    def read(self, seconds: float) -> list[tuple[float, bytes]]:
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                frame = self.sock.recv(2048)
            except socket.timeout:
                continue
            out.append((time.monotonic(), frame))
        return out

    def close(self) -> None:
        self.sock.close()


def _fmt(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


# --------------------------------------------------------------------------- tests
def test_reply_carries_the_node_mac_unicast_to_the_asker(segment, speakers):
    macs = segment["macs"]
    speakers[N1].set_announced({VIP})
    client_cap, n2_cap = Capture(CL), Capture(N2)
    try:
        replies = arping(VIP, count=2)
        seen_client, seen_n2 = client_cap.read(0.2), n2_cap.read(0.05)
    finally:
        client_cap.close()
        n2_cap.close()
    assert len(replies) == 2, replies
    assert {mac for mac, _ in replies} == {macs[N1]}
    vip = socket.inet_aton(VIP)
    client_ip = socket.inet_aton(IPS[CL])
    # (the broadcast frames of the gratuitous rounds that started with set_announced are not answers)
    answers = [f for _, f in seen_client if f[20:22] == b"\x00\x02" and f[28:32] == vip and f[38:42] == client_ip]
    assert answers, "the client saw no ARP reply frame"
    for f in answers:
        assert _fmt(f[0:6]) == macs[CL], "reply not unicast to the asker"
        assert _fmt(f[6:12]) == macs[N1] and _fmt(f[22:28]) == macs[N1]
        assert f[32:38] == bytes.fromhex(macs[CL].replace(":", "")) and f[38:42] == socket.inet_aton(IPS[CL])
    assert not [f for _, f in seen_n2 if f[20:22] == b"\x00\x02" and f[38:42] == client_ip], "reply flooded to n2"
    assert speakers[N1].stats.replies >= 2 and speakers[N2].stats.replies == 0


def test_unannounced_ip_gets_no_reply(segment, speakers):
    speakers[N1].set_announced({VIP})
    assert arping(OTHER, count=2, deadline=2) == []
    assert arping(VIP, count=1) != []  # the same speaker is alive and answering
    speakers[N1].set_announced(set())
    assert arping(VIP, count=2, deadline=2) == []  # withdrawn: nobody answers, not even the kernel


def test_arp_and_dnat_are_enough_to_reach_the_node(segment, speakers):
    speakers[N1].set_announced({VIP})
    assert tcp_get(VIP) == "n1"
    assert neigh_mac(VIP) == segment["macs"][N1]
    # the address is on no interface of the node
    assert VIP not in sh("ip", "-n", N1, "-o", "addr").stdout


def test_moving_the_vip_sends_gratuitous_arp_that_moves_the_client(segment, speakers):
    macs = segment["macs"]
    speakers[N1].set_announced({VIP})
    assert tcp_get(VIP) == "n1"
    assert neigh_mac(VIP) == macs[N1]
    time.sleep(1.2)  # past the neighbour entry's locktime: only then would a plain reply override it too
    cap = Capture(CL)
    try:
        t0 = time.monotonic()
        speakers[N1].set_announced(set())
        speakers[N2].set_announced({VIP})
        moved_at = None
        while time.monotonic() - t0 < 1.0:
            if neigh_mac(VIP) == macs[N2]:
                moved_at = time.monotonic() - t0
                break
            time.sleep(0.005)
        assert moved_at is not None, f"client still has {neigh_mac(VIP)} for {VIP}"
        assert tcp_get(VIP) == "n2"
        frames = cap.read(5.3 - (time.monotonic() - t0))
    finally:
        cap.close()
    vip = socket.inet_aton(VIP)
    garps = [(t - t0, f) for t, f in frames
             if f[28:32] == vip and f[38:42] == vip and _fmt(f[6:12]) == macs[N2] and f[0:6] == b"\xff" * 6]
    ops = [int.from_bytes(f[20:22], "big") for _, f in garps]
    assert ops == [1, 2] * 5, ops  # five rounds of request + reply
    for _, f in garps:
        assert _fmt(f[22:28]) == macs[N2] and f[32:38] == b"\xff" * 6
    rounds = [t for t, _ in garps[::2]]
    gaps = [b - a for a, b in zip(rounds, rounds[1:])]
    assert all(abs(g - 1.1) < 0.2 for g in gaps), gaps
    assert rounds[0] < 0.1
    print(f"\nneighbour entry moved {moved_at * 1000:.1f} ms after the move; gratuitous rounds at "
          f"{[round(t, 2) for t in rounds]} s")


def test_speaker_on_a_running_asyncio_loop(segment):
    """The daemon's way: the speaker joins the running loop (add_reader), set_announced from the loop."""
    from netemu.dataplane.speaker import Speaker

    async def main():
        sp = Speaker("n1", N1)
        try:
            assert sp.loop is asyncio.get_running_loop()
            sp.set_announced({VIP})
            proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", CL, "arping", "-c", "2", "-w", "3", "-I", "eth0", VIP,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            return out.decode(), sp.stats.replies
        finally:
            sp.close()

    out, replies = asyncio.run(main())
    assert len(_REPLY.findall(out)) == 2 and replies >= 2, out


def test_speakers_of_a_lab(segment):
    """The daemon's helper: one speaker per node on one thread, synced from the election's by_node."""
    from netemu.dataplane.speaker import Speakers

    macs = segment["macs"]
    sp = Speakers({"n1": N1, "n2": N2})
    try:
        sp.sync({"n1": {VIP}})
        assert {mac for mac, _ in arping(VIP, count=1)} == {macs[N1]}
        sp.kill("n1")
        assert sp.alive() == {"n1": False, "n2": True}
        sp.sync({"n2": {VIP}})
        assert {mac for mac, _ in arping(VIP, count=1)} == {macs[N2]}
        assert sp.stats()["n2"]["announced"] == [VIP] and sp.stats()["n2"]["replies"] >= 1
        assert sp.start("n1") and sp.alive()["n1"]
    finally:
        sp.close()
    assert sp.thread.is_closed()


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def interleaved_round_trips(vip: str, node_ip: str) -> tuple[list[float], list[float]]:
    """arping round trips (ms) to the VIP and to the node's own IP, 5 x 40 each, interleaved."""
    arping(vip, count=3, wait=0.01)  # warm up
    vip_ms: list[float] = []
    node_ms: list[float] = []
    for _ in range(5):
        vip_ms += [t for _, t in arping(vip, count=40, wait=0.01, deadline=10)]
        node_ms += [t for _, t in arping(node_ip, count=40, wait=0.01, deadline=10)]
    assert len(vip_ms) >= 190 and len(node_ms) >= 190
    return vip_ms, node_ms


def test_reply_latency_against_the_kernel(segment, speakers):
    """arping round trips: the speaker's reply for the VIP against the kernel's own reply for a node
    IP, interleaved in the same run."""
    speakers[N1].set_announced({VIP})
    speaker_ms, kernel_ms = interleaved_round_trips(VIP, IPS[N1])
    s50, s99 = statistics.median(speaker_ms), _pct(speaker_ms, 99)
    k50, k99 = statistics.median(kernel_ms), _pct(kernel_ms, 99)
    speakers[N1].set_announced(set())
    f50, f99 = _busy_floor()
    print(f"\nARP reply round trip over {len(speaker_ms)} requests each: speaker p50 {s50 * 1000:.0f} us, "
          f"p99 {s99 * 1000:.0f} us; kernel p50 {k50 * 1000:.0f} us, p99 {k99 * 1000:.0f} us "
          f"(p50 ratio {s50 / k50:.2f}); a busy-polling responder (no wake-up on its side) p50 {f50 * 1000:.0f} us, "
          f"p99 {f99 * 1000:.0f} us")
    assert s50 < 5.0, "the speaker takes milliseconds to answer"


def _busy_floor() -> tuple[float, float]:
    """The same round trip against a responder that never sleeps: what any user-space answer costs
    here (the kernel answers inside arping's own send, so arping never waits for it)."""
    from netemu.dataplane.speaker import ARP_REPLY, arp_frame, open_arp_socket, parse_request

    sock, mac = open_arp_socket(N1, "eth0")
    vip = socket.inet_aton(VIP)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            try:
                frame, addr = sock.recvfrom(2048)
            except BlockingIOError:
                continue
            req = parse_request(frame)
            if addr[2] != 4 and req is not None and req.target_ip == vip:
                sock.send(arp_frame(ARP_REPLY, mac, mac, vip, req.sender_mac, req.sender_ip, req.sender_mac))

    th = threading.Thread(target=spin, daemon=True)
    th.start()
    try:
        times = []
        for _ in range(3):
            times += [t for _, t in arping(VIP, count=40, wait=0.01, deadline=10)]
    finally:
        stop.set()
        th.join()
        sock.close()
    return statistics.median(times), _pct(times, 99)


# --------------------------------------------------------------------------- kernel_reply mode
def test_kernel_answers_only_for_what_the_speaker_announces(segment, kernel_speakers):
    macs, sp = segment["macs"], kernel_speakers
    sp[N1].set_announced({VIP})
    assert kernel_entries(N1) == (f"{VIP} dev eth0 proxy", f"{VIP} dev cni0 scope link")
    assert kernel_entries(N2) == ("", "")
    replies = arping(VIP, count=2)
    assert [mac for mac, _ in replies] == [macs[N1]] * 2, replies
    assert arping(OTHER, count=2, deadline=2) == []
    assert tcp_get(VIP) == "n1"  # the route towards the bridge does not stop the DNAT
    assert VIP not in sh("ip", "-n", N1, "-o", "addr").stdout
    st = sp[N1].stats
    assert st.kernel_replies >= 2 and st.replies == 0, st  # seen on the socket, answered by the kernel
    sp[N1].set_announced(set())
    assert kernel_entries(N1) == ("", "")
    assert arping(VIP, count=2, deadline=2) == []


def test_kernel_mode_failover_moves_the_client_and_close_cleans_up(segment, kernel_speakers):
    macs, sp = segment["macs"], kernel_speakers
    sp[N1].set_announced({VIP})
    assert tcp_get(VIP) == "n1" and neigh_mac(VIP) == macs[N1]
    time.sleep(1.2)  # past the neighbour entry's locktime
    sp[N1].close()  # a killed speaker: the kernel must stop answering for it
    assert kernel_entries(N1) == ("", "")
    sp[N2].set_announced({VIP})
    deadline = time.monotonic() + 1.0
    while neigh_mac(VIP) != macs[N2] and time.monotonic() < deadline:
        time.sleep(0.005)
    assert neigh_mac(VIP) == macs[N2]
    assert tcp_get(VIP) == "n2"
    sh("ip", "-n", CL, "neigh", "flush", "dev", "eth0")
    assert {mac for mac, _ in arping(VIP, count=2)} == {macs[N2]}


def test_kernel_mode_leftovers_are_swept_by_a_new_speaker(segment):
    from netemu.dataplane.speaker import Speaker

    sh("ip", "-n", N1, "neigh", "add", "proxy", OTHER, "dev", "eth0")
    sh("ip", "-n", N1, "route", "add", f"{OTHER}/32", "dev", "cni0", "proto", "77")
    sp = Speaker("n1", N1, kernel_reply=True)
    try:
        assert kernel_entries(N1) == ("", "")
    finally:
        sp.close()


def test_kernel_mode_answers_every_request_itself(segment, kernel_speakers):
    """200 requests for the VIP, all answered, none by the speaker's socket: the node's kernel does it
    (the latency figures, against the node IP's, are printed; scripts/bench_lb.py measures them)."""
    sp = kernel_speakers[N1]
    sp.set_announced({VIP})
    lb_ms, node_ms = interleaved_round_trips(VIP, IPS[N1])
    assert sp.stats.replies == 0 and sp.stats.kernel_replies >= len(lb_ms), sp.stats
    print(f"\nkernel_reply mode: LB IP p50 {statistics.median(lb_ms) * 1000:.0f} us, p99 {_pct(lb_ms, 99) * 1000:.0f} us;"
          f" node IP p50 {statistics.median(node_ms) * 1000:.0f} us, p99 {_pct(node_ms, 99) * 1000:.0f} us")
