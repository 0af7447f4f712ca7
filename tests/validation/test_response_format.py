"""``body.response_format`` against the structured-output shapes the service documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dashscope_batch.validation.rules import validate_jsonl

SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
FORMAT = "invalid_response_format"


def _line(custom_id: str, response_format: Any, content: str = "hi") -> str:
    body = {"model": "qwen-plus", "messages": [{"role": "user", "content": content}]}
    body["response_format"] = response_format
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def _violations(tmp_path: Path, *lines: str) -> list[tuple[int | None, str, str | None, str]]:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(f"{line}\n" for line in lines))
    return [(v.line, v.code, v.param, v.message) for v in validate_jsonl(path).violations]


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "text"},
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA}},
        {"type": "json_schema", "json_schema": {"name": "v-1_x", "schema": {}, "strict": True}},
    ],
)
def test_the_documented_shapes_pass(tmp_path, response_format):
    assert _violations(tmp_path, _line("1", response_format), _line("2", response_format)) == []


RF = "body.response_format"
SPEC = f"{RF}.json_schema"
NAME_RULE = f"{SPEC}.name must be 1 to 64 of a-z, A-Z, 0-9, _ and -, got"
TEXT_HINT = " (a schema held as text: parse it with json.loads first)"


@pytest.mark.parametrize(
    ("response_format", "param", "message"),
    [
        ("json_object", RF, f"{RF} must be a JSON object, got a JSON string"),
        (["json_object"], RF, f"{RF} must be a JSON object, got a JSON array"),
        ({}, f"{RF}.type", f'{RF}.type must be one of "json_object", "json_schema", "text", got missing'),
        (
            {"type": "json"},
            f"{RF}.type",
            f'{RF}.type must be one of "json_object", "json_schema", "text", got "json"',
        ),
        (
            {"type": "文本"},
            f"{RF}.type",
            f'{RF}.type must be one of "json_object", "json_schema", "text", got "文本"',
        ),
        (
            {"type": None},
            f"{RF}.type",
            f'{RF}.type must be one of "json_object", "json_schema", "text", got null',
        ),
        ({"type": "json_schema"}, SPEC, f'{SPEC} must be an object with "name" and "schema", got missing'),
        (
            {"type": "json_schema", "json_schema": "verdict"},
            SPEC,
            f'{SPEC} must be an object with "name" and "schema", got a JSON string',
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "verdict"}},
            f"{SPEC}.schema",
            f"{SPEC}.schema is missing; give the JSON Schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "verdict", "schema": json.dumps(SCHEMA)}},
            f"{SPEC}.schema",
            f"{SPEC}.schema must be a JSON Schema object, got a JSON string{TEXT_HINT}",
        ),
        (  # only a schema held as text gets the hint
            {"type": "json_schema", "json_schema": {"name": "verdict", "schema": 1}},
            f"{SPEC}.schema",
            f"{SPEC}.schema must be a JSON Schema object, got a JSON number",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "verdict", "schema": None}},
            f"{SPEC}.schema",
            f"{SPEC}.schema must be a JSON Schema object, got a JSON null",
        ),
        ({"type": "json_schema", "json_schema": {"schema": SCHEMA}}, f"{SPEC}.name", f"{NAME_RULE} missing"),
        (
            {"type": "json_schema", "json_schema": {"name": "my schema", "schema": SCHEMA}},
            f"{SPEC}.name",
            f'{NAME_RULE} "my schema"',
        ),
        (  # non-ASCII shown as written, not as \u escapes
            {"type": "json_schema", "json_schema": {"name": "判定", "schema": SCHEMA}},
            f"{SPEC}.name",
            f'{NAME_RULE} "判定"',
        ),
        (
            {"type": "json_schema", "json_schema": {"name": 7, "schema": SCHEMA}},
            f"{SPEC}.name",
            f"{NAME_RULE} 7",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "", "schema": SCHEMA}},
            f"{SPEC}.name",
            f'{NAME_RULE} ""',
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "n" * 65, "schema": SCHEMA}},
            f"{SPEC}.name",
            f'{NAME_RULE} "{"n" * 65}"',
        ),
        (  # a long name is cut at 80 characters of its JSON text
            {"type": "json_schema", "json_schema": {"name": "x" * 200, "schema": SCHEMA}},
            f"{SPEC}.name",
            f'{NAME_RULE} "{"x" * 79}',
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA, "strict": "true"}},
            f"{SPEC}.strict",
            f"{SPEC}.strict must be true or false, got a JSON string",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA, "strict": None}},
            f"{SPEC}.strict",
            f"{SPEC}.strict must be true or false, got a JSON null",
        ),
    ],
)
def test_each_broken_shape_names_its_line_rule_and_field(tmp_path, response_format, param, message):
    good = {"type": "json_object"}
    for read_by in ("fast decoder", "exact JSON parser"):
        content = "hi" if read_by == "fast decoder" else "\\ud800"
        broken = _line("2", response_format, content=content).replace("\\\\ud800", "\\ud800")
        assert "\\\\ud800" not in broken
        assert ("\\ud800" in broken) == (read_by == "exact JSON parser")
        assert _violations(tmp_path, _line("1", good), broken, _line("3", good)) == [
            (2, FORMAT, param, message)
        ]


@pytest.mark.parametrize(
    "json_schema",
    [
        {"name": "n" * 64, "schema": SCHEMA, "strict": False},
        {"name": "A-z_09", "schema": {}},
        {"name": "x"},  # only json_schema formats read json_schema
    ],
    ids=["64-char-name", "name-charset", "ignored-outside-json_schema"],
)
def test_names_up_to_64_and_strict_false_pass(tmp_path, json_schema):
    kind = "json_object" if "schema" not in json_schema else "json_schema"
    response_format = {"type": kind, "json_schema": json_schema}
    assert _violations(tmp_path, _line("1", response_format)) == []


def test_every_violation_of_a_line_is_reported(tmp_path):
    bad = {"type": "json_schema", "json_schema": {"name": "", "schema": "{}"}}
    assert [(v[0], v[2]) for v in _violations(tmp_path, _line("1", bad))] == [
        (1, "body.response_format.json_schema.name"),
        (1, "body.response_format.json_schema.schema"),
    ]


def test_a_line_read_by_the_exact_json_parser_is_checked_too(tmp_path):
    # a lone surrogate escape sends the line to the slow path (strict JSON allows it)
    bad = {"type": "json_schema", "json_schema": {"name": "verdict"}}
    line = _line("1", bad, content="\\ud800")
    assert "\\\\ud800" in line
    line = line.replace("\\\\ud800", "\\ud800")
    assert [(v[0], v[1], v[2]) for v in _violations(tmp_path, line)] == [
        (1, FORMAT, "body.response_format.json_schema.schema")
    ]


def test_the_summary_names_file_line_and_rule(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(_line("1", {"type": "yaml"}) + "\n")
    assert f"in.jsonl line 1: {FORMAT}: body.response_format.type must be one of" in (
        validate_jsonl(path).summary()
    )
