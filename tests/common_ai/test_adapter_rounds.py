"""The adapter's follow-up rounds against the emulator: expiry and failures finished by the remainder only."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "airflow.providers.common.ai.batch",
    reason="apache-airflow-providers-common-ai is not installed; it needs pydantic >= 2.12, and the "
    "Airflow 3.0 leg pins pydantic 2.11.7",
)

from adapter_helpers import FINGERPRINT, KEY16, RecordingClient, normalized
from airflow.providers.common.ai.batch.output_schema import build_output_spec

from airflow_provider_dashscope_batch.common_ai.adapter import DashScopeBatchAdapter
from airflow_provider_dashscope_batch.common_ai.connection import round_settings
from airflow_provider_dashscope_batch.jobs.failures import FailureKind
from tests.operators.operator_helpers import check_billed_once, ids_in

pytestmark = pytest.mark.timeout(120)

DAY = 86400
SPEC = build_output_spec(str)


@pytest.fixture
def make_adapter(dashscope_emulator):
    """Adapters over :class:`RecordingClient` s of the emulator, closed at the end."""
    made = []

    def make(**kwargs) -> DashScopeBatchAdapter:
        client = RecordingClient(api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url)
        made.append(DashScopeBatchAdapter(client=client, **kwargs))
        return made[-1]

    yield make
    for adapter in made:
        adapter.close()


def submit(adapter, requests) -> str:
    """Validate and submit as common.ai's operator does; return the first batch's id."""
    requests = normalized(requests)
    settings = {"model": "qwen-plus", "output_spec": SPEC, "idempotency_key": KEY16}
    adapter.validate_requests(requests, **settings)
    return adapter.submit(requests, input_fingerprint=FINGERPRINT, **settings).batch_id


def submit_to_expire(adapter, emulator, requests: int, answered: int) -> str:
    """Submit ``requests`` prompts; the batch answers ``answered`` of them in its 24h window, then expires."""
    emulator.configure(time_scale=0)
    first = submit(adapter, [f"prompt {n}" for n in range(requests)])
    emulator.configure(processing_rate=(answered + 0.5) / DAY)
    emulator.advance(DAY + 10)
    return first


def rounds_of(client, first: str) -> list:
    """The job's batches, first to last (the emulator lists newest first)."""
    batches = sorted(client.list_batches(), key=lambda b: (b.created_at, b.id))
    assert batches[0].id == first
    return batches


def test_an_expired_batch_is_finished_by_one_round_of_exactly_the_remainder(
    make_adapter, dashscope_emulator, client
):
    adapter = make_adapter(resubmit_rounds=2)
    first = submit_to_expire(adapter, dashscope_emulator, 20, 8)
    assert client.retrieve_batch(first).status == "expired"

    assert adapter.get_batch(first).status == "in_progress"  # round 2 created
    _, second = rounds_of(client, first)
    answered = set(ids_in(client, client.retrieve_batch(first).output_file_id))
    assert len(answered) == 8
    everything = {f"{KEY16}-{n}" for n in range(20)}
    assert {line["custom_id"] for line in adapter._client.uploads[-1]} == everything - answered
    assert second.metadata["ds_name"] == f"airflow-llm-batch-{KEY16} round 2"

    dashscope_emulator.configure(processing_rate=1000)
    dashscope_emulator.advance(100)
    state = adapter.get_batch(first)
    assert state.status == "completed"
    assert state.counts["succeeded"] == 20
    _, second = rounds_of(client, first)  # no round past the remainder
    assert second.request_counts.model_dump() == {"total": 12, "completed": 12, "failed": 0}

    landing = make_adapter(resubmit_rounds=2)  # common.ai lands with a fresh adapter: no request lines
    items = list(landing.iter_results(first))
    assert sorted(item.custom_id for item in items) == sorted(everything)
    assert {item.provider_status for item in items} == {"success"}
    assert check_billed_once(client, [first, second.id]) == everything


