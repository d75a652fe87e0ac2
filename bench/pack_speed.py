"""Cell packs against one process per cell, side by side in one run (CPU unless CUDA is there; 1 thread).

  (a) 8 seeds of the default study's depth-30 FNN (width 256, batch 128, digits)
  (b) 16 cells of a depth-10 x width-64 FNN (4 seeds x 4 learning rates)
  (c) a 100-cell tiny study (4 steps each) end to end through Snakemake: packs vs `fuse: false`
  (d) 8 cells of cnn_3c3d on FashionMNIST-shaped inputs (1 x 28 x 28, 10 classes, random images)
  (e) with CUDA: 16 cells of paper 000's FNN (width 1000, depth 50, batch 128)

(a, b, d, e): cell-steps/s of the pack (`layerlab.training.pack.train_pack`, its cells fused into one network) and of
the same cells trained one after another (`train_cell`, what one process per cell computes), alternating, median of
`--repeats`; "+ start-up" adds the measured start-up of one process per cell (Python, torch, layerlab, the dataset).
(a) also prints the share of the single-thread matmul throughput each reaches (the FLOPs of a step's forward and
backward matmuls over the measured peak of a 128 x 256 x 256 sgemm). (c): wall time of `snakemake -c2` from an
empty results folder, both ways.

    .venv/bin/python bench/pack_speed.py [--steps 100] [--repeats 3] [--only a b c d] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from train_speed import changed, make_cell, prepared

from layerlab.data.datasets import Dataset, Split
from layerlab.nets.models import build_model
from layerlab.training.loop import train_cell
from layerlab.training.pack import build, train_pack

ROOT = Path(__file__).resolve().parents[1]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sequential(cells: dict[str, dict], data: Dataset) -> float:
    """Seconds to train the cells one after another (the training loops only: their train_seconds)."""
    total = 0.0
    for cell in cells.values():
        ds, _ = train_cell(cell, data, build_model(cell, data.input_shape, data.n_classes), DEVICE)
        total += float(ds["train_seconds"])
    return total


def packed(cells: dict[str, dict], data: Dataset) -> float:
    """Seconds to train the cells as one pack (the sum of their shares of the pack's training loop)."""
    built = {name: build(cell, data) for name, cell in cells.items()}
    results = train_pack(cells, dict.fromkeys(cells, data), built, DEVICE, dict.fromkeys(cells), fuse_convolutions=True)
    return sum(float(ds["train_seconds"]) for ds, _ in results.values())


def startup() -> float:
    """Seconds one training process spends before its first step: Python, torch, layerlab, the digits dataset."""
    code = ("import time; t = time.perf_counter(); import torch, layerlab.workflow.train_jobs; "
            "from train_speed import prepared; prepared('digits'); print(time.perf_counter() - t)")
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                 cwd=Path(__file__).parent).stdout) for _ in range(3)]
    return statistics.median(runs)


def matmul_peak(threads: int) -> float:
    """GFLOP/s of a single-thread 128 x 256 x 256 float32 matmul, the default net's layer (best of 5)."""
    a, b = torch.randn(128, 256), torch.randn(256, 256)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(200):
            torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * 128 * 256 * 256 * 200 / best / 1e9


def step_gflop(cell: dict, data: Dataset) -> float:
    """Forward and backward matmul FLOPs of one training step of an FNN cell (x W^T, its two gradients)."""
    model = build_model(cell, data.input_shape, data.n_classes)
    maps = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return 3 * 2 * cell.run.batch_size * sum(m.in_features * m.out_features for m in maps) / 1e9


def fashion_shaped(n_train: int = 2048, n_test: int = 512) -> Dataset:
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.randn(n, 1, 28, 28, generator=generator), torch.randint(0, 10, (n,), generator=generator))
    return Dataset("fashion_shaped", split(n_train), split(n_test), 10)


def cases(steps: int) -> dict[str, tuple[dict[str, dict], str]]:
    quiet = {"log_every": steps, "eval_every": steps, "steps": steps}
    default = dict(dataset="digits", model="fnn", width=256, depth=30, batch_size=128, lr=1e-4, **quiet)
    small = dict(dataset="digits", model="fnn", width=64, depth=10, batch_size=128, **quiet)
    cnn = dict(model="cnn_3c3d", batch_size=128, **quiet)
    out = {
        "a": ({f"seed {s}": make_cell(**default, seed=s) for s in range(8)}, "digits"),
        "b": ({f"seed {s} lr {lr}": make_cell(**small, seed=s, lr=lr) for s in range(4)
               for lr in (1e-4, 3e-4, 1e-3, 3e-3)}, "digits"),
        "d": ({f"seed {s}": make_cell(**cnn, seed=s) for s in range(8)}, "fashion_shaped"),
    }
    if DEVICE.type == "cuda":
        paper = dict(dataset="digits", model="fnn", width=1000, depth=50, batch_size=128, lr=1e-4, **quiet)
        out["e"] = ({f"seed {s}": make_cell(**paper, seed=s) for s in range(16)}, "digits")
    return out


