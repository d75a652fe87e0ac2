"""`python -m layerlab.params [--plugins FILE_OR_MODULE ...]`: every cell parameter, section by section (the cell's
own sections, then each plug-in's), with its type, default and meaning: the reference a study is written against."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from layerlab.core.cell import cell_properties, sections
from layerlab.core.config import ConfigError
from layerlab.core.params import keys
from layerlab.core.registry import DECISION_HEADS, MEASUREMENTS, MODELS, PROBES, REGIMES, load_plugins


def kind(schema: dict[str, Any]) -> str:
    """A parameter's type as a study writes it: its choices, or its JSON type(s)."""
    if "enum" in schema:
        return " / ".join(map(str, schema["enum"]))
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return " or ".join(f"list of {kind(schema['items'])}" if k == "array" else k for k in kinds)


def declared_by() -> dict[type, list[str]]:
    """Section -> the plug-ins that declare it ("training probe curvature", ...)."""
    found: dict[type, list[str]] = {}
    for registry in (PROBES, MEASUREMENTS, MODELS, REGIMES, DECISION_HEADS):
        for spec in registry.values():
            if spec.parameters is not None:
                found.setdefault(spec.parameters, []).append(f"{registry.kind} {spec.name}")
    return found


def reference() -> str:
    """Markdown: one table per section, titled with the plug-ins that declare it."""
    props, owners, parts = cell_properties(), declared_by(), []
    for section in sections():
        rows = [f"| `{key}` | {kind(props[key])} | `{json.dumps(props[key]['default'])}` | "
                f"{props[key].get('description', '')}{' (per model)' if props[key].get('per_model') else ''} |"
                for key in keys(section)]
        doc = (section.__doc__ or "").split("\n\n")[0].replace("\n    ", " ")
        title = f"{section.__name__} ({', '.join(owners[section])})" if section in owners else section.__name__
        parts.append(f"## {title}\n{doc}\n\n| key | type | default | meaning |\n|---|---|---|---|\n"
                     + "\n".join(rows))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layerlab.params", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plugins", nargs="*", default=[], help="a study's plug-ins (files or modules): theirs too")
    args = parser.parse_args(argv)
    try:
        load_plugins(args.plugins)
    except ConfigError as err:
        print(f"layerlab config error: {err}", file=sys.stderr)
        return 2
    print(reference())
    return 0
