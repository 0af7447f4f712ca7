"""Helpers for the emulator tests: an authenticated httpx client, JSONL builders, error assertions."""

from __future__ import annotations

import json
from typing import Any

import httpx
from dashscope_batch_emulator import EmulatorServer

CHAT = "/v1/chat/completions"
TEST_ENDPOINT = "/v1/chat/ds-test"


def request_line(custom_id: str, *, model: str = "qwen-plus", url: str = CHAT, **body: Any) -> dict[str, Any]:
    """One input line; chat by default."""
    payload = {"model": model, "messages": [{"role": "user", "content": f"question {custom_id}"}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": payload}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def ds_test_lines(n: int) -> bytes:
    return jsonl([request_line(str(i), model="batch-test-model", url=TEST_ENDPOINT) for i in range(n)])


def read_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


class Api:
    """Thin authenticated client for the emulated API."""

    def __init__(self, emulator: EmulatorServer) -> None:
        self.emulator = emulator
        self.http = httpx.Client(
            base_url=emulator.base_url, headers={"Authorization": f"Bearer {emulator.api_key}"}, timeout=60
        )

    def upload(self, content: bytes, filename: str = "input.jsonl") -> dict[str, Any]:
        response = self.http.post("/files", files={"file": (filename, content)}, data={"purpose": "batch"})
        assert response.status_code == 200, response.text
        return response.json()

    def create(self, file_id: str, endpoint: str = CHAT, window: str = "24h", **extra: Any) -> dict[str, Any]:
        body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": window, **extra}
        response = self.http.post("/batches", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def batch(self, batch_id: str) -> dict[str, Any]:
        response = self.http.get(f"/batches/{batch_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def run(
        self, content: bytes, endpoint: str = CHAT, seconds: float = 3600, **extra: Any
    ) -> dict[str, Any]:
        """Upload, create, advance the clock far enough, and return the final batch."""
        batch = self.create(self.upload(content)["id"], endpoint, **extra)
        self.emulator.advance(seconds)
        return self.batch(batch["id"])

    def content(self, file_id: str) -> bytes:
        response = self.http.get(f"/files/{file_id}/content")
        assert response.status_code == 200, response.text
        return response.content


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert a DashScope-shaped error body and return its ``error`` object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]
