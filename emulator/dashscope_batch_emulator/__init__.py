"""
A local emulator of the DashScope OpenAI-compatible Files and Batches API (no Airflow imports).

Its own distribution (``dashscope-batch-emulator``), installed by this repository's test and demo
environments, never by the provider's wheel. The pytest fixture is opt-in:
``pytest_plugins = ["dashscope_batch_emulator.pytest_plugin"]`` in a ``conftest.py``.
"""

from __future__ import annotations

from dashscope_batch_emulator.answers import emulated_embedding, image_tokens_of
from dashscope_batch_emulator.app import create_app
from dashscope_batch_emulator.faults import FaultRule
from dashscope_batch_emulator.server import EmulatorServer
from dashscope_batch_emulator.state import EmulatorConfig

__all__ = [
    "EmulatorConfig",
    "EmulatorServer",
    "FaultRule",
    "create_app",
    "emulated_embedding",
    "image_tokens_of",
]
