"""SPDY/3.1 framing, as kubectl and kubelet speak it (moby/spdystream): pure, no I/O.

kubectl's exec/attach/cp fall back to SPDY, and its port-forward runs SPDY (plain, or tunnelled in
WebSocket binary messages). No well-kept Python library does SPDY, so this is the small part needed:

- frames as dataclasses; ``Encoder.encode(frame) -> bytes`` and ``Parser.feed(bytes) -> [frames]``
  (incremental: any split of the byte stream gives the same frames);
- header blocks compressed with zlib seeded with SPDY/3's dictionary, one compression context per
  direction per connection (the encoder owns ours, the parser the peer's), flushed per frame;
- flow-control windows (``Flow``): SPDY/3.1 has a window per stream and one per session.
  spdystream implements none of it (it never sends WINDOW_UPDATE and ignores ours), so our send
  windows are enforced only once the peer shows it does flow control (a WINDOW_UPDATE or an
  INITIAL_WINDOW_SIZE setting); we still send WINDOW_UPDATEs for what we consume.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Optional, Union

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR = 0x01

# RST_STREAM status codes
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, UNSUPPORTED_VERSION, CANCEL, INTERNAL_ERROR = 1, 2, 3, 4, 5, 6
FLOW_CONTROL_ERROR, STREAM_IN_USE, STREAM_ALREADY_CLOSED, FRAME_TOO_LARGE = 7, 8, 9, 11
# GOAWAY status codes
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, GOAWAY_INTERNAL_ERROR = 0, 1, 2
# SETTINGS ids
SETTINGS_INITIAL_WINDOW_SIZE = 7

DEFAULT_WINDOW = 64 * 1024
MAX_WINDOW = 2 ** 31 - 1
MAX_FRAME = 2 ** 24 - 1  # a frame's length field has 24 bits

# SPDY/3's header dictionary (draft-mbelshe-httpbis-spdy-00 section 2.6.10.1): length-prefixed
# words, then a run of status codes, dates and common values.
_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base content-encoding "
    "content-language content-length content-location content-md5 content-range content-type date etag "
    "expect expires from host if-match if-modified-since if-none-match if-range if-unmodified-since "
    "last-modified location max-forwards pragma proxy-authenticate proxy-authorization range referer "
    "retry-after server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate "
    "method get status 200·OK version HTTP/1.1 url public set-cookie keep-alive origin"
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def _dictionary() -> bytes:
    words = [w.replace("·", " ").encode() for w in _WORDS.split()]  # "200 OK" is one word
    return b"".join(struct.pack(">I", len(w)) + w for w in words) + _TAIL.encode()


DICTIONARY = _dictionary()

Headers = dict[str, list[str]]


class SpdyError(Exception):
    """The peer sent something that is not SPDY/3.1: the connection cannot go on."""


# ---------------------------------------------------------------------- frames
@dataclass
class Data:
    stream_id: int
    data: bytes = b""
    fin: bool = False


@dataclass
class SynStream:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    associated: int = 0
    priority: int = 0
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass
class RstStream:
    stream_id: int
    status: int = CANCEL


@dataclass
class Settings:
    entries: list[tuple[int, int, int]] = field(default_factory=list)  # (flags, id, value)
    clear: bool = False


@dataclass
class Ping:
    id: int


@dataclass
class GoAway:
    last_good: int = 0
    status: int = GOAWAY_OK


@dataclass
class HeadersFrame:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass
class WindowUpdate:
    stream_id: int
    delta: int


Frame = Union[Data, SynStream, SynReply, RstStream, Settings, Ping, GoAway, HeadersFrame, WindowUpdate]


def header(headers: Headers, name: str) -> Optional[str]:
    """A header's first value (names are lower case on the wire; spdystream lowercases them)."""
    values = headers.get(name.lower())
    return values[0] if values else None


# ---------------------------------------------------------------------- header blocks
def encode_block(headers: Headers) -> bytes:
    """The uncompressed name/value block: count, then (length, name, length, NUL-joined values)."""
    out = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        n = name.lower().encode()
        v = "\x00".join([values] if isinstance(values, str) else values).encode()
        out += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(out)


def decode_block(block: bytes) -> Headers:
    try:
        (count,) = struct.unpack_from(">I", block, 0)
        pos, out = 4, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", block, pos)
            name = block[pos + 4:pos + 4 + n].decode()
            pos += 4 + n
            (n,) = struct.unpack_from(">I", block, pos)
            value = block[pos + 4:pos + 4 + n].decode()
            if pos + 4 + n > len(block):
                raise SpdyError("header block truncated")
            pos += 4 + n
            out.setdefault(name.lower(), []).extend(value.split("\x00"))
    except (struct.error, UnicodeDecodeError) as e:
        raise SpdyError(f"bad header block: {e}") from None
    return out


