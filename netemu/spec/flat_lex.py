"""Tokens of a manifest whose indentation is lost: keys, scalars, list dashes, document separators,
block scalars, flow collections and the blog's ``//`` comment markers.

Indentation carries no meaning here (that is the point): the tokens are read word by word, minding
quotes, so that ``value: "a b"`` stays one scalar and ``image: ghcr.io/x/counter:latest`` stays a
scalar although it contains a colon. ``#`` comments are kept aside so that ``netemu fmt`` can put them
back next to what they commented.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

KEY, SCALAR, FLOW, DASH, SEP, SLASHES, BLOCK = "key", "scalar", "flow", "dash", "sep", "slashes", "block"

_BLOCK_INDICATOR = re.compile(r"^[|>](?:[-+]?[1-9]?|[1-9][-+])$")


@dataclass
class Token:
    type: str
    raw: str  # the text as written (keys: without the colon; quotes kept)
    line: int  # 0-based line in the text given to lex()
    text: str = ""  # keys: the key with quotes removed
    block_lines: list[str] = field(default_factory=list)  # BLOCK: its content lines, unindented


@dataclass
class Comment:
    text: str  # what followed the '#', as written
    after: int  # index of the token it follows (-1: before every token)
    own_line: bool  # a comment line by itself (it introduces what follows)


def _unquote(raw: str) -> str:
    if raw[:1] == '"':
        return raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if raw[:1] == "'":
        return raw[1:-1].replace("''", "'")
    return raw


def _quoted_end(line: str, start: int) -> Optional[int]:
    """Index just past the closing quote of the quoted scalar at ``start``, if it closes on the line."""
    q, i = line[start], start + 1
    while i < len(line):
        c = line[i]
        if q == '"' and c == "\\":
            i += 2
            continue
        if c == q:
            if q == "'" and line[i + 1:i + 2] == "'":
                i += 2
                continue
            return i + 1
        i += 1
    return None


def _flow_end(line: str, start: int) -> Optional[int]:
    """Index just past the bracket closing the flow collection at ``start``, if it closes on the line."""
    depth, i = 0, start
    while i < len(line):
        c = line[i]
        if c in "\"'":
            end = _quoted_end(line, i)
            if end is None:
                return None
            i = end
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _word_end(line: str, start: int) -> int:
    i = start
    while i < len(line) and line[i] not in " \t":
        i += 1
    return i


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _block_content(lines: list[str], first: int) -> tuple[list[str], int]:
    """Content lines of a block scalar starting at line ``first``, and the line after it.

    Indented content is read as YAML reads it. Content that lost its indentation too (it starts at
    column 0) cannot be told from what follows, so it runs to the end of the document."""
    nonblank = next((i for i in range(first, len(lines)) if lines[i].strip()), None)
    if nonblank is None:
        return [], len(lines)
    width = _indent(lines[nonblank])
    if width == 0:
        end = len(lines)
    else:
        end = first
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) >= width):
            end += 1
    content = [ln[width:] if ln.strip() else "" for ln in lines[first:end]]
    while content and not content[-1]:
        content.pop()
    return content, end


def lex(text: str) -> tuple[list[Token], list[Comment]]:
    tokens: list[Token] = []
    comments: list[Comment] = []
    lines = text.splitlines()
    n = 0
    while n < len(lines):
        line, pos, next_line = lines[n], 0, n + 1
        while pos < len(line):
            if line[pos] in " \t":
                pos += 1
                continue
            c = line[pos]
            if c == "#":
                own = not line[:pos].strip()
                comments.append(Comment(line[pos + 1:].rstrip(), len(tokens) - 1, own))
                break
            if line.startswith("//", pos):
                tokens.append(Token(SLASHES, "//", n))
                pos += 2
                continue
            end = None
            if c in "\"'":
                end = _quoted_end(line, pos)
            elif c in "[{":
                end = _flow_end(line, pos)
            if end is not None and (end == len(line) or line[end] in " \t:"):
                raw = line[pos:end]
                if line[end:end + 1] == ":" and (end + 1 == len(line) or line[end + 1] in " \t"):
                    tokens.append(Token(KEY, raw, n, text=_unquote(raw)))
                    end += 1
                else:
                    tokens.append(Token(FLOW if c in "[{" else SCALAR, raw, n, text=_unquote(raw)))
                pos = end
                continue
            end = _word_end(line, pos)
            word = line[pos:end]
            rest = line[end:].strip()
            if word == "-":
                tokens.append(Token(DASH, word, n))
            elif word in ("---", "..."):
                tokens.append(Token(SEP, word, n))
            elif word.endswith(":") and len(word) > 1:
                tokens.append(Token(KEY, word[:-1], n, text=word[:-1]))
            elif _BLOCK_INDICATOR.match(word) and (not rest or rest.startswith("#")):
                if rest:
                    comments.append(Comment(rest[1:].rstrip(), len(tokens) - 1, False))
                content, next_line = _block_content(lines, n + 1)
                indicator = re.sub(r"[1-9]", "", word)  # the content is re-indented: drop the width
                tokens.append(Token(BLOCK, indicator, n, block_lines=content))
                break
            else:
                tokens.append(Token(SCALAR, word, n, text=word))
            pos = end
        n = next_line
    return tokens, comments


def keys_per_line(tokens: list[Token]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for t in tokens:
        if t.type == KEY:
            counts[t.line] = counts.get(t.line, 0) + 1
    return counts
