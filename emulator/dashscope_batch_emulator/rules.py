"""
The service's documented rules for a batch input file and for one request, as the emulator applies them.

Written for the emulator from the service's public pages, independently of the provider's preflight
validator: a test that runs one file through both catches a rule either of them gets wrong. Only what a
page states is refused; each rule's page is listed in ``docs/emulator.rst`` ("Rules and their sources").

A file is read line by line with a bounded ``readline`` (a line over the 6 MB limit is measured in pieces,
never held whole) and each line is parsed with :func:`json.loads`. File rules fail the whole batch (the
service's ``errors.data``); request rules (:func:`request_error`) fail one request, in the error file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ENDPOINTS",
    "MAX_ERRORS",
    "TEST_MODEL",
    "TEST_MODEL_ENDPOINT",
    "FileCheck",
    "FileError",
    "check_file",
    "request_error",
    "thinks",
]

MB = 1 << 20
MAX_REQUESTS = 50_000
MAX_FILE_BYTES = 500 * MB
MAX_LINE_BYTES = 6 * MB
TEST_MODEL = "batch-test-model"
TEST_MODEL_ENDPOINT = "/v1/chat/ds-test"
TEST_MODEL_MAX_REQUESTS = 100
TEST_MODEL_MAX_FILE_BYTES = 1 * MB
CHAT_ENDPOINT = "/v1/chat/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"
ENDPOINTS = (CHAT_ENDPOINT, EMBEDDINGS_ENDPOINT, TEST_MODEL_ENDPOINT)
MAX_ERRORS = 100
"""Entries listed in a failed batch's ``errors.data`` at most."""

# Which models think without ``enable_thinking`` (guide zh, newest) and which always think.
_THINKS_BY_DEFAULT = re.compile(r"^(qwen3\.5-|qwen3\.6-|qwen3\.7-max)")
_ALWAYS_THINKS = re.compile(r"^(qwq-|deepseek-r1)|-thinking(-|$)")

# Texts per request and the ``dimensions`` each text-embedding model takes (text-embedding page).
_EMBEDDING_LIMITS: dict[str, tuple[int, tuple[int, ...]]] = {
    "text-embedding-v4": (10, (2048, 1536, 1024, 768, 512, 256, 128, 64)),
    "text-embedding-v3": (10, (1024, 768, 512, 256, 128, 64)),
    "text-embedding-v2": (25, ()),
    "text-embedding-v1": (25, ()),
}


