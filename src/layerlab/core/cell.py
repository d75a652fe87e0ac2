"""A cell, typed: its parameters parsed once into sections (layerlab.core.sections: data, model, loss, optimizer, run,
regime; and each registered plug-in's own section), and rendered back to the one dict whose canonical JSON names the
cell in every job's params, store and checkpoint.

The sections are the single source of the cell keys: the cell schema (`cell_schema`) is generated from them, with the
registries' names as the enums of `dataset`, `model`, `training` and `layer_head`. A key belongs to exactly one section;
a plug-in whose section repeats a key is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any

from layerlab.core.config import ConfigError, canonical_json
from layerlab.core.params import S, Section, as_dict, keys, parse, properties
from layerlab.core.registry import DATASETS, DECISION_HEADS, MODELS, REGIMES, Registry, plugin_sections
from layerlab.core.sections import (
    CORE,
    DataParams,
    LossParams,
    ModelParams,
    OptimizerParams,
    RegimeParams,
    RunParams,
)

# cell keys that name a plug-in: their schema's enum is the registry's names
NAMED: dict[str, Registry] = {"dataset": DATASETS, "model": MODELS, "training": REGIMES, "layer_head": DECISION_HEADS}


def sections() -> tuple[type[Section], ...]:
    """The cell's own sections, then every registered plug-in's (in registration order). Raises ConfigError for a key
    that two sections declare."""
    found = (*CORE, *plugin_sections())
    owners(found)
    return found


def owners(found: tuple[type[Section], ...]) -> dict[str, type[Section]]:
    """Cell key -> the section of `found` that declares it (computed once per tuple of sections); ConfigError for a
    key declared twice."""
    if found not in _OWNERS:
        owner: dict[str, type[Section]] = {}
        for section in found:
            for key in keys(section):
                if key in owner:
                    raise ConfigError(f"cell parameter '{key}' of {section.__name__} already exists (in "
                                      f"{owner[key].__name__}): a plug-in's parameters need names of their own")
                owner[key] = section
        _OWNERS[found] = owner
    return _OWNERS[found]


_OWNERS: dict[tuple[type, ...], dict[str, type[Section]]] = {}


def pick(kind: type[S], found: Mapping[type, Section]) -> S:
    """The section of class `kind` among `found` (class -> section)."""
    section = found[kind]
    assert isinstance(section, kind)
    return section


def cell_properties() -> dict[str, dict[str, Any]]:
    """Cell key -> JSON schema (type, constraints, default, description), from every section."""
    props = {key: dict(schema) for section in sections() for key, schema in properties(section).items()}
    for key, registry in NAMED.items():
        props[key] = {"enum": registry.names(), **{k: v for k, v in props[key].items() if k != "type"}}
    return props


def cell_schema() -> dict[str, Any]:
    """The JSON schema of one cell's parameters (any subset of them: every key has a default)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "description": "parameters of one ablation cell; every key has a default, unknown keys are errors",
            "type": "object", "additionalProperties": False, "properties": cell_properties()}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One ablation cell's parameters. `cell.optimizer.lr`; a plug-in's section by its class: `cell[CurvatureParams]`.
    `Cell.parse(values)` fills the keys `values` lacks with their defaults; `to_dict()` gives every key back."""

    data: DataParams
    model: ModelParams
    loss: LossParams
    optimizer: OptimizerParams
    run: RunParams
    regime: RegimeParams
    plugins: tuple[Section, ...] = ()  # every registered plug-in's section, in registration order

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> Cell:
        """The typed cell of `values` (cell key -> value, as validated by the cell schema)."""
        kinds = (*CORE, *plugin_sections())
        if unknown := sorted(set(values) - set(owners(kinds))):
            raise ConfigError(f"unknown cell parameter(s) {unknown}")
        return cls.of(parse(section, values) for section in kinds)

    @classmethod
    def of(cls, sections: Iterable[Section]) -> Cell:
        """The cell of `sections`: one of each of the cell's own, and the plug-ins' (a later one of a class replaces
        an earlier one)."""
        found: dict[type, Section] = {type(section): section for section in sections}
        return cls(pick(DataParams, found), pick(ModelParams, found), pick(LossParams, found),
                   pick(OptimizerParams, found), pick(RunParams, found), pick(RegimeParams, found),
                   plugins=tuple(section for kind, section in found.items() if kind not in CORE))

    @property
    def sections(self) -> tuple[Section, ...]:
        return self.data, self.model, self.loss, self.optimizer, self.run, self.regime, *self.plugins

    def __getitem__(self, kind: type[S]) -> S:
        """The section of class `kind` (a plug-in's, or one of the cell's own); a plug-in section the cell lacks (the
        plug-in was loaded after the cell was parsed) has its defaults."""
        if not isinstance(kind, type):
            raise TypeError(f"a cell is read by section, cell[CurvatureParams] or cell.optimizer.lr, not by key "
                            f"{kind!r}")
        for section in self.sections:
            if type(section) is kind:
                return section
        return kind()

    def replace(self, section: Section) -> Cell:
        """The cell with `section` in place of its section of the same class."""
        return Cell.of((*self.sections, section))

    def to_dict(self) -> dict[str, Any]:
        """Every cell key and its value, as the cell's JSON has them."""
        return {key: value for section in self.sections for key, value in as_dict(section).items()}

    @cached_property
    def json(self) -> str:
        """The canonical JSON of `to_dict()`: the cell's identity in params, stores and checkpoints."""
        return canonical_json(self.to_dict())


def cell_defaults() -> dict[str, Any]:
    """Every cell key and its default."""
    return Cell.parse({}).to_dict()


def per_model_keys() -> frozenset[str]:
    """Cell keys each model of a fused pack may have its own value of (`per_model=True`, plug-ins' included)."""
    return frozenset(key for section in sections() for key, schema in properties(section).items()
                     if schema.get("per_model"))
