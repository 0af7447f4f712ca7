"""The receiver on a real socket: callbacks and EventBridge events, checked cheapest first, posted once."""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest

from airflow_provider_dashscope_batch.events import receiver as receiver_module
from airflow_provider_dashscope_batch.events.callback import finish_event_metadata
from airflow_provider_dashscope_batch.events.mailbox import Mailbox, variable_key
from airflow_provider_dashscope_batch.events.receiver import (
    EVENTBRIDGE_TOKEN_HEADER,
    MAX_BODY_BYTES,
    MAX_CONCURRENT_CONFIRMATIONS,
    MAX_DEPTH,
    REFUSAL_SECONDS,
    BadRequest,
    finish_batch_id,
)
from airflow_provider_dashscope_batch.events.tokens import (
    EVENTBRIDGE_NONCE,
    MARK_KEY,
    callback_url,
    eventbridge_url,
    mark,
    mint_token,
)
from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook

SAMPLE_REQUESTS = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "requests.jsonl"
RETRIEVE = "GET /batches/{batch_id}"
CONN = "dashscope_default"
SECRET = "receiver-test-secret"


@pytest.fixture
def conn(events_conn, airflow_db):
    from airflow.models.variable import Variable

    Variable.delete(variable_key(CONN))
    for cache in (receiver_module._proven, receiver_module._misses, receiver_module._posted):
        cache.clear()
    events_conn(finish_events_secret=SECRET)
    return events_conn


def mailbox() -> Mailbox:
    from airflow.models.variable import Variable

    return Mailbox.from_value(Variable.get(variable_key(CONN), default_var=None))


def deliveries(emulator, count: int) -> list[dict]:
    deadline = time.monotonic() + 30
    while len(emulator.callbacks()) < count:
        assert time.monotonic() < deadline, f"expected {count} deliveries, got {emulator.callbacks()}"
        time.sleep(0.05)
    return emulator.callbacks()


def key_of_test() -> str:
    return f"airflow-{time.monotonic_ns():040x}-g1"


def create(client, metadata: dict) -> str:
    file_id = client.upload_file(SAMPLE_REQUESTS).id
    return client.create_batch(input_file_id=file_id, endpoint="/v1/chat/ds-test", metadata=metadata).id


def wait_terminal(client, batch_id: str) -> str:
    deadline = time.monotonic() + 30
    while not client.retrieve_batch(batch_id).status.is_terminal:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return batch_id


def ours(callback: bool = True) -> dict:
    """The metadata the create operator gives a batch of this connection."""
    key = key_of_test()
    return {"idempotency_key": key, **finish_event_metadata(DashScopeBatchHook(), key, callback=callback)}


def reads(emulator) -> int:
    return emulator.request_counts().get(RETRIEVE, 0)


def test_a_callback_is_confirmed_with_one_read_and_posted_once_when_it_arrives_twice(
    dashscope_emulator, conn, client
):
    dashscope_emulator.configure(callback_deliveries=2)
    batch_id = wait_terminal(client, create(client, ours()))
    sent = deliveries(dashscope_emulator, 2)
    assert sorted(d["status_code"] for d in sent) == [200, 200]
    assert mailbox().since(0) == ([batch_id], False)


def test_forged_tokens_are_refused_before_the_body_is_read_and_without_a_read(
    dashscope_emulator, conn, client, receiver
):
    other = wait_terminal(client, create(client, ours(callback=False)))
    before = reads(dashscope_emulator)
    nested = b'{"id": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    forged = [
        mint_token("not-the-secret", CONN),
        mint_token(SECRET, "another_conn"),  # minted for another connection
        mint_token(dashscope_emulator.api_key, CONN),  # the API key is not the secret
        "x" * 20,
        mint_token(SECRET, CONN) + "%0A",  # a valid token and a newline
    ]
    for token in forged:
        for body in ({"content": json.dumps({"id": other})}, {"content": nested}):
            response = httpx.post(callback_url(receiver.base_url, CONN, token), **body)
            assert response.status_code == 404
            assert response.json() == {"detail": "unknown event"}
    assert reads(dashscope_emulator) == before
    assert other not in mailbox()


