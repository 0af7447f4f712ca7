"""Trigger fan-out: N concurrent batch waits in one event loop, this provider's trigger against its peers.

Usage (from the repository root, bench environment; see ``benchmarks/README.md``)::

    .venv-bench/bin/python benchmarks/trigger_fanout.py            # N = 100, 1000, 3000 (~20 min)
    .venv-bench/bin/python benchmarks/trigger_fanout.py --quick    # N = 100, 300 (~4 min)

For every (N, contender) a fresh ``dashscope-emulator`` process and a fresh child process. The emulator
clock is frozen while the N batches are created (so every batch has the same, exactly known creation
time), each batch gets a random number of one-request-per-second lines, so batches complete at random
whole seconds uniformly spread over ``--window`` after the clock starts; every API request is delayed by
``--latency`` (the emulator's latency fault). The child starts the clock, then runs the N waits plus a
loop-lag probe (a task sleeping 10 ms and recording the overshoot) in one ``asyncio`` loop.

Contenders:

* ``dashscope``: ``DashScopeBatchTrigger.run()`` (fixed interval: ``poll_backoff=1``, so the cap is the
  interval; first poll jittered as shipped);
* ``openai``: ``OpenAIBatchTrigger.run()`` of apache-airflow-providers-openai, connection pointed at the
  emulator (it speaks the same API);
* ``to_thread``: the pattern of the Anthropic / common.ai triggers over this provider's sync hook:
  ``await asyncio.to_thread(hook.get_conn().retrieve_batch, id)`` then ``asyncio.sleep(poll)``.

Measured: detection delay (event time minus the batch's exact completion time), worst loop lag, CPU
seconds of the waiting phase, peak RSS of the waiting phase (``VmHWM`` after resetting it post-import)
and its growth over the post-import RSS, retrieve requests per batch (emulator counters).

``--rate-check`` (part of the default run) measures the request rate of 1000 waits at the DEFAULT poll
schedule: the real trigger with the schedule scaled down 10× in time (6 s interval, 30 s cap; requests
per 6 s equal requests per minute at the defaults), and a replay of the exact ``BatchPoller`` decisions
over two hours at the true defaults.
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

CONTENDERS = ("dashscope", "openai", "to_thread")
BASELINE = "openai"
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


async def _probe(stop: asyncio.Event, lags: list[tuple[float, float, float]]) -> None:
    """Record (overshoot, CPU the loop thread used meanwhile, start offset) of 10 ms sleeps."""
    origin = time.perf_counter()
    while not stop.is_set():
        started, cpu = time.perf_counter(), time.thread_time()
        await asyncio.sleep(0.01)
        lags.append((time.perf_counter() - started - 0.01, time.thread_time() - cpu, started - origin))


def _apply_variant(variant: str) -> None:
    """
    Diagnosis only: change the shared client's settings without editing the provider.

    ``inflight=K`` bounds the shared client to K requests in flight; ``keepalive`` gives its httpx pool
    100 keep-alive connections (httpx keeps 20 by default); ``gcfreeze`` calls ``gc.freeze()`` after the
    imports, so garbage collections no longer scan Airflow's imported objects.
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
        elif part != "gcfreeze":
            raise SystemExit(f"unknown variant {part}")


def _make_waiter(contender: str, poll: float, schedule: dict[str, float]):
    """Return ``async wait(batch_id) -> status`` for a contender (imports happen here, before timing)."""
    if os.environ.get("BENCH_VARIANT"):
        _apply_variant(os.environ["BENCH_VARIANT"])
    if contender == "dashscope":
        from airflow_provider_dashscope_batch.triggers.batch import DashScopeBatchTrigger

        async def wait(batch_id: str) -> str:
            trigger = DashScopeBatchTrigger(batch_id, "dashscope_default", **schedule)
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

    with httpx.Client(base_url=admin_url, timeout=30) as admin:
        admin.patch("/config", json={"time_scale": 1.0}).raise_for_status()
        before = time.time()
        emu_now = admin.get("/clock").json()["now"]
        return emu_now - (before + time.time()) / 2


async def _child_main(args: argparse.Namespace, plan: dict[str, Any]) -> dict[str, Any]:
    schedule = json.loads(args.schedule)
    wait = _make_waiter(args.contender, args.poll, schedule)
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
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses.append(time.perf_counter() - gc_started[0])

    gc.callbacks.append(on_gc)
    cpu0 = time.process_time()
    t0 = time.time()
    stop = asyncio.Event()
    lags: list[tuple[float, float, float]] = []
    probe = asyncio.create_task(_probe(stop, lags))
    tasks = [asyncio.create_task(one(b)) for b in batch_ids]
    _, pending = await asyncio.wait(tasks, timeout=args.cap)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    stop.set()
    await probe
    wall = time.time() - t0
    cpu = time.process_time() - cpu0
    gc.callbacks.remove(on_gc)
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
        "lags_over_50ms": sum(1 for lag, _, _ in lags if lag > 0.05),
        "cpu": cpu,
        "wall": wall,
        "rss_base_mb": rss_base,
        "rss_peak_mb": _status_kb("VmHWM") / 1024,
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


