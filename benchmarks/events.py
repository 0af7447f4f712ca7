"""Finish events against polling: detection delay and status requests per batch, side by side.

Usage (from the repository root, project venv; ~3 minutes)::

    .venv/bin/python benchmarks/events.py            # N = 200 waits per mode
    .venv/bin/python benchmarks/events.py --n 50     # quicker

One run, one process: a throw-away Airflow home (SQLite metadata DB, migrated), the emulator on
loopback (clock at real speed, one request per second per batch), the provider's receiver app on
loopback (uvicorn), and N ``DashScopeBatchTrigger`` waits per mode in one event loop, for batches that
finish uniformly spread over ``--window`` seconds:

* ``polling``: the default schedule (first poll after 60-240 s, then 60 s growing x1.5 to 300 s), run
  ``--scale`` times faster; its detection delays are reported multiplied back by ``--scale``;
* ``callback``: ``finish_callback="airflow"``: each batch's finish callback reaches the receiver, which
  confirms it with one read and posts it to the connection's mailbox; the waits read the mailbox once a
  second (the real interval) and poll only as the safety net (every 1800 s, also run ``--scale`` times
  faster, like the batches' durations). Outside a triggerer there is no supervisor, so the waits read
  the mailbox Variable straight from the metadata DB (the same row the supervisor would read).

Batch durations are scaled with the schedules: with ``--scale 60`` and ``--window 60``, the batches stand
for batches of up to an hour at the default schedule. Detection delay: the moment the wait's event is
yielded minus the moment the emulator sent the batch's finish notification (in polling mode the
notification goes to a sink, so that it costs no read). Requests: the emulator's ``GET /batches`` and
``GET /batches/{id}`` counters per batch; for ``callback``, the receiver's confirmations apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line, percentile, table

LIST, RETRIEVE = "GET /batches", "GET /batches/{batch_id}"
API_KEY = "sk-bench-events-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_receiver() -> str:
    import uvicorn
    from fastapi import FastAPI

    from airflow_provider_dashscope_batch.events.receiver import create_app
    from airflow_provider_dashscope_batch.events.tokens import ROUTE_PREFIX

    root = FastAPI()
    root.mount(ROUTE_PREFIX, create_app())
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}"


def _read_variable_from_db(key: str) -> str | None:
    from airflow.models.variable import Variable

    return Variable.get(key, default_var=None)


def _create(emulator, n: int, window: float, callback: str | None, seed: int) -> list[tuple[str, str]]:
    from airflow_provider_dashscope_batch.client import DashScopeClient
    from airflow_provider_dashscope_batch.events.callback import airflow_callback_url
    from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook

    rng = random.Random(seed)
    made = []
    with (
        DashScopeClient(api_key=API_KEY, base_url=emulator.base_url) as client,
        tempfile.TemporaryDirectory() as d,
    ):
        for i in range(n):
            lines = max(1, round(rng.uniform(0.05, 1.0) * window))
            path = Path(d) / f"in-{i}.jsonl"
            body = {"model": "batch-test-model", "messages": [{"role": "user", "content": "hi"}]}
            path.write_text(
                "".join(
                    json.dumps(
                        {"custom_id": f"r{j}", "method": "POST", "url": "/v1/chat/ds-test", "body": body}
                    )
                    + "\n"
                    for j in range(lines)
                )
            )
            file_id = client.upload_file(path).id
            url = airflow_callback_url(DashScopeBatchHook()) if callback == "airflow" else callback
            batch = client.create_batch(
                input_file_id=file_id, endpoint="/v1/chat/ds-test", metadata={"ds_batch_finish_callback": url}
            )
            made.append((batch.id, file_id))
    return made


async def _wait_all(made: list[tuple[str, str]], mode: str, scale: float) -> dict[str, float]:
    from airflow_provider_dashscope_batch.triggers.batch import DashScopeBatchTrigger

    if mode == "polling":
        schedule = {"poll_interval": 60 / scale, "max_poll_interval": 300 / scale, "poll_backoff": 1.5}
    else:
        schedule = {"poll_interval": 1800 / scale, "max_poll_interval": 1800 / scale, "finish_events": True}
    ended: dict[str, float] = {}

    async def one(batch_id: str, file_id: str) -> None:
        trigger = DashScopeBatchTrigger(batch_id, input_file_id=file_id, **schedule)
        async for event in trigger.run():
            assert event.payload["status"] == "terminal", event.payload
            ended[batch_id] = time.time()

    await asyncio.gather(*(one(b, f) for b, f in made))
    return ended


def run_mode(emulator, mode: str, args: argparse.Namespace, sink: str) -> dict[str, float]:
    emulator.reset()
    emulator.set_clock(time_scale=0)  # every batch starts together when the clock starts
    made = _create(emulator, args.n, args.window, "airflow" if mode == "callback" else sink, args.seed)
    emulator.clear_request_counts()
    emulator.set_clock(time_scale=1.0)
    ended = asyncio.run(_wait_all(made, mode, args.scale))
    counts = emulator.request_counts()
    sent = {d["batch_id"]: d["sent_at"] for d in emulator.callbacks()}
    factor = args.scale if mode == "polling" else 1.0
    delays = sorted((ended[b] - sent[b]) * factor for b, _ in made)
    reads = counts.get(LIST, 0) + counts.get(RETRIEVE, 0)
    confirmations = (
        sum(1 for d in emulator.callbacks() if d.get("status_code") == 200) if mode == "callback" else 0
    )
    return {
        "p50": percentile(delays, 50),
        "p99": percentile(delays, 99),
        "max": delays[-1],
        "reads_per_batch": reads / args.n,
        "confirmations_per_batch": confirmations / args.n,
        "wait_reads_per_batch": (reads - confirmations) / args.n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="waits per mode")
    parser.add_argument("--window", type=float, default=60.0, help="batches finish within this many seconds")
    parser.add_argument("--scale", type=float, default=60.0, help="schedules run this many times faster")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="bench-events-home-")
    os.environ.update(
        AIRFLOW_HOME=home,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__LOGGING__LOGGING_LEVEL="ERROR",
    )
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    with sqlite3.connect(f"{home}/airflow.db") as db:  # readers (the waits) do not wait for the writer
        db.execute("PRAGMA journal_mode=WAL")

    from dashscope_batch_emulator.server import EmulatorServer

    from airflow_provider_dashscope_batch.events import wake

    wake.read_variable = _read_variable_from_db  # no triggerer supervisor here: read the row directly
    receiver = _serve_receiver()
    with EmulatorServer(
        api_key=API_KEY, time_scale=0, processing_rate=1.0, validating_seconds=1.0, finalizing_seconds=1.0
    ) as emulator:
        unlimited = {"batch_retrieve": 1e9, "batch_list": 1e9, "batch_create": 1e9, "file_read": 1e9}
        os.environ["AIRFLOW_CONN_DASHSCOPE_DEFAULT"] = json.dumps(
            {
                "conn_type": "dashscope",
                "password": API_KEY,
                "extra": {
                    "base_url": emulator.base_url,
                    "callback_base_url": receiver,
                    "rate_limits": unlimited,
                },
            }
        )
        sink = emulator.base_url.split("/compatible-mode")[0] + "/_emulator/health"
        results = {mode: run_mode(emulator, mode, args, sink) for mode in ("polling", "callback")}

    print(machine_line())
    print(f"N={args.n} waits per mode, batches finish within {args.window:.0f} s x scale {args.scale:.0f}")
    base = results["polling"]
    rows = []
    for mode, r in results.items():
        rows.append(
            [
                mode,
                f"{r['p50']:.1f}",
                f"{r['p99']:.1f}",
                f"{r['max']:.1f}",
                f"{base['p99'] / r['p99']:.0f}x",
                f"{r['reads_per_batch']:.2f}",
                f"{r['confirmations_per_batch']:.2f}",
                f"{r['wait_reads_per_batch']:.2f}",
            ]
        )
    print(
        table(
            [
                "mode",
                "delay p50 s",
                "p99 s",
                "max s",
                "p99 vs polling",
                "reads/batch",
                "confirm",
                "wait reads",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
