"""Where a problem is, and how it is reported.

Every message names the file, the document (1-based, counting non-empty documents) and the field,
so that a user can find it in a long lab file:

    lab.yaml: document 3 (Deployment/np-pods): spec.replicas: must be >= 0, got -1

Warnings have the same shape. Problems are collected in a :class:`Report` so that a user sees all of
them at once, then raised together as one :class:`SpecError`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Optional, Union

PathPart = Union[str, int]

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class SpecError(Exception):
    """The input is invalid. ``errors`` holds every problem found, each a complete message."""

    def __init__(self, errors: list[str], warnings: Optional[list[str]] = None):
        self.errors = list(errors)
        self.warnings = list(warnings or [])
        super().__init__(self.summary())

    def summary(self) -> str:
        if len(self.errors) == 1:
            return self.errors[0]
        return f"{len(self.errors)} problems:\n" + "\n".join(f"  {e}" for e in self.errors)


def field_path(parts: Iterable[PathPart]) -> str:
    """``("spec", "ports", 0, "port")`` -> ``spec.ports[0].port``; odd map keys are bracketed."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif _PLAIN_KEY.match(p):
            out += f".{p}" if out else p
        else:
            out += f'["{p}"]'
    return out


def join_path(*paths: str) -> str:
    """Join field paths, minding list indices: ``join_path("items[0]", "spec")`` -> ``items[0].spec``."""
    out = ""
    for p in paths:
        if not p:
            continue
        out = p if not out else (out + p if p.startswith("[") else f"{out}.{p}")
    return out


@dataclass(frozen=True)
class Location:
    """A document in a file, and optionally the object in it (``Deployment/np-pods``)."""

    file: str
    document: Optional[int] = None
    line: Optional[int] = None  # 1-based; only where a line is meaningful (YAML syntax errors)
    ref: Optional[str] = None
    prefix: str = ""  # field path of the object inside the document, e.g. items[2] of a List

    def for_object(self, kind: Optional[str], name: Optional[str]) -> "Location":
        return replace(self, ref=f"{kind or '?'}/{name or '?'}")

    def where(self) -> str:
        """``lab.yaml: document 3 (Deployment/np-pods)`` or ``lab.yaml: document 2, line 7``."""
        out = self.file
        if self.document is not None:
            out += f": document {self.document}"
        if self.line is not None:
            out += f", line {self.line}" if self.document is not None else f": line {self.line}"
        if self.ref:
            out += f" ({self.ref})"
        return out

    def message(self, path: str, text: str) -> str:
        full = join_path(self.prefix, path)
        return f"{self.where()}: {full}: {text}" if full else f"{self.where()}: {text}"


def _related(a: str, b: str) -> bool:
    """Is one field path the other, or inside it?"""
    short, long = sorted((a, b), key=len)
    return long == short or long.startswith(short + ".") or long.startswith(short + "[") or not short


@dataclass
class Report:
    """Collects errors and warnings; nothing stops at the first problem."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # fields already reported as malformed: checks of what contains them would only echo that
    muted: tuple[str, ...] = ()
    # (file, document) of each error, to list them in file order
    _where: list[tuple[str, int]] = field(default_factory=list)
    # (field path, text) of each error and warning: the API server answers with them as Status causes
    fields: list[tuple[str, str]] = field(default_factory=list)
    warn_fields: list[tuple[str, str]] = field(default_factory=list)
    # the objects are only rendered (netemu render: any cluster's objects, as its kube-proxy reads
    # them): what the lab refuses but kube-proxy renders is a warning (see lab_refuses)
    rendering: bool = False

    def muting(self, paths: tuple[str, ...]) -> "Report":
        """The same report, ignoring errors at (or around) ``paths``."""
        return Report(self.errors, self.warnings, tuple(paths), self._where, self.fields, self.warn_fields,
                      self.rendering)

    def error(self, loc: Location, path: str, text: str) -> None:
        if any(_related(path, m) for m in self.muted):
            return
        self.errors.append(loc.message(path, text))
        self._where.append((loc.file, loc.document or 0))
        self.fields.append((join_path(loc.prefix, path), text))

    def lab_refuses(self, loc: Location, path: str, text: str) -> None:
        """A value the lab refuses that a cluster's kube-proxy still renders (a ClusterIP outside the
        lab's serviceCIDR, a nodePort outside its range, an IP spelt the legacy way): an error, a
        warning when the objects are only rendered."""
        if self.rendering:
            self.warn(loc, path, f"{text} (rendered as written, as kube-proxy would)")
        else:
            self.error(loc, path, text)

    def fail(self, text: str) -> None:
        """An error about no document in particular (a file that cannot be read, a bad option)."""
        self.errors.append(text)
        self._where.append(("", 0))
        self.fields.append(("", text))

    def sorted_errors(self) -> list[str]:
        """Errors by file (in the order files were first named), then document; stable otherwise."""
        files: dict[str, int] = {}
        for f, _ in self._where:
            files.setdefault(f, len(files))
        order = sorted(range(len(self.errors)), key=lambda i: (files[self._where[i][0]], self._where[i][1]))
        return [self.errors[i] for i in order]

    def warn(self, loc: Location, path: str, text: str) -> None:
        self.warnings.append(loc.message(path, text))
        self.warn_fields.append((join_path(loc.prefix, path), text))

    def raise_if_errors(self) -> None:
        if self.errors:
            raise SpecError(self.sorted_errors(), self.warnings)
