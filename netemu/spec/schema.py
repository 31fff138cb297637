"""The shape of a pydantic model's fields, as YAML sees them: nested object, list, free-form map or
scalar. Both the flattened-manifest recovery and the error messages walk models through this, so a
model added to :mod:`netemu.spec.models` is understood everywhere without further code."""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel


@dataclass(frozen=True)
class Shape:
    kind: Literal["model", "list", "map", "scalar", "any"]
    model: Optional[type[BaseModel]] = None
    item: Optional["Shape"] = None  # element of a list, value of a map
    choices: Optional[tuple] = None  # the allowed values of a Literal scalar
    union: bool = False  # pydantic names the union member in error locations


ANY = Shape("any")


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def shape_of(tp: Any) -> Shape:
    """The shape of a type annotation (Optional[...] is looked through)."""
    if _is_union(tp):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return shape_of(members[0])
        shapes = [shape_of(m) for m in members]
        if all(s.kind == "scalar" for s in shapes):
            return Shape("scalar", union=True)
        return Shape("any", union=True)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return Shape("scalar", choices=typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return Shape("list", item=shape_of(item))
    if origin is dict:
        args = typing.get_args(tp)
        return Shape("map", item=shape_of(args[1]) if len(args) == 2 else ANY)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return Shape("model", model=tp)
    if tp in (str, int, float, bool):
        return Shape("scalar")
    return ANY


@lru_cache(maxsize=None)
def fields_of(model: type[BaseModel]) -> dict[str, Shape]:
    """YAML key (the field's alias) -> shape, for a model class."""
    return {(f.alias or name): shape_of(f.annotation) for name, f in model.model_fields.items()}


@lru_cache(maxsize=None)
def required_of(model: type[BaseModel]) -> frozenset[str]:
    return frozenset((f.alias or name) for name, f in model.model_fields.items() if f.is_required())


@lru_cache(maxsize=None)
def key_of_field(model: type[BaseModel], name_or_alias: str) -> Optional[str]:
    """The YAML key for a Python field name or alias, or None when the model has no such field."""
    for name, f in model.model_fields.items():
        if name_or_alias in (name, f.alias):
            return f.alias or name
    return None


def child(shape: Shape, key: Union[str, int]) -> Optional[Shape]:
    """The shape one step below ``shape`` (a field, a list index, a map key); None when unknown."""
    if shape.kind == "model" and isinstance(key, str):
        alias = key_of_field(shape.model, key)
        return fields_of(shape.model)[alias] if alias else None
    if shape.kind == "list" and isinstance(key, int):
        return shape.item
    if shape.kind == "map":
        return shape.item
    if shape.kind == "any":
        return ANY
    return None
