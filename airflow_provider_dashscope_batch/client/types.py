"""Pydantic v2 models of the DashScope OpenAI-compatible Batch and Files API.

Every model keeps unknown fields (``extra="allow"``) so that fields the service adds later never break
parsing, and every field the service may send as ``null`` is optional. An unknown batch status parses
to a non-terminal :class:`BatchStatus` pseudo-member instead of failing.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

__all__ = [
    "TERMINAL_STATUSES",
    "Batch",
    "BatchError",
    "BatchErrors",
    "BatchPage",
    "BatchStatus",
    "FileDeleted",
    "FileObject",
    "FilePage",
    "Page",
    "RequestCounts",
    "ResultLine",
    "ResultLineError",
    "ResultResponse",
]


class BatchStatus(StrEnum):
    """Lifecycle status of a batch; unknown values become non-terminal pseudo-members."""

    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @classmethod
    def _missing_(cls, value: object) -> BatchStatus | None:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = f"UNKNOWN_{value.upper()}"
        member._value_ = value
        return member

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        """Whether the batch will never change status again (completed, failed, expired, cancelled)."""
        return self.value in _TERMINAL_VALUES


TERMINAL_STATUSES: frozenset[BatchStatus] = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)
_TERMINAL_VALUES = frozenset(s.value for s in TERMINAL_STATUSES)

T = TypeVar("T")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class RequestCounts(_Model):
    """Per-request progress counters of a batch."""

    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(_Model):
    """One validation error of a batch's input file (``line`` is the 1-based input line, if known)."""

    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(_Model):
    """The ``errors`` list object of a batch."""

    object: str | None = "list"
    data: list[BatchError] = Field(default_factory=list)


class Batch(_Model):
    """A batch job; ``*_at`` are Unix seconds or ``None``."""

    id: str
    object: str | None = "batch"
    endpoint: str | None = None
    errors: BatchErrors | None = None
    input_file_id: str | None = None
    completion_window: str | None = None
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts | None = None
    metadata: dict[str, Any] | None = None


class FileObject(_Model):
    """A file in the account (input files have purpose ``batch``, results ``batch_output``)."""

    id: str
    object: str | None = "file"
    bytes: int | None = None
    created_at: int | None = None
    filename: str | None = None
    purpose: str | None = None
    status: str | None = None
    status_details: str | None = None


class FileDeleted(_Model):
    """Response of a file deletion."""

    id: str
    object: str | None = "file"
    deleted: bool


class Page(_Model, Generic[T]):
    """One page of a listing (``GET /batches``, ``GET /files``); ``last_id`` is the next page's cursor."""

    object: str | None = "list"
    data: list[T] = Field(default_factory=list)
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


#: One page of ``GET /batches``.
BatchPage = Page[Batch]
#: One page of ``GET /files``.
FilePage = Page[FileObject]


class ResultResponse(_Model):
    """The ``response`` of a result line: HTTP status, request id and the endpoint's JSON body."""

    status_code: int | None = None
    request_id: str | None = None
    body: dict[str, Any] | None = None


class ResultLineError(_Model):
    """The ``error`` of a result line; accepts ``code``/``message`` and ``error_code``/``error_message``."""

    code: str | None = Field(default=None, validation_alias=AliasChoices("code", "error_code"))
    message: str | None = Field(default=None, validation_alias=AliasChoices("message", "error_message"))


class ResultLine(_Model):
    """One line of a batch's output or error file."""

    id: str | None = None
    custom_id: str | None = None
    response: ResultResponse | None = None
    error: ResultLineError | None = None
