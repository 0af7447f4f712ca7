"""The cost and outcome arguments, declared once on the job bases, reach every entry point like its own."""

from __future__ import annotations

from decimal import Decimal

import pytest
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator
from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator
from airflow_provider_dashscope_batch.waiting.protocol import Outcome

#: Each entry point, the argument it is mapped over and whether it judges outcomes.
ENTRY_POINTS = [
    pytest.param(DashScopeCreateBatchOperator, "input_file_id", True, id="create"),
    pytest.param(DashScopeShardedBatchOperator, "file", True, id="sharded"),
    pytest.param(DashScopeUploadFileOperator, "file", False, id="upload"),
]


def _args(judges: bool) -> dict[str, str]:
    """One cost argument, and one outcome argument where the operator judges outcomes."""
    return {"max_cost": "5", **({"on_expired": Outcome.SKIP} if judges else {})}


def _assert_applied(task, judges: bool) -> None:
    assert task.cost.cost_policy.max_cost == Decimal("5")
    if judges:
        assert task.outcome_policy.on_expired == Outcome.SKIP


@pytest.mark.parametrize(("operator", "mapped", "judges"), ENTRY_POINTS)
def test_partial_expand_accepts_and_applies_the_shared_arguments(operator, mapped, judges):
    with DAG("job_args_mapped", schedule=None):
        task = operator.partial(task_id="t", **_args(judges)).expand(**{mapped: ["in-1.jsonl"]})
    _assert_applied(task.unmap({mapped: "in-1.jsonl"}), judges)


@pytest.mark.parametrize(("operator", "mapped", "judges"), ENTRY_POINTS)
def test_default_args_apply_the_shared_arguments(operator, mapped, judges):
    with DAG("job_args_defaults", schedule=None, default_args=_args(judges)):
        task = operator(task_id="t", **{mapped: "in-1.jsonl"})
        mapped_task = operator.partial(task_id="m").expand(**{mapped: ["in-1.jsonl"]})
    _assert_applied(task, judges)
    _assert_applied(mapped_task.unmap({mapped: "in-1.jsonl"}), judges)


def test_the_upload_takes_no_outcome_argument():
    with pytest.raises(TypeError, match="on_expired"):
        DashScopeUploadFileOperator.partial(task_id="u", on_expired="skip")
    with pytest.raises(TypeError, match="on_expired"):
        DashScopeUploadFileOperator(task_id="u", file="in.jsonl", on_expired="skip")
