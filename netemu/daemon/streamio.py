"""How a streaming request (exec, attach, port-forward) becomes a connection, and the remotecommand
channels over it.

- WebSocket: aiohttp's WebSocketResponse with the subprotocol we chose.
- SPDY/3.1: the client sends `Upgrade: SPDY/3.1`; we answer 101 and the raw HTTP connection then
  carries SPDY. aiohttp only hands over connections upgraded to "websocket" or "tcp", so before the
  101 goes out we install our own payload parser on the connection (what aiohttp's WebSocket does
  with its reader): every later byte goes to the SPDY session, and we write to the transport.

``Remote`` is one remotecommand session whichever the transport: stdin to read, stdout/stderr to
write, terminal sizes, and the error channel's Status at the end.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable, Optional

from aiohttp import WSMsgType, web

from netemu.api import channels
from netemu.daemon.spdyconn import SpdyIO, SpdySession, SpdyStream

log = logging.getLogger("netemu.streams")

WS_MAX_MESSAGE = 64 << 20
WRITE_BUFFER = 4 << 20
_STREAM_OF = {channels.STDOUT: "stdout", channels.STDERR: "stderr", channels.ERROR: "error"}  # SPDY streamType


# ---------------------------------------------------------------------- SPDY over the HTTP connection
class _SpdyFeeder:
    """Takes the place of aiohttp's payload parser once the connection is ours."""

    def __init__(self, session: SpdySession):
        self.session = session

    def feed_data(self, data: bytes):
        self.session.feed(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self.session.feed_eof()


class RawIO(SpdyIO):
    def __init__(self, request: web.Request):
        self.transport = request.transport
        self.writer = request._payload_writer  # its drain() waits for the transport's room

    async def write(self, data: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            raise ConnectionResetError("connection closed")
        t.write(data)
        await self.writer.drain()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


def wants_spdy(request: web.Request) -> bool:
    return "spdy/3.1" in request.headers.get("Upgrade", "").lower() and \
        "upgrade" in request.headers.get("Connection", "").lower()


def wants_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower().strip() == "websocket"


async def upgrade_spdy(request: web.Request, protocol: str,
                       on_stream: Callable[[SpdyStream], None]) -> tuple[SpdySession, web.StreamResponse]:
    resp = web.StreamResponse(status=101, headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
                                                   "X-Stream-Protocol-Version": protocol})
    resp.force_close()
    session = SpdySession(RawIO(request), on_stream)
    request.protocol.keep_alive(False)
    request.protocol.set_parser(_SpdyFeeder(session))  # before the 101: what follows it is SPDY
    writer = await resp.prepare(request)
    writer.send_headers()
    _roomy(request)
    return session, resp


# ---------------------------------------------------------------------- SPDY inside WebSocket messages
class WsIO(SpdyIO):
    """kubectl's tunnelled port-forward: the SPDY byte stream split into binary messages anyhow."""

    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws
        self._go = asyncio.Event()
        self._go.set()

    async def write(self, data: bytes) -> None:
        if self.ws.closed:
            raise ConnectionResetError("websocket closed")
        await self.ws.send_bytes(data)

    def close(self) -> None:
        if not self.ws.closed:
            asyncio.get_running_loop().create_task(self.ws.close())

    def pause(self) -> None:
        self._go.clear()

    def resume(self) -> None:
        self._go.set()

    async def pump(self, session: SpdySession) -> None:
        """Feed the session until the WebSocket ends."""
        try:
            while True:
                await self._go.wait()
                msg = await self.ws.receive()
                if msg.type == WSMsgType.BINARY:
                    session.feed(msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
        finally:
            session.feed_eof()


async def accept_websocket(request: web.Request, protocol: Optional[str]) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=[protocol] if protocol else (), max_msg_size=WS_MAX_MESSAGE,
                               compress=False, autoping=True)
    await ws.prepare(request)
    _roomy(request)
    return ws


def _roomy(request: web.Request) -> None:
    """Bulk streams (port-forward, cp) move faster with more than asyncio's 64 KiB write buffer."""
    if request.transport is not None:
        request.transport.set_write_buffer_limits(high=WRITE_BUFFER)


# ---------------------------------------------------------------------- remotecommand sessions
class Remote:
    """One exec/attach session. stdin: read_stdin() -> b"" at its end; resizes: a queue of (w, h);
    write(channel, data); finish(status) sends the error channel and ends the session; gone is set
    when the client went away."""

    def __init__(self, protocol: Optional[str]):
        self.protocol = protocol
        self.gone = asyncio.Event()
        self.resizes: asyncio.Queue = asyncio.Queue()
        self._resize = channels.ResizeDecoder()

    async def read_stdin(self) -> bytes:
        raise NotImplementedError

    async def write(self, channel: int, data: bytes) -> None:
        raise NotImplementedError

    async def finish(self, status: dict) -> None:
        raise NotImplementedError

    def _sizes(self, data: bytes) -> None:
        for wh in self._resize.feed(data):
            self.resizes.put_nowait(wh)


class WsRemote(Remote):
    def __init__(self, ws: web.WebSocketResponse, protocol: Optional[str]):
        super().__init__(protocol)
        self.ws = ws
        self._stdin: asyncio.Queue = asyncio.Queue(maxsize=64)  # bounded: a slow child slows the client
        self._reader = asyncio.create_task(self._read())

    async def start(self, first_channel: int) -> None:
        # kubelet's first message: an empty one on the lowest channel it writes, "connection is up"
        await self.write(first_channel, b"")

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    continue
                try:
                    ch, data = channels.decode(msg.data, self.protocol)
                except ValueError:
                    continue
                if ch == channels.CLOSE and channels.can_close(self.protocol):
                    if data[:1] == bytes((channels.STDIN,)):
                        await self._stdin.put(b"")
                elif ch == channels.STDIN and data:
                    await self._stdin.put(data)
                elif ch == channels.RESIZE:
                    self._sizes(data)
        except Exception as e:  # a broken connection is the client going away
            log.debug("websocket read ended: %s", e)
        finally:
            self.gone.set()
            try:
                self._stdin.put_nowait(b"")
            except asyncio.QueueFull:
                pass

    async def read_stdin(self) -> bytes:
        if self.gone.is_set() and self._stdin.empty():
            return b""
        return await self._stdin.get()

    async def write(self, channel: int, data: bytes) -> None:
        if self.ws.closed:
            raise ConnectionResetError("websocket closed")
        msg = channels.encode(channel, data, self.protocol)
        if isinstance(msg, str):
            await self.ws.send_str(msg)
        else:
            await self.ws.send_bytes(msg)

    async def finish(self, status: dict) -> None:
        payload = channels.error_payload(self.protocol, status)
        try:
            if payload:
                await self.write(channels.ERROR, payload)
            await self.ws.close()
        except (ConnectionError, RuntimeError):
            pass
        self._reader.cancel()


class SpdyRemote(Remote):
    """The channels as SPDY streams, named by their streamType header; ready once all expected ones
    (error, and stdin/stdout/stderr/resize as asked) were opened by the client."""

    def __init__(self, protocol: str, expected: set[str]):
        super().__init__(protocol)
        self.expected = expected
        self.streams: dict[str, SpdyStream] = {}
        self.ready = asyncio.Event()
        self.session: Optional[SpdySession] = None

    def on_stream(self, st: SpdyStream) -> None:
        kind = (st.header("streamType") or "").lower()
        if kind not in channels.STREAM_TYPES or kind in self.streams:
            st.abort()
            return
        self.streams[kind] = st
        if kind == "resize":
            asyncio.get_running_loop().create_task(self._resizes(st))
        if self.expected <= set(self.streams):
            self.ready.set()

    def attach(self, session: SpdySession) -> None:
        self.session = session
        self._watcher = asyncio.get_running_loop().create_task(self._watch(session))

    async def _watch(self, session: SpdySession) -> None:
        await session.closed.wait()
        self.gone.set()

    async def _resizes(self, st: SpdyStream) -> None:
        while True:
            data = await st.read()
            if not data:
                return
            self._sizes(data)

    async def read_stdin(self) -> bytes:
        st = self.streams.get("stdin")
        return await st.read() if st is not None else b""

    async def write(self, channel: int, data: bytes) -> None:
        st = self.streams.get(_STREAM_OF[channel])
        if st is not None and data:
            await st.write(data)

    async def finish(self, status: dict) -> None:
        payload = channels.error_payload(self.protocol, status)
        try:
            if payload:
                await self.write(channels.ERROR, payload)
        except ConnectionError:
            pass
        for kind in ("stdout", "stderr", "error"):
            st = self.streams.get(kind)
            if st is not None:
                st.close()
        if self.session is not None:
            await self.session.goaway()
