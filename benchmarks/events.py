"""Finish-event sources against polling: detection delay and status requests per batch, side by side.

Usage (from the repository root, project venv)::

    .venv/bin/python benchmarks/events.py                 # 100 and 1,000 outstanding batches
    .venv/bin/python benchmarks/events.py --n 100         # quicker

One run, one process: a throw-away Airflow home (SQLite metadata DB, migrated), the emulator on loopback
(clock at real speed, one request per second per batch), the provider's receiver app on loopback (uvicorn),
and for ``queue`` a RabbitMQ broker (``tests/rabbitmq_server.py``; the mode is skipped when rabbitmq-server
or aiormq is not installed). For each N, N batches finish uniformly spread over ``--window`` seconds, and
each source detects them:

* ``polling``: N ``DashScopeBatchTrigger`` waits on the default schedule (first poll after 60-240 s, then
  60 s growing x1.5 to 300 s) in one event loop;
* ``list``: the finish watcher (:class:`~airflow_provider_dashscope_batch.events.watcher.FinishWatch`) on
  its default list poll (60 s): one ``GET /batches`` per interval for all N;
* ``callback``: each batch's finish callback reaches the receiver, which confirms it with one read and
  posts it to the mailbox; the watcher reads the mailbox once a second (real time) and confirms each post
  with one read; its list poll runs as the net (a delivery the sender gave up on);
* ``queue``: EventBridge delivers each finish (a CloudEvents envelope, the batch in ``data``) to an
  ApsaraMQ for RabbitMQ queue; the watcher reads the queue every ``queue_interval`` (1 s, real time) and
  confirms each message's batch with one read; its list poll runs as the net. A loopback endpoint stands
  in for EventBridge: the emulator posts each finish's event to it, and it publishes the body to the
  queue (one AMQP connection, persistent messages).

``polling`` and ``list`` run ``--scale`` times faster (schedules and batch durations alike) and their delays
are reported multiplied back by ``--scale``; ``callback`` and ``queue`` delays are real. Outside a triggerer
there is no supervisor, so the waits and the watcher read and write their Variables straight through
Airflow's Variable model (the same rows the supervisor would). Detection delay: the moment the event is
yielded minus the moment the emulator sent the batch's finish notification (its EventBridge event for
``queue``; for ``polling`` and ``list`` the notification goes to a sink). Requests: the emulator's
``GET /batches`` and ``GET /batches/{id}`` counters per batch (the receiver's and the watcher's
confirmations included).

``--burst N`` measures instead what apache/airflow#56050 does to a burst, through the public path on a
real deployment (``tests/deployment/scenario_support.py``: api-server, scheduler, dag-processor and
triggerer as separate processes, PostgreSQL when installed): N batches finish at once; the finish watcher
(list poll every 5 s) turns them into Asset events, and a results DAG scheduled on the Asset runs. Once
with the watcher's catch-up event off, once with it on (two connections, two Assets, two DAGs). Reported:
how many finishes are in no run 60 s after the burst (they wait for a later finish), and the delay from
each finish's Asset event to the creation of the run that took it. Run it with each Airflow leg's Python.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line, percentile, table

if TYPE_CHECKING:
    from dashscope_batch_emulator.server import EmulatorServer
    from rabbitmq_server import RabbitMQServer

    from airflow_provider_dashscope_batch.events.watcher import FinishWatch

LIST, RETRIEVE = "GET /batches", "GET /batches/{batch_id}"
API_KEY = "sk-bench-events-0123456789"
SECRET = "bench-finish-events-secret"
CONN = "dashscope_default"
QUEUE_CONN = "dashscope_finish_queue"
MODES = ("polling", "list", "callback", "queue")
#: The modes whose delays are real time (the others run ``--scale`` times faster).
REAL_TIME = ("callback", "queue")
TESTS = Path(__file__).resolve().parents[1] / "tests"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _served(app: Any) -> Iterator[str]:
    """Serve the ASGI ``app`` on a loopback port (uvicorn, in a thread) until the block ends; its URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


