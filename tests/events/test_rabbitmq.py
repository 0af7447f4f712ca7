"""The finish watcher's RabbitMQ source against a real broker: EventBridge-shaped messages, each once."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from urllib.parse import urlsplit

import pytest
from rabbitmq_server import publish as publish_to
from test_watcher import CONN, SECRET, collect, create, get_variable, put_variable, wait_terminal

from airflow_provider_dashscope_batch.events import watcher as watcher_module
from airflow_provider_dashscope_batch.events.rabbitmq import INSTALL_HINT, QueueSettings
from airflow_provider_dashscope_batch.events.watcher import (
    Cursor,
    DashScopeBatchFinishTrigger,
    FinishWatch,
    cursor_key,
)

aiormq = pytest.importorskip("aiormq")

pytestmark = pytest.mark.anyio

QUEUE_CONN = "dashscope_finish_queue"
RETRIEVE = "GET /batches/{batch_id}"


def eventbridge_event(batch_id: str, id_field: str = "batch_id") -> bytes:
    """A ``dashscope:System:BatchTaskFinish`` event as EventBridge delivers it (CloudEvents 1.0)."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "acs.dashscope",
            "type": "dashscope:System:BatchTaskFinish",
            "time": "2026-12-07T05:30:00Z",
            "datacontenttype": "application/json;charset=utf-8",
            "aliyunaccountid": "1234567890",
            "aliyunregionid": "cn-beijing",
            "data": {id_field: batch_id, "status": "completed"},
        }
    ).encode()


@pytest.fixture(autouse=True)
def fast_claims(monkeypatch) -> None:
    monkeypatch.setattr(watcher_module, "CLAIM_SETTLE", 0.05)


@pytest.fixture
def clean_variables(airflow_db) -> None:
    """No cursor of an earlier test."""
    from airflow.models.variable import Variable

    Variable.delete(cursor_key(CONN))


