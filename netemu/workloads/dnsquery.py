"""A tiny DNS client for kuard's "DNS Query" tab: one question, answered as dig-like text.

It reads the pod's /etc/resolv.conf (nameserver, search domains), tries the search domains
for a relative name as a resolver would, and asks over UDP; enough to see that `alpaca-prod`
is `alpaca-prod.default.svc.cluster.local.` with the Service's cluster IP.
"""
from __future__ import annotations

import os
import socket
import struct

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28,
         "SRV": 33, "ANY": 255}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
TIMEOUT = 2.0
DNS_PORT = 53


def query(name: str, qtype: str = "A", resolv_conf: str = "/etc/resolv.conf") -> str:
    kind = TYPES.get(qtype.strip().upper())
    if kind is None:
        raise ValueError(f"Unknown DNS type: {qtype}")
    server, search = _resolver(resolv_conf)
    name = name.strip() or "."
    candidates = [name] if name.endswith(".") else [f"{name}.{d}." for d in search] + [name + "."]
    text = ""
    for candidate in candidates:
        answers, text = _ask(server, candidate, kind)
        if answers:
            break
    return text


def _resolver(path: str) -> tuple[str, list[str]]:
    server, search = "127.0.0.1", []
    try:
        with open(path) as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver" and server == "127.0.0.1":
                    server = words[1]
                elif words and words[0] in ("search", "domain"):
                    search = words[1:]
    except OSError:
        pass
    return server, search


def _ask(server: str, name: str, kind: int) -> tuple[int, str]:
    ident = int.from_bytes(os.urandom(2), "big")
    packet = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + _encode_name(name) + struct.pack("!HH", kind, 1)
    with socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.sendto(packet, (server, DNS_PORT))
        while True:
            reply, _ = s.recvfrom(4096)
            if len(reply) >= 12 and reply[:2] == packet[:2]:
                break
    return _describe(reply)


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            raw = label.encode("idna") if not label.isascii() else label.encode()
            if len(raw) > 63:
                raise ValueError(f"label too long in {name!r}")
            out += bytes([len(raw)]) + raw
    return out + b"\0"


def _read_name(msg: bytes, pos: int) -> tuple[str, int]:
    labels, end, jumps = [], None, 0
    while True:
        length = msg[pos]
        if length & 0xC0 == 0xC0:  # compression pointer
            if end is None:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            jumps += 1
            if jumps > 32:
                raise ValueError("compression loop")
            continue
        if length == 0:
            return ".".join(labels) + ".", (end if end is not None else pos + 1)
        labels.append(msg[pos + 1:pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length


def _rdata(msg: bytes, kind: int, start: int, size: int) -> str:
    data = msg[start:start + size]
    if kind == 1 and size == 4:
        return socket.inet_ntoa(data)
    if kind == 28 and size == 16:
        return socket.inet_ntop(socket.AF_INET6, data)
    if kind in (2, 5, 12):
        return _read_name(msg, start)[0]
    if kind == 15:
        return f"{struct.unpack('!H', data[:2])[0]} {_read_name(msg, start + 2)[0]}"
    if kind == 33:
        priority, weight, port = struct.unpack("!HHH", data[:6])
        return f"{priority} {weight} {port} {_read_name(msg, start + 6)[0]}"
    if kind == 16:
        parts, i = [], 0
        while i < len(data):
            parts.append('"' + data[i + 1:i + 1 + data[i]].decode("utf-8", "replace") + '"')
            i += 1 + data[i]
        return " ".join(parts)
    return "\\# %d %s" % (size, data.hex())


def _describe(msg: bytes) -> tuple[int, str]:
    ident, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
    flag_names = [n for bit, n in ((15, "qr"), (10, "aa"), (9, "tc"), (8, "rd"), (7, "ra")) if flags >> bit & 1]
    lines = [f";; opcode: QUERY, status: {RCODES.get(flags & 0xF, flags & 0xF)}, id: {ident}",
             f";; flags: {' '.join(flag_names)}; QUERY: {qd}, ANSWER: {an}, AUTHORITY: {ns}, ADDITIONAL: {ar}",
             "", ";; QUESTION SECTION:"]
    pos = 12
    for _ in range(qd):
        qname, pos = _read_name(msg, pos)
        qtype, _qclass = struct.unpack("!HH", msg[pos:pos + 4])
        pos += 4
        lines.append(f";{qname}\tIN\t {TYPE_NAMES.get(qtype, qtype)}")
    for title, count in (("ANSWER", an), ("AUTHORITY", ns), ("ADDITIONAL", ar)):
        if count:
            lines += ["", f";; {title} SECTION:"]
        for _ in range(count):
            rname, pos = _read_name(msg, pos)
            rtype, _rclass, ttl, size = struct.unpack("!HHIH", msg[pos:pos + 10])
            pos += 10
            if rtype != 41:  # skip the EDNS pseudo-record
                lines.append(f"{rname}\t{ttl}\tIN\t{TYPE_NAMES.get(rtype, rtype)}\t{_rdata(msg, rtype, pos, size)}")
            pos += size
    return an, "\n".join(lines) + "\n"
