"""The ``dashscope-emulator`` console script, run as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

SCRIPT = [sys.executable, "-m", "dashscope_batch_emulator.server", "--port", "0"]


@pytest.fixture
def run_cli() -> Iterator:
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> str:
        proc = subprocess.Popen([*SCRIPT, *args], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None
        return proc.stdout.readline().strip()

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)


def test_first_line_is_the_base_url_and_any_key_works(run_cli):
    base_url = run_cli()
    assert base_url.startswith("http://127.0.0.1:")
    assert base_url.endswith("/compatible-mode/v1")
    response = httpx.get(base_url + "/batches", headers={"Authorization": "Bearer whatever"}, timeout=30)
    assert response.status_code == 200
    assert response.json()["data"] == []
    assert httpx.get(base_url + "/batches", timeout=30).status_code == 401


def test_api_key_option_restricts_keys(run_cli):
    base_url = run_cli("--api-key", "sk-only", "--time-scale", "60")
    assert httpx.get(base_url + "/files", headers={"Authorization": "Bearer sk-other"}).status_code == 401
    assert httpx.get(base_url + "/files", headers={"Authorization": "Bearer sk-only"}).status_code == 200
    admin = base_url.replace("/compatible-mode/v1", "/_emulator")
    assert httpx.get(admin + "/config").json()["time_scale"] == 60


def test_emulator_does_not_import_airflow():
    code = (
        "import sys, dashscope_batch_emulator.pytest_plugin;"
        "assert not [m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
