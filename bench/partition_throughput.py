"""Throughput of partition-wise training (DPL, paper 001 Sec. 6.8) against backprop (CPU).

The partitionwise quick study's network (FNN 784-256x4 ReLU, batch 128, SGD momentum) on FashionMNIST, in
`--partitions` partitions; each partition gets as many updates as backprop (as the thesis: "DPL identical except lr
and wd"). Variants, measured in one run with interleaved repetitions (machine noise hits them alike):
  backprop          the whole network, `--steps` updates
  dpl               partitionwise, `--steps` updates per partition (the upper ones through the frozen feednet)
  dpl+loss_filter   the same, 25 % of every upper-partition batch dropped by the first partition's loss (Sec. 6.8.4)
Each reports examples/s (updates x batch / train_cell's `train_seconds`) and the wall time of the whole run relative
to backprop (the thesis's CINIC10+: bottom-up DPL with a feednet 8h50m vs 5h31m, 1.60x).

    .venv/bin/python bench/partition_throughput.py [--steps 300] [--repeats 3] [--partitions 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from train_speed import DEVICE, changed, make_cell, prepared

from layerlab.data.datasets import Dataset
from layerlab.nets.models import build_model
from layerlab.training.loop import train_cell


def variants(steps: int, partitions: int) -> dict[str, dict]:
    base = make_cell(dataset="fashion_mnist", model="fnn", depth=4, width=256, activation="relu", batch_size=128,
                     optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=8e-5, steps=steps, layer_steps=steps,
                     segment_size=4 // partitions, layer_lr_decay=0.5, layer_wd_growth=0.5, log_every=steps + 1,
                     eval_every=steps + 1)
    return {"backprop": base, "dpl": changed(base, training="partitionwise"),
            "dpl+loss_filter": changed(base, training="partitionwise", loss_filter=0.25)}


def examples_per_second(cell: dict, data: Dataset) -> tuple[float, float]:
    """(examples/s, seconds) of one training run (train_cell's own loop time)."""
    ds, _ = train_cell(cell, data, build_model(cell, data.input_shape, data.n_classes), DEVICE)
    seconds = float(ds["train_seconds"])
    stages = 1 if cell.regime.training == "backprop" else -(-4 // cell.regime.segment_size)
    kept = [1.0] + [1 - cell.regime.loss_filter] * (stages - 1)  # examples per update of each stage, as a fraction
    return sum(kept) * cell.run.steps * cell.run.batch_size / seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="updates of backprop and of each partition")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--partitions", type=int, default=2, choices=[2, 4], help="partitions of the 4 layers")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = prepared("fashion_mnist")
    jobs = variants(args.steps, args.partitions)
    for cell in jobs.values():  # warm-up, not recorded
        examples_per_second(changed(cell, steps=5, layer_steps=5, log_every=6, eval_every=6), data)
    start = time.perf_counter()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in jobs}
    names = list(jobs)
    for rep in range(args.repeats):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            samples[name].append(examples_per_second(jobs[name], data))
            print(f"  rep {rep + 1}/{args.repeats} {name:16s} {samples[name][-1][0]:9.0f} examples/s "
                  f"{samples[name][-1][1]:6.2f} s", flush=True)
    rate = {n: statistics.median(s[0] for s in v) for n, v in samples.items()}
    wall = {n: statistics.median(s[1] for s in v) for n, v in samples.items()}
    print(f"\nmedian of {args.repeats}: FNN 784-256x4, batch 128, FashionMNIST, {args.steps} updates per stage, "
          f"{args.partitions} partitions, {args.threads} thread(s), torch {torch.__version__}")
    print(f"{'variant':16s} | {'examples/s':>10s} | {'x backprop':>10s} | {'run s':>7s} | {'run x backprop':>14s}")
    for n in names:
        print(f"{n:16s} | {rate[n]:10.0f} | {rate[n] / rate['backprop']:9.2f}x | {wall[n]:7.2f} | "
              f"{wall[n] / wall['backprop']:13.2f}x")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
