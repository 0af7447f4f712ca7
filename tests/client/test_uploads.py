"""Upload tokens in stored file names."""

from __future__ import annotations

import pytest

from airflow_provider_dashscope_batch.client._uploads import tokenized_filename


@pytest.mark.parametrize(
    ("filename", "stored"),
    [
        ("requests.jsonl", "requests.tok-12345.jsonl"),
        ("a.b.jsonl", "a.b.tok-12345.jsonl"),
        ("noext", "noext.tok-12345"),
        (".hidden", ".hidden.tok-12345"),
        ("requests.tok-12345.jsonl", "requests.tok-12345.jsonl"),
    ],
)
def test_upload_filename_carries_the_token(filename, stored):
    assert tokenized_filename(filename, "tok-12345") == stored
