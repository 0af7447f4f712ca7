"""Pagination: cursors followed, a stalled cursor detected."""

from __future__ import annotations

from datetime import datetime

import pytest

from airflow_provider_dashscope_batch.client._flow import Emit
from airflow_provider_dashscope_batch.client.resources import batches, files
from tests.client.flow_support import batch_json, core, response


def test_pagination_follows_cursor_and_detects_stall():
    c = core()
    flow = batches.list_batches_flow(
        c, status=["completed", "failed"], create_after=datetime(2025, 1, 2, 3, 4, 5), page_size=2
    )
    first = next(flow)
    assert first.request.url.params["status"] == "completed,failed"
    assert first.request.url.params["create_after"] == "20250102030405"
    assert first.request.url.params["limit"] == "2"
    assert "after" not in first.request.url.params
    emit = flow.send(
        response(200, {"data": [batch_json("b1"), batch_json("b2")], "last_id": "b2", "has_more": True})
    )
    assert isinstance(emit, Emit)
    assert [b.id for b in emit.items] == ["b1", "b2"]
    second = flow.send(None)
    assert second.request.url.params["after"] == "b2"
    flow.send(response(200, {"data": [batch_json("b3")], "has_more": False}))
    with pytest.raises(StopIteration):
        flow.send(None)
    stalled = files.list_files_flow(
        c,
    )
    next(stalled)
    stalled.send(response(200, {"data": [{"id": "f1"}], "has_more": True}))
    stalled.send(None)
    stalled.send(response(200, {"data": [{"id": "f1"}], "has_more": True}))
    with pytest.raises(Exception, match="did not advance"):
        stalled.send(None)
