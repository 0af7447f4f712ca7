"""
A local emulator of the DashScope OpenAI-compatible Files and Batches API (no Airflow imports).

The names below are imported on first use, so that loading the pytest plugin
(:mod:`.pytest_plugin`, which every pytest session of an environment with this provider loads)
imports nothing of the emulator, its web stack included.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.emulator.answers import emulated_embedding, image_tokens_of
    from airflow_provider_dashscope_batch.emulator.app import create_app
    from airflow_provider_dashscope_batch.emulator.faults import FaultRule
    from airflow_provider_dashscope_batch.emulator.server import EmulatorServer
    from airflow_provider_dashscope_batch.emulator.state import EmulatorConfig

__all__ = [
    "EmulatorConfig",
    "EmulatorServer",
    "FaultRule",
    "create_app",
    "emulated_embedding",
    "image_tokens_of",
]

_HOMES = {
    "EmulatorConfig": "state",
    "EmulatorServer": "server",
    "FaultRule": "faults",
    "create_app": "app",
    "emulated_embedding": "answers",
    "image_tokens_of": "answers",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
