"""
Offline token counts: the Qwen tokenizer of the ``dashscope`` SDK, or a documented approximation.

The tokenizer (extra ``tokenizer``: ``dashscope`` + ``tiktoken``) is imported lazily, on the first count,
and loaded once per process (about 1.5 s). Whether its counts equal what the service bills for every
current model is not published; it is the best offline figure there is.

Chat prompts are counted the way the Qwen chat template lays them out (ChatML)::

    <|im_start|>{role}\\n{content}<|im_end|>\\n      per message: content + role + 4 tokens
    <|im_start|>assistant\\n                         once, the reply's opening: 3 tokens

Message text parts are joined; ``tools`` count as their JSON text. No default system prompt is added.
Image, audio and video parts are not estimated (the estimate counts the requests that carry them).
Embedding inputs count their text only.

Without the tokenizer, :func:`approximate_tokens` stands in: ASCII characters / 4 plus other
characters / 1.5 (the billing pages: about 3-4 letters of English or 1-1.8 Chinese characters per
token), with the same per-message overhead (a role counts 1 token). Every line the estimate prints
says so. The benchmark (``benchmarks/cost.py``) measures its error against the tokenizer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "MESSAGE_OVERHEAD",
    "REPLY_OVERHEAD",
    "TokenizerUnavailable",
    "approximate_tokens",
    "char_classes",
    "count_chat_prompt",
    "count_text",
    "load_tokenizer",
    "message_texts",
]

#: Tokens the chat template adds around each message besides its role (``<|im_start|>``, a newline,
#: ``<|im_end|>``, a newline).
MESSAGE_OVERHEAD = 4
#: Tokens of the reply's opening, ``<|im_start|>assistant\n``.
REPLY_OVERHEAD = 3

_lock = threading.Lock()
_encoder: Callable[[str], int] | None = None
_unavailable: str | None = None


class TokenizerUnavailable(RuntimeError):
    """The optional tokenizer (extra ``tokenizer``) is not installed or could not load."""


def load_tokenizer() -> Callable[[str], int]:
    """
    A function counting the Qwen tokens of a text (special-token strings counted as plain text).

    :raises TokenizerUnavailable: without ``dashscope`` and ``tiktoken`` (``pip install
        'airflow-provider-dashscope-batch[tokenizer]'``).
    """
    global _encoder, _unavailable
    if _encoder is not None:
        return _encoder
    if _unavailable is not None:
        raise TokenizerUnavailable(_unavailable)
    with _lock:
        if _encoder is None and _unavailable is None:
            try:
                from dashscope.tokenizers import get_tokenizer

                tokenizer: Any = get_tokenizer("qwen-plus")
                encoding = (
                    tokenizer._tokenizer
                )  # the tiktoken Encoding; its encode_ordinary skips special-token scans
                encode = encoding.encode_ordinary
                encode("warm up")
                _encoder = lambda text: len(encode(text))  # noqa: E731
            except Exception as exc:  # ImportError, a missing vocabulary file, a tiktoken mismatch
                _unavailable = (
                    f"the Qwen tokenizer is not available ({type(exc).__name__}: {exc}); install the "
                    "'tokenizer' extra: pip install 'airflow-provider-dashscope-batch[tokenizer]'"
                )
    if _encoder is None:
        raise TokenizerUnavailable(str(_unavailable))
    return _encoder


def approximate_tokens(text: str) -> float:
    """
    The fallback approximation: ASCII characters / 4 + other characters / 1.5.

    Other characters are counted from the UTF-8 length (``(bytes - chars) / 2``: exact for the 3-byte
    CJK range), so the count costs one C-level encode and no per-character Python work.
    """
    ascii_chars, other = char_classes(text)
    return ascii_chars * ASCII_RATE + other * OTHER_RATE


#: Tokens per ASCII character and per other character of the approximation.
ASCII_RATE = 1 / 4
OTHER_RATE = 1 / 1.5


def char_classes(text: str) -> tuple[float, float]:
    """``(ASCII characters, other characters)`` of ``text``, the latter from its UTF-8 length."""
    chars = len(text)
    if text.isascii():
        return chars, 0.0
    other = (len(text.encode("utf-8", "surrogatepass")) - chars) / 2
    return chars - other, other


def count_text(text: str) -> int:
    """The tokens of ``text``: the tokenizer's count, or the approximation rounded (at least 1 for text)."""
    try:
        return load_tokenizer()(text)
    except TokenizerUnavailable:
        return max(1, round(approximate_tokens(text))) if text else 0


def message_texts(content: Any) -> list[str]:
    """The text parts of a message's ``content`` (a string, or a list of parts); media parts are skipped."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def count_chat_prompt(messages: list[Any], tools: Any = None) -> int:
    """
    The prompt tokens of a chat request as the chat template lays it out (see the module docstring).

    :param messages: The request's ``messages``.
    :param tools: The request's ``tools``, counted as their JSON text.
    """
    tokens = REPLY_OVERHEAD
    for message in messages:
        if not isinstance(message, dict):
            continue
        tokens += MESSAGE_OVERHEAD
        role = message.get("role")
        if isinstance(role, str):
            tokens += count_text(role) if _try_load() else 1
        tokens += sum(count_text(t) for t in message_texts(message.get("content")))
    if tools is not None:
        tokens += count_text(json.dumps(tools, ensure_ascii=False))
    return tokens


def _try_load() -> bool:
    try:
        load_tokenizer()
    except TokenizerUnavailable:
        return False
    return True
