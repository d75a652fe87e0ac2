"""The CUDA path end to end, on a GPU machine, in under 8 minutes (issue 16.13); run it with bench/gpu_check.sh.

1. every quick study (config/config.yaml and config/studies/*.yaml but *_paper.yaml), shortened (few steps, at
   most `--max-cells` cells, small data subsets, no figures), plus a study of the CUDA-only code paths no quick
   study uses (layer-wise dropout generators, crop_flip, sampled curvature labels, ResNet/PreResNet, conv heads),
   runs through Snakemake twice: on the CPU (LAYERLAB_DEVICE=cpu) and on the GPU, where every study's training
   jobs share GPU 0 through the slot pool (`gpus: {devices: [0], slots_per_gpu: 2}`, `--resources gpu=2`);
2. the CUDA cells are compared with the CPU cells within TOLERANCES; every CUDA cell must say device cuda;
3. two training jobs of the default study must have held GPU 0 at the same time (both slot locks taken, their
   train logs' intervals overlap);
4. the default study's cells train in this process on each device for `--speed-steps` steps: cells/hour per job
   at the study's own step count (extrapolated linearly), torch.cuda.max_memory_allocated over each cell;
5. one cell trains twice on the GPU: identical losses (deterministic algorithms), warnings of ops without a
   deterministic CUDA implementation listed;
then writes bench/out/gpu_check/summary.json and summary.md. Exit 0: all checks pass, 1: a check failed,
2: no CUDA here. `--device cpu` runs the same logic with the CPU in the GPU's place (the pool still hands out
GPU 0's slots, the jobs fall back to the CPU), in a tiny configuration: tests/test_gpu_check.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from layerlab.core.cell import Cell  # noqa: E402
from layerlab.core.store import read_store  # noqa: E402
from layerlab.data.datasets import DatasetUnavailable, input_shape, load, prepare, read_provenance, verify  # noqa: E402

TOLERANCES = {
    "loss0_rtol": 1e-2,  # loss at step 0: same init, same batch; differs only by float32 rounding (and TF32 convs)
    "test_acc_abs": 0.05,  # final test accuracy after the shortened training (float differences grow with steps)
}
POOL = {"devices": [0], "slots_per_gpu": 2}
SUBSETS = (2000, 500)  # train/test rows of every dataset but digits in the shortened studies
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def quick_studies() -> list[Path]:
    studies = sorted(p for p in (ROOT / "config/studies").glob("*.yaml") if not p.stem.endswith("_paper"))
    return [ROOT / "config/config.yaml", *studies]


def trim_grid(grid: dict[str, list], max_cells: int) -> dict[str, list]:
    """The grid's first value on every axis, then the second value of the first axes while <= max_cells cells."""
    out, cells = {axis: values[:1] for axis, values in grid.items()}, 1
    for axis, values in grid.items():
        if len(values) > 1 and cells * 2 <= max_cells:
            out[axis], cells = values[:2], cells * 2
    return out