class HeaderCompressor:
    """Our direction's zlib context: every block is flushed (Z_SYNC_FLUSH) so the peer can inflate it
    at once, and the context carries over to the next frame, as SPDY requires."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, zdict=DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        return self._z.compress(encode_block(headers)) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    def __init__(self) -> None:
        self._z = zlib.decompressobj(zdict=DICTIONARY)

    def decompress(self, data: bytes) -> Headers:
        try:
            return decode_block(self._z.decompress(data))
        except zlib.error as e:
            raise SpdyError(f"bad compressed header block: {e}") from None


# ---------------------------------------------------------------------- encoding
def _control(ftype: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, data: bytes = b"", fin: bool = False) -> bytes:
    """One DATA frame (the hot path: no dataclass, no compression)."""
    return struct.pack(">II", stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data


class Encoder:
    """Frames to bytes, with this side's header compression context."""

    def __init__(self) -> None:
        self.headers = HeaderCompressor()

    def encode(self, f: Frame) -> bytes:
        if isinstance(f, Data):
            if len(f.data) > MAX_FRAME:
                raise ValueError("DATA frame too large: split it")
            return data_frame(f.stream_id, f.data, f.fin)
        if isinstance(f, SynStream):
            flags = (FLAG_FIN if f.fin else 0) | (FLAG_UNIDIRECTIONAL if f.unidirectional else 0)
            return _control(SYN_STREAM, flags, struct.pack(">IIBB", f.stream_id, f.associated, (f.priority & 7) << 5,
                                                           f.slot) + self.headers.compress(f.headers))
        if isinstance(f, SynReply):
            return _control(SYN_REPLY, FLAG_FIN if f.fin else 0,
                            struct.pack(">I", f.stream_id) + self.headers.compress(f.headers))
        if isinstance(f, HeadersFrame):
            return _control(HEADERS, FLAG_FIN if f.fin else 0,
                            struct.pack(">I", f.stream_id) + self.headers.compress(f.headers))
        if isinstance(f, RstStream):
            return _control(RST_STREAM, 0, struct.pack(">II", f.stream_id, f.status))
        if isinstance(f, Settings):
            body = struct.pack(">I", len(f.entries)) + b"".join(
                struct.pack(">II", (fl << 24) | i, v) for fl, i, v in f.entries)
            return _control(SETTINGS, FLAG_SETTINGS_CLEAR if f.clear else 0, body)
        if isinstance(f, Ping):
            return _control(PING, 0, struct.pack(">I", f.id))
        if isinstance(f, GoAway):
            return _control(GOAWAY, 0, struct.pack(">II", f.last_good, f.status))
        if isinstance(f, WindowUpdate):
            return _control(WINDOW_UPDATE, 0, struct.pack(">II", f.stream_id, f.delta))
        raise TypeError(f"not a SPDY frame: {f!r}")


