"""
The page's reader of recorded costs: the user's own credential, few requests, never an error.

A small HTTP server on loopback answers the two REST routes as Airflow's do (the browser test reads
Airflow's real API); here it records what the reader sends and refuses or fails on demand.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_provider_dashscope_batch.cost.recorded import COSTS_XCOM_KEY
from airflow_provider_dashscope_batch.ui.costs import ActualCosts

ENTRY = {"cost": "0.012", "currency": "CNY", "requests": 3, "input_tokens": 30, "output_tokens": 6}
VALUE = {"batch_1": {**ENTRY, "complete": True}}


class _Api:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.status = 200
        self.value_as_text = False


@pytest.fixture
def api() -> Iterator[tuple[_Api, str]]:
    state = _Api()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.seen.append((self.path, self.headers.get("Authorization", "")))
            if state.status != 200:
                self.send_response(state.status)
                self.end_headers()
                return
            if "/~/xcomEntries" in self.path:
                body = {"xcom_entries": [{"task_id": "transfer", "map_index": -1}], "total_entries": 1}
            else:
                body = {"value": json.dumps(VALUE) if state.value_as_text else VALUE}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/api/v2"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("as_text", [False, True])
def test_a_runs_costs_are_read_with_the_users_token_and_reused(api, as_text):
    state, base = api
    state.value_as_text = as_text
    costs = ActualCosts(base)
    found = asyncio.run(costs.of_runs("user-token", [("reports", "manual 1"), ("reports", "manual 1")]))
    assert found["batch_1"].amount == Decimal("0.012")
    assert [path for path, _ in state.seen] == [
        f"/api/v2/dags/reports/dagRuns/manual%201/taskInstances/~/xcomEntries?xcom_key={COSTS_XCOM_KEY}&limit=20",
        f"/api/v2/dags/reports/dagRuns/manual%201/taskInstances/transfer/xcomEntries/{COSTS_XCOM_KEY}?map_index=-1",
    ]
    assert {auth for _, auth in state.seen} == {"Bearer user-token"}
    asyncio.run(costs.of_runs("user-token", [("reports", "manual 1")]))
    assert len(state.seen) == 2  # the same user within the TTL: no request
    asyncio.run(costs.of_runs("another-user", [("reports", "manual 1")]))
    assert len(state.seen) == 4  # another user's rights are asked anew


@pytest.mark.parametrize("status", [403, 404, 500])
def test_a_refusal_or_failure_is_an_unknown_cost(api, status):
    state, base = api
    state.status = status
    assert asyncio.run(ActualCosts(base).of_runs("user-token", [("reports", "r")])) == {}


def test_no_credential_or_no_run_sends_nothing_and_an_unreachable_api_is_unknown(api):
    state, base = api
    assert asyncio.run(ActualCosts(base).of_runs("", [("reports", "r")])) == {}
    assert asyncio.run(ActualCosts(base).of_runs("token", [])) == {}
    assert state.seen == []
    closed = base.rsplit(":", 1)[0] + ":9/api/v2"  # the discard port: nothing listens
    assert asyncio.run(ActualCosts(closed).of_runs("token", [("reports", "r")])) == {}