def fused_vs_sequential(only: list[str], steps: int, repeats: int) -> dict[str, dict]:
    datasets = {"digits": prepared("digits"), "fashion_shaped": fashion_shaped()}
    results = {}
    for name, (cells, dataset) in cases(steps).items():
        if name not in only:
            continue
        data = datasets[dataset]
        warm = {k: changed(c, steps=3, log_every=3, eval_every=3) for k, c in list(cells.items())[:2]}
        sequential(warm, data)
        packed(warm, data)
        seconds: dict[str, list[float]] = {"sequential": [], "packed": []}
        for rep in range(repeats):
            for way, fn in (("sequential", sequential), ("packed", packed))[::1 if rep % 2 == 0 else -1]:
                seconds[way].append(fn(cells, data))
                print(f"  ({name}) rep {rep + 1}/{repeats} {way:10s} {seconds[way][-1]:7.2f} s", flush=True)
        cell_steps = len(cells) * steps
        results[name] = {way: cell_steps / statistics.median(s) for way, s in seconds.items()}
        results[name]["cells"], results[name]["steps"] = len(cells), steps
        if name == "a":
            gflop = step_gflop(next(iter(cells.values())), data)
            results[name]["gflop_per_cell_step"] = gflop
    return results


def tiny_study(workdir: Path, fuse: bool) -> float:
    """Wall seconds of `snakemake -c2` on the 100-cell tiny study (25 seeds x 4 learning rates, 4 steps each)."""
    study = {"study": "tiny100", "grid": {"seed": list(range(25)), "lr": [1e-4, 3e-4, 1e-3, 3e-3]},
             "fixed": {"dataset": "digits", "depth": 2, "width": 16, "steps": 4, "batch_size": 32, "log_every": 2,
                       "eval_every": 2}, "fuse": {} if fuse else False}
    workdir.mkdir(parents=True)
    (workdir / "study.yaml").write_text(yaml.safe_dump(study))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
                    "--configfile", str(workdir / "study.yaml"), "-c2", "-q"], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="training steps per cell in (a, b, d, e)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions")
    parser.add_argument("--only", nargs="+", default=["a", "b", "c", "d", "e"], help="which measurements")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict = {"config": {"steps": args.steps, "repeats": args.repeats, "device": str(DEVICE),
                                "torch": torch.__version__}}
    results["cases"] = fused_vs_sequential(args.only, args.steps, args.repeats)
    startup_s = startup()
    results["startup_seconds"] = startup_s
    if "c" in args.only:
        with tempfile.TemporaryDirectory() as tmp:
            walls = {"packed": [], "one job per cell": []}
            for rep in range(max(1, args.repeats // 2)):
                for way in ("one job per cell", "packed")[::1 if rep % 2 == 0 else -1]:
                    walls[way].append(tiny_study(Path(tmp) / f"{way}-{rep}".replace(" ", "_"), way == "packed"))
                    print(f"  (c) {way:17s} {walls[way][-1]:7.1f} s", flush=True)
            results["c"] = {way: statistics.median(w) for way, w in walls.items()}
    peak = matmul_peak(1)
    results["matmul_gflops"] = peak

    print(f"\ncell-steps/s on {DEVICE}, 1 thread, torch {torch.__version__} (median of {args.repeats}); one process "
          f"per cell also pays {startup_s:.2f} s of start-up per cell ('+ start-up')")
    print(f"{'case':4} {'cells':>5} {'packed':>9} {'one by one':>11} {'ratio':>6} {'+ start-up':>11}")
    for name, r in results["cases"].items():
        per_cell_startup = startup_s / r["steps"]  # seconds of start-up per cell-step
        alone_with_startup = 1 / (1 / r["sequential"] + per_cell_startup)
        print(f"({name}) {r['cells']:5d} {r['packed']:9.1f} {r['sequential']:11.1f} "
              f"{r['packed'] / r['sequential']:5.2f}x {r['packed'] / alone_with_startup:10.2f}x")
        if "gflop_per_cell_step" in r:
            for way in ("packed", "sequential"):
                share = r[way] * r["gflop_per_cell_step"] / peak
                print(f"     {way}: {share:.0%} of the single-thread matmul throughput ({peak:.0f} GFLOP/s)")
    if "c" in results:
        c = results["c"]
        print(f"(c) 100-cell tiny study through Snakemake -c2: packed {c['packed']:.1f} s, one job per cell "
              f"{c['one job per cell']:.1f} s: {c['one job per cell'] / c['packed']:.1f}x less wall time")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
