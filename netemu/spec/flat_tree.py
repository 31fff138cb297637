"""The tree a flattened manifest is rebuilt into, and its output as indented YAML.

Scalars are kept as written (quotes included) and copied to the output verbatim, so that the
re-indented text says exactly what the user wrote; comments are put back next to what they followed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional, Union

import yaml

from netemu.spec.flat_lex import Comment


@dataclass
class Scalar:
    raw: str  # as written, quotes included: it is copied to the output verbatim


def scalar_node(raw: str) -> Scalar:
    """The value as written, or quoted when it would not read back as one value (an unclosed quote,
    a stray colon: text the flattening mangled)."""
    try:
        value = yaml.safe_load(f"k: {raw}")
        if isinstance(value, dict) and list(value) == ["k"]:
            return Scalar(raw)
    except yaml.YAMLError:
        pass
    return Scalar(json.dumps(raw, ensure_ascii=False))


def key_text(raw: str) -> str:
    """The key as written, or quoted when YAML would not read it back as a key."""
    try:
        value = yaml.safe_load(f"{raw}: v")
        if isinstance(value, dict) and len(value) == 1:
            return raw
    except yaml.YAMLError:
        pass
    return json.dumps(raw, ensure_ascii=False)


@dataclass
class Block:
    indicator: str
    lines: list[str]


@dataclass
class Entry:
    key: str
    raw_key: str
    value: "Node" = None
    first: int = 0  # token range, for putting comments back
    last: int = 0


@dataclass
class Mapping:
    entries: list[Entry] = field(default_factory=list)

    def get(self, key: str) -> Optional[Entry]:
        return next((e for e in self.entries if e.key == key), None)


@dataclass
class Item:
    value: "Node" = None
    first: int = 0
    last: int = 0


@dataclass
class Seq:
    items: list[Item] = field(default_factory=list)


Node = Union[Scalar, Block, Mapping, Seq, None]


@dataclass
class Line:
    text: str
    first: int  # first token on the line
    anchor: bool = True  # block scalar content takes no comments


def render_mapping(m: Mapping, indent: int, out: list[Line], dash: Optional[tuple[str, int]] = None) -> None:
    """Append ``m``'s lines to ``out``. ``dash`` (prefix, token) makes ``m`` a list item: its first key
    goes on the ``- `` line."""
    pad = " " * indent
    for n, e in enumerate(m.entries):
        lead, first = (dash if dash and n == 0 else (pad, e.first))
        head = f"{lead}{e.raw_key}:"
        v = e.value
        if isinstance(v, Scalar):
            out.append(Line(f"{head} {v.raw}", first))
        elif isinstance(v, Block):
            out.append(Line(f"{head} {v.indicator}", first))
            out.extend(Line(f"{pad}  {ln}" if ln else "", e.last, anchor=False) for ln in v.lines)
        elif isinstance(v, Mapping) and v.entries:
            out.append(Line(head, first))
            render_mapping(v, indent + 2, out)
        elif isinstance(v, Seq) and v.items:
            out.append(Line(head, first))
            render_seq(v, indent, out)
        elif isinstance(v, Mapping):
            out.append(Line(f"{head} {{}}", first))
        elif isinstance(v, Seq):
            out.append(Line(f"{head} []", first))
        else:
            out.append(Line(head, first))


def render_seq(s: Seq, indent: int, out: list[Line]) -> None:
    pad = " " * indent
    for item in s.items:
        v = item.value
        if isinstance(v, Mapping) and v.entries:
            render_mapping(v, indent + 2, out, dash=(f"{pad}- ", item.first))
        elif isinstance(v, Scalar):
            out.append(Line(f"{pad}- {v.raw}", item.first))
        elif isinstance(v, Block):
            out.append(Line(f"{pad}- {v.indicator}", item.first))
            out.extend(Line(f"{pad}  {ln}" if ln else "", item.first, anchor=False) for ln in v.lines)
        elif isinstance(v, Seq) and v.items:
            out.append(Line(f"{pad}-", item.first))
            render_seq(v, indent + 2, out)
        elif isinstance(v, Mapping):
            out.append(Line(f"{pad}- {{}}", item.first))
        else:
            out.append(Line(f"{pad}-", item.first))


def place_comments(lines: list[Line], comments: list[Comment], first: int, end: int, last: bool) -> list[str]:
    """Put comments back: a comment on its own line before what followed it, others at line ends.

    Tokens ``first`` to ``end`` are this document's; a comment line after its last token introduces
    the next document, unless there is none."""
    texts = [ln.text for ln in lines]
    before: dict[int, list[str]] = {}
    anchors = [n for n, ln in enumerate(lines) if ln.anchor]
    for c in comments:
        if c.own_line:
            mine = first - 1 <= c.after < end - 1 or (last and c.after >= end - 1)
        else:
            mine = first <= c.after < end
        if not mine:
            continue
        if c.own_line or c.after < first:
            at = next((n for n in anchors if lines[n].first > c.after), len(lines))
            before.setdefault(at, []).append(c.text)
        else:
            at = max((n for n in anchors if lines[n].first <= c.after), key=lambda n: lines[n].first, default=None)
            if at is None:
                before.setdefault(0, []).append(c.text)
            else:
                texts[at] += f"  #{c.text}"
    out = []
    for n, text in enumerate(texts + [""]):
        for c in before.get(n, []):
            ref = texts[n] if n < len(texts) else ""
            out.append(" " * (len(ref) - len(ref.lstrip(" "))) + f"#{c}")
        if n < len(texts):
            out.append(text)
    return out


