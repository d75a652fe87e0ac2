"""Relative memory of layer-wise / segment-wise training without training (paper 001 Ch. 6; seed notes E6b).

For each network, one tracked training step (layerlab.probes.memory) of full backprop and of every layer-wise
stage on a random batch: peak over stages / backprop = the thesis's "relative memory" (Table 6.3). Schema
defaults, then the overrides below; CUDA when available (then also the allocator's peak per step).

    .venv/bin/python bench/layerwise_memory.py [--batch 128] [--segment-size 1 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from layerlab.layerwise import memory_profile
from layerlab.models import build_model

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/cell.schema.yaml").read_text())
DEFAULTS = {k: v["default"] for k, v in SCHEMA["properties"].items()}
NETWORKS = {  # name: (input shape, classes, cell overrides)
    "mlp_784-256x4_sgd": ((1, 28, 28), 10, {"model": "fnn", "depth": 4, "width": 256, "optimizer": "sgd",
                                             "momentum": 0.9}),
    "all_cnn_c_cifar_adam": ((3, 32, 32), 10, {"model": "all_cnn_c", "optimizer": "adam"}),
    "cnn3c3d_cifar_adam": ((3, 32, 32), 10, {"model": "cnn_3c3d", "optimizer": "adam"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--segment-size", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    print(f"{'network':24} {'k':>2} {'backprop MB':>12} {'stage peak MB':>14} {'ratio':>6}  per stage / backprop")
    for name, (shape, n_classes, overrides) in NETWORKS.items():
        for k in args.segment_size:
            cell = {**DEFAULTS, **overrides, "batch_size": args.batch, "segment_size": k,
                    "training": "layerwise" if k == 1 else "segmentwise"}
            model = build_model(cell, shape, n_classes).to(device)
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(args.batch, *shape, generator=gen).to(device)
            y = torch.randint(0, n_classes, (args.batch,), generator=gen).to(device)
            backprop, stages = memory_profile(cell, model, x, y, n_classes)
            per_stage = [m.total / backprop.total for m in stages]
            row = {"network": name, "segment_size": k, "backprop_bytes": backprop.total,
                   "stage_bytes": [m.total for m in stages], "ratio": max(per_stage),
                   "backprop_cuda_bytes": backprop.cuda, "stage_cuda_bytes": [m.cuda for m in stages],
                   "backprop_parts": backprop.parts(), "peak_stage_parts": max(stages, key=lambda m: m.total).parts()}
            rows.append(row)
            print(f"{name:24} {k:>2} {backprop.total / 1e6:12.2f} {max(m.total for m in stages) / 1e6:14.2f} "
                  f"{row['ratio']:6.1%}  " + " ".join(f"{r:.0%}" for r in per_stage))
            if device.type == "cuda":
                print(f"{'':24} CUDA allocator: backprop {backprop.cuda / 1e6:.2f} MB, stage peak "
                      f"{max(m.cuda for m in stages) / 1e6:.2f} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": str(device), "batch": args.batch, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
