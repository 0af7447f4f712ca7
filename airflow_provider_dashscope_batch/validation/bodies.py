"""
What a request body must look like per endpoint and model family, checked in the preflight.

The shapes each endpoint takes, and the per-model limits the model catalog
(:mod:`airflow_provider_dashscope_batch.catalog`) states: which models read images or video, how many texts
an embedding model takes per request and which ``dimensions``. A model the catalog does not know gets only
the endpoint's shape rules. Each rule's public source is in the docs' rule table (``docs/errors.rst``).

Rule codes (``Violation.code``), each with the offending field as ``param``:

=============================  ============================================================
code                           rule
=============================  ============================================================
``missing_messages``           a chat body has no ``messages``
``invalid_message``            ``messages`` is not a non-empty list of objects, a ``role`` is not
                               ``system``/``user``/``assistant``/``tool``, or a ``content`` is
                               neither a string nor a list of parts
``invalid_content_part``       a part is not ``{"type": "text", "text": str}`` or
                               ``{"type": "image_url", "image_url": {"url": str}}`` (VL models
                               also take ``video`` / ``video_url`` parts)
``unsupported_content_part``   an image or video part for a model the catalog says does not read it
``missing_input``              an embeddings body has no ``input``
``invalid_input``              ``input`` is not a non-empty string or list of non-empty strings
``too_many_inputs``            more texts in ``input`` than the model takes per request
``invalid_dimensions``         ``dimensions`` is not one the model documents
``invalid_encoding_format``    ``encoding_format`` is not ``"float"`` (a warning in the validator: no
                               public page found states it)
``unsupported_body_field``     a warning in the validator (no public page found states it): a field
                               the endpoint's family does not accept (``input``,
                               ``dimensions``, ``encoding_format`` on chat; anything but ``model``,
                               ``input``, ``dimensions``, ``encoding_format`` on embeddings)
=============================  ============================================================
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from airflow_provider_dashscope_batch.catalog import EMBEDDINGS_ENDPOINT, Catalog, ModelEntry, shipped_catalog

__all__ = ["CHAT_ROLES", "EMBEDDINGS_ENDPOINT", "body_violations"]

CHAT_ROLES = frozenset({"system", "user", "assistant", "tool"})
_TEXT_PARTS = frozenset({"text"})
_IMAGE_PARTS = frozenset({"image_url"})
_VIDEO_PARTS = frozenset({"video_url", "video"})
_VISUAL_PARTS = _IMAGE_PARTS | _VIDEO_PARTS
_EMBEDDING_FIELDS = frozenset({"model", "input", "dimensions", "encoding_format"})
_ENCODING_FORMATS = ("float",)


def _parts(entry: ModelEntry | None) -> frozenset[str]:
    """The content part types a model reads (every kind for a model the catalog does not know)."""
    if entry is None:
        return _TEXT_PARTS | _VISUAL_PARTS
    parts = _TEXT_PARTS
    if entry.reads_images:
        parts |= _IMAGE_PARTS
    if entry.reads_video:
        parts |= _VIDEO_PARTS
    return parts


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def body_violations(
    url: Any, model: Any, body: Mapping[str, Any], catalog: Catalog | None = None
) -> Iterator[tuple[str, str, str]]:
    """
    Yield ``(code, message, param)`` for every per-endpoint rule ``body`` breaks.

    :param url: The line's ``url`` (rules follow the endpoint; an unknown url is reported elsewhere).
    :param model: ``body.model`` (per-model rules apply when the catalog knows it).
    :param body: The request body.
    :param catalog: The model catalog (default: the shipped one).
    """
    name = model if isinstance(model, str) else ""
    entry = (catalog or shipped_catalog()).get(name)
    if url == EMBEDDINGS_ENDPOINT:
        yield from _embedding_violations(name, entry, body)
    elif isinstance(url, str) and url.startswith("/v1/chat/"):
        yield from _chat_violations(name, entry, body)


def _chat_violations(
    model: str, entry: ModelEntry | None, body: Mapping[str, Any]
) -> Iterator[tuple[str, str, str]]:
    for field in sorted(body.keys() & (_EMBEDDING_FIELDS - {"model"})):
        yield (
            "unsupported_body_field",
            f"body.{field} is an embeddings field; chat requests do not take it",
            f"body.{field}",
        )
    if "messages" not in body:
        yield (
            "missing_messages",
            "body.messages is missing; a chat request needs a list of messages",
            "body.messages",
        )
        return
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        yield "invalid_message", "body.messages must be a non-empty list of messages", "body.messages"
        return
    parts = _parts(entry)
    for i, message in enumerate(messages):
        where = f"body.messages[{i}]"
        if not isinstance(message, dict):
            yield "invalid_message", f"{where} must be an object with role and content", where
            continue
        role = message.get("role")
        if role not in CHAT_ROLES:
            roles = ", ".join(sorted(CHAT_ROLES))
            got = "missing" if "role" not in message else _shown(role)
            yield "invalid_message", f"{where}.role must be one of {roles}, got {got}", f"{where}.role"
        content = message.get("content")
        if isinstance(content, str) or (content is None and role == "assistant"):
            continue
        if not isinstance(content, list) or not content:
            got = "missing" if "content" not in message else _shown(content)
            yield (
                "invalid_message",
                f"{where}.content must be a string or a non-empty list of parts, got {got}",
                f"{where}.content",
            )
            continue
        for j, part in enumerate(content):
            yield from _part_violations(f"{where}.content[{j}]", part, parts, model)


def _part_violations(
    where: str, part: Any, allowed: frozenset[str], model: str
) -> Iterator[tuple[str, str, str]]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in _VISUAL_PARTS and kind not in allowed:
        yield (
            "unsupported_content_part",
            f"{where} is an {kind} part, but the model catalog says {model} reads "
            f"{', '.join(sorted({p.removesuffix('_url') for p in allowed}))} only; use a model that reads "
            "it (docs: Models), or override the model's modalities in the connection extra 'models'",
            where,
        )
    elif kind not in allowed:
        kinds = ", ".join(sorted(allowed))
        got = _shown(kind) if isinstance(part, dict) and "type" in part else "no type"
        yield "invalid_content_part", f"{where} must be a part of type {kinds}, got {got}", f"{where}.type"
    elif kind == "text" and not isinstance(part.get("text"), str):
        yield "invalid_content_part", f"{where}.text must be a string", f"{where}.text"
    elif kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str) or not url:
            yield (
                "invalid_content_part",
                f'{where}.image_url must be {{"url": "<http(s) or data: URL>"}}',
                f"{where}.image_url",
            )


def _embedding_violations(
    model: str, entry: ModelEntry | None, body: Mapping[str, Any]
) -> Iterator[tuple[str, str, str]]:
    limits = entry.embedding if entry is not None else None
    for field in sorted(body.keys() - _EMBEDDING_FIELDS):
        yield (
            "unsupported_body_field",
            f"body.{field} is not an embeddings field (they take model, input, dimensions, encoding_format)",
            f"body.{field}",
        )
    if "input" not in body:
        yield (
            "missing_input",
            "body.input is missing; an embeddings request needs the text(s) to embed",
            "body.input",
        )
    else:
        texts = body["input"]
        if isinstance(texts, str):
            texts = [texts]
        if (
            not isinstance(texts, list)
            or not texts
            or not all(isinstance(t, str) and t.strip() for t in texts)
        ):
            yield (
                "invalid_input",
                "body.input must be a non-empty string or a non-empty list of non-empty strings",
                "body.input",
            )
        elif limits is not None and len(texts) > limits.max_inputs:
            yield (
                "too_many_inputs",
                f"body.input holds {len(texts)} texts; {model} takes at most {limits.max_inputs} per request",
                "body.input",
            )
    if "dimensions" in body and limits is not None:
        dimensions = body["dimensions"]
        if not limits.dimensions:
            yield (
                "invalid_dimensions",
                f"{model} has a fixed vector length and takes no dimensions",
                "body.dimensions",
            )
        elif type(dimensions) is not int or dimensions not in limits.dimensions:
            allowed = ", ".join(map(str, limits.dimensions))
            yield (
                "invalid_dimensions",
                f"body.dimensions must be one of {allowed} for {model}, got {_shown(dimensions)}",
                "body.dimensions",
            )
    if "encoding_format" in body and body["encoding_format"] not in _ENCODING_FORMATS:
        yield (
            "invalid_encoding_format",
            f'body.encoding_format must be "float", got {_shown(body["encoding_format"])}',
            "body.encoding_format",
        )
