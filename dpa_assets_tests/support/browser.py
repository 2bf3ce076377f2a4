"""Headless Chromium from the OS packages, driven by Playwright, for the UI tests.

The browser is Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it), never one
downloaded by ``playwright install``. The machine has no outside network, and Chromium's background
networking (updates, sync, safe browsing) would otherwise hang waiting for it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots of the README (docs/screenshots/) are refreshed by a run with this variable set.
ENV_SCREENSHOT_DIR = "DPA_SCREENSHOT_DIR"


def require_browser() -> Path:
    """Chromium's path, once both it and Playwright are installed; fail in CI, skip locally otherwise."""
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright package is missing (pip install -e '.[dev]')")
    if problems:
        message = "browser test needs: " + "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


class Screenshots:
    """Saves each screenshot under the test's folder, and the README's ones also where asked."""

    def __init__(self, folder: Path, docs_names: set[str]) -> None:
        self.folder = folder
        self.docs_names = docs_names
        self.docs_folder = Path(os.environ[ENV_SCREENSHOT_DIR]) if os.environ.get(ENV_SCREENSHOT_DIR) else None
        self.saved: list[Path] = []

    def take(self, page, name: str) -> Path:  # noqa: ANN001 - playwright's Page, imported lazily
        """Screenshot the page once its pending queries are answered (spinners make poor pictures)."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            page.wait_for_load_state("networkidle", timeout=15_000)
        except PlaywrightTimeout:
            pass  # the UI polls; the picture is taken anyway, the test's assertions do not depend on it
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path))
        self.saved.append(path)
        if self.docs_folder and name in self.docs_names:
            self.docs_folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.docs_folder / path.name)
        return path
