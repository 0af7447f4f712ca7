"""
What the emulated service answers to one batch request: chat, Qwen-VL, embeddings, the test model, failures.

The bodies follow the service's documented shapes; usage is the emulator's own approximation
(:mod:`~dashscope_batch_emulator.usage`) for text and the Qwen-VL rule for image tokens, with reasoning
for requests in thinking mode; the batch
and file state machine that calls :func:`answer_request` line by line is
:mod:`~dashscope_batch_emulator.state`.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
import uuid
from collections.abc import Callable
from typing import Any

from dashscope_batch_emulator.rules import TEST_MODEL, request_error, thinks
from dashscope_batch_emulator.structured import structured_answer
from dashscope_batch_emulator.usage import prompt_tokens, text_tokens

__all__ = [
    "EMULATED_IMAGE_SIZE",
    "FAIL_MARKER",
    "answer_request",
    "emulated_embedding",
    "image_tokens_of",
]

FAIL_MARKER = "x_emulator_fail"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _image_size(url: str) -> tuple[int, int] | None:
    """Width and height of a PNG given as a ``data:`` URL (the emulator fetches nothing)."""
    head, _, data = url.partition(",")
    if not head.startswith("data:image/png;base64"):
        return None
    try:
        raw = base64.b64decode(data[:64] + "=" * (-len(data[:64]) % 4), validate=False)
    except ValueError:
        return None
    if raw[:8] != b"\x89PNG\r\n\x1a\n" or raw[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", raw[16:24])
    return width, height


EMULATED_IMAGE_SIZE = (1024, 1024)
"""The size the emulator assumes for an image it is given by URL (it downloads nothing)."""


def image_tokens_of(part: dict[str, Any], model: Any, body: dict[str, Any]) -> int:
    """
    Tokens of one ``image_url`` part, as the Qwen-VL docs count them.

    The image is scaled to multiples of the model's patch (32 px for Qwen3-VL, 28 px otherwise) within
    ``[4, max]`` patches, ``max`` being 16,384 with ``vl_high_resolution_images`` and 1,280 (2,560 for
    Qwen3-VL) by default; each patch is a token, plus 2 for the image's start and end.
    """
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    width, height = (_image_size(url) if isinstance(url, str) else None) or EMULATED_IMAGE_SIZE
    patch = 32 if "qwen3-vl" in str(model) else 28
    max_patches = 16_384 if body.get("vl_high_resolution_images") else 2_560 if patch == 32 else 1_280
    h_bar = max(patch, round(height / patch) * patch)
    w_bar = max(patch, round(width / patch) * patch)
    if h_bar * w_bar > max_patches * patch * patch:
        beta = math.sqrt(height * width / (max_patches * patch * patch))
        h_bar = max(patch, math.floor(height / beta / patch) * patch)
        w_bar = max(patch, math.floor(width / beta / patch) * patch)
    elif h_bar * w_bar < 4 * patch * patch:
        beta = math.sqrt(4 * patch * patch / (height * width))
        h_bar = math.ceil(height * beta / patch) * patch
        w_bar = math.ceil(width * beta / patch) * patch
    return h_bar * w_bar // (patch * patch) + 2


def emulated_embedding(text: str, dimensions: int) -> list[float]:
    """The emulator's vector for ``text``: a deterministic unit vector (rounded to 6 decimals), for tests."""
    raw = b""
    counter = 0
    while len(raw) < dimensions * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [v / 2**32 - 0.5 for v in struct.unpack(f"<{dimensions}I", raw[: dimensions * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def answer_request(
    line: dict[str, Any],
    pattern: re.Pattern[str] | None,
    *,
    now: Callable[[], float],
    embedding_dimensions: int,
) -> tuple[bool, dict]:
    """
    The result line of one batch request and whether it succeeded (the output file) or not (the error file).

    A request fails when its body carries ``x_emulator_fail``, breaks a body rule the service checks per
    request, or its ``custom_id`` matches ``pattern``; ``now`` is the emulated clock (the ``created``
    stamp), ``embedding_dimensions`` the configured default vector length.
    """
    custom_id = str(line.get("custom_id"))
    body = line.get("body") or {}
    request_id = str(uuid.uuid4())
    marker = body.get(FAIL_MARKER)
    if not marker and (broken := request_error(line.get("url"), body)):
        marker = {"status_code": 400, "code": "InvalidParameter", "message": broken}
    if marker or (pattern is not None and pattern.search(custom_id)):
        spec = marker if isinstance(marker, dict) else {}
        status = int(spec.get("status_code", 400))
        code = str(spec.get("code", "InvalidParameter"))
        message = str(spec.get("message", f"Emulated failure of request {custom_id}."))
        error = {"code": code, "message": message}
        return False, {
            "id": request_id,
            "custom_id": custom_id,
            "response": {
                "status_code": status,
                "request_id": request_id,
                "body": {"error": {**error, "type": "invalid_request_error", "param": None}},
            },
            "error": error,
        }
    created = int(now())
    model = body.get("model")
    if line.get("url") == "/v1/embeddings":
        response_body = _embedding(body, model, request_id, embedding_dimensions)
    elif model == TEST_MODEL:
        response_body = {
            "created": created,
            "usage": {"completion_tokens": 6, "prompt_tokens": 20, "total_tokens": 26},
            "model": model,
            "id": f"chatcmpl-{uuid.uuid4()}",
            "choices": [
                {
                    "finish_reason": "stop",
                    "index": 0,
                    "message": {"content": structured_answer(body) or "This is a test result."},
                }
            ],
            "object": "chat.completion",
        }
    else:
        response_body = _chat(body, model, created, request_id)
    return True, {
        "id": request_id,
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": request_id, "body": response_body},
        "error": None,
    }


def _chat(body: dict[str, Any], model: Any, created: int, request_id: str) -> dict[str, Any]:
    messages = body.get("messages") or []
    prompt = " ".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
    last_user = next(
        (
            _text_of(m.get("content"))
            for m in reversed(messages)
            if isinstance(m, dict) and m.get("role") == "user"
        ),
        "",
    )
    digest = hashlib.sha256(f"{model}\n{prompt}".encode()).hexdigest()[:8]
    content = structured_answer(body) or f"Emulated reply ({digest}) to: {last_user[:200]}"
    finish_reason = "stop"
    max_tokens = body.get("max_tokens")
    completion_tokens = text_tokens(content)
    if isinstance(max_tokens, int) and 0 < max_tokens < completion_tokens:  # cut as the service cuts
        content, finish_reason, completion_tokens = content[: max_tokens * 4], "length", max_tokens
    message = {"role": "assistant", "content": content}
    usage: dict[str, Any] = {
        "completion_tokens": completion_tokens,
        "prompt_tokens": prompt_tokens(messages, body.get("tools")),
    }
    if thinks(str(model), body.get("enable_thinking")):
        message["reasoning_content"] = reasoning = f"Emulated reasoning ({digest})."
        reasoning_tokens = text_tokens(reasoning)
        usage["completion_tokens"] += reasoning_tokens
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    image_tokens = sum(
        image_tokens_of(part, model, body)
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )
    if image_tokens:
        text_only = usage["prompt_tokens"]
        usage["prompt_tokens"] += image_tokens
        usage["prompt_tokens_details"] = {"image_tokens": image_tokens, "text_tokens": text_only}
    usage["total_tokens"] = usage["completion_tokens"] + usage["prompt_tokens"]
    return {
        "created": created,
        "usage": usage,
        "model": model,
        "id": f"chatcmpl-{request_id}",
        "choices": [{"finish_reason": finish_reason, "index": 0, "message": message}],
        "object": "chat.completion",
    }


def _embedding(body: dict[str, Any], model: Any, request_id: str, default_dimensions: int) -> dict[str, Any]:
    inputs = body.get("input")
    texts = inputs if isinstance(inputs, list) else [inputs]
    dimensions = int(body.get("dimensions") or default_dimensions)
    tokens = sum(text_tokens(str(t)) for t in texts)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": emulated_embedding(str(text), dimensions)}
            for i, text in enumerate(texts)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "id": request_id,
    }
