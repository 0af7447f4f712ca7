"""
The identity of a batch creation: the idempotency key every batch carries in its metadata.

The client sets ``metadata[IDEMPOTENCY_KEY]`` on every create (a fresh key unless one is given) and,
after an ambiguous create, recovers the batch by it. The provider's operators derive their keys from the
task instance, so every try of one task instance carries the same *lineage*, and a *generation* counts
deliberate replacements: ``airflow-<40 hex>-g<N>``. The create operator digests (dag, task, run, map
index); a sharded job digests (job token, shard index, shard SHA-256). Pure code: no I/O, no Airflow.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client.types import Batch

__all__ = ["IDEMPOTENCY_KEY", "KEY_PATTERN", "key_of", "lineage", "parse_key", "with_generation"]

#: The batch metadata field holding the key.
IDEMPOTENCY_KEY = "idempotency_key"
#: A provider-minted key: the lineage, then ``-g<generation>``.
KEY_PATTERN = re.compile(r"^(airflow-[0-9a-f]{40})-g([0-9]+)$")


def lineage(*parts: str) -> str:
    """The generation-free part of a key: ``airflow-`` and 40 hex digits of SHA-256 over ``parts``."""
    raw = "\x1f".join(parts)
    return "airflow-" + hashlib.sha256(raw.encode()).hexdigest()[:40]


def with_generation(key_lineage: str, generation: int) -> str:
    """The key of generation ``generation`` (from 1) of ``key_lineage``."""
    return f"{key_lineage}-g{generation}"


def key_of(batch: Batch) -> str | None:
    """The idempotency key ``batch`` carries, if any."""
    key = (batch.metadata or {}).get(IDEMPOTENCY_KEY)
    return None if key is None else str(key)


def parse_key(key: str | None) -> tuple[str, int] | None:
    """
    Split a provider-minted key into its lineage and generation.

    :return: ``(lineage, generation)``; ``None`` for a key this provider did not mint (or no key).
    """
    match = KEY_PATTERN.match(key or "")
    return None if match is None else (match.group(1), int(match.group(2)))
