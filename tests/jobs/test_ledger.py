"""The ledger: input minus what came back answered or failed for good is what the next round sends."""

from __future__ import annotations

import json

from airflow_provider_dashscope_batch.jobs.ledger import JobCounts, ShardLedger, progress_line, request_id_of


def request(custom_id: str) -> bytes:
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/ds-test", "body": {}}
    ).encode()


def answer(custom_id: str) -> bytes:
    return json.dumps(
        {"custom_id": custom_id, "response": {"status_code": 200, "body": {}}, "error": None}
    ).encode()


def error(custom_id: str, status: int | None, code: str, spelling: str = "code") -> bytes:
    response = None if status is None else {"status_code": status}
    return json.dumps({"custom_id": custom_id, "response": response, "error": {spelling: code}}).encode()


SOURCE = [request(str(n)) + b"\n" for n in range(10)]


def test_the_remainder_is_the_source_minus_answered_and_permanently_failed_in_source_order():
    ledger = ShardLedger()
    assert ledger.add_output([answer("0"), answer("3"), b""]) == 2
    # "7" never ran: the error file need not list it, the remainder still holds it
    ledger.add_errors([error("1", 400, "InvalidParameter"), error("2", 429, "limit_requests")])
    ledger.add_errors([error("4", None, "InternalError", spelling="error_code")])
    assert [request_id_of(line) for line in ledger.remainder(SOURCE)] == ["2", "4", "5", "6", "7", "8", "9"]
    assert ledger.counts(10) == JobCounts(10, 2, 1)
    assert ledger.counts(10).unanswered == 7


def test_a_later_answer_clears_an_earlier_failure_and_an_answer_is_never_undone():
    ledger = ShardLedger()
    ledger.add_output([answer("0")])
    ledger.add_errors([error("0", 400, "InvalidParameter"), error("1", 400, "InvalidParameter")])
    ledger.add_output([answer("1")])
    assert ledger.counts(2) == JobCounts(2, 2, 0)
    assert list(ledger.remainder(SOURCE[:2])) == []


def test_blank_and_unreadable_lines_are_skipped_and_lines_end_with_a_newline():
    ledger = ShardLedger()
    ledger.add_errors([b"not json", b"  "])
    assert list(ledger.remainder([request("a"), b"\n", b"{broken"])) == [request("a") + b"\n"]


def test_progress_line():
    line = progress_line(2, 3, 11361, JobCounts(20000, 8639, 0))
    assert line == "round 2 of ≤3: 11,361 requests re-sent (8,639 answered, 0 permanently failed)"
