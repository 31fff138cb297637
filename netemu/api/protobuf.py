"""Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``) to the JSON-shaped dicts
the rest of the API server works on.

kubectl's typed clients (``kubectl create deployment``, ``create service``, ``autoscale``, ``drain``'s
evictions, their DeleteOptions ...) send protobuf. The body is the 4-byte magic ``k8s\\x00`` and a
``runtime.Unknown``: typeMeta {apiVersion 1, kind 2} = 1, raw = 2 (the object's own message),
contentEncoding = 3, contentType = 4. The object's message is read with the field tables of
:mod:`netemu.spec.protobuf_schema` and comes out as the JSON API serializes it: camelCase names,
inlined embedded structs, Time as RFC 3339, Quantity as its string, IntOrString as int or string,
``[]byte`` as base64; unset and (for omitempty fields that are not Go pointers) zero fields left out,
while a present pointer field (``replicas: 0``) is kept.

Only the protobuf wire format is needed: varints, length-delimited fields, fixed32/64.
"""
from __future__ import annotations

import base64
import json
import struct
from datetime import datetime, timezone
from typing import Iterator, Union

from netemu.spec.fields import INTSTR, MICROTIME, QUANTITY, RAWEXT, SPECIAL, TIME
from netemu.spec.protobuf_schema import MESSAGES, VERSIONS

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
_MAX_DEPTH = 100
_ZERO_TIME = -62135596800  # Go's time.Time{}.Unix()

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_WIRE = {"s": _BYTES, "y": _BYTES, "b": _VARINT, "i": _VARINT, "u": _VARINT, "d": _FIXED64, "f": _FIXED32}



class ProtobufError(ValueError):
    """The body is not a Kubernetes protobuf object this server can read."""


