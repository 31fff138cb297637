"""Recovery of manifests that lost their indentation when copied from a web page.

Blogs flatten YAML in two ways: every line starts at column 0 (``metadata:`` then ``name: np-svc``
on the next line), or a whole manifest sits on one line with ``//`` comments and even ``---``
separators inline. The structure is gone from the text, but the schema still knows it: ``name``
belongs to ``metadata``, ``spec`` does not, so ``spec:`` closes ``metadata``. The re-indenter walks the
pydantic models (:mod:`netemu.spec.schema`) while it reads the tokens:

- a key goes to the innermost open object that has it as a field not yet set; free-form maps
  (labels, selector, data, ...) take any other key, and end when a key of an enclosing object
  appears; a key no object knows is an unknown field of the innermost object (so a typo stays a
  typo, and the loader warns about it);
- a ``-`` opens an item of the open list whose item type fits the keys that follow best;
- a ``//`` comment runs until the next key valid in the current or an enclosing object (or the end
  of the line, or ``---``);
- ``apiVersion``/``kind`` seen again at the top starts the next document.

Only text that looks flattened is touched (:func:`looks_flattened`); well-indented YAML is left to
the YAML parser untouched. A document whose kind has no model is not guessed at: it is returned as
written, and becomes recoverable the day its model is added to ``KINDS``.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Optional, Union

from pydantic import BaseModel

from netemu.spec.flat_lex import BLOCK, DASH, FLOW, KEY, SCALAR, SEP, SLASHES, Comment, Token, keys_per_line, lex
from netemu.spec.flat_tree import (
    Block, Entry, Item, Line, Mapping, Node, Scalar, Seq, key_text, place_comments, render_mapping, scalar_node,
)
from netemu.spec.schema import ANY, Shape, fields_of, required_of

# a line with this many keys is a manifest squeezed onto one line (valid YAML has at most one)
_MANY_KEYS = 3
_BARE_KEY = re.compile(r"^(?:- )?[^\s#][^\s]*:$")
_ROOT_KEYS = ("apiVersion", "kind")


@dataclass
class _Frame:
    shape: Shape
    node: Union[Mapping, Seq]


@dataclass
class RecoveredDocument:
    text: str  # the document as indented YAML (or as written, when it could not be recovered)
    kind: Optional[str]
    recovered: bool
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- detection
def _content_lines(text: str) -> list[str]:
    """Non-blank, non-comment lines, up to the first block scalar (its content may be anything)."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        out.append(line)
        if re.search(r":\s+[|>][-+1-9]*\s*(#.*)?$", line):
            break
    return out


def looks_flattened(text: str) -> bool:
    """True for a manifest squeezed onto lines with several keys each, or one whose lines all start at
    column 0 although it nests (a ``key:`` line followed by another key instead of its content)."""
    tokens, _ = lex(text)
    if any(n >= _MANY_KEYS for n in keys_per_line(tokens).values()):
        return True
    lines = _content_lines(text)
    if any(line[0] in " \t" for line in lines):
        return False
    for line, following in zip(lines, lines[1:]):
        bare = re.sub(r"\s+#.*$", "", line).rstrip()
        if _BARE_KEY.match(bare) and not following.startswith("-"):
            return True
    return False


