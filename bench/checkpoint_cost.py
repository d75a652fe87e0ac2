"""Cost of one training checkpoint (layerlab.training.checkpoint) against the training it protects, side by side in one
run.

For each network: the wall time of one training step, of taking the loop's state and writing it atomically (one
`Checkpoint.save`), the file size, and the overhead of checkpointing at the default interval (every 10 minutes of
training) and every N steps. Networks: the default study's deepest cell (digits, 50 x 256 ReLU FNN, Adam) and a
paper-size one (ResNet-1202 of last_layer_paper, SGD + Nesterov, on a CIFAR-shaped batch of 16: at the paper's
128 the saved activations of 1,202 layers exceed a 24 GB machine on the CPU; the checkpoint does not depend on the
batch, the per-step overhead column does).

    python bench/checkpoint_cost.py [--repeats 5] [--every 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset, Split
from layerlab.nets.models import build_model
from layerlab.training.checkpoint import Checkpoint
from layerlab.training.loop import Loop

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = {
    "default study, depth 50 FNN (digits)": ({"depth": 50, "width": 256, "batch_size": 128}, (1, 8, 8), 1437),
    "ResNet-1202 (CIFAR, batch 16)": ({"model": "resnet", "depth": 1202, "width": 16, "bn_variant": "bn_gamma_beta",
                                   "init": "he_fan_out", "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                                   "nesterov": True, "batch_size": 16}, (3, 32, 32), 64),
}


def synthetic(shape: tuple[int, ...], n: int) -> Dataset:
    """Random tensors of the network's input shape (the cost does not depend on the values)."""
    generator = torch.Generator().manual_seed(0)
    split = Split(torch.randn(n, *shape, generator=generator), torch.randint(0, 10, (n,), generator=generator))
    return Dataset("synthetic", split, split, 10)


def measure(overrides: dict, shape: tuple[int, ...], n: int, repeats: int, every: int) -> dict[str, float]:
    cell = Cell.parse({"log_every": 10**9, "eval_every": 10**9, **overrides})
    data = synthetic(shape, n)
    model = build_model(cell, shape, 10)
    loop = Loop(cell, data, model)
    stage = loop.regime.stage(0)
    loop.begin_stage(stage)
    step_times = []
    for t in range(repeats + 1):
        tic = time.perf_counter()
        state = loop.forward(stage, t)
        loop.update(stage, state)
        step_times.append(time.perf_counter() - tic)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Checkpoint(tmp, cell)
        save_times = []
        for _ in range(repeats):
            tic = time.perf_counter()
            checkpoint.save(loop.state(stage, repeats + 1))
            save_times.append(time.perf_counter() - tic)
        size = checkpoint.path.stat().st_size
    step, save = statistics.median(step_times[1:]), statistics.median(save_times)
    return {"step_ms": 1e3 * step, "save_ms": 1e3 * save, "mb": size / 1e6,
            "overhead_10min": save / 600, "overhead_every": save / (every * step), "save_in_steps": save / step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--every", type=int, default=1000, help="a step interval to report the overhead of")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"| network | step (ms) | one checkpoint (ms) | size (MB) | = steps | overhead, every 10 min | "
          f"overhead, every {args.every} steps |")
    print("|---|---|---|---|---|---|---|")
    for name, (overrides, shape, n) in NETWORKS.items():
        r = measure(overrides, shape, n, args.repeats, args.every)
        print(f"| {name} | {r['step_ms']:.1f} | {r['save_ms']:.0f} | {r['mb']:.1f} | {r['save_in_steps']:.2f} | "
              f"{100 * r['overhead_10min']:.3f} % | {100 * r['overhead_every']:.3f} % |")


if __name__ == "__main__":
    main()
