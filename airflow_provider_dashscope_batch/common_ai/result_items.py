"""
DashScope result lines and batches in common.ai's vocabulary (``RawResultItem``, ``BatchState``).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.ai.batch.base import BatchState, RawResultItem

from airflow_provider_dashscope_batch.client.types import Batch, BatchStatus, ResultLine

__all__ = ["message_text", "parse_result_line", "state_of", "strip_code_fence"]

#: Error codes of requests the service never ran, as common.ai's per-item statuses.
_UNRUN_CODES = {"batch_expired": "expired", "batch_cancelled": "cancelled"}

_STATUS_MAP = {
    BatchStatus.COMPLETED: "completed",
    BatchStatus.FAILED: "failed",
    BatchStatus.EXPIRED: "expired",
    BatchStatus.CANCELLED: "cancelled",
}


def state_of(batch: Batch) -> BatchState:
    """Collapse a batch into common.ai's status vocabulary and per-status counts."""
    counts = None
    if batch.request_counts is not None:
        rc = batch.request_counts
        # Requests neither completed nor failed when a batch expires or is cancelled never ran.
        never_ran = max(rc.total - rc.completed - rc.failed, 0)
        counts = {
            "succeeded": rc.completed,
            "errored": rc.failed,
            "expired": never_ran if batch.status == BatchStatus.EXPIRED else 0,
            "cancelled": never_ran if batch.status == BatchStatus.CANCELLED else 0,
        }
    errors = batch.errors.data if batch.errors is not None else []
    message = "; ".join(
        f"{e.code or 'error'}: {e.message or ''}".rstrip(": ") + (f" (line {e.line})" if e.line else "")
        for e in errors
    )
    return BatchState(
        status=_STATUS_MAP.get(batch.status, "in_progress"),  # type: ignore[arg-type]
        counts=counts,
        error_message=message or None,
    )


def parse_result_line(line: bytes) -> RawResultItem:
    """One output- or error-file line as a :class:`RawResultItem` (``raw`` is the message dict)."""
    try:
        parsed = ResultLine.model_validate_json(line)
        index = int((parsed.custom_id or "").rsplit("-", 1)[1])
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{exc} in {line[:200]!r}") from None
    response = parsed.response
    body = (response.body if response is not None else None) or {}
    status_code = response.status_code if response is not None else None
    body_error = body.get("error") if isinstance(body.get("error"), dict) else {}
    code = (parsed.error.code if parsed.error else None) or body_error.get("code")
    message = (parsed.error.message if parsed.error else None) or body_error.get("message")
    if parsed.error is not None or body_error or status_code != 200:
        status = _UNRUN_CODES.get(str(code), "errored")
        return RawResultItem(
            custom_id=parsed.custom_id or "",
            index=index,
            provider_status=status,  # type: ignore[arg-type]
            model=body.get("model"),
            usage=None,
            finish_reason=None,
            error={
                "type": "provider_error" if status == "errored" else status,
                "message": message or f"HTTP {status_code}",
                "provider_code": str(code) if code is not None else (str(status_code or "") or None),
                "stage": "provider",
            },
            raw=None,
        )
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    usage = body.get("usage") or {}
    return RawResultItem(
        custom_id=parsed.custom_id or "",
        index=index,
        provider_status="success",
        model=body.get("model"),
        usage={
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
        },
        finish_reason=choice.get("finish_reason"),
        error=None,
        raw=choice.get("message") or {},
    )


def message_text(value: Any) -> str | None:
    """Message content as text: a string, or the text parts of a list of content parts."""
    if isinstance(value, list):
        value = "".join(part.get("text", "") for part in value if isinstance(part, dict))
    return value if isinstance(value, str) and value.strip() else None


def strip_code_fence(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        first_newline = stripped.find("\n")
        if first_newline != -1:
            return stripped[first_newline + 1 : -3].strip()
    return text
