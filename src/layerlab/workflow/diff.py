"""What Snakemake will rerun, and why: the parameters and plug-in code of each cell against what its stores recorded.

    python -m layerlab.diff [--configfile STUDY.yaml] [--config KEY=VALUE ...] [-d WORKDIR]

Compares each cell's parameters as the workflow sees them now (schema defaults filled, `--config` overrides applied,
as `snakemake` with the same arguments) with the `config` its results/<study>/cells/<cell>/train.zarr recorded, and
the digests of the plug-in code its jobs run with the store's `plugins`; prints `cell: key: old -> new` per changed
key, `cell: plugin NAME changed` per edited plug-in, the cells and measurement stores that are missing (they run),
the stores of cells no longer in the study, and how many stores another layerlab version wrote (library edits rerun
nothing). Exit status 0 whether or not anything changed; 2 for a bad config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from layerlab import __version__
from layerlab.core.config import STORE_FILE, ConfigError, canonical_json
from layerlab.core.registry import measurement_sources
from layerlab.workflow.plugin_code import job_plugins
from layerlab.workflow.study_file import study_config
from layerlab.workflow.validate import check_study

ROOT = Path(__file__).resolve().parents[3]
MISSING = "<absent>"


def recorded(store: Path) -> dict | None:
    """The attributes of a store (`config`, `plugins`, `layerlab_version`, ...), read from its root metadata as zarr
    v3 writes it (no zarr import: a millisecond per store), or None without a store."""
    try:
        return json.loads((store / STORE_FILE).read_text())["attributes"]
    except FileNotFoundError:
        return None


def changes(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(key, old, new) of every key whose canonical JSON differs (30 vs 30.0 too: Snakemake reruns on it)."""
    if canonical_json(old) == canonical_json(new):  # the common case at a hundredth of the cost
        return []
    return [(k, old.get(k, MISSING), new.get(k, MISSING)) for k in sorted(set(old) | set(new))
            if json.dumps(old.get(k, MISSING)) != json.dumps(new.get(k, MISSING))]


def plugin_changes(attrs: dict, now: dict[str, str], store: str = "") -> list[str]:
    """`plugin NAME changed` (or new, or no longer run) for each plug-in whose digest differs from the recorded."""
    old = json.loads(attrs.get("plugins", "{}"))
    where = f" ({store})" if store else ""
    return [f"plugin {name} {'new' if name not in old else 'no longer run' if name not in now else 'changed'}{where}"
            for name in sorted(set(old) | set(now)) if old.get(name) != now.get(name)]


def study_diff(config: dict, workdir: Path, cli: dict | None = None, base: Path | None = None) -> list[str]:
    """The report's lines for `config` (a study config as loaded, changed in place) run in `workdir`; `base`: the
    study file's folder (plug-in files)."""
    cells = check_study(config, cli, base)
    plugins = bool(config["plugins"])  # without plug-ins no job records digests (workflow/rules/common.smk)
    root = workdir / "results" / config["study"] / "cells"
    sources = measurement_sources(cells, config["measurements"])
    lines, changed, new, versions = [], 0, 0, []
    for cid, cell in cells.items():
        train = recorded(root / cid / "train.zarr")
        if train is None:
            new += 1
            lines.append(f"{cid}: new (no train.zarr yet)")
            continue
        versions.append(train.get("layerlab_version"))
        why = [f"{k}: {json.dumps(a)} -> {json.dumps(b)}"
               for k, a, b in changes(json.loads(train["config"]), cell.to_dict())]
        why += plugin_changes(train, job_plugins(cell)) if plugins else []
        for name in (n for n, source in sources.items() if source[cid] == cid):
            store = recorded(root / cid / f"{name}.zarr")
            if store is None:
                why.append(f"no {name}.zarr (the {name} job runs)")
            elif plugins:
                why += plugin_changes(store, job_plugins(cell, name), f"{name}.zarr")
        changed += bool(why)
        lines += [f"{cid}: {line}" for line in why]
    stored = {str(p.parent.relative_to(root)) for p in root.rglob("train.zarr")} if root.exists() else set()
    removed = sorted(stored - set(cells))
    lines += [f"{cid}: not in the study any more (its store stays)" for cid in removed]
    if other := sorted({str(v) for v in versions if v != __version__}):
        lines.append(f"{sum(v != __version__ for v in versions)} train.zarr written by another layerlab version "
                     f"({', '.join(other)}; now {__version__}): edits of layerlab's library rerun nothing")
    lines.append(f"{len(cells)} cells: {changed} changed, {new} without a store, "
                 f"{len(cells) - changed - new} unchanged; {len(removed)} stored cells not in the study")
    return lines


def study_arguments(parser: argparse.ArgumentParser) -> None:
    """The study as `snakemake` is given it: --configfile, --config overrides, -d working directory."""
    parser.add_argument("--configfile", type=Path, default=ROOT / "config/config.yaml",
                        help="study config (default: config/config.yaml)")
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                        help="the same overrides as given to snakemake --config")
    parser.add_argument("-d", "--directory", type=Path, default=Path("."), help="working directory of the run")


def load_study(args: argparse.Namespace) -> tuple[dict, dict]:
    """(the study config as Snakemake builds it, the `--config` overrides) from `study_arguments`; ConfigError for a
    missing or broken study file."""
    cli = {}
    if args.config:
        from snakemake.cli import parse_config  # only with overrides: its import takes half a second

        cli = parse_config(args.config)
    return study_config([args.configfile], cli), cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layerlab.diff", description=__doc__.split("\n\n")[0])
    study_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config, cli = load_study(args)
        lines = study_diff(config, args.directory, cli, args.configfile.parent)
    except ConfigError as err:
        print(f"layerlab config error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0
