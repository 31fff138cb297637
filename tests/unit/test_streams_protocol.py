"""SPDY/3.1 framing and the remotecommand/port-forward channel protocols, against byte sequences the
real kubectl (v1.32) sent (fixtures/streams/*.bin, made by fixtures/streams/capture.py)."""
from __future__ import annotations

import asyncio
import json
import os
import struct
import zlib

import pytest

from netemu.api import channels, spdy

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "streams")


def fixture(name: str) -> bytes:
    with open(os.path.join(FIX, name + ".bin"), "rb") as f:
        return f.read()


def meta(name: str) -> dict:
    with open(os.path.join(FIX, name + ".json")) as f:
        return json.load(f)


def messages(name: str) -> list[bytes]:
    """A WebSocket capture: <u32 length><payload> per message."""
    data, out, i = fixture(name), [], 0
    while i < len(data):
        (n,) = struct.unpack_from(">I", data, i)
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    return out


# ---------------------------------------------------------------------- SPDY: kubectl's bytes
def test_the_dictionary_is_spdy3s():
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 3821447106  # the id zlib streams of SPDY/3 name
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


def test_kubectl_exec_over_spdy_parses():
    frames = spdy.Parser().feed(fixture("exec_spdy"))
    syns = [f for f in frames if isinstance(f, spdy.SynStream)]
    assert [(f.stream_id, f.headers) for f in syns] == [
        (1, {"streamtype": ["error"]}), (3, {"streamtype": ["stdin"]}),
        (5, {"streamtype": ["stdout"]}), (7, {"streamtype": ["stderr"]})]
    data = [f for f in frames if isinstance(f, spdy.Data)]
    assert data == [spdy.Data(3, b"hello\n"), spdy.Data(3, b"", fin=True)]  # stdin, then its end


def test_kubectl_exec_tty_opens_a_resize_stream():
    frames = spdy.Parser().feed(fixture("exec_spdy_tty"))
    kinds = {f.stream_id: f.headers["streamtype"][0] for f in frames if isinstance(f, spdy.SynStream)}
    assert kinds == {1: "error", 3: "stdin", 5: "stdout", 7: "resize"}
    resize = b"".join(f.data for f in frames if isinstance(f, spdy.Data) and f.stream_id == 7)
    assert channels.ResizeDecoder().feed(resize) == [(100, 30)]
    assert spdy.Data(3, b"exit 3\n") in frames


def test_kubectl_port_forward_streams_come_in_error_data_pairs():
    frames = spdy.Parser().feed(fixture("portforward_spdy"))
    syns = [f for f in frames if isinstance(f, spdy.SynStream)]
    assert [spdy.header(f.headers, "streamType") for f in syns] == ["error", "data"]
    assert {spdy.header(f.headers, "port") for f in syns} == {"80"}
    assert {spdy.header(f.headers, "requestID") for f in syns} == {"0"}
    assert spdy.Data(1, b"", fin=True) in frames  # kubectl closes its side of the error stream at once
    request = b"".join(f.data for f in frames if isinstance(f, spdy.Data) and f.stream_id == 3)
    assert request.startswith(b"GET / HTTP/1.1\r\n")


def test_the_tunnelled_port_forward_is_spdy_split_across_websocket_messages():
    msgs = messages("portforward_tunnel")
    assert len(msgs) > 5 and any(len(m) < 8 for m in msgs)  # spdystream writes a frame field by field
    assert meta("portforward_tunnel")["headers"]["sec-websocket-protocol"] == [channels.PORTFORWARD_TUNNEL]
    p = spdy.Parser()
    frames = [f for m in msgs for f in p.feed(m)]
    assert frames == spdy.Parser().feed(b"".join(msgs))
    assert [spdy.header(f.headers, "streamType") for f in frames if isinstance(f, spdy.SynStream)] == ["error", "data"]


@pytest.mark.parametrize("name", ["exec_spdy", "exec_spdy_tty", "portforward_spdy"])
def test_any_split_of_the_byte_stream_gives_the_same_frames(name):
    data = fixture(name)
    whole = spdy.Parser().feed(data)
    p = spdy.Parser()
    bytewise = [f for i in range(len(data)) for f in p.feed(data[i:i + 1])]
    assert bytewise == whole and p.pending == 0


