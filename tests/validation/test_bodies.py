"""The per-endpoint body rules, called directly: each rule's exact code, message and param, both sides of
every per-model limit, and which models read images."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_dashscope_batch.catalog import shipped_catalog
from airflow_provider_dashscope_batch.validation.bodies import EMBEDDINGS_ENDPOINT, body_violations

CHAT = "/v1/chat/completions"
TEST_CHAT = "/v1/chat/ds-test"
ROLES = "assistant, system, tool, user"
CATALOG_HINT = (
    "use a model that reads it (docs: Models), or override the model's modalities in the connection extra "
    "'models'"
)


def rules(url: Any, model: Any, body: dict[str, Any]) -> list[tuple[str, str, str]]:
    return list(body_violations(url, model, body))


def chat(*messages: Any, **fields: Any) -> dict[str, Any]:
    return {"model": "qwen-plus", "messages": list(messages), **fields}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


IMAGE = {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}
VIDEO = {"type": "video", "video": ["a.jpg", "b.jpg"]}


@pytest.mark.parametrize(
    ("model", "image", "video"),
    [
        ("qwen3.6-plus", True, True),  # a batch vision model of the newest guide
        ("qwen3.7-plus", True, True),
        ("qwen3.5-flash", True, True),
        ("qwen3-vl-flash", True, True),
        ("qwen-vl-ocr", True, False),
        ("qwen-plus", False, False),
        ("qwen3.7-max", False, False),
        ("qwen9-plus", True, True),  # not in the catalog: not checked
    ],
)
def test_image_and_video_parts_follow_the_catalog(model, image, video):
    assert (rules(CHAT, model, chat(user([IMAGE, {"type": "text", "text": "what"}]))) == []) is image
    assert (rules(CHAT, model, chat(user([VIDEO, {"type": "text", "text": "what"}]))) == []) is video


def test_a_catalog_override_lets_a_model_read_images():
    catalog = shipped_catalog().with_overrides({"qwen-plus": {"modalities": ["image"]}})
    body = chat(user([IMAGE]))
    assert list(body_violations(CHAT, "qwen-plus", body, catalog)) == []
    assert rules(CHAT, "qwen-plus", body) != []


def test_embedding_limits_come_from_the_catalog():
    assert shipped_catalog().get("text-embedding-v4").embedding.max_inputs == 10
    assert shipped_catalog().get("text-embedding-v1").embedding.dimensions == ()
    assert shipped_catalog().get("text-embedding-v9") is None


@pytest.mark.parametrize(
    "body",
    [
        chat(user("hi")),
        chat({"role": "system", "content": "be brief"}, user([{"type": "text", "text": "hi"}])),
        chat(user("hi"), {"role": "assistant", "content": None}, {"role": "tool", "content": "42"}),
        chat(user([{"type": "text", "text": ""}])),
    ],
)
def test_valid_chat_bodies(body):
    assert rules(CHAT, "qwen-plus", body) == []
    assert rules(TEST_CHAT, "batch-test-model", body) == []


def test_image_parts_only_for_vision_models():
    image = {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}
    body = chat(user([{"type": "text", "text": "what is it"}, image, {"type": "video", "video": ["a.jpg"]}]))
    assert rules(CHAT, "qwen3.6-plus", body) == []
    assert rules(CHAT, "qwen-plus", body) == [
        (
            "unsupported_content_part",
            "body.messages[0].content[1] is an image_url part, but the model catalog says qwen-plus reads "
            f"text only; {CATALOG_HINT}",
            "body.messages[0].content[1]",
        ),
        (
            "unsupported_content_part",
            "body.messages[0].content[2] is an video part, but the model catalog says qwen-plus reads "
            f"text only; {CATALOG_HINT}",
            "body.messages[0].content[2]",
        ),
    ]
    assert rules(CHAT, "qwen-vl-ocr", body) == [
        (
            "unsupported_content_part",
            "body.messages[0].content[2] is an video part, but the model catalog says qwen-vl-ocr reads "
            f"image, text only; {CATALOG_HINT}",
            "body.messages[0].content[2]",
        )
    ]
    assert rules(CHAT, None, body) == []  # no model: nothing the catalog could check


@pytest.mark.parametrize(
    ("image_url", "ok"),
    [
        ({"url": "data:image/png;base64,AAAA"}, True),
        ("https://x/cat.png", True),  # the bare string form
        ({"url": ""}, False),
        ({"uri": "https://x"}, False),
        (None, False),
        ({"url": 7}, False),
    ],
)
def test_an_image_part_needs_a_url(image_url, ok):
    body = chat(user([{"type": "image_url", "image_url": image_url}]))
    expected = [
        (
            "invalid_content_part",
            'body.messages[0].content[0].image_url must be {"url": "<http(s) or data: URL>"}',
            "body.messages[0].content[0].image_url",
        )
    ]
    assert rules(CHAT, "qwen-vl-plus", body) == ([] if ok else expected)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"model": "qwen-plus"},
            (
                "missing_messages",
                "body.messages is missing; a chat request needs a list of messages",
                "body.messages",
            ),
        ),
        (chat(), ("invalid_message", "body.messages must be a non-empty list of messages", "body.messages")),
        (
            {"model": "qwen-plus", "messages": {"role": "user"}},
            ("invalid_message", "body.messages must be a non-empty list of messages", "body.messages"),
        ),
        (
            chat("hi"),
            (
                "invalid_message",
                "body.messages[0] must be an object with role and content",
                "body.messages[0]",
            ),
        ),
        (
            chat({"content": "hi"}),
            (
                "invalid_message",
                f"body.messages[0].role must be one of {ROLES}, got missing",
                "body.messages[0].role",
            ),
        ),
        (
            chat({"role": "User", "content": "hi"}),
            (
                "invalid_message",
                f'body.messages[0].role must be one of {ROLES}, got "User"',
                "body.messages[0].role",
            ),
        ),
        (
            chat({"role": None, "content": "hi"}),
            (
                "invalid_message",
                f"body.messages[0].role must be one of {ROLES}, got null",
                "body.messages[0].role",
            ),
        ),
        (
            chat({"role": "user"}),
            (
                "invalid_message",
                "body.messages[0].content must be a string or a non-empty list of parts, got missing",
                "body.messages[0].content",
            ),
        ),
        (
            chat({"role": "user", "content": None}),  # only an assistant message may have no content
            (
                "invalid_message",
                "body.messages[0].content must be a string or a non-empty list of parts, got null",
                "body.messages[0].content",
            ),
        ),
        (
            chat(user([])),
            (
                "invalid_message",
                "body.messages[0].content must be a string or a non-empty list of parts, got []",
                "body.messages[0].content",
            ),
        ),
        (
            chat(user({"text": "x" * 100})),  # a long value is cut at 40 characters
            (
                "invalid_message",
                'body.messages[0].content must be a string or a non-empty list of parts, got {"text": "'
                + "x" * 27
                + "...",
                "body.messages[0].content",
            ),
        ),
        (
            chat(user([{"type": "txt", "text": "hi"}])),
            (
                "invalid_content_part",
                'body.messages[0].content[0] must be a part of type text, got "txt"',
                "body.messages[0].content[0].type",
            ),
        ),
        (
            chat(user([{"text": "hi"}])),
            (
                "invalid_content_part",
                "body.messages[0].content[0] must be a part of type text, got no type",
                "body.messages[0].content[0].type",
            ),
        ),
        (
            chat(user(["hi"])),
            (
                "invalid_content_part",
                "body.messages[0].content[0] must be a part of type text, got no type",
                "body.messages[0].content[0].type",
            ),
        ),
        (
            chat(user([{"type": "text", "text": 5}])),
            (
                "invalid_content_part",
                "body.messages[0].content[0].text must be a string",
                "body.messages[0].content[0].text",
            ),
        ),
        (
            chat(user("hi"), dimensions=64),
            (
                "unsupported_body_field",
                "body.dimensions is an embeddings field; chat requests do not take it",
                "body.dimensions",
            ),
        ),
    ],
)
def test_each_chat_rule(body, expected):
    assert rules(CHAT, "qwen-plus", body) == [expected]


def test_a_vision_model_lists_every_part_type_it_takes():
    body = chat(user([{"type": "audio", "audio": "a.mp3"}]))
    assert rules(CHAT, "qwen-vl-max", body) == [
        (
            "invalid_content_part",
            "body.messages[0].content[0] must be a part of type image_url, text, video, video_url, "
            'got "audio"',
            "body.messages[0].content[0].type",
        )
    ]


def test_every_message_and_field_is_checked_with_its_index():
    body = chat(user("hi"), "x", {"role": "bot", "content": ["y"]}, input="a", encoding_format="float")
    assert [(code, param) for code, _, param in rules(CHAT, "qwen-plus", body)] == [
        ("unsupported_body_field", "body.encoding_format"),
        ("unsupported_body_field", "body.input"),
        ("invalid_message", "body.messages[1]"),
        ("invalid_message", "body.messages[2].role"),
        ("invalid_content_part", "body.messages[2].content[0].type"),
    ]


def test_no_rules_for_an_unknown_url():
    assert rules("/v1/completions", "qwen-plus", {}) == []
    assert rules(None, "qwen-plus", {}) == []
    assert rules("/v2/chat/completions", "qwen-plus", {}) == []


def embed(model: str = "text-embedding-v4", **fields: Any) -> dict[str, Any]:
    return {"model": model, **fields}


@pytest.mark.parametrize(
    ("model", "most"), [("text-embedding-v4", 10), ("text-embedding-v3", 10), ("text-embedding-v2", 25)]
)
def test_inputs_up_to_the_models_limit(model, most):
    assert rules(EMBEDDINGS_ENDPOINT, model, embed(model, input=[f"t{i}" for i in range(most)])) == []
    assert rules(EMBEDDINGS_ENDPOINT, model, embed(model, input=[f"t{i}" for i in range(most + 1)])) == [
        (
            "too_many_inputs",
            f"body.input holds {most + 1} texts; {model} takes at most {most} per request",
            "body.input",
        )
    ]


def test_an_unknown_embedding_model_has_no_per_model_limits():
    body = embed("text-embedding-x", input=["t"] * 100, dimensions=3)
    assert rules(EMBEDDINGS_ENDPOINT, "text-embedding-x", body) == []


@pytest.mark.parametrize(
    "texts", ["", "  ", [], ["ok", ""], ["ok", " \n"], ["ok", 3], None, 5, {"text": "hi"}]
)
def test_invalid_inputs(texts):
    assert rules(EMBEDDINGS_ENDPOINT, "text-embedding-v4", embed(input=texts)) == [
        (
            "invalid_input",
            "body.input must be a non-empty string or a non-empty list of non-empty strings",
            "body.input",
        )
    ]


def test_a_string_input_is_one_text():
    assert rules(EMBEDDINGS_ENDPOINT, "text-embedding-v4", embed(input="x" * 50)) == []


@pytest.mark.parametrize(
    ("model", "dimensions", "message"),
    [
        ("text-embedding-v4", 2048, None),
        ("text-embedding-v4", 64, None),
        ("text-embedding-v3", 1024, None),
        (
            "text-embedding-v3",
            2048,
            "body.dimensions must be one of 1024, 768, 512, 256, 128, 64 for text-embedding-v3, got 2048",
        ),
        (
            "text-embedding-v4",
            100,
            "body.dimensions must be one of 2048, 1536, 1024, 768, 512, 256, 128, 64 for text-embedding-v4, "
            "got 100",
        ),
        (
            "text-embedding-v4",
            1024.0,
            "body.dimensions must be one of 2048, 1536, 1024, 768, 512, 256, 128, 64 for text-embedding-v4, "
            "got 1024.0",
        ),
        (
            "text-embedding-v4",
            True,
            "body.dimensions must be one of 2048, 1536, 1024, 768, 512, 256, 128, 64 for text-embedding-v4, "
            "got true",
        ),
        ("text-embedding-v2", 1536, "text-embedding-v2 has a fixed vector length and takes no dimensions"),
        ("text-embedding-v1", 64, "text-embedding-v1 has a fixed vector length and takes no dimensions"),
    ],
)
def test_dimensions_per_model(model, dimensions, message):
    body = embed(model, input="hi", dimensions=dimensions)
    expected = [] if message is None else [("invalid_dimensions", message, "body.dimensions")]
    assert rules(EMBEDDINGS_ENDPOINT, model, body) == expected


@pytest.mark.parametrize(
    ("value", "got"), [("base64", '"base64"'), ("FLOAT", '"FLOAT"'), (None, "null"), (["float"], '["float"]')]
)
def test_encoding_format_is_float_only(value, got):
    assert rules(EMBEDDINGS_ENDPOINT, "text-embedding-v4", embed(input="hi", encoding_format="float")) == []
    assert rules(EMBEDDINGS_ENDPOINT, "text-embedding-v4", embed(input="hi", encoding_format=value)) == [
        (
            "invalid_encoding_format",
            f'body.encoding_format must be "float", got {got}',
            "body.encoding_format",
        )
    ]


def test_embeddings_fields_missing_or_foreign():
    body = {"model": "text-embedding-v4", "messages": [], "user": "u", "dimensions": 1024}
    assert rules(EMBEDDINGS_ENDPOINT, 7, body) == [  # a model that is no string has no per-model limits
        (
            "unsupported_body_field",
            "body.messages is not an embeddings field (they take model, input, dimensions, encoding_format)",
            "body.messages",
        ),
        (
            "unsupported_body_field",
            "body.user is not an embeddings field (they take model, input, dimensions, encoding_format)",
            "body.user",
        ),
        (
            "missing_input",
            "body.input is missing; an embeddings request needs the text(s) to embed",
            "body.input",
        ),
    ]
    assert (
        rules(EMBEDDINGS_ENDPOINT, "text-embedding-v4", body)[-1] == rules(EMBEDDINGS_ENDPOINT, 7, body)[-1]
    )


def test_a_value_of_exactly_40_characters_is_shown_whole():
    forty = "é" * 38  # 38 characters and two quotes, shown as written (not as \\u escapes)
    assert rules(EMBEDDINGS_ENDPOINT, "text-embedding-v4", embed(input="hi", encoding_format=forty)) == [
        (
            "invalid_encoding_format",
            f'body.encoding_format must be "float", got "{forty}"',
            "body.encoding_format",
        )
    ]
    forty_one = "é" * 39
    assert rules(EMBEDDINGS_ENDPOINT, "text-embedding-v4", embed(input="hi", encoding_format=forty_one)) == [
        (
            "invalid_encoding_format",
            f'body.encoding_format must be "float", got "{"é" * 36}...',
            "body.encoding_format",
        )
    ]


def test_messages_after_one_with_bad_content_are_still_checked():
    body = chat(user(7), {"role": "bot", "content": "hi"}, user([{"type": "txt"}]))
    assert [(code, param) for code, _, param in rules(CHAT, "qwen-plus", body)] == [
        ("invalid_message", "body.messages[0].content"),
        ("invalid_message", "body.messages[1].role"),
        ("invalid_content_part", "body.messages[2].content[0].type"),
    ]
