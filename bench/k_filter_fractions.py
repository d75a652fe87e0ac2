"""Table 5.1's kept fractions (paper 001 ch. 5.4): the share of a prepared dataset's training split that k-filtering
keeps (layerlab.training.kfilter), per k, with the kNN in batches of `--batch` rows and/or exactly over the whole split.
Raw uint8 pixels, float64 distances; CUDA when available. FashionMNIST on one CPU core: ~20 s per k batched (6,144),
~4.5 min per k exact.

    .venv/bin/python bench/k_filter_fractions.py resources/datasets/fashion_mnist.npz [--k 5 10 20] [--batch 6144 0]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from layerlab.training.kfilter import kept_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("npz", help="a prepared dataset (resources/datasets/<name>.npz)")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--batch", type=int, nargs="+", default=[6144, 0], help="kNN batch rows (0: exact)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with np.load(args.npz) as f:
        x = torch.from_numpy(f["x_train"].reshape(len(f["y_train"]), -1).astype(np.float64)).to(device)
        y = torch.from_numpy(f["y_train"]).to(device)
    for batch in args.batch:
        for k in args.k:
            start = time.perf_counter()
            kept = len(kept_rows(x, y, k, batch))
            print(json.dumps({"k": k, "batch": batch or "all", "kept": kept, "rows": len(y),
                              "kept_fraction": round(kept / len(y), 4), "seconds": round(time.perf_counter() - start,
                                                                                          1)}), flush=True)


if __name__ == "__main__":
    main()
