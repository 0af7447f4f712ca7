"""
How the emulated API reads a request's parameters and answers a bad one (DashScope's error body).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from dashscope_batch_emulator.faults import error_body

__all__ = ["ApiError", "error_response", "int_param", "page_of", "parse_time", "read_json"]


class ApiError(Exception):
    """An error answered with DashScope's error body."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def error_response(status: int, message: str | None = None, *, code=None, param=None) -> JSONResponse:
    """The service's error answer, its ``request_id`` also in the ``x-request-id`` header."""
    body = error_body(status, message, code=code, param=param)
    return JSONResponse(body, status_code=status, headers={"x-request-id": body["request_id"]})


def parse_time(value: str, name: str, formats: tuple[str, ...]) -> float:
    """A time parameter in the first of ``formats`` it matches, as UTC Unix seconds."""
    for fmt in formats:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise ApiError(400, f"Invalid {name} '{value}'; expected one of {', '.join(formats)}.", param=name)


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within ``[low, high]``, ``default`` when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer between {low} and {high}.", param=name) from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}.", param=name)
    return value


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def page_of(items: list[Any], after: str | None, limit: int) -> tuple[list[Any], bool]:
    """The page after the cursor ``after`` (an item id) and whether more follow."""
    if after is not None:
        ids = [item.id for item in items]
        if after not in ids:
            raise ApiError(400, f"Unknown cursor after='{after}'.", param="after")
        items = items[ids.index(after) + 1 :]
    return items[:limit], len(items) > limit
