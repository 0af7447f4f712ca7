"""
Streaming preflight validation of DashScope batch input files (JSONL).

One set of rules, shared by the upload operator (a bad file costs no upload and no batch) and
the emulator (which reports the same violations as the service's ``errors.data``).

The file is read in binary by :mod:`airflow_provider_dashscope_batch.validation.lines`, one line at a
time with a bounded ``readline``, so memory stays flat whatever the file size; a line over the 6 MB
limit is counted and skipped, never held whole. Each line is checked with a typed ``msgspec``
decoder that materialises only ``custom_id``, ``method``, ``url``, ``body.model``,
``body.enable_thinking``, the roles of ``body.messages`` and the small embeddings fields, and
validates the syntax of the rest (message texts) without building Python objects for it;
non-ASCII lines are also checked to be UTF-8. A line the fast decoder rejects is re-parsed with
:mod:`json` to give the exact reason (and to accept what strict JSON
allows, such as lone surrogate escapes).

The module is over 600 lines because one :class:`LineChecker` holds every line rule: its fast path
for a line like the ones before it has to see them all at once.

Rule codes (``Violation.code``); ``line`` is ``None`` for file-level rules:

============================  ==============================================================
code                          rule
============================  ==============================================================
``empty_file``                the file holds no request (OpenAI code)
``file_too_large``            file over 500 MB (1 MB with ``batch-test-model``)
``too_many_tasks``            over 50,000 lines (100 with ``batch-test-model``) (OpenAI code)
``invalid_encoding``          line is not UTF-8, or the file starts with a UTF-8 BOM
``blank_line``                empty or whitespace-only line (one final newline is fine)
``line_too_large``            line over 6 MB (the line is not parsed further)
``invalid_json_line``         line is not one JSON object (OpenAI code)
``missing_custom_id``         no ``custom_id``
``invalid_custom_id``         ``custom_id`` is not a non-empty string
``custom_id_too_long``        warning only: ``custom_id`` over 256 characters (no public page states
                              a limit; the service's own copy of OpenAI's API may hold one)
``unknown_model``             warning only: ``body.model`` is not in the model catalog, so its
                              region, modalities, thinking mode, limits and price are not checked
``duplicate_custom_id``       ``custom_id`` already used on an earlier line (DashScope code)
``invalid_method``            ``method`` is not ``"POST"``
``invalid_url``               ``url`` is not an accepted endpoint, or does not suit the model
                              (``batch-test-model`` uses ``/v1/chat/ds-test`` and only it does)
``url_mismatch``              ``url`` differs from ``endpoint`` or from the first line's url
                              (OpenAI code)
``invalid_body``              ``body`` is not an object, or ``body.enable_thinking`` is not a bool
``invalid_model``             ``body.model`` is not a non-empty string
``mismatched_model``          ``body.model`` differs from the first line's (DashScope code)
``mismatched_thinking_mode``  ``body.enable_thinking`` differs from the first line's (an absent
                              value counts as its own mode: set it the same way on every line)
``invalid_response_format``   ``body.response_format`` is not ``{"type": "text"}``,
                              ``{"type": "json_object"}`` or ``{"type": "json_schema",
                              "json_schema": {"name": ..., "schema": {...}}}`` (``name`` 1..64 of
                              ``[A-Za-z0-9_-]``, ``schema`` an object, ``strict`` a bool if given)
``model_not_found``           service-side only (unknown model); never raised here
============================  ==============================================================

Per-endpoint body rules (``messages`` for chat, ``input``/``dimensions``/``encoding_format`` for
embeddings, image parts only for models the catalog says read them, fields a family does not accept) are
listed in :mod:`airflow_provider_dashscope_batch.validation.bodies`. Each rule's public source is in
the docs' rule table (``docs/errors.rst``); a rule no public page states is a warning
(``ValidationReport.warnings``), never a refusal.

Sizes use binary units (1 MB = 2**20 bytes); line sizes exclude the line terminator. Lines past
the 50,000-line limit are counted but not checked, which also bounds the memory used to detect
duplicate ids.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, BinaryIO

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from airflow_provider_dashscope_batch.catalog import Catalog, shipped_catalog
from airflow_provider_dashscope_batch.validation.bodies import EMBEDDINGS_ENDPOINT, body_violations
from airflow_provider_dashscope_batch.validation.lines import (
    MAX_LINE_BYTES,
    MB,
    open_source,
    read_lines,
    source_name,
)

__all__ = [
    "ENDPOINTS",
    "MAX_CUSTOM_ID_CHARS",
    "MAX_FILE_BYTES",
    "MAX_LINES",
    "RESPONSE_FORMAT_TYPES",
    "TEST_MODEL",
    "TEST_MODEL_ENDPOINT",
    "TEST_MODEL_MAX_FILE_BYTES",
    "TEST_MODEL_MAX_LINES",
    "WARNING_CODES",
    "JsonlValidationError",
    "LineChecker",
    "ValidationReport",
    "Violation",
    "validate_jsonl",
]

ENDPOINTS: frozenset[str] = frozenset({"/v1/chat/completions", "/v1/embeddings", "/v1/chat/ds-test"})
MAX_LINES = 50_000
MAX_FILE_BYTES = 500 * MB
MAX_CUSTOM_ID_CHARS = 256
TEST_MODEL = "batch-test-model"
TEST_MODEL_ENDPOINT = "/v1/chat/ds-test"
TEST_MODEL_MAX_LINES = 100
TEST_MODEL_MAX_FILE_BYTES = 1 * MB

#: ``body.response_format.type`` values the service documents (plain text, JSON mode, JSON Schema).
RESPONSE_FORMAT_TYPES: frozenset[str] = frozenset({"text", "json_object", "json_schema"})
_BAD_FORMAT = "invalid_response_format"
_SCHEMA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

#: Body rules no public page found states: reported as warnings, never refusals.
WARNING_CODES = frozenset({"invalid_encoding_format", "unsupported_body_field"})

_WHITESPACE_STARTS = frozenset(b" \t\r\n")
_UNSET = msgspec.UNSET


class Violation(BaseModel):
    """
    One broken rule, shaped like an entry of the service's ``errors.data``.

    :param line: 1-based line number, or ``None`` for a file-level rule.
    :param code: stable rule code (see the module docstring).
    :param message: human-readable reason.
    :param param: the offending field (``custom_id``, ``body.model``, ...), if any.
    """

    model_config = ConfigDict(frozen=True)

    line: int | None
    code: str
    message: str
    param: str | None = None


class ValidationReport(BaseModel):
    """
    Outcome of :func:`validate_jsonl`.

    :param source_name: name used in messages (file path, or the ``name`` given).
    :param line_count: number of lines read.
    :param bytes: number of bytes read.
    :param model: the file's model (first line's ``body.model``), if any.
    :param endpoint: the file's url (first valid line's ``url``), if any.
    :param violations: the first ``max_violations`` violations, in file order (file-level last).
    :param violation_count: total number of violations, including those not listed.
    :param warnings: the first ``max_violations`` warnings (rules no public page states, models the
        catalog does not know); they do not stop an upload.
    :param unit: what a number counts in messages: ``line`` (of a file), or ``item`` (of ``requests=``).
    """

    source_name: str
    line_count: int
    bytes: int
    model: str | None = None
    endpoint: str | None = None
    violations: list[Violation] = Field(default_factory=list)
    violation_count: int = 0
    warnings: list[Violation] = Field(default_factory=list)
    unit: str = "line"

    @property
    def ok(self) -> bool:
        """Whether the file broke no rule."""
        return self.violation_count == 0

    def format_violation(self, violation: Violation) -> str:
        """Render one violation as ``<source> line <n>: <code>: <message>``."""
        where = (
            self.source_name if violation.line is None else f"{self.source_name} {self.unit} {violation.line}"
        )
        return f"{where}: {violation.code}: {violation.message}"

    def summary(self) -> str:
        """Multi-line, human-readable summary naming each listed violation."""
        if self.ok:
            head = f"{self.source_name}: OK ({self.line_count} lines, {self.bytes} bytes)"
        else:
            head = (
                f"{self.source_name}: {self.violation_count} violation(s) in {self.line_count} lines "
                f"({self.bytes} bytes)"
            )
        lines = [head, *(self.format_violation(v) for v in self.violations)]
        hidden = self.violation_count - len(self.violations)
        if hidden:
            lines.append(f"... and {hidden} more violation(s) not listed")
        lines.extend(f"warning: {self.format_violation(w)}" for w in self.warnings)
        return "\n".join(lines)

    def located(self, source: str, lines: Sequence[int] | None, unit: str = "line") -> ValidationReport:
        """
        The report as seen from the user's own input: named ``source``, line ``n`` renumbered
        ``lines[n - 1]`` (the CSV line that built it), numbers counting ``unit``.
        """

        def moved(v: Violation) -> Violation:
            if v.line is None or lines is None or v.line > len(lines):
                return v
            return v.model_copy(update={"line": lines[v.line - 1]})

        return self.model_copy(
            update={
                "source_name": source,
                "violations": [moved(v) for v in self.violations],
                "warnings": [moved(w) for w in self.warnings],
                "unit": unit,
            }
        )

    def raise_for_violations(self) -> ValidationReport:
        """Raise :class:`JsonlValidationError` if any rule was broken; return the report otherwise."""
        if not self.ok:
            raise JsonlValidationError(self)
        return self


class JsonlValidationError(ValueError):
    """A batch input file broke one or more rules; ``report`` holds the details."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.summary())
        self.report = report


