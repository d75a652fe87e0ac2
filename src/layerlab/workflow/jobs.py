"""What every job script needs, torch-free (the collect, claims and dataset jobs import no torch): its log file, which
also receives the error a job fails with (a `failed: ...` line, then the traceback: `layerlab.status` shows that
line), the study's plug-ins, and an expected error ending the job with its message alone."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from types import TracebackType
from typing import NoReturn

from layerlab.core.registry import load_plugins


def log_to(path: str) -> None:
    """The library's log lines, and an uncaught error, go to `path` (a job's log file, the rule's `log:`)."""
    logging.basicConfig(filename=path, level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    sys.excepthook = _log_failure


def start_log(snakemake) -> None:
    """The job's log file receives the library's log lines; the study's plug-ins are imported (a dataset, a
    measurement or a plot kind of theirs is known to the job)."""
    log_to(snakemake.log[0])
    load_plugins(snakemake.config["plugins"])


def _log_failure(kind: type[BaseException], err: BaseException, tb: TracebackType | None) -> None:
    first = str(err).strip().splitlines()
    logging.error("failed: %s%s", kind.__name__, f": {first[0]}" if first else "", exc_info=(kind, err, tb))
    sys.__excepthook__(kind, err, tb)


def fail(message: str) -> NoReturn:
    """End the job with `message` alone (no traceback), in its log as well."""
    logging.error("failed: %s", message)
    sys.exit(f"layerlab: {message}")


def run_script(main: Callable[[], None], *expected: type[Exception]) -> None:
    """Run a job's main; an expected error ends the job with its message alone, not a traceback."""
    try:
        main()
    except expected as err:
        fail(str(err))
