"""Receipts of creates and uploads: which failed attempts leave a late copy possible, and for how long."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from airflow_provider_dashscope_batch.client import RetryPolicy
from airflow_provider_dashscope_batch.client.ambiguity import LATE_WINDOW_FACTOR, Ambiguity, late_window

REQUESTS = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "requests.jsonl"
ENDPOINT = "/v1/chat/ds-test"
QUICK = RetryPolicy(max_retries=3, initial_delay=0.1, max_delay=0.2)


@pytest.fixture
def impatient(make_client):
    return make_client(timeout=1.0, retry_policy=QUICK)


@pytest.fixture
def file_id(client) -> str:
    return client.upload_file(REQUESTS).id


def test_a_clean_create_is_not_ambiguous(impatient, file_id):
    receipt = impatient.create_batch_receipt(input_file_id=file_id, endpoint=ENDPOINT)
    assert receipt.ambiguity is None
    assert receipt.value.input_file_id == file_id


def test_a_timed_out_create_re_sent_is_ambiguous_for_nine_timeouts(impatient, file_id, dashscope_emulator):
    dashscope_emulator.add_fault("defer", method="POST", path="/batches", latency=3, count=1)
    started = time.time()
    receipt = impatient.create_batch_receipt(input_file_id=file_id, endpoint=ENDPOINT)
    assert receipt.ambiguity is not None
    failed = started + 1.0  # the attempt was held for the whole 1 s timeout
    assert failed + 9 * 1.0 <= receipt.ambiguity.until <= time.time() + 9 * 1.0
    assert receipt.ambiguity.open()


def test_a_500_answered_at_once_is_ambiguous_only_briefly(impatient, file_id, dashscope_emulator):
    dashscope_emulator.add_fault("status", method="POST", path="/batches", status=500, count=1)
    before = time.time()
    receipt = impatient.create_batch_receipt(input_file_id=file_id, endpoint=ENDPOINT)
    assert receipt.ambiguity is not None
    assert receipt.ambiguity.until < before + 9 * 1.0  # it was held far less than a timeout


def test_an_attempt_whose_batch_the_recovery_found_is_accounted_for(impatient, file_id, dashscope_emulator):
    dashscope_emulator.add_fault(
        "latency", method="POST", path="/batches", latency=2, after_processing=True, count=1
    )
    receipt = impatient.create_batch_receipt(input_file_id=file_id, endpoint=ENDPOINT)
    assert receipt.ambiguity is None  # the one ambiguous attempt made the batch returned
    assert dashscope_emulator.request_counts()["POST /batches"] == 1


def test_an_upload_timed_out_and_re_sent_is_ambiguous(impatient, dashscope_emulator):
    dashscope_emulator.add_fault("defer", method="POST", path="/files", latency=3, count=1)
    receipt = impatient.upload_file_receipt(REQUESTS)
    assert receipt.ambiguity is not None
    assert receipt.value.filename.startswith("requests.")


def test_a_batch_created_elsewhere_gets_the_longest_window_from_its_creation():
    assert late_window(60.0) == LATE_WINDOW_FACTOR * 60.0
    now = 1_000_000.0
    assert Ambiguity.after_created(int(now) - 100, 60.0, now=now) == Ambiguity(now - 100 + 600)
    assert Ambiguity.after_created(int(now) - 601, 60.0, now=now) is None
    assert Ambiguity.after_created(None, 60.0, now=now) is None
