"""The stand-ins' HTTP server: the request parser on its own (no sockets), the event-loop connection
(keep-alive, pipelining, handlers run in threads, idle timeout, connection limit) on 127.0.0.1 in
this process, and the buffered pod log. No root needed."""
from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from netemu.workloads import httpconn, listeners, podlog
from netemu.workloads.httpbase import Site, StandInHandler
from netemu.workloads.httpparse import (CONTINUE, MAX_BODY, BadBody, BadRequest, RequestParser,
                                        error_response)
from netemu.workloads.listeners import Loop
from netemu.workloads.model import WorkloadContext
from netemu.workloads.testing import free_port, wait_for


def parsed(*pieces: bytes) -> tuple[RequestParser, list]:
    """Feed the pieces one at a time; every request that came out."""
    parser, out = RequestParser(), []
    for piece in pieces:
        parser.feed(piece)
        while (request := parser.next()) is not None:
            out.append(request)
    return parser, out


# --------------------------------------------------------------------------------- parsing
def test_a_request_in_one_piece_and_byte_by_byte_is_the_same_request():
    raw = b"POST /form?x=1 HTTP/1.1\r\nHost: a\r\nX-Many: 1\r\nx-many: 2\r\nContent-Length: 5\r\n\r\nhello"
    whole = parsed(raw)[1]
    trickled = parsed(*(raw[i:i + 1] for i in range(len(raw))))[1]
    for requests in (whole, trickled):
        (r,) = requests
        assert (r.command, r.path, r.request_version, r.body) == ("POST", "/form?x=1", "HTTP/1.1", b"hello")
        assert r.headers.get("HOST") == "a" and r.headers["x-many"] == "1"  # any case; the first of two
        assert r.headers.items() == [("Host", "a"), ("X-Many", "1"), ("x-many", "2"), ("Content-Length", "5")]
        assert r.close_connection is False and r.requestline == "POST /form?x=1 HTTP/1.1"


