"""A real Airflow api-server (and headless Chromium) for the connection-form tests.

The api-server runs as a subprocess of the Airflow installed next to the running interpreter, so the
same tests check Airflow 3.3 in ``.venv`` and Airflow 3.0 in ``.venv-airflow30``. It gets its own
AIRFLOW_HOME and SQLite DB, Simple auth manager with every user an admin, and ``[core]
test_connection = Enabled`` (without it the UI's Test button is disabled).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

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
STARTUP_TIMEOUT = 180.0


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRED_ENV):
        pytest.fail(f"{reason} ({REQUIRED_ENV} is set)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AirflowApiServer:
    """
    An ``airflow api-server`` subprocess on loopback with a throw-away AIRFLOW_HOME.

    :param home: Directory for AIRFLOW_HOME (DB, logs, generated config).
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.airflow = str(Path(sys.executable).with_name("airflow"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "api-server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
        (home / "dags").mkdir(parents=True, exist_ok=True)
        self.env.update(
            AIRFLOW_HOME=str(home),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
            AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__CORE__TEST_CONNECTION="Enabled",
            AIRFLOW__API__BASE_URL=self.url,
            # Airflow 3.0 leaves ``iss`` unset by default, which PyJWT >= 2.10 refuses to encode.
            AIRFLOW__API_AUTH__JWT_ISSUER="airflow-dashscope-browser-test",
        )

    def log_tail(self, chars: int = 4000) -> str:
        """Return the end of the api-server's log, for failure messages."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(max(0, self.log_path.stat().st_size - chars))
            return log.read().decode(errors="replace")

    def log_lines(self, needle: str) -> list[str]:
        """Return the api-server's log lines that contain ``needle``."""
        with self.log_path.open(encoding="utf-8", errors="replace") as log:
            return [line.strip() for line in log if needle in line]

    def start(self) -> None:
        """Migrate the DB, start the server and wait until its health endpoint answers."""
        migrate = subprocess.run(
            [self.airflow, "db", "migrate"], env=self.env, capture_output=True, text=True, check=False
        )
        if migrate.returncode:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stderr[-4000:]}")
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    self.airflow,
                    "api-server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"airflow api-server exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            try:
                status = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=2).status_code
            except httpx.TransportError:
                status = None
            if status == 200:
                return
            if status is not None and status >= 500:
                self.stop()
                raise RuntimeError(f"airflow api-server answers {status}:\n{self.log_tail()}")
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"airflow api-server did not answer within {STARTUP_TIMEOUT:.0f}s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server and the workers it forked (its whole process group)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()


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
