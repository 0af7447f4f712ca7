"""
The preflight validator against the emulator's own copy of the service's documented rules.

The two are written separately (the emulator's from the service's pages,
:mod:`dashscope_batch_emulator.rules`), so a rule the provider gets wrong shows up here as a
disagreement. Where the preflight is deliberately stricter than any page states, the case says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dashscope_batch_emulator.rules import check_file, request_error

from airflow_provider_dashscope_batch.validation.bodies import body_violations
from airflow_provider_dashscope_batch.validation.rules import validate_jsonl

CHAT = "/v1/chat/completions"
TEST = "/v1/chat/ds-test"


def line(custom_id: Any = "1", *, model: str = "qwen-plus", url: str = CHAT, **body: Any) -> bytes:
    request = {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": {"model": model, "messages": [{"role": "user", "content": "hi"}], **body},
    }
    return json.dumps(request).encode() + b"\n"


def both(tmp_path: Path, content: bytes, endpoint: str) -> tuple[set, set]:
    """``(line, code)`` of every rule broken, as the preflight and as the emulator see the file."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    report = validate_jsonl(path, endpoint=endpoint, max_violations=1000)
    emulated = check_file(path, endpoint)
    return {(v.line, v.code) for v in report.violations}, {(e.line, e.code) for e in emulated.errors}


@pytest.mark.parametrize(
    ("content", "endpoint", "broken"),
    [
        pytest.param(line("1") + line("2"), CHAT, set(), id="valid"),
        pytest.param(line("1") + line("1"), CHAT, {(2, "duplicate_custom_id")}, id="duplicate-id"),
        pytest.param(
            line("1") + line("2", model="qwen-max"), CHAT, {(2, "mismatched_model")}, id="two-models"
        ),
        pytest.param(
            line("1", enable_thinking=True) + line("2", enable_thinking=False),
            CHAT,
            {(2, "mismatched_thinking_mode")},
            id="two-thinking-modes",
        ),
        pytest.param(b'{"custom_id": "1", nope\n', CHAT, {(1, "invalid_json_line")}, id="not-json"),
        pytest.param(b"[1, 2]\n", CHAT, {(1, "invalid_json_line")}, id="not-an-object"),
        pytest.param(b'{"custom_id": "\xff"}\n', CHAT, {(1, "invalid_encoding")}, id="not-utf8"),
        pytest.param(line("1", url="/v1/embeddings"), CHAT, {(1, "url_mismatch")}, id="url-mismatch"),
        pytest.param(
            line("1") + line("2", pad="p" * (6 << 20)), CHAT, {(2, "line_too_large")}, id="line-over-6mb"
        ),
        pytest.param(b"", CHAT, {(None, "empty_file")}, id="empty"),
        pytest.param(
            b"".join(line(str(i), model="batch-test-model", url=TEST) for i in range(101)),
            TEST,
            {(None, "too_many_tasks")},
            id="test-model-over-100",
        ),
        pytest.param(
            b"".join(line(str(i), model="batch-test-model", url=TEST, pad="p" * 20_000) for i in range(60)),
            TEST,
            {(None, "file_too_large")},
            id="test-model-over-1mb",
        ),
    ],
)
def test_documented_file_rules_agree(tmp_path, content, endpoint, broken):
    preflight, service = both(tmp_path, content, endpoint)
    assert service == broken
    assert preflight == broken


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(line("1") + line("2", enable_thinking=False), id="thinking-unset-then-false"),
        pytest.param(line("1", response_format={"type": "xml"}), id="response-format"),
    ],
)
def test_the_preflight_is_stricter_than_the_pages(tmp_path, content):
    """No stored page states these rules: the preflight refuses what the emulated service runs."""
    preflight, service = both(tmp_path, content, CHAT)
    assert preflight
    assert service == set()


def test_a_custom_id_over_256_characters_runs_and_the_preflight_only_warns(tmp_path):
    """No stored page states a custom_id limit: the emulated service runs it, the preflight warns."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(line("x" * 300))
    report = validate_jsonl(path, endpoint=CHAT, max_violations=1000)
    assert report.ok
    assert [w.code for w in report.warnings] == ["custom_id_too_long"]
    assert not check_file(path, CHAT).errors


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/v1/embeddings", {"model": "text-embedding-v4", "input": [f"t{i}" for i in range(11)]}),
        ("/v1/embeddings", {"model": "text-embedding-v2", "input": [f"t{i}" for i in range(26)]}),
        ("/v1/embeddings", {"model": "text-embedding-v4", "input": "t", "dimensions": 100}),
        ("/v1/embeddings", {"model": "text-embedding-v1", "input": "t", "dimensions": 1536}),
        ("/v1/embeddings", {"model": "text-embedding-v4", "input": []}),
        (CHAT, {"model": "qwen-plus"}),
        (CHAT, {"model": "qwen-plus", "messages": []}),
    ],
)
def test_documented_request_rules_agree(url, body):
    assert request_error(url, body) is not None
    assert next(body_violations(url, body["model"], body), None) is not None


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/v1/embeddings", {"model": "text-embedding-v4", "input": [f"t{i}" for i in range(10)]}),
        ("/v1/embeddings", {"model": "text-embedding-v3", "input": "t", "dimensions": 64}),
        ("/v1/embeddings", {"model": "some-new-embedding", "input": ["t"] * 50}),  # unknown model: no error
        (CHAT, {"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]}),
    ],
)
def test_valid_requests_pass_both(url, body):
    assert request_error(url, body) is None
    assert list(body_violations(url, body["model"], body)) == []
