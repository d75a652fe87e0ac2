"""What every job script needs, torch-free (the collect, claims and dataset jobs import no torch): its log file, the
study's plug-ins, and an expected error ending the job with its message alone."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from layerlab.core.registry import load_plugins


def log_to(path: str) -> None:
    """The library's log lines go to `path` (a job's log file, the rule's `log:`)."""
    logging.basicConfig(filename=path, level=logging.INFO, format="%(asctime)s %(message)s", force=True)


def start_log(snakemake) -> None:
    """The job's log file receives the library's log lines; the study's plug-ins are imported (a dataset, a
    measurement or a plot kind of theirs is known to the job)."""
    log_to(snakemake.log[0])
    load_plugins(snakemake.config["plugins"])


def run_script(main: Callable[[], None], *expected: type[Exception]) -> None:
    """Run a job's main; an expected error ends the job with its message alone, not a traceback."""
    try:
        main()
    except expected as err:
        sys.exit(f"layerlab: {err}")
