"""Cost of one curvature measurement (paper 004's K-FAC factors, spectra, condition numbers) against one training step.

For each (depth, width, bn_variant) MLP on FashionMNIST (digits if it is not prepared) and paper 004's ResNet
without and with LastBN (width 4, FashionMNIST pooled to 14x14), interleaved repetitions:
  step     one SGD training step: forward, cross-entropy, zero_grad, backward, step (batch `--batch`)
  measure  layerlab.probes.curvature.measure on `--samples` rows: forward + backward to the layer outputs, the
           float64 factors, eigvalsh of every factor and the sorted Kronecker product spectra
Reports the medians (s) and measure/step. Run the measurement every N steps and it costs ratio/N of the training.

    .venv/bin/python bench/curvature_cost.py [--depth 19 10] [--width 256] [--samples 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from layerlab.catalog.models import ResNetParams
from layerlab.core.cell import Cell
from layerlab.core.sections import DataParams
from layerlab.data.datasets import load
from layerlab.nets.models import build_model
from layerlab.probes.curvature import measure

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, nargs="+", default=[19, 10])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--resnet-depth", type=int, nargs="*", default=[56],
                    help="paper 004's ResNet (width 4, 14x14 inputs) without and with LastBN")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    name = "fashion_mnist" if (ROOT / "resources/datasets/fashion_mnist.npz").exists() else "digits"
    path = ROOT / f"resources/datasets/{name}.npz"
    mlp, pooled = load(path), load(path, data=DataParams(input_pool=2 if name == "fashion_mnist" else 1))
    resnet = {"model": "resnet", "width": 4, "bn_variant": "bn_gamma_beta", "init": "he_fan_out"}
    cases = [({"depth": d, "width": args.width, "bn_variant": bn}, mlp)
             for d in args.depth for bn in ("none", "bn_gamma_beta")]
    cases += [({**resnet, "depth": d, "last_bn": last_bn}, pooled)
              for d in args.resnet_depth for last_bn in (False, True)]
    rows = []
    for overrides, data in cases:
        cell = Cell.parse(overrides)
        model = build_model(cell, data.input_shape, data.n_classes).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        xb, yb = data.train.x[: args.batch], data.train.y[: args.batch]
        xs, ys = data.train.x[: args.samples], data.train.y[: args.samples]

        def step(model=model, opt=opt, xb=xb, yb=yb) -> None:
            loss = F.cross_entropy(model(xb)[0], yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()
        measure(model, xs, ys, "empirical")  # warm-up
        t_step, t_measure = [], []
        for _ in range(args.repeats):
            tic = time.perf_counter()
            for _ in range(5):
                step()
            t_step.append((time.perf_counter() - tic) / 5)
            tic = time.perf_counter()
            measure(model, xs, ys, "empirical")
            t_measure.append(time.perf_counter() - tic)
        s, m = statistics.median(t_step), statistics.median(t_measure)
        net = cell.model
        variant = net.bn_variant if net.model == "fnn" else "lastbn" if cell[ResNetParams].last_bn else "original"
        rows.append({"dataset": name, "model": net.model, "depth": net.depth, "width": net.width,
                     "variant": variant, "batch": args.batch, "samples": args.samples, "step_s": s,
                     "measure_s": m, "ratio": m / s})
    print(f"{'model':>6} {'depth':>5} {'variant':>14} {'step (s)':>9} {'measure (s)':>11} {'measure/step':>12}")
    for r in rows:
        print(f"{r['model']:>6} {r['depth']:>5} {r['variant']:>14} {r['step_s']:>9.4f} {r['measure_s']:>11.3f} "
              f"{r['ratio']:>12.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "torch": torch.__version__, "rows": rows}, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
