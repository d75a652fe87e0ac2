"""A cell, typed: its parameters parsed once into sections (layerlab.core.sections: data, model, loss, optimizer, run,
regime; and each registered plug-in's own section), and rendered back to the one dict whose canonical JSON names the
cell in every job's params, store and checkpoint.

The sections are the single source of the cell keys: the cell schema (`cell_schema`) is generated from them, with the
registries' names as the enums of `dataset`, `model`, `training` and `layer_head`. A key belongs to exactly one section;
a plug-in whose section repeats a key is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import cached_property
from typing import Any

from layerlab.core.config import ConfigError, canonical_json
from layerlab.core.params import S, Section, as_dict, parse, properties
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


def sections() -> list[type[Section]]:
    """The cell's own sections, then every registered plug-in's (in registration order). Raises ConfigError for a key
    that two sections declare."""
    found = [*CORE, *plugin_sections()]
    owner: dict[str, type[Section]] = {}
    for section in found:
        for key in properties(section):
            if key in owner:
                raise ConfigError(f"cell parameter '{key}' of {section.__name__} already exists (in "
                                  f"{owner[key].__name__}): a plug-in's parameters need names of their own")
            owner[key] = section
    return found


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
        kinds = sections()
        known = {key for section in kinds for key in properties(section)}
        if unknown := sorted(set(values) - known):
            raise ConfigError(f"unknown cell parameter(s) {unknown}")
        return cls(parse(DataParams, values), parse(ModelParams, values), parse(LossParams, values),
                   parse(OptimizerParams, values), parse(RunParams, values), parse(RegimeParams, values),
                   plugins=tuple(parse(section, values) for section in kinds[len(CORE):]))

    @property
    def sections(self) -> tuple[Section, ...]:
        return self.data, self.model, self.loss, self.optimizer, self.run, self.regime, *self.plugins

    def __getitem__(self, kind: type[S]) -> S:
        """The section of class `kind` (a plug-in's, or one of the cell's own); a plug-in section the cell lacks (the
        plug-in was loaded after the cell was parsed) has its defaults."""
        for section in self.sections:
            if type(section) is kind:
                return section
        return kind()

    def replace(self, section: Section) -> Cell:
        """The cell with `section` in place of its section of the same class."""
        kind = type(section)
        for field in dataclasses.fields(self):
            if type(getattr(self, field.name)) is kind:
                return dataclasses.replace(self, **{field.name: section})
        return dataclasses.replace(self, plugins=tuple(section if type(s) is kind else s for s in self.plugins))

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
