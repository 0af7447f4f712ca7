"""The emulator is a distribution of its own: the provider brings no pytest plugin and no emulator."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys


def test_the_provider_registers_no_pytest_plugin_and_no_script():
    provider = importlib.metadata.distribution("airflow-provider-dashscope-batch")
    assert not [ep for ep in provider.entry_points if ep.group in ("pytest11", "console_scripts")]


def _pytest(directory) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(directory)],
        cwd=directory,
        capture_output=True,
        text=True,
    )


def test_a_pytest_session_loads_no_plugin_of_ours_unless_asked(tmp_path):
    (tmp_path / "test_bare.py").write_text(
        "import sys\n\n\ndef test_bare():\n"
        "    assert not [m for m in sys.modules if m.startswith(('dashscope_batch_emulator',"
        " 'airflow_provider_dashscope_batch'))]\n"
    )
    result = _pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_the_fixture_is_there_when_a_conftest_asks_for_it(tmp_path):
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["dashscope_batch_emulator.pytest_plugin"]\n')
    (tmp_path / "test_uses.py").write_text(
        "def test_uses(dashscope_emulator):\n    assert dashscope_emulator.base_url.startswith('http://127.0.0.1:')\n"
    )
    result = _pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_the_emulator_neither_needs_nor_imports_the_provider():
    """It keeps its own copy of the service's rules, so a wrong provider rule cannot hide in it."""
    emulator = importlib.metadata.distribution("dashscope-batch-emulator")
    assert not [r for r in emulator.requires or [] if r.startswith("airflow-provider-dashscope-batch")]
    code = (
        "import sys, dashscope_batch_emulator.app, dashscope_batch_emulator.server;"
        "print(sorted(m for m in sys.modules if m.startswith('airflow')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
