"""
Job-rounds benchmark: a follow-up round's build beside the first round's split, and the ledger's cost.

One JSONL input of ``--lines`` small chat requests (default 1,000,000) is split into shards of 50,000 lines
the way :class:`~airflow_provider_dashscope_batch.operators.shards.DashScopeShardedBatchOperator` splits
it (every line checked, each shard spooled to a local file). Every shard's first round is then taken as
answered except ``--resend`` percent (default 10: never ran, as after an expiry, with a few transient
failures among them), as local output and error files. Each contender runs in a fresh child whose RSS is
read after its set-up and at its peak (``/proc/self/clear_refs``, then ``VmHWM``):

* ``first round``: the split alone;
* ``follow-up round``: the split again (a new try re-splits the same input), and for each shard a fresh
  :class:`~airflow_provider_dashscope_batch.jobs.ledger.ShardLedger` fed its output and error files and
  the remainder written -- the work of building the next round, without the uploads;
* the same over the input's first tenth, to show that memory does not follow the input.

Usage: ``python benchmarks/rounds.py [--lines N] [--resend P]``; record the table in
``benchmarks/README.md`` with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine_line, report, run_child, table

SHARD = 50_000


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return float(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def make_input(path: Path, lines: int, resend: float, results: Path) -> None:
    """The input, and per shard the first round's output and error files (``resend`` % unanswered)."""
    every = round(100 / resend) if resend else 0
    with path.open("w") as out:
        for start in range(0, lines, SHARD):
            index = start // SHARD
            with (
                (results / f"output-{index:05d}.jsonl").open("w") as answered,
                (results / f"errors-{index:05d}.jsonl").open("w") as errors,
            ):
                for n in range(start, min(start + SHARD, lines)):
                    custom_id = f"req-{n:08d}"
                    body = {"model": "qwen-plus", "messages": [{"role": "user", "content": f"question {n}"}]}
                    request = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
                    out.write(json.dumps({**request, "body": body}) + "\n")
                    if every and n % every == 0:
                        if n % (every * 10) == 0:  # a tenth of the unanswered failed transiently
                            line = {"custom_id": custom_id, "response": {"status_code": 429}}
                            errors.write(json.dumps({**line, "error": {"code": "limit_requests"}}) + "\n")
                        continue  # the rest never ran
                    usage = {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}
                    response = {"status_code": 200, "body": {"usage": usage, "choices": []}}
                    answered.write(json.dumps({"custom_id": custom_id, "response": response}) + "\n")


def child(args: argparse.Namespace) -> None:
    from airflow_provider_dashscope_batch.jobs.ledger import ShardLedger
    from airflow_provider_dashscope_batch.sharding.split import ShardSizing, split_jsonl

    work = Path(tempfile.mkdtemp(dir=args.workdir))
    results = Path(args.results)
    sent = [0]
    ledger_seconds = [0.0]

    def spool(index: int) -> tuple[Any, str]:
        path = work / f"shard-{index:05d}.jsonl"
        return path.open("wb"), str(path)

    def first_round(shard: Any) -> Any:
        Path(shard.uri).unlink()
        return shard

    def follow_up(shard: Any) -> Any:
        started = time.perf_counter()
        ledger = ShardLedger()
        with (results / f"output-{shard.index:05d}.jsonl").open("rb") as output:
            ledger.add_output(output)
        with (results / f"errors-{shard.index:05d}.jsonl").open("rb") as errors:
            ledger.add_errors(errors)
        spooled = Path(shard.uri)
        with spooled.open("rb") as source, spooled.with_suffix(".round.jsonl").open("wb") as out:
            for line in ledger.remainder(source):
                out.write(line)
                sent[0] += 1
        spooled.unlink()
        spooled.with_suffix(".round.jsonl").unlink()
        ledger_seconds[0] += time.perf_counter() - started
        return shard

    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    before = _status_mb("VmRSS")
    started = time.perf_counter()
    result = split_jsonl(
        args.input,
        spool,
        sizing=ShardSizing(max_requests=SHARD),
        on_shard=first_round if args.child == "first" else follow_up,
    )
    seconds = time.perf_counter() - started
    report(
        {
            "requests": result.requests,
            "seconds": seconds,
            "ledger_seconds": ledger_seconds[0],
            "sent": sent[0],
            "rss_before": before,
            "rss_peak": _status_mb("VmHWM"),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--resend", type=float, default=10.0)
    parser.add_argument("--child")
    parser.add_argument("--input")
    parser.add_argument("--results")
    parser.add_argument("--workdir")
    parser.add_argument("--smoke", action="store_true", help="smallest size: a CI check that it runs")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.smoke:
        args.lines = 2_000
    print(machine_line())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-rounds-") as tmp:
        for share, lines in (("1/10 input", args.lines // 10), ("input", args.lines)):
            base = Path(tmp) / share.replace("/", "-").replace(" ", "-")
            (base / "results").mkdir(parents=True)
            source = base / "input.jsonl"
            make_input(source, lines, args.resend, base / "results")
            for contender in ("first", "follow-up"):
                env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
                child_args = [
                    "--child",
                    contender,
                    "--input",
                    str(source),
                    "--results",
                    str(base / "results"),
                ]
                done = run_child(Path(__file__), [*child_args, "--workdir", tmp], env, timeout=3600)
                data = done.data
                if not data:
                    print(done.stderr_tail, file=sys.stderr)
                    if args.smoke:
                        sys.exit(f"benchmark child {contender} failed")
                    continue
                per_request = data["ledger_seconds"] / data["requests"] * 1e6 if contender != "first" else 0
                rows.append(
                    [
                        f"{contender} round, {share}",
                        f"{data['requests']:,}",
                        f"{data['sent']:,}" if contender != "first" else "-",
                        f"{data['seconds']:.1f}",
                        f"{data['ledger_seconds']:.1f}" if contender != "first" else "-",
                        f"{per_request:.2f}" if contender != "first" else "-",
                        f"{data['rss_before']:.0f}",
                        f"{data['rss_peak']:.0f}",
                        f"{data['rss_peak'] - data['rss_before']:+.0f}",
                        f"{done.cpu_seconds:.1f}",
                    ]
                )
    headers = [
        "contender",
        "requests",
        "re-sent",
        "seconds",
        "ledger s",
        "ledger µs/request",
        "RSS before MiB",
        "peak RSS MiB",
        "growth MiB",
        "CPU s",
    ]
    print(table(headers, rows))
    print(machine_line())


if __name__ == "__main__":
    main()
