"""The mailbox of finish events: a bounded codec that says when a reader fell behind."""

from __future__ import annotations

import pytest

from airflow_provider_dashscope_batch.events.mailbox import MAILBOX_SIZE, Mailbox


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
