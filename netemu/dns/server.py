"""The DNS server: UDP and TCP on one address, plus CoreDNS's HTTP endpoints.

Hot path: a reply depends only on the request bytes after the ID, the transport and the zone,
so each distinct request is answered once (parse, ``answer``, encode) and its wire form cached;
a repeat costs one dict lookup and two syscalls. A new zone replaces the cache wholesale.

    feed = ZoneFeed(ClusterZone.build(services, slices, pods))
    server = serve("10.244.0.5", feed)   # threads running; returns at once
    feed.publish(new_zone)               # answers follow from the next query
    server.stop()

Bound to "::" (or "": "::" where the kernel has IPv6, else "0.0.0.0"), the server takes both
families on one socket, as CoreDNS's ``.:53`` does (Go's wildcard listener): IPv4 clients arrive
as IPv4-mapped addresses and are counted as family 1.
"""
from __future__ import annotations

import itertools
import logging
import socket
import struct
import threading
from typing import Callable, Optional, Union

from dnslib import QTYPE, RCODE, DNSRecord

from netemu.dns import loadbalance, wire
from netemu.dns.answer import answer
from netemu.dns.envelope import server_failure
from netemu.dns.feed import ZoneFeed, ZoneSource
from netemu.dns.httpd import start_http
from netemu.dns.metrics import Cell, CellKey, Metrics, type_label
from netemu.dns.zone import ClusterZone

log = logging.getLogger("netemu.dns")

MAX_CACHED_ANSWERS = 100_000  # per transport; a flood of distinct names just restarts it
UDP_RECV_SIZE = 4096
UDP_SOCKET_BUFFER = 4 << 20  # the kernel caps it at net.core.rmem_max
TCP_IDLE_SECONDS = 10.0

# cached per request: (next wire reply without its ID, metrics cell)
Entry = tuple[Callable[[], bytes], Cell]


class _ZoneState:
    """A zone and the answers computed from it; replaced together, never mutated in place
    except for filling the caches. IPv4 clients of a dual-stack socket have caches of their
    own: an entry carries its metrics cell, and the cell names the client's family."""
    __slots__ = ("zone", "udp", "tcp", "udp_v4", "tcp_v4")

    def __init__(self, zone: Optional[ClusterZone]):
        self.zone = zone
        self.udp: dict[bytes, Entry] = {}
        self.tcp: dict[bytes, Entry] = {}
        self.udp_v4: dict[bytes, Entry] = {}
        self.tcp_v4: dict[bytes, Entry] = {}


