"""When a job waits for a person's approval (the wait itself: tests/browser/test_approval_browser.py)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

from airflow_provider_dashscope_batch.operators.approval import ApprovalGate
from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator

needs_hitl = pytest.mark.skipif(
    not AIRFLOW_V_3_1_PLUS, reason="human-in-the-loop approval needs Airflow 3.1+"
)


def test_no_threshold_no_gate_and_a_timeout_alone_is_refused():
    assert ApprovalGate.of(None, None) is None
    with pytest.raises(ValueError, match="approval_timeout needs approve_above"):
        ApprovalGate.of(None, timedelta(hours=1))


@pytest.mark.skipif(AIRFLOW_V_3_1_PLUS, reason="the parse-time refusal of Airflow 3.0")
def test_approve_above_fails_at_parse_time_before_airflow_3_1():
    with pytest.raises(ValueError, match=r"approve_above needs Airflow 3\.1\+"):
        DashScopeCreateBatchOperator(task_id="create", input_file_id="file-1", approve_above=100)


@needs_hitl
@pytest.mark.parametrize("value", [-1, "nan", "Infinity"])
def test_a_threshold_must_be_a_real_amount(value):
    with pytest.raises(ValueError, match="approve_above must be a non-negative amount"):
        ApprovalGate.of(value, None)


@needs_hitl
@pytest.mark.parametrize(
    ("total", "approved", "needed"),
    [
        ("5", None, False),  # under the threshold
        ("10", None, False),  # at it
        ("10.01", None, True),
        ("20", "20", False),  # approved in this try: the re-run goes ahead
        ("25", "20", True),  # more than was approved
        (None, None, True),  # an unpriced model: a person decides
        (None, "Infinity", False),
    ],
)
def test_a_job_needs_a_decision_above_the_threshold_unless_approved(total, approved, needed):
    gate = ApprovalGate.of("10", None)
    as_decimal = None if total is None else Decimal(total)
    assert gate.needed(as_decimal, None if approved is None else Decimal(approved)) is needed
