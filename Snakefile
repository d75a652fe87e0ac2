"""layerlab: study config -> trained cells -> per-layer metric stores -> study store -> figures.

    snakemake -c2                                              # default quick study (config/config.yaml)
    snakemake -c2 --configfile config/studies/<study>.yaml     # any other study
"""

import functools
import hashlib
import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version
from snakemake_interface_executor_plugins.settings import ExecMode

# The library is importable here and in every job, installed or not (jobs inherit the environment).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
from layerlab.core.config import CELL_ID_PATTERN, STORE_FILE, ConfigError, canonical_json, flow_yaml  # noqa: E402
from layerlab.core.registry import DATASETS, MEASUREMENTS, measurement_sources  # noqa: E402
from layerlab.data.datasets import DatasetUnavailable, verify as verify_dataset  # noqa: E402
from layerlab.workflow.gpus import export as gpu_env, resolve as gpu_pool  # noqa: E402
from layerlab.workflow.plugin_code import dataset_plugins, job_plugins, plot_plugins  # noqa: E402
from layerlab.workflow.study_file import study_config  # noqa: E402

min_version("9.0")

report: "workflow/report/workflow.rst"

# A study file replaces the default config instead of being merged into it (grids must not mix). It is read again as
# layerlab reads study files (layerlab.workflow.study_file: `1e-3` is a number, a syntax error names its line).
STUDY_FILES = workflow.overwrite_configfiles or [Path(workflow.basedir) / "config/config.yaml"]
try:
    _study = study_config(STUDY_FILES, workflow.config_settings.config)
except ConfigError as err:
    raise WorkflowError(f"layerlab config error: {err}") from None
if not workflow.overwrite_configfiles:

    configfile: STUDY_FILES[0]


config.update(_study)

# Schemas compiled once (layerlab.workflow.validate): defaults filled, `--config KEY=VALUE` cell overrides applied, every
# cell checked (its plug-ins' constraints, batch size), plot specs checked against the grid and the variables the
# study produces. The study's plug-ins first (files beside the study file, else in the working directory): their
# parameters and names join the schemas.
from layerlab.workflow.packs import longest_first, work  # noqa: E402
from layerlab.workflow.packs import plan as plan_packs  # noqa: E402
from layerlab.workflow.validate import check_study, fuse_settings, per_model_keys  # noqa: E402

try:
    CELLS = check_study(config, workflow.config_settings.config, STUDY_FILES[-1].parent)
except ConfigError as err:
    raise WorkflowError(f"layerlab config error: {err}") from None
# A corrupt prepared dataset stops the run here, before a job could delete a result computed from it.
try:
    for _path in sorted({f"resources/datasets/{c.data.dataset}.npz" for c in CELLS.values()}):
        if Path(_path).exists() and Path(_path).with_suffix(".json").exists():
            verify_dataset(_path)  # hashes the arrays once per version of the file (~0.2 s for FashionMNIST)
except DatasetUnavailable as err:
    raise WorkflowError(f"layerlab: {err}") from None

STUDY = config["study"]
OUT = f"results/{STUDY}"
AXES = list(config["grid"])
MEASURED = config["measurements"]  # the study's measurements (layerlab.core.registry.MEASUREMENTS)
PLOTS = {p["name"]: p for p in config["plots"]}  # each with its kind's parameters (layerlab.catalog.plots)
# which cell's store of each measurement a cell reads (the cascade's: its deepest sibling's)
MEASUREMENT_SOURCES = measurement_sources(CELLS, MEASURED)
# Cell packs (layerlab.workflow.packs): the cells this run trains (those without a store), several to a job, cells that
# differ only in per-model parameters fused into one network. Each pack job stages its cells' outputs; every cell's
# own train job takes them over (its input: the pack's manifest).
# Run here (--cores, no --jobs), at least as many packs as cores: each pack is one process on one core. A cluster run
# (--jobs; its executor is not known yet while this file is read) and each of its jobs, which reads this file again
# on its node, keep packs whole, so both plan the same packs: one sbatch job on one GPU each.
_here = workflow.resource_settings.nodes is None and workflow.workflow_settings.exec_mode == ExecMode.DEFAULT
try:
    _cores = workflow.cores if _here else 1
except WorkflowError:  # no --cores: a dry run
    _cores = 1
_fuse = fuse_settings(config)
PACKS = {} if _fuse is None else plan_packs(
    CELLS, lambda c: Path(f"{OUT}/cells/{c}/train.zarr/{STORE_FILE}").exists(), per_model_keys(), _fuse["max_cells"],
    _cores)
PACK_OF = {cell: pack for pack, members in PACKS.items() for cell in members}
PACKED = "|".join(re.escape(cell) for cell in sorted(PACK_OF)) or "(?!)"  # their rule: take_over (none: no match)
# the costliest training jobs (packs, and cells training alone) start first: a long one started last runs alone
TRAIN_PRIORITY = longest_first({**{pack: sum(work(CELLS[c]) for c in members) for pack, members in PACKS.items()},
                                **{cell: work(CELLS[cell]) for cell in CELLS if cell not in PACK_OF}})
# Local GPUs (layerlab.workflow.gpus): each training job claims one (device, slot) of this pool and sees only that device.
# On a cluster SLURM binds the devices instead (profiles/slurm asks for gpu=1 per training job).
GPUS, GPU_SLOTS = gpu_pool(config.get("gpus"))
os.environ.update(gpu_env(GPUS, GPU_SLOTS, Path(".snakemake/layerlab-gpu-locks").resolve()))


wildcard_constraints:
    cell=CELL_ID_PATTERN,
    dataset="|".join(DATASETS),
    plot="|".join(PLOTS) or "^$",
    pack="pack_[0-9a-f]{12}",


include: "workflow/rules/common.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/pack.smk"
include: "workflow/rules/measurements.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/plots.smk"
include: "workflow/rules/captions.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/study_page.smk"


rule all:
    default_target: True
    input:
        rules.collect.input,  # every cell's stores: a deleted one is made again (Snakemake keeps intermediate files)
        rules.collect.output,
        rules.claims.output,
        rules.study_page.output,
        expand(f"{OUT}/figures/{{plot}}.{{ext}}", plot=PLOTS, ext=("png", "rst")),
