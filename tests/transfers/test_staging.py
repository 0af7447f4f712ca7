"""One result file into a staged file: who restarts what, and how long it waits (emulator over HTTP)."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_dashscope_batch.client import DashScopeClient, RetryPolicy, ServerError
from airflow_provider_dashscope_batch.results.lines import ResultFormat
from airflow_provider_dashscope_batch.transfers.staging import (
    DownloadFailed,
    ResultFileStager,
    UnreadableResult,
)

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


@pytest.fixture
def result_server():
    """
    A loopback HTTP server answering ``/files/{id}`` and ``/files/{id}/content`` with the bytes given.

    Not the emulator: it only serves the result files its batches wrote, and a result line that is not
    JSON is a wire detail it never produces.
    """
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parts = self.path.split("/")
            data = files[parts[parts.index("files") + 1]]
            if self.path.endswith("/content"):
                body, kind = data, "application/octet-stream"
            else:
                body, kind = (
                    json.dumps({"id": parts[-1], "object": "file", "bytes": len(data)}).encode(),
                    "application/json",
                )
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            if not isinstance(sys.exc_info()[1], ConnectionError):  # a download given up on mid-body
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with DashScopeClient(
        api_key="sk-test", base_url=f"http://127.0.0.1:{server.server_address[1]}/compatible-mode/v1"
    ) as client:
        yield client, files
    server.shutdown()
    thread.join()


def _result_line(i: int) -> bytes:
    body = {"model": "qwen-plus", "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    line = {"custom_id": f"req-{i}", "response": {"status_code": 200, "body": body}, "error": None}
    return json.dumps(line).encode() + b"\n"


def _worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("dashscope-results-")]


@pytest.mark.parametrize("fmt", [ResultFormat.JSONL, ResultFormat.PARQUET])
def test_a_line_that_is_not_json_fails_naming_file_and_line_and_publishes_nothing(
    result_server, tmp_path, fmt
):
    client, files = result_server
    lines = [_result_line(i) for i in range(3000)]
    lines[2199] = b'{"custom_id": "req-2199", "response": {"status_code": 200\n'  # cut inside the object
    files["file-batch_output-x"] = b"".join(lines)
    stager = ResultFileStager(
        client, fmt, retry=RetryPolicy(max_retries=0), chunk_size=4096, row_group_size=100
    )

    # the line is parsed in a worker thread many chunks after the download started; its error stops both
    with pytest.raises(
        UnreadableResult, match=r"^file file-batch_output-x, line 2200: result line is not valid"
    ):
        stager.stage("file-batch_output-x", ObjectStoragePath(f"file://{tmp_path}/output.{fmt.extension}"))

    assert list(tmp_path.iterdir()) == []
    assert _worker_threads() == []


def test_jsonl_copy_counts_lines_and_usage_across_chunks_byte_for_byte(result_server, tmp_path):
    client, files = result_server
    data = b"".join(_result_line(i) for i in range(3000)) + b"\n  \n" + _result_line(3000).rstrip(b"\n")
    files["file-batch_output-y"] = data
    stager = ResultFileStager(
        client, ResultFormat.JSONL, retry=RetryPolicy(max_retries=0), chunk_size=4096, row_group_size=100
    )

    staged = stager.stage("file-batch_output-y", ObjectStoragePath(f"file://{tmp_path}/output.jsonl"))
    staged.file.publish()

    assert (tmp_path / "output.jsonl").read_bytes() == data
    assert (
        staged.record.lines == staged.usage.requests == 3001
    )  # blank lines are no lines; the last has no \n
    assert staged.usage.total_tokens == 5 * 3001
    assert staged.record.sha256 == staged.record.source_sha256 == hashlib.sha256(data).hexdigest()
    assert _worker_threads() == []
