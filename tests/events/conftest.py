"""Fixtures for the finish-event tests: the metadata DB (the receiver's fixtures are in tests/conftest.py)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the throw-away SQLite metadata DB of this session (tests/conftest.py points Airflow at it)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, timeout=240
    )


@pytest.fixture
def results_dag(finished_asset) -> str:
    """A DAG scheduled on the finish Asset, written to the metadata DB as the dag-processor would."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.models.asset import AssetDagRunQueue
    from airflow.models.dagrun import DagRun
    from airflow.providers.common.compat.sdk import DAG
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    from airflow_provider_dashscope_batch.events import finished_batches_asset

    dag = DAG("events_results_of_a_burst", schedule=[finished_batches_asset()], is_paused_upon_creation=False)
    if hasattr(LazyDeserializedDAG, "from_dag"):  # Airflow 3.1+
        lazy = LazyDeserializedDAG.from_dag(dag)
    else:
        from airflow.serialization.serialized_objects import SerializedDAG

        dag.relative_fileloc = "events_results_of_a_burst.py"  # the dag-processor sets it on 3.0
        lazy = LazyDeserializedDAG(data=SerializedDAG.to_dict(dag))
    # Airflow 3.1+ takes the parse duration before the warnings
    timing = (
        (None,) if "parse_duration" in inspect.signature(update_dag_parsing_results_in_db).parameters else ()
    )
    DagBundlesManager().sync_bundles_to_db()
    with create_session() as session:
        update_dag_parsing_results_in_db("dags-folder", None, [lazy], {}, *timing, set(), session=session)
        session.execute(delete(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == dag.dag_id))
        session.execute(delete(DagRun).where(DagRun.dag_id == dag.dag_id))
    return dag.dag_id


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[str]:
    """A real RabbitMQ broker on loopback for this session (tests/rabbitmq_server.py); its ``amqp://`` URL."""
    from rabbitmq_server import RabbitMQServer

    server = RabbitMQServer()
    try:
        server.start()
        yield server.url
    finally:
        server.stop()
