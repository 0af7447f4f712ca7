"""
The emulator's token counts for ``usage``: an approximation of its own, no tokenizer.

The billing pages say a token is about 3-4 letters of English or 1-1.8 Chinese characters; the emulator
counts each run of ASCII letters and digits as one token per 4 characters (rounded up), each other
non-space ASCII character as one token, and each run of other characters as one token per 1.5 characters
(rounded up). A chat prompt adds the Qwen chat template's markers: 5 tokens per message
(``<|im_start|>``, the role, a newline, ``<|im_end|>``, a newline) and 3 for the reply's opening.
Counts are deterministic, so tests can rely on them; they are not what the service bills.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["prompt_tokens", "text_tokens"]

MESSAGE_MARKERS = 5
REPLY_OPENING = 3

_PIECES = re.compile(r"(?P<word>[A-Za-z0-9]+)|(?P<other>[^\x00-\x7f]+)|(?P<mark>[!-/:-@\[-`{-~])")


def text_tokens(text: str) -> int:
    """The emulator's token count of ``text``."""
    tokens = 0
    for piece in _PIECES.finditer(text):
        if piece.lastgroup == "word":
            tokens += math.ceil(len(piece.group()) / 4)
        elif piece.lastgroup == "other":
            tokens += math.ceil(len(piece.group()) / 1.5)
        else:
            tokens += 1
    return tokens


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def prompt_tokens(messages: list[Any], tools: Any = None) -> int:
    """Prompt tokens of a chat request: its message texts, the template's markers, ``tools`` as JSON text."""
    tokens = REPLY_OPENING
    for message in messages:
        if isinstance(message, dict):
            tokens += MESSAGE_MARKERS + sum(text_tokens(t) for t in _texts(message.get("content")))
    if tools is not None:
        tokens += text_tokens(json.dumps(tools, ensure_ascii=False))
    return tokens
