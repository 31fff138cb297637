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


def _duplicate_keys(node: yaml.Node) -> list[tuple[str, int]]:
    found = []
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                if k.value in seen:
                    found.append((k.value, k.start_mark.line))
                seen.add(k.value)
            found += _duplicate_keys(v)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            found += _duplicate_keys(v)
    return found


def _parse(text: str) -> list[tuple[Any, list[tuple[str, int]]]]:
    """Every YAML document in ``text``, with the keys written twice in one mapping (YAML silently keeps
    the last one) as (key, 0-based line)."""
    loader = yaml.SafeLoader(text)
    out = []
    try:
        while loader.check_node():
            node = loader.get_node()
            out.append((loader.construct_document(node), _duplicate_keys(node)))
    finally:
        loader.dispose()
    return out


def _syntax_error(e: yaml.YAMLError, loc: Location, line_offset: int) -> tuple[Location, str]:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    text = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    if mark is not None:
        loc = Location(loc.file, loc.document, line=mark.line + line_offset + 1)
    return loc, text


def read_documents(text: str, filename: str, report: Report, kinds: dict[str, type[BaseModel]]) -> list[Document]:
    docs: list[Document] = []
    for chunk in split_chunks(text):
        if not chunk.has_content():
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
                    data = yaml.safe_load(rd.text)
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
        for data, dupes in parsed:
            if data is None:
                continue
            loc = Location(filename, len(docs) + 1)
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
