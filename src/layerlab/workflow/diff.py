"""Which parameters of which cells changed since their results were written (why Snakemake reruns them).

    python -m layerlab.diff [--configfile STUDY.yaml] [--config KEY=VALUE ...] [-d WORKDIR]

Compares each cell's parameters as the workflow sees them now (schema defaults filled, `--config` overrides applied,
as `snakemake` with the same arguments) with the `config` its results/<study>/cells/<cell>/train.zarr recorded, and
prints `cell: key: old -> new` per changed key, the cells without a store (new) and stores of cells no longer in the
study. Exit status 0 whether or not anything changed; 2 for a bad config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from layerlab.core.config import STORE_FILE, ConfigError, canonical_json
from layerlab.workflow.validate import check_study

ROOT = Path(__file__).resolve().parents[2]
MISSING = "<absent>"


def recorded(store: Path) -> dict | None:
    """The cell config a train.zarr recorded (its `config` attribute, read from the store's root metadata as zarr v3
    writes it: no zarr import, a millisecond per store), or None without a store."""
    try:
        return json.loads(json.loads((store / STORE_FILE).read_text())["attributes"]["config"])
    except FileNotFoundError:
        return None


def changes(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(key, old, new) of every key whose canonical JSON differs (30 vs 30.0 too: Snakemake reruns on it)."""
    if canonical_json(old) == canonical_json(new):  # the common case at a hundredth of the cost
        return []
    return [(k, old.get(k, MISSING), new.get(k, MISSING)) for k in sorted(set(old) | set(new))
            if json.dumps(old.get(k, MISSING)) != json.dumps(new.get(k, MISSING))]


def study_diff(config: dict, workdir: Path, cli: dict | None = None) -> list[str]:
    """The report's lines for `config` (a study config as loaded, changed in place) run in `workdir`."""
    cells = check_study(config, cli)
    base = workdir / "results" / config["study"] / "cells"
    lines, changed, new = [], 0, 0
    for cid, cell in cells.items():
        old = recorded(base / cid / "train.zarr")
        if old is None:
            new += 1
            lines.append(f"{cid}: new (no train.zarr yet)")
        elif diff := changes(old, cell):
            changed += 1
            lines += [f"{cid}: {k}: {json.dumps(a)} -> {json.dumps(b)}" for k, a, b in diff]
    stored = {str(p.parent.relative_to(base)) for p in base.rglob("train.zarr")} if base.exists() else set()
    removed = sorted(stored - set(cells))
    lines += [f"{cid}: not in the study any more (its store stays)" for cid in removed]
    lines.append(f"{len(cells)} cells: {changed} changed, {new} without a store, "
                 f"{len(cells) - changed - new} unchanged; {len(removed)} stored cells not in the study")
    return lines


def study_arguments(parser: argparse.ArgumentParser) -> None:
    """The study as `snakemake` is given it: --configfile, --config overrides, -d working directory."""
    parser.add_argument("--configfile", type=Path, help="study config (default: config/config.yaml)")
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                        help="the same overrides as given to snakemake --config")
    parser.add_argument("-d", "--directory", type=Path, default=Path("."), help="working directory of the run")


def study_config(args: argparse.Namespace) -> tuple[dict, dict]:
    """(the study config as loaded, overrides applied, the overrides) from `study_arguments`."""
    config = yaml.safe_load((args.configfile or ROOT / "config/config.yaml").read_text())
    if not args.config:
        return config, {}
    from snakemake.cli import parse_config  # only with overrides: its import takes half a second
    from snakemake.utils import update_config

    cli = parse_config(args.config)
    update_config(config, cli)
    return config, cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layerlab.diff", description=__doc__.split("\n\n")[0])
    study_arguments(parser)
    args = parser.parse_args(argv)
    config, cli = study_config(args)
    try:
        lines = study_diff(config, args.directory, cli)
    except ConfigError as err:
        print(f"layerlab config error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0
