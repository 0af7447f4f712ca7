"""Test setup for DAGs using the DashScope provider: Airflow on SQLite, the emulator as DashScope."""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# A throw-away Airflow home with its own SQLite metadata DB, set before anything imports Airflow.
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airflow-home-"))
atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).parent / "dags")  # dag.test() parses from here
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}"

import pytest  # noqa: E402

# The emulator's dashscope_emulator fixture (distribution dashscope-batch-emulator) is opt-in.
pytest_plugins = ["dashscope_batch_emulator.pytest_plugin"]


@pytest.fixture(scope="session")
def airflow_db():
    """Create the metadata DB once per session (dag.test() needs one)."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)


@pytest.fixture
def summaries_dag(airflow_db, dashscope_emulator, monkeypatch, tmp_path):
    """The DAG, parsed with the dashscope_default connection pointing at the emulator."""
    connection = {
        "conn_type": "dashscope",
        "password": dashscope_emulator.api_key,
        "extra": {"base_url": dashscope_emulator.base_url},
    }
    monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_DEFAULT", json.dumps(connection))
    monkeypatch.setenv("SUMMARIES_RESULTS", (tmp_path / "results").as_uri())
    monkeypatch.setenv("SUMMARIES_POLL_INTERVAL", "0.1")
    sys.modules.pop("summaries", None)  # parse afresh: the DAG reads the environment at parse time
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "dags"))
    from summaries import dag

    return dag
