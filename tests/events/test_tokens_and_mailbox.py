"""Callback tokens (minted by the operator, checked by the receiver) and the mailbox codec."""

from __future__ import annotations

import pytest

from airflow_provider_dashscope_batch.events.mailbox import MAILBOX_SIZE, Mailbox
from airflow_provider_dashscope_batch.events.tokens import (
    callback_url,
    eventbridge_url,
    mint_token,
    token_is_valid,
)

KEY = "finish-events-secret-0123456789"


def test_a_token_is_valid_only_for_its_connection_and_secret():
    token = mint_token(KEY, "dashscope_default")
    assert token_is_valid((KEY,), "dashscope_default", token)
    assert not token_is_valid((KEY,), "other", token)
    assert not token_is_valid(("sk-other",), "dashscope_default", token)
    nonce, mac = token.split(".")
    assert not token_is_valid(
        (KEY,), "dashscope_default", f"{nonce}.{mac[:-1]}{'0' if mac[-1] != '0' else '1'}"
    )
    assert not token_is_valid((KEY,), "dashscope_default", f"{nonce}x.{mac}")
    assert not token_is_valid((KEY,), "dashscope_default", "")


def test_every_batch_gets_its_own_token_and_the_secret_is_never_in_the_url():
    tokens = {mint_token(KEY, "c") for _ in range(100)}
    assert len(tokens) == 100
    url = callback_url("https://airflow.example.com/", "c", tokens.pop())
    assert url.startswith("https://airflow.example.com/dashscope-batch/events/c/")
    assert KEY not in url
    assert KEY not in eventbridge_url("https://airflow.example.com", "c", KEY)
    assert eventbridge_url("https://a", "c", KEY) == eventbridge_url(
        "https://a", "c", KEY
    )  # one per connection


def test_the_mailbox_keeps_the_newest_finishes_and_says_when_a_reader_fell_behind():
    box = Mailbox()
    for n in range(MAILBOX_SIZE + 10):
        box = box.posted(f"batch_{n}")
    assert box.seq == MAILBOX_SIZE + 10
    assert len(box.recent) == MAILBOX_SIZE
    assert "batch_9" not in box
    assert f"batch_{MAILBOX_SIZE + 9}" in box
    assert box.since(box.seq - 2) == ([f"batch_{MAILBOX_SIZE + 8}", f"batch_{MAILBOX_SIZE + 9}"], False)
    assert box.since(box.seq) == ([], False)
    _, lost = box.since(5)
    assert lost
    assert Mailbox.from_value(box.to_json()) == box


@pytest.mark.parametrize("value", [None, "", "not json", "[]", '{"seq": "x"}', '{"recent": []}', 7])
def test_a_malformed_mailbox_reads_as_empty(value):
    assert Mailbox.from_value(value) == Mailbox()
