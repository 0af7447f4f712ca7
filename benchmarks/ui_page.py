"""The batches page: render time and list requests per page view, for 100 and 1,000 batches.

Usage (from the repository root, project venv; ~1 minute)::

    .venv/bin/python benchmarks/ui_page.py

One process: the emulator on loopback with 50 ms of latency on every ``GET /batches``, N batches in it
(half created by DAG tasks, with the operators' creator metadata and keys; half not), and the page's own
FastAPI app (:func:`airflow_provider_dashscope_batch.ui.app.create_app`) driven by an in-process ASGI
client. Airflow's authentication is left out (the signed-in user is given, the auth manager allows all):
what is measured is the page's work -- one list request, the access checks, the HTML. For each N, a
page of 99 batches (the page's largest) is viewed cold (nothing cached), then again within the shared
cache's TTL, then with a name filter (a new list request); each figure is the median of 5 rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line, table

API_KEY = "sk-bench-ui-page-0123456789"
LATENCY = 0.05
ROUNDS = 5


class _AllowAll:
    def is_authorized_dag(self, **_: Any) -> bool:
        return True

    def is_authorized_connection(self, **_: Any) -> bool:
        return True


def _create(emulator: Any, n: int) -> None:
    from airflow_provider_dashscope_batch.client import DashScopeClient
    from airflow_provider_dashscope_batch.client.identity import lineage, with_generation
    from airflow_provider_dashscope_batch.sharding.creator import creator_metadata

    path = Path(tempfile.mkdtemp()) / "in.jsonl"
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/ds-test",
        "body": {"model": "m", "messages": []},
    }
    path.write_text(json.dumps(line) + "\n")
    with DashScopeClient(api_key=API_KEY, base_url=emulator.base_url) as client:
        file_id = client.upload_file(path).id
        for i in range(n):
            ti = SimpleNamespace(dag_id=f"dag_{i % 7}", task_id="create", run_id=f"run_{i}", map_index=-1)
            metadata = {"ds_name": f"job {i}"}
            key = None
            if i % 2 == 0:
                metadata.update(creator_metadata(ti))
                key = with_generation(lineage(ti.dag_id, "create", ti.run_id, "-1"), 1)
            client.create_batch(
                input_file_id=file_id, endpoint="/v1/chat/ds-test", metadata=metadata, idempotency_key=key
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="smallest size: a CI check that it runs")
    args = parser.parse_args()
    sizes, rounds = ((20,), 1) if args.smoke else ((100, 1000), ROUNDS)
    home = tempfile.mkdtemp(prefix="bench-ui-page-")
    os.environ.update(AIRFLOW_HOME=home, AIRFLOW__CORE__LOAD_EXAMPLES="False")
    from dashscope_batch_emulator.server import EmulatorServer
    from fastapi.testclient import TestClient

    from airflow_provider_dashscope_batch.ui import app as page_app

    user = SimpleNamespace(get_name=lambda: "bench", get_id=lambda: "bench")
    page_app._access = lambda request, user: page_app.Access(user, _AllowAll())  # type: ignore[assignment]
    rows = []
    for n in sizes:
        with EmulatorServer(api_key=API_KEY, time_scale=0) as emulator:
            unlimited = {"batch_list": 1e9, "batch_create": 1e9, "batch_retrieve": 1e9}
            os.environ["AIRFLOW_CONN_DASHSCOPE_DEFAULT"] = json.dumps(
                {
                    "conn_type": "dashscope",
                    "password": API_KEY,
                    "extra": {"base_url": emulator.base_url, "rate_limits": unlimited},
                }
            )
            _create(emulator, n)
            emulator.add_fault("latency", method="GET", path="/batches", latency=LATENCY)
            figures: dict[str, list[float]] = {"cold": [], "cached": [], "filtered": []}
            requests: dict[str, list[int]] = {"cold": [], "cached": [], "filtered": []}
            for round_ in range(rounds):
                app = page_app.create_app()
                app.dependency_overrides[page_app.get_user] = lambda: user
                with TestClient(app) as client:
                    for view, query in (
                        ("cold", "limit=99"),
                        ("cached", "limit=99"),
                        ("filtered", f"limit=99&ds_name=job+{round_}"),
                    ):
                        emulator.clear_request_counts()
                        started = time.perf_counter()
                        answer = client.get(f"/?{query}")
                        figures[view].append(time.perf_counter() - started)
                        assert answer.status_code == 200, answer.text[:500]
                        requests[view].append(emulator.request_counts().get("GET /batches", 0))
            for view in figures:
                rows.append(
                    [
                        f"{n:,}",
                        view,
                        f"{statistics.median(figures[view]) * 1000:.0f} ms",
                        f"{max(requests[view])}",
                    ]
                )
    print(machine_line())
    print(
        f"emulator latency {LATENCY * 1000:.0f} ms per GET /batches; page of 99 batches; median of {rounds}"
    )
    print(table(["batches", "view", "render time", "list requests"], rows))


if __name__ == "__main__":
    main()
