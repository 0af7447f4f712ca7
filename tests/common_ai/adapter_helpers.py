"""What the common.ai adapter's tests share: the key and fingerprint, an output type, request helpers.

Imported after the test modules' ``importorskip`` of common.ai (and lazily by conftest.py's fixture).
"""

from __future__ import annotations

import json
from pathlib import Path

from airflow.providers.common.ai.batch.output_schema import build_output_spec
from pydantic import BaseModel

from airflow_provider_dashscope_batch.client import DashScopeClient

KEY16 = "0123456789abcdef"
FINGERPRINT = "f" * 64


class Verdict(BaseModel):
    label: str
    score: float


def normalized(requests):
    """The request dicts common.ai's operator hands adapters (a bare string is a prompt)."""
    return [{"prompt": r} if isinstance(r, str) else r for r in requests]


class RecordingClient(DashScopeClient):
    """The real client, keeping a copy of every uploaded input file (the service never returns them)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.uploads: list[list[dict]] = []

    def upload_file_receipt(self, file, **kwargs):
        path = Path(getattr(file, "name", file))  # a path, or a stream opened on one
        self.uploads.append([json.loads(line) for line in path.read_text().splitlines()])
        return super().upload_file_receipt(file, **kwargs)


def validate(adapter, requests, *, model="qwen-plus", output_type=Verdict, **kwargs):
    """``validate_requests`` as common.ai's operator calls it."""
    adapter.validate_requests(
        normalized(requests),
        model=model,
        output_spec=build_output_spec(output_type),
        idempotency_key=KEY16,
        **kwargs,
    )
