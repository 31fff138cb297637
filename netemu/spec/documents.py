"""A lab file as a list of YAML documents: split on ``---`` lines, parsed, and re-indented where a
document lost its indentation (:mod:`netemu.spec.flat`).

Documents are numbered from 1, counting only documents with content, as netemu understood them: a
line holding several flattened manifests counts as several documents (``netemu fmt`` shows them).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml
from pydantic import BaseModel

from netemu.spec.errors import Location, Report
from netemu.spec.flat import recover

_SEPARATOR = re.compile(r"^(---|\.\.\.)(\s.*)?$")

# the Kubernetes API server's limits: a request body of at most 3 MiB, and an object of at most
# 1.5 MiB (etcd's request limit); documents above them are refused, the largest ones unread
MAX_REQUEST_BYTES = 3 * 1024 * 1024
MAX_OBJECT_BYTES = 1536 * 1024
_MEASURE_ABOVE = 256 * 1024  # documents whose text is shorter (and without aliases) cannot be too large


class YamlLimitError(yaml.YAMLError):
    """A document that would take too long or too much memory to read: refused, as Kubernetes does."""


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB".replace(".0 MiB", " MiB")


@dataclass
class Chunk:
    """Text between ``---`` lines, as written."""

    text: str
    first_line: int  # 0-based line of the file where the chunk starts
    separator: str  # the ``---`` line before it, "" for the first chunk

    def has_content(self) -> bool:
        return any(ln.strip() and not ln.lstrip().startswith("#") for ln in self.text.splitlines())


@dataclass
class Document:
    loc: Location
    data: Any  # the parsed YAML; None when the document could not be read
    kind: Optional[str] = None  # set when data is None but the kind is known (a kind without a model)
    recovered: bool = False
    notes: list[str] = field(default_factory=list)


def split_chunks(text: str) -> list[Chunk]:
    chunks: list[Chunk] = []
    lines = text.splitlines(keepends=True)
    start, sep, body = 0, "", []
    for n, line in enumerate(lines):
        m = _SEPARATOR.match(line.rstrip("\r\n"))
        if m:
            chunks.append(Chunk("".join(body), start, sep))
            # content after `--- ` on the same line is part of the next document
            rest = (m.group(2) or "").strip()
            body, start, sep = ([rest + "\n"] if rest and not rest.startswith("#") else []), n + 1, line
            if body:
                start = n
            continue
        body.append(line)
    chunks.append(Chunk("".join(body), start, sep))
    return chunks


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _allowed_alias_ratio(decoded: int) -> float:
    """go-yaml's rule (kube-apiserver's YAML decoder): up to 99% of a small document may come from
    alias expansion, down to 10% for one of 4 million nodes and more."""
    low, high = 400_000, 4_000_000
    if decoded <= low:
        return 0.99
    if decoded >= high:
        return 0.10
    return 0.99 - 0.89 * (decoded - low) / (high - low)


def check_aliases(root: yaml.Node) -> int:
    """Refuse a document whose aliases expand it out of proportion (a "billion laughs" bomb) or that
    contains itself, in time linear in its nodes. Returns how many nodes alias expansion adds."""
    sizes: dict[int, int] = {}  # id(node) -> nodes in its expansion (itself included)
    path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        nid = id(node)
        if finished:
            path.discard(nid)
            sizes[nid] = 1 + sum(sizes[id(c)] for c in _children(node))
            continue
        if nid in sizes:
            continue
        path.add(nid)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in path:
                raise YamlLimitError(f"an anchor's value contains itself (line {child.start_mark.line + 1})")
            if id(child) not in sizes:
                stack.append((child, False))
    decoded = sizes[id(root)]
    aliased = decoded - len(sizes)
    if aliased > 100 and decoded > 1000 and aliased / decoded > _allowed_alias_ratio(decoded):
        raise YamlLimitError(f"the document contains excessive aliasing: its aliases expand {len(sizes)} "
                             f"nodes to {decoded} (refused, as the Kubernetes API server refuses it)")
    return aliased


def _duplicate_keys(root: yaml.Node) -> list[tuple[str, int]]:
    """Keys written twice in one mapping. Each node is looked at once, however often aliases repeat it."""
    found = []
    seen_nodes: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys = set()
            for k, _ in node.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.value in keys:
                        found.append((k.value, k.start_mark.line))
                    keys.add(k.value)
        stack.extend(reversed(_children(node)))
    return sorted(found, key=lambda kl: kl[1])


def _too_large(data: Any, text_bytes: int, aliased: int) -> Optional[str]:
    """The object's size as the API server would store it (JSON), when it may be over the limit."""
    if text_bytes < _MEASURE_ABOVE and not aliased:
        return None
    import json

    try:
        size = len(json.dumps(data, default=str, separators=(",", ":")))
    except (TypeError, ValueError, RecursionError):
        return None
    if size > MAX_OBJECT_BYTES:
        return (f"the object is {_mib(size)}: more than the {_mib(MAX_OBJECT_BYTES)} the Kubernetes API server "
                "stores for one object (request is too large)")
    return None