@pytest.fixture
async def queue(rabbitmq, monkeypatch, dashscope_conn, clean_variables) -> AsyncIterator[str]:
    """A fresh durable queue, the queue connection pointing at it, and the DashScope connection."""
    dashscope_conn(finish_events_secret=SECRET)
    name = f"dashscope-finishes-{secrets.token_hex(4)}"
    url = urlsplit(rabbitmq)
    conn = {
        "conn_type": "amqp",
        "host": url.hostname,
        "port": url.port,
        "login": "guest",
        "password": "guest",
        "extra": {"queue": name},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{QUEUE_CONN.upper()}", json.dumps(conn))
    connection = await aiormq.connect(rabbitmq)
    channel = await connection.channel()
    await channel.queue_declare(name, durable=True)
    try:
        yield name
    finally:
        await channel.queue_delete(name)
        await connection.close()


@pytest.fixture
async def publish(rabbitmq, queue) -> AsyncIterator[Callable]:
    """Publish message bodies to the queue as EventBridge's RabbitMQ target does (persistent)."""
    connection = await aiormq.connect(rabbitmq)
    channel = await connection.channel()

    async def send(*bodies: bytes) -> None:
        await publish_to(channel, queue, *bodies)

    yield send
    await connection.close()


async def waiting(rabbitmq: str, queue: str) -> int:
    """Messages in the queue that no consumer holds."""
    connection = await aiormq.connect(rabbitmq)
    try:
        channel = await connection.channel()
        return (await channel.queue_declare(queue, passive=True)).message_count
    finally:
        await connection.close()


def new_watch(dashscope_emulator, *, max_messages: int | None = None) -> FinishWatch:
    """A trigger instance's rounds: the queue, and a list poll that is due only in its first round."""
    trigger = DashScopeBatchFinishTrigger(CONN, poll_interval=3600, queue_conn_id=QUEUE_CONN)
    watch = trigger.watch(get=get_variable, put=put_variable, clock=dashscope_emulator.now)
    if max_messages is not None:
        watch.queue.max_messages = max_messages
    return watch


def free_the_lease() -> None:
    """What the lease's expiry does for a successor (the tests do not wait for it)."""
    cursor = Cursor.from_value(get_variable(cursor_key(CONN)))
    put_variable(cursor_key(CONN), replace(cursor, owner="").to_json())


async def test_a_burst_of_100_finishes_is_100_events_each_confirmed_once(
    dashscope_emulator, client, rabbitmq, queue, publish
):
    watch = new_watch(dashscope_emulator)
    assert await collect(watch) == []  # the baseline (the list poll's first round)
    ids = create(client, n=100)
    wait_terminal(client, ids)
    await publish(*(eventbridge_event(b, "batch_id" if i % 2 else "task_id") for i, b in enumerate(ids)))
    reads = dashscope_emulator.request_counts().get(RETRIEVE, 0)
    payloads = await collect(watch)
    assert sorted(p["batch_id"] for p in payloads) == sorted(ids)
    assert {p["status"] for p in payloads} == {"completed"}
    assert dashscope_emulator.request_counts().get(RETRIEVE, 0) == reads + 100  # one read per finish
    assert await waiting(rabbitmq, queue) == 0  # all acknowledged
    await publish(*(eventbridge_event(b) for b in ids[:10]))  # EventBridge delivers again
    assert await collect(watch) == []
    assert dashscope_emulator.request_counts().get(RETRIEVE, 0) == reads + 100  # the cursor answers
    await watch.queue.aclose()


async def test_duplicate_foreign_unknown_and_malformed_messages_record_nothing(
    dashscope_emulator, client, rabbitmq, queue, publish, caplog
):
    watch = new_watch(dashscope_emulator)
    await collect(watch)
    (ours,) = create(client)
    foreign = [
        *create(client, secret=None),  # no mark: created by hand or by another tool
        *create(client, secret="another-deployment"),
        *create(client, conn_id="another_conn"),
    ]
    wait_terminal(client, [ours, *foreign])
    await publish(
        eventbridge_event(ours),
        eventbridge_event(ours),  # a duplicate delivery
        *(eventbridge_event(b) for b in foreign),
        eventbridge_event("batch_doesnotexist0000"),  # unknown to the service
        b"\xff\x00 not json\n",
        b"[" * 100_000 + b"]" * 100_000,  # nested deeper than any parser should follow
        b'{"data": {"batch_id": "batch_1\\nFORGED log line"}}',
        json.dumps({**json.loads(eventbridge_event(ours)), "type": "dashscope:System:Other"}).encode(),
        b"{" * 70_000,  # larger than any event
    )
    reads = dashscope_emulator.request_counts().get(RETRIEVE, 0)
    payloads = await collect(watch)
    assert [p["batch_id"] for p in payloads] == [ours]
    # one read for ours, each foreign batch and the unknown id; none for the duplicate or the garbage
    assert dashscope_emulator.request_counts().get(RETRIEVE, 0) == reads + 1 + len(foreign) + 1
    assert await waiting(rabbitmq, queue) == 0  # dropped messages are acknowledged, not redelivered
    assert "FORGED" not in caplog.text
    assert "not json" not in caplog.text
    assert await collect(watch) == []
    await watch.queue.aclose()


async def test_a_restart_in_the_middle_of_the_stream_loses_no_finish_and_repeats_none_handed_on(
    dashscope_emulator, client, rabbitmq, queue, publish
):
    first = new_watch(dashscope_emulator, max_messages=30)
    await collect(first)
    ids = create(client, n=100)
    wait_terminal(client, ids)
    await publish(*(eventbridge_event(b) for b in ids))
    handed_on = [p["batch_id"] for p in await collect(first)]  # a completed round: 30 messages
    assert len(handed_on) == 30
    stopped = first.round()
    in_flight = (await stopped.__anext__())["batch_id"]  # the next round is cut off after one event:
    await first.queue.aclose()  # the triggerer dies; the broker takes the unacknowledged messages back
    await stopped.aclose()
    assert await waiting(rabbitmq, queue) == 70

    free_the_lease()
    successor = new_watch(dashscope_emulator, max_messages=30)
    after: list[str] = []
    for _ in range(5):
        after.extend(p["batch_id"] for p in await collect(successor))
    assert sorted(handed_on + after) == sorted(ids)  # nothing lost, nothing handed on twice
    assert in_flight in after  # the cut-off round's finish is handed on by the successor
    assert await waiting(rabbitmq, queue) == 0
    await successor.queue.aclose()


async def test_two_triggerers_reading_the_queue_hand_on_each_finish_once(
    dashscope_emulator, client, rabbitmq, queue, publish
):
    one, two = new_watch(dashscope_emulator, max_messages=20), new_watch(dashscope_emulator, max_messages=20)
    await asyncio.gather(collect(one), collect(two))
    ids = create(client, n=40)
    wait_terminal(client, ids)
    await publish(*(eventbridge_event(b) for b in ids))
    seen: list[str] = []
    for _ in range(4):
        for payloads in await asyncio.gather(collect(one), collect(two)):
            seen.extend(p["batch_id"] for p in payloads)
    assert sorted(seen) == sorted(ids)
    assert await waiting(rabbitmq, queue) == 0
    await one.queue.aclose()
    await two.queue.aclose()


@pytest.mark.parametrize(
    ("extra", "logged", "installed"),
    [
        pytest.param({"queue": "q"}, "(AMQPConnectionError)", True, id="broker-unreachable"),
        pytest.param({}, "needs a host and the extra 'queue'", True, id="no-queue-named"),
        pytest.param({"queue": "q"}, INSTALL_HINT, False, id="client-not-installed"),
    ],
)
async def test_a_queue_out_of_reach_leaves_list_polling_working_and_logs_no_secret(
    dashscope_emulator, client, dashscope_conn, clean_variables, monkeypatch, caplog, extra, logged, installed
):
    if not installed:
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name: None if name == "aiormq" else find_spec(name)
        )
    dashscope_conn(finish_events_secret=SECRET)
    password = f"queue-password-{secrets.token_hex(8)}"
    conn = {"conn_type": "amqp", "host": "127.0.0.1", "port": 1, "password": password, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{QUEUE_CONN.upper()}", json.dumps(conn))
    trigger = DashScopeBatchFinishTrigger(CONN, poll_interval=0, queue_conn_id=QUEUE_CONN)
    assert password not in json.dumps(trigger.serialize()[1])
    watch = trigger.watch(get=get_variable, put=put_variable, clock=dashscope_emulator.now)
    await collect(watch)
    ids = create(client, n=2)
    wait_terminal(client, ids)
    assert sorted(p["batch_id"] for p in await collect(watch)) == sorted(ids)
    assert "finish queue of connection 'dashscope_default' is unavailable" in caplog.text
    assert logged in caplog.text
    assert password not in caplog.text


def test_queue_settings_need_a_queue_name_and_hide_the_credentials() -> None:
    from airflow.models.connection import Connection

    from airflow_provider_dashscope_batch.hooks.dashscope import ConnectionSetupError

    conn = Connection(conn_type="amqps", host="mq.example.com", login="u", password="p@ss/word", schema="vh")
    with pytest.raises(ConnectionSetupError, match="extra 'queue'"):
        QueueSettings.from_connection("q", conn)
    conn.set_extra(json.dumps({"queue": "finishes"}))
    settings = QueueSettings.from_connection("q", conn)
    assert settings.url == "amqps://u:p%40ss%2Fword@mq.example.com:5671/vh"
    assert "p%40ss" not in repr(settings)
