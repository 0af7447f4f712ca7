"""Emulated service state: clock, files on disk, batches and the engine that moves them along."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import re
import shutil
import struct
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from airflow_provider_dashscope_batch.bodies import body_violations
from airflow_provider_dashscope_batch.cost.pricing import PriceTable, load_price_table
from airflow_provider_dashscope_batch.cost.tokens import count_chat_prompt, count_text
from airflow_provider_dashscope_batch.emulator.structured import structured_answer
from airflow_provider_dashscope_batch.validation import ValidationReport, validate_jsonl

MAX_UPLOAD_BYTES = 500 * 1024 * 1024
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/chat/ds-test")
TEST_MODEL = "batch-test-model"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
FAIL_MARKER = "x_emulator_fail"


class EmulatorConfig(BaseModel):
    """
    Tunables of a running emulator (admin ``GET/PATCH /_emulator/config``).

    :param time_scale: emulated seconds per real second; ``0`` freezes the clock (move it with advance).
    :param processing_rate: requests executed per emulated second while ``in_progress``.
    :param validating_seconds: emulated seconds a batch stays ``validating``.
    :param finalizing_seconds: emulated seconds a batch stays ``finalizing``.
    :param cancelling_seconds: emulated seconds a batch stays ``cancelling``.
    :param fail_custom_id_pattern: regular expression; requests whose ``custom_id`` matches
        (``re.search``) fail and land in the error file.
    :param max_upload_bytes: upload size cap (the service's is 500 MB).
    :param embedding_dimensions: default vector length for ``/v1/embeddings``.
    :param callback_deliveries: finish-callback POSTs per finished batch (``0``: the callback is lost,
        ``2``: it arrives twice).
    :param callback_delay: real seconds before a finish notification is sent (late callbacks).
    :param callback_delay_jitter: extra real seconds, ``U(0, jitter)`` per POST, so notifications of
        batches that finished together arrive out of order.
    :param eventbridge_target: an http(s) URL that receives each finish as an EventBridge event
        (``dashscope:System:BatchTaskFinish``, source ``acs.dashscope``, CloudEvents 1.0 envelope, the
        batch object in ``data``), as an EventBridge rule with an HTTP target would deliver it.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    time_scale: float = Field(default=1.0, ge=0)
    processing_rate: float = Field(default=100.0, gt=0)
    validating_seconds: float = Field(default=1.0, ge=0)
    finalizing_seconds: float = Field(default=1.0, ge=0)
    cancelling_seconds: float = Field(default=1.0, ge=0)
    fail_custom_id_pattern: str | None = None
    max_upload_bytes: int = Field(default=MAX_UPLOAD_BYTES, gt=0)
    embedding_dimensions: int = Field(default=1024, gt=0)
    callback_deliveries: int = Field(default=1, ge=0, le=10)
    callback_delay: float = Field(default=0.0, ge=0)
    callback_delay_jitter: float = Field(default=0.0, ge=0)
    eventbridge_target: str | None = None

    @field_validator("eventbridge_target")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://\S+$", value):
            raise ValueError("eventbridge_target must be an http(s) URL")
        return value


class Clock:
    """Emulated wall clock: real time scaled by ``time_scale`` plus manual advances."""

    def __init__(self, time_scale: float) -> None:
        self._real0 = time.monotonic()
        self._emu0 = time.time()
        self._scale = time_scale
        self._offset = 0.0

    @property
    def time_scale(self) -> float:
        return self._scale

    def now(self) -> float:
        """Current emulated Unix time in seconds."""
        return self._emu0 + (time.monotonic() - self._real0) * self._scale + self._offset

    def set_scale(self, time_scale: float) -> None:
        """Change the speed from now on without jumping."""
        self._emu0 = self.now() - self._offset
        self._real0 = time.monotonic()
        self._scale = time_scale

    def advance(self, seconds: float) -> None:
        """Jump forward by ``seconds`` of emulated time."""
        self._offset += seconds


@dataclass
class FileRecord:
    """A stored file; ``path`` is where its bytes live on disk."""

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    path: Path
    seq: int
    status: str = "processed"

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": self.status,
            "status_details": None,
        }