def _receiver_app() -> Any:
    from fastapi import FastAPI

    from airflow_provider_dashscope_batch.events.receiver import create_app
    from airflow_provider_dashscope_batch.events.tokens import ROUTE_PREFIX

    root = FastAPI()
    root.mount(ROUTE_PREFIX, create_app())
    return root


def _eventbridge_app(broker: RabbitMQServer) -> Any:
    """EventBridge's RabbitMQ target: each event POSTed to ``/{queue}`` is published to that queue."""
    import aiormq
    from rabbitmq_server import publish
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    @contextlib.asynccontextmanager
    async def connected(app: Starlette) -> AsyncIterator[None]:
        connection = await aiormq.connect(broker.url)
        app.state.channel = await connection.channel()
        try:
            yield
        finally:
            await connection.close()

    async def deliver(request: Request) -> Response:
        await publish(request.app.state.channel, request.path_params["queue"], await request.body())
        return Response(status_code=204)

    return Starlette(routes=[Route("/{queue}", deliver, methods=["POST"])], lifespan=connected)


@dataclass(frozen=True)
class EventBridge:
    """A rule with an ApsaraMQ for RabbitMQ target: the emulator's finish events reach a queue."""

    broker: RabbitMQServer
    #: The stand-in endpoint's URL (:func:`_eventbridge_app`).
    url: str

    def route(self, emulator: EmulatorServer) -> None:
        """Point the emulator's events and the queue connection at a fresh queue (none of a past run's)."""
        queue = f"finishes-{secrets.token_hex(4)}"
        self.broker.declare(queue)
        conn = {
            "conn_type": "amqp",
            "host": "127.0.0.1",
            "port": self.broker.port,
            "login": self.broker.login,
            "password": self.broker.password,
            "extra": {"queue": queue},
        }
        os.environ[f"AIRFLOW_CONN_{QUEUE_CONN.upper()}"] = json.dumps(conn)
        emulator.configure(eventbridge_target=f"{self.url}/{queue}")


def _eventbridge(stack: contextlib.ExitStack) -> EventBridge | None:
    """A broker and the EventBridge stand-in, stopped with ``stack``; None (said) if RabbitMQ is missing."""
    sys.path.append(str(TESTS))  # appended: the test folders' names must not shadow packages
    from rabbitmq_server import RabbitMQServer

    if not RabbitMQServer.available():
        print("queue: skipped (rabbitmq-server or aiormq is not installed)", file=sys.stderr, flush=True)
        return None
    broker = RabbitMQServer()
    stack.callback(broker.stop)
    broker.start()
    return EventBridge(broker, stack.enter_context(_served(_eventbridge_app(broker))))


def _get_variable(key: str) -> str | None:
    from airflow.models.variable import Variable

    return Variable.get(key, default_var=None)


def _put_variable(key: str, value: str) -> None:
    from airflow.models.variable import Variable

    Variable.set(key, value)


