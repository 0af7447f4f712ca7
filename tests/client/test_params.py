"""Local checks of call parameters against the service limits."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from airflow_provider_dashscope_batch.client import (
    LocalValidationError,
    format_time_filter,
    parse_completion_window,
    validate_metadata,
)
from airflow_provider_dashscope_batch.client.resources import batches
from tests.client.flow_support import core


@pytest.mark.parametrize(
    ("value", "wire"),
    [("24h", "24h"), ("14d", "14d"), (" 48H ", "48h"), ("336h", "336h"), (timedelta(hours=72), "72h")],
)
def test_completion_window_accepted(value, wire):
    assert parse_completion_window(value) == wire


@pytest.mark.parametrize("value", ["23h", "15d", "337h", "1w", "24", "", "1.5d", timedelta(minutes=90), 24])
def test_completion_window_rejected(value):
    with pytest.raises(LocalValidationError, match="completion_window"):
        parse_completion_window(value)


def test_metadata_limits():
    assert validate_metadata({"ds_name": "n" * 100, "ds_description": "d" * 200}) == {
        "ds_name": "n" * 100,
        "ds_description": "d" * 200,
    }
    with pytest.raises(LocalValidationError, match=r"ds_name.*100"):
        validate_metadata({"ds_name": "n" * 101})
    with pytest.raises(LocalValidationError, match=r"ds_description.*200"):
        validate_metadata({"ds_description": "d" * 201})
    with pytest.raises(LocalValidationError, match="ds_batch_finish_callback"):
        validate_metadata({"ds_batch_finish_callback": "not a url"})
    with pytest.raises(LocalValidationError, match="strings"):
        validate_metadata({"n": 1})  # type: ignore[dict-item]


def test_time_filter_format():
    assert format_time_filter(datetime(2025, 3, 4, 5, 6, 7)) == "20250304050607"
    aware = datetime(2025, 3, 4, 13, 0, 0, tzinfo=timezone(timedelta(hours=8)))
    assert format_time_filter(aware) == "20250304050000"
    assert format_time_filter(date(2025, 3, 4)) == "20250304000000"
    assert format_time_filter("2025-11-12") == "2025-11-12"


def test_list_argument_checks():
    c = core()
    with pytest.raises(LocalValidationError, match="page_size"):
        next(batches.list_batches_flow(c, page_size=101))
    with pytest.raises(LocalValidationError, match="20"):
        next(batches.list_batches_flow(c, input_file_ids=[f"f{i}" for i in range(21)]))
