"""
Fixtures of the deployment scenarios: the emulator, one Airflow deployment per session, one scenario per
test (see ``scenario_support.py`` for how the deployment is run and driven).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashscope_batch_emulator.server import EmulatorServer
from rabbitmq_server import RabbitMQServer
from scenario_support import (
    FINISH_EVENTS_SECRET,
    FINISH_QUEUE,
    QUEUE_CONN_ID,
    QUEUED_CONN_ID,
    Deployment,
    PostgresServer,
    Scenario,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "deployment: runs scenarios on a real Airflow deployment (separate processes)"
    )


@pytest.fixture(scope="session")
def deployment_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """The emulator the deployment talks to, accepting only its own freshly minted key."""
    with EmulatorServer(
        root=tmp_path_factory.mktemp("deployment-emulator"),
        api_key=f"sk-deployment-{secrets.token_hex(16)}",
        time_scale=0,
    ) as server:
        yield server


@pytest.fixture(scope="session")
def deployment_rabbitmq() -> Iterator[RabbitMQServer]:
    """The broker EventBridge would deliver finish events to, with the deployment's queue declared."""
    server = RabbitMQServer()
    try:
        server.start()
        server.declare(FINISH_QUEUE)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def deployment(
    deployment_emulator: EmulatorServer,
    deployment_rabbitmq: RabbitMQServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """One running deployment for every scenario of the session."""
    dashscope = {
        "conn_type": "dashscope",
        "password": deployment_emulator.api_key,
        "extra": {"base_url": deployment_emulator.base_url, "finish_events_secret": FINISH_EVENTS_SECRET},
    }
    queue = {
        "conn_type": "amqp",
        "host": "127.0.0.1",
        "port": deployment_rabbitmq.port,
        "login": deployment_rabbitmq.login,
        "password": deployment_rabbitmq.password,
        "extra": {"queue": FINISH_QUEUE},
    }
    postgres = PostgresServer() if PostgresServer.available() else None
    try:
        if postgres is not None:
            postgres.start()
        airflow = Deployment(tmp_path_factory.mktemp("airflow-home"), json.dumps(dashscope), postgres)
        # a second DashScope connection, whose finish watcher reads the RabbitMQ queue
        airflow.env[f"AIRFLOW_CONN_{QUEUED_CONN_ID.upper()}"] = json.dumps(dashscope)
        airflow.env[f"AIRFLOW_CONN_{QUEUE_CONN_ID.upper()}"] = json.dumps(queue)
        try:
            airflow.start()
            yield airflow
        finally:
            airflow.stop()
    finally:
        if postgres is not None:
            postgres.stop()


@pytest.fixture
def scenario(
    request: pytest.FixtureRequest,
    deployment: Deployment,
    deployment_emulator: EmulatorServer,
    tmp_path: Path,
) -> Iterator[Scenario]:
    """This test's scenario on the shared deployment."""
    name = request.node.name.removeprefix("test_").replace("_", "-")[:40]
    current = Scenario(name, deployment, deployment_emulator, tmp_path / "results")
    try:
        yield current
    finally:
        current.close()