def shorten(config: dict, steps: int, max_cells: int) -> dict:
    """A tiny copy of a study config: same name, axes and fixed keys, fewer cells and steps, no explicit cells,
    figures or claims (they do not depend on the device; a trimmed grid lacks the values claims select)."""
    fixed = dict(config.get("fixed", {}))
    every = {"log_every": max(1, steps // 4), "eval_every": max(1, steps // 2)}
    fixed.update(steps=steps, **every)
    if "layer_steps" in fixed:
        fixed["layer_steps"] = steps
    for every in ("curvature_every", "neuron_every", "representation_every"):
        if fixed.get(every):
            fixed[every] = max(1, steps // 2)
    if "representation_at" in fixed:
        fixed["representation_at"] = [s for s in fixed["representation_at"] if s <= steps]
    if "quantize_every" in fixed:
        fixed["quantize_every"] = min(fixed["quantize_every"], max(1, steps // 4))
    if "cascade_epochs" in fixed:
        fixed["cascade_epochs"] = min(fixed["cascade_epochs"], 1)
    if "representation" in config.get("measurements", []) or fixed.get("representation_every") or \
            fixed.get("representation_at"):
        fixed["representation_samples"] = 200
    if fixed.get("dataset", "digits") != "digits":
        fixed["train_subset"] = min(fixed.get("train_subset") or SUBSETS[0], SUBSETS[0])
        fixed["test_subset"] = min(fixed.get("test_subset") or SUBSETS[1], SUBSETS[1])
        fixed["batch_size"] = min(fixed.get("batch_size", 128), fixed["train_subset"])
    return {**config, "grid": trim_grid(config["grid"], max_cells), "fixed": fixed, "cells": [], "plots": [],
            "claims": []}


def paths_study(steps: int) -> dict:
    """Cells on digits for the device-sensitive code that no quick study reaches."""
    short = {"steps": steps, "log_every": max(1, steps // 4), "eval_every": max(1, steps // 2)}
    resnet = {"depth": 8, "width": 4, "bn_variant": "bn_gamma_beta", "init": "he_fan_out", "optimizer": "sgd",
              "lr": 0.05, "momentum": 0.9, "nesterov": True, "lr_milestones": [max(1, steps // 2)],
              "augment": "crop_flip", "input_scaling": "standardize_channels",
              "curvature_every": max(1, steps // 2), "curvature_samples": 64, "curvature_labels": "sampled"}
    return {"study": "gpu_paths", "grid": {"model": ["fnn"]}, "fixed": {"dataset": "digits", **short}, "plots": [],
            "cells": [  # each names the grid axis `model`; the first replaces the grid's one cell
                {"model": "fnn", "training": "segmentwise", "segment_size": 2, "depth": 3, "width": 32,
                 "layer_steps": steps, "input_dropout": 0.2, "grad_dropout": 0.3, "optimizer": "sgd", "lr": 0.05},
                {"model": "resnet", "last_bn": True, **resnet},
                {"model": "preresnet", "last_bn": True, **resnet},
                {"model": "cnn", "training": "layerwise", "layer_head": "pool_linear", "depth": 2, "width": 8,
                 "layer_steps": steps, "input_dropout": 0.1, "grad_dropout": 0.1},
            ]}


def snakemake(workdir: Path, env: dict, cores: int, gpu_slots: int | None, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile",
           str(workdir / "study.yaml"), f"-c{cores}", *(["--resources", f"gpu={gpu_slots}"] if gpu_slots else [])]
    tic = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(1.0, timeout))
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired:
        rc, tail = 124, "timed out (budget)"
    return {"rc": rc, "seconds": round(time.perf_counter() - tic, 1), "tail": tail if rc else ""}


def cell_results(workdir: Path, study: str) -> dict[str, dict]:
    """Per cell (id = path under cells/): device, step-0 loss, final test accuracy, divergence, memory peaks."""
    base = workdir / "results" / study / "cells"
    out = {}
    for store in sorted(base.glob("**/train.zarr")):
        ds = read_store(store)
        cid = str(store.parent.relative_to(base))
        cell = json.loads(ds.attrs["config"])
        out[cid] = {
            "device": ds.attrs.get("device"),
            "loss0": float(ds["loss"].isel(step=0)) if "loss" in ds and ds["loss"].sizes.get("step") else math.nan,
            "test_acc": float(ds["test_acc"]),
            "diverged": bool(ds["diverged"]),
            "train_seconds": float(ds["train_seconds"]),
            "cuda_peak_memory_bytes": float(ds["cuda_peak_memory_bytes"]) if "cuda_peak_memory_bytes" in ds
            else math.nan,
            "peak_memory_bytes": float(ds["peak_memory_bytes"]) if "peak_memory_bytes" in ds else math.nan,
            "random_forward": cell.get("input_dropout", 0) > 0,  # its step-0 loss depends on the device's RNG
        }
    return out


def compare(ref: dict[str, dict], acc: dict[str, dict], accel: str) -> list[dict]:
    """One row per cell: the checks of the accelerated cell against the CPU cell, and whether each passed."""
    rows = []
    for cid in sorted(set(ref) | set(acc)):
        if cid not in ref or cid not in acc:
            rows.append({"cell": cid, "ok": False, "why": "missing on " + ("cpu" if cid not in ref else accel)})
            continue
        r, a = ref[cid], acc[cid]
        why = []
        if a["device"] != accel:
            why.append(f"ran on {a['device']}")
        if r["diverged"] != a["diverged"]:
            why.append(f"diverged cpu {r['diverged']} vs {a['diverged']}")
        elif not r["diverged"]:
            if not r["random_forward"] and not math.isclose(r["loss0"], a["loss0"], rel_tol=TOLERANCES["loss0_rtol"]):
                why.append(f"loss0 {r['loss0']:.6g} vs {a['loss0']:.6g}")
            if abs(r["test_acc"] - a["test_acc"]) > TOLERANCES["test_acc_abs"]:
                why.append(f"test_acc {r['test_acc']:.4f} vs {a['test_acc']:.4f}")
        rows.append({"cell": cid, "ok": not why, "why": "; ".join(why), "loss0_cpu": r["loss0"],
                     "loss0_accel": a["loss0"], "test_acc_cpu": r["test_acc"], "test_acc_accel": a["test_acc"],
                     "cuda_peak_memory_bytes": a["cuda_peak_memory_bytes"],
                     "peak_memory_bytes": a["peak_memory_bytes"]})
    return rows


def log_interval(path: Path) -> tuple[float, float] | None:
    stamps = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
              for line in path.read_text().splitlines() if (m := LOG_TIME.match(line))]
    return (stamps[0], stamps[-1]) if stamps else None


def pool_check(workdir: Path, study: str, accel: str) -> dict:
    """Did two training jobs hold GPU 0 at once? A job takes slot 1's lock only while another live job holds slot
    0's; the train logs' first and last lines bound each job's training (their overlap is reported too)."""
    locks = sorted(p.name for p in (workdir / ".snakemake/layerlab-gpu-locks").glob("*.lock"))
    logs = workdir / "results" / study / "logs/train"
    spans = [s for p in sorted(logs.glob("**/*.log")) if (s := log_interval(p))]
    overlap = any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:])
    devices = {r["device"] for r in cell_results(workdir, study).values()}
    ok = {"gpu0.slot0.lock", "gpu0.slot1.lock"} <= set(locks) and devices == {accel}
    return {"ok": ok, "locks": locks, "devices": sorted(devices), "train_jobs": len(spans),
            "train_intervals_overlap": overlap}


def default_cells(steps: int) -> dict[str, dict]:
    """The default study's cells with every schema default, at `steps` steps (the Snakefile's expansion)."""
    from snakemake.utils import validate

    from layerlab.core.config import expand_cells

    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    validate(config, str(ROOT / "src/layerlab/workflow/schemas/config.schema.yaml"))
    cells = {cid: Cell.parse(values).to_dict() for cid, values in expand_cells(config).items()}
    return {cid: {**cell, "full_steps": cell["steps"], "steps": steps, "eval_every": min(cell["eval_every"], steps),
                  "log_every": min(cell["log_every"], steps)} for cid, cell in cells.items()}


def train_in_process(cell: dict, datasets: Path, device: torch.device) -> tuple[dict, list[str]]:
    """Train one cell here as the train job does (init as scripts/init.py); (results, warning messages)."""
    from layerlab.nets.models import build_model
    from layerlab.training.loop import train_cell

    path = datasets / f"{cell['dataset']}.npz"
    meta = read_provenance(path)
    run = Cell.parse({k: v for k, v in cell.items() if k != "full_steps"})
    model = build_model(run, input_shape(meta, run.data.input_pool), meta["n_classes"])
    data = load(path, device, run.data)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds, _ = train_cell(run, data, model, device)
    peak = float(torch.cuda.max_memory_allocated()) if device.type == "cuda" else math.nan
    seconds = float(ds["train_seconds"])
    return ({"steps": run.run.steps, "train_seconds": seconds, "loss": ds["loss"].values.tolist(),
             "test_acc": float(ds["test_acc"]), "max_memory_allocated_bytes": peak,
             "cells_per_hour": 3600 / (seconds * cell["full_steps"] / run.run.steps)},
            sorted({str(w.message).splitlines()[0] for w in caught}))


def speed(cells: dict[str, dict], datasets: Path, device: torch.device) -> dict:
    per_cell = {cid: train_in_process(cell, datasets, device)[0] for cid, cell in cells.items()}
    total = sum(3600 / r["cells_per_hour"] for r in per_cell.values())
    return {"device": str(device), "cells": per_cell, "cells_per_hour_one_job": len(per_cell) * 3600 / total}


def determinism(cell: dict, datasets: Path, device: torch.device) -> dict:
    (a, warned), (b, _) = train_in_process(cell, datasets, device), train_in_process(cell, datasets, device)
    nondeterministic = [w for w in warned if "deterministic" in w]
    return {"ok": a["loss"] == b["loss"] and a["test_acc"] == b["test_acc"], "steps": a["steps"],
            "nondeterministic_op_warnings": nondeterministic}


def pack_check(datasets: Path, device: torch.device, tiny: bool, steps: int) -> dict:
    """Cell packs on the device: 16 cells of paper 000's FNN (width 1000, depth 50, batch 128; tiny: 4 of width 32,
    depth 5) trained as one pack and one after another: cell-steps/s both ways, and each packed cell's loss curve
    against its cell alone (bit for bit on the CPU; on a GPU the deviation, which cuBLAS may make non-zero)."""
    from layerlab.nets.models import build_model
    from layerlab.training.loop import train_cell
    from layerlab.training.pack import build, train_pack

    size = dict(width=32, depth=5) if tiny else dict(width=1000, depth=50)
    cells = {f"seed~{s}": {**default_cells(steps)[next(iter(default_cells(steps)))], **size, "loss": "ce",
                           "seed": s, "log_every": 1, "eval_every": steps} for s in range(4 if tiny else 16)}
    cells = {k: Cell.parse({key: v for key, v in c.items() if key != "full_steps"}) for k, c in cells.items()}
    path = datasets / "digits.npz"
    data = load(path, device)
    built = {k: build(c, data) for k, c in cells.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    sync()
    start = time.perf_counter()
    packed = train_pack(cells, dict.fromkeys(cells, data), built, device, dict.fromkeys(cells))
    sync()
    packed_s = time.perf_counter() - start
    alone, start = {}, time.perf_counter()
    for k, c in cells.items():
        alone[k], _ = train_cell(c, data, build_model(c, data.input_shape, data.n_classes), device)
    sync()
    alone_s = time.perf_counter() - start
    deviation = max(float(abs(packed[k][0]["loss"] - alone[k]["loss"]).max()) for k in cells)
    cell_steps = len(cells) * steps
    return {"device": str(device), "cells": len(cells), "steps": steps, **size,
            "packed_cell_steps_per_s": cell_steps / packed_s, "alone_cell_steps_per_s": cell_steps / alone_s,
            "speedup": alone_s / packed_s, "max_loss_deviation": deviation,
            "ok": deviation == 0.0 if device.type == "cpu" else deviation < 1e-3}


def ensure_datasets(names: set[str], datasets: Path) -> dict[str, str]:
    """Prepare (or verify) each dataset once, for every run to link; name -> error for those unavailable."""
    errors = {}
    for name in sorted(names):
        path = datasets / f"{name}.npz"
        try:
            verify(path) if path.exists() and path.with_suffix(".json").exists() else prepare(
                name, path, datasets.parent / "downloads")
        except DatasetUnavailable as err:
            errors[name] = str(err)
    return errors


def study_datasets(config: dict) -> set[str]:
    return {config.get("fixed", {}).get("dataset", "digits"), *config["grid"].get("dataset", [])}


def write_summary(out: Path, summary: dict) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    lines = [f"# gpu_check ({summary['mode']}): {'PASS' if summary['ok'] else 'FAIL'}", "",
             f"{summary['machine']}; {summary['seconds']:.0f} s; tolerances {json.dumps(TOLERANCES)}", "",
             "| study | cpu run | accel run | cells | failed checks |", "|---|---|---|---|---|"]
    for study, s in summary["studies"].items():
        bad = [f"{r['cell']}: {r['why']}" for r in s.get("cells", []) if not r["ok"]]
        lines.append(f"| {study} | {s['cpu'].get('rc', '-')} ({s['cpu'].get('seconds', '-')} s) | "
                     f"{s['accel'].get('rc', '-')} ({s['accel'].get('seconds', '-')} s) | {len(s.get('cells', []))} "
                     f"| {'<br>'.join(bad) or s.get('error', '')} |")
    lines += ["", "## GPU memory per cell (one training step, allocator peak above the data; tracked peak)", "",
              "| study / cell | cuda_peak_memory_bytes | peak_memory_bytes |", "|---|---|---|"]
    lines += [f"| {study} / {r['cell']} | {r['cuda_peak_memory_bytes']:.4g} | {r['peak_memory_bytes']:.4g} |"
              for study, s in summary["studies"].items() for r in s.get("cells", []) if "peak_memory_bytes" in r]
    lines += ["", f"## Slot pool: {json.dumps(summary.get('pool'))}", "", "## Default study speed (per job)", ""]
    for side, sp in summary.get("speed", {}).items():
        lines.append(f"- {side} ({sp['device']}): {sp['cells_per_hour_one_job']:.1f} cells/hour at the study's "
                     f"steps, measured over {next(iter(sp['cells'].values()))['steps']} steps per cell")
        lines += [f"  - {cid}: {r['train_seconds']:.2f} s, {r['cells_per_hour']:.1f} cells/h, max_memory_allocated "
                  f"{r['max_memory_allocated_bytes']:.4g} B" for cid, r in sp["cells"].items()]
    lines += ["", f"## Determinism: {json.dumps(summary.get('determinism'))}", ""]
    lines += ["## Cell packs (fused vs one after another, same device)", "", f"{json.dumps(summary.get('packs'))}",
              ""]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cpu: the same checks with the CPU in the GPU's place, tiny (a dry run of the script)")
    ap.add_argument("--dry-run", action="store_true", help="same as --device cpu")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/gpu_check")
    ap.add_argument("--datasets", type=Path, default=ROOT / "resources/datasets",
                    help="prepared datasets (prepared there if missing; offline, bring fashion_mnist.npz/.json)")
    ap.add_argument("--studies", nargs="*", type=Path, help="study files (default: every quick study)")
    ap.add_argument("--steps", type=int, help="training steps of the shortened studies (cuda 20, cpu 4)")
    ap.add_argument("--max-cells", type=int, help="cells per shortened study (cuda 4, cpu 2)")
    ap.add_argument("--speed-steps", type=int, help="steps per default-study cell for the speed (cuda 400, cpu 5)")
    ap.add_argument("--skip-paths", action="store_true", help="without the study of CUDA-only code paths")
    ap.add_argument("--parallel", type=int, help="studies run at once (default: cores // 4)")
    ap.add_argument("--budget", type=float, default=470.0, help="seconds; later phases are skipped past it")
    args = ap.parse_args(argv)
    accel = "cpu" if args.dry_run or args.device == "cpu" else "cuda"
    tiny = accel == "cpu"
    if accel == "cuda" and not torch.cuda.is_available():
        smi = shutil.which("nvidia-smi")
        print(f"gpu_check: CUDA is not available here (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda}; nvidia-smi {'found' if smi else 'not found'}). Run it on a CUDA machine, or "
              f"`bench/gpu_check.sh --device cpu` for the same checks on the CPU.", file=sys.stderr)
        return 2
    steps, max_cells = args.steps or (4 if tiny else 20), args.max_cells or (2 if tiny else 4)
    speed_steps = args.speed_steps or (5 if tiny else 400)
    cores = os.cpu_count() or 2
    parallel = args.parallel or max(1, cores // 4)
    start = time.perf_counter()
    left = lambda: args.budget - (time.perf_counter() - start)  # noqa: E731
    out = args.out
    shutil.rmtree(out / "runs", ignore_errors=True)
    (out / "runs").mkdir(parents=True)
    datasets = args.datasets.resolve()
    datasets.mkdir(parents=True, exist_ok=True)

    from layerlab.workflow.runtime import setup

    setup(1)  # as every job: one thread, deterministic algorithms, CUBLAS_WORKSPACE_CONFIG before CUDA starts
    device = torch.device(accel)
    configs = {}
    for path in args.studies or quick_studies():
        config = shorten(yaml.safe_load(path.read_text()), steps, max_cells)
        configs[config["study"]] = config
    if not args.skip_paths:
        configs["gpu_paths"] = paths_study(steps)
    missing = ensure_datasets(set().union(*(study_datasets(c) for c in configs.values())), datasets)

    env = {k: v for k, v in os.environ.items() if k != "LAYERLAB_DEVICE"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    sides = {"cpu": ({**env, "LAYERLAB_DEVICE": "cpu"}, None), "accel": (env, len(POOL["devices"]) * 2)}

    def run(study: str, side: str) -> dict:
        config = configs[study]
        if bad := study_datasets(config) & set(missing):
            return {"rc": None, "error": "; ".join(missing[b] for b in bad)}
        workdir = out / "runs" / side / study
        (workdir / "resources").mkdir(parents=True)
        (workdir / "resources/datasets").symlink_to(datasets, target_is_directory=True)
        workdir.joinpath("study.yaml").write_text(yaml.safe_dump({**config, "gpus": POOL} if side == "accel"
                                                                 else config, sort_keys=False))
        run_env, slots = sides[side]
        return snakemake(workdir, run_env, min(4, cores), slots, left()) | {"workdir": str(workdir)}

    jobs = [(study, side) for side in sides for study in configs]
    with ThreadPoolExecutor(parallel) as pool:
        done = dict(zip(jobs, pool.map(lambda j: run(*j), jobs), strict=True))
    summary = {"mode": accel, "machine": machine(accel), "steps": steps, "max_cells": max_cells, "studies": {}}
    ok = True
    for study in configs:
        cpu, acc = done[(study, "cpu")], done[(study, "accel")]
        entry = {"cpu": cpu, "accel": acc}
        if cpu.get("rc") == 0 and acc.get("rc") == 0:
            entry["cells"] = compare(cell_results(Path(cpu["workdir"]), study),
                                     cell_results(Path(acc["workdir"]), study), accel)
            ok &= all(r["ok"] for r in entry["cells"])
        else:
            entry["error"] = cpu.get("error") or acc.get("error") or "a run failed (see its tail in summary.json)"
            ok = False
        summary["studies"][study] = entry
    default = yaml.safe_load((ROOT / "config/config.yaml").read_text())["study"]
    if default in configs and done[(default, "accel")].get("rc") == 0:
        summary["pool"] = pool_check(Path(done[(default, "accel")]["workdir"]), default, accel)
        ok &= summary["pool"]["ok"]
    if left() > 0 and "digits" not in missing:
        cells = default_cells(speed_steps)
        summary["speed"] = {"cpu": speed(cells, datasets, torch.device("cpu"))}
        if left() > 0:
            summary["speed"]["accel"] = speed(cells, datasets, device)
        if left() > 0:
            summary["determinism"] = determinism(next(iter(cells.values())), datasets, device)
            ok &= summary["determinism"]["ok"]
    if left() > 0 and "digits" not in missing:
        summary["packs"] = pack_check(datasets, device, tiny, 5 if tiny else 100)
        ok &= summary["packs"]["ok"]
    for phase in ("pool", "speed", "determinism", "packs"):
        if phase not in summary:
            summary[phase] = "skipped (budget, missing digits, or the default study not run/failed)"
            ok = False
    summary["ok"], summary["seconds"] = bool(ok), time.perf_counter() - start
    write_summary(out, summary)
    print(f"gpu_check: {'PASS' if ok else 'FAIL'} in {summary['seconds']:.0f} s; summary in {out / 'summary.md'}")
    return 0 if ok else 1


def machine(accel: str) -> str:
    gpu = torch.cuda.get_device_name(0) if accel == "cuda" else "no GPU (CPU in its place)"
    tf32 = torch.backends.cudnn.conv.fp32_precision if accel == "cuda" else "-"
    return (f"{gpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}, cudnn conv fp32 precision {tf32}, "
            f"CUBLAS_WORKSPACE_CONFIG={os.environ.get('CUBLAS_WORKSPACE_CONFIG')}")


if __name__ == "__main__":
    sys.exit(main())
