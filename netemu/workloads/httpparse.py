"""HTTP/1.x requests cut off the front of a connection's bytes, without doing any I/O.

`RequestParser.feed()` takes what arrived; `next()` gives the next complete request (head and
body, Content-Length or chunked) or None until more arrives, so the same parser serves an
event loop (pipelined requests wait in its buffer) and a blocking socket. It accepts what
Python's http.server accepted and refuses the rest the way it did (`BadRequest`, rendered by
`error_response` byte for byte as BaseHTTPRequestHandler.send_error), so clients see the same
answers as before the stand-ins moved to an event loop.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Iterator, Optional

MAX_BODY = 1 << 20  # request bodies larger than this end the connection instead
MAX_LINE = 65536  # http.client's _MAXLINE: longer request or header lines are refused
MAX_HEADERS = 100  # http.client's _MAXHEADERS
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HTTP_0_9 = "HTTP/0.9"  # the version of a request line without one, and of errors before it is known


class Headers:
    """A request's header fields in their order; names match whatever their case (as email.Message)."""
    __slots__ = ("_fields", "_first")

    def __init__(self, fields: Optional[list[tuple[str, str]]] = None):
        self._fields = fields or []
        self._first: dict[str, str] = {}  # lower-case name -> its first value
        for name, value in reversed(self._fields):
            self._first[name.lower()] = value

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self._first.get(name.lower(), default)

    __getitem__ = get

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._first

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._fields)

    def __len__(self) -> int:
        return len(self._fields)


@dataclass
class Request:
    requestline: str
    command: str = ""
    path: str = ""
    request_version: str = HTTP_0_9
    headers: Optional[Headers] = None
    close_connection: bool = True
    body: bytes = b""


@dataclass
class BadRequest(Exception):
    """What http.server's send_error would have answered; the connection ends after it."""
    status: int
    message: Optional[str] = None  # the reason phrase; the status's own when None
    explain: Optional[str] = None
    request: Request = field(default_factory=lambda: Request(""))


class BadBody(Exception):
    """A body too large or a chunked encoding that makes no sense: the stand-in answers 400."""

    def __init__(self, request: Request):
        super().__init__("bad request body")
        self.request = request


class RequestParser:
    def __init__(self):
        self.buf = bytearray()
        self.interim = b""  # a 100 Continue owed to the client before it sends the body
        self._request: Optional[Request] = None  # a head whose body has not all arrived
        self._length = 0  # its Content-Length
        self._chunks: Optional[_Chunks] = None  # or its chunked body so far
        self._scanned = 0  # how far the search for the head's end got

    def feed(self, data: bytes) -> None:
        self.buf += data

    def take_interim(self) -> bytes:
        out, self.interim = self.interim, b""
        return out

    def next(self) -> Optional[Request]:
        """The next whole request, or None until more bytes arrive. Raises BadRequest (send the
        error, close), BadBody (answer 400, close), or EOFError for a blank request line (close)."""
        if self._request is None and not self._head():
            return None
        request = self._request
        if self._chunks is not None:
            try:
                if not self._chunks.read(self.buf):
                    return None
            except ValueError:
                raise BadBody(request) from None
            request.body, used = self._chunks.body(), self._chunks.pos
        else:
            if len(self.buf) < self._length:
                return None
            request.body, used = bytes(self.buf[:self._length]), self._length
        del self.buf[:used]
        self._request, self._chunks, self._length = None, None, 0
        return request

    # ------------------------------------------------------------------------------- the head
    def _head(self) -> bool:
        buf = self.buf
        if buf[:1] == b"\n" or buf[:2] == b"\r\n":
            raise EOFError("blank request line")  # http.server hung up on one
        found = _BLANK_LINE.search(buf, max(0, self._scanned - 2))
        if found is None:
            self._scanned = len(buf)
            _check_partial(buf)
            return False
        self._scanned = 0
        head = bytes(buf[:found.start()])
        del buf[:found.end()]
        request = _parse_head_cached(head)
        self._request = request
        self._body_framing(request)
        return True

    def _body_framing(self, request: Request) -> None:
        headers = request.headers
        expect = headers.get("Expect", "")
        if expect.lower() == "100-continue" and request.request_version >= "HTTP/1.1":
            self.interim += CONTINUE
        coding = headers.get("Transfer-Encoding", "").strip().lower()
        if coding and coding != "identity":
            self._chunks = _Chunks()
            return
        length = headers.get("Content-Length")
        if length:
            try:
                n = int(length)
            except ValueError:
                raise BadBody(request) from None
            if n < 0 or n > MAX_BODY:
                raise BadBody(request)
            self._length = n


_BLANK_LINE = re.compile(rb"\n\r?\n")


def _check_partial(buf: bytearray) -> None:
    """Refuse a head that can never end within http.server's limits instead of buffering it."""
    last = buf.rfind(b"\n")
    too_long = len(buf) - last - 1 > MAX_LINE
    if too_long and last < 0:
        raise BadRequest(HTTPStatus.REQUEST_URI_TOO_LONG, request=Request("", request_version=""))
    if too_long or buf.count(b"\n") > MAX_HEADERS:
        # the complete lines and one too long to end: parse_head refuses them as http.server would
        lines = buf[:last].decode("iso-8859-1").split("\n")
        parse_head([line.rstrip("\r") for line in lines] + ["x" * (MAX_LINE + 1)])


HEAD_CACHE_SIZE = 256
_head_cache: dict[bytes, Request] = {}  # head bytes -> a parsed request, without its body


