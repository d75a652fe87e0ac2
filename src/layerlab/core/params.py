"""Typed parameter sections: the single source of every cell parameter's type, default, constraints and description.

A section is a frozen dataclass whose fields are cell keys: the annotation is the type (`bool`, `int`, `float`,
`str`, `Literal[...]` for a fixed choice, `X | None`, `tuple[X, ...]` for a list), `param(default, description,
**constraints)` gives the rest (JSON schema keywords: minimum, exclusiveMinimum, maximum, pattern, minItems, ...;
`items` adds keywords to a list's items; `per_model=True`: cells of a pack may differ in it). The cell schema that
checks a study before any job is generated from the sections (`properties`). Lists are tuples in a section (a cell
is immutable) and lists again in the cell's JSON (`render`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}


@dataclasses.dataclass(frozen=True)
class Section:
    """Base class of the parameter sections (frozen dataclasses of cell keys)."""


S = TypeVar("S", bound=Section)
_PROPERTIES: dict[type, dict[str, dict[str, Any]]] = {}  # section -> its keys' JSON schemas
_KEYS: dict[type, tuple[str, ...]] = {}  # section -> its keys


def param(default: Any, description: str = "", *, per_model: bool = False, items: Mapping[str, Any] | None = None,
          **constraints: Any) -> Any:
    """A section field: its default, description and JSON schema constraints (a list's default as a tuple)."""
    return dataclasses.field(default=default, metadata={
        "description": description, "per_model": per_model, "items": dict(items or {}), "constraints": constraints})


def type_schema(annotation: Any) -> dict[str, Any]:
    """The JSON schema of a field's annotation: its `type` (or `enum` for a Literal)."""
    if typing.get_origin(annotation) is Literal:
        return {"enum": list(typing.get_args(annotation))}
    if typing.get_origin(annotation) is tuple:
        return {"type": "array", "items": type_schema(typing.get_args(annotation)[0])}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [type_schema(arg)["type"] for arg in typing.get_args(annotation)]
        return {"type": kinds}
    if annotation in JSON_TYPES:
        return {"type": JSON_TYPES[annotation]}
    raise TypeError(f"parameter type {annotation!r} has no JSON schema (bool, int, float, str, Literal, X | None, "
                    f"tuple[X, ...])")


def field_schema(field: dataclasses.Field, annotation: Any) -> dict[str, Any]:
    """One cell key's JSON schema: type, constraints, default, description, per_model."""
    meta = field.metadata
    schema = type_schema(annotation)
    if meta.get("items"):
        schema["items"] = {**schema["items"], **meta["items"]}
    schema |= meta.get("constraints", {})
    schema["default"] = render(field.default)
    if meta.get("description"):
        schema["description"] = meta["description"]
    if meta.get("per_model"):
        schema["per_model"] = True
    return schema


def properties(section: type[Section]) -> dict[str, dict[str, Any]]:
    """Cell key -> JSON schema, for every field of `section` (computed once per section)."""
    if section not in _PROPERTIES:
        if not (dataclasses.is_dataclass(section) and issubclass(section, Section)):
            raise TypeError(f"{section!r} is not a parameter section (a frozen dataclass subclassing Section)")
        hints = typing.get_type_hints(section)
        missing = [f.name for f in dataclasses.fields(section) if f.default is dataclasses.MISSING]
        if missing:
            raise TypeError(f"section {section.__name__}: every parameter needs a default ({', '.join(missing)})")
        _PROPERTIES[section] = {f.name: field_schema(f, hints[f.name]) for f in dataclasses.fields(section)}
    return _PROPERTIES[section]


def render(value: Any) -> Any:
    """A parameter value as the cell's JSON has it (tuples as lists)."""
    return [render(v) for v in value] if isinstance(value, tuple) else value


def keys(section: type[Section]) -> tuple[str, ...]:
    """The cell keys of `section`, in declaration order."""
    if section not in _KEYS:
        _KEYS[section] = tuple(f.name for f in dataclasses.fields(section))
    return _KEYS[section]


def parse(section: type[S], values: Mapping[str, Any]) -> S:
    """`section` from the cell `values` (its keys missing there take their defaults; lists become tuples)."""
    return section(**{key: tuple(values[key]) if isinstance(values[key], list) else values[key]
                      for key in keys(section) if key in values})


def as_dict(section: Section) -> dict[str, Any]:
    """The section's keys and values as the cell's JSON has them."""
    return {key: render(getattr(section, key)) for key in keys(type(section))}
