"""Per-endpoint body rules in the preflight: each rule with a breaking input, named by line and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dashscope_batch.validation.rules import validate_jsonl

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}


def chat(**body: Any) -> dict[str, Any]:
    return {"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}], **body}


def embed(**body: Any) -> dict[str, Any]:
    return {"model": "text-embedding-v4", "input": "hello", **body}


def check(tmp_path: Path, url: str, *bodies: dict[str, Any]) -> list[tuple[int | None, str, str | None]]:
    path = tmp_path / "input.jsonl"
    lines = [
        json.dumps({"custom_id": str(i), "method": "POST", "url": url, "body": body}, ensure_ascii=False)
        for i, body in enumerate(bodies, start=1)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = validate_jsonl(path, endpoint=url)
    for violation in report.violations:  # every message names its line and rule
        assert report.format_violation(violation).startswith(
            f"{path} line {violation.line}: {violation.code}: "
        )
    return [(v.line, v.code, v.param) for v in report.violations]


def test_valid_chat_vl_and_embeddings_bodies_pass(tmp_path: Path) -> None:
    vl = {
        "model": "qwen-vl-max",
        "messages": [{"role": "user", "content": [IMAGE, {"type": "text", "text": "?"}]}],
    }
    assert check(tmp_path, CHAT, chat(), chat(temperature=0.2, max_tokens=5)) == []
    assert check(tmp_path, CHAT, vl, {**vl, "model": "qwen-vl-max"}) == []
    tool_turn = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "content": "sunny"},
    ]
    assert check(tmp_path, CHAT, chat(messages=tool_turn)) == []
    texts = [f"text {i}" for i in range(10)]
    assert (
        check(tmp_path, EMBEDDINGS, embed(), embed(input=texts, dimensions=512, encoding_format="float"))
        == []
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"model": "qwen-plus"}, ("missing_messages", "body.messages")),
        (chat(messages=[]), ("invalid_message", "body.messages")),
        (chat(messages="hi"), ("invalid_message", "body.messages")),
        (chat(messages=["hi"]), ("invalid_message", "body.messages[0]")),
        (chat(messages=[{"role": "robot", "content": "hi"}]), ("invalid_message", "body.messages[0].role")),
        (chat(messages=[{"content": "hi"}]), ("invalid_message", "body.messages[0].role")),
        (chat(messages=[{"role": "user"}]), ("invalid_message", "body.messages[0].content")),
        (chat(messages=[{"role": "user", "content": 5}]), ("invalid_message", "body.messages[0].content")),
        (
            chat(messages=[{"role": "user", "content": [{"type": "audio", "audio": "x"}]}]),
            ("invalid_content_part", "body.messages[0].content[0].type"),
        ),
        (
            chat(messages=[{"role": "user", "content": [{"type": "text", "text": 3}]}]),
            ("invalid_content_part", "body.messages[0].content[0].text"),
        ),
        (
            chat(messages=[{"role": "user", "content": [IMAGE]}]),
            ("unsupported_content_part", "body.messages[0].content[0]"),
        ),
    ],
)
def test_chat_rule_broken(tmp_path: Path, body: dict[str, Any], expected: tuple[str, str]) -> None:
    assert check(tmp_path, CHAT, chat(), body) == [(2, *expected)]


def test_image_part_needs_a_url(tmp_path: Path) -> None:
    bad = {"model": "qwen-vl-plus", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}
    assert check(tmp_path, CHAT, bad) == [
        (1, "invalid_content_part", "body.messages[0].content[0].image_url")
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"model": "text-embedding-v4", "messages": [{"role": "user", "content": "hi"}]}, None),
        (embed(input=[f"t{i}" for i in range(50)]), ("too_many_inputs", "body.input")),
        (embed(input=""), ("invalid_input", "body.input")),
        (embed(input=[]), ("invalid_input", "body.input")),
        (embed(input=["ok", 3]), ("invalid_input", "body.input")),
        (embed(dimensions=100), ("invalid_dimensions", "body.dimensions")),
        (embed(dimensions="1024"), ("invalid_dimensions", "body.dimensions")),
        ({**embed(dimensions=2048), "model": "text-embedding-v3"}, ("invalid_dimensions", "body.dimensions")),
        ({**embed(dimensions=1536), "model": "text-embedding-v2"}, ("invalid_dimensions", "body.dimensions")),
    ],
)
def test_embeddings_rule_broken(
    tmp_path: Path, body: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    found = check(tmp_path, EMBEDDINGS, body)
    if expected is None:  # the case: messages and no input
        assert found == [(1, "missing_input", "body.input")]
    else:
        assert found == [(1, *expected)]


@pytest.mark.parametrize(
    ("url", "body", "code", "param"),
    [
        (EMBEDDINGS, embed(encoding_format="base64"), "invalid_encoding_format", "body.encoding_format"),
        (EMBEDDINGS, embed(temperature=0.5), "unsupported_body_field", "body.temperature"),
        (CHAT, chat(input="hello"), "unsupported_body_field", "body.input"),
        (CHAT, chat(dimensions=64), "unsupported_body_field", "body.dimensions"),
    ],
)
def test_rules_no_public_page_states_only_warn(
    tmp_path: Path, url: str, body: dict, code: str, param: str
) -> None:
    """No public page found states these: a warning, not a refusal."""
    path = tmp_path / "input.jsonl"
    path.write_text(json.dumps({"custom_id": "1", "method": "POST", "url": url, "body": body}) + "\n")
    report = validate_jsonl(path)
    assert report.ok
    assert [(w.line, w.code, w.param) for w in report.warnings] == [(1, code, param)]


def test_too_many_inputs_names_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    body = embed(input=[f"t{i}" for i in range(11)])
    path.write_text(json.dumps({"custom_id": "1", "method": "POST", "url": EMBEDDINGS, "body": body}) + "\n")
    (violation,) = validate_jsonl(path).violations
    assert violation.message == "body.input holds 11 texts; text-embedding-v4 takes at most 10 per request"


def test_rules_on_lines_the_fast_decoder_rejects(tmp_path: Path) -> None:
    """A line re-parsed by json (a lone surrogate) gets the same body rules."""
    path = tmp_path / "input.jsonl"
    line = (
        b'{"custom_id":"1","method":"POST","url":"/v1/embeddings",'
        b'"body":{"model":"text-embedding-v4","input":"\\ud800","dimensions":7}}'
    )
    path.write_bytes(line + b"\n")
    assert [(v.code, v.param) for v in validate_jsonl(path).violations] == [
        ("invalid_dimensions", "body.dimensions")
    ]