def test_transient_failures_are_sent_again_permanent_ones_are_not(make_adapter, dashscope_emulator, client):
    bad = {"status_code": 400, "code": "DataInspectionFailed"}
    requests = (
        [f"ok {n}" for n in range(6)]  # indexes 0-5
        + [{"prompt": "bad 6", "params": {"x_emulator_fail": bad}}]
        + [{"prompt": "bad 7", "params": {"x_emulator_fail": {"status_code": 400}}}]
        + [{"prompt": "busy 8", "params": {"x_emulator_fail": {"status_code": 500, "attempts": 1}}}]
        + ["busy 9", "busy 10"]
    )
    dashscope_emulator.fail_requests(r"-(9|10)$", status=429, attempts=1)
    dashscope_emulator.configure(processing_rate=1000)
    adapter = make_adapter(resubmit_rounds=1)
    first = submit(adapter, requests)
    while (state := adapter.get_batch(first)).status == "in_progress":
        dashscope_emulator.advance(60)
    one, two = rounds_of(client, first)
    assert one.request_counts.failed == 5
    assert two.request_counts.model_dump() == {"total": 3, "completed": 3, "failed": 0}
    assert sorted(ids_in(client, two.output_file_id)) == [f"{KEY16}-{n}" for n in (10, 8, 9)]
    assert state.status == "completed"
    assert state.counts["succeeded"] == 9

    items = list(make_adapter(resubmit_rounds=1).iter_results(first))
    assert sorted(item.index for item in items) == list(range(11))  # each request exactly once
    failed = {item.index: item.error["provider_code"] for item in items if item.provider_status != "success"}
    assert failed == {6: "DataInspectionFailed", 7: "InvalidParameter"}
    answered = check_billed_once(client, [one.id, two.id])
    assert answered == {f"{KEY16}-{n}" for n in range(11)} - {f"{KEY16}-6", f"{KEY16}-7"}


def test_cancelling_the_job_cancels_its_running_round(make_adapter, dashscope_emulator, client):
    """common.ai cancels the batch it recorded (the first) on a timeout or a kill: the round stops."""
    adapter = make_adapter(resubmit_rounds=1)
    first = submit_to_expire(adapter, dashscope_emulator, 6, 2)
    assert adapter.get_batch(first).status == "in_progress"
    adapter.cancel_batch(first)
    _, second = rounds_of(client, first)
    assert second.status in ("cancelling", "cancelled")


def test_an_adapter_without_the_request_lines_builds_no_round(
    make_adapter, dashscope_emulator, client, caplog
):
    """A deferred task's triggerer (a fresh adapter) reports the ending and says how to get the rest."""
    first = submit_to_expire(make_adapter(resubmit_rounds=1), dashscope_emulator, 4, 2)
    state = make_adapter(resubmit_rounds=1).get_batch(first)
    assert (state.status, state.counts["succeeded"], state.counts["expired"]) == ("expired", 2, 2)
    assert [b.id for b in client.list_batches()] == [first]
    assert "2 of 4 requests not answered" in caplog.text
    assert "deferrable=False" in caplog.text


def test_without_rounds_one_batch_is_the_job(make_adapter, dashscope_emulator, client):
    adapter = make_adapter()
    first = submit_to_expire(adapter, dashscope_emulator, 4, 2)
    assert adapter.get_batch(first).status == "expired"
    assert [b.id for b in client.list_batches()] == [first]


def test_the_host_sets_the_rounds():
    host = "ap-southeast-1?resubmit_rounds=2&resubmit_errors=400:true,Throttling:false"
    rounds, policy = round_settings(host)
    assert rounds == 2
    assert policy.kind(400, "InvalidParameter") is FailureKind.TRANSIENT
    assert policy.kind(429, "Throttling") is FailureKind.PERMANENT
    assert round_settings(None)[0] == 0
    with pytest.raises(ValueError, match="bad round setting"):
        round_settings("?resubmit_errors=400")