def test_the_header_contexts_carry_over_between_frames():
    """The second SYN_STREAM of a capture only decompresses with the first one's context."""
    data = fixture("exec_spdy")
    first_len = 8 + (struct.unpack_from(">I", data, 4)[0] & 0xFFFFFF)
    with pytest.raises(spdy.SpdyError):
        spdy.Parser().feed(data[first_len:])


def test_upgrade_requests_offer_what_we_choose_from():
    spdy_offers = channels.offered(meta("exec_spdy")["headers"]["x-stream-protocol-version"])
    assert channels.choose(spdy_offers, channels.EXEC_SPDY) == channels.V4
    ws_offers = channels.offered(meta("exec_ws")["headers"]["sec-websocket-protocol"])
    assert channels.choose(ws_offers, channels.EXEC_WEBSOCKET) == channels.V5
    pf = channels.offered(meta("portforward_spdy")["headers"]["x-stream-protocol-version"])
    assert channels.PORTFORWARD in pf


# ---------------------------------------------------------------------- SPDY: our side
def test_every_frame_type_round_trips():
    frames = [
        spdy.SynStream(1, {"streamtype": ["error"], "port": ["8080"]}, priority=3, fin=False),
        spdy.SynReply(1, {}),
        spdy.SynReply(3, {"x": ["a", "b"]}, fin=True),
        spdy.HeadersFrame(5, {"k": ["v"]}, fin=True),
        spdy.Data(1, b"payload"), spdy.Data(1, b"", fin=True),
        spdy.RstStream(3, spdy.CANCEL), spdy.Settings([(0, spdy.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]),
        spdy.Ping(7), spdy.GoAway(5, spdy.GOAWAY_OK), spdy.WindowUpdate(0, 32768),
    ]
    enc, p = spdy.Encoder(), spdy.Parser()
    assert p.feed(b"".join(enc.encode(f) for f in frames)) == frames


def test_our_header_blocks_are_plain_zlib_with_the_dictionary():
    enc = spdy.Encoder()
    wire = enc.encode(spdy.SynReply(1, {"streamtype": ["stdout"]}))
    block = wire[12:]
    raw = zlib.decompressobj(zdict=spdy.DICTIONARY).decompress(block)
    assert spdy.decode_block(raw) == {"streamtype": ["stdout"]}
    assert block.endswith(b"\x00\x00\xff\xff")  # flushed per frame (Z_SYNC_FLUSH), as spdystream does


def test_header_names_go_lower_case():
    assert spdy.decode_block(spdy.encode_block({"StreamType": ["data"]})) == {"streamtype": ["data"]}


def test_garbage_is_a_protocol_error():
    with pytest.raises(spdy.SpdyError):
        spdy.Parser().feed(b"\x80\x02\x00\x01\x00\x00\x00\x0a" + b"\0" * 10)  # SPDY/2
    with pytest.raises(spdy.SpdyError):
        spdy.Parser().feed(b"\x80\x03\x00\x63\x00\x00\x00\x00")  # unknown control frame type


def test_flow_control_waits_only_for_peers_that_do_it():
    flow = spdy.Flow()
    flow.open(1)
    assert flow.sendable(1, 10 << 20) == 10 << 20  # spdystream: never any WINDOW_UPDATE, nothing held
    flow.on_window_update(spdy.WindowUpdate(1, 0))
    flow.sent(1, 60000)
    assert flow.sendable(1, 10000) == spdy.DEFAULT_WINDOW - 60000
    flow.on_window_update(spdy.WindowUpdate(1, 60000))
    flow.on_window_update(spdy.WindowUpdate(0, 1 << 20))
    assert flow.sendable(1, 100000) == spdy.DEFAULT_WINDOW
    flow.on_settings(spdy.Settings([(0, spdy.SETTINGS_INITIAL_WINDOW_SIZE, 2 * spdy.DEFAULT_WINDOW)]))
    assert flow.send[1] == 2 * spdy.DEFAULT_WINDOW


def test_we_acknowledge_what_we_consume_by_half_windows():
    flow = spdy.Flow()
    flow.open(3)
    assert flow.received(3, 20000) == []
    ups = flow.received(3, 20000)
    assert spdy.WindowUpdate(3, 40000) in ups and spdy.WindowUpdate(0, 40000) in ups


def test_a_session_replies_to_kubectls_streams_and_delivers_their_data():
    from netemu.daemon.spdyconn import SpdyIO, SpdySession

    class Pipe(SpdyIO):
        def __init__(self):
            self.out = bytearray()
            self.closed = False

        async def write(self, data):
            self.out += data

        def close(self):
            self.closed = True

    async def go():
        io, seen = Pipe(), []
        session = SpdySession(io, seen.append)
        session.feed(fixture("exec_spdy"))
        stdin = next(s for s in seen if s.header("streamType") == "stdin")
        assert await stdin.read() == b"hello\n" and await stdin.read() == b""
        stdout = next(s for s in seen if s.header("streamType") == "stdout")
        await stdout.write(b"hi")
        stdout.close()
        session.feed(spdy.Encoder().encode(spdy.Ping(1)))
        await session.flush()
        frames = spdy.Parser().feed(bytes(io.out))
        assert [f.stream_id for f in frames if isinstance(f, spdy.SynReply)] == [1, 3, 5, 7]
        assert spdy.Data(5, b"hi") in frames and spdy.Data(5, b"", fin=True) in frames
        assert spdy.Ping(1) in frames  # the client's ping, echoed
        session.feed_eof()
        assert session.closed.is_set()
        session.close()
        assert io.closed

    asyncio.run(go())


# ---------------------------------------------------------------------- channels
def test_kubectl_v5_exec_messages():
    msgs = [channels.decode(m, channels.V5) for m in messages("exec_ws")]
    assert msgs == [(channels.STDIN, b"hello\n"), (channels.CLOSE, bytes((channels.STDIN,)))]
    tty = [channels.decode(m, channels.V5) for m in messages("exec_ws_tty")]
    assert tty[0][0] == channels.RESIZE and channels.ResizeDecoder().feed(tty[0][1]) == [(100, 30)]
    assert tty[1] == (channels.STDIN, b"exit 3\n")


def test_protocol_choice_prefers_the_newest():
    assert channels.choose(["v4.channel.k8s.io", "v5.channel.k8s.io"], channels.EXEC_WEBSOCKET) == channels.V5
    assert channels.choose(["base64.channel.k8s.io"], channels.EXEC_WEBSOCKET) == channels.V1_BASE64
    assert channels.choose(["v9.channel.k8s.io"], channels.EXEC_WEBSOCKET) is None
    assert channels.offered(["v4.channel.k8s.io, v3.channel.k8s.io", "channel.k8s.io"]) == [
        "v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"]


def test_messages_binary_text_and_base64():
    assert channels.encode(channels.STDOUT, b"hi") == b"\x01hi"
    assert channels.encode(channels.STDOUT, b"hi", channels.V4_BASE64) == "1aGk="
    assert channels.decode("1aGk=", channels.V4_BASE64) == (channels.STDOUT, b"hi")
    assert channels.decode("\x00ls\n", channels.V4) == (channels.STDIN, b"ls\n")  # the Python client's str
    assert channels.close_signal(channels.STDIN) == b"\xff\x00"
    with pytest.raises(ValueError):
        channels.decode(b"")


def test_the_error_channel_status():
    ok = channels.error_payload(channels.V5, channels.success())
    assert json.loads(ok) == {"metadata": {}, "status": "Success"} and channels.exit_code(ok) == 0
    seven = channels.error_payload(channels.V4, channels.exit_status(7, ["sh", "-c", "exit 7"]))
    st = json.loads(seven)
    assert st["reason"] == "NonZeroExitCode" and st["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]
    assert channels.exit_code(seven) == 7
    # before v4 the channel carries only a failure's text
    assert channels.error_payload(channels.V2, channels.success()) == b""
    assert channels.error_payload(channels.V1, channels.failure("boom")) == b"boom"


def test_resize_messages_split_anywhere():
    d = channels.ResizeDecoder()
    wire = b'{"Width":80,"Height":24}\n{"Width":120,"Height":40}'
    got = [wh for i in range(len(wire)) for wh in d.feed(wire[i:i + 1])]
    assert got == [(80, 24), (120, 40)]
    assert d.feed(b'{"Width":0,"Height":0}') == []  # no terminal size yet: nothing to set


def test_port_forward_websocket_channels():
    assert [channels.data_channel(i) for i in range(3)] == [0, 2, 4]
    assert [channels.error_channel(i) for i in range(3)] == [1, 3, 5]
    assert channels.port_of_channel(5) == (2, True)
    assert channels.port_prefix(8080) == b"\x90\x1f"  # 8080, little endian: what the Python client checks
    assert channels.parse_ports(["80,8080", "9000"]) == [80, 8080, 9000]
    with pytest.raises(ValueError):
        channels.parse_ports(["70000"])
