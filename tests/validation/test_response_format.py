"""``body.response_format`` against the structured-output shapes the service documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dashscope_batch.validation import validate_jsonl

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


@pytest.mark.parametrize(
    ("response_format", "param", "message"),
    [
        ("json_object", "body.response_format", "must be a JSON object, got a JSON string"),
        ({}, "body.response_format.type", 'must be one of "json_object", "json_schema", "text", got missing'),
        ({"type": "json"}, "body.response_format.type", 'got "json"'),
        (
            {"type": "json_schema"},
            "body.response_format.json_schema",
            'with "name" and "schema", got missing',
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "verdict"}},
            "body.response_format.json_schema.schema",
            "is missing",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "verdict", "schema": json.dumps(SCHEMA)}},
            "body.response_format.json_schema.schema",
            "must be a JSON Schema object, got a JSON string (a schema held as text: parse it",
        ),
        (
            {"type": "json_schema", "json_schema": {"schema": SCHEMA}},
            "body.response_format.json_schema.name",
            "must be 1 to 64 of a-z, A-Z, 0-9, _ and -, got missing",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "my schema", "schema": SCHEMA}},
            "body.response_format.json_schema.name",
            'got "my schema"',
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA, "strict": "true"}},
            "body.response_format.json_schema.strict",
            "must be true or false, got a JSON string",
        ),
    ],
)
def test_each_broken_shape_names_its_line_rule_and_field(tmp_path, response_format, param, message):
    good = {"type": "json_object"}
    ((line, code, got_param, got_message),) = _violations(
        tmp_path, _line("1", good), _line("2", response_format), _line("3", good)
    )
    assert (line, code, got_param) == (2, FORMAT, param)
    assert message in got_message


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
