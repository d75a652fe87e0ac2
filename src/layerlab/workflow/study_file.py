"""Reading study files as a researcher writes them; a file that cannot be read is one line naming the file and line.

PyYAML, and so Snakemake's `--configfile`, follows YAML 1.1, where `1e-3` is a string (1.1 wants a dot: `1.0e-3`).
Here a plain scalar that YAML 1.2 reads as a float is one, so numbers written as Python and papers write them are
numbers everywhere in a study: `fixed`, grid values, explicit cells, claims and plot selections.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from layerlab.core.config import ConfigError


class StudyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML 1.1 with YAML 1.2's floats without a dot (`1e-3`, `5E+4`)."""


FLOAT_WITHOUT_DOT = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")
StudyLoader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT_WITHOUT_DOT, list("-+.0123456789"))


def read_study(path: str | Path) -> dict:
    """One study file (ConfigError: missing, not YAML with the line and column, or not a mapping)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"study file {path} not found") from None
    except OSError as err:
        raise ConfigError(f"study file {path} cannot be read ({err.strerror})") from None
    try:
        config = yaml.load(text, Loader=StudyLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a study file is a mapping of keys (study, grid, fixed, ...)")
    return config


def study_config(files: Iterable[str | Path], cli: Mapping[str, Any] | None = None) -> dict:
    """The config Snakemake builds from `--configfile` FILES and `--config` overrides (`cli`), its files read by
    `read_study`."""
    from snakemake.utils import update_config

    config: dict = {}
    for path in files:
        update_config(config, read_study(path))
    update_config(config, dict(cli or {}))
    return config
