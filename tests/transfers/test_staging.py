"""One result file into a staged file: who restarts what, and how long it waits (emulator over HTTP)."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_dashscope_batch.client import DashScopeClient, RetryPolicy, ServerError
from airflow_provider_dashscope_batch.results import ResultFormat
from airflow_provider_dashscope_batch.transfers.staging import DownloadFailed, ResultFileStager

CONTENT_ROUTE = "GET /files/{file_id}/content"


@pytest.fixture
def stager_for(dashscope_emulator):
    """A stager over a client with 2 retries of its own, recording the waits between restarts."""
    sleeps: list[float] = []
    client = DashScopeClient(
        api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url, max_retries=2
    )

    def make(retry: RetryPolicy) -> tuple[ResultFileStager, list[float]]:
        stager = ResultFileStager(
            client,
            ResultFormat.JSONL,
            retry=retry,
            chunk_size=1 << 20,
            row_group_size=10,
            sleep=sleeps.append,
        )
        return stager, sleeps

    with client:
        yield make


def test_cut_short_body_restarts_with_the_policy_backoff(
    make_batch, stager_for, dashscope_emulator, tmp_path
):
    batch = make_batch(20)
    dashscope_emulator.add_fault(
        "truncate", method="GET", path=f"/files/{batch.output_file_id}/content", truncate_at=100, count=2
    )
    retry = RetryPolicy(max_retries=2, initial_delay=0.01, jitter=0)
    stager, sleeps = stager_for(retry)

    staged = stager.stage(batch.output_file_id, ObjectStoragePath(f"file://{tmp_path}/output.jsonl"))
    staged.file.publish()

    assert sleeps == [retry.backoff(0), retry.backoff(1)] == [0.01, 0.02]
    assert staged.record.lines == 20
    assert (tmp_path / "output.jsonl").stat().st_size == staged.record.bytes


def test_restarts_are_bounded(make_batch, stager_for, dashscope_emulator, tmp_path):
    batch = make_batch(5)
    dashscope_emulator.add_fault(
        "truncate", method="GET", path=f"/files/{batch.output_file_id}/content", truncate_at=10
    )
    stager, sleeps = stager_for(RetryPolicy(max_retries=1, initial_delay=0.01, jitter=0))

    with pytest.raises(DownloadFailed, match="failed 2 times, nothing was published"):
        stager.stage(batch.output_file_id, ObjectStoragePath(f"file://{tmp_path}/output.jsonl"))

    assert len(sleeps) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_request_the_client_gave_up_on_is_not_retried_again(
    make_batch, stager_for, dashscope_emulator, tmp_path
):
    # one retry owner per phase: until the response starts, the client's own policy (2 retries) decides
    batch = make_batch(5)
    dashscope_emulator.add_fault(
        "status", method="GET", path=f"/files/{batch.output_file_id}/content", status=503, retry_after=0
    )
    stager, sleeps = stager_for(RetryPolicy(max_retries=4, initial_delay=0.01, jitter=0))
    dashscope_emulator.clear_request_counts()

    with pytest.raises(ServerError):
        stager.stage(batch.output_file_id, ObjectStoragePath(f"file://{tmp_path}/output.jsonl"))

    assert dashscope_emulator.request_counts()[CONTENT_ROUTE] == 3
    assert sleeps == []
    assert list(tmp_path.iterdir()) == []
