"""The API key never leaves the client: not in any error field, chained exception or log line.

The emulator plays a gateway that echoes request headers: every field of its error answers (message,
type, code, param, request id) and two response headers quote the ``Authorization`` header, so the key
(the canary) reaches the client everywhere a careless one would copy it from.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_dashscope_batch.client import (
    AuthenticationError,
    DashScopeError,
    IncompleteDownloadError,
    InvalidRequestError,
    ServerError,
)
from airflow_provider_dashscope_batch.client.types import Batch
from tests.client.client_helpers import finished

ENDPOINT = "/v1/chat/ds-test"


def chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def assert_clean(exc: DashScopeError, canary: str) -> None:
    """No exception in the chain holds the canary; the client's own errors chain nothing at all."""
    assert exc.__cause__ is None
    assert exc.__context__ is None
    for link in chain(exc):
        texts = [str(link), repr(link), repr(vars(link)), repr(link.args)]
        assert not [text for text in texts if canary in text], texts


@pytest.fixture
def canary(dashscope_emulator, caplog) -> str:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included: httpcore logs response headers
    return dashscope_emulator.api_key


def finished_batch(client, emulator, path: Path) -> Batch:
    batch = client.create_batch(input_file_id=client.upload_file(path).id, endpoint=ENDPOINT)
    return finished(client, emulator, batch)


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/batches/*", 500, ServerError),  # retried: the retry warnings quote the error
        ("POST", "/batches", 503, ServerError),  # ambiguous: recovery looks, then the error
        ("GET", "/files", 400, InvalidRequestError),
        ("GET", "/files/*", 401, AuthenticationError),
    ],
)
def test_echoed_key_is_redacted_from_every_error_field_and_log(
    client, dashscope_emulator, canary, caplog, tmp_path, write_requests, method, path, status, error
):
    input_file = client.upload_file(write_requests(tmp_path / "in.jsonl", 2))
    dashscope_emulator.add_fault(
        "status", method=method, path=path, status=status, retry_after=0, echo_headers=True
    )
    calls = {
        "/batches/*": lambda: client.retrieve_batch("batch_x"),
        "/batches": lambda: client.create_batch(input_file_id=input_file.id, endpoint=ENDPOINT),
        "/files": lambda: list(client.list_files()),
        "/files/*": lambda: client.retrieve_file(input_file.id),
    }
    with pytest.raises(error) as raised:
        calls[path]()
    exc = raised.value
    assert_clean(exc, canary)
    assert "***" in exc.message
    assert "***" in exc.code
    assert "***" in exc.error_type
    assert "***" in exc.param
    assert "***" in exc.request_id
    assert "x-echo-authorization" in caplog.text  # httpcore did log the echoing headers ...
    assert canary not in caplog.text  # ... with the key scrubbed, as from the retry warnings


def test_truncated_download_error_chains_nothing(
    client, dashscope_emulator, canary, caplog, tmp_path, write_requests
):
    batch = finished_batch(client, dashscope_emulator, write_requests(tmp_path / "in.jsonl", 20))
    dashscope_emulator.add_fault("truncate", path="/files/*/content", truncate_at=10)
    with pytest.raises(IncompleteDownloadError) as raised:
        client.download_file(batch.output_file_id, tmp_path / "out.jsonl")
    assert_clean(raised.value, canary)
    with pytest.raises(IncompleteDownloadError) as raised:
        list(client.iter_file_content(batch.output_file_id))
    assert_clean(raised.value, canary)
    assert canary not in caplog.text


def test_a_dropped_create_chains_nothing(make_client, dashscope_emulator, canary, tmp_path, write_requests):
    client = make_client(max_retries=0, retry_policy=None)
    input_file = client.upload_file(write_requests(tmp_path / "in.jsonl", 2))
    dashscope_emulator.add_fault("drop", method="POST", path="/batches")
    with pytest.raises(DashScopeError) as raised:
        client.create_batch(input_file_id=input_file.id, endpoint=ENDPOINT)
    assert raised.value.retryable
    assert_clean(raised.value, canary)
