"""Trigger fan-out: N concurrent batch waits in one event loop, this provider's trigger against its peers.

Usage (from the repository root, bench environment; see ``benchmarks/README.md``)::

    .venv-bench/bin/python benchmarks/trigger_fanout.py            # N = 100, 1000, 3000 + rate checks
    .venv-bench/bin/python benchmarks/trigger_fanout.py --quick    # N = 100, 300 (~4 min)

For every (N, contender) a fresh ``dashscope-emulator`` process and a fresh child process. The emulator
clock is frozen while the N batches are created (each of its own input file, so every batch has the same,
exactly known creation time), each batch gets a random number of one-request-per-second lines, so batches
complete at random whole seconds uniformly spread over ``--window`` after the clock starts; every API
request is delayed by ``--latency`` (the emulator's latency fault). The child starts the clock, then runs
the N waits plus a loop-lag probe (a task sleeping 10 ms and recording the overshoot) in one ``asyncio``
loop.

Contenders:

* ``dashscope``: ``DashScopeBatchTrigger.run()`` as shipped: the shared status reader answers up to 20
  due waits with one list request (fixed interval: ``poll_backoff=1``; first poll jittered as shipped);
* ``per_batch``: the same trigger reading each wait with its own ``GET /batches/{id}`` (the earlier mode);
* ``openai``: ``OpenAIBatchTrigger.run()`` of apache-airflow-providers-openai, connection pointed at the
  emulator (it speaks the same API);
* ``to_thread``: the pattern of the Anthropic / common.ai triggers over this provider's sync hook:
  ``await asyncio.to_thread(hook.get_conn().retrieve_batch, id)`` then ``asyncio.sleep(poll)``.

The 5 s fan-out polls far above the account's limits, so its connection lifts the client's rate budget.

Measured: detection delay (event time minus the batch's exact completion time), worst loop lag, CPU
seconds of the waiting phase (and per detected batch), peak RSS of the waiting phase (``VmHWM`` after
resetting it post-import) and its growth over the post-import RSS, status requests (retrieve + list,
emulator counters) per status read of a wait.

The rate checks (part of the default run) run everything 10x faster (default poll schedule / 10, the
emulator's rate limiter and the connection's budget on 6 s "minutes"): 1000 waits at the documented limits
(requests per scaled minute, 429s), and 1000 waits finishing in ``--window`` with every limit lowered 10x
and ``--share-processes`` processes sharing the account (``rate_share`` 1/K): all must complete without
a 429 storm. A replay of the exact ``BatchPoller`` decisions over two hours at the true defaults gives the
per-batch request rate for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import threading
import time
from array import array
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    API_KEY,
    Emulator,
    airflow_env,
    loadavg1,
    machine_line,
    percentile,
    report,
    run_child,
    table,
)

CONTENDERS = ("dashscope", "per_batch", "openai", "to_thread")
BASELINE = "openai"
SELF_BASELINE = "per_batch"  # this provider's earlier mode: one retrieve per wait and poll
#: The 5 s fan-out polls far above the account's limits (1000 waits: 12,000 reads/min), so its
#: connection lifts the client's budget; the rate checks run with the budget and the emulator's limits.
UNLIMITED = {"batch_retrieve": 1e9, "batch_list": 1e9, "batch_create": 1e9, "file_read": 1e9}
PYCACHE = Path(tempfile.gettempdir()) / "bench-fanout-pycache"
SECONDS_PER_LINE = 1.0  # emulator processing_rate = 1 request / emulated second
PHASE_SECONDS = 1.0  # validating and finalizing


# ---------------------------------------------------------------------------------------------- child
def _status_kb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return float(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


async def _probe(stop: asyncio.Event, samples: array, rss: list[float]) -> None:
    """
    Record overshoot, CPU the loop thread used meanwhile and start offset of 10 ms sleeps (flat, in an
    array of doubles, so the probe's own memory stays out of the RSS growth); RSS every 100 sleeps.
    """
    origin = time.perf_counter()
    while not stop.is_set():
        if len(samples) % 300 == 0:
            rss.append(round(_status_kb("VmRSS") / 1024, 1))
        started, cpu = time.perf_counter(), time.thread_time()
        await asyncio.sleep(0.01)
        samples.extend((time.perf_counter() - started - 0.01, time.thread_time() - cpu, started - origin))


def _apply_variant(variant: str) -> None:
    """
    Diagnosis only: change the shared client's settings without editing the provider.

    ``inflight=K`` bounds the shared client to K requests in flight; ``keepalive`` gives its httpx pool
    100 keep-alive connections (httpx keeps 20 by default); ``gcfreeze`` calls ``gc.freeze()`` after the
    imports, so garbage collections no longer scan Airflow's imported objects; ``promotions`` counts, by
    type, the objects each generation-1 collection after the first second examines (the survivors move
    to the oldest generation, whose growth sets off the full collections).
    """
    import httpx

    from airflow_provider_dashscope_batch.hooks import dashscope as hook_module

    for part in filter(None, variant.split(",")):
        if part.startswith("inflight="):
            bound = int(part.split("=")[1])

            def bounded(
                key, factory, max_in_flight=0, _bound=bound, _original=hook_module.shared_async_client
            ):
                return _original(key, factory, _bound)

            hook_module.shared_async_client = bounded
        elif part == "keepalive":

            def patched(self, *a, _init=httpx.AsyncClient.__init__, **kw):
                kw.setdefault("limits", httpx.Limits(max_connections=100, max_keepalive_connections=100))
                _init(self, *a, **kw)

            httpx.AsyncClient.__init__ = patched
        elif part not in ("gcfreeze", "promotions"):
            raise SystemExit(f"unknown variant {part}")


def _scale_rate_periods(scale: float) -> None:
    """Time-scaled runs: every budget window of the connection shrinks like the emulator's."""
    from airflow_provider_dashscope_batch.client.ratelimit import RateLimit
    from airflow_provider_dashscope_batch.hooks import dashscope as hook_module

    def scaled(*args: Any, _parse=hook_module.parse_rate_limits, **kwargs: Any) -> dict[Any, Any]:
        return {k: RateLimit(v.limit, v.period * scale) for k, v in _parse(*args, **kwargs).items()}

    hook_module.parse_rate_limits = scaled


READS = [0]  # status reads issued by the waits of this child (the provider's contenders)


def _make_waiter(contender: str, poll: float, schedule: dict[str, float], files: dict[str, str]):
    """Return ``async wait(batch_id) -> status`` for a contender (imports happen here, before timing)."""
    if os.environ.get("BENCH_VARIANT"):
        _apply_variant(os.environ["BENCH_VARIANT"])
    if os.environ.get("BENCH_RATE_SCALE"):
        _scale_rate_periods(float(os.environ["BENCH_RATE_SCALE"]))
    if contender in ("dashscope", "per_batch"):
        from airflow_provider_dashscope_batch.client.errors import DashScopeError
        from airflow_provider_dashscope_batch.triggers.batch import DashScopeBatchTrigger
        from airflow_provider_dashscope_batch.waiting.protocol import BatchWait, PollAction, WaitSettings

        on_read, on_error = BatchWait.on_read, BatchWait.on_error

        def counted(method):
            def wrapper(*args, **kwargs):
                READS[0] += 1
                return method(*args, **kwargs)

            return wrapper

        BatchWait.on_read = counted(on_read)  # every status read of a wait ends in one of these
        BatchWait.on_error = counted(on_error)  # (``on_batch`` calls ``on_read``)

        class PerBatch(DashScopeBatchTrigger):
            """The earlier mode: each trigger sleeps, then sends its own ``GET /batches/{id}``."""

            async def wait_all(self, client):
                wait = self.batch_wait(self.batch_id)
                step = wait.start(time.time())
                while step.action is PollAction.WAIT:
                    await asyncio.sleep(step.delay)
                    try:
                        batch = await client.retrieve_batch(self.batch_id, max_retries=0)
                    except DashScopeError as exc:
                        step = wait.on_error(exc, time.time())
                    else:
                        step = wait.on_batch(batch, time.time())
                return wait.event(step).to_payload()

        trigger_class = PerBatch if contender == "per_batch" else DashScopeBatchTrigger

        async def wait(batch_id: str) -> str:
            trigger = trigger_class(
                batch_id,
                "dashscope_default",
                input_file_id=files.get(batch_id),
                wait=WaitSettings(**schedule),
            )
            async for event in trigger.run():
                return event.payload["status"] + ":" + str((event.payload.get("batch") or {}).get("status"))
            return "no-event"

    elif contender == "openai":
        from airflow.providers.openai.triggers.openai import OpenAIBatchTrigger

        async def wait(batch_id: str) -> str:
            trigger = OpenAIBatchTrigger("openai_bench", batch_id, poll_interval=poll, timeout=3600)
            async for event in trigger.run():
                return str(event.payload["status"])
            return "no-event"

    elif contender == "to_thread":
        from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook

        async def wait(batch_id: str) -> str:
            hook = DashScopeBatchHook("dashscope_default")
            while True:
                batch = await asyncio.to_thread(lambda: hook.get_conn().retrieve_batch(batch_id))
                if batch.status.is_terminal:
                    return str(batch.status.value)
                await asyncio.sleep(poll)

    else:
        raise SystemExit(f"unknown contender {contender}")
    return wait


def _start_clock(admin_url: str) -> float:
    """Start the frozen emulator clock; return emulated minus local wall-clock time."""
    import httpx

    with httpx.Client(base_url=admin_url, timeout=30, verify=False) as admin:  # plain HTTP: no TLS context
        admin.patch("/config", json={"time_scale": 1.0}).raise_for_status()  # no jump if already running
        before = time.time()
        emu_now = admin.get("/clock").json()["now"]
        return emu_now - (before + time.time()) / 2


async def _child_main(args: argparse.Namespace, plan: dict[str, Any]) -> dict[str, Any]:
    schedule = json.loads(args.schedule)
    wait = _make_waiter(args.contender, args.poll, schedule, plan.get("files", {}))
    batch_ids = list(plan["batches"])
    done_at: dict[str, float] = {}
    outcome: dict[str, str] = {}

    async def one(batch_id: str) -> None:
        outcome[batch_id] = await wait(batch_id)
        done_at[batch_id] = time.time()

    import gc

    gc.collect()
    if "gcfreeze" in os.environ.get("BENCH_VARIANT", ""):
        gc.freeze()  # diagnosis: keep the imported heap out of every later collection
    rss_base = _status_kb("VmRSS") / 1024
    _reset_peak_rss()
    offset = _start_clock(args.admin_url)

    gc_pauses: list[float] = []
    gc_full: list[tuple[float, float]] = []  # (seconds since the start, pause)
    gc_started = [0.0]

    promoted: dict[str, int] = {}  # BENCH_VARIANT=promotions: what generation-1 collections examine
    count_promotions = "promotions" in os.environ.get("BENCH_VARIANT", "")

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
            if count_promotions and info["generation"] == 1 and gc_started[0] - started > 1.0:
                for generation in (0, 1):
                    for obj in gc.get_objects(generation):
                        name = type(obj).__qualname__
                        promoted[name] = promoted.get(name, 0) + 1
        else:
            gc_pauses.append(time.perf_counter() - gc_started[0])
            if info["generation"] == 2:
                gc_full.append((gc_started[0] - started, gc_pauses[-1]))

    started = time.perf_counter()
    gc.callbacks.append(on_gc)
    cpu0 = time.process_time()
    t0 = time.time()
    stop = asyncio.Event()
    samples = array("d")
    rss: list[float] = []
    probe = asyncio.create_task(_probe(stop, samples, rss))
    tasks = []
    for batch_id in batch_ids:
        if not args.burst:  # Airflow's TriggerRunner.create_triggers() yields between two triggers
            await asyncio.sleep(0)
        tasks.append(asyncio.create_task(one(batch_id)))
    _, pending = await asyncio.wait(tasks, timeout=args.cap)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    stop.set()
    await probe
    wall = time.time() - t0
    cpu = time.process_time() - cpu0
    gc.callbacks.remove(on_gc)
    rss_peak = _status_kb("VmHWM") / 1024  # before the samples are unpacked below
    lags = list(zip(samples[0::3], samples[1::3], samples[2::3], strict=True))
    delays = []
    for batch_id, ready in done_at.items():
        completed = plan["t0"] + plan["batches"][batch_id] - offset
        delays.append(ready - completed)
    return {
        "n": len(batch_ids),
        "detected": len(done_at),
        "outcomes": _count(outcome.values()),
        "delays": delays,
        "worst_lag": max(lags)[0] if lags else None,
        "worst_lag_cpu": max(lags)[1] if lags else None,
        "worst_lag_at": max(lags)[2] if lags else None,
        "worst_lag_after_1s": max((lag for lag, _, at in lags if at >= 1.0), default=None),
        "worst_busy": max(cpu for _, cpu, _ in lags) if lags else None,
        "p99_lag": percentile([lag for lag, _, _ in lags], 99) if lags else None,
        "gc_worst": max(gc_pauses, default=0.0),
        "gc_total": sum(gc_pauses),
        "gc_full": len(gc_full),
        "gc_full_at": [(round(at, 2), round(pause * 1000)) for at, pause in gc_full],
        "promoted": dict(sorted(promoted.items(), key=lambda item: -item[1])[:25]),
        "gc_objects": len(gc.get_objects()),
        "lags_over_50ms": sum(1 for lag, _, _ in lags if lag > 0.05),
        "cpu": cpu,
        "reads": READS[0],
        "wall": wall,
        "rss_base_mb": rss_base,
        "rss_peak_mb": rss_peak,
        "rss_samples": rss,
        "clock_offset": offset,
    }


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def child(args: argparse.Namespace) -> None:
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("airflow").setLevel(logging.WARNING)
    plan = json.loads(Path(args.plan).read_text())
    if not args.profile:
        report(asyncio.run(_child_main(args, plan)))
        return
    import cProfile

    profiler = cProfile.Profile()
    result = profiler.runcall(asyncio.run, _child_main(args, plan))
    profiler.dump_stats(args.profile)
    report(result)


# --------------------------------------------------------------------------------------------- parent
def _input_jsonl(lines: int) -> bytes:
    rows = (
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "qwen-plus", "messages": [{"role": "user", "content": f"hi {i}"}]},
            }
        )
        for i in range(lines)
    )
    return ("\n".join(rows) + "\n").encode()


