"""
pytest plugin providing the ``dashscope_emulator`` fixture; opt-in, in a ``conftest.py``::

    pytest_plugins = ["dashscope_batch_emulator.pytest_plugin"]

The emulator (uvicorn, starlette) is imported when a test first asks for the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from dashscope_batch_emulator.server import EmulatorServer

# Fast phases so small batches finish in well under a second of real time; windows still need advance().
FIXTURE_SETTINGS = {
    "time_scale": 1.0,
    "processing_rate": 1000.0,
    "validating_seconds": 0.1,
    "finalizing_seconds": 0.1,
    "cancelling_seconds": 0.1,
}


@pytest.fixture(scope="session")
def dashscope_emulator_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """One emulator per test session, on a free loopback port."""
    from dashscope_batch_emulator.server import EmulatorServer

    with EmulatorServer(root=tmp_path_factory.mktemp("dashscope-emulator"), **FIXTURE_SETTINGS) as server:
        yield server


@pytest.fixture
def dashscope_emulator(dashscope_emulator_session: EmulatorServer) -> EmulatorServer:
    """The session's emulator with files, batches, faults, counters, clock and config reset for this test."""
    dashscope_emulator_session.reset()
    return dashscope_emulator_session
