"""
``manifest.json``: the typed, versioned record of a result set, written once and last.

A result set is complete once its manifest exists; the manifest is written after every file it lists is
published and every remote deletion it records is done, so everything in it is true when it appears.
The operator pushes the same document to XCom (``ResultManifest.model_dump(mode="json")``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airflow_provider_dashscope_batch.client.types import RequestCounts
from airflow_provider_dashscope_batch.cost.actual import ActualCost
from airflow_provider_dashscope_batch.cost.budget import CostEstimate
from airflow_provider_dashscope_batch.results.lines import ResultFormat, ResultKind, UsageTotals
from airflow_provider_dashscope_batch.results.tables import TABLE_SCHEMA_VERSION, ResultEncoder, TableKind

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "CostBlock",
    "FileRecord",
    "ResultManifest",
    "ResultTotals",
    "ShardRecord",
    "TableRecord",
    "TokenUsage",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 2


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TableRecord(_Record):
    """
    The layout of a CSV/Parquet result file, so a reader can check what it loads.

    ``columns`` maps each column, in file order, to its logical type (``string``, ``int``, ``float``,
    ``bool`` or ``vector``; see :data:`~airflow_provider_dashscope_batch.results.tables.RESULT_COLUMN_TYPES`),
    the input columns carried from the upload last.
    """

    name: TableKind
    version: int = TABLE_SCHEMA_VERSION
    columns: dict[str, str]
    embedding_dimensions: int | None = None
    """The length of every vector of an ``embeddings`` table (``None`` if it holds none)."""
    input_columns: list[str] = Field(default_factory=list)
    """The columns carried from the upload (``carry_columns``), the last of ``columns``."""

    @classmethod
    def of(cls, table: TableKind, encoder: ResultEncoder) -> TableRecord:
        """The layout ``encoder`` wrote."""
        carried = encoder.input_columns
        return cls(
            name=table,
            columns={name: encoder.types[name] for name in encoder.columns},
            embedding_dimensions=encoder.dimensions if table is TableKind.EMBEDDINGS else None,
            input_columns=list(carried.columns) if carried is not None else [],
        )


class FileRecord(_Record):
    """
    One published result file: where it is and what was verified about it.

    ``source_bytes``/``source_sha256`` describe the DashScope file, ``bytes``/``sha256`` what was written
    (the same for ``jsonl``).
    """

    file_id: str
    """The DashScope file it was downloaded from."""
    uri: str
    """Where it was published (an ``ObjectStoragePath`` URL, connection id included)."""
    lines: int
    """Non-blank lines of the source file (one per request)."""
    source_bytes: int
    source_sha256: str
    bytes: int
    sha256: str
    table: TableRecord | None = None
    """The table layout of a ``csv``/``parquet`` file (``None`` for ``jsonl``)."""


class TokenUsage(_Record):
    """Token usage summed over successful requests (failed requests are not billed)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    requests: int = 0
    reasoning_tokens: int = 0
    """Part of ``completion_tokens`` (``usage.completion_tokens_details.reasoning_tokens``)."""

    @classmethod
    def of(cls, totals: UsageTotals) -> TokenUsage:
        return cls(**totals.as_dict())

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            requests=self.requests + other.requests,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )


class ShardRecord(_Record):
    """One batch of the result set (the only one when the transfer was given ``batch_id``)."""

    batch_id: str
    status: str
    endpoint: str | None
    request_counts: RequestCounts | None
    batch_created_at: int | None
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    files: dict[ResultKind, FileRecord]
    """The published files of this batch (no ``errors`` entry when the batch has no error file)."""
    usage: TokenUsage
    deleted_remote_files: list[str] = Field(default_factory=list)
    """The batch's DashScope files deleted after the transfer (``delete_remote_files=True``)."""
    cost: ActualCost | None = None
    """What this batch's successful requests cost, each priced at its own tier (batch price)."""