# --------------------------------------------------------------------------- rebuilding
class _Builder:
    def __init__(self, tokens: list[Token], comments: list[Comment], kinds: dict[str, type[BaseModel]]):
        self.t = tokens
        self.comments = comments
        self.kinds = kinds
        self._slashes_seen: set[int] = set()

    # ---------------------------------------------------------------- helpers
    def _tok(self, i: int) -> Optional[Token]:
        return self.t[i] if 0 <= i < len(self.t) else None

    def kind_ahead(self, i: int) -> Optional[str]:
        """The document's kind: the value of the first ``kind:`` key before the next separator."""
        seen: set[str] = set()
        for j in range(i, len(self.t)):
            tok = self.t[j]
            if tok.type == SEP:
                return None
            if tok.type == KEY and tok.text in _ROOT_KEYS:
                if tok.text in seen:
                    return None  # the next document's
                seen.add(tok.text)
                nxt = self._tok(j + 1)
                if tok.text == "kind" and nxt and nxt.type == SCALAR:
                    return nxt.text
        return None

    @staticmethod
    def _accepts(frame: _Frame, key: str, value: Optional[str]) -> bool:
        """Does this object have ``key`` as a field not yet set (and can it hold ``value``)?"""
        if frame.shape.kind != "model" or not isinstance(frame.node, Mapping):
            return False
        shape = fields_of(frame.shape.model).get(key)
        if shape is None or frame.node.get(key) is not None:
            return False
        # `type: frontend` after a selector is a label, not ServiceSpec.type: the Literal says which
        # (`type: Nodeport` is still the type, misspelt: the loader will say so)
        if shape.choices is None or value is None:
            return True
        choices = [str(c).lower() for c in shape.choices]
        return bool(difflib.get_close_matches(value.lower(), choices, n=1, cutoff=0.75))

    @staticmethod
    def _is_map(frame: _Frame) -> bool:
        return isinstance(frame.node, Mapping) and frame.shape.kind in ("map", "any")

    def _scalar_after(self, i: int) -> Optional[str]:
        tok, nxt = self._tok(i), self._tok(i + 1)
        if nxt and nxt.type == SCALAR and nxt.line == tok.line:
            return nxt.text
        return None

    def _target(self, stack: list[_Frame], key: str, value: Optional[str]) -> int:
        """Index of the frame a key belongs to (see the module docstring)."""
        map_at = None
        for idx in range(len(stack) - 1, -1, -1):
            f = stack[idx]
            if self._accepts(f, key, value):
                return idx
            if map_at is None and self._is_map(f):
                map_at = idx
        if map_at is not None:
            return map_at
        return next(idx for idx in range(len(stack) - 1, -1, -1) if isinstance(stack[idx].node, Mapping))

    def _starts_next_document(self, stack: list[_Frame], key: str) -> bool:
        """``apiVersion``/``kind`` again at the top, where no open object or free-form map takes it."""
        root = stack[0].node
        if key not in _ROOT_KEYS or root.get(key) is None:
            return False
        for f in stack[1:]:
            if self._accepts(f, key, None) or (self._is_map(f) and f.shape.item is not None
                                               and f.shape.item.kind == "any"):
                return False
        return True

    def _valid_key_in(self, stack: list[_Frame], key: str, pending: Optional[Shape]) -> bool:
        shapes = [f.shape for f in stack if isinstance(f.node, Mapping)] + ([pending] if pending else [])
        return any(s.kind in ("map", "any") or (s.kind == "model" and key in fields_of(s.model)) for s in shapes)

    # ---------------------------------------------------------------- comments
    def _skip_comment(self, i: int, stack: list[_Frame], pending: Optional[Shape] = None) -> int:
        """``//`` at ``i``: skip to the next key valid here, ``---`` or the end of the line."""
        start = self.t[i]
        j = i + 1
        while j < len(self.t):
            tok = self.t[j]
            if tok.type == SEP or tok.line != start.line:
                break
            if tok.type == KEY and self._valid_key_in(stack, tok.text, pending):
                if self.t[j - 1].type == DASH and j - 1 > i:
                    j -= 1
                break
            j += 1
        if i not in self._slashes_seen:  # a document boundary makes us read a comment twice
            self._slashes_seen.add(i)
            words = " ".join(tok.raw + (":" if tok.type == KEY else "") for tok in self.t[i + 1:j])
            own_line = i == 0 or self.t[i - 1].line != start.line
            self.comments.append(Comment(" " + words, i - 1, own_line))
        return j

    def _skip_comments(self, i: int, stack: list[_Frame], pending: Optional[Shape] = None) -> int:
        while (tok := self._tok(i)) is not None and tok.type == SLASHES:
            i = self._skip_comment(i, stack, pending)
        return i

    # ---------------------------------------------------------------- values
    def _scalar(self, i: int, line: int) -> tuple[Optional[Node], int]:
        """A value on ``line`` starting at token ``i``: one quoted/flow token, or plain words joined."""
        tok = self._tok(i)
        if tok is None or tok.line != line or tok.type not in (SCALAR, FLOW, BLOCK):
            return None, i
        if tok.type == BLOCK:
            return Block(tok.raw, tok.block_lines), i + 1
        if tok.type == FLOW or tok.raw[:1] in "\"'":
            return scalar_node(tok.raw), i + 1
        words = []
        while (w := self._tok(i)) is not None and w.type == SCALAR and w.line == line and w.raw[:1] not in "\"'":
            words.append(w.raw)
            i += 1
        return scalar_node(" ".join(words)), i

    def _key(self, i: int, stack: list[_Frame], notes: list[str], force: Optional[int] = None) -> int:
        tok = self.t[i]
        idx = force if force is not None else self._target(stack, tok.text, self._scalar_after(i))
        del stack[idx + 1:]
        frame = stack[-1]
        mapping: Mapping = frame.node
        if frame.shape.kind == "model":
            shape = fields_of(frame.shape.model).get(tok.text)
        else:
            shape = frame.shape.item if frame.shape.kind == "map" else ANY
        old = mapping.get(tok.text)
        if old is not None:
            notes.append(f"{tok.text} appears twice in one place; the last one wins")
            mapping.entries.remove(old)
        entry = Entry(tok.text, key_text(tok.raw), None, i, i)
        mapping.entries.append(entry)
        i = self._skip_comments(i + 1, stack, shape)
        value, j = self._scalar(i, tok.line)
        if value is not None:
            entry.value, entry.last = value, j - 1
            return j
        nxt = self._tok(i)
        if nxt is not None and nxt.type == DASH:
            entry.value = Seq()
            stack.append(_Frame(shape if shape is not None and shape.kind == "list" else Shape("list", item=ANY),
                                entry.value))
        elif nxt is not None and nxt.type == KEY and shape is not None and shape.kind in ("model", "map", "any"):
            entry.value = Mapping()
            stack.append(_Frame(shape, entry.value))
        return i

    def _item_fit(self, shape: Optional[Shape], keys: list[str]) -> tuple:
        """How well the keys after a ``-`` fit a list's item type; higher is better."""
        if shape is None or shape.kind != "model":
            return (True, False, 0)
        fields = fields_of(shape.model)
        leading = 0
        for k in keys:
            if k not in fields:
                break
            leading += 1
        return (leading > 0, required_of(shape.model) <= set(keys), leading)

    def _dash(self, i: int, stack: list[_Frame], notes: list[str]) -> int:
        lists = [idx for idx, f in enumerate(stack) if isinstance(f.node, Seq)]
        if not lists:
            notes.append(f"ignored a '-' that starts no list (line {self.t[i].line + 1})")
            return i + 1
        nxt = self._tok(i + 1)
        if nxt is not None and nxt.type == KEY:
            keys = []
            for tok in self.t[i + 1:]:
                if tok.type in (DASH, SEP):
                    break
                if tok.type == KEY:
                    keys.append(tok.text)
            best, best_fit = lists[-1], None
            for idx in reversed(lists):  # innermost first: it wins ties
                fit = self._item_fit(stack[idx].shape.item, keys)
                if best_fit is None or fit > best_fit:
                    best, best_fit = idx, fit
        else:
            best = next((idx for idx in reversed(lists)
                         if (stack[idx].shape.item or ANY).kind in ("scalar", "any")), lists[-1])
        del stack[best + 1:]
        seq: Seq = stack[-1].node
        item_shape = stack[-1].shape.item or ANY
        item = Item(None, i, i)
        seq.items.append(item)
        i += 1
        if nxt is not None and nxt.type == KEY:
            item.value = Mapping()
            stack.append(_Frame(item_shape if item_shape.kind in ("model", "map") else ANY, item.value))
            return self._key(i, stack, notes, force=len(stack) - 1)
        value, j = self._scalar(i, self.t[i - 1].line)
        if value is not None:
            item.value, item.last = value, j - 1
            return j
        if nxt is not None and nxt.type == DASH:
            item.value = Seq()
            stack.append(_Frame(item_shape if item_shape.kind == "list" else Shape("list", item=ANY), item.value))
        return i

    def _stray(self, i: int, last_scalar: Optional[Entry], notes: list[str]) -> int:
        """Words where no value is expected: a plain scalar wrapped onto the next line, or junk."""
        tok = self.t[i]
        prev_value = last_scalar.value if last_scalar else None
        if (tok.type == SCALAR and isinstance(prev_value, Scalar) and last_scalar.last == i - 1
                and prev_value.raw[:1] not in "\"'[{" and tok.raw[:1] not in "\"'"):
            prev_value.raw = scalar_node(prev_value.raw + " " + tok.raw).raw
            last_scalar.last = i
        else:
            notes.append(f"ignored {tok.raw!r} (line {tok.line + 1}): it is not a value of any key")
        return i + 1

    # ---------------------------------------------------------------- documents
    def document(self, i: int) -> tuple[Mapping, Optional[str], int, int, list[str]]:
        """Rebuild one document from token ``i``: (tree, kind, first token, next token, notes)."""
        kind = self.kind_ahead(i)
        model = self.kinds.get(kind or "")
        root = Mapping()
        stack = [_Frame(Shape("model", model=model) if model else Shape("map", item=ANY), root)]
        notes: list[str] = []
        first = i
        if model is None:
            return root, kind, first, self._skip_unknown(i), notes
        content_end = i  # past the last token that is not a comment
        while i < len(self.t):
            tok = self.t[i]
            if tok.type == SEP:
                if root.entries:
                    break
                i += 1
                first = content_end = i
                continue
            if tok.type == SLASHES:
                i = self._skip_comment(i, stack)
                continue
            if tok.type == KEY:
                if self._starts_next_document(stack, tok.text):
                    return root, kind, first, content_end, notes  # comments before it are the next one's
                i = self._key(i, stack, notes)
            elif tok.type == DASH:
                i = self._dash(i, stack, notes)
            else:
                i = self._stray(i, self._last_scalar_entry(root), notes)
            content_end = i
        return root, kind, first, i, notes

    def _skip_unknown(self, i: int) -> int:
        """The end of a document that has no model: the next ``---`` or repeated apiVersion/kind."""
        seen: set[str] = set()
        for j in range(i, len(self.t)):
            tok = self.t[j]
            if tok.type == SEP and j > i:
                return j
            if tok.type == KEY and tok.text in _ROOT_KEYS:
                if tok.text in seen:
                    return j
                seen.add(tok.text)
        return len(self.t)

    @staticmethod
    def _last_scalar_entry(m: Mapping) -> Optional[Entry]:
        """The entry assigned last (deepest, latest), to let a wrapped plain scalar continue it."""
        node: Node = m
        found = None
        while True:
            if isinstance(node, Mapping) and node.entries:
                found = node.entries[-1] if isinstance(node.entries[-1].value, Scalar) else found
                node = node.entries[-1].value
            elif isinstance(node, Seq) and node.items:
                item = node.items[-1]
                if isinstance(item.value, Scalar):
                    return Entry("", "", item.value, item.first, item.last)
                node = item.value
            else:
                return found