# ---------------------------------------------------------------------- parsing
class Parser:
    """Bytes in, frames out. Keeps a partial frame between calls and the peer's header context."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.headers = HeaderDecompressor()

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos, end = 0, len(buf)
        while end - pos >= 8:
            w1, w2 = struct.unpack_from(">II", buf, pos)
            length = w2 & 0xFFFFFF
            if end - pos < 8 + length:
                break
            flags = w2 >> 24
            body = bytes(buf[pos + 8:pos + 8 + length])
            pos += 8 + length
            if w1 & 0x80000000:
                frames.append(self._control((w1 >> 16) & 0x7FFF, w1 & 0xFFFF, flags, body))
            else:
                frames.append(Data(w1 & 0x7FFFFFFF, body, bool(flags & FLAG_FIN)))
        if pos:
            del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of a frame not complete yet."""
        return len(self._buf)

    def _control(self, version: int, ftype: int, flags: int, body: bytes) -> Frame:
        if version != VERSION:
            raise SpdyError(f"unsupported SPDY version {version}")
        fin = bool(flags & FLAG_FIN)
        try:
            if ftype == SYN_STREAM:
                sid, assoc, prio, slot = struct.unpack_from(">IIBB", body, 0)
                return SynStream(sid & 0x7FFFFFFF, self.headers.decompress(body[10:]), assoc & 0x7FFFFFFF,
                                 prio >> 5, slot, fin, bool(flags & FLAG_UNIDIRECTIONAL))
            if ftype in (SYN_REPLY, HEADERS):
                (sid,) = struct.unpack_from(">I", body, 0)
                cls = SynReply if ftype == SYN_REPLY else HeadersFrame
                return cls(sid & 0x7FFFFFFF, self.headers.decompress(body[4:]), fin)
            if ftype == RST_STREAM:
                sid, status = struct.unpack_from(">II", body, 0)
                return RstStream(sid & 0x7FFFFFFF, status)
            if ftype == SETTINGS:
                (n,) = struct.unpack_from(">I", body, 0)
                entries = []
                for i in range(n):
                    fid, value = struct.unpack_from(">II", body, 4 + 8 * i)
                    entries.append((fid >> 24, fid & 0xFFFFFF, value))
                return Settings(entries, bool(flags & FLAG_SETTINGS_CLEAR))
            if ftype == PING:
                return Ping(struct.unpack_from(">I", body, 0)[0])
            if ftype == GOAWAY:
                last, status = struct.unpack_from(">II", body, 0) if len(body) >= 8 else \
                    (struct.unpack_from(">I", body, 0)[0], GOAWAY_OK)
                return GoAway(last & 0x7FFFFFFF, status)
            if ftype == WINDOW_UPDATE:
                sid, delta = struct.unpack_from(">II", body, 0)
                return WindowUpdate(sid & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        except struct.error:
            raise SpdyError(f"control frame {ftype} too short ({len(body)} bytes)") from None
        raise SpdyError(f"unknown control frame type {ftype}")


# ---------------------------------------------------------------------- flow control
class Flow:
    """Flow-control windows of one connection, both ways (SPDY/3.1: per stream and per session).

    Sending: ``sendable(sid, n)`` is how much of n may go now; ``sent(sid, n)`` spends it. Until the
    peer shows it does flow control (see the module docs) nothing is held back.
    Receiving: ``received(sid, n)`` returns the WINDOW_UPDATE frames to send (one for the stream,
    one for the session) once half a window has been consumed."""

    def __init__(self, initial: int = DEFAULT_WINDOW) -> None:
        self.initial_send = DEFAULT_WINDOW  # the peer's INITIAL_WINDOW_SIZE
        self.initial_recv = initial
        self.enforced = False
        self.send_session = DEFAULT_WINDOW
        self.send: dict[int, int] = {}
        self.recv_session_unacked = 0
        self.recv_unacked: dict[int, int] = {}

    def open(self, sid: int) -> None:
        self.send.setdefault(sid, self.initial_send)
        self.recv_unacked.setdefault(sid, 0)

    def close(self, sid: int) -> None:
        self.send.pop(sid, None)
        self.recv_unacked.pop(sid, None)

    # -- the peer's windows (what we may send)
    def sendable(self, sid: int, n: int) -> int:
        if not self.enforced:
            return n
        return max(0, min(n, self.send.get(sid, self.initial_send), self.send_session))

    def sent(self, sid: int, n: int) -> None:
        if sid in self.send:
            self.send[sid] -= n
        self.send_session -= n

    def on_window_update(self, f: WindowUpdate) -> None:
        self.enforced = True
        if f.stream_id == 0:
            self.send_session = min(MAX_WINDOW, self.send_session + f.delta)
        elif f.stream_id in self.send:
            self.send[f.stream_id] = min(MAX_WINDOW, self.send[f.stream_id] + f.delta)

    def on_settings(self, f: Settings) -> None:
        for _flags, sid, value in f.entries:
            if sid == SETTINGS_INITIAL_WINDOW_SIZE:
                self.enforced = True
                delta = value - self.initial_send
                self.initial_send = value
                for k in self.send:  # the change applies to open streams too
                    self.send[k] += delta

    # -- our windows (what the peer may send)
    def received(self, sid: int, n: int) -> list[WindowUpdate]:
        if n <= 0:
            return []
        out = []
        half = self.initial_recv // 2
        if sid in self.recv_unacked:
            self.recv_unacked[sid] += n
            if self.recv_unacked[sid] >= half:
                out.append(WindowUpdate(sid, self.recv_unacked[sid]))
                self.recv_unacked[sid] = 0
        self.recv_session_unacked += n
        if self.recv_session_unacked >= half:
            out.append(WindowUpdate(0, self.recv_session_unacked))
            self.recv_session_unacked = 0
        return out
