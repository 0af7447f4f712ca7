"""Local checks of call parameters against the service limits."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from airflow_provider_dashscope_batch.client import (
    LocalValidationError,
    format_time_filter,
    parse_completion_window,
    validate_metadata,
)
from airflow_provider_dashscope_batch.client._params import (
    check_page_size,
    check_retries,
    join_values,
    quote_segment,
    time_filters,
)
from airflow_provider_dashscope_batch.client.resources import batches
from airflow_provider_dashscope_batch.client.types import BatchStatus
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


def refused(check, *args) -> str:
    """The message of the ``LocalValidationError`` that ``check(*args)`` raises."""
    with pytest.raises(LocalValidationError) as info:
        check(*args)
    return str(info.value)


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("1d", "1d"),
        ("14D", "14d"),
        ("\t2d\n", "2d"),
        ("24 h", "24h"),
        (timedelta(hours=24), "24h"),
        (timedelta(days=14), "336h"),
        (timedelta(hours=335), "335h"),
    ],
)
def test_completion_window_at_and_inside_both_limits(value, wire):
    assert parse_completion_window(value) == wire


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("23h", "23h"),
        ("0d", "0h"),
        ("337h", "337h"),
        ("15d", "360h"),
        (timedelta(hours=23), "23h"),
        (timedelta(days=15), "360h"),
    ],
)
def test_completion_window_outside_the_range_names_the_hours(value, got):
    assert refused(parse_completion_window, value) == (
        f"completion_window must be between 24h and 336h (14d), got {got}"
    )


def test_completion_window_refusals_say_what_was_given():
    assert refused(parse_completion_window, timedelta(hours=24, minutes=30)) == (
        "completion_window must be whole hours, got 1 day, 0:30:00"
    )
    assert refused(parse_completion_window, timedelta(hours=24, seconds=1)) == (
        "completion_window must be whole hours, got 1 day, 0:00:01"
    )
    assert refused(parse_completion_window, "2w") == (
        "completion_window must be an integer followed by 'h' or 'd' (e.g. '24h', '14d'), got '2w'"
    )
    assert refused(parse_completion_window, "h24") == (
        "completion_window must be an integer followed by 'h' or 'd' (e.g. '24h', '14d'), got 'h24'"
    )
    assert refused(parse_completion_window, 24.0) == (
        "completion_window must be a string like '24h' or a timedelta, got float"
    )


def test_metadata_refusals_name_the_key_and_the_limit():
    assert validate_metadata(None) == {}
    given = {"ds_name": "n" * 100, "ds_description": "d" * 200, "team": "x" * 500}
    checked = validate_metadata(given)
    assert checked == given
    assert checked is not given  # the client keeps its own copy
    assert refused(validate_metadata, {"ds_name": "n" * 101}) == (
        "metadata['ds_name'] must be at most 100 characters, got 101"
    )
    assert refused(validate_metadata, {"ds_name": "ok", "ds_description": "d" * 201}) == (
        "metadata['ds_description'] must be at most 200 characters, got 201"
    )
    assert refused(validate_metadata, [("ds_name", "x")]) == "metadata must be a dict of strings, got list"
    assert refused(validate_metadata, {"a": "b", 1: "x"}) == (
        "metadata keys and values must be strings, got 1: 'x'"
    )
    assert (
        refused(validate_metadata, {"n": None}) == "metadata keys and values must be strings, got 'n': None"
    )


@pytest.mark.parametrize("url", ["https://airflow.example.com/events/c/t", "http://10.0.0.1:8080/x"])
def test_a_finish_callback_must_be_an_http_url(url):
    assert validate_metadata({"ds_batch_finish_callback": url}) == {"ds_batch_finish_callback": url}


@pytest.mark.parametrize("url", ["ftp://host/x", "https://", "https://host/a b", " https://host/x", "host/x"])
def test_a_finish_callback_that_is_no_http_url_is_refused(url):
    assert refused(validate_metadata, {"ds_batch_finish_callback": url}) == (
        f"metadata['ds_batch_finish_callback'] must be an http(s) URL, got {url!r}"
    )


def test_time_filters_of_a_listing():
    assert time_filters(None, None) == {"create_after": None, "create_before": None}
    after = datetime(2025, 3, 4, 0, 30, tzinfo=timezone(timedelta(hours=8)))  # 16:30 the day before, UTC
    assert time_filters(after, date(2025, 3, 5)) == {
        "create_after": "20250303163000",
        "create_before": "20250305000000",
    }
    assert time_filters(None, "20250101000000") == {"create_after": None, "create_before": "20250101000000"}
    assert refused(format_time_filter, 1741046400) == "expected a datetime, date or string, got int"


def test_an_aware_time_is_sent_in_utc_whatever_the_hosts_zone(monkeypatch):
    """A worker whose local zone is not UTC still sends UTC (not its local time) for an aware datetime."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        assert datetime(2025, 3, 4, 5, 0, tzinfo=UTC).astimezone().utcoffset() == timedelta(hours=8)
        aware = datetime(2025, 3, 4, 1, 0, tzinfo=timezone(timedelta(hours=-5)))
        assert format_time_filter(aware) == "20250304060000"
        assert format_time_filter(datetime(2025, 3, 4, 1, 0)) == "20250304010000"  # naive: as given
    finally:
        monkeypatch.undo()
        time.tzset()


def test_retries_and_page_sizes_on_both_sides_of_their_limits():
    assert [check_retries(n) for n in (0, 1, 7)] == [0, 1, 7]
    assert refused(check_retries, -1) == "max_retries must be an integer >= 0, got -1"
    assert refused(check_retries, "3") == "max_retries must be an integer >= 0, got '3'"
    for size in (None, 1, 100):
        check_page_size(size, 100)
    for size in (0, 101, -5):
        assert refused(check_page_size, size, 100) == f"page_size must be within 1..100, got {size}"
    check_page_size(2000, 2000)
    assert refused(check_page_size, 2001, 2000) == "page_size must be within 1..2000, got 2001"


def test_query_values_and_path_segments():
    assert join_values(None) is None
    assert join_values("file-1,file-2") == "file-1,file-2"
    assert join_values(["file-1", "file-2"]) == "file-1,file-2"
    assert join_values(s for s in (BatchStatus.COMPLETED, "failed", BatchStatus.IN_PROGRESS)) == (
        "completed,failed,in_progress"
    )
    assert join_values([]) == ""
    assert quote_segment("batch_abc-123") == "batch_abc-123"
    assert quote_segment("../files/a b?c") == "..%2Ffiles%2Fa%20b%3Fc"
    for value in ("", None, 42):
        assert refused(quote_segment, value) == f"an id is required, got {value!r}"