# --------------------------------------------------------------------------- public
def recover(text: str, kinds: dict[str, type[BaseModel]]) -> Optional[list[RecoveredDocument]]:
    """Re-indent ``text`` (one or more documents) by the schema of its kinds.

    Returns None when the text does not look flattened or names no kind at all: then it is ordinary
    YAML, or not a manifest, and the YAML parser has the better message."""
    if not looks_flattened(text):
        return None
    tokens, comments = lex(text)
    builder = _Builder(tokens, comments, kinds)
    if builder.kind_ahead(0) is None:
        return None
    lines = text.splitlines()
    docs: list[RecoveredDocument] = []
    i = 0
    while i < len(tokens):
        if tokens[i].type == SEP:
            i += 1
            continue
        tree, kind, first, end, notes = builder.document(i)
        if end <= i:  # cannot happen with well-formed tokens; never loop forever
            end = i + 1
        if kind in kinds:
            rendered: list[Line] = []
            render_mapping(tree, 0, rendered)
            last = all(t.type in (SEP, SLASHES) for t in tokens[end:])
            body = place_comments(rendered, builder.comments, first, end, last)
            docs.append(RecoveredDocument("\n".join(body) + "\n", kind, True, notes))
        elif end > first:
            span = lines[tokens[first].line:tokens[end - 1].line + 1]
            docs.append(RecoveredDocument("\n".join(span) + "\n", kind, False,
                                          [f"kind {kind} has no schema in netemu: left as written"
                                           if kind else "no kind: left as written"]))
        i = end
    return docs
