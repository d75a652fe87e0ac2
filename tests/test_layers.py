"""The package's layers: every import (module-level, function-local and type-checking ones) points to the same or a
lower layer, so a layer can be read, tested and replaced without the ones above it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# bottom to top; the top-level modules of layerlab are the commands (`python -m layerlab.<name>`)
LAYERS = ["core", "data", "catalog", "nets", "training", "measurements", "probes", "report", "workflow", "<commands>"]


def layer(module: str) -> int:
    parts = module.split(".")
    name = parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "<commands>"
    return LAYERS.index(name)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """A module or subpackage of layerlab (else a name the package root defines, e.g. `__version__`)."""
    return (SRC / "layerlab" / name).is_dir() or (SRC / "layerlab" / f"{name}.py").is_file()


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported layerlab module) of every import in the file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("layerlab"):
            found += [(node.lineno, f"layerlab.{a.name}" if node.module == "layerlab" and is_module(a.name)
                       else node.module) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("layerlab")]
    return found


def test_every_module_is_in_a_layer():
    for path in (SRC / "layerlab").rglob("*.py"):
        parts = path.relative_to(SRC / "layerlab").parts
        assert len(parts) == 1 or parts[0] in LAYERS, f"{path}: folder {parts[0]} is not a layer ({LAYERS})"


def test_imports_point_down():
    upward = [f"{module_name(path)}:{line} imports {target} ({LAYERS[layer(target)]} is above "
              f"{LAYERS[layer(module_name(path))]})"
              for path in sorted((SRC / "layerlab").rglob("*.py")) for line, target in imports(path)
              if target != "layerlab" and layer(target) > layer(module_name(path))]
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    """The test itself can fail: a function-local import of a higher layer is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from layerlab.report.plots import save_plot\n")
    assert [target for _, target in imports(bad)] == ["layerlab.report.plots"]
    assert layer("layerlab.report.plots") > layer("layerlab.training.loop")
