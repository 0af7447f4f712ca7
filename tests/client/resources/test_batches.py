"""The Batches flows: a create looks for its batch before re-sending; local checks."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_dashscope_batch.client import (
    LocalValidationError,
)
from airflow_provider_dashscope_batch.client._flow import Send, Sleep
from airflow_provider_dashscope_batch.client.resources import batches
from tests.client.flow_support import batch_json, core, drive, response


def test_create_looks_up_before_resending_after_ambiguous_failure():
    c = core()
    flow = batches.create_batch_flow(
        c, input_file_id="file-1", endpoint="/v1/chat/ds-test", idempotency_key="k1"
    )
    post = next(flow)
    assert isinstance(post, Send)
    assert post.request.method == "POST"
    assert b'"idempotency_key":"k1"' in post.request.content
    assert isinstance(flow.send(httpx.ReadTimeout("lost", request=post.request)), Sleep)
    lookup = flow.send(None)
    assert lookup.request.method == "GET"
    assert lookup.request.url.params["input_file_ids"] == "file-1"
    page = {"data": [batch_json("batch_other", "k0"), batch_json("batch_mine", "k1")], "has_more": False}
    with pytest.raises(StopIteration) as stop:
        flow.send(response(200, page))
    assert stop.value.value.id == "batch_mine"


def test_create_resends_when_lookup_finds_nothing_and_on_429_without_lookup():
    c = core()
    flow = batches.create_batch_flow(c, input_file_id="file-1", endpoint="/v1/chat/ds-test")
    post = next(flow)
    flow.send(response(502, {}))
    lookup = flow.send(None)
    assert lookup.request.method == "GET"
    again = flow.send(response(200, {"data": [], "has_more": False}))
    assert again.request.method == "POST"
    assert again.request.content == post.request.content  # same idempotency key
    assert isinstance(flow.send(response(429, {"error": {"code": "limit_requests"}})), Sleep)
    assert flow.send(None).request.method == "POST"  # 429: never processed, no lookup needed


def test_create_validates_locally():
    c = core()
    with pytest.raises(LocalValidationError, match="completion_window"):
        next(
            batches.create_batch_flow(
                c, input_file_id="f", endpoint="/v1/chat/completions", completion_window="2h"
            )
        )
    with pytest.raises(LocalValidationError, match="differ"):
        next(
            batches.create_batch_flow(
                c,
                input_file_id="f",
                endpoint="/v1/chat/completions",
                metadata={"idempotency_key": "a"},
                idempotency_key="b",
            )
        )


def test_find_batch_by_name_and_metadata_without_an_input_file():
    """The lookup the common.ai adapter uses: a server-side name filter, the key and a further field."""
    other_file = {**batch_json("b1", "k"), "input_file_id": "file-2"}
    wrong_field = {**batch_json("b2", "k"), "metadata": {"idempotency_key": "k", "fingerprint": "x"}}
    right = {**batch_json("b3", "k"), "metadata": {"idempotency_key": "k", "fingerprint": "y"}}
    flow = batches.find_batch_flow(
        core(), idempotency_key="k", ds_name="job-k", metadata={"fingerprint": "y"}
    )
    found, steps = drive(flow, [response(200, {"data": [other_file, wrong_field, right], "has_more": False})])
    assert found.id == "b3"
    params = steps[0].request.url.params
    assert params["ds_name"] == "job-k"
    assert "input_file_ids" not in params
    found, _ = drive(
        batches.find_batch_flow(core(), idempotency_key="k", input_file_id="file-1"),
        [response(200, {"data": [other_file, wrong_field], "has_more": False})],
    )
    assert found.id == "b2"  # the input file decides when it is given; further fields only when asked


def test_ids_are_quoted_as_one_path_segment():
    _, steps = drive(batches.retrieve_batch_flow(core(), "a/b c"), [response(200, batch_json("a/b c"))])
    assert steps[0].request.url.raw_path.endswith(b"/batches/a%2Fb%20c")
    with pytest.raises(LocalValidationError, match="an id is required"):
        next(batches.cancel_batch_flow(core(), ""))