def test_a_token_cannot_vouch_for_another_batch_nor_buy_unlimited_reads(dashscope_emulator, conn, client):
    mine = ours()
    url = mine["ds_batch_finish_callback"]
    own = wait_terminal(client, create(client, mine))
    deliveries(dashscope_emulator, 1)
    others = [wait_terminal(client, create(client, ours(callback=False))) for _ in range(3)]
    before = reads(dashscope_emulator)
    for batch_id in others:
        response = httpx.post(
            url, json={"id": batch_id}
        )  # proven for its own batch: no read, not "duplicate"
        assert response.status_code == 404
    assert reads(dashscope_emulator) == before
    assert httpx.post(url, json={"id": own}).json()["outcome"] == "duplicate"
    stranger = mint_token(SECRET, CONN)  # a valid token no batch carries
    for batch_id in others * 3:
        assert httpx.post(url.rsplit("/", 1)[0] + "/" + stranger, json={"id": batch_id}).status_code == 404
    assert reads(dashscope_emulator) == before + receiver_module.MAX_MISSES
    assert all(b not in mailbox() for b in others)


def test_a_replayed_callback_costs_no_read(dashscope_emulator, conn, client):
    metadata = ours()
    batch_id = wait_terminal(client, create(client, metadata))
    deliveries(dashscope_emulator, 1)
    body = client.retrieve_batch(batch_id).model_dump(mode="json")
    seq, before = mailbox().seq, reads(dashscope_emulator)
    for _ in range(3):
        response = httpx.post(metadata["ds_batch_finish_callback"], json=body)
        assert (response.status_code, response.json()["outcome"]) == (200, "duplicate")
    assert mailbox().seq == seq
    assert reads(dashscope_emulator) == before


def test_an_unfinished_batch_is_not_posted(dashscope_emulator, conn, client):
    dashscope_emulator.set_clock(time_scale=0)  # the batch stays validating
    metadata = ours()
    batch_id = create(client, metadata)
    response = httpx.post(metadata["ds_batch_finish_callback"], json={"id": batch_id, "status": "completed"})
    assert response.status_code == 409
    assert response.json()["status"] == "validating"
    assert batch_id not in mailbox()


def test_eventbridge_counts_only_batches_of_this_deployment_and_connection(
    dashscope_emulator, conn, client, receiver
):
    target = eventbridge_url(receiver.base_url, CONN, SECRET)
    dashscope_emulator.configure(eventbridge_target=target)
    mine = wait_terminal(client, create(client, ours(callback=False)))
    key = key_of_test()  # another connection of the same account, same deployment: an airflow- key
    foreign = wait_terminal(
        client, create(client, {"idempotency_key": key, MARK_KEY: mark(SECRET, "other", key)})
    )
    unmarked = wait_terminal(client, create(client, {"idempotency_key": key_of_test()}))
    sent = {d["batch_id"]: d["status_code"] for d in deliveries(dashscope_emulator, 3)}
    assert sent == {mine: 200, foreign: 404, unmarked: 404}
    posted, _ = mailbox().since(0)
    assert posted == [mine]


def test_the_eventbridge_token_is_accepted_in_eventbridges_header(dashscope_emulator, conn, client, receiver):
    batch_id = wait_terminal(client, create(client, ours(callback=False)))
    token = eventbridge_url(receiver.base_url, CONN, SECRET).rsplit("/", 1)[1]
    assert token.startswith(EVENTBRIDGE_NONCE)
    url = f"{receiver.base_url}/dashscope-batch/events/{CONN}"
    event = {"specversion": "1.0", "type": "dashscope:System:BatchTaskFinish", "data": {"batchId": batch_id}}
    assert httpx.post(url, json=event).status_code == 404
    assert (
        httpx.post(url, json=event, headers={EVENTBRIDGE_TOKEN_HEADER: "eventbridge.0" * 2}).status_code
        == 404
    )
    response = httpx.post(url, json=event, headers={EVENTBRIDGE_TOKEN_HEADER: token})
    assert (response.status_code, response.json()["outcome"]) == (200, "recorded")


