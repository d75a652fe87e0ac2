"""Planning and collecting at scale, in one run: `snakemake --version`, dry runs (`-n`) of 10-, 1,000- and
10,000-cell studies (the default study's grid widened by seeds), a no-op rerun of a completed tiny study, and,
with --cells N, that tiny study end to end: its collect job's time and peak memory (Snakemake's benchmark file),
then the same after one cell is added.

    .venv/bin/python bench/dag_scale.py [--sizes 10 1000 10000] [--cells 1000] [--cores 2] [--workdir DIR]

Prints one table: what ran, seconds, and ms per cell against the 10-cell dry run.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPTHS, LOSSES = [3, 4, 5, 6, 7], ["ce", "ce_lbe"]  # x seeds: 10 cells a seed
TINY = {"dataset": "digits", "width": 8, "steps": 4, "batch_size": 32, "log_every": 2, "eval_every": 4,
        "train_subset": 256, "test_subset": 128, "lbe_beta": 0.01}


def study(name: str, cells: int) -> dict:
    """A tiny study of `cells` cells (a multiple of 10): depth x loss x cells/10 seeds."""
    return {"study": name, "grid": {"depth": DEPTHS, "loss": LOSSES, "seed": list(range(cells // 10))},
            "fixed": TINY, "threads": 1,
            "plots": [{"name": "accuracy_vs_depth", "kind": "metric_vs_axis", "metric": "test_acc", "x": "depth",
                       "hue": "loss"}]}


def snakemake(workdir: Path, config: dict, *args: str) -> float:
    """Seconds of one Snakemake call on `config` in `workdir` (raises with its output if it fails)."""
    path = workdir / f"{config['study']}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile",
           str(path), *args]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return seconds


def collect_benchmark(workdir: Path, name: str) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of the study's last collect job."""
    with open(workdir / f"results/{name}/benchmarks/collect.tsv") as f:
        row = next(csv.DictReader(f, delimiter="\t"))
    return float(row["s"]), float(row["max_rss"])


class Rows(list):
    """The table, printed a row at a time (a 1,000-cell run takes a while): ms per cell, and for dry runs the
    extra ms per cell over the smallest one."""

    def __init__(self, smallest: int):
        super().__init__()
        self.smallest, self.base = smallest, None
        print(f"{'':44} {'seconds':>9} {'ms/cell':>9} {'+ms/cell vs smallest dry run':>30}", flush=True)

    def append(self, row: tuple[str, float, int | None]) -> None:
        what, seconds, n = row
        if what.startswith("dry") and n == self.smallest:
            self.base = seconds
        per = f"{1000 * seconds / n:9.1f}" if n else f"{'':9}"
        extra = f"{1000 * (seconds - self.base) / (n - self.smallest):30.2f}" \
            if self.base is not None and what.startswith("dry") and n > self.smallest else ""
        print(f"{what:44} {seconds:9.2f} {per} {extra}", flush=True)
        super().append(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--cells", type=int, default=0, help="run a tiny study of this many cells end to end")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the tiny study here (reused if complete)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dag_scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = Rows(min(args.sizes))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "--version"], check=True, capture_output=True)
    rows.append(("snakemake --version", time.perf_counter() - start, None))
    for n in args.sizes:
        rows.append((f"dry run, {n} cells", snakemake(workdir, study(f"dry{n}", n), "-n"), n))
    if args.cells:
        tiny = study("tiny", args.cells)
        rows.append((f"run, {args.cells} cells", snakemake(workdir, tiny, f"-c{args.cores}"), args.cells))
        seconds, rss = collect_benchmark(workdir, "tiny")
        rows.append((f"  its collect job (peak {rss:.0f} MB)", seconds, args.cells))
        rows.append((f"no-op rerun, {args.cells} cells", snakemake(workdir, tiny, f"-c{args.cores}"), args.cells))
        tiny["cells"] = [{"depth": DEPTHS[0], "loss": LOSSES[0], "seed": args.cells}]  # one new cell (a new seed)
        rows.append(("rerun with 1 added cell", snakemake(workdir, tiny, f"-c{args.cores}"), args.cells + 1))
        seconds, rss = collect_benchmark(workdir, "tiny")
        rows.append((f"  its collect job (peak {rss:.0f} MB)", seconds, args.cells + 1))
    print(f"(work folder: {workdir})")


if __name__ == "__main__":
    main()
