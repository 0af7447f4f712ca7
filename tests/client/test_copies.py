"""Late copies of a create or upload, found and removed by the client (both faces, against the emulator)."""

from __future__ import annotations

import time

from airflow_provider_dashscope_batch.client.ratelimit import RateBudget, RateLimit, RequestKind
from airflow_provider_dashscope_batch.client.status import BatchRef
from airflow_provider_dashscope_batch.client.types import BatchStatus

ENDPOINT = "/v1/chat/ds-test"
KEY = "airflow-" + "c" * 40 + "-g1"


def _scene(client, write_requests, tmp_path):
    """A kept batch and its duplicate (same key, same file), and a second file under the upload's name."""
    path = write_requests(tmp_path / "requests.jsonl", 1)
    kept_file = client.upload_file(path, upload_token="token-0001")
    copy = client.upload_file(path, upload_token="token-0001")  # a late upload stores the same name
    kept = client.create_batch(input_file_id=kept_file.id, endpoint=ENDPOINT, idempotency_key=KEY)
    duplicate = client.create_batch(input_file_id=kept_file.id, endpoint=ENDPOINT, idempotency_key=KEY)
    return kept_file, copy, kept, duplicate


def test_reconcile_cancels_the_duplicate_and_deletes_the_late_file_once(
    client, dashscope_emulator, write_requests, tmp_path
):
    dashscope_emulator.configure(validating_seconds=3600)
    kept_file, copy, kept, duplicate = _scene(client, write_requests, tmp_path)
    ref = BatchRef(kept.id, kept_file.id, KEY, watch_until=time.time() + 60)
    look = {"filename": kept_file.filename, "file_until": time.time() + 60}
    found = client.reconcile(ref, **look)
    assert (found.cancelled, found.deleted) == ((duplicate.id,), (copy.id,))
    assert found.read.batches[kept.id].status == BatchStatus.VALIDATING
    assert client.retrieve_batch(duplicate.id).status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    assert [f.id for f in client.list_files()] == [kept_file.id]
    again = client.reconcile(ref, **look)  # a re-run finds nothing left to do
    assert (again.cancelled, again.deleted) == ((), ())


def test_find_file_copies_only_reads(client, write_requests, tmp_path):
    kept_file, copy, _, _ = _scene(client, write_requests, tmp_path)
    found = client.find_file_copies(
        filename=kept_file.filename, keep_file_id=kept_file.id, until=time.time() + 60
    )
    assert [f.id for f in found] == [copy.id]
    assert {f.id for f in client.list_files()} == {kept_file.id, copy.id}


def test_remove_late_copies_twice_is_harmless(client, dashscope_emulator, write_requests, tmp_path):
    dashscope_emulator.configure(validating_seconds=3600)
    kept_file, copy, kept, duplicate = _scene(client, write_requests, tmp_path)
    for _ in range(2):  # the second run meets a batch being cancelled and a file already gone
        client.remove_late_copies(kept.id, batch_ids=[duplicate.id], file_ids=[copy.id])
    assert client.retrieve_batch(duplicate.id).status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    assert client.retrieve_batch(kept.id).status == BatchStatus.VALIDATING
    assert [f.id for f in client.list_files()] == [kept_file.id]


def test_lists_first_until_the_list_budget_is_spent_and_retrieves_can_answer():
    budget = RateBudget({RequestKind.BATCH_LIST: RateLimit(1), RequestKind.BATCH_RETRIEVE: RateLimit(1000)})
    assert budget.lists_first(20)
    budget.buckets[RequestKind.BATCH_LIST].reserve()  # the one list token is spent
    assert not budget.lists_first(20)  # 20 retrieves fit the retrieve budget (a burst of 100)
    assert budget.lists_first(200)  # 200 do not: wait for a list token
