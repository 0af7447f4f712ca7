"""A job as its requests by ``custom_id``, finished over rounds: which are answered, what to send next."""

from __future__ import annotations

from airflow_provider_dashscope_batch.jobs.failures import TRANSIENT_CODES, FailureKind, ResubmitErrors
from airflow_provider_dashscope_batch.jobs.ledger import (
    JobCounts,
    RoundRecord,
    ShardLedger,
    progress_line,
    request_id_of,
)
from airflow_provider_dashscope_batch.jobs.table import SupersededErrors

__all__ = [
    "TRANSIENT_CODES",
    "FailureKind",
    "JobCounts",
    "ResubmitErrors",
    "RoundRecord",
    "ShardLedger",
    "SupersededErrors",
    "progress_line",
    "request_id_of",
]
