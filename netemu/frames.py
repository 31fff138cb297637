"""Length-prefixed frames: how the control process streams snapshots (DNS zones, ingress
configuration) to the pods that follow them over the lab's Unix socket. Both ends use this."""
from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
from typing import Iterator

_HEAD = struct.Struct("!I")


def pack(body: bytes) -> bytes:
    return _HEAD.pack(len(body)) + body


def digest(body: bytes) -> str:
    """A frame's identity, as both ends compute it from its body: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(body).hexdigest()[:16]


def read_frames(sock: socket.socket) -> Iterator[bytes]:
    """The bodies of the frames arriving on sock, until it closes (a cut-off frame is dropped)."""
    f = sock.makefile("rb")
    while True:
        head = f.read(_HEAD.size)
        if len(head) < _HEAD.size:
            return
        (n,) = _HEAD.unpack(head)
        body = f.read(n)
        if len(body) < n:
            return
        yield body


async def hold_open(writer: asyncio.StreamWriter) -> None:
    """Keep a subscriber's connection until it goes away (frames are written to it meanwhile)."""
    while not writer.is_closing():
        await writer.drain()
        await asyncio.sleep(1)