def _create_batches(emu: Emulator, n: int, window: tuple[float, float], seed: int) -> dict[str, float]:
    """Create ``n`` batches finishing at random whole seconds in ``window``; return id -> seconds to done."""
    rng = random.Random(seed)
    fixed = 2 * PHASE_SECONDS
    low, high = int(window[0] - fixed), int(window[1] - fixed)
    files: dict[int, str] = {}
    for lines in range(low, high + 1):
        response = emu.api.post(
            "/files",
            files={"file": (f"in-{lines}.jsonl", _input_jsonl(lines), "application/jsonl")},
            data={"purpose": "batch"},
        )
        response.raise_for_status()
        files[lines] = response.json()["id"]
    picks = [rng.randint(low, high) for _ in range(n)]

    def create(lines: int) -> tuple[str, float]:
        body = {"input_file_id": files[lines], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        response = emu.api.post("/batches", json=body)
        response.raise_for_status()
        return response.json()["id"], fixed + lines * SECONDS_PER_LINE

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(create, picks))


class _Sampler(threading.Thread):
    """Samples the emulator's retrieve counter twice a second while a child runs."""

    ROUTE = "GET /batches/{batch_id}"

    def __init__(self, emu: Emulator) -> None:
        super().__init__(daemon=True)
        self.emu = emu
        self.samples: list[tuple[float, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            try:
                self.samples.append((time.monotonic(), self.emu.request_counts().get(self.ROUTE, 0)))
            except Exception:  # the emulator is busy; skip a sample
                continue


def run_scenario(
    n: int, contender: str, args: argparse.Namespace, schedule: dict[str, float], window: tuple[float, float]
) -> dict[str, Any]:
    """Fresh emulator + fresh child for one (N, contender); returns the child's report and counters."""
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
        batches = _create_batches(emu, n, window, seed=args.seed + n)
        plan = Path(tmp) / "plan.json"
        plan.write_text(json.dumps({"t0": t0, "batches": batches}))
        emu.add_latency(args.latency)
        emu.clear_request_counts()
        connections = {
            "dashscope_default": {
                "conn_type": "dashscope",
                "password": API_KEY,
                "extra": {"base_url": emu.base_url},
            },
            "openai_bench": {"conn_type": "openai", "password": API_KEY, "host": emu.base_url},
        }
        load_before = loadavg1()
        sampler = _Sampler(emu)
        sampler.start()
        with airflow_env(connections) as env:
            result = run_child(
                Path(__file__),
                [
                    "--child",
                    contender,
                    "--plan",
                    str(plan),
                    "--admin-url",
                    f"{emu.root_url}/_emulator",
                    "--poll",
                    str(args.poll),
                    "--schedule",
                    json.dumps(schedule),
                    "--cap",
                    str(args.cap),
                    *(["--profile", f"{args.profile}.{contender}.{n}"] if args.profile else []),
                ],
                env,
                timeout=args.cap + 180,
            )
        sampler.stopped.set()
        sampler.join()
        counts = emu.request_counts()
    if not result.data:
        raise SystemExit(
            f"{contender} N={n} produced no report (rc {result.returncode}):\n{result.stderr_tail}"
        )
    data = result.data
    data.update(
        contender=contender,
        retrieves=counts.get(_Sampler.ROUTE, 0),
        requests=sum(counts.values()),
        process_peak_rss_mb=result.peak_rss_mb,
        load=(load_before + loadavg1()) / 2,
        samples=sampler.samples,
    )
    return data


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def fanout_table(results: list[dict[str, Any]], poll: float) -> str:
    rows = []
    by_n: dict[int, dict[str, dict[str, Any]]] = {}
    for r in results:
        by_n.setdefault(r["n"], {})[r["contender"]] = r
    for n, group in by_n.items():
        base = group.get(BASELINE)
        for contender, r in group.items():
            delays = r["delays"]
            p50 = percentile(delays, 50) if delays else None
            p99 = percentile(delays, 99) if len(delays) == r["n"] else None  # undetected waits: p99 unknown
            base_p99 = percentile(base["delays"], 99) if base and len(base["delays"]) == base["n"] else None
            ratio = f"{p99 / base_p99:.2f}x" if p99 is not None and base_p99 else "-"
            rows.append(
                [
                    n,
                    contender,
                    f"{r['detected']}/{r['n']}",
                    _fmt(p50),
                    _fmt(p99) if p99 is not None else f">{r['wall']:.0f}",
                    _fmt(p99 / poll, ".2f") + "x" if p99 is not None else "-",
                    ratio,
                    _fmt(r["worst_lag"] * 1000, ".0f"),
                    _fmt(r["worst_lag_after_1s"] * 1000, ".0f"),
                    _fmt(r["gc_worst"] * 1000, ".0f"),
                    _fmt(r["cpu"]),
                    _fmt(r["rss_peak_mb"], ".0f"),
                    _fmt(r["rss_peak_mb"] - r["rss_base_mb"], ".0f"),
                    _fmt(r["retrieves"] / r["n"], ".1f"),
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
            f"p99 vs {BASELINE}",
            "worst lag ms",
            "after 1st s",
            "worst GC ms",
            "CPU s",
            "peak RSS MB",
            "RSS growth MB",
            "GETs/batch",
            "load",
        ],
        rows,
    )


# --------------------------------------------------------------------------------------- rate check
def simulate_default_rate(n: int = 1000, hours: float = 2.0, seed: int = 0) -> dict[str, float]:
    """Replay ``BatchPoller`` at the default schedule for ``n`` waits started together (never finishing)."""
    from airflow_provider_dashscope_batch.policy import BatchPoller

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


def rate_check(args: argparse.Namespace) -> dict[str, Any]:
    """Run the real trigger at the default schedule scaled 10x faster; count requests per scaled minute."""
    from airflow_provider_dashscope_batch.policy import (
        DEFAULT_MAX_POLL_INTERVAL,
        DEFAULT_POLL_BACKOFF,
        DEFAULT_POLL_INTERVAL,
    )

    scale = 10.0
    schedule = {
        "poll_interval": DEFAULT_POLL_INTERVAL / scale,
        "max_poll_interval": DEFAULT_MAX_POLL_INTERVAL / scale,
        "poll_backoff": DEFAULT_POLL_BACKOFF,
    }
    run_for = args.rate_seconds
    ns = argparse.Namespace(**{**vars(args), "cap": run_for, "poll": schedule["poll_interval"]})
    # Batches that outlast the run: 10,000 lines at 1 line/s.
    data = run_scenario(args.rate_n, "dashscope", ns, schedule, window=(run_for * 50, run_for * 50))
    samples = data["samples"]
    minute = 60 / scale
    # The waits start about one (scaled) minimum interval before the first counted poll, and stop
    # when the counter stops moving (the child then shuts down while sampling goes on).
    final = samples[-1][1]
    first = next(t for t, c in samples if c > 0) - schedule["poll_interval"]
    last = next(t for t, c in samples if c == final)
    worst = 0
    for i, (t_i, c_i) in enumerate(samples):
        later = [c for t, c in samples[i:] if t <= t_i + minute]
        worst = max(worst, later[-1] - c_i)
    # steady state: the last third of the run (default-time minutes 17-25 of a 150 s run)
    tail = [(t, c) for t, c in samples if first + run_for * 2 / 3 <= t <= last]
    steady = (tail[-1][1] - tail[0][1]) / ((tail[-1][0] - tail[0][0]) / minute) if len(tail) > 1 else 0
    data.update(scale=scale, worst_minute=worst, steady_per_min=steady, run_for=run_for)
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
    parser.add_argument("--no-rate-check", action="store_true")
    parser.add_argument("--only-rate-check", action="store_true")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--profile", help="cProfile each child into PROFILE.<contender>.<N>")
    # child mode
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--admin-url", help=argparse.SUPPRESS)
    parser.add_argument("--schedule", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--cap", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.contender = args.child
        child(args)
        return
    sizes = args.sizes or ([100, 300] if args.quick else [100, 1000, 3000])
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
    rate = None
    if not args.no_rate_check:
        sim = simulate_default_rate(args.rate_n)
        rate = rate_check(args)
        print()
        print(
            f"Default poll schedule, {args.rate_n} waits started together (60 s interval, x1.5 backoff, "
            "300 s cap, jittered):"
        )
        print(
            table(
                ["method", "worst minute", "steady req/min", "limit"],
                [
                    [
                        f"real trigger, schedule /{rate['scale']:g}, {rate['run_for']:g} s"
                        f" (= {rate['run_for'] * rate['scale'] / 60:.0f} min)",
                        rate["worst_minute"],
                        f"{rate['steady_per_min']:.0f}",
                        1000,
                    ],
                    ["BatchPoller replay, 2 h", sim["worst_minute"], f"{sim['steady_per_min']:.0f}", 1000],
                ],
            )
        )
        print(f"  (real run: {rate['retrieves']} retrieves, worst lag {rate['worst_lag'] * 1000:.0f} ms)")
    if args.json:
        for r in results + ([rate] if rate else []):
            r.pop("samples", None)
        Path(args.json).write_text(json.dumps({"fanout": results, "rate": rate}, indent=1))
    print(machine_line())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