def _create(emulator, n: int, window: float, mode: str, sink: str, seed: int) -> list[tuple[str, str]]:
    """N marked batches (what the create operator makes with a finish-events secret)."""
    from airflow_provider_dashscope_batch.client import DashScopeClient
    from airflow_provider_dashscope_batch.events.callback import finish_event_metadata
    from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook

    rng = random.Random(seed)
    made = []
    hook = DashScopeBatchHook()
    body = {"model": "batch-test-model", "messages": [{"role": "user", "content": "hi"}]}
    files: dict[int, str] = {}  # one input file per line count (uploads are limited to 3 a second)
    with (
        DashScopeClient(api_key=API_KEY, base_url=emulator.base_url) as client,
        tempfile.TemporaryDirectory() as d,
    ):
        for i in range(n):
            lines = max(1, round(rng.uniform(0.05, 1.0) * window))
            if lines not in files:
                path = Path(d) / f"in-{lines}.jsonl"
                line = {"method": "POST", "url": "/v1/chat/ds-test", "body": body}
                rows = (json.dumps({"custom_id": f"r{j}", **line}) + "\n" for j in range(lines))
                path.write_text("".join(rows))
                files[lines] = client.upload_file(path).id
            file_id = files[lines]
            key = f"airflow-bench-{seed}-{i}-{time.monotonic_ns()}"
            metadata = {
                "idempotency_key": key,
                **finish_event_metadata(hook, key, callback=mode == "callback"),
            }
            metadata.setdefault("ds_batch_finish_callback", sink)
            batch = client.create_batch(input_file_id=file_id, endpoint="/v1/chat/ds-test", metadata=metadata)
            made.append((batch.id, file_id))
    return made


async def _poll_all(made: list[tuple[str, str]], scale: float) -> dict[str, float]:
    from airflow_provider_dashscope_batch.triggers.batch import DashScopeBatchTrigger
    from airflow_provider_dashscope_batch.waiting.protocol import WaitSettings

    schedule = {"poll_interval": 60 / scale, "max_poll_interval": 300 / scale, "poll_backoff": 1.5}
    ended: dict[str, float] = {}

    async def one(batch_id: str, file_id: str) -> None:
        trigger = DashScopeBatchTrigger(batch_id, input_file_id=file_id, wait=WaitSettings(**schedule))
        async for event in trigger.run():
            assert event.payload["status"] == "terminal", event.payload
            ended[batch_id] = time.time()

    await asyncio.gather(*(one(b, f) for b, f in made))
    return ended


def _watch(mode: str, scale: float) -> FinishWatch:
    from airflow_provider_dashscope_batch.events.watcher import (
        DEFAULT_POLL_INTERVAL,
        DashScopeBatchFinishTrigger,
    )

    # the mailbox or the queue with the list poll as the net (a delivery the sender gave up on)
    sources = {"callback": {"mailbox_interval": 1.0}, "queue": {"queue_conn_id": QUEUE_CONN}}
    trigger = DashScopeBatchFinishTrigger(
        CONN, poll_interval=DEFAULT_POLL_INTERVAL / scale, **sources.get(mode, {})
    )
    return trigger.watch(get=_get_variable, put=_put_variable)


async def _watch_all(watch: FinishWatch, made: list[tuple[str, str]]) -> dict[str, float]:
    wanted = {b for b, _ in made}
    ended: dict[str, float] = {}
    while not wanted <= ended.keys():
        async for payload in watch.round():
            if "batch_id" in payload:  # not the catch-up event
                ended[payload["batch_id"]] = time.time()
        await asyncio.sleep(watch.interval)
    await _release(watch)
    return ended


async def _release(watch: FinishWatch) -> None:
    """Close the watcher's queue connection: it belongs to the event loop that opened it."""
    if watch.queue is not None:
        await watch.queue.aclose()


def run_mode(
    emulator, mode: str, n: int, args: argparse.Namespace, sink: str, bridge: EventBridge | None
) -> dict[str, float]:
    from airflow.models.variable import Variable

    from airflow_provider_dashscope_batch.events.mailbox import variable_key
    from airflow_provider_dashscope_batch.events.watcher import cursor_key

    emulator.reset()
    Variable.delete(cursor_key(CONN))
    Variable.delete(variable_key(CONN))
    emulator.set_clock(time_scale=0)  # every batch starts together when the clock starts
    if mode == "queue":
        bridge.route(emulator)
    made = _create(emulator, n, args.window, mode, sink, args.seed)
    watch = None if mode == "polling" else _watch(mode, args.scale)
    if watch is not None:
        asyncio.run(_baseline(watch))  # the watcher's first round: the batches are running
    emulator.clear_request_counts()
    emulator.set_clock(time_scale=1.0)
    ended = asyncio.run(_poll_all(made, args.scale) if watch is None else _watch_all(watch, made))
    counts = emulator.request_counts()
    kind = "eventbridge" if mode == "queue" else "callback"
    sent = {d["batch_id"]: d["sent_at"] for d in emulator.callbacks() if d["kind"] == kind}
    factor = 1.0 if mode in REAL_TIME else args.scale
    delays = sorted(max(0.0, ended[b] - sent[b]) * factor for b, _ in made)
    reads = counts.get(LIST, 0) + counts.get(RETRIEVE, 0)
    return {
        "p50": percentile(delays, 50),
        "p99": percentile(delays, 99),
        "max": delays[-1],
        "lists_per_batch": counts.get(LIST, 0) / n,
        "reads_per_batch": reads / n,
        "events": len(ended),
    }


