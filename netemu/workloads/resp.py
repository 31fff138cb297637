"""RESP, the Redis protocol (version 2): what the built-in redis server and the counter app speak.

The standard library has no Redis client or server, so the framing lives here, small:
a command is an array of bulk strings (`*2\\r\\n$3\\r\\nGET\\r\\n$5\\r\\ncount\\r\\n`) or an
"inline" line of words (what telnet sends); replies are +simple, -error, :integer, $bulk
(nil as $-1) or *arrays of those.
"""
from __future__ import annotations

from typing import BinaryIO, Iterator, Optional, Union

CRLF = b"\r\n"
MAX_BULK = 16 << 20  # largest bulk string accepted (redis allows 512 MiB; a stand-in needs less)
MAX_ARGS = 1 << 20
MAX_INLINE = 64 << 10  # an unterminated line longer than this is garbage, not a command

Reply = Union[str, int, bytes, None, list]


class ProtocolError(Exception):
    pass


class ReplyError(Exception):
    """An error reply (-ERR ...) from the server."""


# ----------------------------------------------------------------------------- encoding
def simple(text: str) -> bytes:
    return b"+" + text.encode() + CRLF


def error(text: str) -> bytes:
    return b"-" + text.replace("\r", " ").replace("\n", " ").encode() + CRLF


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def bulk(value: Optional[bytes]) -> bytes:
    if value is None:
        return b"$-1\r\n"
    return b"$%d\r\n%s\r\n" % (len(value), value)


def array(items: list[Optional[bytes]]) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(bulk(v) for v in items)


def command(*args: Union[str, bytes, int]) -> bytes:
    """A client's command, as an array of bulk strings."""
    return array([a if isinstance(a, bytes) else str(a).encode() for a in args])


# ------------------------------------------------------------------------ server side
class CommandReader:
    """Splits the bytes a client sends into commands, however TCP cut them up.

    Several commands may arrive in one read (pipelining) and one command may span reads:
    `feed` what arrives, then take every complete command from `commands()`."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data

    def commands(self) -> Iterator[list[bytes]]:
        pos = 0
        try:
            while pos < len(self.buf):
                parsed = self._parse(pos)
                if parsed is None:
                    break
                args, pos = parsed
                if args:
                    yield args
        finally:
            del self.buf[:pos]

    def _parse(self, pos: int) -> Optional[tuple[list[bytes], int]]:
        buf = self.buf
        if buf[pos] != ord("*"):
            return self._inline(pos)
        end = self._line_end(pos)
        if end < 0:
            return None
        count = self._number(pos + 1, end, "multibulk length")
        if count > MAX_ARGS:
            raise ProtocolError("invalid multibulk length")
        p, args = end + 2, []
        for _ in range(max(count, 0)):
            if p >= len(buf):
                return None
            if buf[p] != ord("$"):
                raise ProtocolError(f"expected '$', got '{chr(buf[p])}'")
            end = self._line_end(p)
            if end < 0:
                return None
            size = self._number(p + 1, end, "bulk length")
            if not 0 <= size <= MAX_BULK:
                raise ProtocolError("invalid bulk length")
            start = end + 2
            if start + size + 2 > len(buf):
                return None
            args.append(bytes(buf[start:start + size]))
            p = start + size + 2
        return args, p

    def _inline(self, pos: int) -> Optional[tuple[list[bytes], int]]:
        end = self.buf.find(b"\n", pos)
        if end < 0:
            if len(self.buf) - pos > MAX_INLINE:
                raise ProtocolError("too big inline request")
            return None
        return bytes(self.buf[pos:end]).split(), end + 1

    def _line_end(self, pos: int) -> int:
        end = self.buf.find(CRLF, pos)
        if end < 0 and len(self.buf) - pos > MAX_INLINE:
            raise ProtocolError("too big count line")
        return end

    def _number(self, start: int, end: int, what: str) -> int:
        try:
            return int(self.buf[start:end])
        except ValueError:
            raise ProtocolError(f"invalid {what}") from None


# ------------------------------------------------------------------------ client side
def read_reply(stream: BinaryIO) -> Reply:
    """One reply from a buffered socket file; error replies raise ReplyError."""
    line = stream.readline(MAX_INLINE)
    if not line.endswith(CRLF):
        raise ConnectionError("connection closed by the redis server")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode("utf-8", "replace")
    if kind == b"-":
        raise ReplyError(rest.decode("utf-8", "replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("connection closed by the redis server")
        return data[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [read_reply(stream) for _ in range(count)]
    raise ProtocolError(f"unexpected reply type {kind!r}")