Value = Union[int, bytes]


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int, Value]]:
    """(field number, wire type, int or bytes) for each field of one message."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise ProtobufError("field number 0")
        if wt == _VARINT:
            v, i = _varint(buf, i)
        elif wt == _BYTES:
            length, i = _varint(buf, i)
            if i + length > n:
                raise ProtobufError("truncated length-delimited field")
            v, i = buf[i:i + length], i + length
        elif wt == _FIXED64:
            if i + 8 > n:
                raise ProtobufError("truncated fixed64")
            v, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wt == _FIXED32:
            if i + 4 > n:
                raise ProtobufError("truncated fixed32")
            v, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise ProtobufError(f"unsupported wire type {wt} (field {num})")
        yield num, wt, v


def _signed(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _string(v: bytes) -> str:
    try:
        return bytes(v).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtobufError(f"invalid UTF-8 in a string field: {e}") from None


def _scalar(typ: str, wt: int, v: Value, where: str):
    if wt != _WIRE[typ]:
        raise ProtobufError(f"{where}: wire type {wt} where {typ!r} needs {_WIRE[typ]}")
    if typ == "s":
        return _string(v)
    if typ == "y":
        return base64.b64encode(v).decode("ascii")
    if typ == "b":
        return v != 0
    if typ == "i":
        return _signed(v)
    if typ == "u":
        return v
    if typ == "d":
        return struct.unpack("<d", v.to_bytes(8, "little"))[0]
    return struct.unpack("<f", v.to_bytes(4, "little"))[0]


def _packed(typ: str, v: bytes, where: str) -> list:
    """A packed repeated scalar (proto3 style; Kubernetes' proto2 does not pack, but accept it)."""
    out, i = [], 0
    while i < len(v):
        if typ in ("b", "i", "u"):
            x, i = _varint(v, i)
            out.append(_scalar(typ, _VARINT, x, where))
        else:
            size = 8 if typ == "d" else 4
            if i + size > len(v):
                raise ProtobufError(f"{where}: truncated packed field")
            out.append(_scalar(typ, _WIRE[typ], int.from_bytes(v[i:i + size], "little"), where))
            i += size
    return out


def _time(buf: bytes, micro: bool):
    seconds, nanos, seen = 0, 0, False
    for num, wt, v in _fields(buf):
        if wt != _VARINT:
            continue
        if num == 1:
            seconds, seen = _signed(v), True
        elif num == 2:
            nanos, seen = _signed(v), True
    if not seen or seconds == _ZERO_TIME:
        return None  # the zero time: JSON null, left out here
    try:
        t = datetime.fromtimestamp(seconds, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise ProtobufError(f"time out of range: {seconds}") from None
    if micro:
        return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{(nanos // 1000) % 1000000:06d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _special(typ: str, buf: bytes, depth: int):
    if typ in (TIME, MICROTIME):
        return _time(buf, typ == MICROTIME)
    if typ == QUANTITY:
        s = ""
        for num, wt, v in _fields(buf):
            if num == 1 and wt == _BYTES:
                s = _string(v)
        return s or "0"
    if typ == INTSTR:
        kind, ival, sval = 0, 0, ""
        for num, wt, v in _fields(buf):
            if num == 1 and wt == _VARINT:
                kind = _signed(v)
            elif num == 2 and wt == _VARINT:
                ival = _signed(v)
            elif num == 3 and wt == _BYTES:
                sval = _string(v)
        return sval if kind == 1 else ival
    # RawExtension (raw = 1) and FieldsV1 (Raw = 1): embedded JSON, or an embedded protobuf object
    raw = b""
    for num, wt, v in _fields(buf):
        if num == 1 and wt == _BYTES:
            raw = bytes(v)
    if not raw:
        return None
    if raw.startswith(MAGIC) and typ == RAWEXT:
        return _decode(raw, depth + 1)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtobufError(f"{typ}: embedded object is neither JSON nor protobuf: {e}") from None


def _is_zero(typ: str, v) -> bool:
    if v is None or v == {}:
        return True
    if typ == QUANTITY:
        return v == "0"
    if typ in ("s", "y", INTSTR):
        return v == "" or v == 0
    if typ in ("b", "i", "u", "d", "f"):
        return v == 0
    return False


def _value(typ: str, wt: int, v: Value, where: str, depth: int):
    if typ in _WIRE:
        return _scalar(typ, wt, v, where)
    if wt != _BYTES:
        raise ProtobufError(f"{where}: wire type {wt} for a message")
    if typ in SPECIAL:
        return _special(typ, v, depth)
    return _message(v, typ, depth + 1)


def _map_entry(typ: str, wt: int, v: Value, where: str, depth: int) -> tuple[str, object]:
    if wt != _BYTES:
        raise ProtobufError(f"{where}: wire type {wt} for a map entry")
    key, raw, vwt = "", None, _WIRE.get(typ, _BYTES)
    for num, ewt, ev in _fields(v):
        if num == 1:
            if ewt != _BYTES:
                raise ProtobufError(f"{where}: map key is not a string")
            key = _string(ev)
        elif num == 2:
            raw, vwt = ev, ewt
    if raw is None:  # value left out: the zero value
        raw = b"" if _WIRE.get(typ, _BYTES) == _BYTES else 0
    return key, _value(typ, vwt, raw, where, depth)


def _message(buf: bytes, name: str, depth: int) -> dict:
    if depth > _MAX_DEPTH:
        raise ProtobufError("message nested too deeply")
    table = MESSAGES[name]
    seen: dict[int, object] = {}
    parts: dict[int, list[bytes]] = {}  # singular message fields; repeats merge (concatenated bytes)
    for num, wt, v in _fields(buf):
        ent = table.get(num)
        if ent is None:
            continue  # a field newer than the table: skipped, as Go's decoder skips unknown fields
        jname, typ, flags = ent
        where = f"{name}.{jname or typ}"
        if "m" in flags:
            k, val = _map_entry(typ, wt, v, where, depth)
            seen.setdefault(num, {})[k] = val
        elif "r" in flags:
            lst = seen.setdefault(num, [])
            if wt == _BYTES and typ in _WIRE and typ not in ("s", "y"):
                lst.extend(_packed(typ, v, where))
            else:
                lst.append(_value(typ, wt, v, where, depth))
        elif typ in _WIRE:
            seen[num] = _scalar(typ, wt, v, where)
        else:
            if wt != _BYTES:
                raise ProtobufError(f"{where}: wire type {wt} for a message")
            parts.setdefault(num, []).append(v)
    for num, chunks in parts.items():
        typ = table[num][1]
        seen[num] = _value(typ, _BYTES, chunks[0] if len(chunks) == 1 else b"".join(chunks),
                           f"{name}.{table[num][0]}", depth)
    out: dict = {}
    for num, (jname, typ, flags) in table.items():
        if num not in seen or "x" in flags:
            continue
        v = seen[num]
        if "n" in flags:
            if isinstance(v, dict):
                out.update(v)
            continue
        if "m" in flags or "r" in flags:
            out[jname] = v
        elif "p" in flags:
            if v is not None:
                out[jname] = v
        elif v is None or v == {} or ("e" in flags and _is_zero(typ, v)):
            continue
        else:
            out[jname] = v
    return out


def _decode(body: bytes, depth: int) -> dict:
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf object (no k8s\\x00 prefix)")
    api_version = kind = encoding = ""
    raw = b""
    for num, wt, v in _fields(body[len(MAGIC):]):
        if num == 1 and wt == _BYTES:
            for tnum, twt, tv in _fields(v):
                if twt == _BYTES and tnum == 1:
                    api_version = _string(tv)
                elif twt == _BYTES and tnum == 2:
                    kind = _string(tv)
        elif num == 2 and wt == _BYTES:
            raw = v
        elif num == 3 and wt == _BYTES:
            encoding = _string(v)
    if encoding:
        raise ProtobufError(f"unsupported content encoding {encoding!r}")
    if not kind:
        raise ProtobufError("the object has no kind")
    name = f"{VERSIONS.get(api_version, '?')}.{kind}"
    if name not in MESSAGES and f"meta.v1.{kind}" in MESSAGES:
        name = f"meta.v1.{kind}"  # DeleteOptions, sent under any group version
    if name not in MESSAGES:
        gv = api_version or "v1"
        raise ProtobufError(f"no protobuf schema for {kind} in {gv}; send application/json instead")
    out: dict = {"apiVersion": api_version, "kind": kind} if api_version else {"kind": kind}
    out.update(_message(raw, name, depth))
    return out


def decode(body: bytes) -> dict:
    """A Kubernetes protobuf body (magic + runtime.Unknown) as a JSON-shaped dict, apiVersion and kind
    from the envelope's TypeMeta. Raises :class:`ProtobufError` for anything it cannot read."""
    try:
        return _decode(bytes(body), 0)
    except RecursionError:
        raise ProtobufError("message nested too deeply") from None
