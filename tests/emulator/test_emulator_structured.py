"""Structured-output answers of the emulator: JSON valid against the requested schema."""

from __future__ import annotations

import json
from datetime import date, datetime
from enum import Enum
from typing import Literal
from uuid import UUID

import pytest
from dashscope_batch_emulator.structured import minimal_instance, structured_answer
from emulator_helpers import CHAT, TEST_ENDPOINT, jsonl, read_jsonl, request_line
from pydantic import BaseModel, Field, TypeAdapter


class Colour(Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str = Field(min_length=12)
    postcode: str = Field(max_length=4)


class Person(BaseModel):
    name: str
    age: int = Field(gt=17, le=130)
    height: float = Field(ge=1.5, multiple_of=0.25)
    tags: list[str] = Field(min_length=2)
    colour: Colour
    kind: Literal["a", "b"]
    address: Address
    previous: Address | None
    friends: list[Address]
    born: date
    seen: datetime
    id: UUID
    pair: tuple[int, str]
    nickname: str = "n/a"


def schema_of(output_type):
    return {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": TypeAdapter(output_type).json_schema()},
    }


@pytest.mark.parametrize("output_type", [Person, Address, list[int], dict[str, float], int | None, bool])
def test_minimal_instances_validate_against_their_schema(output_type):
    value = minimal_instance(TypeAdapter(output_type).json_schema())
    TypeAdapter(output_type).validate_python(value)


def test_json_schema_requests_get_a_valid_instance():
    Person.model_validate_json(structured_answer({"response_format": schema_of(Person)}))


def test_json_object_requests_get_an_object_and_others_none():
    assert isinstance(json.loads(structured_answer({"response_format": {"type": "json_object"}})), dict)
    assert structured_answer({"response_format": {"type": "text"}}) is None
    assert structured_answer({"messages": []}) is None


@pytest.mark.parametrize(("model", "url"), [("qwen-plus", CHAT), ("batch-test-model", TEST_ENDPOINT)])
def test_batches_answer_structured_requests_with_schema_json(api, model, url):
    lines = [
        request_line("s", model=model, url=url, response_format=schema_of(Address)),
        request_line("t", model=model, url=url),
    ]
    batch = api.run(jsonl(lines), endpoint=url)
    results = {r["custom_id"]: r for r in read_jsonl(api.content(batch["output_file_id"]))}
    structured = results["s"]["response"]["body"]["choices"][0]["message"]["content"]
    Address.model_validate_json(structured)
    text = results["t"]["response"]["body"]["choices"][0]["message"]["content"]
    assert not text.startswith("{")
    if model == "batch-test-model":
        assert text == "This is a test result."


def test_thinking_requests_carry_reasoning_content(api):
    batch = api.run(jsonl([request_line("r", enable_thinking=True), request_line("n", enable_thinking=True)]))
    for result in read_jsonl(api.content(batch["output_file_id"])):
        message = result["response"]["body"]["choices"][0]["message"]
        assert message["reasoning_content"].startswith("Emulated reasoning")
        assert message["content"].startswith("Emulated reply")


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "json_schema": {"name": "address"}},
        {"type": "json_schema", "json_schema": {"name": "address", "schema": '{"type": "object"}'}},
        {"type": "xml"},
    ],
)
def test_a_malformed_response_format_is_no_file_rule(api, response_format):
    """No stored page says the service refuses a file for it (the provider's preflight still does)."""
    lines = [request_line("ok"), request_line("odd", response_format=response_format)]
    batch = api.run(jsonl(lines), endpoint=CHAT, seconds=5)
    assert batch["status"] == "completed", batch["errors"]
    assert batch["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
