"""A real ``airflow api-server`` on loopback, for the browser tests (conftest.py and the page tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

STARTUP_TIMEOUT = 180.0


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
