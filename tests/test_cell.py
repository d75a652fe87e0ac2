"""Typed cells (layerlab.core.cell): every cell key in exactly one section, a cell parsed and rendered back unchanged,
the cell schema generated from the sections, and the cells of every shipped study (ids, canonical JSON) as they were
before cells were typed (digests pinned in tests/cell_digests.json, computed with the untyped code)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections import Counter
from dataclasses import dataclass

import pytest
from conftest import ROOT, make_cell

from layerlab.catalog.decision_heads import DecisionBlockParams
from layerlab.catalog.probes import CurvatureParams
from layerlab.core.cell import Cell, cell_defaults, cell_properties, cell_schema, sections
from layerlab.core.config import ConfigError, canonical_json, expand_cells
from layerlab.core.params import Section, keys, param
from layerlab.core.registry import DECISION_HEADS, MEASUREMENTS, MODELS, PROBES, REGIMES, load_plugins
from layerlab.core.sections import CORE, OptimizerParams
from layerlab.workflow.study_file import study_config
from layerlab.workflow.validate import check_study

PINS = json.loads((ROOT / "tests/cell_digests.json").read_text())
STUDIES = sorted(PINS["cells"])


def digest(value) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


def builtin_keys() -> set[str]:
    """The keys of the cell's own sections and of the built-in plug-ins' (not of those a test loaded)."""
    registries = (PROBES, MEASUREMENTS, MODELS, REGIMES, DECISION_HEADS)
    plugins = {spec.parameters for registry in registries for spec in registry.values()
               if spec.parameters and not registry.origin(spec.name)}
    return {key for section in (*CORE, *plugins) for key in keys(section)}


def shipped(path: str) -> tuple[dict, dict[str, Cell]]:
    """A shipped study's validated config and its typed cells."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # a study with the old `probes:` key
        config = study_config([ROOT / path], {})
        return config, check_study(config, {}, (ROOT / path).parent)


def test_every_cell_key_belongs_to_exactly_one_section():
    load_plugins([str(ROOT / "tests/plugins/grad_norm.py")])  # a plug-in's section too
    declared = Counter(key for section in sections() for key in keys(section))
    assert set(declared) == set(cell_properties()) and set(declared.values()) == {1}
    assert "grad_norm_probe" in declared and len(sections()) == len(set(sections()))
    assert sections()[:len(CORE)] == CORE and len(declared) >= 92


def test_a_plugin_section_repeating_a_key_is_refused():
    @dataclass(frozen=True)
    class Clash(Section):
        lr: float = param(0.1)

    with pytest.raises(ConfigError, match=r"cell parameter 'lr' of Clash already exists \(in OptimizerParams\)"):
        PROBES.add(dataclasses.replace(PROBES["memory"], name="clash_test", parameters=Clash))
        try:
            sections()
        finally:
            PROBES._items.pop("clash_test")


@pytest.mark.parametrize("path", STUDIES)
def test_cell_ids_and_canonical_json_are_unchanged(path):
    """The ids and canonical JSON of every cell of a shipped study (what names its results and reruns it) equal those
    of the untyped cells."""
    _, cells = shipped(path)
    builtin = builtin_keys()
    rendered = {cid: canonical_json({k: v for k, v in cell.to_dict().items() if k in builtin})
                for cid, cell in cells.items()}
    assert digest(rendered) == PINS["cells"][path], (
        f"{path}: its cells' ids or parameters changed, so every finished result of the study would rerun; if that "
        f"is intended, recompute tests/cell_digests.json")


@pytest.mark.parametrize("path", STUDIES)
def test_parsing_then_rendering_gives_the_cell_back(path):
    """Each cell of a shipped study: the merge of its study's parts and the defaults (the untyped cell) parses into
    a cell whose dict, value types included, is that merge again."""
    config, cells = shipped(path)
    for cid, given in expand_cells(config).items():
        untyped = {**cell_defaults(), **given}
        assert cells[cid].to_dict() == untyped and cells[cid].json == canonical_json(untyped)
        assert [type(v) for v in cells[cid].to_dict().values()] == [type(untyped[k]) for k in cells[cid].to_dict()]
        assert Cell.parse(cells[cid].to_dict()) == cells[cid]


def test_the_generated_schema_checks_as_the_untyped_one():
    """Types, constraints, defaults and the per-model marks of every key (descriptions aside), as pinned."""
    checks = {k: {kk: vv for kk, vv in v.items() if kk != "description"} for k, v in cell_properties().items()}
    assert digest({k: v for k, v in checks.items() if k in builtin_keys()}) == PINS["schema"]
    assert cell_schema()["additionalProperties"] is False


def test_sections_are_typed_and_immutable():
    cell = make_cell(lr=0.5, widths=[8, 4], depth=2, decision_convs=2)
    assert cell.optimizer == OptimizerParams(lr=0.5) and cell[DecisionBlockParams].decision_convs == 2
    assert cell.to_dict()["widths"] == [8, 4] and isinstance(hash(cell), int)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cell.optimizer.lr = 1.0  # type: ignore[misc]
    faster = cell.replace(dataclasses.replace(cell.optimizer, lr=1.0))
    assert faster.optimizer.lr == 1.0 and cell.optimizer.lr == 0.5 and faster.model == cell.model
    assert cell.replace(CurvatureParams(curvature_every=5))[CurvatureParams].curvature_every == 5
    with pytest.raises(TypeError, match="a cell is read by section"):
        cell["lr"]  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"unknown cell parameter\(s\) \['lr_decay'\]"):
        Cell.parse({"lr_decay": 0.5})


def test_a_section_the_cell_lacks_has_its_defaults():
    """A plug-in loaded after a cell was parsed: the cell reads its section's defaults."""
    @dataclass(frozen=True)
    class Later(Section):
        later_key: int = param(3)

    assert make_cell()[Later] == Later(later_key=3)


def test_the_parameter_reference_lists_every_key_once(capsys):
    """`python -m layerlab.params`: one table per section, titled with the plug-ins that declare it, a study's
    plug-ins included."""
    from layerlab.workflow.parameters import main

    assert main(["--plugins", str(ROOT / "tests/plugins/grad_norm.py")]) == 0
    out = capsys.readouterr().out
    listed = [line.split("`")[1] for line in out.splitlines() if line.startswith("| `")]
    assert sorted(listed) == sorted(cell_properties()) and len(listed) == len(set(listed))
    assert "## CurvatureParams (training probe curvature)" in out
    assert "## GradNormParams (training probe grad_norm)" in out
    assert "| `lr` | number | `0.0001` |" in out and "| `loss` | ce / ce_lbe / mse" in out
