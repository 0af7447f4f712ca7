"""DAG files for the DAG tests: where they live, and a loader that imports one afresh and registers it."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from types import ModuleType

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"
TEST_DAGS = Path(__file__).resolve().parent / "dag_files"


def load_dag_file(name: str, path: Path) -> ModuleType:
    """Import a DAG file afresh (it reads its environment at parse time) and register its DAGs."""
    spec = importlib.util.spec_from_file_location(f"{name}_{uuid.uuid4().hex}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _write_dags_to_db(module)
    return module


def _write_dags_to_db(module: ModuleType) -> None:
    """
    Write the module's DAGs and their assets to the metadata DB on Airflow 3.0.

    Airflow 3.0's ``dag.test()`` runs a DAG that was never written to the DB, so the task runner finds
    the transfer operator's Asset outlet inactive and fails the task; Airflow 3.1+ does this itself.
    """
    from airflow.providers.common.compat.sdk import DAG
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

    if AIRFLOW_V_3_1_PLUS:
        return
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.models.dag import DAG as SchedulerDAG
    from airflow.serialization.serialized_objects import SerializedDAG

    DagBundlesManager().sync_bundles_to_db()
    dags = [
        SerializedDAG.deserialize_dag(SerializedDAG.serialize_dag(value))
        for value in vars(module).values()
        if isinstance(value, DAG)
    ]
    SchedulerDAG.bulk_write_to_db("dags-folder", None, dags)