class DNSServer:
    def __init__(self, bind: str, zone_source: Union[ZoneSource, ClusterZone], *, port: int = 53,
                 metrics_port: Optional[int] = 9153, health_port: Optional[int] = 8080,
                 ready_port: Optional[int] = 8181, shuffle: bool = True):
        if isinstance(zone_source, ClusterZone):
            zone_source = ZoneFeed(zone_source)
        if bind == "":  # every address, as CoreDNS's '.:53': both families where IPv6 exists
            bind = "::" if _ipv6_available() else "0.0.0.0"
        self.bind = bind
        self.shuffle = shuffle
        self._source = zone_source
        self._family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self._family_label = "2" if self._family == socket.AF_INET6 else "1"
        self._dual = bind == "::"  # both families on one socket
        self._requested = {"dns": port, "metrics": metrics_port, "health": health_port, "ready": ready_port}
        self._state = _ZoneState(zone_source.current())
        # with a feed that pushes updates, the hot loop never has to ask for the zone
        self._poll: Optional[Callable[[], Optional[ClusterZone]]] = None
        self._unsubscribe: Optional[Callable[[], None]] = None
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._http: list = []
        self._tcp_conns: set[socket.socket] = set()
        self._udp: Optional[socket.socket] = None
        self._tcp: Optional[socket.socket] = None
        self.port = 0
        self.metrics_port = self.health_port = self.ready_port = 0
        self.metrics = Metrics(_server_label(bind, port))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "DNSServer":
        try:
            self._start()
        except BaseException:
            self.stop()  # a port in use: release what was taken before it
            raise
        return self

    def _start(self) -> None:
        self._udp, self._tcp = _bind_udp_tcp(self._family, self.bind, self._requested["dns"], self._dual)
        self.port = self._udp.getsockname()[1]
        self.metrics.server = _server_label(self.bind, self.port)
        subscribe = getattr(self._source, "subscribe", None)
        if callable(subscribe):
            self._unsubscribe = subscribe(self._adopt)
            self._adopt(self._source.current())  # in case one was published meanwhile
        else:
            self._poll = self._source.current
        self._spawn(self._serve_udp, "dns-udp")
        self._spawn(self._accept_tcp, "dns-tcp")
        for name, path, route in (("metrics", "/metrics", self._metrics_page),
                                  ("health", "/health", lambda: (200, "text/plain", "OK")),
                                  ("ready", "/ready", self._ready_page)):
            if self._requested[name] is not None:
                httpd = start_http(self.bind, self._requested[name], path, route)
                self._http.append(httpd)
                setattr(self, f"{name}_port", httpd.server_address[1])
        log.info("DNS on %s port %d", self.bind, self.port)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for sock in [self._udp, self._tcp, *list(self._tcp_conns)]:
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked on it
                except OSError:
                    pass
        # each HTTP loop notices shutdown within its poll interval: wait for them together
        closers = [threading.Thread(target=httpd.shutdown, daemon=True) for httpd in self._http]
        for t in closers:
            t.start()
        for t in closers:
            t.join(timeout=2)
        for httpd in self._http:
            httpd.server_close()
        for t in self._threads:
            t.join(timeout=2)
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()

    def wait(self) -> None:
        """Block until stop() (e.g. from a signal handler)."""
        self._stopped.wait()

    def __enter__(self) -> "DNSServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def ready(self) -> bool:
        return self._current().zone is not None

    def _spawn(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _adopt(self, zone: Optional[ClusterZone]) -> _ZoneState:
        state = self._state
        if zone is not state.zone:
            state = self._state = _ZoneState(zone)
            self.metrics.zone_swaps += 1
        return state

    def _current(self) -> _ZoneState:
        state = self._state
        if self._poll is not None:
            zone = self._poll()
            if zone is not state.zone:
                state = self._adopt(zone)
        return state

    # ------------------------------------------------------------------ UDP
    def _serve_udp(self) -> None:
        sock = self._udp
        recvfrom, sendto = sock.recvfrom, sock.sendto
        polling = self._poll is not None
        stopped = self._stopped.is_set
        dual = self._dual
        while True:
            try:
                data, peer = recvfrom(UDP_RECV_SIZE)
            except OSError:
                if stopped():
                    return
                continue
            if not data:  # shutdown() returns an empty read
                if stopped():
                    return
                continue
            state = self._current() if polling else self._state
            if dual and _mapped(peer[0]):
                cache, family = state.udp_v4, "1"
            else:
                cache, family = state.udp, self._family_label
            entry = cache.get(data[2:])
            if entry is None:
                entry = self._resolve(state, cache, data, "udp", family)
                if entry is None:
                    continue
            entry[1][0] += 1
            try:
                sendto(data[:2] + entry[0](), peer)
            except OSError:
                pass  # the client went away; nothing to tell it

    # ------------------------------------------------------------------ TCP
    def _accept_tcp(self) -> None:
        while True:
            try:
                conn, peer = self._tcp.accept()
            except OSError:
                if self._stopped.is_set():
                    return
                continue
            conn.settimeout(TCP_IDLE_SECONDS)
            self._tcp_conns.add(conn)
            v4 = self._dual and _mapped(peer[0])
            threading.Thread(target=self._serve_tcp, args=(conn, v4), name="dns-tcp-conn", daemon=True).start()

    def _serve_tcp(self, conn: socket.socket, v4_client: bool = False) -> None:
        """Length-prefixed requests, answered in order, until the client closes or idles."""
        family = "1" if v4_client else self._family_label
        try:
            while not self._stopped.is_set():
                head = _recv_exact(conn, 2)
                if head is None:
                    return
                data = _recv_exact(conn, struct.unpack("!H", head)[0])
                if data is None:
                    return
                state = self._current()
                cache = state.tcp_v4 if v4_client else state.tcp
                entry = cache.get(data[2:]) or self._resolve(state, cache, data, "tcp", family)
                if entry is None:
                    continue
                entry[1][0] += 1
                reply = data[:2] + entry[0]()
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass
        finally:
            self._tcp_conns.discard(conn)
            conn.close()

    # ------------------------------------------------------------------ the slow path
    def _resolve(self, state: _ZoneState, cache: dict, data: bytes, proto: str,
                 family: str) -> Optional[Entry]:
        """Answer a request not seen since the zone changed, and remember the wire reply."""
        verdict = wire.screen(data)
        if verdict == wire.IGNORE:
            return None
        cacheable = True
        if verdict is not None:
            payloads, key = [verdict[2:]], self._key(proto, family, "other", verdict, "")
        else:
            try:
                request = DNSRecord.parse(data)
            except Exception:  # dnslib raises several kinds on garbage
                reply = wire.reject(data, RCODE.FORMERR)
                payloads, key = [reply[2:]], self._key(proto, family, "other", reply, "")
            else:
                payloads, key, cacheable = self._reply_payloads(state.zone, request, proto, family)
        entry = (_next_of(payloads), self.metrics.cell(key))
        entry[1][1] += 1
        if cacheable:
            if len(cache) >= MAX_CACHED_ANSWERS:
                cache.clear()
            cache[data[2:]] = entry
        return entry

    def _reply_payloads(self, zone: Optional[ClusterZone], request: DNSRecord, proto: str, family: str):
        """The wire replies (rotations of one, see ``loadbalance``), their metrics labels, and
        whether they may be cached (not after a failure)."""
        limit = wire.size_limit(request, tcp=proto == "tcp")
        qtype = QTYPE.get(request.q.qtype, "other") if request.questions else "other"
        try:
            if zone is None:
                reply, plugin = server_failure(request), ""
            else:
                reply = answer(zone, request)
                plugin = "kubernetes" if reply.header.aa else ""
            encoded = wire.encode_with_layout(reply, limit)
            variants = loadbalance.rotations(reply, encoded) if self.shuffle else [encoded.data]
            payloads = [v[2:] for v in variants]
            cacheable = True
        except Exception:  # a bug, or a name too long to encode: SERVFAIL, as CoreDNS recovers
            log.exception("answering %s", request.q)
            payloads, plugin, cacheable = [wire.encode(server_failure(request), limit)[2:]], "", False
        key = self._key(proto, family, type_label(str(qtype)), payloads[0], plugin, offset=-2)
        return payloads, key, cacheable

    def _key(self, proto: str, family: str, qtype: str, reply: bytes, plugin: str, offset: int = 0) -> CellKey:
        """The metrics labels of a wire reply (``offset`` -2: the reply lacks its ID)."""
        rcode = reply[3 + offset] & 0xF
        return CellKey(proto, family, qtype, str(RCODE.get(rcode, rcode)), plugin)

    # ------------------------------------------------------------------ HTTP
    def _metrics_page(self) -> tuple[int, str, str]:
        zone = self._current().zone
        body = self.metrics.render(zone_serial=zone.serial if zone else 0, ready=zone is not None)
        return 200, "text/plain; version=0.0.4; charset=utf-8", body

    def _ready_page(self) -> tuple[int, str, str]:
        if self.ready:
            return 200, "text/plain", "OK"
        return 503, "text/plain", "kubernetes"


def serve(bind: str, zone_source: Union[ZoneSource, ClusterZone], *, port: int = 53,
          metrics_port: Optional[int] = 9153, health_port: Optional[int] = 8080,
          ready_port: Optional[int] = 8181, shuffle: bool = True) -> DNSServer:
    """Start answering on bind:port (UDP and TCP; 0 picks a free port, see ``.port``; "::"
    takes both families, "" too where the kernel has IPv6) from the zone the source holds. ``zone_source``: a ClusterZone, a ZoneFeed, or any object with
    ``current()`` (asked on every query when it has no ``subscribe``). HTTP ports set to None
    are not opened. Returns the running server; ``.wait()`` blocks, ``.stop()`` ends it."""
    return DNSServer(bind, zone_source, port=port, metrics_port=metrics_port, health_port=health_port,
                     ready_port=ready_port, shuffle=shuffle).start()


def _server_label(bind: str, port: int) -> str:
    """CoreDNS's server label: dns://:53 when listening everywhere."""
    return f"dns://{'' if bind in ('0.0.0.0', '::') else bind}:{port}"


def _next_of(payloads: list[bytes]) -> Callable[[], bytes]:
    if len(payloads) == 1:
        return itertools.repeat(payloads[0]).__next__
    return itertools.cycle(payloads).__next__


def _recv_exact(conn: socket.socket, n: int) -> Optional[bytes]:
    chunks, got = [], 0
    while got < n:
        chunk = conn.recv(n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _ipv6_available() -> bool:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
        return True
    except OSError:  # a kernel booted without IPv6
        return False


def _mapped(host: str) -> bool:
    """An IPv4 client as a dual-stack socket reports it (::ffff:a.b.c.d)."""
    return host.startswith("::ffff:") and "." in host


def _bind_udp_tcp(family: int, bind: str, port: int, dual: bool = False) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on the same port (with port 0: a free port both can have).
    ``dual``: IPv6 sockets that take IPv4 too, whatever the namespace's bindv6only says."""
    for _ in range(50):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_SOCKET_BUFFER)  # absorb bursts
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dual:
            for sock in (udp, tcp):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            udp.bind((bind, port))
            tcp.bind((bind, udp.getsockname()[1]))
            tcp.listen(128)
            return udp, tcp
        except OSError:
            udp.close()
            tcp.close()
            if port != 0:
                raise
    raise OSError(f"no port free for both UDP and TCP on {bind}")
