"""The plug-in architecture: registries as the one source of truth, the one training loop in every regime, and a
probe from outside the package (tests/plugins/grad_norm.py, the docs/PLUGINS.md example) end to end."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, make_cell, snakemake, write_study
from torch.nn import functional as F

from layerlab.catalog import check_cell
from layerlab.catalog.losses import HEADS
from layerlab.core.cell import cell_properties
from layerlab.core.config import ConfigError
from layerlab.core.registry import (
    DATASETS,
    DECISION_HEADS,
    MEASUREMENTS,
    MODELS,
    PLOTS,
    PROBES,
    REGIMES,
    load_plugins,
)
from layerlab.core.store import read_store
from layerlab.nets.models import ACTIVATIONS, INITS, build_model
from layerlab.nets.norm import BN_VARIANTS
from layerlab.training.loop import train_cell
from layerlab.training.losses import ENTROPY_CONSTANTS

PLUGIN = ROOT / "tests/plugins/grad_norm.py"
CONFIG_SCHEMA = ROOT / "src/layerlab/workflow/schemas/config.schema.yaml"


def builtin(registry) -> list[str]:
    """The names the catalog registers (their implementations live in the package)."""
    return [s.name for s in registry.values() if str(getattr(s, "impl", getattr(s, "build", getattr(s, "draw", getattr(
        s, "prepare", ""))))).startswith("layerlab.")]


def test_schema_enums_equal_the_builtin_registries_and_tables():
    cell, config = cell_properties(), yaml.safe_load(CONFIG_SCHEMA.read_text())["properties"]
    assert builtin(MODELS) == [n for n in cell["model"]["enum"] if not MODELS.origin(n)]
    assert builtin(REGIMES) == [n for n in cell["training"]["enum"] if not REGIMES.origin(n)]
    assert builtin(DECISION_HEADS) == [n for n in cell["layer_head"]["enum"] if not DECISION_HEADS.origin(n)]
    assert config["measurements"]["items"]["enum"] == builtin(MEASUREMENTS)
    assert config["plots"]["items"]["properties"]["kind"]["enum"] == builtin(PLOTS)
    assert cell["init"]["enum"] == list(INITS)
    assert cell["activation"]["enum"] == list(ACTIVATIONS)
    assert cell["bn_variant"]["enum"] == list(BN_VARIANTS)
    assert cell["loss"]["enum"] == ["ce", "ce_lbe", *HEADS]
    assert cell["entropy_constant"]["enum"] == list(ENTROPY_CONSTANTS)
    assert builtin(DATASETS) == [n for n in cell["dataset"]["enum"] if not DATASETS.origin(n)]
    for spec in PROBES.values():  # every built-in probe's switch is a cell parameter with a schema default
        assert set(spec.keys) <= set(cell) or PROBES.origin(spec.name), spec.name  # (a plug-in another test loaded)


def test_planning_imports_no_torch_and_the_package_has_no_import_cycle():
    code = "import sys, layerlab.catalog, layerlab.core.registry, layerlab.core.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(
        ROOT / "src")}, check=True).stdout
    assert out.strip() == "False"
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "src/layerlab").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        graph[module] = {node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module
                         and node.module.startswith("layerlab")}  # module-level imports only
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for dep in graph.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen
    cycles = [m for m in graph if m in reach(m) and m != "layerlab.catalog"]
    assert not cycles, f"import cycles through {cycles}"


def test_a_probe_outside_its_regimes_is_refused_naming_probe_and_regime():
    with pytest.raises(ConfigError, match=r"training probe 'curvature' .* does not run with training 'layerwise'"):
        check_cell(make_cell(training="layerwise", depth=3, curvature_every=5))
    with pytest.raises(ConfigError, match="probe 'grad_rms' needs one Linear/Conv map per layer; model "
                                          "'cascade_resnet'"):
        check_cell(make_cell(model="cascade_resnet", depth=4, stem_downsample=1, grad_rms_probe=True))


def test_probes_run_in_the_layerwise_regime(digits):
    """Batch entropy, BN gamma/beta, gradient RMS and weight entropy in a layer-wise cell: each layer's gradient is
    recorded only during its own stage, and batch entropy only for the layers a stage's network computes."""
    cell = make_cell(training="layerwise", depth=3, width=16, bn_variant="bn_gamma_beta", optimizer="sgd", lr=0.05,
                     layer_steps=10, log_every=5, eval_every=10, grad_rms_probe=True, weight_entropy_bits=4)
    ds, _ = train_cell(cell, digits, build_model(cell, digits.input_shape, digits.n_classes), torch.device("cpu"))
    assert list(ds["step"].values) == [0, 5, 10, 15, 20, 25, 30] and list(ds["stage"].values) == [0, 0, 1, 1, 2, 2, 2]
    rms = ds["grad_rms"].transpose("step", "layer").values  # layers 0..2 hidden, 3 = output (last stage's head)
    trained = {0: [0], 5: [0], 10: [1], 15: [1], 20: [2, 3], 25: [2, 3]}
    for i, step in enumerate(ds["step"].values[:-1]):
        assert np.isfinite(rms[i, trained[step]]).all() and np.isnan(np.delete(rms[i], trained[step])).all()
    assert np.isnan(rms[-1]).all()  # the last step has no backward
    entropy = ds["batch_entropy"].values
    assert np.isfinite(entropy[0, :1]).all() and np.isnan(entropy[0, 1:]).all()  # stage 0 computes layer 0
    assert np.isfinite(entropy[-1, :3]).all() and np.isnan(entropy[:, 3]).all()  # hidden layers only
    assert ds["gamma"].dims == ("step", "layer", "channel") and np.isfinite(ds["weight_entropy"]).all()


