"""A local emulator of the DashScope OpenAI-compatible Files and Batches API (no Airflow imports)."""

from __future__ import annotations

from airflow_provider_dashscope_batch.emulator.app import create_app
from airflow_provider_dashscope_batch.emulator.faults import FaultRule
from airflow_provider_dashscope_batch.emulator.server import EmulatorServer
from airflow_provider_dashscope_batch.emulator.state import (
    EmulatorConfig,
    emulated_embedding,
    image_tokens_of,
)

__all__ = [
    "EmulatorConfig",
    "EmulatorServer",
    "FaultRule",
    "create_app",
    "emulated_embedding",
    "image_tokens_of",
]
