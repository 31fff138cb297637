"""From parsed YAML to typed objects: kind and apiVersion checks, pydantic's validation with its
errors told in the lab file's terms (camelCase field paths), and unknown fields as warnings."""
from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass
from typing import Any, Optional

from pydantic import BaseModel, ValidationError

from netemu.spec.errors import Location, PathPart, Report, field_path
from netemu.spec.ingress import prepare_ingress
from netemu.spec.models import API_VERSIONS, KINDS, K8sModel, Lab
from netemu.spec.schema import Shape, child, fields_of, key_of_field, required_of

MODELS: dict[str, type[K8sModel]] = {**KINDS, "Lab": Lab}

# kind -> fix-ups of a raw document before its apiVersion is checked (placeholders, old shapes),
# each returning (field path, warning)
PREPARE = {"Ingress": prepare_ingress}


@dataclass
class Converted:
    obj: K8sModel
    loc: Location  # names the object: file, document, Kind/name
    # fields dropped because they were malformed (already reported): the object is only good for
    # finding further errors, never for building
    muted: tuple[str, ...] = ()


def show(value: Any) -> str:
    """A value as the user would recognise it in a message."""
    if value is None:
        return "nothing (an empty value)"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def supported_kinds() -> str:
    return ", ".join(sorted(KINDS))


# --------------------------------------------------------------------------- pydantic errors
_NOUNS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "a whole number",
    "string_type": "a string", "bool_type": "true or false", "bool_parsing": "true or false",
    "float_type": "a number", "float_parsing": "a number", "list_type": "a list",
    "dict_type": "a mapping (key: value)", "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
}


def _path_of(model: type[BaseModel], loc: tuple) -> str:
    """pydantic's error location -> the field path as written in YAML (aliases, union tags dropped)."""
    shape: Optional[Shape] = Shape("model", model=model)
    parts: list[PathPart] = []
    for el in loc:
        if shape is not None and shape.kind == "scalar" and shape.union:
            continue  # 'int' / 'str': which member of IntOrString pydantic tried
        alias = key_of_field(shape.model, el) if shape is not None and shape.kind == "model" else None
        parts.append(alias or el)
        shape = child(shape, el) if shape is not None else None
    return field_path(parts)


def _message(err: dict) -> str:
    kind, value = err["type"], err.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"must be one of {err.get('ctx', {}).get('expected', '?')}, got {show(value)}"
    if kind in _NOUNS:
        text = f"must be {_NOUNS[kind]}, got {show(value)}"
        if kind == "string_type" and isinstance(value, (int, float, bool)):
            text += f' (quote it: "{json.dumps(value)}")'
        return text
    return err["msg"][0].lower() + err["msg"][1:]


def report_validation_error(model: type[BaseModel], e: ValidationError, loc: Location, report: Report) -> None:
    """One message per field: IntOrString's two failed members become 'an integer or a string'."""
    by_path: dict[str, list[dict]] = {}
    for err in e.errors():
        by_path.setdefault(_path_of(model, err["loc"]), []).append(err)
    for path, errs in by_path.items():
        nouns = [_NOUNS[x["type"]] for x in errs if x["type"] in _NOUNS]
        if len(errs) > 1 and len(nouns) == len(errs):
            report.error(loc, path, f"must be {' or '.join(dict.fromkeys(nouns))}, got {show(errs[0].get('input'))}")
        else:
            for err in errs:
                report.error(loc, path, _message(err))


# --------------------------------------------------------------------------- unknown fields
def unknown_fields(obj: BaseModel, path: tuple = ()) -> list[tuple[str, Optional[str]]]:
    """(field path, closest known field) for every field the models do not know, at any depth."""
    out = []
    known = list(fields_of(type(obj)))
    for key in obj.model_extra or {}:
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        out.append((field_path((*path, str(key))), close[0] if close else None))
    for name, f in type(obj).model_fields.items():
        out += _unknown_in(getattr(obj, name), (*path, f.alias or name))
    return out


def _unknown_in(value: Any, path: tuple) -> list[tuple[str, Optional[str]]]:
    if isinstance(value, BaseModel):
        return unknown_fields(value, path)
    if isinstance(value, list):
        return [u for i, v in enumerate(value) for u in _unknown_in(v, (*path, i))]
    if isinstance(value, dict):
        return [u for k, v in value.items() for u in _unknown_in(v, (*path, str(k)))]
    return []


# --------------------------------------------------------------------------- documents -> objects
def _name_of(data: dict) -> Optional[str]:
    meta = data.get("metadata")
    return meta.get("name") if isinstance(meta, dict) and isinstance(meta.get("name"), str) else None


