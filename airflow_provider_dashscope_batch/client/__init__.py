"""DashScope Batch/Files API client with no Airflow dependency: one wire, a sync and an async face."""

from __future__ import annotations

from airflow_provider_dashscope_batch.client._base import (
    RetryPolicy,
    format_time_filter,
    parse_completion_window,
    validate_metadata,
)
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
from airflow_provider_dashscope_batch.client.shared import shared_async_client
from airflow_provider_dashscope_batch.client.sync import DashScopeClient
from airflow_provider_dashscope_batch.regions import DEFAULT_BASE_URL, REGION_BASE_URLS

__all__ = [
    "DEFAULT_BASE_URL",
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
    "validate_metadata",
]
