"""Local checks of call parameters against the service's documented limits, before anything is sent.

Also the slack every time-bounded search for a created object allows (:data:`CLOCK_SKEW`,
:data:`FILTER_SLACK`), used by the client's recovery, the create operator's re-attach and the common.ai
adapter's orphan lookup alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote

from airflow_provider_dashscope_batch.client.errors import LocalValidationError
from airflow_provider_dashscope_batch.client.types import BatchStatus

MIN_COMPLETION_HOURS = 24
MAX_COMPLETION_HOURS = 336
METADATA_LIMITS = {"ds_name": 100, "ds_description": 200}
MAX_INPUT_FILE_IDS = 20
MAX_BATCH_PAGE_SIZE = 100
MAX_FILE_PAGE_SIZE = 2000

#: Slack for clock skew between this host and the service when matching a ``created_at`` against a time
#: this host took before the create. Ten minutes: it only narrows a search whose hit is proven by a token
#: (idempotency key, upload token), so a generous bound loses nothing, while a tight one makes a host
#: whose clock runs a few minutes ahead (no NTP, a paused VM) miss what it created -- and create again.
#: Every such search uses this one value, so a batch one path finds is found by all of them.
CLOCK_SKEW = timedelta(minutes=10)
#: The list filters' date strings are in an undocumented time zone: widen them by a day and filter
#: exactly on ``created_at`` afterwards.
FILTER_SLACK = timedelta(days=1)

TimeFilter = datetime | date | str


def parse_completion_window(value: str | timedelta) -> str:
    """
    Normalise ``completion_window`` and check it against the service's 24h..336h range.

    :param value: ``"24h"``, ``"14d"`` (whole hours or days) or a whole-hour :class:`~datetime.timedelta`.
    :return: The wire value, e.g. ``"24h"`` or ``"14d"``.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        if seconds % 3600:
            raise LocalValidationError(f"completion_window must be whole hours, got {value}")
        hours, wire = int(seconds // 3600), f"{int(seconds // 3600)}h"
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([hHdD])\s*", value)
        if match is None:
            raise LocalValidationError(
                f"completion_window must be an integer followed by 'h' or 'd' (e.g. '24h', '14d'), "
                f"got {value!r}"
            )
        number, unit = int(match.group(1)), match.group(2).lower()
        hours, wire = number * (24 if unit == "d" else 1), f"{number}{unit}"
    else:
        raise LocalValidationError(
            f"completion_window must be a string like '24h' or a timedelta, got {type(value).__name__}"
        )
    if not MIN_COMPLETION_HOURS <= hours <= MAX_COMPLETION_HOURS:
        raise LocalValidationError(
            f"completion_window must be between {MIN_COMPLETION_HOURS}h and {MAX_COMPLETION_HOURS}h "
            f"(14d), got {hours}h"
        )
    return wire


def validate_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """Check batch ``metadata``: string values, ``ds_name`` <= 100 and ``ds_description`` <= 200 chars."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise LocalValidationError(f"metadata must be a dict of strings, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise LocalValidationError(f"metadata keys and values must be strings, got {key!r}: {value!r}")
    for key, limit in METADATA_LIMITS.items():
        if key in metadata and len(metadata[key]) > limit:
            raise LocalValidationError(
                f"metadata[{key!r}] must be at most {limit} characters, got {len(metadata[key])}"
            )
    callback = metadata.get("ds_batch_finish_callback")
    if callback is not None and not re.match(r"https?://\S+$", callback):
        raise LocalValidationError(
            f"metadata['ds_batch_finish_callback'] must be an http(s) URL, got {callback!r}"
        )
    return dict(metadata)


def format_time_filter(value: TimeFilter) -> str:
    """
    Format a list filter time as ``yyyyMMddHHmmss``.

    Aware datetimes are converted to UTC; naive ones are sent as they are (the service's time zone for
    these filters is not documented); strings are passed through unchanged.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y%m%d%H%M%S")
    if isinstance(value, date):
        return value.strftime("%Y%m%d000000")
    raise LocalValidationError(f"expected a datetime, date or string, got {type(value).__name__}")


def check_retries(max_retries: int) -> int:
    """A call's own ``max_retries``, checked."""
    if not isinstance(max_retries, int) or max_retries < 0:
        raise LocalValidationError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    return max_retries


def check_page_size(page_size: int | None, maximum: int) -> None:
    """Check a listing's ``page_size`` against the endpoint's ``maximum``."""
    if page_size is not None and not 1 <= page_size <= maximum:
        raise LocalValidationError(f"page_size must be within 1..{maximum}, got {page_size}")


def time_filters(create_after: TimeFilter | None, create_before: TimeFilter | None) -> dict[str, str | None]:
    """The ``create_after`` / ``create_before`` query parameters of a listing."""
    return {
        "create_after": format_time_filter(create_after) if create_after is not None else None,
        "create_before": format_time_filter(create_before) if create_before is not None else None,
    }


def join_values(values: str | Iterable[str] | None) -> str | None:
    """A comma-separated query value (ids, statuses) from one value or several."""
    if values is None:
        return None
    if isinstance(values, str):
        return values
    return ",".join(str(v.value if isinstance(v, BatchStatus) else v) for v in values)


def quote_segment(value: str) -> str:
    """An id as one URL path segment (``/batches/{id}``): required, and percent-quoted (``/`` too)."""
    if not value or not isinstance(value, str):
        raise LocalValidationError(f"an id is required, got {value!r}")
    return quote(value, safe="")
