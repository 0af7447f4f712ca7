"""Result lines shared by the result-file tests: a chat and an embeddings success, and a line builder."""

from __future__ import annotations

from typing import Any

CHAT_OK = {
    "id": "u1",
    "custom_id": "a",
    "response": {
        "status_code": 200,
        "request_id": "r1",
        "body": {
            "model": "qwen-plus",
            "created": 1700000000,
            "choices": [
                {"finish_reason": "length", "message": {"content": "hi, 你好", "reasoning_content": "think"}}
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26},
        },
    },
    "error": None,
}


EMBEDDING_OK = {
    "custom_id": '["t1","t2"]',
    "response": {
        "status_code": 200,
        "request_id": "r9",
        "body": {
            "model": "text-embedding-v4",
            "data": [{"index": 1, "embedding": [0.5, 0.25]}, {"index": 0, "embedding": [1.0, -1.0]}],
            "usage": {"prompt_tokens": 7, "total_tokens": 7},
        },
    },
}


def line(status: Any = 200, error: Any = None, body: Any = None, **response: Any) -> dict[str, Any]:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    body = {"model": "qwen-plus", "usage": usage} if body is None else body
    return {"custom_id": "a", "response": {"status_code": status, "body": body, **response}, "error": error}
