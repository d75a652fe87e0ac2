"""Dying and full units (paper 004, Fig. A12): counts against a float64 forward of the whole training split; the
probe leaves training as it was; BatchNorm nets have none."""

from __future__ import annotations

import numpy as np
import torch
from conftest import changed, make_cell

from layerlab.nets.models import build_model
from layerlab.probes.neurons import neuron_states
from layerlab.training.loop import train_cell


def test_counts_of_hand_made_outputs():
    h = torch.tensor([[0.0, 1.0, 2.0], [0.0, 3.0, 0.0]])  # unit 0 never active, unit 1 always, unit 2 sometimes
    conv = torch.zeros(2, 2, 1, 2)
    conv[:, 1] = 1.0  # channel 1 active everywhere: 2 full units (positions), channel 0: 2 dying
    dying, full = neuron_states([h, conv])
    assert dying.tolist() == [1, 2] and full.tolist() == [1, 2]


def reference_counts(model, x: torch.Tensor) -> tuple[list[int], list[int]]:
    """Dying/full units from a float64 forward of the plain ReLU FNN, layer by layer."""
    h, dying, full = x.double().flatten(1), [], []
    for layer in model.layers:
        linear = next(m for m in layer.modules() if isinstance(m, torch.nn.Linear))
        h = torch.relu(h @ linear.weight.double().T + linear.bias.double())
        dying.append(int((h <= 0).all(0).sum()))
        full.append(int((h > 0).all(0).sum()))
    return dying, full


def train(cell, data, model=None):
    torch.set_num_threads(1)
    model = model or build_model(cell, data.input_shape, data.n_classes)
    return train_cell(cell, data, model, torch.device("cpu"))


def test_probe_counts_equal_a_float64_reference_and_change_nothing(digits):
    cell = make_cell(depth=3, width=16, steps=6, log_every=3, eval_every=6, lr=1e-2, neuron_every=3)
    model = build_model(cell, digits.input_shape, digits.n_classes)
    first = next(m for m in model.layers[0].modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():  # unit 0 dies, unit 1 is always on
        first.bias[0], first.weight[1], first.bias[1] = -1e3, 0.0, 1e3
    init_counts = reference_counts(model, digits.train.x)
    ds, trained = train(cell, digits, model)
    assert list(ds["step"].values) == [0, 3, 6] and ds["n_dying"].dims == ("step", "layer")
    assert ds["n_dying"].sel(step=0).values.tolist() == init_counts[0] and init_counts[0][0] >= 1
    assert ds["n_full"].sel(step=0).values.tolist() == init_counts[1] and init_counts[1][0] >= 1
    final = reference_counts(trained, digits.train.x)
    assert ds["n_dying"].sel(step=6).values.tolist() == final[0]
    without, _ = train(changed(cell, neuron_every=0), digits)
    with_probe, _ = train(cell, digits)
    for name in ("loss", "test_acc_curve", "batch_entropy"):
        np.testing.assert_array_equal(without[name].values, with_probe[name].values)


def test_batch_norm_nets_have_no_dying_or_full_units(digits):
    cell = make_cell(depth=8, width=32, steps=2, log_every=1, eval_every=2, init="he_normal", neuron_every=1,
                     bn_variant="bn_gamma_beta", neuron_samples=512)
    ds, model = train(cell, digits)
    assert int(ds["n_dying"].sum()) == 0 and int(ds["n_full"].sum()) == 0
    running = [m.running_mean.clone() for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    _, model2 = train(changed(cell, neuron_every=0), digits)
    for a, b in zip(running, [m.running_mean for m in model2.modules() if isinstance(m, torch.nn.BatchNorm1d)],
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the probe's forward left the running statistics alone
