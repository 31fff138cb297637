"""The speaker's NDP side alone, on a veth pair of its own (root only).

    eth0 [ne-tndp-n1] fd00:99:2::11   the node: speaker announcing fd00:99:2::200, DNAT [::200]:80 -> [::11]:8080
    eth0 [ne-tndp-cl] fd00:99:2::2    the client: its kernel's neighbour resolution, raw solicitations

The LoadBalancer IP is on no interface: the speaker's Neighbor Advertisement brings the client's
frames to the node, the ip6tables DNAT rule (kube-proxy's KUBE-SERVICES does the same) to a socket.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from netemu.dataplane import ndp, nsutil

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="builds network namespaces: run as root"),
              pytest.mark.skipif(not os.path.isdir("/proc/sys/net/ipv6"), reason="the kernel has IPv6 off"),
              pytest.mark.skipif(shutil.which("ip6tables") is None, reason="needs ip6tables")]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench_ndp  # noqa: E402  (the segment and the probe the benchmark uses)

PREFIX = "ne-tndp-"
N1, CL = PREFIX + "n1", PREFIX + "cl"
NET = "fd00:99:2::"
IPS = {N1: NET + "11", CL: NET + "2"}
VIP = NET + "200"
OTHER = NET + "201"  # in the segment, announced by nobody
SERVER_PORT = 8080
MACS: dict[str, str] = {}  # eth0's MAC per namespace, once the segment is up


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    res = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({res.returncode}): {res.stdout}{res.stderr}")
    return res


def _ours() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line.startswith(PREFIX)]


class Server(threading.Thread):
    """A TCP server on the node's own IPv6 address that says who it is."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = nsutil.socket_in(N1, socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((IPS[N1], SERVER_PORT))
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
                conn.sendall(b"n1\n")

    def stop(self) -> None:
        self.stopping = True
        self.join(timeout=2)
        self.sock.close()


@pytest.fixture(scope="module")
def segment():
    bench_ndp.segment_down(PREFIX)
    try:
        macs = bench_ndp.segment_up(PREFIX, IPS)
        MACS.update(macs)
        sh("ip", "netns", "exec", N1, "ip6tables", "-t", "nat", "-A", "PREROUTING", "-d", f"{VIP}/128", "-p", "tcp",
           "--dport", "80", "-j", "DNAT", "--to-destination", f"[{IPS[N1]}]:{SERVER_PORT}")
        server = Server()
        server.start()
        yield {"macs": macs}
        server.stop()
    finally:
        bench_ndp.segment_down(PREFIX)
    assert not _ours(), "namespaces left behind"


def _speaker(kernel_reply: bool = False, **kw):
    from netemu.dataplane.speaker import Speaker

    sh("ip", "-n", CL, "-6", "neigh", "flush", "dev", "eth0")
    return Speaker("n1", N1, kernel_reply=kernel_reply, **kw)


@pytest.fixture
def speaker(segment):
    sp = _speaker()
    yield sp
    sp.close()


@pytest.fixture
def kernel_speaker(segment):
    sp = _speaker(kernel_reply=True)
    yield sp
    sp.close()
    assert proxy_entries() == "", "proxy NDP entries left behind"


def proxy_entries() -> str:
    return sh("ip", "-n", N1, "-6", "neigh", "show", "proxy").stdout.strip()


def neigh(ip: str) -> tuple[str | None, str]:
    """(lladdr, state) of the client's neighbour entry for ip."""
    out = sh("ip", "-n", CL, "-6", "neigh", "show", ip, "dev", "eth0").stdout
    m = re.search(r"lladdr ([0-9a-f:]{17})", out)
    return (m.group(1) if m else None), (out.split()[-1] if out.strip() else "")


def resolve(ip: str) -> tuple[str | None, str]:
    """Let the client's kernel resolve ip (one echo request: nobody owns the LB IP, so no echo reply)."""
    sh("ip", "netns", "exec", CL, "ping", "-6", "-c", "1", "-W", "1", ip, check=False)
    return neigh(ip)


