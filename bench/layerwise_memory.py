"""Relative memory of layer-wise / segment-wise training without training (paper 001 Ch. 6; seed notes E6b).

For each network, one tracked training step (layerlab.probes.memory) of full backprop and of every layer-wise
stage on a random batch: peak over stages / backprop = the thesis's "relative memory" (Table 6.3). Schema
defaults, then `--batch`, then the overrides below; CUDA when available (then also the allocator's peak per step).

The second table compares the decision heads of layer-wise training (k = 1): `linear`, `pool_linear`, a fixed
`decision_block` (schema defaults: 1 down-conv of 64 channels), the decision blocks fitted per stage by the memory
search (`layerlab.training.regimes.layerwise.fit_heads`) to each `--targets` value (at most `--max-dc` down-convs of at
most 256 channels; the thesis: 0.3, Max. DC 4), and the floor (the smallest head of every stage: no target below it is
reachable). Each fitted profile is measured again directly at the full batch (`memory_profile`).

    .venv/bin/python bench/layerwise_memory.py [--batch 128] [--segment-size 1 2] [--targets 0.3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from layerlab.core.cell import Cell
from layerlab.core.params import as_dict
from layerlab.nets.models import build_model
from layerlab.training.head_search import memory_profile
from layerlab.training.regimes.layerwise import fit_heads

NETWORKS = {  # name: (input shape, classes, cell overrides)
    "mlp_784-256x4_sgd": ((1, 28, 28), 10, {"model": "fnn", "depth": 4, "width": 256, "optimizer": "sgd",
                                             "momentum": 0.9}),
    "all_cnn_c_cifar_adam": ((3, 32, 32), 10, {"model": "all_cnn_c", "optimizer": "adam"}),
    "cnn3c3d_cifar_adam": ((3, 32, 32), 10, {"model": "cnn_3c3d", "optimizer": "adam"}),
    "cnn10x8_digits_sgd_b256": ((1, 8, 8), 10, {"model": "cnn", "depth": 10, "width": 8, "optimizer": "sgd",
                                                "momentum": 0.9, "batch_size": 256}),  # decision_blocks.yaml's
}
FLOOR = 1e-9  # a target below every head: the search returns each stage's smallest


def profile(cell: Cell, shape: tuple[int, ...], n_classes: int, device: torch.device, search: bool = False) -> dict:
    """One row: backprop and per-stage bytes (direct measurement), the ratio; with `search` the fitted heads."""
    model = build_model(cell, shape, n_classes).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(cell.run.batch_size, *shape, generator=gen).to(device)
    y = torch.randint(0, n_classes, (cell.run.batch_size,), generator=gen).to(device)
    fit = fit_heads(cell, model, x, y, n_classes) if search else None
    backprop, stages = memory_profile(cell, model, x, y, n_classes, fit.heads if fit else None)
    row = {"backprop_bytes": backprop.total, "stage_bytes": [m.total for m in stages],
           "ratio": max(m.total for m in stages) / backprop.total,
           "backprop_cuda_bytes": backprop.cuda, "stage_cuda_bytes": [m.cuda for m in stages],
           "backprop_parts": backprop.parts(), "peak_stage_parts": max(stages, key=lambda m: m.total).parts()}
    if fit:
        row |= {"heads": [as_dict(h) if h else {} for h in fit.heads], "search_ratio": fit.relative_memory}
    return row


def heads_text(heads: list[dict]) -> str:
    return " ".join(f"{h['decision_convs']}x{h['decision_channels'] if h['decision_convs'] else '-'}"
                    for h in heads[:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--segment-size", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--targets", type=float, nargs="*", default=[0.3])
    parser.add_argument("--max-dc", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    print(f"{'network':26} {'k':>2} {'backprop MB':>12} {'stage peak MB':>14} {'ratio':>6}  per stage / backprop")
    for name, (shape, n_classes, overrides) in NETWORKS.items():
        for k in args.segment_size:
            cell = Cell.parse({"batch_size": args.batch, **overrides, "segment_size": k,
                               "training": "layerwise" if k == 1 else "segmentwise"})
            row = {"network": name, "segment_size": k, "head": "linear", **profile(cell, shape, n_classes, device)}
            rows.append(row)
            print(f"{name:26} {k:>2} {row['backprop_bytes'] / 1e6:12.2f} {max(row['stage_bytes']) / 1e6:14.2f} "
                  f"{row['ratio']:6.1%}  " + " ".join(f"{b / row['backprop_bytes']:.0%}" for b in row["stage_bytes"]))
            if device.type == "cuda":
                print(f"{'':26} CUDA allocator: backprop {row['backprop_cuda_bytes'] / 1e6:.2f} MB, stage peak "
                      f"{max(row['stage_cuda_bytes']) / 1e6:.2f} MB")
    print(f"\n{'network (k = 1)':26} {'head':22} {'ratio':>6} {'search':>7}  down-convs x channels per stage")
    for name, (shape, n_classes, overrides) in NETWORKS.items():
        if overrides["model"] == "fnn":
            continue  # no conv maps: every head is the Linear classifier
        base = {"batch_size": args.batch, **overrides, "training": "layerwise",
                "decision_convs": args.max_dc, "decision_channels": 256}
        variants = [("pool_linear", {"layer_head": "pool_linear"}, False),
                    ("decision_block 1x64", {"layer_head": "decision_block", "decision_convs": 1,
                                             "decision_channels": 64}, False)]
        variants += [(f"fitted to {t:g}", {"layer_head": "decision_block", "memory_target": t}, True)
                     for t in [*args.targets, FLOOR]]
        for label, extra, search in variants:
            label = "floor (smallest heads)" if extra.get("memory_target") == FLOOR else label
            row = {"network": name, "segment_size": 1, "head": label,
                   **profile(Cell.parse({**base, **extra}), shape, n_classes, device, search)}
            rows.append(row)
            print(f"{name:26} {label:22} {row['ratio']:6.1%} "
                  f"{row.get('search_ratio', float('nan')):7.1%}  {heads_text(row['heads']) if search else ''}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": str(device), "batch": args.batch, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