def test_rotating_the_api_key_and_the_secret_loses_no_in_flight_finish(dashscope_emulator, conn, client):
    dashscope_emulator.set_clock(time_scale=0)
    in_flight = ours()  # minted under the old secret
    batch_id = create(client, in_flight)
    conn(finish_events_secret="the-new-secret", finish_events_previous_secret=SECRET)  # rotation
    fresh = ours()  # minted at once under the new secret: no cache window refuses it
    fresh_id = create(client, fresh)
    dashscope_emulator.advance(3600)
    wait_terminal(client, batch_id)
    deliveries(dashscope_emulator, 2)
    assert {d["status_code"] for d in dashscope_emulator.callbacks()} == {200}
    assert sorted(mailbox().since(0)[0]) == sorted([batch_id, fresh_id])
    conn(finish_events_secret="the-new-secret")  # the rotation is over: old tokens are refused
    assert httpx.post(in_flight["ds_batch_finish_callback"], json={"id": batch_id}).status_code == 404


def test_hostile_bodies_behind_a_valid_token_get_a_4xx_and_no_traceback(
    dashscope_emulator, conn, receiver, caplog
):
    url = callback_url(receiver.base_url, CONN, mint_token(SECRET, CONN))
    secret = "sk-" + "s3cr3t" * 4
    nested = b'{"id": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    with caplog.at_level(logging.DEBUG):
        answers = {
            "bad json": httpx.post(url, content=f'{{"id": "{secret}"'),
            "too big": httpx.post(url, content=b"{" + b" " * MAX_BODY_BYTES + b"}"),
            "no batch": httpx.post(url, json={"secret": secret}),
            "wrong type": httpx.post(
                url, json={"specversion": "1.0", "type": "x:y", "data": {"id": "batch_1"}}
            ),
            "nested": httpx.post(url, content=nested),
            "just deep enough": httpx.post(url, content=b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)),
            "forged log line": httpx.post(url, json={"id": "batch_1\nINFO recorded batch_evil"}),
        }
    assert {name: r.status_code for name, r in answers.items()} == {
        "bad json": 400,
        "too big": 413,
        "no batch": 400,
        "wrong type": 400,
        "nested": 400,
        "just deep enough": 400,
        "forged log line": 400,
    }
    assert secret not in caplog.text
    assert "Traceback" not in caplog.text
    assert "batch_evil" not in caplog.text
    assert "['secret']" in caplog.text or '["secret"]' in caplog.text  # the key names of a refused shape


def test_a_refused_shape_is_logged_once(dashscope_emulator, conn, receiver, caplog):
    url = callback_url(receiver.base_url, CONN, mint_token(SECRET, CONN))
    with caplog.at_level(logging.WARNING):
        for n in range(5):
            httpx.post(url, json={"job": f"value-{n}", "data": {"result": n}})
    refused = [r for r in caplog.records if "its shape" in r.getMessage()]
    assert len(refused) == 1
    assert "value-" not in caplog.text


def test_a_body_that_never_ends_is_cut_off(dashscope_emulator, conn, receiver, monkeypatch):
    monkeypatch.setattr(receiver_module, "BODY_TIMEOUT", 0.5)
    url = callback_url(receiver.base_url, CONN, mint_token(SECRET, CONN))

    def trickle():
        yield b'{"id": '
        time.sleep(5)
        yield b'"batch_1"}'

    response = httpx.post(url, content=trickle(), timeout=30)
    assert response.status_code == 408


def test_forged_probes_are_answered_while_every_confirmation_is_slow(
    dashscope_emulator, conn, client, receiver
):
    ids = [
        wait_terminal(client, create(client, ours(callback=False)))
        for _ in range(MAX_CONCURRENT_CONFIRMATIONS)
    ]
    dashscope_emulator.add_fault("latency", method="GET", path="/batches/*", latency=8)
    token = eventbridge_url(receiver.base_url, CONN, SECRET).rsplit("/", 1)[1]
    url = callback_url(receiver.base_url, CONN, token)
    slow = [
        threading.Thread(target=httpx.post, args=(url,), kwargs={"json": {"id": b}, "timeout": 30})
        for b in ids
    ]
    for thread in slow:
        thread.start()
    time.sleep(1)  # every confirmation slot is now taken by a slow read
    probe = httpx.post(callback_url(receiver.base_url, CONN, mint_token("forged", CONN)), json={"id": ids[0]})
    assert probe.status_code == 404
    assert probe.elapsed.total_seconds() < 4  # answered while the slow reads still hold every slot
    for thread in slow:
        thread.join()