class ResultTotals(_Record):
    """Sums over every shard (``bytes``: bytes written, all files together)."""

    batches: int
    request_counts: RequestCounts
    """Sum of the shards' ``request_counts`` (shards without counts add nothing)."""
    output_lines: int
    error_lines: int
    bytes: int
    usage: TokenUsage

    @classmethod
    def of(cls, shards: Sequence[ShardRecord]) -> ResultTotals:
        counts = [s.request_counts for s in shards if s.request_counts is not None]
        files = [(kind, record) for s in shards for kind, record in s.files.items()]
        usage = TokenUsage()
        for shard in shards:
            usage += shard.usage
        return cls(
            batches=len(shards),
            request_counts=RequestCounts(
                total=sum(c.total for c in counts),
                completed=sum(c.completed for c in counts),
                failed=sum(c.failed for c in counts),
            ),
            output_lines=sum(r.lines for kind, r in files if kind is ResultKind.OUTPUT),
            error_lines=sum(r.lines for kind, r in files if kind is ResultKind.ERRORS),
            bytes=sum(r.bytes for _, r in files),
            usage=usage,
        )


class CostBlock(_Record):
    """Estimate and actual side by side: the actual cost over every shard, and the preflight estimates."""

    actual: ActualCost
    estimates: list[CostEstimate] = Field(default_factory=list)
    """The preflight estimates handed to the transfer (one per uploaded file, or one per sharded job)."""
    estimated_input_tokens: int | None = None
    estimated_cost_ceiling: Decimal | None = None
    estimated_cost_expected: Decimal | None = None

    @classmethod
    def of(cls, shards: Sequence[ShardRecord], estimates: Sequence[CostEstimate]) -> CostBlock | None:
        """The block of a result set; ``None`` when no shard was priced."""
        actual = ActualCost.total(s.cost for s in shards if s.cost is not None)
        if actual is None:
            return None

        def total(values: list[Decimal | None]) -> Decimal | None:
            return None if not values or None in values else sum(values, Decimal(0))  # type: ignore[arg-type]

        return cls(
            actual=actual,
            estimates=list(estimates),
            estimated_input_tokens=sum(e.input_tokens for e in estimates) if estimates else None,
            estimated_cost_ceiling=total([e.cost_ceiling for e in estimates]),
            estimated_cost_expected=total([e.cost_expected for e in estimates]),
        )

    def summary(self) -> str:
        """Estimate vs actual, one line for the task log."""
        text = self.actual.summary()
        if self.estimated_input_tokens is not None:
            money = self.actual.currency
            ceiling = self.estimated_cost_ceiling
            expected = self.estimated_cost_expected
            text += (
                f"; estimated {self.estimated_input_tokens:,} input tokens, cost ceiling "
                f"{'n/a' if ceiling is None else f'{ceiling:.4f}'} {money}"
                + ("" if expected is None else f", expected {expected:.4f} {money}")
            )
        return text


class ResultManifest(_Record):
    """
    The manifest of one result set: every shard's batch, files, counts, digests and usage, and the totals.

    Version 2; version 1 (one batch, a plain dict) is not read back: a transfer finding one transfers
    again.
    """

    manifest_version: Literal[2] = MANIFEST_VERSION
    format: ResultFormat
    destination: str
    """The result set's directory."""
    manifest_uri: str
    transferred_at: datetime
    shards: list[ShardRecord]
    """One per batch, in the order the batches were given."""
    totals: ResultTotals
    warnings: list[str] = Field(default_factory=list)
    cost: CostBlock | None = None

    @classmethod
    def build(
        cls,
        *,
        fmt: ResultFormat,
        directory: ObjectStoragePath,
        shards: Sequence[ShardRecord],
        warnings: Sequence[str],
        estimates: Sequence[CostEstimate] = (),
    ) -> ResultManifest:
        """Assemble a manifest, totals and cost included, stamped now."""
        return cls(
            format=fmt,
            destination=str(directory),
            manifest_uri=str(directory / MANIFEST_NAME),
            transferred_at=datetime.now(UTC).replace(microsecond=0),
            shards=list(shards),
            totals=ResultTotals.of(shards),
            warnings=list(warnings),
            cost=CostBlock.of(shards, estimates),
        )

    @property
    def batch_ids(self) -> list[str]:
        """The shards' batch ids, in order."""
        return [shard.batch_id for shard in self.shards]

    def to_json(self) -> bytes:
        """The document as written to ``manifest.json``."""
        return self.model_dump_json(indent=2).encode("utf-8")

    @classmethod
    def read(cls, path: ObjectStoragePath) -> ResultManifest | None:
        """
        Read a manifest; ``None`` if there is none or it is not a valid current-version manifest.

        :param path: Path of ``manifest.json``.
        """
        try:
            with path.open("rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        try:
            return cls.model_validate_json(data)
        except ValidationError:
            return None
