"""The pytest plugin every session of an environment with the provider loads costs nothing until used."""

from __future__ import annotations

import subprocess
import sys


def test_loading_the_plugin_imports_nothing_of_the_emulator():
    code = (
        "import sys\n"
        "import pytest\n"
        "before = set(sys.modules)\n"
        "import airflow_provider_dashscope_batch.emulator.pytest_plugin\n"
        "new = sorted(set(sys.modules) - before)\n"
        "assert not [m for m in new if m.split('.')[0] in ('uvicorn', 'starlette', 'httpx', 'anyio')], new\n"
        "assert [m for m in new if m.startswith('airflow_provider_dashscope_batch')] == [\n"
        "    'airflow_provider_dashscope_batch',\n"
        "    'airflow_provider_dashscope_batch.emulator',\n"
        "    'airflow_provider_dashscope_batch.emulator.pytest_plugin',\n"
        "], new\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_emulators_names_still_import_from_the_package():
    from airflow_provider_dashscope_batch import emulator
    from airflow_provider_dashscope_batch.emulator.server import EmulatorServer

    assert emulator.EmulatorServer is EmulatorServer
    assert {"EmulatorConfig", "FaultRule", "create_app"} <= set(emulator.__all__)
    assert callable(emulator.create_app)