def test_an_unknown_connection_and_a_bad_token_get_the_same_answer_in_the_same_time(
    dashscope_emulator, conn, receiver, monkeypatch
):
    import os

    monkeypatch.setenv(
        "AIRFLOW_CONN_PLAIN_HTTP",
        json.dumps({"conn_type": "http", "password": "p", "extra": {"finish_events_secret": SECRET}}),
    )
    assert os.environ["AIRFLOW_CONN_PLAIN_HTTP"]
    cases = {
        "bad token": callback_url(receiver.base_url, CONN, mint_token("forged", CONN)),
        "unknown connection": callback_url(
            receiver.base_url, "no_such_conn", mint_token(SECRET, "no_such_conn")
        ),
        "http connection": callback_url(receiver.base_url, "plain_http", mint_token(SECRET, "plain_http")),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    answers = set()
    for _ in range(15):
        for name, url in cases.items():
            response = httpx.post(url, json={"id": "batch_1"})
            answers.add((response.status_code, response.text))
            times[name].append(response.elapsed.total_seconds())
    assert answers == {(404, '{"detail":"unknown event"}')}
    medians = {name: statistics.median(t) for name, t in times.items()}
    assert min(medians.values()) >= REFUSAL_SECONDS
    assert max(medians.values()) - min(medians.values()) < REFUSAL_SECONDS / 2, medians


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"id": "batch_a", "object": "batch", "status": "completed"}, "batch_a"),
        ({"batch_id": "batch_b"}, "batch_b"),
        ({"batchId": "batch_c"}, "batch_c"),
        ({"task_id": "batch_d"}, "batch_d"),
        ({"data": {"batch_id": "batch_e"}}, "batch_e"),
        ({"output": {"task_id": "batch_f"}}, "batch_f"),
        (
            {
                "specversion": "1.0",
                "source": "acs.dashscope",
                "type": "dashscope:System:BatchTaskFinish",
                "data": {"id": "batch_g"},
            },
            "batch_g",
        ),
        (
            {
                "specversion": "1.0",
                "type": "dashscope:System:BatchTaskFinish",
                "data": {"output": {"batchId": "batch_h"}},
            },
            "batch_h",
        ),
    ],
)
def test_the_batch_id_is_found_where_callbacks_and_events_put_it(body, expected):
    assert finish_batch_id(json.dumps(body).encode()) == expected


@pytest.mark.parametrize(
    "body",
    [b"[]", b"nul", b'{"id": 3}', b'{"id": "file-1"}', b'{"specversion": "1.0"}', b'{"id": "batch_1\\n"}'],
)
def test_bodies_naming_no_well_formed_batch_are_rejected(body):
    with pytest.raises(BadRequest):
        finish_batch_id(body)


def test_a_burst_of_callbacks_is_posted_each_once(dashscope_emulator, conn, client):
    dashscope_emulator.set_clock(time_scale=0)
    created = [create(client, ours()) for _ in range(20)]
    dashscope_emulator.advance(3600)  # all finish at once: 20 callbacks arrive together
    sent = deliveries(dashscope_emulator, 20)
    assert {d["status_code"] for d in sent} == {200}
    posted, lost = mailbox().since(0)
    assert (sorted(posted), lost) == (sorted(created), False)


def test_the_task_sdk_cannot_write_the_mailbox_from_a_server_process(airflow_db, monkeypatch):
    """
    Why the receiver writes through Airflow's Variable model (``append_to_mailbox``): in a server process
    (the api-server sets ``_AIRFLOW_PROCESS_CONTEXT=server``) the Task SDK's ``Variable.set`` has no
    supervisor to send its write to. When an Airflow release lets it, this fails: switch to the SDK.
    """
    from airflow.sdk import Variable

    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")
    with pytest.raises(ImportError, match="SUPERVISOR_COMMS"):
        Variable.set("dashscope_batch_sdk_probe", "x")
