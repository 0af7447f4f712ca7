"""
Emulated service state: clock, files on disk, batches and the engine that moves them along.

What one request is answered is :mod:`~dashscope_batch_emulator.answers`'s.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dashscope_batch_emulator.answers import (
    answer_request,
)
from dashscope_batch_emulator.oss import oss_object
from dashscope_batch_emulator.rules import FileCheck, check_file

__all__ = [
    "MAX_UPLOAD_BYTES",
    "TERMINAL",
    "BatchRecord",
    "Clock",
    "Emulator",
    "EmulatorConfig",
    "FileRecord",
]

MAX_UPLOAD_BYTES = 500 * 1024 * 1024
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


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
    :param region: the region the emulator stands for; OSS inputs are taken in ``cn-beijing`` only.
    :param oss_root: a local directory standing in for OSS: ``oss:<region>:<bucket>/<path>`` and
        ``https://<bucket>.oss-<region>.aliyuncs.com/<path>`` read ``<oss_root>/<bucket>/<path>``
        (``None``: no OSS, such inputs are refused).
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
    region: str = "cn-beijing"
    oss_root: str | None = None

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
        self.oss_inputs: dict[str, FileRecord] = {}  # batch id -> the OSS object it reads
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

    def oss_input(self, input_file_id: str) -> FileRecord | None:
        """
        The OSS object an ``oss:`` identifier or OSS URL names, as a file record (not listed among files).

        :return: ``None`` when ``input_file_id`` is not an OSS input.
        :raises ValueError: naming why the service would refuse it (region, no such object).
        """
        found = oss_object(input_file_id)
        if found is None:
            return None
        bucket, key = found
        if self.config.region != "cn-beijing" or self.config.oss_root is None:
            raise ValueError(
                f"OSS inputs are accepted in the cn-beijing region only (this is {self.config.region}); "
                "upload the file and pass its file id"
            )
        root = Path(self.config.oss_root).resolve()
        path = (root / bucket / key).resolve()
        if root not in path.parents or not path.is_file():
            raise ValueError(f"OSS object {bucket}/{key} does not exist or is not readable")
        size = path.stat().st_size
        return FileRecord(input_file_id, size, int(self.now()), path.name, "batch", path, self.next_seq())

    def input_of(self, batch: BatchRecord) -> FileRecord | None:
        """The input of ``batch``: an uploaded file, or the OSS object it was created from."""
        return self.files.get(batch.input_file_id) or self.oss_inputs.get(batch.id)

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        window: str,
        window_seconds: int,
        metadata: dict | None,
        oss: FileRecord | None = None,
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
        if oss is not None:
            self.oss_inputs[batch.id] = oss
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
            (batch, self.input_of(batch))
            for batch in self.batches.values()
            if batch.status == "validating" and now >= batch.created + self.config.validating_seconds
        ]

    @staticmethod
    def check_input(record: FileRecord | None, endpoint: str) -> FileCheck | None:
        """
        The service's file rules on an input file (blocking; fine in a worker thread).

        Request rules fail a request alone, in the error file (:func:`~.rules.request_error`), not the file.
        """
        if record is None:
            return None
        try:
            return check_file(record.path, endpoint)
        except FileNotFoundError:
            return None

    def apply_validation(self, batch: BatchRecord, report: FileCheck | None) -> None:
        """Fail the batch with the report's violations, or start it; ignored if the batch moved on."""
        if self.batches.get(batch.id) is not batch or batch.status != "validating":
            return
        at = batch.created + self.config.validating_seconds
        record = self.input_of(batch)
        if report is None or record is None:
            batch.errors = [
                {"code": "file_not_found", "message": "input file was deleted", "param": None, "line": None}
            ]
            self._finish(batch, "failed", at)
        elif report.errors:
            batch.errors = [error.to_api() for error in report.errors]
            self._finish(batch, "failed", at)
        else:
            batch.total = report.requests
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
            ok, result = answer_request(
                json.loads(raw),
                pattern,
                now=self.now,
                embedding_dimensions=self.config.embedding_dimensions,
            )
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
