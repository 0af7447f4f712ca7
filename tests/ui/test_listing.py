"""The page's reads of the service: one list request per page for all views within the shared TTL."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from airflow_provider_dashscope_batch.client import DashScopeClient
from airflow_provider_dashscope_batch.ui.listing import BatchQuery, Listings, UnknownConnection

CONN_ID = "dashscope_page"


@pytest.fixture
def listings(dashscope_emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Listings:
    conn = {"conn_type": "dashscope", "password": dashscope_emulator.api_key}
    conn["extra"] = {"base_url": dashscope_emulator.base_url}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    path = tmp_path / "in.jsonl"
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/ds-test",
        "body": {"model": "m", "messages": []},
    }
    path.write_text(json.dumps(line) + "\n")
    with DashScopeClient(api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url) as client:
        file_id = client.upload_file(path).id
        for i in range(3):
            client.create_batch(
                input_file_id=file_id, endpoint="/v1/chat/ds-test", metadata={"ds_name": f"b{i}"}
            )
    dashscope_emulator.clear_request_counts()
    return Listings(list_ttl=60)


def _lists(emulator: Any) -> int:
    return emulator.request_counts().get("GET /batches", 0)


def test_views_within_the_ttl_share_one_request(listings, dashscope_emulator):
    query = BatchQuery(CONN_ID, limit=10)
    threads = [threading.Thread(target=listings.page, args=(query,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(listings.page(query).batches) == 3
    assert _lists(dashscope_emulator) == 1
    listings.page(BatchQuery(CONN_ID, ds_name="b1", limit=10))  # another page is another request
    assert _lists(dashscope_emulator) == 2
    listings.forget(CONN_ID)  # after a cancel: the next view reads again
    listings.page(query)
    assert _lists(dashscope_emulator) == 3


def test_paging_follows_the_last_id_and_knows_the_last_page_without_a_second_request(
    listings, dashscope_emulator
):
    first = listings.page(BatchQuery(CONN_ID, limit=2))
    assert [b.metadata["ds_name"] for b in first.batches] == ["b2", "b1"]
    assert first.next_after == first.batches[-1].id
    last = listings.page(BatchQuery(CONN_ID, after=first.next_after, limit=2))
    assert [b.metadata["ds_name"] for b in last.batches] == ["b0"]
    assert last.next_after is None
    assert _lists(dashscope_emulator) == 2


def test_an_unknown_connection_is_refused_without_a_request(listings, dashscope_emulator):
    with pytest.raises(UnknownConnection):
        listings.page(BatchQuery("no_such_connection"))
    assert _lists(dashscope_emulator) == 0