@dataclass(frozen=True)
class FileError:
    """One entry of a failed batch's ``errors.data``."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None

    def to_api(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass(frozen=True)
class FileCheck:
    """What validating an input file found: its requests, and the rules it broke (empty: it runs)."""

    requests: int
    errors: tuple[FileError, ...]


def thinks(model: str, enable_thinking: Any) -> bool:
    """Whether a request runs in thinking mode: always-thinking models, else the flag, else the default."""
    if _ALWAYS_THINKS.search(model):
        return True
    if isinstance(enable_thinking, bool):
        return enable_thinking
    return bool(_THINKS_BY_DEFAULT.search(model))


def check_file(path: Path, endpoint: str) -> FileCheck:
    """Judge the input file at ``path`` for a batch on ``endpoint``, streaming it once."""
    judge = _FileJudge(endpoint)
    size = 0
    with path.open("rb") as stream:
        for n, line, length in _lines(stream):
            size += length
            judge.line(n, line, length)
    judge.finish(size)
    return FileCheck(judge.requests, tuple(judge.errors))


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | None, int]]:
    """``(number, line without terminator, bytes read)``; ``None`` for a line too long to hold."""
    n = 0
    while raw := stream.readline(MAX_LINE_BYTES + 2):
        n += 1
        read = len(raw)
        if not raw.endswith(b"\n") and read == MAX_LINE_BYTES + 2:  # longer still: measure the rest
            while (rest := stream.readline(MB)) and not rest.endswith(b"\n"):
                read += len(rest)
            read += len(rest)
            yield n, None, read
            continue
        line = raw.rstrip(b"\n").removesuffix(b"\r")
        yield n, line if len(line) <= MAX_LINE_BYTES else None, read


class _FileJudge:
    """The rules of one file, fed line by line."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.errors: list[FileError] = []
        self.requests = 0
        self.ids: dict[str, int] = {}
        self.model: tuple[str, int] | None = None
        self.thinking: tuple[bool, int] | None = None

    def fail(self, code: str, message: str, param: str | None = None, line: int | None = None) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(FileError(code, message, param, line))

    def line(self, n: int, line: bytes | None, length: int) -> None:
        self.requests = n
        if line is None:
            self.fail("line_too_large", f"line {n} is over the 6 MB line limit", line=n)
            return
        if n > MAX_REQUESTS:  # counted for too_many_tasks, not judged
            return
        try:
            request = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            self.fail("invalid_encoding", f"line {n} is not UTF-8 text", line=n)
            return
        except ValueError as exc:
            self.fail("invalid_json_line", f"line {n} is not valid JSON ({exc})", line=n)
            return
        if not isinstance(request, dict):
            self.fail("invalid_json_line", f"line {n} is not a JSON object", line=n)
            return
        self._request(n, request)

    def _request(self, n: int, request: dict[str, Any]) -> None:
        custom_id = request.get("custom_id")
        if "custom_id" not in request:
            self.fail("missing_custom_id", "custom_id is required", "custom_id", n)
        elif not isinstance(custom_id, str) or not custom_id:
            self.fail("invalid_custom_id", "custom_id must be a non-empty string", "custom_id", n)
        elif (first := self.ids.setdefault(custom_id, n)) != n:
            shown = json.dumps(custom_id, ensure_ascii=False)
            self.fail("duplicate_custom_id", f"custom_id {shown} repeats line {first}", "custom_id", n)
        if request.get("method") != "POST":
            self.fail("invalid_method", 'method must be "POST"', "method", n)
        url = request.get("url")
        if url not in ENDPOINTS:
            self.fail("invalid_url", f"url must be one of {', '.join(ENDPOINTS)}", "url", n)
        elif url != self.endpoint:
            self.fail("url_mismatch", f"url {url} differs from the batch endpoint {self.endpoint}", "url", n)
        body = request.get("body")
        if not isinstance(body, dict):
            self.fail("invalid_body", "body must be a JSON object", "body", n)
            return
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self.fail("invalid_model", "body.model must be a non-empty string", "body.model", n)
            return
        if self.model is None:
            self.model = (model, n)
        elif model != self.model[0]:
            self.fail(
                "mismatched_model",
                f"model {model} differs from {self.model[0]} on line {self.model[1]}; one model per file",
                "body.model",
                n,
            )
            return
        mode = thinks(model, body.get("enable_thinking"))
        if self.thinking is None:
            self.thinking = (mode, n)
        elif mode != self.thinking[0]:
            self.fail(
                "mismatched_thinking_mode",
                f"thinking mode differs from line {self.thinking[1]}; one thinking mode per file",
                "body.enable_thinking",
                n,
            )

    def finish(self, size: int) -> None:
        test_model = self.model is not None and self.model[0] == TEST_MODEL
        max_requests = TEST_MODEL_MAX_REQUESTS if test_model else MAX_REQUESTS
        max_bytes = TEST_MODEL_MAX_FILE_BYTES if test_model else MAX_FILE_BYTES
        if self.requests == 0:
            self.fail("empty_file", "the file holds no request")
        if self.requests > max_requests:
            self.fail("too_many_tasks", f"{self.requests} requests; a file holds at most {max_requests:,}")
        if size > max_bytes:
            self.fail("file_too_large", f"{size:,} bytes; a file holds at most {max_bytes // MB} MB")
        if self.model is not None and test_model != (self.endpoint == TEST_MODEL_ENDPOINT):
            self.fail("invalid_url", f"{TEST_MODEL} and only it takes the url {TEST_MODEL_ENDPOINT}", "url")


def request_error(url: Any, body: dict[str, Any]) -> str | None:
    """Why the service fails this one request (``InvalidParameter``), or ``None`` if it answers it."""
    if url == EMBEDDINGS_ENDPOINT:
        return _embeddings_error(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    return None


def _embeddings_error(body: dict[str, Any]) -> str | None:
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        return "input must be a non-empty text or list of texts"
    model = str(body.get("model"))
    limits = _EMBEDDING_LIMITS.get(model)
    if limits is None:
        return None
    most, dimensions = limits
    if len(texts) > most:
        return f"input holds {len(texts)} texts; {model} takes at most {most} per request"
    if "dimensions" in body and body["dimensions"] not in dimensions:
        allowed = ", ".join(map(str, dimensions)) or "none (its vector length is fixed)"
        return f"dimensions {body['dimensions']!r} is not one {model} takes: {allowed}"
    return None
