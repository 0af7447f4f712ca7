"""The classification of failed requests: transient ones are sent again, permanent ones are not."""

from __future__ import annotations

import pytest

from airflow_provider_dashscope_batch.jobs.failures import FailureKind, ResubmitErrors

T, P = FailureKind.TRANSIENT, FailureKind.PERMANENT


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (429, "limit_requests", T),
        (500, "InternalError", T),
        (503, None, T),
        (None, "Throttling.RateQuota", T),  # a line without a response: its code decides
        (400, "InvalidParameter", P),
        (400, "DataInspectionFailed", P),
        (400, None, P),
        (None, None, P),
        (None, "SomethingNew", P),
    ],
)
def test_default_classification(status, code, kind):
    assert ResubmitErrors().kind(status, code) is kind


def test_a_code_override_beats_a_status_override_which_beats_the_default():
    policy = ResubmitErrors.of({400: True, "DataInspectionFailed": False, "503": False})
    assert policy.kind(400, "InvalidParameter") is T
    assert policy.kind(400, "DataInspectionFailed") is P
    assert policy.kind(503, None) is P
    assert policy.kind(500, None) is T


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({400: "yes"}, "must be True or False"), ({200: True}, "not an HTTP error status")],
)
def test_bad_overrides_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        ResubmitErrors.of(overrides)