def test_pipelined_requests_come_out_in_order_and_a_partial_one_waits():
    parser, requests = parsed(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nxyGET /c HT")
    assert [(r.path, r.body) for r in requests] == [("/a", b""), ("/b", b"xy")]
    parser.feed(b"TP/1.1\r\n\r\n")
    assert parser.next().path == "/c" and parser.next() is None and not parser.buf


def test_chunked_bodies_with_extensions_and_trailers_across_pieces():
    raw = (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nGET /next HTTP/1.1\r\n\r\n")
    for step in (len(raw), 7, 1):
        _, requests = parsed(*(raw[i:i + step] for i in range(0, len(raw), step)))
        assert [(r.command, r.body) for r in requests] == [("PUT", b"hello world"), ("GET", b"")]


def test_bare_lf_line_ends_and_folded_fields():
    _, (r,) = parsed(b"GET / HTTP/1.1\nHost: a\nX-Long: one\n  two\n\n")
    assert r.headers.get("Host") == "a" and r.headers.get("X-Long") == "one two"


@pytest.mark.parametrize("line, keep", [
    ("GET / HTTP/1.1", True), ("GET / HTTP/1.0", False), ("GET /", False)])
def test_keep_alive_follows_the_version_and_the_connection_field(line, keep):
    assert parsed(f"{line}\r\n\r\n".encode())[1][0].close_connection is not keep
    if line != "GET /":  # HTTP/0.9 always closes
        field = "close" if keep else "keep-alive"
        assert parsed(f"{line}\r\nConnection: {field}\r\n\r\n".encode())[1][0].close_connection is keep


@pytest.mark.parametrize("raw, status, message", [
    (b"GARBAGE\r\n\r\n", 400, "Bad request syntax ('GARBAGE')"),
    (b"GET / HTTP/2.0\r\n\r\n", 505, "Invalid HTTP version (2.0)"),
    (b"GET / FOO/1.1\r\n\r\n", 400, "Bad request version ('FOO/1.1')"),
    (b"POST /\r\n\r\n", 400, "Bad HTTP/0.9 request type ('POST')"),
    (b"BREW / HTTP/1.1\r\n\r\n", 501, "Unsupported method ('BREW')"),
    (b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 100 + b"\r\n", 431, "Too many headers"),
])
def test_malformed_requests_are_refused_as_http_server_refused_them(raw, status, message):
    with pytest.raises(BadRequest) as e:
        parsed(raw)
    assert (e.value.status, e.value.message) == (status, message)


def test_lines_too_long_are_refused_before_they_end():
    with pytest.raises(BadRequest) as e:
        parsed(b"GET /" + b"a" * 70000)
    assert e.value.status == 414
    with pytest.raises(BadRequest) as e:
        parsed(b"GET / HTTP/1.1\r\nX: " + b"a" * 70000)
    assert (e.value.status, e.value.message) == (431, "Line too long")


@pytest.mark.parametrize("raw", [
    f"POST / HTTP/1.1\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode(),
    b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcdef",
])
def test_bad_bodies_are_a_400_for_the_stand_in(raw):
    with pytest.raises(BadBody) as e:
        parsed(raw)
    assert e.value.request.command == "POST"


def test_a_blank_request_line_ends_the_connection_as_http_server_did():
    with pytest.raises(EOFError):
        parsed(b"\r\nGET / HTTP/1.1\r\n\r\n")


def test_expect_100_continue_is_answered_before_the_body():
    parser = RequestParser()
    parser.feed(b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert parser.next() is None and parser.take_interim() == CONTINUE and parser.take_interim() == b""
    parser.feed(b"ok")
    assert parser.next().body == b"ok"


def test_error_pages_have_http_servers_bytes():
    with pytest.raises(BadRequest) as e:
        parsed(b"GET / FOO/1.1\r\n\r\n")
    assert error_response(e.value, "nginx", "D").startswith(b"<!DOCTYPE HTML>")  # no version: the page alone
    with pytest.raises(BadRequest) as e:
        parsed(b"BREW / HTTP/1.1\r\n\r\n")
    reply = error_response(e.value, "", "D")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [b"HTTP/1.1 501 Unsupported method ('BREW')", b"Server: ", b"Date: D",
                                   b"Connection: close", b"Content-Type: text/html;charset=utf-8",
                                   b"Content-Length: %d" % len(body)]
    assert b"<p>Error code: 501</p>" in body


# ---------------------------------------------------------------------- the event loop
class Echo(StandInHandler):
    def route(self) -> None:
        if self.path_only == "/slow":
            time.sleep(0.5)
        self.reply(200, f"{self.command} {self.path_only} {len(self.body)}\n")

    def in_thread(self) -> bool:
        return self.path_only == "/slow"


@pytest.fixture
def pipe_log(monkeypatch):
    """The pod log into a pipe; the fixture reads everything written so far."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    monkeypatch.setattr(podlog, "LOG_FD", w)
    written = []

    def read() -> str:
        try:
            while chunk := os.read(r, 65536):
                written.append(chunk.decode())
        except BlockingIOError:
            pass
        return "".join(written)

    yield read
    podlog.flush()
    os.close(w)
    os.close(r)


@pytest.fixture
def server(pipe_log):
    """A port served by Echo on a loop running in a thread of this process, and its log."""
    ctx = WorkloadContext("pod-a", "default", "127.0.0.1", "n", "x", "c", [], {}, [])
    loop, port = Loop("127.0.0.1"), free_port()
    httpconn.serve_http(loop, port, Echo, Site(ctx))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return port, pipe_log


def _replies(sock: socket.socket, count: int) -> list[bytes]:
    data, replies = b"", []
    while len(replies) < count:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {replies}"
        data += chunk
        while b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            if len(rest) < length:
                break
            replies.append(rest[:length])
            data = rest[length:]
    return replies


def test_pipelined_requests_on_one_connection_are_answered_in_order_even_around_a_thread(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /a HTTP/1.1\r\n\r\nGET /slow HTTP/1.1\r\n\r\n"
                  b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHEAD /c HTTP/1.1\r\n\r\n")
        assert _replies(s, 3) == [b"GET /a 0\n", b"GET /slow 0\n", b"POST /b 3\n"]
        s.sendall(b"GET /d HTTP/1.1\r\n\r\n")  # the HEAD's reply had no body: in step still
        assert _replies(s, 1) == [b"GET /d 0\n"]


def test_a_handler_in_a_thread_stalls_no_other_connection(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as slow, \
            socket.create_connection(("127.0.0.1", port), timeout=5) as quick:
        slow.sendall(b"GET /slow HTTP/1.1\r\n\r\n")
        time.sleep(0.05)
        t0 = time.monotonic()
        quick.sendall(b"GET /quick HTTP/1.1\r\n\r\n")
        assert _replies(quick, 1) == [b"GET /quick 0\n"]
        assert time.monotonic() - t0 < 0.3
        assert _replies(slow, 1) == [b"GET /slow 0\n"]


def test_a_malformed_request_gets_its_400_and_the_connection_ends(server):
    port, log = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close\r\n" in reply
    assert reply.endswith(b"\r\n\r\n400 Bad Request\n")
    assert wait_for(lambda: '"GET / HTTP/1.1" 400 16' in log())


def test_idle_connections_end_after_the_keep_alive_timeout(server, monkeypatch):
    port, _ = server
    monkeypatch.setattr(httpconn, "KEEPALIVE_TIMEOUT", 0.3)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert _replies(s, 1) == [b"GET / 0\n"]
        t0 = time.monotonic()
        assert s.recv(10) == b""  # the sweep (once a second) closed it
        assert 0.3 <= time.monotonic() - t0 < 3


def test_connections_over_the_limit_are_refused(server, monkeypatch):
    port, _ = server
    monkeypatch.setattr(listeners, "MAX_CONNECTIONS", 2)
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    try:
        for s in held:  # both accepted and served
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert _replies(s, 1) == [b"GET / 0\n"]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            assert extra.recv(10) == b""
    finally:
        for s in held:
            s.close()


# ---------------------------------------------------------------------------- the pod log
def test_access_lines_go_out_together_once_the_loop_is_idle(server):
    port, log = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /1 HTTP/1.1\r\nUser-Agent: t\r\n\r\n" * 3)
        assert len(_replies(s, 3)) == 3
    assert wait_for(lambda: log().count('"GET /1 HTTP/1.1" 200 9 "-" "t"\n') == 3, 1.0)


def test_buffered_lines_wait_for_a_flush_and_keep_their_order_with_direct_writes(pipe_log, monkeypatch):
    podlog.buffer_line("one\n")
    podlog.buffer_line("two\n")
    assert pipe_log() == "" and podlog.pending() and not podlog.due()
    podlog.write_log("now\n")  # what waited goes first
    assert pipe_log() == "one\ntwo\nnow\n" and not podlog.pending()
    monkeypatch.setattr(podlog, "FLUSH_AFTER", 0.05)
    podlog.buffer_line("later\n")
    time.sleep(0.06)
    # due now (an earlier test's server loop still winding down may even have flushed it, in order)
    assert podlog.due() or pipe_log() == "one\ntwo\nnow\nlater\n"
    monkeypatch.setattr(podlog, "FLUSH_BYTES", 10)
    podlog.buffer_line("long enough\n")  # size alone flushes
    assert pipe_log() == "one\ntwo\nnow\nlater\nlong enough\n"


def test_a_stand_in_killed_by_sigterm_writes_what_waited_first(tmp_path):
    path = tmp_path / "log"
    pid = os.fork()
    if pid == 0:  # the child: a line waits, then SIGTERM, as when its pod is deleted under load
        try:
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644), 1)
            podlog.LOG_FD = 1
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            listeners._flush_log_before_dying()
            podlog.buffer_line("the last request\n")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            os._exit(70)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGTERM  # still dies of the signal
    assert path.read_text() == "the last request\n"
