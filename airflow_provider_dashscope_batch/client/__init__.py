"""DashScope Batch/Files API client with no Airflow dependency: one wire, a sync and an async client.

Layout (one concern per module): ``_flow`` (the step protocol), ``_core`` (the wire: requests, parsing,
error mapping), ``_retry`` (policy, ``Retry-After``), ``_request`` (retries and recovery of one request),
``_pagination``, ``_params`` (parameter checks, service limits), ``_uploads`` (upload tokens and
sources), ``_downloads``, ``_redaction``, ``resources/`` (the Files and Batches endpoints),
``_base_client`` (what the sync and async clients share), ``sync`` / ``async_`` (the two drivers),
``ratelimit``, ``loop_clients`` (one async client per event loop), ``status`` (grouped status reads),
``copies`` (finding and removing the late copies of an ambiguous create or upload).
"""

from __future__ import annotations

from airflow_provider_dashscope_batch.client._core import DEFAULT_TIMEOUT
from airflow_provider_dashscope_batch.client._params import (
    CLOCK_SKEW,
    FILTER_SLACK,
    MAX_INPUT_FILE_IDS,
    format_time_filter,
    parse_completion_window,
    validate_metadata,
)
from airflow_provider_dashscope_batch.client._retry import DEFAULT_MAX_RETRIES, RetryPolicy
from airflow_provider_dashscope_batch.client._uploads import tokenized_filename
from airflow_provider_dashscope_batch.client.async_ import AsyncDashScopeClient
from airflow_provider_dashscope_batch.client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    DashScopeError,
    IncompleteDownloadError,
    InsufficientBalanceError,
    InvalidRequestError,
    LocalValidationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from airflow_provider_dashscope_batch.client.loop_clients import shared_async_client
from airflow_provider_dashscope_batch.client.sync import DashScopeClient
from airflow_provider_dashscope_batch.regions import DEFAULT_BASE_URL, REGION_BASE_URLS

__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "FILTER_SLACK",
    "MAX_INPUT_FILE_IDS",
    "REGION_BASE_URLS",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncDashScopeClient",
    "AuthenticationError",
    "DashScopeClient",
    "DashScopeError",
    "IncompleteDownloadError",
    "InsufficientBalanceError",
    "InvalidRequestError",
    "LocalValidationError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "format_time_filter",
    "parse_completion_window",
    "shared_async_client",
    "tokenized_filename",
    "validate_metadata",
]
