"""MetalLB's layer2 speaker for one node: answers ARP and NDP for the LoadBalancer IPs the node announces.

A raw packet socket (``AF_PACKET``, ``SOCK_RAW``, ``ETH_P_ARP``: the kernel hands it ARP frames only)
is opened inside the node's network namespace and bound to the node's lab interface (``eth0``).
The daemon keeps it; no process runs in the node. Behaviour, as MetalLB's ``internal/layer2``
(arp.go, announcer.go):

- an ARP request (broadcast, or unicast to eth0's MAC) for an announced IP gets a reply from eth0's
  MAC, unicast to the asker (Ethernet destination = the request's sender hardware address);
  requests for any other IP, replies, and our own frames are ignored;
- on gaining an IP: gratuitous ARP at once and then every 1.1 s for 5 s (rounds at 0, 1.1, 2.2,
  3.3 and 4.4 s), each round an ARP request and an ARP reply, broadcast, sender = target = the IP,
  target hardware address ff:ff:ff:ff:ff:ff; a round is skipped once the IP is lost.

The IP is never added to an interface: the node accepts the packets because their destination MAC is
eth0's, and kube-proxy's KUBE-SERVICES rule DNATs the LoadBalancer IP in PREROUTING before routing
looks at it.

Who sends the reply (``kernel_reply``): by default the speaker itself, from the raw socket. With
``kernel_reply=True`` (what the lab uses in iptables and nftables modes) the speaker programs the
node's kernel to answer instead: a proxy neighbour entry for the IP on eth0 (``ip neigh add proxy``),
a /32 route for it towards the pod bridge (the kernel proxies only addresses routed away from the
asking interface) and ``proxy_delay`` 0 on eth0. The kernel then answers in microseconds, with the
same unicast reply from eth0's MAC; a Python responder needs a thread wake-up per request, tens of
times slower. The speaker still decides (which IPs, gratuitous ARP, failover), still sees every
request on its socket (counted as ``kernel_replies``) and removes the entries when it loses an IP or
stops. In kube-proxy's IPVS mode the IP sits on every node's kube-ipvs0, where the kernel would answer
ARP for it on every node unless arp_ignore=1 / arp_announce=2 (MetalLB's strictARP) and will not
proxy it either: the lab uses the raw-socket replies there.

IPv6 (a dual-stack lab): the NDP side, as MetalLB's ndp.go; the frames are in :mod:`ndp`. A second
raw packet socket (``ETH_P_IPV6``, with a socket filter that lets only Neighbor Solicitations
through) is opened on the first IPv6 address the node announces:

- the speaker joins the solicited-node multicast group of each announced address (an
  ``IPV6_JOIN_GROUP`` on a socket of the node's namespace: MLD reports, so a snooping switch sends
  the solicitations here; refcounted, as several addresses can share a group);
- a solicitation for an announced address carrying the asker's source link-layer option gets a
  Neighbor Advertisement (Solicited, not Override, target link-layer option = eth0's MAC) from eth0's
  link-local address to the asker; unicast solicitations (the asker's reachability probes) too, which
  MetalLB's ICMPv6 socket never sees (the kernel does not deliver them: the address is not its own);
- on gaining an address: an unsolicited advertisement to ff02::1 (Override set) per gratuitous round.

The node's kernel does not answer for the address (it is on none of its interfaces) and does not
stand in the way: the packet socket gets its copy of every frame before IPv6 input looks at it. In
``kernel_reply`` mode the kernel answers instead, as proxy ARP does for IPv4 and as MetalLB's
NDPProxyManager does: ``proxy_ndp`` on eth0 (and ``all``, which the forwarding path checks before it
hands a unicast probe for a proxied address to NDP: a node forwards IPv6, ``all.forwarding`` 1, so
unicast probes take that path), a proxy neighbour entry per address (the kernel then joins its
solicited-node group itself), ``proxy_delay`` 0; its answer has the same flags (S=1, O=0, R=0).
No route is needed: unlike ARP, NDP proxying does not look at routes.

Where IPv6 is off on the interface (an IPv4-only lab) the NDP socket is never opened: IPv6 addresses
are skipped with a warning, once per address, as before.

Runs on a loop (``add_reader`` on the socket, ``call_later`` for the gratuitous rounds): a
:class:`SpeakerThread` (a small epoll loop in a thread; several speakers can share one; replies
then never wait for the daemon's reconcile pass), or an asyncio loop (the daemon's own). With no
loop given: the running asyncio loop if there is one, else a SpeakerThread of its own.
``set_announced`` may be called from any thread.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Optional

from netemu.dataplane import names, ndp, nsutil
from netemu.dataplane.ipcmd import IpError, ip_batch

log = logging.getLogger("netemu.speaker")

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4  # sll_pkttype of frames this host sent
ARP_REQUEST = 1
ARP_REPLY = 2
BROADCAST = b"\xff" * 6
MIN_FRAME = 60  # Ethernet minimum without FCS: frames are padded to it, as MetalLB's (mdlayher/ethernet)
_ARP_HEADER = struct.pack("!HHBB", 1, ETH_P_IP, 6, 4)  # Ethernet, IPv4, hlen 6, plen 4

# MetalLB's gratuitous ARP schedule (announcer.go spamLoop: 1100 ms ticker, for 5 s)
GARP_INTERVAL = 1.1
GARP_DURATION = 5.0


def garp_schedule(interval: float = GARP_INTERVAL, duration: float = GARP_DURATION) -> list[float]:
    """Offsets of the gratuitous rounds after gaining an IP: [0, 1.1, 2.2, 3.3, 4.4]."""
    out, t = [0.0], interval
    while t <= duration:
        out.append(round(t, 6))
        t += interval
    return out


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def arp_frame(op: int, src_mac: bytes, sender_mac: bytes, sender_ip: bytes, target_mac: bytes, target_ip: bytes,
              dst_mac: bytes) -> bytes:
    frame = (dst_mac + src_mac + struct.pack("!H", ETH_P_ARP) + _ARP_HEADER + struct.pack("!H", op)
             + sender_mac + sender_ip + target_mac + target_ip)
    return frame.ljust(MIN_FRAME, b"\x00")


def gratuitous_frames(mac: bytes, ip: bytes) -> list[bytes]:
    """One gratuitous round: an ARP request, then an ARP reply (arp.go Gratuitous)."""
    return [arp_frame(op, mac, mac, ip, BROADCAST, ip, BROADCAST) for op in (ARP_REQUEST, ARP_REPLY)]


@dataclass
class ArpRequest:
    dst: bytes  # Ethernet destination
    sender_mac: bytes
    sender_ip: bytes
    target_ip: bytes


def parse_request(frame: bytes) -> Optional[ArpRequest]:
    """An Ethernet/IPv4 ARP request, or None for anything else."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06" or frame[14:20] != _ARP_HEADER:
        return None
    if frame[20:22] != b"\x00\x01":
        return None
    return ArpRequest(frame[0:6], frame[22:28], frame[28:32], frame[38:42])


