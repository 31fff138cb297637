"""A server-side SPDY/3.1 session on the event loop, over any byte pipe (the raw HTTP connection after
a 101, or WebSocket binary messages for kubectl's tunnelled port-forward).

The framing is netemu.api.spdy's; here are streams with async read/write, replies, pings, resets and
back-pressure both ways: a writer task sends queued frames in batches (stream writers wait when it
falls behind), and reading from the pipe pauses while streams hold too much unread data.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from typing import Callable, Optional

from netemu.api import spdy

log = logging.getLogger("netemu.spdy")

HIGH_WATER = 1 << 20  # queued outgoing bytes that make stream writers wait
INBOX_HIGH = 1 << 20  # unread incoming bytes that pause the pipe
CHUNK = 256 * 1024  # DATA frame size we send (spdystream takes any size)


class SpdyIO:
    """The byte pipe under a session: write(bytes) (awaitable: waits for room), close(), and optional
    pause()/resume() of reading. Incoming bytes are handed to session.feed(); the end to feed_eof()."""

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass


class SpdyStream:
    def __init__(self, session: "SpdySession", sid: int, headers: spdy.Headers):
        self.session = session
        self.id = sid
        self.headers = headers
        self._chunks: collections.deque[bytes] = collections.deque()
        self._readable = asyncio.Event()
        self.remote_closed = False  # FIN from the client
        self.local_closed = False  # our FIN sent
        self.reset = False

    def header(self, name: str) -> Optional[str]:
        return spdy.header(self.headers, name)

    # -- incoming
    def _data(self, data: bytes, fin: bool) -> None:
        if data and not self.reset:
            self._chunks.append(data)
            self.session._buffered += len(data)
        if fin:
            self.remote_closed = True
        self._readable.set()

    async def read(self) -> bytes:
        """The next chunk the client sent; b"" once it closed its side (or reset the stream)."""
        while not self._chunks:
            if self.remote_closed or self.reset or self.session.closed.is_set():
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks.popleft()
        self.session._consumed(self.id, len(data))
        return data

    # -- outgoing
    async def write(self, data: bytes) -> None:
        s = self.session
        mv = memoryview(data)
        while mv:
            if self.reset or self.local_closed or s.closed.is_set():
                raise ConnectionResetError("stream closed")
            n = s.flow.sendable(self.id, min(len(mv), CHUNK))
            if n <= 0:  # the peer does flow control and its window is full
                await s._window_opened()
                continue
            s.flow.sent(self.id, n)
            await s._send(spdy.data_frame(self.id, bytes(mv[:n])))
            mv = mv[n:]

    def close(self) -> None:
        """Half-close: our FIN (an empty DATA frame with the flag)."""
        if not self.local_closed and not self.reset and not self.session.closed.is_set():
            self.local_closed = True
            self.session._queue(spdy.data_frame(self.id, b"", fin=True))
            self.session._maybe_forget(self)

    def abort(self, status: int = spdy.CANCEL) -> None:
        if not self.reset:
            self.reset = True
            self.session._queue(self.session.encoder.encode(spdy.RstStream(self.id, status)))
            self.session._forget(self)


class SpdySession:
    """Accepts the client's streams (each is replied at once, then handed to on_stream)."""

    def __init__(self, io: SpdyIO, on_stream: Callable[[SpdyStream], None]):
        self.io = io
        self.on_stream = on_stream
        self.parser = spdy.Parser()
        self.encoder = spdy.Encoder()
        self.flow = spdy.Flow()
        self.streams: dict[int, SpdyStream] = {}
        self.closed = asyncio.Event()  # the connection is gone (EOF, GOAWAY from the client, error)
        self.last_stream = 0
        self._buffered = 0
        self._paused = False
        self._out: list[bytes] = []
        self._queued = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._window = asyncio.Event()
        self._idle = asyncio.Event()  # nothing queued or being written
        self._idle.set()
        self._writer = asyncio.create_task(self._write_loop())

    # -- incoming bytes
    def feed(self, data: bytes) -> None:
        if self.closed.is_set():
            return
        try:
            frames = self.parser.feed(data)
        except spdy.SpdyError as e:
            log.warning("SPDY protocol error from the client: %s", e)
            self._queue(self.encoder.encode(spdy.GoAway(self.last_stream, spdy.GOAWAY_PROTOCOL_ERROR)))
            self.lost()
            return
        for f in frames:
            self._handle(f)

    def feed_eof(self) -> None:
        self.lost()

    def lost(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            for st in list(self.streams.values()):
                st.reset = True
                st._readable.set()
            self._room.set()
            self._window.set()
            self._wake.set()

    def _handle(self, f) -> None:
        if isinstance(f, spdy.Data):
            st = self.streams.get(f.stream_id)
            if st is None:
                return  # a stream we already forgot (reset): drop, as spdystream does
            st._data(f.data, f.fin)
            if st.remote_closed:
                self._maybe_forget(st)
            if self._buffered > INBOX_HIGH and not self._paused:
                self._paused = True
                self.io.pause()
        elif isinstance(f, spdy.SynStream):
            if f.stream_id <= self.last_stream or f.stream_id % 2 == 0:
                self._queue(self.encoder.encode(spdy.RstStream(f.stream_id, spdy.PROTOCOL_ERROR)))
                return
            self.last_stream = f.stream_id
            st = SpdyStream(self, f.stream_id, f.headers)
            self.streams[f.stream_id] = st
            self.flow.open(f.stream_id)
            self._queue(self.encoder.encode(spdy.SynReply(f.stream_id, {})))
            if f.fin:
                st.remote_closed = True
            self.on_stream(st)
        elif isinstance(f, spdy.RstStream):
            st = self.streams.get(f.stream_id)
            if st is not None:
                st.reset = True
                st._readable.set()
                self._forget(st)
        elif isinstance(f, spdy.Ping):
            if f.id % 2 == 1:  # the client's ping: echo it; even ids would be answers to ours
                self._queue(self.encoder.encode(f))
        elif isinstance(f, spdy.GoAway):
            self.lost()
        elif isinstance(f, spdy.WindowUpdate):
            self.flow.on_window_update(f)
            self._window.set()
        elif isinstance(f, spdy.Settings):
            self.flow.on_settings(f)
            self._window.set()
        # SYN_REPLY and HEADERS: we open no streams, nothing to do

    def _consumed(self, sid: int, n: int) -> None:
        self._buffered -= n
        for wu in self.flow.received(sid, n):
            self._queue(self.encoder.encode(wu))
        if self._paused and self._buffered < INBOX_HIGH // 2:
            self._paused = False
            self.io.resume()

    def _maybe_forget(self, st: SpdyStream) -> None:
        if st.local_closed and st.remote_closed and not st._chunks:
            self._forget(st)

    def _forget(self, st: SpdyStream) -> None:
        if self.streams.get(st.id) is st:
            del self.streams[st.id]
            self.flow.close(st.id)

    # -- outgoing bytes
    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        self._queued += len(data)
        self._idle.clear()
        self._wake.set()

    async def _send(self, data: bytes) -> None:
        self._queue(data)
        if self._queued > HIGH_WATER:
            self._room.clear()
            await self._room.wait()

    async def _window_opened(self) -> None:
        self._window.clear()
        await self._window.wait()
        if self.closed.is_set():
            raise ConnectionResetError("connection closed")

    async def _write_loop(self) -> None:
        try:
            while True:
                if not self._out:
                    self._idle.set()
                    if self.closed.is_set():
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch, self._out = self._out, []
                n = sum(map(len, batch))
                try:
                    await self.io.write(b"".join(batch) if len(batch) > 1 else batch[0])
                except (ConnectionError, RuntimeError, OSError):
                    self.lost()
                    return
                self._queued -= n
                if self._queued <= HIGH_WATER // 2:
                    self._room.set()
        finally:
            self._room.set()
            self._idle.set()

    async def flush(self) -> None:
        """Wait until everything queued so far went to the pipe."""
        await self._idle.wait()

    async def goaway(self, wait_for_client: float = 10.0) -> None:
        """End the session as spdystream does: GOAWAY, then let the client close the connection (it
        does once it has read everything; closing first could cut its last frames)."""
        if not self.closed.is_set():
            self._queue(self.encoder.encode(spdy.GoAway(self.last_stream, spdy.GOAWAY_OK)))
            await self.flush()
            try:
                await asyncio.wait_for(self.closed.wait(), wait_for_client)
            except asyncio.TimeoutError:
                pass
        self.close()

    def close(self) -> None:
        self.lost()
        self.io.close()
        if not self._writer.done():
            self._writer.cancel()

