"""The Files flows: an upload recovers only the file carrying its token."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from airflow_provider_dashscope_batch.client._flow import Sleep
from airflow_provider_dashscope_batch.client.resources import files
from tests.client.flow_support import core, response


def test_upload_recovery_matches_only_the_token():
    c = core()
    flow = files.upload_file_flow(
        c, io.BytesIO(b"x" * 10), filename="requests.jsonl", upload_token="tok-mine-1"
    )
    post = next(flow)
    assert b'filename="requests.tok-mine-1.jsonl"' in post.request.read()
    assert isinstance(flow.send(response(500, {})), Sleep)
    lookup = flow.send(None)
    now = int(datetime.now(UTC).timestamp())
    other = {"id": "file-a", "filename": "requests.jsonl", "bytes": 10, "created_at": now, "purpose": "batch"}
    resend = flow.send(response(200, {"data": [other], "has_more": False}))
    assert lookup.request.method == "GET"
    assert resend.request.method == "POST"  # a file of the same name and size is not ours