def safe_load_limited(text: str, loader_class: type[yaml.SafeLoader] = yaml.SafeLoader) -> Any:
    """yaml.safe_load with the API server's limits: no alias bombs, no self-containing anchors, no
    request over 3 MiB. ``loader_class`` is a SafeLoader or a subclass of it (netemu.api.patch keeps
    timestamps as strings). Raises yaml.YAMLError (YamlLimitError for a limit)."""
    if len(text) > MAX_REQUEST_BYTES:
        raise YamlLimitError(f"the document is {_mib(len(text.encode()))}: more than the "
                             f"{_mib(MAX_REQUEST_BYTES)} the Kubernetes API server accepts in one request")
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_aliases(node)
        return loader.construct_document(node)
    except RecursionError:
        raise YamlLimitError("the document is nested too deeply") from None
    finally:
        loader.dispose()


def _parse(text: str) -> list[tuple[Any, list[tuple[str, int]], int]]:
    """Every YAML document in ``text``, with the keys written twice in one mapping (YAML silently keeps
    the last one) as (key, 0-based line), and the nodes its aliases add."""
    loader = yaml.SafeLoader(text)
    out = []
    try:
        while loader.check_node():
            node = loader.get_node()
            aliased = check_aliases(node)
            out.append((loader.construct_document(node), _duplicate_keys(node), aliased))
    except RecursionError:
        raise YamlLimitError("the document is nested too deeply") from None
    finally:
        loader.dispose()
    return out


def _syntax_error(e: yaml.YAMLError, loc: Location, line_offset: int) -> tuple[Location, str]:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    if isinstance(e, YamlLimitError):
        return loc, str(e)
    text = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    if mark is not None:
        loc = Location(loc.file, loc.document, line=mark.line + line_offset + 1)
    return loc, text


def read_documents(text: str, filename: str, report: Report, kinds: dict[str, type[BaseModel]]) -> list[Document]:
    docs: list[Document] = []
    for chunk in split_chunks(text):
        if not chunk.has_content():
            continue
        size = len(chunk.text.encode(errors="replace"))
        if size > MAX_REQUEST_BYTES:  # not even read: parsing it would take long and prove nothing
            loc = Location(filename, len(docs) + 1)
            report.error(Location(filename, loc.document, line=chunk.first_line + 1), "",
                         f"the document is {_mib(size)}: more than the {_mib(MAX_REQUEST_BYTES)} the Kubernetes "
                         f"API server accepts in one request (and an object may have at most "
                         f"{_mib(MAX_OBJECT_BYTES)}); not read")
            docs.append(Document(loc, None))
            continue
        recovered = recover(chunk.text, kinds)
        if recovered is not None:
            for rd in recovered:
                loc = Location(filename, len(docs) + 1)
                if not rd.recovered:
                    if rd.kind is None:
                        report.error(loc, "kind", "required field is missing (and without it netemu cannot "
                                                  "rebuild this manifest, which lost its indentation)")
                    docs.append(Document(loc, None, kind=rd.kind, notes=rd.notes))
                    continue
                try:
                    data = safe_load_limited(rd.text)
                except YamlLimitError as e:
                    report.error(Location(filename, loc.document, line=chunk.first_line + 1), "", str(e))
                    continue
                except yaml.YAMLError as e:  # a gap in the re-indenter: say so, with the original line
                    report.error(Location(filename, loc.document, line=chunk.first_line + 1), "",
                                 f"this manifest lost its indentation and netemu could not rebuild it ({e})")
                    continue
                docs.append(Document(loc, data, recovered=True, notes=rd.notes))
            continue
        try:
            parsed = _parse(chunk.text)
        except yaml.YAMLError as e:
            where, text = _syntax_error(e, Location(filename, len(docs) + 1), chunk.first_line)
            report.error(where, "", text)
            docs.append(Document(Location(filename, len(docs) + 1), None))
            continue
        for data, dupes, aliased in parsed:
            if data is None:
                continue
            loc = Location(filename, len(docs) + 1)
            if (why := _too_large(data, size, aliased)) is not None:
                report.error(Location(filename, loc.document, line=chunk.first_line + 1), "", why)
                docs.append(Document(loc, None))
                continue
            for key, line in dupes:
                report.warn(Location(filename, loc.document, line=chunk.first_line + line + 1), "",
                            f'key "{key}" appears twice in one mapping; the last one wins')
            docs.append(Document(loc, data))
    return docs


def rendered_chunks(text: str, kinds: dict[str, type[BaseModel]]) -> str:
    """The file with every flattened document re-indented and everything else as written."""
    out = []
    for chunk in split_chunks(text):
        recovered = recover(chunk.text, kinds) if chunk.has_content() else None
        if recovered is None:
            out.append(chunk.separator + chunk.text)
            continue
        parts = []
        for rd in recovered:
            notes = ["re-indented: this manifest had lost its indentation"] if rd.recovered else []
            parts.append(_with_notes(rd.text, notes + rd.notes))
        out.append(chunk.separator + "---\n".join(parts))
    return "".join(out)


def _with_notes(text: str, notes: list[str]) -> str:
    """``# netemu: ...`` lines just before the document's first key (after its leading comments)."""
    lines = text.splitlines(keepends=True)
    at = next((n for n, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")), len(lines))
    return "".join(lines[:at] + [f"# netemu: {n}\n" for n in notes] + lines[at:])
