"""DashScopeBatchAdapter against the emulator over HTTP: connections, limits, submit, results, orphans."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

pytest.importorskip(
    "airflow.providers.common.ai.batch",
    reason="apache-airflow-providers-common-ai is not installed; it needs pydantic >= 2.12, and the "
    "Airflow 3.0 leg pins pydantic 2.11.7",
)

from adapter_helpers import FINGERPRINT, KEY16, Verdict, normalized
from airflow.providers.common.ai.batch import dispatch
from airflow.providers.common.ai.batch.output_schema import build_output_spec, validate_extracted_output
from airflow.providers.common.ai.exceptions import (
    LLMBatchInputError,
)

from airflow_provider_dashscope_batch.client import DashScopeClient, NotFoundError
from airflow_provider_dashscope_batch.common_ai.adapter import (
    DashScopeBatchAdapter,
)


def run_to_end(adapter, emulator, requests, *, model="qwen-plus", output_type=Verdict, **kwargs):
    """Validate, submit and finish a batch; return (batch id, results by index)."""
    requests = normalized(requests)
    spec = build_output_spec(output_type)
    adapter.validate_requests(requests, model=model, output_spec=spec, idempotency_key=KEY16, **kwargs)
    result = adapter.submit(
        requests,
        model=model,
        idempotency_key=KEY16,
        input_fingerprint=FINGERPRINT,
        output_spec=spec,
        **kwargs,
    )
    emulator.set_clock(time_scale=0)
    emulator.advance(3600)
    assert adapter.get_batch(result.batch_id).status == "completed"
    return result.batch_id, {item.index: item for item in adapter.iter_results(result.batch_id)}


# ------------------------------------------------------------------------------------------ registry
@pytest.mark.parametrize("conn_type", ["pydanticai", "dashscope"])
def test_the_entry_point_serves_the_dashscope_prefix(conn_type):
    assert dispatch.get_adapter_class(conn_type, "dashscope:qwen-plus") is DashScopeBatchAdapter


def test_other_connection_types_are_refused():
    with pytest.raises(LLMBatchInputError, match="does not support connection type 'aws'"):
        dispatch.get_adapter_class("aws", "dashscope:qwen-plus")


def test_the_workspace_reaches_the_client():
    adapter = DashScopeBatchAdapter(api_key="sk-test", base_url="ap-southeast-1?workspace=ws-7")
    assert "ws-7" in repr(adapter._client)
    assert "https://ws-7.ap-southeast-1.maas.aliyuncs.com/compatible-mode/v1" in repr(adapter._client)


def test_no_api_key_is_refused(monkeypatch):
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    with pytest.raises(ValueError, match="password"):
        DashScopeBatchAdapter(api_key=None, base_url=None)


# ------------------------------------------------------------------------------------ submit/results
def test_structured_round_trip(adapter, dashscope_emulator, client):
    batch_id, results = run_to_end(adapter, dashscope_emulator, ["one", "two"], system_prompt="Judge.")
    assert sorted(results) == [0, 1]
    spec = build_output_spec(Verdict)
    for index, item in results.items():
        assert item.custom_id == f"{KEY16}-{index}"
        assert item.provider_status == "success"
        assert item.model == "qwen-plus"
        assert set(item.usage) == {"input_tokens", "output_tokens"}
        outcome = validate_extracted_output(adapter.extract_output(item, spec), spec)
        assert outcome.ok, outcome.error_message
        assert set(outcome.value) == {"label", "score"}
    batch = client.retrieve_batch(batch_id)
    assert batch.metadata["idempotency_key"] == KEY16
    assert batch.metadata["input_fingerprint"] == FINGERPRINT[:16]
    # the request sent: json_schema with the model's schema, the system prompt, max_tokens
    ((line, _),) = adapter._client.uploads
    body = line["body"]
    assert line["url"] == "/v1/chat/completions"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == Verdict.model_json_schema()
    assert body["messages"] == [{"role": "system", "content": "Judge."}, {"role": "user", "content": "one"}]
    assert body["max_tokens"] == 1024


def test_json_object_mode_puts_the_schema_in_the_system_prompt(adapter, dashscope_emulator):
    params = {"response_format": {"type": "json_object"}}
    run_to_end(adapter, dashscope_emulator, ["one"], request_params=params)
    ((line,),) = adapter._client.uploads
    body = line["body"]
    assert body["response_format"] == {"type": "json_object"}
    assert "JSON Schema" in body["messages"][0]["content"]
    assert json.dumps(Verdict.model_json_schema(), separators=(",", ":")) in body["messages"][0]["content"]


def test_the_test_model_uses_its_own_endpoint_and_fixed_text(adapter, dashscope_emulator):
    _, results = run_to_end(adapter, dashscope_emulator, ["a"], model="batch-test-model", output_type=str)
    extracted = adapter.extract_output(results[0], build_output_spec(str))
    assert (extracted.kind, extracted.text) == ("text", "This is a test result.")


def test_reasoning_content_is_not_the_answer(adapter, dashscope_emulator):
    params = {"enable_thinking": True}
    _, results = run_to_end(adapter, dashscope_emulator, ["a"], output_type=str, request_params=params)
    assert results[0].raw["reasoning_content"].startswith("Emulated reasoning")
    extracted = adapter.extract_output(results[0], build_output_spec(str))
    assert extracted.kind == "text"
    assert extracted.text.startswith("Emulated reply")


def test_failed_requests_come_back_as_errored_items(adapter, dashscope_emulator):
    dashscope_emulator.fail_requests(r"-1$")
    _, results = run_to_end(adapter, dashscope_emulator, ["a", "b"])
    assert results[0].provider_status == "success"
    assert results[1].provider_status == "errored"
    assert results[1].error == {
        "type": "provider_error",
        "message": f"Emulated failure of request {KEY16}-1.",
        "provider_code": "InvalidParameter",
        "stage": "provider",
    }


def test_iter_results_raises_at_call_time_for_an_unknown_batch(adapter):
    with pytest.raises(NotFoundError) as caught:
        adapter.iter_results("batch_nope")
    assert caught.value.status_code == 404  # what common.ai's operator reads to tell "gone" apart


# ------------------------------------------------------------------------------------------- orphans
def test_find_orphaned_batch_needs_key_fingerprint_and_time(adapter, dashscope_emulator):
    not_before = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    spec = build_output_spec(str)
    submitted = adapter.submit(
        [{"prompt": "a"}],
        model="qwen-plus",
        idempotency_key=KEY16,
        input_fingerprint=FINGERPRINT,
        output_spec=spec,
    )
    assert adapter.find_orphaned_batch(KEY16, FINGERPRINT, not_before) == submitted.batch_id
    assert adapter.find_orphaned_batch(KEY16, "e" * 64, not_before) is None
    assert adapter.find_orphaned_batch("fedcba9876543210", FINGERPRINT, not_before) is None
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert adapter.find_orphaned_batch(KEY16, FINGERPRINT, later) is None


def test_find_orphaned_batch_allows_the_clients_clock_skew(adapter, dashscope_emulator):
    """
    A host whose clock runs 7 minutes ahead of the service still finds its batch, as the client's own
    recovery does (10 minutes of skew); the adapter used to allow only 5 and would submit again.
    """
    spec = build_output_spec(str)
    submitted = adapter.submit(
        [{"prompt": "a"}],
        model="qwen-plus",
        idempotency_key=KEY16,
        input_fingerprint=FINGERPRINT,
        output_spec=spec,
    )
    ahead = (datetime.now(UTC) + timedelta(minutes=7)).isoformat()
    assert adapter.find_orphaned_batch(KEY16, FINGERPRINT, ahead) == submitted.batch_id


def test_a_failed_batch_reports_the_service_errors(adapter, dashscope_emulator, client):
    dashscope_emulator.set_clock(time_scale=0)
    spec = build_output_spec(str)
    submitted = adapter.submit(
        [{"prompt": "a"}],
        model="qwen-plus",
        idempotency_key=KEY16,
        input_fingerprint=FINGERPRINT,
        output_spec=spec,
    )
    client.delete_file(submitted.provider_input_ref)  # the service fails a batch whose input is gone
    dashscope_emulator.advance(60)
    state = adapter.get_batch(submitted.batch_id)
    assert (state.status, state.error_message) == ("failed", "file_not_found: input file was deleted")


def test_a_resubmit_after_a_create_that_failed_for_good_re_uses_its_input_file(
    adapter, dashscope_emulator, client
):
    spec = build_output_spec(Verdict)
    submit = lambda: adapter.submit(  # noqa: E731
        normalized(["one", "two"]),
        model="qwen-plus",
        idempotency_key=KEY16,
        input_fingerprint=FINGERPRINT,
        output_spec=spec,
    )
    dashscope_emulator.add_fault(method="POST", path="/batches", status=400, count=1)
    with pytest.raises(Exception, match="400"):
        submit()
    (first,) = [f for f in client.list_files() if f.purpose == "batch"]
    result = submit()
    assert result.provider_input_ref == first.id
    assert client.retrieve_batch(result.batch_id).input_file_id == first.id
    assert dashscope_emulator.request_counts()["POST /files"] == 1
    assert len(adapter._client.uploads) == 1


# ------------------------------------------------------------------------------- late copies, budget
def _submit_alone(adapter, emulator, path: str) -> str:
    """Submit through a gateway that holds the first ``POST {path}`` 3 s (the client gives up at 1 s)."""
    emulator.configure(validating_seconds=3)
    emulator.add_fault("defer", method="POST", path=path, latency=3, count=1)
    requests = normalized(["a", "b"])
    return adapter.submit(
        requests,
        model="batch-test-model",
        idempotency_key=KEY16,
        input_fingerprint=FINGERPRINT,
        output_spec=build_output_spec(str),
    ).batch_id


def _poll(adapter, batch_id: str) -> str:
    """common.ai's worker poll (``deferrable=False``): ``get_batch`` until it is not in progress."""
    while (state := adapter.get_batch(batch_id)).status == "in_progress":
        time.sleep(0.2)
    return state.status


