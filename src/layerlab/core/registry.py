"""Plug-in registries: datasets, training probes, measurements, models, training regimes, decision heads and plot
kinds.

A plug-in is a *declaration* (torch-free: its name, when it is on, the section of cell parameters it adds
(layerlab.core.params), the variables it writes, the regimes it supports, its config checks) plus an
*implementation* (a class or function, imported only by the jobs that run it). The declaration is what the Snakefile
needs to plan and check a study before any job, without importing torch. `impl` is the implementation itself or a
lazy reference "package.module:attribute". Checks and switches take the typed cell (layerlab.core.cell.Cell).

Built-in plug-ins are declared in `layerlab.catalog`; a study's `plugins: [module or path/to/file.py, ...]`
imports more (see docs/PLUGINS.md). Each registry is one source of truth: the schema enums of `dataset`, `model`,
`training`, `layer_head`, `measurements` and plot `kind` are its names (the config schema's YAML lists the built-ins,
and a test keeps them equal); the cell schema holds every registered plug-in's section.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from layerlab.core.config import ConfigError
from layerlab.core.params import Section

if TYPE_CHECKING:
    from layerlab.core.cell import Cell

Variables = Mapping[str, tuple[str, str]]  # store variable -> (long_name, units)
Check = Callable[["Cell"], None]  # raises ConfigError naming the key
Ref = Any  # the implementation, or "package.module:attribute"
Params = type[Section] | None  # the section of cell parameters a plug-in adds (None: none)


def resolve(ref: Ref) -> Any:
    """The object behind a lazy reference "package.module:attribute" (anything else is returned as is)."""
    if not isinstance(ref, str):
        return ref
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


def always(cell: Cell) -> bool:
    return True


def no_conv_layers(cell: Cell) -> int:
    return 0


# what a prepared dataset's provenance (written beside its arrays) must say; `scale` is the uint8 value of 1.0
PROVENANCE_KEYS = ("source", "license", "split", "scale")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset (`dataset: name`), prepared once into resources/datasets/<name>.npz by `prepare(spec, downloads)`:
    it returns {"x_train", "y_train", "x_test", "y_test": arrays} (uint8 images (N, C, H, W) or (N, H, W) of values
    0..scale, integer labels) and the provenance known only once read (e.g. which of two sources; may be empty).
    The rest is known before any job: the image `shape` (C, H, W) and `classes` size the networks, `splits` (train,
    test rows) bound batch_size, and `provenance` (PROVENANCE_KEYS, in the order written) goes beside the arrays.
    Preparation checks the arrays against this declaration."""

    name: str
    prepare: Ref
    shape: tuple[int, int, int]
    classes: int
    splits: tuple[int, int]
    provenance: Mapping[str, Any]
    options: Mapping[str, Any] = field(default_factory=dict)  # what a shared `prepare` needs to know of this one

    def __post_init__(self) -> None:
        if missing := [k for k in PROVENANCE_KEYS if k not in self.provenance]:
            raise ConfigError(f"dataset '{self.name}': its provenance lacks {', '.join(missing)} "
                              f"(it needs {', '.join(PROVENANCE_KEYS)})")
        if len(self.shape) != 3 or len(self.splits) != 2:
            raise ConfigError(f"dataset '{self.name}': shape is (channels, height, width) and splits (train rows, "
                              f"test rows); got {self.shape} and {self.splits}")