class NdpCapture:
    """Neighbor Advertisements arriving at a namespace's eth0, with their arrival times."""

    def __init__(self, ns: str):
        from netemu.dataplane.speaker import attach_filter

        with nsutil.in_netns(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            attach_filter(self.sock, ndp.icmpv6_filter(ndp.ICMPV6_NA))
            self.sock.bind(("eth0", ndp.ETH_P_IPV6))
        self.sock.settimeout(0.05)

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def read(self, seconds: float) -> list[tuple[float, ndp.NeighborAdvertisement]]:
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                frame = self.sock.recv(2048)
            except socket.timeout:
                continue
            na = ndp.parse_na(frame)
            if na is not None:
                out.append((time.monotonic(), na))
        return out

    def close(self) -> None:
        self.sock.close()


def p6(a: str) -> bytes:
    return ipaddress.IPv6Address(a).packed


def mac_bytes(m: str) -> bytes:
    return bytes.fromhex(m.replace(":", ""))


def solicit(target: str, *, unicast_to: str | None = None) -> list[ndp.NeighborAdvertisement]:
    """One solicitation from the client's raw socket (multicast, or unicast to a MAC as a
    reachability probe is); the solicited advertisements for target that came back within 0.5 s."""
    cl_mac = mac_bytes(MACS[CL])
    frame = ndp.neighbor_solicitation(cl_mac, p6(IPS[CL]), p6(target),
                                      dst_ip=p6(target) if unicast_to else None,
                                      dst_mac=mac_bytes(unicast_to) if unicast_to else None)
    cap = NdpCapture(CL)
    try:
        cap.send(frame)
        return [na for _, na in cap.read(0.5) if na.target == p6(target) and na.solicited]
    finally:
        cap.close()


# --------------------------------------------------------------------------- the speaker's raw socket
def test_advertisement_for_announced_address_only(segment, speaker):
    n1 = mac_bytes(segment["macs"][N1])
    speaker.set_announced({VIP})
    assert speaker.ndp and speaker.announced == frozenset({VIP})
    nas = solicit(VIP)
    assert len(nas) == 1, nas
    na = nas[0]
    assert (na.solicited, na.override, na.router) == (True, False, False)  # MetalLB's flags
    assert na.target_lladdr == n1 and na.eth_src == n1
    assert na.eth_dst == mac_bytes(segment["macs"][CL]) and na.dst == p6(IPS[CL])
    assert ipaddress.IPv6Address(na.src).is_link_local  # from eth0's link-local address, as MetalLB
    assert solicit(OTHER) == []  # announced by nobody: no answer, from the speaker or the kernel
    assert len(solicit(VIP, unicast_to=segment["macs"][N1])) == 1  # a reachability probe is answered too
    st = speaker.stats
    assert st.replies == 2 and st.kernel_replies == 0, st
    speaker.set_announced(set())
    assert solicit(VIP) == []  # withdrawn: nobody answers, not even the node's kernel


def test_client_kernel_resolves_the_lb_ip_and_reaches_the_node(segment, speaker):
    speaker.set_announced({VIP})
    lladdr, state = resolve(VIP)
    assert lladdr == segment["macs"][N1] and state in ("REACHABLE", "STALE", "DELAY"), (lladdr, state)
    s = nsutil.socket_in(CL, socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((VIP, 80))  # NDP brought it to the node, the DNAT rule to the server
        assert s.recv(100).strip() == b"n1"
    finally:
        s.close()
    assert VIP not in sh("ip", "-n", N1, "-6", "-o", "addr").stdout  # on no interface of the node
    lladdr, state = resolve(OTHER)
    assert lladdr is None and state in ("FAILED", "INCOMPLETE"), (lladdr, state)


def test_takeover_sends_unsolicited_advertisements_that_move_the_client(segment, speaker):
    n1 = segment["macs"][N1]
    # the client still has the LB IP at the old owner's MAC
    sh("ip", "-n", CL, "-6", "neigh", "replace", VIP, "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "stale")
    cap = NdpCapture(CL)
    try:
        t0 = time.monotonic()
        speaker.set_announced({VIP})
        moved_at = None
        while time.monotonic() - t0 < 1.0:
            if neigh(VIP)[0] == n1:
                moved_at = time.monotonic() - t0
                break
            time.sleep(0.005)
        assert moved_at is not None, f"client still has {neigh(VIP)} for {VIP}"
        got = [(t - t0, na) for t, na in cap.read(5.3 - (time.monotonic() - t0)) if na.target == p6(VIP)]
    finally:
        cap.close()
    assert len(got) == 5, [(round(t, 2), na) for t, na in got]  # one per round: 0, 1.1, 2.2, 3.3, 4.4 s
    for _, na in got:
        assert na.override and not na.solicited and not na.router
        assert na.dst == ndp.ALL_NODES and na.eth_dst == bytes.fromhex("333300000001")
        assert na.target_lladdr == mac_bytes(n1)
    times = [t for t, _ in got]
    assert times[0] < 0.1 and all(abs(b - a - 1.1) < 0.2 for a, b in zip(times, times[1:])), times
    print(f"\nneighbour entry moved {moved_at * 1000:.1f} ms after set_announced; unsolicited NAs at "
          f"{[round(t, 2) for t in times]} s")


def test_solicited_node_group_is_joined_while_announced(segment, speaker):
    group = "ff02::1:ff00:200"

    def joined() -> bool:
        return group in sh("ip", "-n", N1, "-6", "maddr", "show", "dev", "eth0").stdout

    assert not joined()
    speaker.set_announced({VIP})
    assert joined()
    speaker.set_announced(set())
    assert not joined()


def test_ipv6_off_means_no_ndp_side(segment):
    from netemu.dataplane.speaker import Ipv6Off, open_ndp_socket

    with pytest.raises(Ipv6Off):
        open_ndp_socket(N1, "no-such-link")
    nsutil.write_sysctl_in(CL, {"net.ipv6.conf.lo.disable_ipv6": "1"})
    try:
        with pytest.raises(Ipv6Off):
            open_ndp_socket(CL, "lo")
    finally:
        nsutil.write_sysctl_in(CL, {"net.ipv6.conf.lo.disable_ipv6": "0"})


# --------------------------------------------------------------------------- kernel_reply: proxy NDP
def test_kernel_answers_only_for_what_the_speaker_announces(segment, kernel_speaker):
    sp, n1 = kernel_speaker, segment["macs"][N1]
    sp.set_announced({VIP})
    assert proxy_entries() == f"{VIP} dev eth0 proxy"
    nas = solicit(VIP)
    assert len(nas) == 1 and (nas[0].solicited, nas[0].override, nas[0].router) == (True, False, False), nas
    assert nas[0].target_lladdr == mac_bytes(n1)
    assert len(solicit(VIP, unicast_to=n1)) == 1  # the forwarding path hands the probe to NDP
    assert solicit(OTHER) == []
    assert resolve(VIP)[0] == n1
    st = sp.stats
    assert st.replies == 0 and st.kernel_replies >= 2, st  # seen on the socket, answered by the kernel
    sp.set_announced(set())
    assert proxy_entries() == ""
    assert solicit(VIP) == []


def test_kernel_mode_close_removes_the_entries(segment):
    sp = _speaker(kernel_reply=True)
    sp.set_announced({VIP, OTHER})
    assert len(proxy_entries().splitlines()) == 2
    sp.close()
    assert proxy_entries() == ""
    assert solicit(VIP) == []