def open_arp_socket(netns: Optional[str], iface: str) -> tuple[socket.socket, bytes]:
    """A non-blocking raw ARP socket bound to ``iface`` inside ``netns`` (None: this namespace);
    returns (socket, the interface's MAC)."""
    def make() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        try:
            s.bind((iface, ETH_P_ARP))
        except OSError:
            s.close()
            raise
        return s

    if netns is None:
        sock = make()
    else:
        with nsutil.in_netns(netns):
            sock = make()
    sock.setblocking(False)
    name = sock.getsockname()  # (ifname, proto, pkttype, hatype, hwaddr)
    mac = name[4]
    if len(mac) != 6:
        sock.close()
        raise OSError(f"{iface}: not an Ethernet interface (hardware address {mac!r})")
    return sock, bytes(mac)


class Ipv6Off(OSError):
    """IPv6 is disabled on the interface (an IPv4-only lab): no NDP responder there."""


@dataclass
class NdpSocket:
    sock: socket.socket  # raw packet socket: Neighbor Solicitations in, advertisements out
    member: socket.socket  # an IPv6 datagram socket of the node's namespace holding the group memberships
    mac: bytes
    ifindex: int
    source: bytes  # the advertisements' IPv6 source: eth0's link-local address

    def close(self) -> None:
        self.sock.close()
        self.member.close()  # leaves its groups


