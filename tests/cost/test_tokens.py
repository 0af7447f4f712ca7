"""Offline token counts: the tokenizer loaded once (or its absence reported once), the approximation's
character classes and rounding, and the chat template's overhead per message, role and tool."""

from __future__ import annotations

import json
import re
import sys

import pytest

from airflow_provider_dashscope_batch.cost import tokens
from airflow_provider_dashscope_batch.cost.tokens import (
    MESSAGE_OVERHEAD,
    REPLY_OVERHEAD,
    TokenizerUnavailable,
    approximate_tokens,
    char_classes,
    count_chat_prompt,
    count_text,
    load_tokenizer,
    message_texts,
)


@pytest.fixture
def without_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_encoder", None)
    monkeypatch.setattr(tokens, "_unavailable", "No module named 'tiktoken'")


def test_template_overheads() -> None:
    assert (MESSAGE_OVERHEAD, REPLY_OVERHEAD) == (4, 3)


@pytest.mark.parametrize(
    ("text", "classes"),
    [("", (0, 0.0)), ("abc", (3, 0.0)), ("a你好", (1.0, 2.0)), ("é", (0.5, 0.5)), ("\ud800", (0.0, 1.0))],
)
def test_char_classes_from_the_utf8_length(text: str, classes: tuple[float, float]) -> None:
    assert char_classes(text) == classes


def test_the_approximation_is_ascii_over_4_and_other_over_1_5() -> None:
    assert approximate_tokens("a" * 8 + "你" * 3) == pytest.approx(2 + 2)
    assert approximate_tokens("") == 0


@pytest.mark.usefixtures("without_tokenizer")
@pytest.mark.parametrize(("text", "count"), [("", 0), ("a", 1), ("a" * 10, 2), ("a" * 14, 4), ("你" * 3, 2)])
def test_count_text_without_the_tokenizer_rounds_and_counts_text_as_at_least_one(
    text: str, count: int
) -> None:
    assert count_text(text) == count


def test_count_text_with_the_tokenizer() -> None:
    encode = load_tokenizer()
    assert load_tokenizer() is encode  # loaded once
    assert count_text("Hello!") == encode("Hello!") == 2
    assert count_text("<|im_end|>") == encode("<|im_end|>") > 1  # special-token text counts as plain text


@pytest.mark.parametrize(
    ("content", "texts"),
    [
        ("hi", ["hi"]),
        ([{"type": "text", "text": "a"}, {"text": "b"}, "c", {"text": 5}, {"image_url": {}}], ["a", "b"]),
        ({"text": "a"}, []),
        (None, []),
    ],
)
def test_message_texts(content: object, texts: list[str]) -> None:
    assert message_texts(content) == texts


@pytest.mark.usefixtures("without_tokenizer")
def test_a_chat_prompt_without_the_tokenizer() -> None:
    messages = [{"role": "user", "content": "a" * 8}, "not a message", {"content": "b" * 4}, {"role": 5}]
    tools = [{"name": "f" * 10}]
    tool_tokens = round(len(json.dumps(tools)) / 4)
    assert count_chat_prompt(messages, tools) == 3 + (4 + 1 + 2) + (4 + 1) + 4 + tool_tokens
    assert count_chat_prompt([]) == 3
    assert count_chat_prompt([], tools=[]) == 3 + 1  # "[]" is text: at least one token
    assert (
        count_chat_prompt([{"role": "user", "content": "你"}], tools=["你好"]) == 3 + 4 + 1 + 1 + 2
    )  # 4/4 + 2/1.5


def test_a_chat_prompt_with_the_tokenizer_counts_roles_and_unicode_tools() -> None:
    encode = load_tokenizer()
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "hi"},
    ]
    tools = [{"description": "天气"}]
    assert count_chat_prompt(messages, tools) == (
        3
        + 4
        + encode("system")
        + encode("You are a helpful assistant.")
        + 4
        + encode("user")
        + encode("hi")
        + encode(json.dumps(tools, ensure_ascii=False))
    )


def test_an_absent_tokenizer_is_reported_once_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_encoder", None)
    monkeypatch.setattr(tokens, "_unavailable", None)
    monkeypatch.setitem(sys.modules, "dashscope.tokenizers", None)  # the import fails
    message = (
        "the Qwen tokenizer is not available (ModuleNotFoundError: import of dashscope.tokenizers halted; "
        "None in sys.modules); install the 'tokenizer' extra: "
        "pip install 'airflow-provider-dashscope-batch[tokenizer]'"
    )
    with pytest.raises(TokenizerUnavailable, match=f"^{re.escape(message)}$"):
        load_tokenizer()
    monkeypatch.delitem(
        sys.modules, "dashscope.tokenizers"
    )  # installed now: still unavailable in this process
    with pytest.raises(TokenizerUnavailable, match=f"^{re.escape(message)}$"):
        load_tokenizer()
    assert count_text("abcd") == 1  # the approximation stands in
    assert isinstance(TokenizerUnavailable(message), RuntimeError)


def test_the_tokenizer_loads_after_a_fresh_start(monkeypatch: pytest.MonkeyPatch) -> None:
    load_tokenizer()  # the vocabulary is cached by the SDK; only our wrapper is rebuilt
    monkeypatch.setattr(tokens, "_encoder", None)
    monkeypatch.setattr(tokens, "_unavailable", None)
    encode = load_tokenizer()
    assert tokens._encoder is encode
    assert encode("Hello!") == 2
    assert tokens._unavailable is None


def test_a_role_counts_its_tokens_with_the_tokenizer_and_one_without(monkeypatch: pytest.MonkeyPatch) -> None:
    encode = load_tokenizer()
    role = "a reviewer of quarterly results"
    assert encode(role) > 1
    assert count_chat_prompt([{"role": role}]) == 3 + 4 + encode(role)
    monkeypatch.setattr(tokens, "_encoder", None)
    monkeypatch.setattr(tokens, "_unavailable", "No module named 'tiktoken'")
    assert count_chat_prompt([{"role": role}]) == 3 + 4 + 1  # the approximation: a role is one token
