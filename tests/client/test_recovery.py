"""Recovery after ambiguous failures proves identity with a minted token, sync and async, over HTTP.

The emulator's faults decide *when* the service acts on a request: never (``status``/``drop`` before
handling), before a lost answer (``after_processing``), or after the client has given up (``defer``).
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path

import pytest

from airflow_provider_dashscope_batch.client import APITimeoutError, RetryPolicy, ServerError
from airflow_provider_dashscope_batch.client.types import Batch, BatchStatus

ENDPOINT = "/v1/chat/ds-test"
#: A client that gives up after 1 s, retries quickly and looks at short intervals.
IMPATIENT = {"timeout": 1.0, "retry_policy": RetryPolicy(max_retries=3, initial_delay=0.2, max_delay=0.5)}


def write_lines(path: Path, prefix: str, lines: int = 4) -> Path:
    """A JSONL input whose ``custom_id``s start with ``prefix``; equal ``lines`` give equal sizes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for i in range(lines):
            body = {"model": "batch-test-model", "messages": [{"role": "user", "content": f"q{i}"}]}
            line = {"custom_id": f"{prefix}-{i}", "method": "POST", "url": ENDPOINT, "body": body}
            handle.write(json.dumps(line) + "\n")
    return path


def custom_ids_run_from(client, emulator, file_id: str) -> set[str]:
    """Run a batch of ``file_id`` to its end and return the ``custom_id``s its output answers."""
    batch = client.create_batch(input_file_id=file_id, endpoint=ENDPOINT)
    for _ in range(50):
        batch = client.retrieve_batch(batch.id)
        if batch.status.is_terminal:
            break
        emulator.advance(5)
    assert batch.status == BatchStatus.COMPLETED, batch
    content = b"".join(client.iter_file_content(batch.output_file_id))
    return {json.loads(line)["custom_id"] for line in content.splitlines()}


def wait_until(condition, what: str):
    """Poll ``condition`` until it returns something truthy (bounded, not a timing assertion)."""
    deadline = time.monotonic() + 30
    while not (value := condition()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)
    return value


@pytest.fixture
def input_file(client, tmp_path):
    return client.upload_file(write_lines(tmp_path / "requests.jsonl", "in"))


def working(client) -> list[Batch]:
    """Batches that are not being (or have not been) cancelled."""
    return [
        b for b in client.list_batches() if b.status not in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    ]


# ------------------------------------------------------------------------------------ uploads: issue 11.1
def test_upload_after_lost_500_never_returns_another_runs_file(client, dashscope_emulator, tmp_path):
    a = write_lines(tmp_path / "a" / "requests.jsonl", "a")
    b = write_lines(tmp_path / "b" / "requests.jsonl", "b")
    assert a.stat().st_size == b.stat().st_size
    assert a.read_bytes() != b.read_bytes()
    uploaded_a = client.upload_file(a)
    dashscope_emulator.add_fault("status", method="POST", path="/files", status=500, count=1)
    uploaded_b = client.upload_file(b)
    assert uploaded_b.id != uploaded_a.id
    assert dashscope_emulator.request_counts()["POST /files"] == 3  # A, B lost, B again
    assert custom_ids_run_from(client, dashscope_emulator, uploaded_b.id) == {f"b-{i}" for i in range(4)}


def test_upload_handled_before_a_lost_answer_is_recovered_by_its_token(client, dashscope_emulator, tmp_path):
    path = write_lines(tmp_path / "requests.jsonl", "x")
    client.upload_file(path)  # another upload of the same name and size, which must not be taken
    dashscope_emulator.clear_request_counts()
    dashscope_emulator.add_fault("drop", method="POST", path="/files", after_processing=True, count=1)
    uploaded = client.upload_file(path, upload_token="run-42-try-1")
    assert uploaded.filename == "requests.run-42-try-1.jsonl"
    assert dashscope_emulator.request_counts()["POST /files"] == 1  # found, not re-sent
    files = {f.id: f.filename for f in client.list_files()}
    assert len(files) == 2
    assert files[uploaded.id] == "requests.run-42-try-1.jsonl"


def test_unseekable_upload_handled_before_a_lost_answer_is_recovered(client, dashscope_emulator, tmp_path):
    data = write_lines(tmp_path / "pipe.jsonl", "p").read_bytes()
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    os.close(write_fd)
    dashscope_emulator.add_fault("status", method="POST", path="/files", status=502, after_processing=True)
    with os.fdopen(read_fd, "rb") as pipe:
        uploaded = client.upload_file(pipe, filename="pipe.jsonl")
    assert [f.id for f in client.list_files()] == [uploaded.id]
    assert uploaded.bytes == len(data)


def test_upload_token_is_validated(client):
    with pytest.raises(ValueError, match="upload_token"):
        client.upload_file(io.BytesIO(b"{}\n"), filename="x.jsonl", upload_token="no spaces or dots.")


# ---------------------------------------------------------------------------- late duplicates: issue 11.2
def test_create_processed_late_within_the_recovery_window_is_found_not_duplicated(
    make_client, dashscope_emulator, input_file
):
    client = make_client(
        timeout=1.0,
        retry_policy=RetryPolicy(max_retries=3, initial_delay=0.2, max_delay=0.5, recovery_window=6),
    )
    dashscope_emulator.clear_request_counts()
    dashscope_emulator.add_fault("defer", method="POST", path="/batches", latency=3, count=1)
    batch = client.create_batch(input_file_id=input_file.id, endpoint=ENDPOINT)
    assert [b.id for b in client.list_batches()] == [batch.id]
    assert dashscope_emulator.request_counts()["POST /batches"] == 1