def convert(data: Any, loc: Location, report: Report) -> list[Converted]:
    """Typed objects of one document (a ``kind: List`` gives its items); problems go to ``report``."""
    if not isinstance(data, dict):
        report.error(loc, "", f"a document must be a mapping with apiVersion, kind and metadata, got {show(data)}")
        return []
    if data.get("kind") == "List" and data.get("apiVersion", "v1") == "v1":
        items = data.get("items")
        if not isinstance(items, list):
            report.error(loc, "items", f"must be a list of objects, got {show(items)}")
            return []
        out = []
        for i, item in enumerate(items):
            out += convert(item, Location(loc.file, loc.document, prefix=f"items[{i}]"), report)
        return out
    kind = data.get("kind")
    loc = loc.for_object(kind if isinstance(kind, str) else None, _name_of(data))
    if kind is None:
        report.error(loc, "kind", f"required field is missing (netemu knows {supported_kinds()}, and Lab)")
        return []
    if isinstance(kind, str) and kind not in MODELS:
        return _stored(data, kind, loc, report)
    if not isinstance(kind, str):
        report.error(loc, "kind", f"unknown kind {show(kind)}: netemu supports {supported_kinds()} (and Lab)")
        return []
    if kind in PREPARE:
        for path, note in PREPARE[kind](data):
            report.warn(loc, path, note)
    api_version = data.get("apiVersion")
    expected = API_VERSIONS[kind]
    if api_version is None:
        report.error(loc, "apiVersion", f"required field is missing ({kind} is {' or '.join(expected)})")
        return []
    if api_version not in expected:
        report.error(loc, "apiVersion", f"{kind} is not served at {show(api_version)}: use {' or '.join(expected)}")
        return []
    model = MODELS[kind]
    muted: tuple[str, ...] = ()
    try:
        obj = model.model_validate(data)
    except ValidationError as e:
        report_validation_error(model, e, loc, report)
        salvaged = _salvage(model, data, e)
        if salvaged is None:
            return []
        obj, muted = salvaged
    from netemu.spec.fields import unknown_fields as unknown_to_kubernetes

    # the models hold what the lab acts on: a field they lack but Kubernetes knows is kept and served
    # as written; only what Kubernetes does not know either (a typo) is worth a warning
    real = unknown_to_kubernetes(data)
    for path, close in unknown_fields(obj):
        if real is not None and path not in real:
            continue
        hint = f" (did you mean {close}?)" if close else ""
        report.warn(loc, path, f"unknown field, ignored{hint}")
    return [Converted(obj, loc, muted)]


def _stored(data: dict, kind: str, loc: Location, report: Report) -> list[Converted]:
    """A kind the lab keeps and serves but does not act on (see netemu.spec.registry): stored as written,
    with a warning, so that an upstream installer manifest applies whole."""
    from netemu.spec import registry
    from netemu.spec.models import StoredObject

    api_version = data.get("apiVersion")
    res = registry.by_api_version(api_version, kind) if isinstance(api_version, str) else None
    if res is None:
        known = registry.by_kind(kind)
        if known is not None and api_version is not None:
            report.error(loc, "apiVersion", f"{kind} is not served at {show(api_version)}: use "
                         f"{' or '.join(known.api_versions())}")
        else:
            report.error(loc, "kind", f"unknown kind {show(kind)} at {show(api_version)}: netemu acts on "
                         f"{supported_kinds()} (and Lab) and stores the other Kubernetes kinds, and the kinds "
                         "of CustomResourceDefinitions defined before")
        return []
    meta = data.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        report.error(loc, "metadata", f"must be a mapping (key: value), got {show(meta)}")
        return []
    try:
        obj = StoredObject.model_validate(data)
    except ValidationError as e:
        report_validation_error(StoredObject, e, loc, report)
        return []
    if kind == "CustomResourceDefinition":
        if registry.register_crd(data) is None:
            report.error(loc, "spec", "a CustomResourceDefinition needs spec.group, spec.names.kind, "
                         "spec.names.plural and a served version")
            return []
    elif not res.acted:
        report.warn(loc, "", f"{kind} is stored and served, but the lab does not act on it"
                    + (f" ({res.note})" if res.note else ""))
    return [Converted(obj, loc)]


def _culprit(model: type[K8sModel], data: dict, loc: tuple) -> Optional[tuple[dict, str]]:
    """The mapping and key holding the bad value at pydantic's ``loc``, if the key may be dropped
    (a field that is not required, or a key of a free-form map)."""
    shape: Optional[Shape] = Shape("model", model=model)
    parent_shape, parent, key, node = None, None, None, data
    for el in loc:
        present = (el in node) if isinstance(node, dict) else (
            isinstance(node, list) and isinstance(el, int) and el < len(node))
        if not present:
            break  # a union member's tag ('int', 'str'): the value at `key` is the culprit
        parent_shape, parent, key, node = shape, node, el, node[el]
        shape = child(shape, el) if shape is not None else None
    if not isinstance(parent, dict) or parent_shape is None:
        return None
    if parent_shape.kind == "map" or (parent_shape.kind == "model" and key not in required_of(parent_shape.model)):
        return parent, key
    return None


def _salvage(model: type[K8sModel], data: dict, e: ValidationError) -> Optional[tuple[K8sModel, tuple[str, ...]]]:
    """The object without its malformed optional fields, so that the semantic checks can still report
    everything else at once; None when a required field is missing or malformed."""
    data = copy.deepcopy(data)
    muted: list[str] = []
    for err in e.errors():
        path = _path_of(model, err["loc"])
        if path in muted:  # IntOrString: one error per member
            continue
        culprit = _culprit(model, data, err["loc"]) if err["type"] != "missing" else None
        if culprit is None:
            return None
        parent, key = culprit
        del parent[key]
        muted.append(path)
    try:
        return model.model_validate(data), tuple(muted)
    except ValidationError:
        return None