def gradient_norms_float64(cell: dict, digits, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """||dL/dW|| of every layer at step 0, by a float64 copy of the initial network (independent of the probe)."""
    model = build_model(cell, digits.input_shape, digits.n_classes).double()
    logits, _ = model(x.double())
    F.cross_entropy(logits, y).backward()
    return np.array([float(m.weight.grad.norm()) for m in [*model.layers, model.head]])


def test_outside_probe_matches_a_float64_reference(digits):
    load_plugins([str(PLUGIN)])
    assert "grad_norm" in PROBES and "grad_norm_probe" in cell_properties()
    cell = make_cell(depth=2, width=16, steps=10, log_every=5, lr=1e-3, grad_rms_probe=True, batch_size=64,
                     grad_norm_probe=True)
    ds, _ = train_cell(cell, digits, build_model(cell, digits.input_shape, digits.n_classes), torch.device("cpu"))
    idx = torch.randperm(len(digits.train.y), generator=torch.Generator().manual_seed(0))[:64]  # the first batch
    reference = gradient_norms_float64(cell, digits, digits.train.x[idx], digits.train.y[idx])
    np.testing.assert_allclose(ds["grad_norm"].sel(step=0).values, reference, rtol=1e-5)
    sizes = np.array([m.weight.numel() for m in build_model(cell, digits.input_shape, digits.n_classes).modules()
                      if isinstance(m, torch.nn.Linear)])
    np.testing.assert_allclose(ds["grad_norm"].sel(step=[0, 5]), ds["grad_rms"].sel(step=[0, 5]) * np.sqrt(sizes),
                               rtol=1e-5)  # ||G|| = sqrt(n) RMS(G), against the built-in probe
    assert ds["grad_norm"].attrs["long_name"].startswith("L2 norm of dL/dW")


@pytest.mark.e2e
def test_outside_probe_runs_end_to_end_through_snakemake(tmp_path, tiny_config):
    shutil.copy(PLUGIN, tmp_path / "my_probes.py")  # a file beside the study, not in the package
    tiny_config.pop("cells")
    tiny_config["grid"] = {"depth": [2, 3]}
    tiny_config["plugins"] = ["my_probes.py"]
    tiny_config["fixed"].update(grad_norm_probe=True, grad_rms_probe=True, steps=10, log_every=5)
    tiny_config["plots"] = [{"name": "grad_norm", "kind": "layer_step_heatmap", "var": "grad_norm", "col": "depth"}]
    write_study(tmp_path, tiny_config)
    snakemake(tmp_path)
    ds = read_store(tmp_path / "results/tiny/metrics.zarr")
    assert ds["grad_norm"].dims == ("depth", "step", "layer") and ds["grad_norm"].sizes["layer"] == 4
    norm, rms = (ds[v].sel(depth=2, step=0, layer=[0, 1, 2]) for v in ("grad_norm", "grad_rms"))
    np.testing.assert_allclose(norm, rms * np.sqrt([64 * 16, 16 * 16, 16 * 10]), rtol=1e-5)
    assert (tmp_path / "results/tiny/figures/grad_norm.png").stat().st_size > 1000
    tiny_config["fixed"]["grad_norm_probe"] = 3  # the plug-in's parameter is validated like a built-in one
    write_study(tmp_path, tiny_config)
    proc = snakemake(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "grad_norm_probe" in out and "boolean" in out, out[-2000:]
    tiny_config["plugins"] = ["missing.py"]
    write_study(tmp_path, tiny_config)
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and "plugins: file 'missing.py' not found" in proc.stdout + proc.stderr


def test_job_plugins_digest_the_plugin_files_each_job_runs(tmp_path):
    """The params entry that reruns a job when a plug-in it runs is edited: the train job of a cell with built-ins
    only runs no plug-in code; a plug-in measurement's job runs its file, whose digest follows its content."""
    from layerlab.workflow.plugin_code import job_plugins

    plugin = tmp_path / "my_measure.py"
    plugin.write_text("from layerlab.core.registry import register_measurement\n\n\n"
                      "def run(cell, data, networks, device):\n    raise NotImplementedError\n\n\n"
                      "register_measurement('digested_measure', run, variables={})\n")
    load_plugins(["my_measure.py"], [tmp_path])
    assert MEASUREMENTS.origin("digested_measure") == "my_measure.py" and MEASUREMENTS.origin("cascade") is None
    cell = make_cell()
    assert job_plugins(cell) == {} and job_plugins(cell, "cascade") == {}
    first = job_plugins(cell, "digested_measure")
    assert list(first) == ["my_measure.py"] and len(first["my_measure.py"]) == 16
    plugin.write_text(plugin.read_text() + "# edited\n")
    assert job_plugins(cell, "digested_measure")["my_measure.py"] != first["my_measure.py"]
