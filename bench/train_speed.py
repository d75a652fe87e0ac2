"""Training speed of the pipeline's loop against a bare torch loop of the same model (CPU).

Variants, measured in one run with interleaved repetitions (so machine noise hits them alike):
  bare            plain loop: random batch, forward, cross-entropy, zero_grad, backward, Adam step
  pipeline        layerlab.training.loop.train_cell, probes/evals only at step 0 and the last step
  pipeline+probe  train_cell with the batch-entropy probe every step (log_every=1)
  pipeline+lbe    train_cell with loss=ce_lbe (batch entropy of every regularized layer each step)
Each reports steps/s over the training loop only: train_cell's own `train_seconds` (which includes its
step-0/last-step logging and test evals, and one extra forward at the last step) and, for bare, the loop alone.

    .venv/bin/python bench/train_speed.py [--steps 200] [--repeats 3] [--depth 30 10] [--threads 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset, load, prepare
from layerlab.nets.models import build_model
from layerlab.training.loop import train_cell
from layerlab.training.optim import make_optimizer

ROOT = Path(__file__).resolve().parents[1]
DEVICE = torch.device("cpu")


def make_cell(**overrides: object) -> Cell:
    """A typed cell: `overrides` (which must be cell parameters) and the defaults."""
    return Cell.parse(overrides)


def changed(cell: Cell, **overrides: object) -> Cell:
    """`cell` with other values of some of its keys."""
    return Cell.parse({**cell.to_dict(), **overrides})


def prepared(name: str) -> Dataset:
    """Dataset `name` prepared offline into a temporary folder and loaded on DEVICE."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.npz"
        prepare(name, path, Path(tmp) / "downloads")
        return load(path, DEVICE)


def bare(cell: Cell, data: Dataset) -> float:
    """Steps/s of a plain training loop of the cell's model (timed: the loop only)."""
    model = build_model(cell, data.input_shape, data.n_classes).to(DEVICE).train()
    optimizer = make_optimizer(cell.optimizer, list(model.parameters()))
    x_all, y_all = data.train.x, data.train.y
    generator = torch.Generator().manual_seed(cell.run.seed)
    start = time.perf_counter()
    for _ in range(cell.run.steps):
        idx = torch.randint(len(y_all), (cell.run.batch_size,), generator=generator)
        logits, _ = model(x_all[idx])
        loss = F.cross_entropy(logits, y_all[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return cell.run.steps / (time.perf_counter() - start)


def pipeline(cell: Cell, data: Dataset) -> float:
    """Steps/s of train_cell, from its own `train_seconds` (the loop only, not the final train-set eval)."""
    model = build_model(cell, data.input_shape, data.n_classes)
    ds, _ = train_cell(cell, data, model, DEVICE)
    assert not bool(ds["diverged"]), "benchmark run diverged"
    return cell.run.steps / float(ds["train_seconds"])


def variants(depth: int, steps: int) -> dict[str, tuple[Callable[[Cell, Dataset], float], Cell]]:
    base = make_cell(dataset="digits", model="fnn", width=256, depth=depth, batch_size=128, activation="relu",
                     init="torch_default", steps=steps, lr=1e-4, log_every=steps + 1, eval_every=steps + 1)
    return {
        "bare": (bare, base),
        "pipeline": (pipeline, base),
        "pipeline+probe": (pipeline, changed(base, log_every=1)),
        "pipeline+lbe": (pipeline, changed(base, loss="ce_lbe")),
    }


def run(data: Dataset, depths: list[int], steps: int, repeats: int) -> dict[int, dict[str, list[float]]]:
    """Steps/s samples per depth and variant; each repetition runs every (depth, variant) once, in rotated order."""
    jobs = [(d, name, fn, cell) for d in depths for name, (fn, cell) in variants(d, steps).items()]
    for _, _, fn, cell in jobs:  # warm-up (allocator, lazy init), not recorded
        fn(changed(cell, steps=5, log_every=min(cell.run.log_every, 6), eval_every=6), data)
    samples: dict[int, dict[str, list[float]]] = {d: {} for d in depths}
    for rep in range(repeats):
        shift = rep % len(jobs)
        for d, name, fn, cell in jobs[shift:] + jobs[:shift]:
            samples[d].setdefault(name, []).append(fn(cell, data))
            print(f"  rep {rep + 1}/{repeats} depth {d:3d} {name:15s} {samples[d][name][-1]:7.2f} steps/s", flush=True)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="training steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--depth", type=int, nargs="+", default=[30, 10], help="FNN depths (one table row each)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = prepared("digits")
    start = time.perf_counter()
    samples = run(data, args.depth, args.steps, args.repeats)

    names = list(next(iter(samples.values())))
    medians = {d: {n: statistics.median(v) for n, v in row.items()} for d, row in samples.items()}
    print(f"\nsteps/s (median of {args.repeats}), FNN width 256, batch 128, digits, {args.steps} steps, "
          f"{args.threads} thread(s), torch {torch.__version__}; (x) = ratio to bare")
    print(f"{'depth':>5} | " + " | ".join(f"{n:>22s}" for n in names))
    for d, row in medians.items():
        cells = [f"{row[n]:8.2f} ({row[n] / row['bare']:.2f}x)" for n in names]
        print(f"{d:>5} | " + " | ".join(f"{c:>22s}" for c in cells))
    print(f"total {time.perf_counter() - start:.0f} s")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "config": {"steps": args.steps, "repeats": args.repeats, "threads": args.threads, "width": 256,
                       "batch_size": 128, "dataset": "digits", "torch": torch.__version__},
            "depths": {str(d): {n: {"samples": samples[d][n], "median": medians[d][n],
                                    "ratio_to_bare": medians[d][n] / medians[d]["bare"]} for n in names}
                       for d in samples},
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
