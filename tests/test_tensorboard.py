"""TensorBoard runs of a study's cells (layerlab.workflow.tensorboard), read back with TensorBoard's own reader: live
from training (each logged step written one logged step later) and exported from stores, every value equal to the
store's, one HParams record per cell."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import changed, make_cell

from layerlab.core.store import write_store
from layerlab.nets.models import build_model
from layerlab.training.loop import train_cell
from layerlab.workflow.tensorboard import HParams, LiveBoard, export_study, main

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

CELL = dict(depth=3, width=16, steps=20, batch_size=64, log_every=5, eval_every=10, lr=1e-3, loss="ce_lbe",
            lbe_beta=0.01, bn_variant="bn_gamma_beta", grad_rms_probe=True)


def read(directory) -> EventAccumulator:
    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def assert_board_equals_store(acc: EventAccumulator, ds: xr.Dataset) -> None:
    """Every step variable, per-layer variable, histogram and summary of `ds` is in the run, value for value."""
    tags = set(acc.Tags()["scalars"])

    def check(tag: str, steps: np.ndarray, values: np.ndarray) -> None:
        # NaN is not measured (lbe without LBE, grad at the last step, alpha off the middle layers): left out
        expected = {int(s): float(v) for s, v in zip(steps, values, strict=True) if np.isfinite(v)}
        assert (tag in tags) == bool(expected), tag
        if expected:
            assert scalars(acc, tag) == expected, tag

    for name in ("loss", "ce", "lbe", "batch_acc"):
        check(name, ds["step"].values, ds[name].values)
    check("test_acc_curve", ds["eval_step"].values, ds["test_acc_curve"].values)
    for name in ("batch_entropy", "grad_rms", "alpha", "gamma_activity"):
        for k in ds["layer"].values:
            check(f"{name}/layer_{k}", ds["step"].values, ds[name].sel(layer=k).values)
    gamma = acc.Histograms("gamma/layer_1")  # BatchNorm's gamma over the layer's channels
    assert [h.step for h in gamma] == ds["step"].values.tolist()
    last = gamma[-1].histogram_value
    channels = ds["gamma"].sel(layer=1).isel(step=-1).values
    channels = channels[np.isfinite(channels)]
    assert last.num == channels.size and last.min == pytest.approx(channels.min()) and last.sum == pytest.approx(
        channels.sum(), rel=1e-6)
    for name in ("test_acc", "train_acc", "test_loss", "diverged", "train_seconds"):
        assert scalars(acc, f"summary/{name}") == {int(ds["step"][-1]): pytest.approx(float(ds[name]), rel=1e-7)}


def hparams_of(acc: EventAccumulator) -> tuple[dict, list[str]]:
    """The run's HParams session (hparams, group name) and the experiment's metric tags."""
    plugin = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    start = hparams_metadata.parse_session_start_info_plugin_data(plugin[hparams_metadata.SESSION_START_INFO_TAG])
    experiment = hparams_metadata.parse_experiment_plugin_data(plugin[hparams_metadata.EXPERIMENT_TAG])
    values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    domains = {h.name: list(h.domain_discrete) for h in experiment.hparam_infos}
    return {"hparams": values, "group": start.group_name, "domains": domains}, [
        m.name.tag for m in experiment.metric_infos]


class Snapshot:
    """Reads the run while the cell trains: the steps of `loss` written by the time of each logged step."""

    def __init__(self, directory):
        self.directory, self.seen = directory, {}

    def logged(self, tick, loop):
        self.seen[tick.step] = sorted(scalars(read(self.directory), "loss")) if tick.step else []

    def finished(self, ds):
        pass


def test_live_run_is_written_during_training_and_equals_the_store(digits, tmp_path):
    torch.set_num_threads(1)
    cell = make_cell(**CELL)
    cells = [cell.to_dict(), changed(cell, depth=4).to_dict()]
    board_dir = tmp_path / "tensorboard" / "depth~3/loss~ce_lbe"
    board_dir.mkdir(parents=True)
    (board_dir / "events.out.tfevents.0.stale").write_bytes(b"an earlier job's run")  # rewritten, not appended to
    live = LiveBoard(board_dir, "depth~3/loss~ce_lbe", cells[0], HParams(cells, ["depth", "loss"]), every=0)
    snapshot = Snapshot(board_dir)
    ds, _ = train_cell(cell, digits, build_model(cell, digits.input_shape, digits.n_classes), torch.device("cpu"),
                       writers=(live, snapshot))
    # at each logged step the earlier ones are there (their probe records are complete), not this one
    assert snapshot.seen == {0: [], 5: [0], 10: [0, 5], 15: [0, 5, 10], 20: [0, 5, 10, 15]}
    assert not (board_dir / "events.out.tfevents.0.stale").exists()
    acc = read(board_dir)
    assert_board_equals_store(acc, ds)
    session, metrics = hparams_of(acc)
    assert session == {"hparams": {"depth": 3.0, "loss": "ce_lbe"}, "group": "depth~3/loss~ce_lbe",
                       "domains": {"depth": [3.0, 4.0], "loss": ["ce_lbe"]}}
    assert metrics[:3] == ["summary/test_acc", "summary/test_error", "summary/test_loss"]


def test_a_probe_that_answers_only_at_the_end_is_written_at_the_end(digits, tmp_path, caplog, monkeypatch):
    from layerlab.probes.grad_rms import GradRMSProbe

    def variables(self, steps):
        if len(steps) < 5:  # the full run has 5 logged steps
            raise ValueError("records incomplete")
        return original(self, steps)

    original = GradRMSProbe.variables
    monkeypatch.setattr(GradRMSProbe, "variables", variables)
    cell = make_cell(**CELL)
    live = LiveBoard(tmp_path / "run", "depth~3", cell.to_dict(), HParams([cell.to_dict()], ["depth"]), every=0)
    with caplog.at_level(logging.WARNING, logger="layerlab.workflow.tensorboard"):
        ds, _ = train_cell(cell, digits, build_model(cell, digits.input_shape, digits.n_classes),
                           torch.device("cpu"), writers=(live,))
    assert caplog.text.count("probe grad_rms gives no variables before the end (ValueError: records incomplete)") == 1
    assert_board_equals_store(read(tmp_path / "run"), ds)  # nothing lost


def test_export_writes_every_stored_cell_with_its_hparams(digits, tmp_path, capsys):
    torch.set_num_threads(1)
    root = tmp_path / "results" / "study"
    stored = {}
    for depth, loss in ((3, "ce"), (4, "ce_lbe")):
        cell = make_cell(**{**CELL, "depth": depth, "loss": loss})
        cell_id = f"depth~{depth}/loss~{loss}"
        ds, _ = train_cell(cell, digits, build_model(cell, digits.input_shape, digits.n_classes), torch.device("cpu"))
        ds.attrs.update(config=cell.json, cell_id=cell_id)
        write_store(ds, root / "cells" / cell_id / "train.zarr")
        stored[cell_id] = ds
    assert main([str(root)]) == 0
    assert "2 cells -> " in capsys.readouterr().out
    for cell_id, ds in stored.items():
        acc = read(root / "tensorboard" / cell_id)
        assert_board_equals_store(acc, ds)
        session, metrics = hparams_of(acc)
        assert session["group"] == cell_id and session["domains"] == {"depth": [3.0, 4.0], "loss": ["ce", "ce_lbe"]}
        assert metrics[:5] == ["summary/test_acc", "summary/test_error", "summary/test_loss",  # what the dashboard
                               "summary/test_acc_last3", "summary/train_acc"]  # shows first: the loop's, in order
        assert "summary/relative_memory" in metrics
    assert export_study(root) == list(stored)  # again: the runs are rewritten, not doubled
    assert len(scalars(read(root / "tensorboard/depth~3/loss~ce"), "loss")) == 5
    assert main([str(tmp_path / "nothing")]) == 2
    assert "no trained cell" in capsys.readouterr().err


def test_hparams_of_mixed_axis_values_are_strings():
    hp = HParams([{"lr": 0.1, "init": "he", "bn": True}, {"lr": 1, "init": 3, "bn": False}], ["lr", "init", "bn"])
    assert hp.types == {"lr": float, "init": str, "bn": bool}
    assert hp.domains == {"lr": [0.1, 1.0], "init": ["3", "he"], "bn": [False, True]}


def test_the_switch_without_the_package_is_one_line_before_any_job(monkeypatch, tiny_config):
    import importlib.util

    from layerlab.core.config import ConfigError
    from layerlab.workflow.validate import check_study

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else
                        find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"^tensorboard: true needs the tensorboard package: pip install -e "
                                          r"'\.\[tensorboard\]'$"):
        check_study({**tiny_config, "tensorboard": True})
    assert len(check_study(tiny_config)) == 5  # off by default
