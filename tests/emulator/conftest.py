"""Fixtures for the emulator tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dashscope_batch_emulator import EmulatorServer
from emulator_helpers import Api


@pytest.fixture
def emu(dashscope_emulator: EmulatorServer) -> EmulatorServer:
    """The shared emulator with a frozen clock: only ``advance()`` moves time, so states are deterministic."""
    dashscope_emulator.set_clock(time_scale=0)
    return dashscope_emulator


@pytest.fixture
def api(emu: EmulatorServer) -> Iterator[Api]:
    client = Api(emu)
    yield client
    client.http.close()