def network_input(dataset: str, image: Sequence[int], pool: int = 1, crop: int = 0, resize: int = 0) -> tuple[int, ...]:
    """(channels, height, width) of what a network sees of `dataset`'s images of shape `image` (C, H, W):
    centre-cropped to `crop` pixels a side, resized to `resize`, then average-pooled by `pool` (0: no crop, no
    resize). Raises ConfigError when the crop or the pooling is larger than the images."""
    channels, *size = image
    if crop > min(size):
        raise ConfigError(f"input_crop {crop} is larger than the {dataset} images ({'x'.join(map(str, size))})")
    size = [resize] * 2 if resize else [crop] * 2 if crop else size
    if pool > min(size):
        raise ConfigError(f"input_pool {pool} is larger than the {'x'.join(map(str, size))} images (after "
                          f"input_crop/input_resize)")
    return channels, *(n // pool for n in size)


@dataclass(frozen=True)
class ProbeSpec:
    """A training probe: measures during training (hooks of `layerlab.probes.base.TrainingProbe`) and
    contributes `variables` to train.zarr."""

    name: str
    impl: Ref  # a TrainingProbe subclass
    variables: Variables
    enabled: Callable[[Cell], bool] = always
    keys: tuple[str, ...] = ()  # the cell keys that switch it on (named in error messages)
    regimes: tuple[str, ...] | None = None  # training regimes it supports; None: all
    layer_maps: bool = False  # reads the one Linear/Conv map of every layer (the model must have them)
    check: Check | None = None
    parameters: Params = None  # its section of cell parameters (typed fields with defaults)
    packs: bool = False  # runs in a cell pack: on each packed cell's own network, whose weights are views of the
    # pack's fused ones (layerlab.training.pack); a probe that does not makes its cells train unfused


@dataclass(frozen=True)
class MeasurementSpec:
    """A post-training measurement (`measurements: [name]` in a study): one job per source cell writing
    cells/<cell>/<name>.zarr from the networks it `reads` ("init", "final")."""

    name: str
    impl: Ref  # (cell: Cell, data, networks: {name: network}, device) -> xarray.Dataset
    variables: Variables
    reads: tuple[str, ...] = ("init",)
    source: Ref | None = None  # (cells: {id: Cell}) -> {id: id of the cell it measures}; None: the cell itself
    collect: Ref | None = None  # (cell store, Cell, is_source) -> cell store, in collect (derived per-cell values)
    summarize: Ref | None = None  # (study store) -> {name: value}: study-level figures (may add variables)
    check: Check | None = None
    gpu: bool = False  # asks for a GPU where training does
    parameters: Params = None


@dataclass(frozen=True)
class ModelSpec:
    """A network (`model: name`): `build(input_shape, n_classes, model, params)` returns a
    `layerlab.nets.layers.Network` for the cell's `ModelParams` and the model's own section `params` (None without)."""

    name: str
    build: Ref
    hidden_layers: Callable[[Cell], int]  # units of batch entropy, BN, layer-wise training (output layer excluded)
    stack: bool = False  # a plain stack of (layer, activation) blocks: layer-wise/segment-wise training may split it
    one_map_per_layer: bool = True  # each layer holds one Linear/Conv map: curvature, freeze_weights, grad RMS
    batch_norm: bool = True  # takes bn_variant / bn_last_layer
    conv_layers: Callable[[Cell], int] = no_conv_layers  # leading hidden layers that output conv maps (C, H, W)
    check: Check | None = None
    parameters: Params = None


@dataclass(frozen=True)
class RegimeSpec:
    """A training regime (`training: name`): supplies the stages of the one training loop."""

    name: str
    impl: Ref  # a layerlab.training.regime.Regime subclass
    variables: Variables = field(default_factory=dict)
    check: Check | None = None
    parameters: Params = None
    options: Mapping[str, Any] = field(default_factory=dict)  # the variant of `impl`: keyword arguments it takes
    k_filter: str | None = None  # how it applies `k_filter`: "before" training, "online" per stage, None: not at all
    packs: bool = False  # its cells can train fused in a pack (one stage over the whole network)


@dataclass(frozen=True)
class HeadSpec:
    """A temporary decision head of the staged regimes (`layer_head: name`): `build(shape, n_classes, model, params)`
    returns the module on features of `shape` (one example) for the cell's `ModelParams` and the head's own section
    `params` (None without). `search_space(params, shape)` (optional) lists the head's configurations for
    `memory_target`'s per-stage search: families of its sections, each in order of non-decreasing memory (the search
    bisects along a family)."""

    name: str
    build: Ref
    search_space: Ref | None = None
    check: Check | None = None
    parameters: Params = None


PLOT_ROLES = ("option", "variable", "facet")
PLOT_KEYS = ("name", "kind", "select", "section", "caption")  # keys of every plot (config.schema.yaml), not a kind's


@dataclass(frozen=True)
class PlotParam:
    """A parameter of a plot kind: the JSON schema of its value (with its `default`, if it has one) and what the value
    names, checked against the study before any job (layerlab.workflow.plotcheck). Role `variable`: a variable of the
    study store; `facet`: a grid axis, or one of the variable `dims` the kind facets over; `option`: a plain value."""

    schema: Mapping[str, Any]
    role: str = "option"  # one of PLOT_ROLES
    required: bool = False
    dims: tuple[str, ...] = ()  # facet: store dims it may name besides the grid axes

    @property
    def default(self) -> Any:
        return self.schema.get("default")


def plot_variable(description: str, default: str | None = None, *, required: bool = False) -> PlotParam:
    """A parameter naming a variable of the study store (`var: batch_entropy`)."""
    kind = "string" if required or default is not None else ["string", "null"]
    return PlotParam({"type": kind, "default": default, "description": description}, "variable", required)


def plot_facet(description: str, default: str | None = None, *, required: bool = False,
               dims: tuple[str, ...] = ()) -> PlotParam:
    """A parameter naming a grid axis (or one of `dims`) the figure is split or coloured by (`col: depth`)."""
    return PlotParam({"type": ["string", "null"], "default": default, "description": description}, "facet", required,
                     dims)


def plot_option(description: str, **schema: Any) -> PlotParam:
    """A plain value, typed by JSON schema keywords: `plot_option("log y axis", type="boolean", default=False)`."""
    return PlotParam({**schema, "description": description})


@dataclass(frozen=True)
class PlotSpec:
    """A plot kind (`plots: [{kind: name, ...}]`): `draw(study, spec) -> matplotlib Figure`, where `spec` is the
    study's plot with every declared parameter filled (its default where the study leaves it out). `caption`
    (reStructuredText) says what the figure shows, whatever the study; the report adds the plot's own `caption:`
    (what it shows in this study) and the variables it draws."""

    name: str
    draw: Ref
    caption: str = ""
    parameters: Mapping[str, PlotParam] = field(default_factory=dict)
    reads: tuple[str, ...] = ()  # store variables it always draws, whatever the spec
    needs_axes: tuple[str, ...] = ()  # grid axes it cannot do without

    def complete(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """`spec` with the defaults of the parameters it leaves out (after its own keys)."""
        return {**spec, **{key: param.default for key, param in self.parameters.items() if key not in spec}}


T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> declaration, in registration order. Reading a registry first imports the built-in catalog."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._origins: dict[str, str] = {}  # name -> the study plug-in that registered it

    @property
    def _entries(self) -> dict[str, T]:
        importlib.import_module("layerlab.catalog")  # registers the built-ins (a dict lookup once imported)
        return self._items

    def add(self, spec: T) -> T:
        name = spec.name  # type: ignore[attr-defined]
        if name in self._items and self._items[name] != spec:
            raise ConfigError(f"{self.kind} '{name}' is registered twice (with different declarations)")
        self._items[name] = spec
        if _loading:
            self._origins.setdefault(name, _loading[-1])
        return spec

    def origin(self, name: str) -> str | None:
        """The study plug-in (its `plugins:` entry) that registered `name`; None for a built-in."""
        return self._origins.get(name)

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}'; known: {', '.join(self._entries)}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def values(self) -> list[T]:
        return list(self._entries.values())

    def names(self) -> list[str]:
        return list(self._entries)


DATASETS: Registry[DatasetSpec] = Registry("dataset")
PROBES: Registry[ProbeSpec] = Registry("training probe")
MEASUREMENTS: Registry[MeasurementSpec] = Registry("measurement")
MODELS: Registry[ModelSpec] = Registry("model")
REGIMES: Registry[RegimeSpec] = Registry("training regime")
DECISION_HEADS: Registry[HeadSpec] = Registry("decision head")
PLOTS: Registry[PlotSpec] = Registry("plot kind")


def register_dataset(name: str, prepare: Ref, shape: tuple[int, int, int], classes: int, splits: tuple[int, int],
                     provenance: Mapping[str, Any], **options: Any) -> DatasetSpec:
    return DATASETS.add(DatasetSpec(name, prepare, shape, classes, splits, provenance, **options))


def register_probe(name: str, impl: Ref, variables: Variables, **options: Any) -> ProbeSpec:
    return PROBES.add(ProbeSpec(name, impl, variables, **options))


def register_measurement(name: str, impl: Ref, variables: Variables, **options: Any) -> MeasurementSpec:
    return MEASUREMENTS.add(MeasurementSpec(name, impl, variables, **options))


def register_model(name: str, build: Ref, hidden_layers: Callable[[Cell], int], **options: Any) -> ModelSpec:
    return MODELS.add(ModelSpec(name, build, hidden_layers, **options))


def register_regime(name: str, impl: Ref, **options: Any) -> RegimeSpec:
    return REGIMES.add(RegimeSpec(name, impl, **options))


def register_head(name: str, build: Ref, **options: Any) -> HeadSpec:
    return DECISION_HEADS.add(HeadSpec(name, build, **options))


def register_plot(name: str, draw: Ref, caption: str = "", parameters: Mapping[str, PlotParam] | None = None,
                  **options: Any) -> PlotSpec:
    clashes = sorted(set(parameters or {}) & set(PLOT_KEYS))
    if clashes:
        raise ConfigError(f"plot kind '{name}' declares parameter(s) {clashes}: every plot has these keys; rename")
    return PLOTS.add(PlotSpec(name, draw, caption, parameters or {}, **options))


PLUGIN_SOURCES: dict[str, Path] = {}  # `plugins:` entry -> the source file it was imported from
_loading: list[str] = []  # the study plug-in being imported: what it registers comes from it


@contextmanager
def _importing(plugin: str) -> Iterator[None]:
    _loading.append(plugin)
    try:
        yield
    finally:
        _loading.pop()


def plugin_file(plugin: str, bases: Iterable[str | Path]) -> Path:
    """The file of a `.py` plug-in entry: the first of `bases` (the study file's folder, then the working directory)
    that holds it."""
    folders = list(dict.fromkeys(Path(b).resolve() for b in bases))
    for folder in folders:
        if (folder / plugin).is_file():
            return (folder / plugin).resolve()
    raise ConfigError(f"plugins: file '{plugin}' not found (relative to {' or '.join(map(str, folders))})")


def load_plugins(plugins: list[str], bases: Iterable[str | Path] = (".",)) -> list[str]:
    """Import the study's plug-ins: module names, or paths of .py files (relative to the first of `bases` that holds
    them: the study file's folder, then the working directory). Importing a plug-in registers its declarations (each
    remembers its plug-in: `Registry.origin`); importing twice is a no-op. Returns the entries as the jobs import them
    (files as absolute paths)."""
    importlib.import_module("layerlab.catalog")  # the built-ins first, or they would be taken for a plug-in's
    bases, loaded = list(bases), []
    for plugin in plugins:
        if plugin.endswith(".py"):
            path = plugin_file(plugin, bases)
            loaded.append(str(path))
            PLUGIN_SOURCES.setdefault(plugin, path)
            name = f"layerlab_plugin_{path.stem}"
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[name] = module
            with _importing(plugin):
                spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            loaded.append(plugin)
            try:
                with _importing(plugin):
                    module = importlib.import_module(plugin)
            except ModuleNotFoundError as err:
                raise ConfigError(f"plugins: cannot import module '{plugin}' ({err}); put it on PYTHONPATH or "
                                  f"give the path of its .py file") from None
            if file := getattr(module, "__file__", None):
                PLUGIN_SOURCES.setdefault(plugin, Path(file))
    return loaded


def measurement_sources(cells: Mapping[str, Cell], names: Iterable[str]) -> dict[str, dict[str, str]]:
    """Measurement -> {cell: the cell whose store of it the cell reads} (its declared `source`, else the cell)."""
    return {name: resolve(MEASUREMENTS[name].source)(cells) if MEASUREMENTS[name].source else {c: c for c in cells}
            for name in names}


def plugin_sections() -> list[type[Section]]:
    """The sections of cell parameters the registered plug-ins declare, each once, in registration order."""
    specs: list[ProbeSpec | MeasurementSpec | ModelSpec | RegimeSpec | HeadSpec] = [
        *PROBES.values(), *MEASUREMENTS.values(), *MODELS.values(), *REGIMES.values(), *DECISION_HEADS.values()]
    for spec in specs:
        if spec.parameters is not None and not (isinstance(spec.parameters, type) and issubclass(spec.parameters,
                                                                                                    Section)):
            raise ConfigError(f"plug-in '{spec.name}': `parameters` is a section of cell parameters, a frozen "
                              f"dataclass subclassing layerlab.core.params.Section (docs/PLUGINS.md)")
    return list(dict.fromkeys(spec.parameters for spec in specs if spec.parameters is not None))


def extend_schema(schema: dict) -> dict:
    """The config schema (layerlab/workflow/schemas, loaded) with the registries' names as the enums of
    `measurements` and plot `kind` (the YAML lists the built-ins; a test keeps them equal)."""
    props = schema["properties"]
    props["measurements"]["items"]["enum"] = MEASUREMENTS.names()
    props["plots"]["items"]["properties"]["kind"]["enum"] = PLOTS.names()
    return schema
