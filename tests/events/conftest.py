"""Fixtures for the finish-event tests: the metadata DB, the receiver on a real socket, the connection."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from airflow_provider_dashscope_batch.events.mailbox import asset_name, asset_uri


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the throw-away SQLite metadata DB of this session (tests/conftest.py points Airflow at it)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, timeout=240
    )


@dataclass
class Receiver:
    """The receiver app served by uvicorn on a loopback port."""

    base_url: str


@pytest.fixture(scope="session")
def receiver(airflow_db) -> Iterator[Receiver]:
    """The plugin's receiver app on a free loopback port (uvicorn in a thread), as on the api-server."""
    import uvicorn

    from airflow_provider_dashscope_batch.events.plugin import DashScopeBatchEventsPlugin

    (mount,) = DashScopeBatchEventsPlugin.fastapi_apps
    from fastapi import FastAPI

    root = FastAPI()
    root.mount(mount["url_prefix"], mount["app"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the receiver did not start"
        time.sleep(0.05)
    yield Receiver(f"http://127.0.0.1:{port}")
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def events_conn(dashscope_emulator, receiver, monkeypatch) -> Callable[..., None]:
    """``dashscope_default`` on the emulator with the receiver as its public base URL."""

    def configure(**extra: object) -> None:
        conn = {
            "conn_type": "dashscope",
            "password": dashscope_emulator.api_key,
            "extra": {
                "base_url": dashscope_emulator.base_url,
                "callback_base_url": receiver.base_url,
                **extra,
            },
        }
        monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_DEFAULT", json.dumps(conn))

    configure()
    return configure


@pytest.fixture
def finished_asset(airflow_db) -> int:
    """The connection's finish Asset in the metadata DB (a results DAG scheduled on it registers it)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import delete, select

    with create_session() as session:
        asset = session.scalar(select(AssetModel).where(AssetModel.uri == asset_uri("dashscope_default")))
        if asset is None:
            asset = AssetModel(name=asset_name("dashscope_default"), uri=asset_uri("dashscope_default"))
            session.add(asset)
            session.flush()
        session.execute(delete(AssetEvent).where(AssetEvent.asset_id == asset.id))
        session.execute(delete(Variable).where(Variable.key.like("dashscope_batch_finished.%")))
        asset_id = asset.id
    return asset_id