def _parse_head_cached(head: bytes) -> Request:
    """Load tests send the same head again and again: each distinct head is parsed once."""
    known = _head_cache.get(head)
    if known is None:
        lines = head.decode("iso-8859-1").split("\n")
        known = parse_head([line[:-1] if line.endswith("\r") else line for line in lines])
        if len(_head_cache) >= HEAD_CACHE_SIZE:
            _head_cache.clear()
        _head_cache[head] = known
    # a request of its own (its body comes next); the headers are shared: nothing changes them
    return Request(known.requestline, known.command, known.path, known.request_version, known.headers,
                   known.close_connection)


def parse_head(lines: list[str]) -> Request:
    """A request line and its header lines (line ends removed; the blank line(s) after them too)."""
    if len(lines[0]) > MAX_LINE:
        raise BadRequest(HTTPStatus.REQUEST_URI_TOO_LONG, request=Request("", request_version=""))
    request = _request_line(lines[0])
    fields: list[tuple[str, str]] = []
    for count, line in enumerate(lines[1:] + [""], 1):  # http.client counts the blank line too
        if len(line) > MAX_LINE:
            raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long",
                             "got more than 65536 bytes when reading header line", request)
        if count > MAX_HEADERS:
            raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers",
                             f"got more than {MAX_HEADERS} headers", request)
        if not line:
            continue
        if line[:1] in (" ", "\t"):  # obsolete line folding: more of the field before
            if fields:
                fields[-1] = (fields[-1][0], fields[-1][1] + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if colon and name and " " not in name and "\t" not in name:  # else not a field (email's parser)
            fields.append((name, value.lstrip(" \t")))
    request.headers = headers = Headers(fields)
    connection = headers.get("Connection", "").lower()
    if connection == "close":
        request.close_connection = True
    elif connection == "keep-alive":
        request.close_connection = False
    if request.command not in METHODS:
        raise BadRequest(HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method ({request.command!r})", request=request)
    return request


def _request_line(requestline: str) -> Request:
    """BaseHTTPRequestHandler.parse_request's reading of the first line, and its refusals."""
    request = Request(requestline)
    words = requestline.split()
    if len(words) >= 3:
        version = words[-1]
        try:
            if not version.startswith("HTTP/"):
                raise ValueError
            number = version.split("/", 1)[1].split(".")
            if len(number) != 2:
                raise ValueError
            major, minor = int(number[0]), int(number[1])
        except (ValueError, IndexError):
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})", request=request) from None
        if (major, minor) >= (2, 0):
            raise BadRequest(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                             f"Invalid HTTP version ({version.split('/', 1)[1]})", request=request)
        request.close_connection = (major, minor) < (1, 1)
        request.request_version = version
    if not 2 <= len(words) <= 3:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({requestline!r})", request=request)
    command, path = words[:2]
    if len(words) == 2:
        request.close_connection = True
        if command != "GET":
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"Bad HTTP/0.9 request type ({command!r})", request=request)
    if path.startswith("//"):  # as http.server: no open redirects through //host/path
        path = "/" + path.lstrip("/")
    request.command, request.path = command, path
    return request


class _Chunks:
    """A chunked body read as it arrives: where the next chunk starts, what came so far."""

    def __init__(self):
        self.pos = 0
        self.parts: list[bytes] = []
        self.total = 0
        self.trailers = False

    def read(self, buf: bytearray) -> bool:
        """True once the whole body (and its trailers) is in `buf`; ValueError for nonsense."""
        while True:
            eol = buf.find(b"\n", self.pos)
            if eol < 0:
                if len(buf) - self.pos > 1024:
                    raise ValueError("chunk size line too long")
                return False
            line = bytes(buf[self.pos:eol + 1])
            if self.trailers:
                self.pos = eol + 1
                if line in (b"\r\n", b"\n"):
                    return True
                continue
            size = int(line.split(b";")[0].strip() or b"0", 16)  # ValueError for nonsense
            if size < 0:
                raise ValueError("negative chunk size")
            if size == 0:
                self.pos, self.trailers = eol + 1, True
                continue
            if self.total + size > MAX_BODY:
                raise ValueError("body too large")
            start = eol + 1
            data_end = start + size
            after = buf.find(b"\n", data_end, data_end + 3)
            if after < 0:
                if len(buf) >= data_end + 3:
                    raise ValueError("no line end after a chunk")
                return False
            self.parts.append(bytes(buf[start:data_end]))
            self.total += size
            self.pos = after + 1

    def body(self) -> bytes:
        return b"".join(self.parts)


def error_response(error: BadRequest, server_header: str, date: str) -> bytes:
    """BaseHTTPRequestHandler.send_error's bytes: a status line naming the problem, Server, Date,
    Connection: close and an HTML page (the page alone to a request without an HTTP version)."""
    status = HTTPStatus(error.status)
    message = status.phrase if error.message is None else error.message
    explain = status.description if error.explain is None else error.explain
    body = (BaseHTTPRequestHandler.error_message_format % {
        "code": int(status), "message": html.escape(message, quote=False),
        "explain": html.escape(explain, quote=False)}).encode("UTF-8", "replace")
    sent = b"" if error.request.command == "HEAD" else body
    if error.request.request_version == HTTP_0_9:
        return sent
    head = (f"HTTP/1.1 {int(status)} {message}\r\nServer: {server_header}\r\nDate: {date}\r\n"
            f"Connection: close\r\nContent-Type: {BaseHTTPRequestHandler.error_content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1", "strict") + sent
