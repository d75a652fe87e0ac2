"""A figure's report caption (reStructuredText): what it shows in this study (the plot's own `caption:`), what its
kind shows in any study (layerlab.catalog.plots), and what it draws: each variable with its description and units
from the store, the facets and the selection."""

from __future__ import annotations

import re

import xarray as xr

from layerlab.core.registry import PLOTS, PlotParam

_RST_MARKUP = re.compile(r"([\\`*|_<>\[\]])")


def rst_text(text: str) -> str:
    """Plain text as reStructuredText (markup characters such as `|alpha^l|` or `x_` escaped)."""
    return _RST_MARKUP.sub(r"\\\1", text)


def _variable(ds: xr.Dataset, name: str) -> str:
    attrs = ds[name].attrs if name in ds else {}
    units = attrs.get("units", "1")
    described = rst_text(str(attrs.get("long_name", ""))) + ("" if units in ("1", "") else f" ({rst_text(units)})")
    return f"``{name}``" + (f": {described}" if described.strip() else "")


def _shown(param: PlotParam, value: object) -> bool:
    """Whether a facet or option is worth naming: a facet in use, an option away from its default."""
    if param.role == "facet":
        return value is not None
    return param.role == "option" and value not in (None, False) and value != param.default


def _drawn(ds: xr.Dataset, spec: dict) -> list[str]:
    """One item per variable the figure draws, one for its facets and options, one for `select`."""
    kind = PLOTS[spec["kind"]]
    variables = [spec[key] for key, param in kind.parameters.items() if param.role == "variable" and spec[key]]
    items = [_variable(ds, name) for name in dict.fromkeys([*variables, *kind.reads])]
    settings = [f"{key} ``{spec[key]}``" for key, param in kind.parameters.items() if _shown(param, spec[key])]
    if settings:
        items.append(", ".join(settings))
    select = spec.get("select") or {}
    if select:
        items.append("selected: " + ", ".join(f"{axis} = ``{value}``" for axis, value in select.items()))
    return items


def plot_caption(ds: xr.Dataset, spec: dict) -> str:
    """The caption of `spec`'s figure drawn from the study store `ds`."""
    kind = PLOTS[spec["kind"]]
    spec = kind.complete(spec)
    paragraphs = [text for text in (spec.get("caption", ""), kind.caption) if text.strip()]
    drawn = "\n".join(f"- {item}" for item in _drawn(ds, spec))
    return "\n\n".join([*paragraphs, f"Drawn (``{spec['name']}``, kind ``{kind.name}``):", drawn]) + "\n"