SO_ATTACH_FILTER = 26


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """setsockopt(SO_ATTACH_FILTER) with a classic BPF program (struct sock_fprog points at it)."""
    import ctypes

    buf = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buf))  # native alignment pads len
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def open_ndp_socket(netns: Optional[str], iface: str) -> NdpSocket:
    """The NDP side's sockets inside ``netns``; :class:`Ipv6Off` where the interface has no IPv6."""
    def make() -> NdpSocket:
        try:
            with open(f"/proc/sys/net/ipv6/conf/{iface}/disable_ipv6") as f:
                off = f.read().strip() != "0"
        except OSError:
            off = True
        if off:
            raise Ipv6Off(f"IPv6 is off on {iface}")
        # protocol 0 until the filter is on: no unfiltered frame queues up in between
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        member = None
        try:
            attach_filter(s, ndp.icmpv6_filter(ndp.ICMPV6_NS))
            s.bind((iface, ndp.ETH_P_IPV6))
            member = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            ifindex = socket.if_nametoindex(iface)
            with open("/proc/thread-self/net/if_inet6") as f:
                addresses = ndp.parse_if_inet6(f.read(), iface)
        except OSError:
            s.close()
            if member is not None:
                member.close()
            raise
        mac = bytes(s.getsockname()[4])
        return NdpSocket(s, member, mac, ifindex, ndp.source_address(addresses, mac))

    if netns is None:
        out = make()
    else:
        with nsutil.in_netns(netns):
            out = make()
    out.sock.setblocking(False)
    return out


@dataclass
class SpeakerStats:
    requests: int = 0  # ARP requests and Neighbor Solicitations seen (for any IP)
    replies: int = 0  # replies (ARP replies, solicited NAs) sent from the raw sockets for announced IPs
    kernel_replies: int = 0  # requests for announced IPs the node's kernel answered (kernel_reply mode)
    ignored: int = 0  # other ARP/NDP frames (replies, requests for other IPs, our own)
    gratuitous: int = 0  # gratuitous frames sent (ARP, and unsolicited NAs)
    errors: int = 0  # send failures
    last_reply: float = 0.0  # time.time() of the last reply

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _Timer:
    __slots__ = ("when", "fn", "args", "cancelled")

    def __init__(self, when: float, fn, args: tuple):
        self.when, self.fn, self.args, self.cancelled = when, fn, args, False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: "_Timer") -> bool:
        return self.when < other.when


