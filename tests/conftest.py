"""
Test-session setup and the fixtures every test directory shares.

The environment is set at import time, before any test module imports Airflow, so every test (and
every subprocess a test starts) sees the same throw-away Airflow installation with its own SQLite DB.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["dashscope_batch_emulator.pytest_plugin"]

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_REQUESTS = REPO_ROOT / "example_dags" / "data" / "requests.jsonl"
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="dashscope-airflow-home-"))
atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)

os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "example_dags")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}"
os.environ.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "http://127.0.0.1:8080/execution/")

from airflow_provider_dashscope_batch.client import DashScopeClient  # noqa: E402
from airflow_provider_dashscope_batch.events.mailbox import asset_name, asset_uri  # noqa: E402


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``@pytest.mark.anyio``) run on asyncio, the triggerer's event loop."""
    return "asyncio"


@pytest.fixture
def dashscope_conn(dashscope_emulator, monkeypatch) -> Callable[..., None]:
    """Point ``dashscope_default`` at the emulator; call again with extra fields (e.g. ``max_retries=0``)."""

    def configure(**extra: object) -> None:
        conn = {
            "conn_type": "dashscope",
            "password": dashscope_emulator.api_key,
            "extra": {"base_url": dashscope_emulator.base_url, **extra},
        }
        monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_DEFAULT", json.dumps(conn))

    configure()
    return configure


@pytest.fixture
def client(dashscope_emulator) -> Iterator[DashScopeClient]:
    """A sync client to set the scene (upload, create, cancel) over HTTP."""
    with DashScopeClient(api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url) as c:
        yield c


@pytest.fixture
def new_batch(client) -> Callable[[], str]:
    """Create a batch of the sample requests; returns its id."""
    file_id = client.upload_file(SAMPLE_REQUESTS).id

    def create() -> str:
        return client.create_batch(input_file_id=file_id, endpoint="/v1/chat/ds-test").id

    return create


S3_CONN_ID = "s3_results"  # the tests spell it out in their URLs
S3_BUCKET = "results-bucket"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto's server mode) on a free loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """An empty bucket on the moto server plus an ``aws`` connection ``s3_results``; yields a boto3 client."""
    import boto3

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{S3_CONN_ID.upper()}", json.dumps(conn))
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=S3_BUCKET)
    yield s3
    listed = s3.list_objects_v2(Bucket=S3_BUCKET).get("Contents", [])
    for obj in listed:
        s3.delete_object(Bucket=S3_BUCKET, Key=obj["Key"])
    s3.delete_bucket(Bucket=S3_BUCKET)


# ------------------------------------------------------------------ finish events (tests/events, tests/dags)
@dataclass
class Receiver:
    """The receiver app served by uvicorn on a loopback port."""

    base_url: str


@pytest.fixture(scope="session")
def receiver(airflow_db) -> Iterator[Receiver]:
    """The plugin's receiver app on a free loopback port (uvicorn in a thread); needs ``airflow_db``."""
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
        events = delete(AssetEvent).where(AssetEvent.asset_id == asset.id)
        session.execute(events.execution_options(synchronize_session=False))
        stale = delete(Variable).where(Variable.key.like("dashscope_batch_finished.%"))
        session.execute(stale.execution_options(synchronize_session=False))
        asset_id = asset.id
    return asset_id