async def _baseline(watch: FinishWatch) -> None:
    async for _ in watch.round():
        raise AssertionError("no batch has finished yet")
    await _release(watch)


BURST_DAGS = """
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, get_current_context, task

from airflow_provider_dashscope_batch.events import finished_batches_asset
from airflow_provider_dashscope_batch.events.watcher import payloads

for conn_id, catch_up in (("dashscope_plain", None), ("dashscope_catch_up", 10.0)):
    asset = finished_batches_asset(conn_id, poll_interval=5, catch_up_delay=catch_up)
    with DAG(f"burst_{conn_id}", schedule=[asset], start_date=datetime(2025, 1, 1), catchup=False):

        @task
        def count() -> int:
            events = get_current_context()["triggering_asset_events"]
            return sum(len(payloads(of_asset)) for of_asset in events.values())

        count()
"""


def _burst_runs(airflow, dag_id: str) -> dict[str, float]:
    """batch id -> seconds from its Asset event to the creation of the run that took it."""
    rows = airflow.query(
        "SELECT dr.queued_at, ae.timestamp, ae.extra FROM dag_run dr"
        " JOIN dagrun_asset_event dae ON dae.dag_run_id = dr.id"
        " JOIN asset_event ae ON ae.id = dae.event_id WHERE dr.dag_id = :dag_id",
        dag_id=dag_id,
    )
    taken = {}
    for queued, stamp, extra in rows:
        payload = (json.loads(extra) if isinstance(extra, str) else extra or {}).get("payload") or {}
        if "batch_id" in payload:
            taken[payload["batch_id"]] = (queued - stamp).total_seconds()
    return taken


def _burst_recorded(airflow, uri: str) -> dict[str, float]:
    rows = airflow.query(
        "SELECT ae.timestamp, ae.extra FROM asset_event ae JOIN asset a ON a.id = ae.asset_id"
        " WHERE a.uri = :uri",
        uri=uri,
    )
    found = {}
    for stamp, extra in rows:
        payload = (json.loads(extra) if isinstance(extra, str) else extra or {}).get("payload") or {}
        found[payload.get("batch_id") or f"catch-up {stamp}"] = stamp.timestamp()
    return found