class _LazyMessage(msgspec.Struct):
    role: Any = _UNSET
    content: msgspec.Raw | msgspec.UnsetType = _UNSET  # checked to be a string without decoding it


class _Body(msgspec.Struct):
    model: Any = _UNSET
    enable_thinking: Any = _UNSET
    response_format: Any = _UNSET
    # read by the per-endpoint body rules (_body_view)
    messages: list[_LazyMessage] | msgspec.UnsetType = _UNSET
    input: Any = _UNSET
    dimensions: Any = _UNSET
    encoding_format: Any = _UNSET


class _Request(msgspec.Struct):
    custom_id: Any = _UNSET
    method: Any = _UNSET
    url: Any = _UNSET
    body: _Body | msgspec.UnsetType | None = _UNSET


_DECODER = msgspec.json.Decoder(_Request)


class _BodyOnly(msgspec.Struct):
    body: dict[str, Any]


_BODY_DECODER = msgspec.json.Decoder(_BodyOnly)  # every field name of an embeddings body


def _body_view(body: _Body, url: Any, line: bytes) -> dict[str, Any]:
    """
    The body as the body rules read it, from the fast decoder's struct (message texts stay undecoded).

    Embeddings bodies are read whole once more (they are small): their rules look at every field name.
    """
    if url == EMBEDDINGS_ENDPOINT:
        return _BODY_DECODER.decode(line).body
    view: dict[str, Any] = {}
    if body.messages is not _UNSET:
        view["messages"] = [_lazy_message(message) for message in body.messages]
    for key in ("input", "dimensions", "encoding_format"):
        if (value := getattr(body, key)) is not _UNSET:
            view[key] = value
    return view


