"""The ARP speaker's frames and behaviour, without root: the raw socket is replaced by a socketpair
(tests/e2e/test_speaker_raw.py does the same on a real segment)."""
from __future__ import annotations

import socket
import time

import pytest

from netemu.dataplane import speaker as sp
from netemu.dataplane.speaker import (
    ARP_REPLY, ARP_REQUEST, BROADCAST, Speaker, SpeakerThread, arp_frame, garp_schedule, gratuitous_frames,
    parse_request,
)

NODE_MAC = bytes.fromhex("020000000001")
CLIENT_MAC = bytes.fromhex("020000000099")
CLIENT_IP = socket.inet_aton("192.168.1.1")
VIP = "192.168.1.11"


def request(target: str, dst: bytes = BROADCAST, sender_mac: bytes = CLIENT_MAC) -> bytes:
    return arp_frame(ARP_REQUEST, sender_mac, sender_mac, CLIENT_IP, b"\x00" * 6, socket.inet_aton(target), dst)


class FakeSock:
    """The speaker's end of a datagram socketpair, answering recvfrom like a packet socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.outgoing = False

    def recvfrom(self, n: int):
        data = self.sock.recv(n)
        return data, ("eth0", sp.ETH_P_ARP, sp.PACKET_OUTGOING if data[6:12] == NODE_MAC else 0, 1, CLIENT_MAC)

    def send(self, data: bytes) -> int:
        return self.sock.send(data)

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def wire(monkeypatch):
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    mine.setblocking(False)
    theirs.settimeout(0.5)
    monkeypatch.setattr(sp, "open_arp_socket", lambda netns, iface: (FakeSock(mine), NODE_MAC))
    yield theirs
    theirs.close()


def frames(peer: socket.socket, seconds: float) -> list[tuple[float, bytes]]:
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        peer.settimeout(max(0.001, end - time.monotonic()))
        try:
            frame = peer.recv(2048)
        except (socket.timeout, BlockingIOError):
            break
        out.append((time.monotonic(), frame))
    return out


def test_garp_schedule_is_metallbs():
    assert garp_schedule() == [0.0, 1.1, 2.2, 3.3, 4.4]  # 1100 ms ticker for 5 s


def test_frames():
    vip = socket.inet_aton(VIP)
    req = parse_request(request(VIP))
    assert req.dst == BROADCAST and req.sender_mac == CLIENT_MAC and req.target_ip == vip
    assert parse_request(arp_frame(ARP_REPLY, NODE_MAC, NODE_MAC, vip, CLIENT_MAC, CLIENT_IP, CLIENT_MAC)) is None
    assert parse_request(b"\x00" * 60) is None
    g_req, g_rep = gratuitous_frames(NODE_MAC, vip)
    for f, op in ((g_req, 1), (g_rep, 2)):
        assert len(f) == 60 and f[0:6] == BROADCAST and f[6:12] == NODE_MAC and f[12:14] == b"\x08\x06"
        assert f[14:22] == bytes.fromhex("0001080006040000")[:6] + op.to_bytes(2, "big")
        assert f[22:28] == NODE_MAC and f[28:32] == vip and f[32:38] == BROADCAST and f[38:42] == vip


def test_answers_only_announced_ips_unicast(wire):
    with SpeakerThread() as loop:
        s = Speaker("w1-k8s", "ne-x_w1-k8s", loop=loop, garp_duration=0)
        s.set_announced({VIP})
        frames(wire, 0.1)  # the first gratuitous round
        wire.send(request(VIP))
        reply = wire.recv(2048)
        assert reply[0:6] == CLIENT_MAC and reply[6:12] == NODE_MAC  # unicast to the asker, from eth0's MAC
        assert reply[20:22] == b"\x00\x02" and reply[22:28] == NODE_MAC and reply[28:32] == socket.inet_aton(VIP)
        assert reply[32:38] == CLIENT_MAC and reply[38:42] == CLIENT_IP
        wire.send(request("192.168.1.12"))  # not ours
        wire.send(request(VIP, dst=bytes.fromhex("02aaaaaaaaaa")))  # unicast to another machine
        wire.send(request(VIP, sender_mac=NODE_MAC))  # our own
        wire.send(request(VIP, dst=NODE_MAC))  # unicast to us: answered
        got = frames(wire, 0.2)
        assert len(got) == 1 and got[0][1][0:6] == CLIENT_MAC
        assert s.stats.replies == 2 and s.stats.requests == 4
        assert s.announced == frozenset({VIP})
        s.set_announced(set())
        wire.send(request(VIP))
        assert frames(wire, 0.2) == []
        s.close()
        assert s.closed


def test_gratuitous_rounds_on_gain_and_stop_on_loss(wire):
    with SpeakerThread() as loop:
        s = Speaker("w1-k8s", None, loop=loop, garp_interval=0.1, garp_duration=0.45)
        t0 = time.monotonic()
        s.set_announced({VIP, "192.168.1.12"})
        got = frames(wire, 0.7)
        for ip in (VIP, "192.168.1.12"):
            mine = [(t - t0, f) for t, f in got if f[28:32] == socket.inet_aton(ip)]
            assert [int.from_bytes(f[20:22], "big") for _, f in mine] == [1, 2] * 5
            rounds = [t for t, _ in mine[::2]]
            assert rounds[0] < 0.05 and all(0.05 < b - a < 0.2 for a, b in zip(rounds, rounds[1:]))
        assert s.stats.gratuitous == 20
        # keeping an IP sends nothing; losing one stops its rounds at once
        s.set_announced({VIP, "192.168.1.12"})
        assert frames(wire, 0.15) == []
        s.set_announced({"192.168.1.13"})
        s.set_announced(set())
        got = frames(wire, 0.6)
        assert [f[28:32] for _, f in got] == [socket.inet_aton("192.168.1.13")] * 2  # only the first round
        s.close()


def test_own_thread_when_no_loop_is_given(wire):
    s = Speaker("w1-k8s", None, garp_duration=0)
    try:
        assert isinstance(s.loop, SpeakerThread)
        s.set_announced({VIP})
        frames(wire, 0.1)
        wire.send(request(VIP))
        assert wire.recv(2048)[0:6] == CLIENT_MAC
    finally:
        s.close()
    assert s.loop.is_closed()
