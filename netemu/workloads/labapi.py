"""The lab's own verbs, for the built-in pod programs that talk to their control process (CoreDNS's
zone feed, ingress-nginx's snapshot feed): plain HTTP/1.0 over the lab's Unix socket, so that after
the response headers the socket carries the feed's frames as they are."""
from __future__ import annotations

import json
import socket
from typing import Any, Optional


def _post(path: str, op: str, body: dict, timeout: Optional[float]) -> socket.socket:
    data = json.dumps(body).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(f"POST /netemu/v1/{op} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        head = b""
        while not head.endswith(b"\r\n\r\n"):  # byte by byte: what follows the headers is the feed's
            ch = sock.recv(1)
            if not ch:
                raise OSError("the control process closed the connection")
            head += ch
        status = head.split(b" ", 2)[1] if b" " in head else b"?"
        if status != b"200":
            raise OSError(f"the control process answered {status.decode()}")
    except BaseException:
        sock.close()
        raise
    return sock


def open_feed(path: str, op: str, body: dict) -> socket.socket:
    """A subscription: the socket, positioned at the first frame."""
    sock = _post(path, op, body, timeout=10)
    sock.settimeout(None)
    return sock


def call(path: str, op: str, body: dict, timeout: float = 5.0) -> Any:
    with _post(path, op, body, timeout) as sock:
        chunks = []
        while True:
            b = sock.recv(65536)
            if not b:
                break
            chunks.append(b)
    msg = json.loads(b"".join(chunks) or b"{}")
    if "error" in msg:
        raise OSError(msg["error"])
    return msg.get("result")
