"""A real headless browser for the tests that look at a page: Debian's Chromium driven by Playwright (installed by
.ci/run: apt `chromium`, pip `playwright` in the dev extra; Playwright's own browser download is never used)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# the flags a closed network needs (no background connections, no component updates) and a root user needs
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """A headless Chromium for one test module; skipped (saying why) where Chromium or Playwright is missing.
    Module-scoped: Playwright's sync API keeps an asyncio loop running in the main thread while it is open; the
    tests of other modules run outside it, as a user's scripts would."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install .[dev])")
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()