@pytest.fixture
def impatient_adapter(dashscope_emulator):
    client = DashScopeClient(
        api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url, timeout=1
    )
    adapter = DashScopeBatchAdapter(client=client)
    yield adapter
    adapter.close()


def test_a_lone_adapter_poll_cancels_a_late_create(impatient_adapter, dashscope_emulator, client):
    batch_id = _submit_alone(impatient_adapter, dashscope_emulator, "/batches")
    assert _poll(impatient_adapter, batch_id) == "completed"
    batches = list(client.list_batches())
    assert len(batches) == 2, "the late create happened"
    (late,) = [b for b in batches if b.id != batch_id]
    assert late.status in ("cancelling", "cancelled")
    assert not (late.request_counts and late.request_counts.completed)


def test_a_lone_adapter_poll_deletes_a_late_upload(impatient_adapter, dashscope_emulator, client):
    batch_id = _submit_alone(impatient_adapter, dashscope_emulator, "/files")
    assert _poll(impatient_adapter, batch_id) == "completed"
    assert [f.id for f in client.list_files(purpose="batch")] == [
        client.retrieve_batch(batch_id).input_file_id
    ]


def test_the_adapter_shares_the_account_budget_of_the_connection(dashscope_conn, dashscope_emulator):
    from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook

    hook_client = DashScopeBatchHook().get_conn()
    adapter = DashScopeBatchAdapter(api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url)
    assert adapter._client.rate_budget is hook_client.rate_budget
    other = DashScopeBatchAdapter(api_key="sk-another-account", base_url=dashscope_emulator.base_url)
    assert other._client.rate_budget is not hook_client.rate_budget
    again = DashScopeBatchAdapter(api_key="sk-another-account", base_url=dashscope_emulator.base_url)
    assert again._client.rate_budget is other._client.rate_budget  # one budget per account, not per adapter