class SpeakerThread:
    """A small event loop in a thread of its own (epoll, timers, thread-safe calls), with the part of
    asyncio's loop API a Speaker uses. Speakers on it answer while the daemon's asyncio loop is busy
    with a reconcile pass (they still need the GIL), and with less overhead than on an asyncio loop
    (arping round trip p50 ~115 us against ~155 us on the same segment; a busy-polling responder gets
    ~90 us, the client's own wake-up). Several speakers can share one."""

    def __init__(self, name: str = "netemu-speaker"):
        import heapq
        import select

        self._heapq = heapq
        self._epoll = select.epoll()
        self._readers: dict[int, object] = {}
        self._timers: list[_Timer] = []
        self._calls: list[tuple] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._running = True
        self._closed = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    # ---------------------------------------------------------------- the loop API speakers use
    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def in_thread(self) -> bool:
        return threading.get_ident() == self.thread.ident

    def call_soon_threadsafe(self, fn, *args) -> None:
        with self._lock:
            self._calls.append((fn, args))
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def call_later(self, delay: float, fn, *args) -> _Timer:
        """Only from the loop's thread (as asyncio's)."""
        t = _Timer(time.monotonic() + delay, fn, args)
        self._heapq.heappush(self._timers, t)
        return t

    def add_reader(self, fd: int, callback) -> None:
        import select

        self._readers[fd] = callback
        self._epoll.register(fd, select.EPOLLIN)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    # ---------------------------------------------------------------- running
    def _run(self) -> None:
        heapq = self._heapq
        while self._running:
            timeout = -1.0
            if self._timers:
                timeout = max(0.0, self._timers[0].when - time.monotonic())
            try:
                events = self._epoll.poll(timeout)
            except InterruptedError:
                continue
            for fd, _ in events:
                if fd == self._wake_r:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                cb = self._readers.get(fd)
                if cb is not None:
                    self._guard(cb)
            if self._calls:
                with self._lock:
                    calls, self._calls = self._calls, []
                for fn, args in calls:
                    self._guard(fn, *args)
            now = time.monotonic()
            while self._timers and self._timers[0].when <= now:
                t = heapq.heappop(self._timers)
                if not t.cancelled:
                    self._guard(t.fn, *t.args)

    @staticmethod
    def _guard(fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # one speaker's bug must not stop the others
            log.exception("speaker callback failed")

    def stop(self) -> None:
        if self._closed:
            return

        def halt() -> None:
            self._running = False

        if self.in_thread():
            halt()
        else:
            self.call_soon_threadsafe(halt)
            self.thread.join(timeout=5)
        self._closed = True
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> "SpeakerThread":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Speaker:
    """The ARP side of one node's MetalLB speaker."""

    def __init__(self, node_name: str, netns: Optional[str], iface: str = "eth0", *,
                 loop: "Optional[asyncio.AbstractEventLoop | SpeakerThread]" = None,
                 garp_interval: float = GARP_INTERVAL, garp_duration: float = GARP_DURATION,
                 kernel_reply: bool = False, detour: str = names.NODE_BRIDGE):
        self.node_name = node_name
        self.netns = netns
        self.iface = iface
        self.kernel_reply = kernel_reply
        self.detour = detour  # where the /32 route of an announced IP points: anywhere but iface
        self.sock, self._mac = open_arp_socket(netns, iface)
        if kernel_reply:
            try:
                self._kernel_prepare()
            except Exception:
                self.sock.close()
                raise
        self.mac = mac_str(self._mac)
        self.stats = SpeakerStats()
        self._schedule = garp_schedule(garp_interval, garp_duration)
        self._announced: frozenset[bytes] = frozenset()  # packed addresses: 4 bytes IPv4, 16 bytes IPv6
        self._ndp: Optional[NdpSocket] = None  # opened with the first IPv6 address
        self._ndp_lock = threading.Lock()
        self._groups: dict[bytes, int] = {}  # solicited-node group -> announced addresses in it
        self._warned6: set[str] = set()
        self._timers: dict[bytes, list[asyncio.TimerHandle]] = {}
        self._own_thread: Optional[SpeakerThread] = None
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._own_thread = SpeakerThread(f"speaker-{node_name}")
                loop = self._own_thread
        self.loop = loop
        self._closed = False
        self._call(self._attach)

    # ---------------------------------------------------------------- loop plumbing
    def _in_loop(self) -> bool:
        if isinstance(self.loop, SpeakerThread):
            return self.loop.in_thread()
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def _call(self, fn, *args, wait: bool = True) -> None:
        """Run fn on the speaker's loop (at once when already there, or when nobody runs the loop)."""
        if self._in_loop() or not self.loop.is_running():
            fn(*args)
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn(*args)
            finally:
                done.set()

        self.loop.call_soon_threadsafe(run)
        if wait:
            done.wait(timeout=5)

    def _attach(self) -> None:
        self.loop.add_reader(self.sock.fileno(), self.handle_readable)

    # ---------------------------------------------------------------- API
    @property
    def announced(self) -> frozenset[str]:
        return frozenset(str(ipaddress.ip_address(ip)) for ip in self._announced)

    @property
    def ndp(self) -> bool:
        """Whether the NDP side is open (IPv6 on the interface and an IPv6 address announced once)."""
        return self._ndp is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def set_announced(self, ips: Iterable[str]) -> None:
        """Answer ARP (IPv4) and NDP (IPv6) for exactly these addresses from now on; gratuitous ARP or
        unsolicited NAs for the new ones. IPv6 addresses are skipped where the interface has no IPv6."""
        packed, v6 = set(), []
        for ip in ips:
            addr = ipaddress.ip_address(str(ip))
            (v6.append(addr) if addr.version == 6 else packed.add(addr.packed))
        if self._closed:
            return
        if v6:
            reason = self._open_ndp()
            for addr in v6:
                if reason is None:
                    packed.add(addr.packed)
                elif str(addr) not in self._warned6:  # the daemon offers it again every pass
                    self._warned6.add(str(addr))
                    log.warning("%s: %s is IPv6: not announced (no NDP responder: %s)", self.node_name, addr, reason)
        self._call(self._set, frozenset(packed))

    def _open_ndp(self) -> Optional[str]:
        """Open the NDP side if it is not open yet; None when it is, else why not."""
        with self._ndp_lock:
            if self._ndp is not None:
                return None
            try:
                sock = open_ndp_socket(self.netns, self.iface)
            except Ipv6Off as e:
                return str(e)
            except OSError as e:
                self.stats.errors += 1
                return f"{self.iface}: {e}"
            if self.kernel_reply:
                try:
                    self._kernel_prepare6()
                except OSError as e:
                    sock.close()
                    self.stats.errors += 1
                    return f"proxy NDP on {self.iface}: {e}"
            self._ndp = sock
        self._call(lambda: self.loop.add_reader(sock.sock.fileno(), self.handle_readable_ndp))
        log.info("%s: NDP responder on %s (%s, from %s)", self.node_name, self.iface, self.mac,
                 ipaddress.IPv6Address(sock.source))
        return None

    def announce_again(self, ips: Optional[Iterable[str]] = None) -> None:
        """Send the gratuitous rounds again for announced IPs (all of them by default)."""
        chosen = self._announced if ips is None else frozenset(ipaddress.ip_address(str(i)).packed for i in ips)
        self._call(lambda: [self._start_garp(ip) for ip in chosen & self._announced])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def detach() -> None:
            for handles in self._timers.values():
                for h in handles:
                    h.cancel()
            self._timers.clear()
            if self.kernel_reply:  # a stopped speaker must stop the kernel answering for it too
                self._kernel_program(frozenset(), self._announced, strict=False)
            self._announced = frozenset()
            self._groups.clear()
            for sock in (self.sock, self._ndp.sock if self._ndp else None):
                if sock is None:
                    continue
                try:
                    self.loop.remove_reader(sock.fileno())
                except (ValueError, OSError):
                    pass

        if not self.loop.is_closed():
            self._call(detach)
        self.sock.close()
        with self._ndp_lock:
            if self._ndp is not None:
                self._ndp.close()
        if self._own_thread is not None:
            self._own_thread.stop()

    def __enter__(self) -> "Speaker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Speaker({self.node_name!r}, {self.iface} {self.mac}, announcing {sorted(self.announced)})"

    # ---------------------------------------------------------------- on the loop
    def _set(self, packed: frozenset[bytes]) -> None:
        old = self._announced
        if self.kernel_reply:  # before the gratuitous rounds: askers must find the kernel answering
            self._kernel_program(packed - old, old - packed)
        for ip in sorted(packed - old):  # MetalLB's Watch before its first unsolicited NA
            if len(ip) == 16:
                self._group(ndp.solicited_node(ip), +1)
        self._announced = packed
        for ip in old - packed:  # lost: stop its gratuitous rounds (MetalLB: refcount gone, no more spam)
            for h in self._timers.pop(ip, []):
                h.cancel()
            if len(ip) == 16:
                self._group(ndp.solicited_node(ip), -1)
        for ip in sorted(packed - old):
            log.info("%s: announcing %s from %s", self.node_name, ipaddress.ip_address(ip), self.mac)
            self._start_garp(ip)

    def _group(self, group: bytes, delta: int) -> None:
        """Join a solicited-node group on its first address, leave it with its last (MetalLB's Watch
        and Unwatch). A failure only costs the MLD report: the packet socket sees the frames anyway
        on a segment that floods them, as the lab's bridge does."""
        n = self._groups.get(group, 0) + delta
        if n > 0:
            self._groups[group] = n
        else:
            self._groups.pop(group, None)
        if self._ndp is None or not ((delta > 0 and n == 1) or (delta < 0 and n == 0)):
            return
        opt = socket.IPV6_JOIN_GROUP if delta > 0 else socket.IPV6_LEAVE_GROUP
        try:
            self._ndp.member.setsockopt(socket.IPPROTO_IPV6, opt, group + struct.pack("@I", self._ndp.ifindex))
        except OSError as e:
            self.stats.errors += 1
            log.warning("%s: %s group %s: %s", self.node_name, "joining" if delta > 0 else "leaving",
                        ipaddress.IPv6Address(group), e)

    # ---------------------------------------------------------------- kernel_reply mode
    KERNEL_ROUTE_PROTO = "77"  # marks our /32 routes, so a restarted speaker can find leftovers

    def _kernel_prepare(self) -> None:
        """proxy_delay 0 (else broadcast requests wait up to 0.8 s), forwarding (proxying needs it),
        and no entries left by an earlier speaker on this node (a restarted control process)."""
        if self.netns is None:
            raise OSError("kernel_reply needs the node's network namespace")
        nsutil.write_sysctl_in(self.netns, {f"net.ipv4.neigh.{self.iface}.proxy_delay": "0",
                                            f"net.ipv4.conf.{self.iface}.forwarding": "1"})
        ip_batch([f"neigh flush proxy dev {self.iface}", f"route flush proto {self.KERNEL_ROUTE_PROTO}"],
                 netns=self.netns, force=True)

    def _kernel_prepare6(self) -> None:
        """Proxy NDP on eth0: answered at once (proxy_delay 0; else a multicast solicitation waits up to
        0.8 s), by an interface in router mode (the kernel proxies only there), and unicast probes for a
        proxied address handed to NDP by the forwarding path (it checks ``all.proxy_ndp``)."""
        if self.netns is None:
            raise OSError("kernel_reply needs the node's network namespace")
        nsutil.write_sysctl_in(self.netns, {f"net.ipv6.neigh.{self.iface}.proxy_delay": "0",
                                            f"net.ipv6.conf.{self.iface}.forwarding": "1",
                                            f"net.ipv6.conf.{self.iface}.proxy_ndp": "1",
                                            "net.ipv6.conf.all.proxy_ndp": "1"})
        # (an earlier speaker's IPv6 proxy entries went with _kernel_prepare's flush: it takes both families)

    def _kernel_program(self, gained: frozenset[bytes], lost: frozenset[bytes], strict: bool = True) -> None:
        cmds = []
        for ip in sorted(lost):
            a = ipaddress.ip_address(ip)
            cmds.append(f"neigh del proxy {a} dev {self.iface}")
            if a.version == 4:  # (NDP proxying needs no route)
                cmds.append(f"route del {a}/32 dev {self.detour} proto {self.KERNEL_ROUTE_PROTO}")
        for ip in sorted(gained):
            a = ipaddress.ip_address(ip)
            if a.version == 4:
                cmds.append(f"route replace {a}/32 dev {self.detour} proto {self.KERNEL_ROUTE_PROTO}")
            cmds.append(f"neigh replace proxy {a} dev {self.iface}")
        try:
            ip_batch(cmds, netns=self.netns, force=not strict)
        except IpError as e:  # the namespace or bridge gone: nothing answers, as with a dead speaker
            self.stats.errors += 1
            log.warning("%s: kernel ARP entries: %s", self.node_name, e)

    def _start_garp(self, ip: bytes) -> None:
        for h in self._timers.pop(ip, []):
            h.cancel()
        handles = []
        for delay in self._schedule:
            if delay == 0:
                self._garp_round(ip)
            else:
                handles.append(self.loop.call_later(delay, self._garp_round, ip))
        self._timers[ip] = handles

    def _garp_round(self, ip: bytes) -> None:
        if ip not in self._announced or self._closed:
            return
        if len(ip) == 16:  # MetalLB's Gratuitous for IPv6: one unsolicited NA to all-nodes
            if self._ndp is not None and self._send(
                    ndp.unsolicited_advertisement(self._mac, self._ndp.source, ip), self._ndp.sock):
                self.stats.gratuitous += 1
            return
        for frame in gratuitous_frames(self._mac, ip):
            if self._send(frame):
                self.stats.gratuitous += 1

    def _send(self, frame: bytes, sock: Optional[socket.socket] = None) -> bool:
        try:
            (sock or self.sock).send(frame)
            return True
        except OSError as e:  # a full queue, the interface gone or down
            self.stats.errors += 1
            log.debug("%s: send failed: %s", self.node_name, e)
            return False

    def _incoming(self, sock):
        """The frames waiting on a packet socket, not our own outgoing copies, until it would block."""
        while True:
            try:
                frame, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.stats.errors += 1
                log.debug("%s: recv failed: %s", self.node_name, e)
                return
            if addr[2] != PACKET_OUTGOING:
                yield frame

    def handle_readable(self) -> None:
        """Answer every ARP request waiting on the socket (the loop calls this)."""
        for frame in self._incoming(self.sock):
            req = parse_request(frame)
            if req is None:
                self.stats.ignored += 1
                continue
            self.stats.requests += 1
            if req.target_ip not in self._announced or req.sender_mac == self._mac:
                self.stats.ignored += 1
                continue
            if req.dst != BROADCAST and req.dst != self._mac:
                self.stats.ignored += 1
                continue
            if self.kernel_reply:  # the proxy entry answers it
                self.stats.kernel_replies += 1
                continue
            reply = arp_frame(ARP_REPLY, self._mac, self._mac, req.target_ip, req.sender_mac, req.sender_ip,
                              req.sender_mac)
            if self._send(reply):
                self.stats.replies += 1
                self.stats.last_reply = time.time()

    def handle_readable_ndp(self) -> None:
        """Answer every Neighbor Solicitation waiting on the NDP socket (the loop calls this)."""
        side = self._ndp
        if side is None:
            return
        for frame in self._incoming(side.sock):
            ns = ndp.parse_ns(frame)
            if ns is None:
                self.stats.ignored += 1
                continue
            self.stats.requests += 1
            if ndp.wanted(ns, self._announced, self._mac) is not None:
                self.stats.ignored += 1
                continue
            if self.kernel_reply:  # the proxy entry answers it
                self.stats.kernel_replies += 1
                continue
            if self._send(ndp.solicited_reply(self._mac, side.source, ns), side.sock):
                self.stats.replies += 1
                self.stats.last_reply = time.time()


class Speakers:
    """Every node's speaker of one lab, on one SpeakerThread: what the daemon keeps.

        speakers = Speakers({"w1-k8s": "ne-lab_w1-k8s", ...})
        speakers.sync(metallb_l2.reconcile(cluster).by_node)    # after each reconcile pass
        speakers.kill("w1-k8s")                                 # `killing a node's speaker`
        speakers.close()                                        # teardown

    A speaker that cannot be opened (its namespace is gone) is reported as not alive."""

    def __init__(self, netns_of_node: dict[str, str], iface: str = "eth0",
                 thread: Optional[SpeakerThread] = None, kernel_reply: bool = False):
        self.iface = iface
        self.kernel_reply = kernel_reply
        self.thread = thread or SpeakerThread("netemu-speakers")
        self._own_thread = thread is None
        self.netns = dict(netns_of_node)
        self.speakers: dict[str, Speaker] = {}
        self.errors: dict[str, str] = {}
        for node in self.netns:
            self.start(node)

    def start(self, node: str) -> bool:
        """(Re)start a node's speaker; False when its socket cannot be opened."""
        if node in self.speakers:
            return True
        try:
            self.speakers[node] = Speaker(node, self.netns[node], self.iface, loop=self.thread,
                                          kernel_reply=self.kernel_reply)
            self.errors.pop(node, None)
            return True
        except OSError as e:
            self.errors[node] = str(e)
            log.warning("speaker on %s: %s", node, e)
            return False

    def kill(self, node: str) -> None:
        sp = self.speakers.pop(node, None)
        if sp is not None:
            sp.close()

    def alive(self) -> dict[str, bool]:
        return {node: node in self.speakers for node in self.netns}

    def sync(self, by_node: dict[str, set[str]]) -> None:
        """Each speaker answers for exactly its node's IPs (gratuitous ARP for the ones it gains)."""
        for node, sp in self.speakers.items():
            want = {str(ipaddress.ip_address(str(ip))) for ip in by_node.get(node, ())}  # IPv6 spelt one way
            if want != set(sp.announced):
                sp.set_announced(want)

    def stats(self) -> dict[str, dict]:
        return {node: {"mac": sp.mac, "announced": sorted(sp.announced),
                       "replier": "kernel" if sp.kernel_reply else "speaker", **sp.stats.as_dict()}
                for node, sp in self.speakers.items()}

    def close(self) -> None:
        for node in list(self.speakers):
            self.kill(node)
        if self._own_thread:
            self.thread.stop()


__all__ = ["Speaker", "Speakers", "SpeakerThread", "SpeakerStats", "garp_schedule", "gratuitous_frames", "arp_frame",
           "parse_request", "open_arp_socket", "open_ndp_socket", "NdpSocket", "Ipv6Off",
           "GARP_INTERVAL", "GARP_DURATION"]
