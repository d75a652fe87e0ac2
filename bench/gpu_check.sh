#!/usr/bin/env bash
# The CUDA path end to end on a GPU machine, < 8 min: every quick study shortened on CPU and GPU and compared,
# two training jobs sharing GPU 0 through the slot pool, GPU memory per cell, cells/hour CPU vs GPU, determinism.
# Summary: bench/out/gpu_check/summary.md (+ .json). Exit 0 pass, 1 a check failed, 2 no CUDA.
#   bench/gpu_check.sh                  # on a CUDA machine
#   bench/gpu_check.sh --device cpu     # the same logic on the CPU, tiny (a dry run; tests/test_gpu_check.py)
# Offline machines: prepare the datasets first (resources/datasets/fashion_mnist.npz + .json, e.g. with
# `snakemake -c1 resources/datasets/fashion_mnist.npz` where the Debian package or a download is available).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --foreground 500 "$PY" bench/gpu_check.py "$@"