def _lazy_message(message: _LazyMessage) -> dict[str, Any]:
    decoded: dict[str, Any] = {}
    if message.role is not _UNSET:
        decoded["role"] = message.role
    content = message.content
    if content is not _UNSET:
        decoded["content"] = "" if memoryview(content)[0] == 0x22 else msgspec.json.decode(content)  # '"'
    return decoded


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class LineChecker:
    """
    Rule state for one file; ``check_line`` per line, then ``finish``.

    Public so that an input split into several files (:mod:`airflow_provider_dashscope_batch.sharding.split`)
    is checked by the same rules and messages, with line numbers of the whole input; ``seen_ids``
    (custom_id -> first line) may then be a more compact registry than a dict.
    """

    def __init__(
        self,
        endpoint: str | None,
        max_violations: int,
        seen_ids: MutableMapping[str, int] | None = None,
        *,
        body_rules: bool = True,
        catalog: Catalog | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.catalog = catalog or shipped_catalog()
        self.warnings: list[Violation] = []
        self.body_rules = body_rules
        self.max_violations = max_violations
        self.violations: list[Violation] = []
        self.file_violations: list[Violation] = []
        self.violation_count = 0
        self.seen_ids: MutableMapping[str, int] = {} if seen_ids is None else seen_ids
        self.url: str | None = None
        self.model: str | None = None
        self.model_line = 0
        self.thinking: Any = _UNSET
        self.thinking_line = 0
        self.blank_lines = 0

    def add(self, line: int | None, code: str, message: str, param: str | None = None) -> None:
        self.violation_count += 1
        if line is None:
            self.file_violations.append(Violation(line=line, code=code, message=message, param=param))
        elif len(self.violations) < self.max_violations:
            self.violations.append(Violation(line=line, code=code, message=message, param=param))

    def warn(self, line: int | None, code: str, message: str, param: str | None = None) -> None:
        """Note a rule no public page states, or a fact the catalog cannot check; it refuses nothing."""
        if len(self.warnings) < self.max_violations:
            self.warnings.append(Violation(line=line, code=code, message=message, param=param))

    def listed(self) -> list[Violation]:
        """Line violations in file order then file-level ones, ``max_violations`` at most."""
        room = max(self.max_violations - len(self.file_violations), 0)
        return (self.violations[:room] + self.file_violations)[: self.max_violations]

    def check_length(self, n: int, length: int) -> bool:
        """Whether line ``n`` of ``length`` bytes (terminator excluded) is within the line limit."""
        if length <= MAX_LINE_BYTES:
            return True
        self.add(n, "line_too_large", f"line is {length:,} bytes; the limit is {MAX_LINE_BYTES // MB} MB")
        return False

    def check_line(self, n: int, line: bytes) -> None:
        if line[0] in _WHITESPACE_STARTS and not line.strip():
            self.blank_lines += 1
            self.add(n, "blank_line", "blank line; every line must hold one JSON request")
            return
        if not line.isascii():
            try:
                line.decode()
            except UnicodeDecodeError as exc:
                self.add(n, "invalid_encoding", f"not valid UTF-8 ({exc.reason} at byte {exc.start + 1})")
                return
        try:
            req = _DECODER.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self._check_slow(n, line)
            return
        body = req.body
        custom_id = req.custom_id
        if (  # fast path: a valid line like the ones before it (once they set url, model and thinking)
            type(body) is _Body
            and type(custom_id) is str
            and 0 < len(custom_id) <= MAX_CUSTOM_ID_CHARS
            and req.method == "POST"
            and self.url is not None
            and req.url == self.url
            and self.model is not None
            and body.model == self.model
            and self.thinking_line
            and body.enable_thinking is self.thinking
            and custom_id not in self.seen_ids
        ):
            self.seen_ids[custom_id] = n
        elif body is _UNSET or body is None:
            self._check_fields(n, custom_id, req.method, req.url, body, _UNSET, _UNSET)
            return
        else:
            self._check_fields(n, custom_id, req.method, req.url, {}, body.model, body.enable_thinking)
        if type(body) is _Body and body.response_format is not _UNSET:
            self._check_response_format(n, body.response_format)
        self._check_body(n, req.url, body.model, _body_view(body, req.url, line))

    def _check_slow(self, n: int, line: bytes) -> None:
        try:
            obj = json.loads(line.rstrip(b"\r\n").decode(), parse_constant=_reject_constant)
        except ValueError as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            where = f" (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
            self.add(n, "invalid_json_line", f"not valid JSON: {reason}{where}")
            return
        if not isinstance(obj, dict):
            self.add(n, "invalid_json_line", f"a line must be a JSON object, got {_json_type(obj)}")
            return
        body = obj.get("body", _UNSET)
        model = body.get("model", _UNSET) if isinstance(body, dict) else _UNSET
        thinking = body.get("enable_thinking", _UNSET) if isinstance(body, dict) else _UNSET
        self._check_fields(
            n,
            obj.get("custom_id", _UNSET),
            obj.get("method", _UNSET),
            obj.get("url", _UNSET),
            body,
            model,
            thinking,
        )
        if isinstance(body, dict):
            if "response_format" in body:
                self._check_response_format(n, body["response_format"])
            self._check_body(n, obj.get("url"), model, body)

    def _check_fields(
        self, n: int, custom_id: Any, method: Any, url: Any, body: Any, model: Any, thinking: Any
    ) -> None:
        self._check_custom_id(n, custom_id)
        if method != "POST":
            got = "missing" if method is _UNSET else json.dumps(method, ensure_ascii=False)
            self.add(n, "invalid_method", f'method must be "POST", got {got}', "method")
        self._check_url(n, url)
        if not isinstance(body, dict):
            got = "missing" if body is _UNSET else f"a JSON {_json_type(body)}"
            self.add(n, "invalid_body", f"body must be a JSON object, got {got}", "body")
            return
        self._check_model(n, model)
        if thinking is not _UNSET and not isinstance(thinking, bool):
            self.add(
                n,
                "invalid_body",
                f"body.enable_thinking must be true or false, got a JSON {_json_type(thinking)}",
                "body.enable_thinking",
            )
        elif not self.thinking_line:
            self.thinking, self.thinking_line = thinking, n
        elif thinking is not self.thinking:
            self.add(
                n,
                "mismatched_thinking_mode",
                f"body.enable_thinking is {_thinking_text(thinking)} but {_thinking_text(self.thinking)} "
                f"on line {self.thinking_line}; use one thinking mode per file",
                "body.enable_thinking",
            )

    def _check_body(self, n: int, url: Any, model: Any, body: dict[str, Any]) -> None:
        """Per-endpoint body rules of :mod:`.bodies`; none on a url mismatch."""
        if not self.body_rules or url != (self.endpoint or self.url or url):
            return
        for code, message, param in body_violations(url, model, body, self.catalog):
            if code in WARNING_CODES:
                self.warn(n, code, message, param)
            else:
                self.add(n, code, message, param)

    def _check_custom_id(self, n: int, custom_id: Any) -> None:
        if custom_id is _UNSET:
            self.add(n, "missing_custom_id", "custom_id is missing", "custom_id")
        elif not isinstance(custom_id, str) or not custom_id:
            got = "an empty string" if custom_id == "" else f"a JSON {_json_type(custom_id)}"
            self.add(n, "invalid_custom_id", f"custom_id must be a non-empty string, got {got}", "custom_id")
        else:
            if len(custom_id) > MAX_CUSTOM_ID_CHARS:
                self.warn(
                    n,
                    "custom_id_too_long",
                    f"custom_id has {len(custom_id)} characters; no public page states a limit, but "
                    f"OpenAI's batch API takes at most {MAX_CUSTOM_ID_CHARS}",
                    "custom_id",
                )
            first = self.seen_ids.setdefault(custom_id, n)
            if first != n:
                shown = json.dumps(custom_id, ensure_ascii=False)
                self.add(
                    n, "duplicate_custom_id", f"custom_id {shown} already used on line {first}", "custom_id"
                )

    def _check_url(self, n: int, url: Any) -> None:
        if url not in ENDPOINTS:
            got = "missing" if url is _UNSET else json.dumps(url, ensure_ascii=False)
            allowed = ", ".join(sorted(ENDPOINTS))
            self.add(n, "invalid_url", f"url must be one of {allowed}, got {got}", "url")
        elif self.endpoint is not None and url != self.endpoint:
            self.add(
                n, "url_mismatch", f'url "{url}" differs from the batch endpoint "{self.endpoint}"', "url"
            )
        elif self.url is None:
            self.url = url
        elif url != self.url:
            self.add(n, "url_mismatch", f'url "{url}" differs from "{self.url}" used on earlier lines', "url")

    def _check_model(self, n: int, model: Any) -> None:
        if not isinstance(model, str) or not model:
            got = "missing" if model is _UNSET else f"a JSON {_json_type(model)}"
            if model == "":
                got = "an empty string"
            self.add(n, "invalid_model", f"body.model must be a non-empty string, got {got}", "body.model")
        elif self.model is None:
            self.model, self.model_line = model, n
            if self.catalog.get(model) is None:
                self.warn(
                    n,
                    "unknown_model",
                    f"model {model!r} is not in the model catalog: its region, modalities, thinking mode, "
                    "limits and price are not checked. Add it to the connection extra 'models' "
                    "(docs: Models)",
                    "body.model",
                )
        elif model != self.model:
            self.add(
                n,
                "mismatched_model",
                f'body.model "{model}" differs from "{self.model}" on line {self.model_line}; '
                "use one model per file",
                "body.model",
            )

    def _check_response_format(self, n: int, value: Any) -> None:
        """``body.response_format`` against the structured-output shapes the service documents."""
        param = "body.response_format"
        if not isinstance(value, dict):
            self.add(n, _BAD_FORMAT, f"{param} must be a JSON object, got a JSON {_json_type(value)}", param)
            return
        kind = value.get("type", _UNSET)
        if kind not in RESPONSE_FORMAT_TYPES:
            got = "missing" if kind is _UNSET else json.dumps(kind, ensure_ascii=False)
            allowed = ", ".join(f'"{t}"' for t in sorted(RESPONSE_FORMAT_TYPES))
            self.add(n, _BAD_FORMAT, f"{param}.type must be one of {allowed}, got {got}", f"{param}.type")
            return
        if kind != "json_schema":
            return
        spec = value.get("json_schema", _UNSET)
        param += ".json_schema"
        if not isinstance(spec, dict):
            got = "missing" if spec is _UNSET else f"a JSON {_json_type(spec)}"
            self.add(n, _BAD_FORMAT, f'{param} must be an object with "name" and "schema", got {got}', param)
            return
        name = spec.get("name", _UNSET)
        if not (isinstance(name, str) and _SCHEMA_NAME.fullmatch(name)):
            got = "missing" if name is _UNSET else json.dumps(name, ensure_ascii=False)[:80]
            self.add(
                n,
                _BAD_FORMAT,
                f"{param}.name must be 1 to 64 of a-z, A-Z, 0-9, _ and -, got {got}",
                f"{param}.name",
            )
        schema = spec.get("schema", _UNSET)
        if schema is _UNSET:
            self.add(n, _BAD_FORMAT, f"{param}.schema is missing; give the JSON Schema", f"{param}.schema")
        elif not isinstance(schema, dict):
            hint = (
                " (a schema held as text: parse it with json.loads first)" if isinstance(schema, str) else ""
            )
            self.add(
                n,
                _BAD_FORMAT,
                f"{param}.schema must be a JSON Schema object, got a JSON {_json_type(schema)}{hint}",
                f"{param}.schema",
            )
        strict = spec.get("strict", _UNSET)
        if strict is not _UNSET and not isinstance(strict, bool):
            self.add(
                n,
                _BAD_FORMAT,
                f"{param}.strict must be true or false, got a JSON {_json_type(strict)}",
                f"{param}.strict",
            )

    def finish(self, line_count: int, size: int) -> None:
        if self.model == TEST_MODEL:
            max_lines, max_bytes, what = TEST_MODEL_MAX_LINES, TEST_MODEL_MAX_FILE_BYTES, f" for {TEST_MODEL}"
        else:
            max_lines, max_bytes, what = MAX_LINES, MAX_FILE_BYTES, ""
        if line_count == self.blank_lines:
            self.add(None, "empty_file", "the file holds no request")
        if line_count > max_lines:
            self.add(
                None,
                "too_many_tasks",
                f"{line_count:,} lines; the limit{what} is {max_lines:,} requests per file. Run it with "
                "DashScopeShardedBatchOperator (splits it into batches within the limit)"
                + (
                    ", or pack up to the model's limit of texts into one request with inputs_per_request"
                    if self.url == EMBEDDINGS_ENDPOINT
                    else ""
                ),
            )
        if size > max_bytes:
            self.add(None, "file_too_large", f"{size:,} bytes; the limit{what} is {max_bytes // MB} MB")
        if self.model is not None and self.url is not None:
            if self.model == TEST_MODEL and self.url != TEST_MODEL_ENDPOINT:
                self.add(None, "invalid_url", f'{TEST_MODEL} requires url "{TEST_MODEL_ENDPOINT}"', "url")
            elif self.model != TEST_MODEL and self.url == TEST_MODEL_ENDPOINT:
                self.add(None, "invalid_url", f'url "{TEST_MODEL_ENDPOINT}" is only for {TEST_MODEL}', "url")


def _thinking_text(value: Any) -> str:
    return "unset" if value is _UNSET else json.dumps(value)


def validate_jsonl(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    endpoint: str | None = None,
    max_violations: int = 100,
    name: str | None = None,
    on_line: Callable[[bytes], None] | None = None,
    body_rules: bool = True,
    catalog: Catalog | None = None,
) -> ValidationReport:
    """
    Check a batch input file against every rule the service enforces, streaming it once.

    :param source: a local path, an ``ObjectStoragePath``, or a binary stream open for reading
        (read from its current position and left open).
    :param endpoint: the batch endpoint; when given, every line's ``url`` must equal it.
    :param max_violations: how many violations to list in the report (all are counted).
    :param name: name used in messages; defaults to the path, or the stream's ``name``.
    :param on_line: called with each line that broke no rule so far (the cost estimate reads the same
        pass; it stops being called after the first violation).
    :param body_rules: also check each body against its endpoint's rules (:mod:`.bodies`); the service
        itself fails such a request alone, in the error file, rather than the whole file.
    :param catalog: The model catalog the per-model rules read (default: the shipped one).
    :return: the report; call :meth:`ValidationReport.raise_for_violations` to fail on violations.
    """
    if endpoint is not None and endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint must be one of {', '.join(sorted(ENDPOINTS))}, got {endpoint!r}")
    checker = LineChecker(endpoint, max_violations, body_rules=body_rules, catalog=catalog)
    line_count = size = 0
    with open_source(source) as f:
        for line_count, line, read in read_lines(f, checker):
            size += read
            if line is not None and line_count <= MAX_LINES:
                checker.check_line(line_count, line)
                if on_line is not None and not checker.violation_count:
                    on_line(line)
    checker.finish(line_count, size)
    return ValidationReport(
        source_name=name if name is not None else source_name(source),
        line_count=line_count,
        bytes=size,
        model=checker.model,
        endpoint=checker.url,
        violations=checker.listed(),
        violation_count=checker.violation_count,
        warnings=checker.warnings,
    )