def _create_batches(
    emu: Emulator, n: int, window: tuple[float, float], seed: int
) -> tuple[dict[str, float], dict[str, str]]:
    """
    Create ``n`` batches finishing at random whole seconds in ``window``, each of its own input file.

    Returns batch id -> seconds to done, and batch id -> input file id.
    """
    rng = random.Random(seed)
    fixed = 2 * PHASE_SECONDS
    low, high = int(window[0] - fixed), int(window[1] - fixed)
    picks = [rng.randint(low, high) for _ in range(n)]

    def create(job: tuple[int, int]) -> tuple[str, float, str]:
        index, lines = job
        response = emu.api.post(
            "/files",
            files={"file": (f"in-{index}.jsonl", _input_jsonl(lines), "application/jsonl")},
            data={"purpose": "batch"},
        )
        response.raise_for_status()
        file_id = response.json()["id"]
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        response = emu.api.post("/batches", json=body)
        response.raise_for_status()
        return response.json()["id"], fixed + lines * SECONDS_PER_LINE, file_id

    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(create, enumerate(picks)))
    return {b: done for b, done, _ in made}, {b: f for b, _, f in made}


class _Sampler(threading.Thread):
    """Samples the emulator's status-read counters (retrieve, list) twice a second while a child runs."""

    ROUTE = "GET /batches/{batch_id}"

    def __init__(self, emu: Emulator) -> None:
        super().__init__(daemon=True)
        self.emu = emu
        self.samples: list[tuple[float, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            try:
                counts = self.emu.request_counts()
                self.samples.append(
                    (time.monotonic(), counts.get(self.ROUTE, 0), counts.get("GET /batches", 0))
                )
            except Exception:  # the emulator is busy; skip a sample
                continue


def run_scenario(
    n: int,
    contender: str,
    args: argparse.Namespace,
    schedule: dict[str, float],
    window: tuple[float, float],
    *,
    processes: int = 1,
    extra: dict[str, Any] | None = None,
    emulator_limits: dict[str, Any] | None = None,
    rate_scale: float | None = None,
) -> dict[str, Any]:
    """
    Fresh emulator + fresh child (or ``processes`` children sharing the account) for one (N, contender).

    :param extra: The DashScope connection's extras (default: the client's budget lifted).
    :param emulator_limits: Switch the emulator's rate limiter on with these settings.
    :param rate_scale: Shrink the connection's budget windows like ``period_scale`` shrinks the emulator's.
    """
    with (
        Emulator(
            "--time-scale",
            "0",
            "--processing-rate",
            str(1 / SECONDS_PER_LINE),
            "--validating-seconds",
            str(PHASE_SECONDS),
            "--finalizing-seconds",
            str(PHASE_SECONDS),
        ) as emu,
        tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp,
    ):
        t0 = emu.clock()
        batches, files = _create_batches(emu, n, window, seed=args.seed + n)
        ids = list(batches)
        plans = []
        for k in range(processes):
            plan = Path(tmp) / f"plan-{k}.json"
            mine = ids[k::processes]
            plan.write_text(
                json.dumps(
                    {"t0": t0, "batches": {b: batches[b] for b in mine}, "files": {b: files[b] for b in mine}}
                )
            )
            plans.append(plan)
        emu.add_latency(args.latency)
        if emulator_limits is not None:
            emu.admin.put("/rate-limits", json=emulator_limits).raise_for_status()
        emu.clear_request_counts()
        connections = {
            "dashscope_default": {
                "conn_type": "dashscope",
                "password": API_KEY,
                "extra": {
                    "base_url": emu.base_url,
                    **(extra if extra is not None else {"rate_limits": UNLIMITED}),
                },
            },
            "openai_bench": {"conn_type": "openai", "password": API_KEY, "host": emu.base_url},
        }
        load_before = loadavg1()
        sampler = _Sampler(emu)
        sampler.start()
        with airflow_env(connections) as env:
            # children keep compiled bytecode (this machine's shell sets PYTHONDONTWRITEBYTECODE), as an
            # installed deployment does; otherwise modules first imported inside the loop are compiled there
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
            if rate_scale is not None:
                env["BENCH_RATE_SCALE"] = str(rate_scale)

            def child_run(k: int) -> Any:
                return run_child(
                    Path(__file__),
                    [
                        "--child",
                        contender,
                        "--plan",
                        str(plans[k]),
                        "--admin-url",
                        f"{emu.root_url}/_emulator",
                        "--poll",
                        str(args.poll),
                        "--schedule",
                        json.dumps(schedule),
                        "--cap",
                        str(args.cap),
                        *(["--burst"] if args.burst else []),
                        *(["--profile", f"{args.profile}.{contender}.{n}"] if args.profile and not k else []),
                    ],
                    env,
                    timeout=args.cap + 180,
                )

            if processes == 1:
                results = [child_run(0)]
            else:
                with ThreadPoolExecutor(processes) as pool:
                    results = list(pool.map(child_run, range(processes)))
        sampler.stopped.set()
        sampler.join()
        counts = emu.request_counts()
        limiter = emu.admin.get("/rate-limits").json()
    for k, result in enumerate(results):
        if not result.data:
            raise SystemExit(
                f"{contender} N={n} child {k} produced no report (rc {result.returncode}):\n"
                f"{result.stderr_tail}"
            )
    data = _merge([r.data for r in results])
    data.update(
        contender=contender,
        n=n,
        processes=processes,
        retrieves=counts.get(_Sampler.ROUTE, 0),
        lists=counts.get("GET /batches", 0),
        requests=sum(counts.values()),
        rejected=sum(limiter.get("rejected", {}).values()),
        process_peak_rss_mb=max(r.peak_rss_mb for r in results),
        load=(load_before + loadavg1()) / 2,
        samples=sampler.samples,
    )
    return data


def _merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report of several children: counts and delays add up, the worst values are the worst."""
    if len(reports) == 1:
        return reports[0]
    merged = dict(reports[0])
    for key in ("n", "detected", "cpu", "reads", "gc_full"):
        merged[key] = sum(r[key] for r in reports)
    merged["delays"] = [d for r in reports for d in r["delays"]]
    for key in ("worst_lag", "worst_lag_after_1s", "gc_worst", "wall", "rss_peak_mb"):
        merged[key] = max(r[key] or 0 for r in reports)
    merged["rss_base_mb"] = max(r["rss_base_mb"] for r in reports)
    merged["outcomes"] = {}
    for r in reports:
        for outcome, count in r["outcomes"].items():
            merged["outcomes"][outcome] = merged["outcomes"].get(outcome, 0) + count
    return merged


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _p99(r: dict[str, Any] | None) -> float | None:
    """p99 detection delay, or ``None`` when some wait went undetected (its delay is unknown)."""
    if r is None or len(r["delays"]) != r["n"] or not r["delays"]:
        return None
    return percentile(r["delays"], 99)


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value is not None and base else "-"


def fanout_table(results: list[dict[str, Any]], poll: float) -> str:
    rows = []
    by_n: dict[int, dict[str, dict[str, Any]]] = {}
    for r in results:
        by_n.setdefault(r["n"], {})[r["contender"]] = r
    for n, group in by_n.items():
        own, peer = group.get(SELF_BASELINE), group.get(BASELINE)
        for contender, r in group.items():
            p99 = _p99(r)
            cpu_per = r["cpu"] / r["detected"] * 1000 if r["detected"] else None
            own_cpu = own["cpu"] / own["detected"] * 1000 if own and own["detected"] else None
            reads = r["reads"] or r["retrieves"]  # the peers' reads are their retrieves
            rows.append(
                [
                    n,
                    contender,
                    f"{r['detected']}/{r['n']}",
                    _fmt(percentile(r["delays"], 50) if r["delays"] else None),
                    _fmt(p99) if p99 is not None else f">{r['wall']:.0f}",
                    _fmt(p99 / poll, ".2f") + "x" if p99 is not None else "-",
                    _ratio(p99, _p99(own)),
                    _ratio(p99, _p99(peer)),
                    _fmt(r["worst_lag"] * 1000, ".0f"),
                    _fmt(r["worst_lag_after_1s"] * 1000, ".0f"),
                    _fmt(r["gc_worst"] * 1000, ".0f"),
                    r.get("gc_full", "-"),
                    _fmt(r["cpu"]),
                    _fmt(cpu_per, ".2f"),
                    _ratio(cpu_per, own_cpu),
                    _fmt(r["rss_peak_mb"] - r["rss_base_mb"], ".0f"),
                    _fmt((r["retrieves"] + r["lists"]) / reads if reads else None, ".3f"),
                    _fmt(r["load"], ".1f"),
                ]
            )
    return table(
        [
            "N",
            "contender",
            "detected",
            "p50 s",
            "p99 s",
            "p99/poll",
            f"p99 vs {SELF_BASELINE}",
            f"p99 vs {BASELINE}",
            "worst lag ms",
            "after 1st s",
            "worst GC ms",
            "full GCs",
            "CPU s",
            "CPU ms/batch",
            f"CPU vs {SELF_BASELINE}",
            "RSS growth MB",
            "req/wait/round",
            "load",
        ],
        rows,
    )


# --------------------------------------------------------------------------------------- rate check
def simulate_default_rate(n: int = 1000, hours: float = 2.0, seed: int = 0) -> dict[str, float]:
    """Replay ``BatchPoller`` at the default schedule for ``n`` waits started together (never finishing)."""
    from airflow_provider_dashscope_batch.waiting.protocol import BatchPoller

    rng = random.Random(seed)
    horizon = hours * 3600
    polls: list[float] = []
    for _ in range(n):
        poller = BatchPoller(rng=random.Random(rng.random()))
        t = 0.0
        step = poller.first_delay(t)
        while True:
            t += step.delay
            if t > horizon:
                break
            polls.append(t)
            step = poller.on_status("in_progress", t)
    polls.sort()
    worst, j = 0, 0
    for i, start in enumerate(polls):  # sliding 60 s window starting at each poll
        while j < len(polls) and polls[j] < start + 60:
            j += 1
        worst = max(worst, j - i)
    last_hour = sum(1 for p in polls if p >= horizon - 3600) / 60
    first_10 = sum(1 for p in polls if p < 600) / 10
    return {"worst_minute": worst, "steady_per_min": last_hour, "first_10min_per_min": first_10}


DOCUMENTED_PER_MINUTE = {
    "batch_create": 1000,
    "batch_retrieve": 1000,
    "batch_list": 100,
    "batch_cancel": 1000,
}
RATE_SCALE = 10.0  # the default schedule and every rate window run 10x faster


def _scaled_default_schedule() -> dict[str, float]:
    from airflow_provider_dashscope_batch.waiting.protocol import (
        DEFAULT_MAX_POLL_INTERVAL,
        DEFAULT_POLL_BACKOFF,
        DEFAULT_POLL_INTERVAL,
    )

    return {
        "poll_interval": DEFAULT_POLL_INTERVAL / RATE_SCALE,
        "max_poll_interval": DEFAULT_MAX_POLL_INTERVAL / RATE_SCALE,
        "poll_backoff": DEFAULT_POLL_BACKOFF,
    }


def _worst_minute(samples: list[tuple[float, int, int]], column: int, minute: float) -> int:
    worst = 0
    for i, sample in enumerate(samples):
        later = [s[column] for s in samples[i:] if s[0] <= sample[0] + minute]
        worst = max(worst, later[-1] - sample[column])
    return worst


def rate_check(args: argparse.Namespace) -> dict[str, Any]:
    """
    The real trigger at the default schedule, everything 10x faster: the emulator enforces the documented
    limits on 6 s windows, the connection's budget (defaults) runs on 6 s windows too; count requests per
    scaled minute and 429s.
    """
    schedule = _scaled_default_schedule()
    run_for = args.rate_seconds
    ns = argparse.Namespace(**{**vars(args), "cap": run_for, "poll": schedule["poll_interval"]})
    # Batches that outlast the run: 10,000 lines at 1 line/s.
    data = run_scenario(
        args.rate_n,
        "dashscope",
        ns,
        schedule,
        window=(run_for * 50, run_for * 50),
        extra={},
        emulator_limits={"period_scale": 1 / RATE_SCALE},
        rate_scale=1 / RATE_SCALE,
    )
    minute = 60 / RATE_SCALE
    samples = data["samples"]
    data.update(
        worst_retrieve_minute=_worst_minute(samples, 1, minute),
        worst_list_minute=_worst_minute(samples, 2, minute),
        run_for=run_for,
    )
    return data


def account_check(args: argparse.Namespace) -> dict[str, Any]:
    """
    Limits lowered 10x on the emulator and in the connection, ``--share-processes`` triggerer processes
    sharing the account (``rate_share`` = 1/K each), default schedule and windows 10x faster; batches
    finish in ``--window``. Every wait must complete without a 429 storm.
    """
    lowered = {kind: limit / 10 for kind, limit in DOCUMENTED_PER_MINUTE.items()}
    k = args.share_processes
    schedule = _scaled_default_schedule()
    ns = argparse.Namespace(**{**vars(args), "poll": schedule["poll_interval"]})
    data = run_scenario(
        args.rate_n,
        "dashscope",
        ns,
        schedule,
        tuple(args.window),
        processes=k,
        extra={"rate_limits": lowered, "rate_share": 1 / k},
        emulator_limits={"limits": lowered, "period_scale": 1 / RATE_SCALE},
        rate_scale=1 / RATE_SCALE,
    )
    data.update(lowered=lowered)
    return data


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 100, 300 and a 60 s rate check")
    parser.add_argument("--sizes", type=int, nargs="+", help="N values (default 100 1000 3000)")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--poll", type=float, default=5.0, help="poll interval, seconds")
    parser.add_argument("--latency", type=float, default=0.05, help="added latency per request, seconds")
    parser.add_argument("--window", type=float, nargs=2, default=(15.0, 60.0), help="completion window, s")
    parser.add_argument(
        "--grace", type=float, default=120.0, help="seconds after the window before giving up"
    )
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--rate-n", type=int, default=1000)
    parser.add_argument("--rate-seconds", type=float, default=150.0, help="rate check duration (scaled)")
    parser.add_argument("--share-processes", type=int, default=2, help="processes sharing the account")
    parser.add_argument("--no-rate-check", action="store_true")
    parser.add_argument("--only-rate-check", action="store_true")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument(
        "--no-warm-up", action="store_true", help="skip the unreported N=10 run per contender"
    )
    parser.add_argument("--profile", help="cProfile each child into PROFILE.<contender>.<N>")
    parser.add_argument("--smoke", action="store_true", help="smallest size: a CI check that it runs")
    # child mode
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--admin-url", help=argparse.SUPPRESS)
    parser.add_argument("--schedule", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--cap", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--burst",
        action="store_true",
        help="start all N waits in one loop iteration (default: one per iteration, as the triggerer does)",
    )
    args = parser.parse_args()
    if args.child:
        args.contender = args.child
        child(args)
        return
    if args.smoke:
        args.window, args.grace, args.poll = (2.0, 4.0), 20.0, 1.0
        args.no_rate_check = args.no_warm_up = True
        args.contenders = [c for c in args.contenders if c in ("dashscope", "openai")]
    sizes = args.sizes or ([10] if args.smoke else [100, 300] if args.quick else [100, 1000, 3000])
    if args.quick:
        args.rate_seconds = min(args.rate_seconds, 60.0)
    args.cap = args.window[1] + args.grace
    schedule = {"poll_interval": args.poll, "max_poll_interval": args.poll, "poll_backoff": 1.0}
    print(machine_line())
    print(
        f"poll {args.poll:g} s, latency {args.latency * 1000:g} ms/request, completions uniform in "
        f"{args.window[0]:g}-{args.window[1]:g} s, give up {args.grace:g} s after the window",
        flush=True,
    )
    if not args.no_warm_up:  # fills the bytecode cache of each contender's imports; not reported
        warm = argparse.Namespace(**{**vars(args), "cap": 15.0})
        for contender in args.contenders:
            run_scenario(10, contender, warm, schedule, (3.0, 5.0))
    results: list[dict[str, Any]] = []
    if not args.only_rate_check:
        for n in sizes:
            for contender in args.contenders:
                r = run_scenario(n, contender, args, schedule, tuple(args.window))
                results.append(r)
                d = r["delays"]
                print(
                    f"  N={n:>5} {contender:>10}: detected {r['detected']}/{n}, "
                    f"p99 {percentile(d, 99) if d else float('nan'):.1f} s, "
                    f"lag {r['worst_lag'] * 1000:.0f} ms, "
                    f"{r['wall']:.0f} s wall, load {r['load']:.1f}",
                    flush=True,
                )
        print()
        print(fanout_table(results, args.poll))
    rate = account = None
    if not args.no_rate_check:
        sim = simulate_default_rate(args.rate_n)
        rate = rate_check(args)
        print()
        print(
            f"Default poll schedule, {args.rate_n} waits started together, everything {RATE_SCALE:g}x faster "
            f"(emulator enforcing the documented limits on {60 / RATE_SCALE:g} s windows, budget windows "
            "the same), "
            f"{rate['run_for']:g} s = {rate['run_for'] * RATE_SCALE / 60:.0f} default-time minutes:"
        )
        print(
            table(
                ["method", "worst minute: retrieves", "lists", "reads", "429s", "limits"],
                [
                    [
                        "real trigger, shared status reader",
                        rate["worst_retrieve_minute"],
                        rate["worst_list_minute"],
                        rate["reads"],
                        rate["rejected"],
                        "1000 / 100",
                    ],
                    ["BatchPoller replay, 2 h, per batch", sim["worst_minute"], "-", "-", "-", "1000 / 100"],
                ],
            )
        )
        print(
            f"  (real run: {rate['retrieves']} retrieves, {rate['lists']} lists, "
            f"worst lag {rate['worst_lag'] * 1000:.0f} ms)"
        )
        account = account_check(args)
        d = account["delays"]
        print()
        print(
            f"Limits lowered 10x ({account['lowered']} per minute), {account['processes']} processes "
            f"sharing the account (rate_share 1/{account['processes']}), {args.rate_n} waits, completions in "
            f"{args.window[0]:g}-{args.window[1]:g} s, default schedule and windows {RATE_SCALE:g}x faster:"
        )
        print(
            table(
                ["detected", "p50 s", "p99 s", "429s", "retrieves", "lists", "worst lag ms", "load"],
                [
                    [
                        f"{account['detected']}/{account['n']}",
                        _fmt(percentile(d, 50) if d else None),
                        _fmt(_p99(account)),
                        account["rejected"],
                        account["retrieves"],
                        account["lists"],
                        _fmt(account["worst_lag"] * 1000, ".0f"),
                        _fmt(account["load"], ".1f"),
                    ]
                ],
            )
        )
    if args.json:
        for r in results + [x for x in (rate, account) if x]:
            r.pop("samples", None)
        Path(args.json).write_text(
            json.dumps({"fanout": results, "rate": rate, "account": account}, indent=1)
        )
    print(machine_line())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
