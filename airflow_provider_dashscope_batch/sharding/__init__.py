"""Run any number of requests as one job: split into shards within the service's limits, batch, merge."""

from __future__ import annotations

from airflow_provider_dashscope_batch.sharding.split import (
    DEFAULT_MARGIN,
    Shard,
    ShardLimits,
    ShardSizing,
    ShardWriter,
    SplitResult,
    split_csv,
    split_jsonl,
    split_requests,
)

__all__ = [
    "DEFAULT_MARGIN",
    "Shard",
    "ShardLimits",
    "ShardSizing",
    "ShardWriter",
    "SplitResult",
    "split_csv",
    "split_jsonl",
    "split_requests",
]