def burst(n: int) -> list[list[str]]:
    """The #56050 measurement (see the module docstring); one table row per connection."""
    import importlib.metadata

    sys.path.insert(0, str(TESTS / "deployment"))
    import scenario_support
    from dashscope_batch_emulator.server import EmulatorServer

    from airflow_provider_dashscope_batch.client import DashScopeClient

    rows = []
    version = importlib.metadata.version("apache-airflow")
    dags = Path(tempfile.mkdtemp(prefix="bench-burst-dags-"))
    (dags / "burst_dags.py").write_text(BURST_DAGS)
    scenario_support.DAG_IDS = ("burst_dashscope_plain", "burst_dashscope_catch_up")
    with EmulatorServer(api_key=f"sk-bench-{secrets.token_hex(8)}", time_scale=0) as emulator:
        conn = {
            "conn_type": "dashscope",
            "password": emulator.api_key,
            "extra": {"base_url": emulator.base_url, "finish_events_secret": SECRET},
        }
        postgres = scenario_support.PostgresServer() if scenario_support.PostgresServer.available() else None
        if postgres is not None:
            postgres.start()
        home = Path(tempfile.mkdtemp(prefix="bench-burst-home-"))
        airflow = scenario_support.Deployment(home, json.dumps(conn), postgres)
        airflow.env.update(
            AIRFLOW__CORE__DAGS_FOLDER=str(dags),
            AIRFLOW_CONN_DASHSCOPE_PLAIN=json.dumps(conn),
            AIRFLOW_CONN_DASHSCOPE_CATCH_UP=json.dumps(conn),
        )
        client = DashScopeClient(api_key=emulator.api_key, base_url=emulator.base_url)
        file_id = client.upload_file(scenario_support.SAMPLE_REQUESTS).id
        try:
            airflow.start()
            for conn_id in ("dashscope_plain", "dashscope_catch_up"):
                rows.append(_burst_one(airflow, emulator, client, file_id, conn_id, n, version, postgres))
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
        finally:
            airflow.stop()
            client.close()
            if postgres is not None:
                postgres.stop()
    return rows


