"""The remotecommand and port-forward channel protocols of the Kubernetes streaming API: pure, no I/O.

exec/attach over WebSocket: every binary message is one channel id byte + data (stdin 0, stdout 1,
stderr 2, error 3, resize 4). The base64 variants send text messages: the id as an ASCII digit, then
the data base64-encoded. v5 adds a close signal (255, channel): the client half-closes stdin.
Over SPDY the same channels are streams named by their `streamType` header.

The error channel tells how it ended: v4 and later send a metav1.Status as JSON (Success, or Failure
with reason NonZeroExitCode and the exit code as a cause), older protocols only the failure's text.

Port-forward over WebSocket (v4.channel.k8s.io, the Python client's form): per `ports=` query
port i, channel 2i carries data and 2i+1 errors; the first message on each channel is the port as
2-byte little endian.
"""
from __future__ import annotations

import base64
import json
import struct
from typing import Optional

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255  # v5: (255, channel) closes that channel from the client's side

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V2 = "v2.channel.k8s.io"
V1 = "channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"

# best first: what a server picks from what the client offers
EXEC_WEBSOCKET = (V5, V4, V4_BASE64, V3, V2, V1, V1_BASE64)
EXEC_SPDY = (V4, V3, V2, V1)
PORTFORWARD = "portforward.k8s.io"
PORTFORWARD_TUNNEL = "SPDY/3.1+portforward.k8s.io"  # kubectl >= 1.31: SPDY inside WebSocket
PORTFORWARD_WEBSOCKET = (V4, V4_BASE64)

STREAM_TYPES = {"stdin": STDIN, "stdout": STDOUT, "stderr": STDERR, "error": ERROR, "resize": RESIZE}


def offered(header_values: list[str]) -> list[str]:
    """Protocols a client offers, in its order, from one or more comma-separated header values."""
    out = []
    for v in header_values:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return out


def choose(offers: list[str], supported: tuple[str, ...]) -> Optional[str]:
    """The best protocol we support among those offered (our order of preference)."""
    for p in supported:
        if p in offers:
            return p
    return None


def is_base64(protocol: Optional[str]) -> bool:
    return bool(protocol) and "base64" in protocol


def status_json(protocol: Optional[str]) -> bool:
    """Does the error channel carry a Status (v4+) rather than bare text?"""
    return protocol in (V5, V4, V4_BASE64)


def can_close(protocol: Optional[str]) -> bool:
    return protocol == V5


# ---------------------------------------------------------------------- messages
def encode(channel: int, data: bytes, protocol: Optional[str] = None):
    """One WebSocket message for a channel: bytes (binary protocols) or str (base64 ones)."""
    if is_base64(protocol):
        return chr(ord("0") + channel) + base64.b64encode(data).decode()
    return bytes((channel,)) + data


def decode(message, protocol: Optional[str] = None) -> tuple[int, bytes]:
    """(channel, data) of a message; a v5 close signal comes back as (CLOSE, bytes([channel])).
    Binary protocols take text messages as their UTF-8 bytes (the Python client sends str data so)."""
    if isinstance(message, str):
        if not message:
            raise ValueError("empty message")
        if is_base64(protocol):
            ch = ord(message[0]) - ord("0")
            return ch, base64.b64decode(message[1:]) if len(message) > 1 else b""
        message = message.encode()
    if not message:
        raise ValueError("empty message")
    return message[0], bytes(message[1:])


def close_signal(channel: int) -> bytes:
    return bytes((CLOSE, channel))


# ---------------------------------------------------------------------- the error channel
def success() -> dict:
    return {"metadata": {}, "status": "Success"}


def exit_status(code: int, command: Optional[list[str]] = None) -> dict:
    what = f"command '{' '.join(command)}' exited with {code}" if command else f"exit code {code}"
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: {what}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def failure(message: str, reason: str = "InternalError", code: int = 500) -> dict:
    return {"metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}


def error_payload(protocol: Optional[str], status: dict) -> bytes:
    """What goes on the error channel at the end: the Status (v4+), or the failure's text (older
    protocols send nothing on success)."""
    if status_json(protocol):
        return json.dumps(status, separators=(",", ":")).encode()
    if status.get("status") == "Success":
        return b""
    return (status.get("message") or "error").encode()


def exit_code(payload: bytes) -> Optional[int]:
    """The exit code a v4+ error-channel payload reports (0 for Success; None if it has none)."""
    st = json.loads(payload)
    if st.get("status") == "Success":
        return 0
    for c in (st.get("details") or {}).get("causes") or []:
        if c.get("reason") == "ExitCode":
            return int(c["message"])
    return None


class ResizeDecoder:
    """Terminal sizes from the resize channel: a stream of JSON objects {"Width":..,"Height":..},
    split anywhere (over SPDY it is a byte stream, over WebSocket one object per message)."""

    def __init__(self) -> None:
        self._buf = ""
        self._json = json.JSONDecoder()

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        self._buf += data.decode(errors="replace")
        out = []
        while True:
            s = self._buf.lstrip()
            if not s:
                self._buf = ""
                return out
            try:
                obj, end = self._json.raw_decode(s)
            except json.JSONDecodeError:
                self._buf = s
                if len(s) > 4096:  # not JSON at all: drop it rather than grow
                    self._buf = ""
                return out
            self._buf = s[end:]
            if isinstance(obj, dict):
                w, h = int(obj.get("Width") or 0), int(obj.get("Height") or 0)
                if w > 0 and h > 0:
                    out.append((w, h))


# ---------------------------------------------------------------------- port-forward over WebSocket
def data_channel(index: int) -> int:
    return 2 * index


def error_channel(index: int) -> int:
    return 2 * index + 1


def port_of_channel(channel: int) -> tuple[int, bool]:
    """(port index, is the error channel) of a channel."""
    return channel // 2, bool(channel % 2)


def port_prefix(port: int) -> bytes:
    """The first data on each of a port's channels: the port, 2 bytes little endian."""
    return struct.pack("<H", port)


def parse_ports(values: list[str]) -> list[int]:
    """The `ports` query parameter (repeated, or comma-separated); raises ValueError."""
    out = []
    for v in values:
        for p in v.split(","):
            p = p.strip()
            if not p:
                continue
            n = int(p)
            if not 0 < n < 65536:
                raise ValueError(f"invalid port {p!r}")
            out.append(n)
    return out
