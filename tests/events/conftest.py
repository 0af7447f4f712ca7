"""Fixtures for the finish-event tests: the metadata DB (the receiver's fixtures are in tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the throw-away SQLite metadata DB of this session (tests/conftest.py points Airflow at it)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, timeout=240
    )