def test_upload_processed_late_within_the_recovery_window_is_found_not_duplicated(
    make_client, dashscope_emulator, tmp_path
):
    client = make_client(
        timeout=1.0,
        retry_policy=RetryPolicy(max_retries=3, initial_delay=0.2, max_delay=0.5, recovery_window=6),
    )
    dashscope_emulator.add_fault("defer", method="POST", path="/files", latency=3, count=1)
    uploaded = client.upload_file(write_lines(tmp_path / "requests.jsonl", "late"))
    assert [f.id for f in client.list_files()] == [uploaded.id]
    assert dashscope_emulator.request_counts()["POST /files"] == 1


def test_create_processed_after_the_window_is_cancelled_by_cancel_duplicates(
    make_client, dashscope_emulator, input_file, caplog
):
    dashscope_emulator.configure(validating_seconds=3600)  # nothing starts working on its own meanwhile
    client = make_client(**IMPATIENT)  # window: twice the 1 s the attempt was in flight
    dashscope_emulator.add_fault("defer", method="POST", path="/batches", latency=3, count=1)
    kept = client.create_batch(input_file_id=input_file.id, endpoint=ENDPOINT, idempotency_key="key-1")
    late = wait_until(lambda: [b for b in client.list_batches() if b.id != kept.id], "the late create")
    assert [b.metadata["idempotency_key"] for b in late] == ["key-1"]
    caplog.set_level(logging.WARNING)
    cancelled = client.cancel_duplicates(
        idempotency_key="key-1", input_file_id=input_file.id, keep_batch_id=kept.id
    )
    assert [b.id for b in cancelled] == [late[0].id]
    assert [b.id for b in working(client)] == [kept.id]
    assert f"{late[0].id} duplicates batch {kept.id}" in caplog.text
    again = client.cancel_duplicates(
        idempotency_key="key-1", input_file_id=input_file.id, keep_batch_id=kept.id
    )
    assert list(again) == []


def test_create_processed_while_the_resend_is_in_flight_is_cancelled(
    make_client, dashscope_emulator, input_file, caplog
):
    """The first attempt lands after the looks but before the re-send: the last search cancels it."""
    dashscope_emulator.configure(validating_seconds=3600)
    client = make_client(
        timeout=2.0, retry_policy=RetryPolicy(max_retries=3, initial_delay=0.1, recovery_window=0)
    )
    dashscope_emulator.add_fault("defer", method="POST", path="/batches", latency=2.5, count=1)
    dashscope_emulator.add_fault("latency", method="POST", path="/batches", latency=1, count=1)
    caplog.set_level(logging.WARNING)
    batch = client.create_batch(input_file_id=input_file.id, endpoint=ENDPOINT)
    assert dashscope_emulator.request_counts()["POST /batches"] == 2
    assert [b.id for b in working(client)] == [batch.id]
    assert len(list(client.list_batches())) == 2
    assert f"duplicates batch {batch.id}" in caplog.text


def test_upload_stored_while_the_resend_is_in_flight_is_deleted(
    make_client, dashscope_emulator, tmp_path, caplog
):
    client = make_client(
        timeout=2.0, retry_policy=RetryPolicy(max_retries=3, initial_delay=0.1, recovery_window=0)
    )
    dashscope_emulator.add_fault("defer", method="POST", path="/files", latency=2.5, count=1)
    dashscope_emulator.add_fault("latency", method="POST", path="/files", latency=1, count=1)
    caplog.set_level(logging.WARNING)
    uploaded = client.upload_file(write_lines(tmp_path / "requests.jsonl", "twice"))
    assert dashscope_emulator.request_counts()["POST /files"] == 2
    assert [f.id for f in client.list_files()] == [uploaded.id]
    assert f"a late copy of file {uploaded.id}" in caplog.text


def test_a_create_that_keeps_failing_ambiguously_is_looked_up_and_raised(
    make_client, dashscope_emulator, input_file
):
    client = make_client(**IMPATIENT)
    dashscope_emulator.add_fault("status", method="POST", path="/batches", status=503, retry_after=0)
    with pytest.raises(ServerError):
        client.create_batch(input_file_id=input_file.id, endpoint=ENDPOINT)
    assert list(client.list_batches()) == []
    assert dashscope_emulator.request_counts()["POST /batches"] == 4


def test_last_attempt_timing_out_still_finds_what_it_created(make_client, dashscope_emulator, input_file):
    client = make_client(timeout=1.0, retry_policy=RetryPolicy(max_retries=0, initial_delay=0.2))
    dashscope_emulator.add_fault("latency", method="POST", path="/batches", latency=2, after_processing=True)
    batch = client.create_batch(input_file_id=input_file.id, endpoint=ENDPOINT)
    assert [b.id for b in client.list_batches()] == [batch.id]


def test_a_timeout_is_not_mistaken_for_success_when_nothing_was_created(
    make_client, dashscope_emulator, input_file
):
    client = make_client(timeout=1.0, retry_policy=RetryPolicy(max_retries=0, initial_delay=0.2))
    dashscope_emulator.add_fault("latency", method="POST", path="/batches", latency=2, count=1)
    with pytest.raises(APITimeoutError):
        client.create_batch(input_file_id=input_file.id, endpoint=ENDPOINT)