@dataclass
class _Run:
    """Open handles of a batch being executed (input read line by line, results appended)."""

    source: IO[bytes]
    output_path: Path
    error_path: Path
    output: IO[bytes] | None = None
    errors: IO[bytes] | None = None
    line_no: int = 0

    def close(self) -> None:
        for handle in (self.source, self.output, self.errors):
            if handle is not None:
                handle.close()


@dataclass
class BatchRecord:
    """A batch and its emulated timeline (``*_at`` are emulated Unix seconds)."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    window_seconds: int
    metadata: dict[str, str] | None
    created: float
    seq: int
    status: str = "validating"
    times: dict[str, float] = field(default_factory=dict)
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    run: _Run | None = None

    def to_api(self) -> dict[str, Any]:
        def stamp(name: str) -> int | None:
            value = self.times.get(name)
            return None if value is None else int(value)

        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created),
            "in_progress_at": stamp("in_progress"),
            "expires_at": stamp("expires"),
            "finalizing_at": stamp("finalizing"),
            "completed_at": stamp("completed"),
            "failed_at": stamp("failed"),
            "expired_at": stamp("expired"),
            "cancelling_at": stamp("cancelling"),
            "cancelled_at": stamp("cancelled"),
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
        }


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


@functools.cache
def _price_table() -> PriceTable:
    """The shipped table: which models think by default (the emulator follows the service)."""
    return load_price_table("cn-beijing")[0]


def _image_size(url: str) -> tuple[int, int] | None:
    """Width and height of a PNG given as a ``data:`` URL (the emulator fetches nothing)."""
    head, _, data = url.partition(",")
    if not head.startswith("data:image/png;base64"):
        return None
    try:
        raw = base64.b64decode(data[:64] + "=" * (-len(data[:64]) % 4), validate=False)
    except ValueError:
        return None
    if raw[:8] != b"\x89PNG\r\n\x1a\n" or raw[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", raw[16:24])
    return width, height


EMULATED_IMAGE_SIZE = (1024, 1024)
"""The size the emulator assumes for an image it is given by URL (it downloads nothing)."""


def image_tokens_of(part: dict[str, Any], model: Any, body: dict[str, Any]) -> int:
    """
    Tokens of one ``image_url`` part, as the Qwen-VL docs count them.

    The image is scaled to multiples of the model's patch (32 px for Qwen3-VL, 28 px otherwise) within
    ``[4, max]`` patches, ``max`` being 16,384 with ``vl_high_resolution_images`` and 1,280 (2,560 for
    Qwen3-VL) by default; each patch is a token, plus 2 for the image's start and end.
    """
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    width, height = (_image_size(url) if isinstance(url, str) else None) or EMULATED_IMAGE_SIZE
    patch = 32 if "qwen3-vl" in str(model) else 28
    max_patches = 16_384 if body.get("vl_high_resolution_images") else 2_560 if patch == 32 else 1_280
    h_bar = max(patch, round(height / patch) * patch)
    w_bar = max(patch, round(width / patch) * patch)
    if h_bar * w_bar > max_patches * patch * patch:
        beta = math.sqrt(height * width / (max_patches * patch * patch))
        h_bar = max(patch, math.floor(height / beta / patch) * patch)
        w_bar = max(patch, math.floor(width / beta / patch) * patch)
    elif h_bar * w_bar < 4 * patch * patch:
        beta = math.sqrt(4 * patch * patch / (height * width))
        h_bar = math.ceil(height * beta / patch) * patch
        w_bar = math.ceil(width * beta / patch) * patch
    return h_bar * w_bar // (patch * patch) + 2


def emulated_embedding(text: str, dimensions: int) -> list[float]:
    """The emulator's vector for ``text``: a deterministic unit vector (rounded to 6 decimals), for tests."""
    raw = b""
    counter = 0
    while len(raw) < dimensions * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [v / 2**32 - 0.5 for v in struct.unpack(f"<{dimensions}I", raw[: dimensions * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


class Emulator:
    """
    The whole emulated service: configuration, clock, stored files and batches.

    :param config: initial configuration; :meth:`reset` returns to it.
    :param root: directory for stored file bytes (a fresh temporary directory by default).
    """

    def __init__(self, config: EmulatorConfig | None = None, root: Path | None = None) -> None:
        self.initial_config = (config or EmulatorConfig()).model_copy()
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="dashscope-emulator-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.callbacks: list[dict[str, Any]] = []
        self._init_state()

    def _init_state(self) -> None:
        self.config = self.initial_config.model_copy()
        self.clock = Clock(self.config.time_scale)
        self.files: dict[str, FileRecord] = {}
        self.batches: dict[str, BatchRecord] = {}
        self.callbacks.clear()
        self._seq = 0

    def reset(self) -> None:
        """Forget every file, batch and callback; restore the initial configuration and clock."""
        for batch in self.batches.values():
            if batch.run is not None:
                batch.run.close()
        for child in self.root.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        self._init_state()

    def close(self) -> None:
        """Release open handles and delete the storage directory if the emulator created it."""
        for batch in self.batches.values():
            if batch.run is not None:
                batch.run.close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Apply configuration changes (validated); a new ``time_scale`` takes effect without a jump."""
        if changes.get("fail_custom_id_pattern"):
            re.compile(changes["fail_custom_id_pattern"])
        updated = self.config.model_validate({**self.config.model_dump(), **changes})
        self.config = updated
        self.clock.set_scale(updated.time_scale)
        return updated

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def now(self) -> float:
        return self.clock.now()

    # Files -------------------------------------------------------------------------------------------

    def new_file_path(self) -> Path:
        return self.root / f"blob-{uuid.uuid4().hex}"

    def add_file(self, file_id: str, path: Path, filename: str, purpose: str) -> FileRecord:
        record = FileRecord(
            id=file_id,
            bytes=path.stat().st_size,
            created_at=int(self.now()),
            filename=filename,
            purpose=purpose,
            path=path,
            seq=self.next_seq(),
        )
        self.files[file_id] = record
        return record

    def delete_file(self, file_id: str) -> None:
        record = self.files.pop(file_id)
        if not any(b.run is not None and b.input_file_id == file_id for b in self.batches.values()):
            record.path.unlink(missing_ok=True)

    # Batches -----------------------------------------------------------------------------------------

    def create_batch(
        self, input_file_id: str, endpoint: str, window: str, window_seconds: int, metadata: dict | None
    ) -> BatchRecord:
        batch = BatchRecord(
            id=f"batch_{uuid.uuid4()}",
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=window,
            window_seconds=window_seconds,
            metadata=metadata,
            created=self.now(),
            seq=self.next_seq(),
        )
        self.batches[batch.id] = batch
        return batch

    def cancel_batch(self, batch: BatchRecord) -> None:
        """Move a running batch to ``cancelling``; results finished so far are kept."""
        if batch.status in ("validating", "in_progress", "finalizing"):
            batch.status = "cancelling"
            batch.times["cancelling"] = self.now()

    # Engine ------------------------------------------------------------------------------------------

    def due_validations(self) -> list[tuple[BatchRecord, FileRecord | None]]:
        """Batches whose ``validating`` phase is over, each with its input file (``None`` if deleted)."""
        now = self.now()
        return [
            (batch, self.files.get(batch.input_file_id))
            for batch in self.batches.values()
            if batch.status == "validating" and now >= batch.created + self.config.validating_seconds
        ]

    @staticmethod
    def check_input(record: FileRecord | None, endpoint: str) -> ValidationReport | None:
        """Run the service-side validation of an input file (blocking; fine in a worker thread)."""
        if record is None:
            return None
        try:
            # body rules fail a request alone (in the error file, see _run_request), not the file
            return validate_jsonl(record.path, endpoint=endpoint, name=record.filename, body_rules=False)
        except FileNotFoundError:
            return None

    def apply_validation(self, batch: BatchRecord, report: ValidationReport | None) -> None:
        """Fail the batch with the report's violations, or start it; ignored if the batch moved on."""
        if self.batches.get(batch.id) is not batch or batch.status != "validating":
            return
        at = batch.created + self.config.validating_seconds
        record = self.files.get(batch.input_file_id)
        if report is None or record is None:
            batch.errors = [
                {"code": "file_not_found", "message": "input file was deleted", "param": None, "line": None}
            ]
            self._finish(batch, "failed", at)
        elif not report.ok:
            batch.errors = [v.model_dump() for v in report.violations]
            self._finish(batch, "failed", at)
        else:
            batch.total = report.line_count
            batch.status = "in_progress"
            batch.times["in_progress"] = at
            batch.times["expires"] = batch.created + batch.window_seconds
            batch.run = _Run(
                source=record.path.open("rb"),
                output_path=self.new_file_path(),
                error_path=self.new_file_path(),
            )

    def step(self, budget: int = 500) -> tuple[bool, list[BatchRecord]]:
        """
        Move every validated batch along the emulated timeline.

        :param budget: maximum requests executed per batch in this call.
        :return: whether due work is left over, and the batches that just reached a terminal status.
        """
        now = self.now()
        pending = False
        finished: list[BatchRecord] = []
        for batch in list(self.batches.values()):
            if batch.status in TERMINAL or batch.status == "validating":
                continue
            try:
                pending = self._advance_batch(batch, now, budget) or pending
            except Exception as exc:
                batch.errors = [
                    {
                        "code": "InternalError",
                        "message": f"emulator error: {exc!r}",
                        "param": None,
                        "line": None,
                    }
                ]
                self._finish(batch, "failed", now)
            if batch.status in TERMINAL:
                finished.append(batch)
        return pending, finished

    def _advance_batch(self, batch: BatchRecord, now: float, budget: int) -> bool:
        cfg = self.config
        if batch.status == "in_progress":
            started = batch.times["in_progress"]
            deadline = batch.times["expires"]
            due_lines = min(batch.total, int((min(now, deadline) - started) * cfg.processing_rate))
            run = batch.run
            assert run is not None
            todo = due_lines - run.line_no
            self._execute(batch, min(todo, budget))
            if todo > budget:
                return True
            if run.line_no >= batch.total:
                batch.status = "finalizing"
                batch.times["finalizing"] = started + batch.total / cfg.processing_rate
            elif now >= deadline:
                self._finish(batch, "expired", deadline)
                return False
        if batch.status == "finalizing":
            due = batch.times["finalizing"] + cfg.finalizing_seconds
            if now >= due:
                self._finish(batch, "completed", due)
        elif batch.status == "cancelling":
            due = batch.times["cancelling"] + cfg.cancelling_seconds
            if now >= due:
                self._finish(batch, "cancelled", due)
        return False

    def _execute(self, batch: BatchRecord, count: int) -> None:
        run = batch.run
        assert run is not None
        pattern = (
            re.compile(self.config.fail_custom_id_pattern) if self.config.fail_custom_id_pattern else None
        )
        done = 0
        while done < count:
            raw = run.source.readline()
            if not raw:
                break
            if not raw.strip():
                continue
            done += 1
            run.line_no += 1
            ok, result = self._run_request(json.loads(raw), pattern)
            if ok:
                if run.output is None:
                    run.output = run.output_path.open("wb")
                handle = run.output
                batch.completed += 1
            else:
                if run.errors is None:
                    run.errors = run.error_path.open("wb")
                handle = run.errors
                batch.failed += 1
            handle.write(json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")

    def _run_request(self, line: dict[str, Any], pattern: re.Pattern[str] | None) -> tuple[bool, dict]:
        custom_id = str(line.get("custom_id"))
        body = line.get("body") or {}
        request_id = str(uuid.uuid4())
        marker = body.get(FAIL_MARKER)
        if not marker and (broken := next(body_violations(line.get("url"), body.get("model"), body), None)):
            marker = {"status_code": 400, "code": "InvalidParameter", "message": broken[1]}
        if marker or (pattern is not None and pattern.search(custom_id)):
            spec = marker if isinstance(marker, dict) else {}
            status = int(spec.get("status_code", 400))
            code = str(spec.get("code", "InvalidParameter"))
            message = str(spec.get("message", f"Emulated failure of request {custom_id}."))
            error = {"code": code, "message": message}
            return False, {
                "id": request_id,
                "custom_id": custom_id,
                "response": {
                    "status_code": status,
                    "request_id": request_id,
                    "body": {"error": {**error, "type": "invalid_request_error", "param": None}},
                },
                "error": error,
            }
        created = int(self.now())
        model = body.get("model")
        if line.get("url") == "/v1/embeddings":
            response_body = self._embedding(body, model, request_id)
        elif model == TEST_MODEL:
            response_body = {
                "created": created,
                "usage": {"completion_tokens": 6, "prompt_tokens": 20, "total_tokens": 26},
                "model": model,
                "id": f"chatcmpl-{uuid.uuid4()}",
                "choices": [
                    {
                        "finish_reason": "stop",
                        "index": 0,
                        "message": {"content": structured_answer(body) or "This is a test result."},
                    }
                ],
                "object": "chat.completion",
            }
        else:
            response_body = self._chat(body, model, created, request_id)
        return True, {
            "id": request_id,
            "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": request_id, "body": response_body},
            "error": None,
        }

    @staticmethod
    def _chat(body: dict[str, Any], model: Any, created: int, request_id: str) -> dict[str, Any]:
        messages = body.get("messages") or []
        prompt = " ".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
        last_user = next(
            (
                _text_of(m.get("content"))
                for m in reversed(messages)
                if isinstance(m, dict) and m.get("role") == "user"
            ),
            "",
        )
        digest = hashlib.sha256(f"{model}\n{prompt}".encode()).hexdigest()[:8]
        content = structured_answer(body) or f"Emulated reply ({digest}) to: {last_user[:200]}"
        finish_reason = "stop"
        max_tokens = body.get("max_tokens")
        completion_tokens = count_text(content)
        if isinstance(max_tokens, int) and 0 < max_tokens < completion_tokens:  # cut as the service cuts
            content, finish_reason, completion_tokens = content[: max_tokens * 4], "length", max_tokens
        message = {"role": "assistant", "content": content}
        usage: dict[str, Any] = {
            "completion_tokens": completion_tokens,
            "prompt_tokens": count_chat_prompt(messages, body.get("tools")),
        }
        thinking = body.get("enable_thinking")
        if _price_table().thinking(str(model), thinking if isinstance(thinking, bool) else None):
            message["reasoning_content"] = reasoning = f"Emulated reasoning ({digest})."
            reasoning_tokens = count_text(reasoning)
            usage["completion_tokens"] += reasoning_tokens
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        image_tokens = sum(
            image_tokens_of(part, model, body)
            for m in messages
            if isinstance(m, dict) and isinstance(m.get("content"), list)
            for part in m["content"]
            if isinstance(part, dict) and part.get("type") == "image_url"
        )
        if image_tokens:
            text_tokens = usage["prompt_tokens"]
            usage["prompt_tokens"] += image_tokens
            usage["prompt_tokens_details"] = {"image_tokens": image_tokens, "text_tokens": text_tokens}
        usage["total_tokens"] = usage["completion_tokens"] + usage["prompt_tokens"]
        return {
            "created": created,
            "usage": usage,
            "model": model,
            "id": f"chatcmpl-{request_id}",
            "choices": [{"finish_reason": finish_reason, "index": 0, "message": message}],
            "object": "chat.completion",
        }

    def _embedding(self, body: dict[str, Any], model: Any, request_id: str) -> dict[str, Any]:
        inputs = body.get("input")
        texts = inputs if isinstance(inputs, list) else [inputs]
        dimensions = int(body.get("dimensions") or self.config.embedding_dimensions)
        tokens = sum(count_text(str(t)) for t in texts)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": emulated_embedding(str(text), dimensions)}
                for i, text in enumerate(texts)
            ],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "id": request_id,
        }

    def _finish(self, batch: BatchRecord, status: str, at: float) -> None:
        batch.status = status
        batch.times[status] = at
        run = batch.run
        if run is None:
            return
        run.close()
        batch.run = None
        base = batch.id.removeprefix("batch_")
        if run.output is not None:
            batch.output_file_id = f"file-batch_output-{base}"
            self.add_file(batch.output_file_id, run.output_path, f"{batch.id}_success.jsonl", "batch_output")
        if run.errors is not None:
            batch.error_file_id = f"file-batch_error-{base}"
            self.add_file(batch.error_file_id, run.error_path, f"{batch.id}_error.jsonl", "batch_output")