def _burst_one(airflow, emulator, client, file_id, conn_id, n, version, postgres) -> list[str]:
    from scenario_support import wait_for

    from airflow_provider_dashscope_batch.events import asset_uri
    from airflow_provider_dashscope_batch.events.tokens import MARK_KEY, mark
    from airflow_provider_dashscope_batch.events.watcher import cursor_key

    def watching() -> bool:
        found = airflow.api("GET", f"/variables/{cursor_key(conn_id)}", ok=(200, 404))
        return bool(found.get("value")) and json.loads(found["value"]).get("since") is not None

    def create(name: str) -> str:
        key = f"airflow-{name}-{time.monotonic_ns()}"
        metadata = {"idempotency_key": key, MARK_KEY: mark(SECRET, conn_id, key)}
        return client.create_batch(input_file_id=file_id, endpoint="/v1/chat/ds-test", metadata=metadata).id

    dag_id, uri = f"burst_{conn_id}", asset_uri(conn_id)
    wait_for(watching, f"the {conn_id} watcher's first round", timeout=300)
    batches = {create(f"{conn_id}-{i}") for i in range(n)}
    emulator.advance(3600)  # every batch finishes at once
    wait_for(lambda: batches <= _burst_recorded(airflow, uri).keys(), "the burst's Asset events", timeout=300)
    last_event = max(t for b, t in _burst_recorded(airflow, uri).items() if b in batches)
    while time.time() < last_event + 60:  # the scheduler's and the catch-up's time to take them
        time.sleep(2)
    taken = _burst_runs(airflow, dag_id)
    stranded = batches - taken.keys()
    runs = len(airflow.query("SELECT id FROM dag_run WHERE dag_id = :dag_id", dag_id=dag_id))
    waited = "-"
    if stranded:  # a later finish takes them along: they waited until then
        later = time.time()
        create(f"{conn_id}-later")
        emulator.advance(3600)
        wait_for(lambda: batches <= _burst_runs(airflow, dag_id).keys(), "the stranded finishes", timeout=300)
        waited = f"{later - last_event:.0f}+ s (until the next finish)"
    delays = sorted(taken[b] for b in batches if b in taken)
    db = "PostgreSQL" if postgres is not None else "SQLite"
    return [
        f"{version} {db}",
        "on (10 s)" if conn_id == "dashscope_catch_up" else "off",
        str(n),
        str(runs),
        str(len(stranded)),
        waited,
        f"{percentile(delays, 50):.1f}" if delays else "-",
        f"{percentile(delays, 99):.1f}" if delays else "-",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="100,1000", help="outstanding batches, comma-separated")
    parser.add_argument("--window", type=float, default=60.0, help="batches finish within this many seconds")
    parser.add_argument("--scale", type=float, default=60.0, help="schedules run this many times faster")
    parser.add_argument("--modes", default=",".join(MODES), help="sources to measure, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="smallest size: a CI check that it runs")
    parser.add_argument("--burst", type=int, help="measure apache/airflow#56050 on a deployment instead")
    args = parser.parse_args()
    if args.burst:
        rows = burst(args.burst)
        print(machine_line())
        headers = ["Airflow", "catch-up", "finishes", "runs", "in no run at +60 s", "they wait"]
        print(table([*headers, "taken p50 s", "taken p99 s"], rows))
        return
    if args.smoke:
        args.n, args.window = "10", 5.0

    home = tempfile.mkdtemp(prefix="bench-events-home-")
    os.environ.update(
        AIRFLOW_HOME=home,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__LOGGING__LOGGING_LEVEL="ERROR",
    )
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    with sqlite3.connect(f"{home}/airflow.db") as db:  # readers do not wait for the writer
        db.execute("PRAGMA journal_mode=WAL")

    from dashscope_batch_emulator.server import EmulatorServer

    from airflow_provider_dashscope_batch.events import wake, watcher

    wake.read_variable = _get_variable  # no triggerer supervisor here: read the row directly
    watcher.CLAIM_SETTLE = 0.05
    results: dict[tuple[int, str], dict[str, float]] = {}
    modes = args.modes.split(",")
    with (
        contextlib.ExitStack() as stack,
        EmulatorServer(
            api_key=API_KEY, time_scale=0, processing_rate=1.0, validating_seconds=1.0, finalizing_seconds=1.0
        ) as emulator,
    ):
        receiver = stack.enter_context(_served(_receiver_app()))
        bridge = _eventbridge(stack) if "queue" in modes else None
        modes = [m for m in modes if m != "queue" or bridge is not None]
        unlimited = {"batch_retrieve": 1e9, "batch_list": 1e9, "batch_create": 1e9, "file_read": 1e9}
        os.environ["AIRFLOW_CONN_DASHSCOPE_DEFAULT"] = json.dumps(
            {
                "conn_type": "dashscope",
                "password": API_KEY,
                "extra": {
                    "base_url": emulator.base_url,
                    "callback_base_url": receiver,
                    "finish_events_secret": SECRET,
                    "rate_limits": unlimited,
                },
            }
        )
        sink = emulator.base_url.split("/compatible-mode")[0] + "/_emulator/health"
        for n in (int(x) for x in args.n.split(",")):
            for mode in modes:
                started = time.monotonic()
                results[(n, mode)] = run_mode(emulator, mode, n, args, sink, bridge)
                r = results[(n, mode)]
                print(
                    f"N={n} {mode}: p50 {r['p50']:.1f} s, p99 {r['p99']:.1f} s, "
                    f"{r['reads_per_batch']:.2f} requests/batch ({time.monotonic() - started:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )

    print(machine_line())
    print(f"batches finish within {args.window:.0f} s x scale {args.scale:.0f}")
    rows = []
    for (n, mode), r in results.items():
        base = results.get((n, "polling"), r)
        rows.append(
            [
                str(n),
                mode,
                f"{r['p50']:.1f}",
                f"{r['p99']:.1f}",
                f"{r['max']:.1f}",
                f"{base['p99'] / r['p99']:.0f}x" if r["p99"] else "-",
                f"{r['lists_per_batch']:.3f}",
                f"{r['reads_per_batch']:.2f}",
                str(int(r["events"])),
            ]
        )
    headers = [
        "N",
        "source",
        "delay p50 s",
        "p99 s",
        "max s",
        "p99 vs polling",
        "lists/batch",
        "requests/batch",
    ]
    print(table([*headers, "events"], rows))


if __name__ == "__main__":
    main()
