"""The spec layer's public API: lab files in, typed and validated objects out.

    spec = load_files(["lab.yaml"])          # raises SpecError listing every problem
    spec.lab, spec.objects, spec.warnings

Steps: split into documents and re-indent flattened ones (documents), check kind/apiVersion and
build the models (convert), fill the API defaults (defaults), validate (validate). Nothing is
returned when anything is wrong, so nothing is built from a half-valid file.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from netemu.spec.convert import MODELS, Converted, convert
from netemu.spec.defaults import apply_defaults, default_lab
from netemu.spec.documents import read_documents, rendered_chunks
from netemu.spec.errors import Location, Report
from netemu.spec.models import NAMESPACED, K8sModel, Lab
from netemu.spec.validate import check_lab_name, validate_lab, validate_objects

STDIN = "-"


@dataclass
class LoadedSpec:
    lab: Lab  # defaults filled (nodes, name)
    objects: list[K8sModel]  # in file order, defaults applied, Lab excluded
    warnings: list[str] = field(default_factory=list)
    sources: dict[int, str] = field(default_factory=dict)  # id(obj) -> "file: document N"


def _read(path: str, report: Report) -> tuple[str, str]:
    """(display name, text); '-' is stdin."""
    if path == STDIN:
        return "<stdin>", sys.stdin.read()
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: a BOM from a Windows editor is no content
            return path, f.read()
    except (OSError, UnicodeDecodeError) as e:
        report.fail(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}")
        return path, ""


def _convert_text(text: str, filename: str, report: Report) -> list[Converted]:
    out: list[Converted] = []
    errors_before = len(report.errors)
    docs = read_documents(text, filename, report, MODELS)
    unreadable = any(e.startswith(f"{filename}: cannot read") for e in report.errors)
    if not docs and len(report.errors) == errors_before and not unreadable:
        report.fail(f"{filename}: no objects: the file is empty (or holds only comments)")
    recovered = [str(d.loc.document) for d in docs if d.recovered]
    if recovered:  # one note per file: the manifests work as they are, fmt shows how they were read
        what = (f"document {recovered[0]} had lost its indentation; netemu re-indented it by its schema"
                if len(recovered) == 1 else f"documents {', '.join(recovered)} had lost their indentation; "
                                            "netemu re-indented them by their schema")
        report.warnings.append(f"{filename}: {what} (`netemu fmt {filename}` shows the result)")
    for doc in docs:
        for note in doc.notes:
            report.warn(doc.loc, "", note)
        if doc.data is None:
            if doc.kind is not None:  # a kind without a model: say so, as for any document
                convert({"kind": doc.kind}, doc.loc, report)
            continue
        out += convert(doc.data, doc.loc, report)
    return out


def _finish(items: list[Converted], lab: Lab, report: Report) -> tuple[list[K8sModel], dict[int, str]]:
    for c in items:
        if c.obj.kind == "Node":
            report.error(c.loc, "kind", "nodes come from the Lab document (spec.nodes), not from Node objects")
    for c in items:
        apply_defaults(c.obj)
    validate_objects(items, lab, report)
    report.raise_if_errors()
    return [c.obj for c in items], {id(c.obj): f"{c.loc.file}: document {c.loc.document}" for c in items}


def _split_lab(items: list[Converted], report: Report) -> tuple[list[Converted], list[Converted]]:
    labs = [c for c in items if isinstance(c.obj, Lab)]
    for extra in labs[1:]:
        report.error(extra.loc, "kind", f"a second Lab document (the first is in {labs[0].loc.where()})")
    return labs, [c for c in items if not isinstance(c.obj, Lab)]


def _load(sources: list[tuple[str, str]], report: Report, *, lab_name: str | None, require_lab: bool,
          stem: str) -> LoadedSpec:
    items: list[Converted] = []
    for filename, text in sources:
        items += _convert_text(text, filename, report)
    labs, objects = _split_lab(items, report)
    if require_lab and not labs and sources:
        report.fail(f"{sources[0][0]}: a Lab document (kind: Lab) is required here")
    lab = labs[0].obj if labs else Lab()
    if lab_name is not None and (why := check_lab_name(lab_name)) is not None:
        report.fail(f"lab name {lab_name!r}: {why}")
    else:
        default_lab(lab, file_stem=stem, name=lab_name)
        first_file = sources[0][0] if sources else "<lab>"
        lab_loc = labs[0].loc if labs else Location(first_file, ref=f"Lab/{lab.metadata.name}")
        validate_lab(lab, lab_loc, report.muting(labs[0].muted) if labs else report)
    objs, where = _finish(objects, lab, report)
    return LoadedSpec(lab, objs, report.warnings, where)


def _stem(path: str) -> str:
    return "lab" if path == STDIN else os.path.splitext(os.path.basename(path))[0]


def load_files(paths: list[str], *, lab_name: str | None = None, require_lab: bool = False,
               rendering: bool = False) -> LoadedSpec:
    """Load lab files (``-`` is stdin). Raises SpecError with every problem found.

    rendering: the objects are only rendered (`netemu render`, any cluster's objects): what the lab
    refuses but kube-proxy renders (Report.lab_refuses) is a warning."""
    report = Report(rendering=rendering)
    sources = [_read(p, report) for p in paths]
    if not paths:
        report.fail("no lab file given")
    return _load(sources, report, lab_name=lab_name, require_lab=require_lab,
                 stem=_stem(paths[0]) if paths else "lab")


def load_text(text: str, filename: str = "<stdin>", *, lab_name: str | None = None,
              require_lab: bool = False) -> LoadedSpec:
    """Like load_files, for text in hand (``filename`` names it in messages and gives the lab's name)."""
    return _load([(filename, text)], Report(), lab_name=lab_name, require_lab=require_lab,
                 stem=_stem(filename) if not filename.startswith("<") else "lab")


def load_objects(paths: list[str], lab: Lab, namespace: str | None = None) -> tuple[list[K8sModel], list[str]]:
    """Objects to apply to a running lab: no Lab document allowed; validated against that lab.

    namespace (kubectl's -n): where objects without a namespace go; an object that names another
    namespace is an error, as kubectl refuses it."""
    report = Report()
    items: list[Converted] = []
    for path in paths:
        filename, text = _read(path, report)
        items += _convert_text(text, filename, report)
    for c in items:
        if isinstance(c.obj, Lab):
            report.error(c.loc, "kind", "a Lab document only goes to `netemu up`; a running lab cannot change its Lab")
        elif namespace and c.obj.kind in NAMESPACED:
            have = c.obj.metadata.namespace
            if not have:
                c.obj.metadata.namespace = namespace
            elif have != namespace:
                report.error(c.loc, "metadata.namespace", f'the namespace from the provided object "{have}" does not '
                             f'match the namespace "{namespace}". You must pass \'--namespace={have}\' to perform '
                             "this operation.")
    objs, _ = _finish([c for c in items if not isinstance(c.obj, Lab)], lab, report)
    return objs, report.warnings


def recovered_yaml(path: str) -> str:
    """The file as netemu understands it, for ``netemu fmt``: flattened manifests re-indented,
    everything else exactly as written."""
    report = Report()
    _, text = _read(path, report)
    report.raise_if_errors()
    return rendered_chunks(text, MODELS)
