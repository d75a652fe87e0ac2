"""What every job script needs, torch-free (the collect, claims and dataset jobs import no torch): its log file,
and an expected error ending the job with its message alone."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


def start_log(snakemake) -> None:
    """The job's log file (the rule's `log:`) receives the library's log lines."""
    logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s", force=True)


def run_script(main: Callable[[], None], *expected: type[Exception]) -> None:
    """Run a job's main; an expected error ends the job with its message alone, not a traceback."""
    try:
        main()
    except expected as err:
        sys.exit(f"layerlab: {err}")
