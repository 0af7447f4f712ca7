"""A real Airflow api-server (and headless Chromium) for the connection-form tests.

The api-server runs as a subprocess of the Airflow installed next to the running interpreter, so the
same tests check Airflow 3.3 in ``.venv`` and Airflow 3.0 in ``.venv-airflow30``. It gets its own
AIRFLOW_HOME and SQLite DB, Simple auth manager with every user an admin, and ``[core]
test_connection = Enabled`` (without it the UI's Test button is disabled).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.api_server import AirflowApiServer

#: Flags for Debian's Chromium on a machine with a closed network (no background lookups at start).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Set by ``.ci/browser``: a missing browser or Playwright fails the run instead of skipping.
REQUIRED_ENV = "DASHSCOPE_BROWSER_REQUIRED"
#: Set by ``.ci/browser --screenshots``: the browser test writes its screenshots there.
SCREENSHOTS_ENV = "DASHSCOPE_SCREENSHOTS_DIR"


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRED_ENV):
        pytest.fail(f"{reason} ({REQUIRED_ENV} is set)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def airflow_api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowApiServer]:
    """A running Airflow api-server of the interpreter's own Airflow, with this provider installed."""
    server = AirflowApiServer(tmp_path_factory.mktemp("airflow-api-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _chromium_executable() -> str | None:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    # As root on Debian (CI machines): install Debian's Chromium; a Playwright browser download is impossible.
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": False}
    subprocess.run(["apt-get", "update", "-qq"], **quiet)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], **quiet)
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator[Any]:
    """
    Headless Debian Chromium driven by Playwright (a fresh profile per launch).

    Module-scoped: Playwright's sync API keeps an asyncio loop running in this thread while it is open,
    which would break every async test that runs after it.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    executable = _chromium_executable()
    if executable is None:
        _unavailable("Chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium_browser: Any) -> Iterator[Any]:
    """A page in a fresh browser context (no cookies or storage from other tests)."""
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def screenshots_dir() -> Path | None:
    """Where to save the form's screenshots (``.ci/browser --screenshots``), or None to save none."""
    target = os.environ.get(SCREENSHOTS_ENV)
    if not target:
        return None
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    return path
