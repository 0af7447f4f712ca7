"""
Cost preflight benchmark: validation + token/cost estimate vs validation alone vs a naive ``json.loads`` loop.

Generates chat (mixed English/Chinese, as ``benchmarks/validation.py``) and embedding input files of
50 MB and 500 MB in a temporary directory (deleted afterwards) and runs each contender in a fresh
subprocess (time excludes imports and the tokenizer's one-off load, reported apart; peak RSS from
``os.wait4``; only the estimating contenders load the tokenizer, whose vocabulary is a fixed cost):

* ``naive``: ``for line in open(path): json.loads(line)``;
* ``validate``: ``validate_jsonl(path)`` (today's preflight);
* ``preflight``: ``validate_jsonl(path, on_line=estimator.feed)`` with the sampling estimate;
* ``full``: the same with every request counted by the tokenizer (the reference total).

It prints each contender's time and ratio, the sampled total's error against the full count, and the
fallback approximation's per-request error against the tokenizer (mean and worst, over every request).

    .venv/bin/python benchmarks/cost.py [--sizes 50 500] [--kinds chat embeddings]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validation import LINE_BYTES, _text
from validation import generate as generate_chat

CONTENDERS = ("naive", "validate", "preflight", "full", "accuracy")


def generate_embeddings(path: Path, lines: int) -> None:
    """Write ``lines`` embedding requests of about ``LINE_BYTES`` each (10 inputs per request)."""
    rnd = random.Random(43)
    pool = [[_text(rnd, (LINE_BYTES - 250) // 10, "mix") for _ in range(10)] for _ in range(64)]
    with path.open("w", encoding="utf-8") as f:
        for i in range(lines):
            request = {
                "custom_id": f"request-{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "text-embedding-v4", "input": pool[i % len(pool)]},
            }
            f.write(json.dumps(request, ensure_ascii=False, separators=(",", ":")) + "\n")


def run_one(contender: str, path: str) -> None:
    """Child process: run one contender over ``path``; print a JSON report."""
    from airflow_provider_dashscope_batch.cost import estimate as estimate_module
    from airflow_provider_dashscope_batch.cost import tokens
    from airflow_provider_dashscope_batch.cost.budget import CostPolicy
    from airflow_provider_dashscope_batch.cost.estimate import CostEstimator, _decode
    from airflow_provider_dashscope_batch.cost.pricing import load_price_table
    from airflow_provider_dashscope_batch.validation.rules import validate_jsonl

    load_start = time.perf_counter()
    encode = tokens.load_tokenizer() if contender in ("preflight", "full", "accuracy") else None
    load_seconds = time.perf_counter() - load_start
    table, region = load_price_table("cn-beijing")
    report: dict[str, object] = {"load_seconds": load_seconds}
    if contender == "full":
        estimate_module._SAMPLE_FRACTION = 1.0  # count every request exactly
    start = time.perf_counter()
    if contender == "naive":
        with open(path, encoding="utf-8") as f:
            for line in f:
                json.loads(line)
    elif contender == "validate":
        assert validate_jsonl(path).ok
    elif contender in ("preflight", "full"):
        estimator = CostEstimator(table, region, CostPolicy(), source=path)
        assert validate_jsonl(path, on_line=estimator.feed).ok
        estimate = estimator.finish()
        assert estimate is not None
        report.update(input_tokens=estimate.input_tokens, exact=estimate.exact_requests, n=estimate.requests)
    else:  # accuracy of the fallback approximation, request by request
        estimator = CostEstimator(table, region, CostPolicy(), source=path)
        errors: list[float] = []
        with open(path, "rb") as f:
            for line in f:
                body = _decode(line).body
                texts, fixed, _ = estimator._texts(body)
                exact = fixed + sum(encode(t) for t in texts)  # type: ignore[misc]
                approx = fixed + sum(tokens.approximate_tokens(t) for t in texts)
                errors.append((approx - exact) / exact)
        report.update(
            mean=sum(errors) / len(errors),
            mean_abs=sum(abs(e) for e in errors) / len(errors),
            worst=max(errors, key=abs),
        )
    report["seconds"] = time.perf_counter() - start
    print(json.dumps(report))


def measure(contender: str, path: Path) -> tuple[dict, float]:
    """Run one contender in a fresh process; return its report and peak RSS in MB."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", contender, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{contender} failed on {path}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 500], help="file sizes in MB (10^6)")
    parser.add_argument("--kinds", nargs="+", default=["chat", "embeddings"], choices=["chat", "embeddings"])
    parser.add_argument("--smoke", action="store_true", help="smallest size: a CI check that it runs")
    parser.add_argument("--child", nargs=2, metavar=("CONTENDER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(*args.child)
        return
    if args.smoke:
        args.sizes, args.kinds = [1], ["chat"]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load}")
    header = (
        f"{'input':>28} | {'contender':>9} | {'seconds':>7} | {'MB/s':>5} | {'RSS MB':>6} | "
        f"{'vs naive':>8} | {'vs validate':>11} | notes"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="dashscope-cost-bench-") as tmp:
        for kind in args.kinds:
            for size_mb in args.sizes:
                path = Path(tmp) / f"{kind}-{size_mb}mb.jsonl"
                lines = size_mb * 1_000_000 // LINE_BYTES
                if kind == "chat":
                    generate_chat(path, lines=lines, profile="mix")
                else:
                    generate_embeddings(path, lines)
                size = path.stat().st_size
                label = f"{kind} {size / 1e6:.0f} MB / {lines:,} lines"
                seconds: dict[str, float] = {}
                full_tokens = None
                for contender in CONTENDERS:
                    report, rss = measure(contender, path)
                    seconds[contender] = report["seconds"]
                    notes = ""
                    if contender == "full":
                        full_tokens = report["input_tokens"]
                        notes = f"{full_tokens:,} input tokens (all counted)"
                    elif contender == "preflight":
                        sampled = report["input_tokens"]
                        notes = f"{sampled:,} input tokens, {report['exact']:,}/{report['n']:,} counted"
                        seconds["_sampled"] = sampled
                    elif contender == "accuracy":
                        notes = (
                            f"fallback error per request: mean {report['mean']:+.1%}, mean |e| "
                            f"{report['mean_abs']:.1%}, worst {report['worst']:+.1%}"
                        )
                    notes += (
                        f"; tokenizer load {report['load_seconds']:.1f}s" if contender == "preflight" else ""
                    )
                    rate = size / report["seconds"] / 1e6
                    vs_naive = seconds["naive"] / report["seconds"]
                    vs_validate = (
                        f"{report['seconds'] / seconds['validate']:.2f}x time"
                        if "validate" in seconds
                        else "-"
                    )
                    print(
                        f"{label:>28} | {contender:>9} | {report['seconds']:7.2f} | {rate:5.0f} | "
                        f"{rss:6.1f} | {vs_naive:7.2f}x | {vs_validate:>11} | {notes}"
                    )
                if full_tokens:
                    error = (seconds["_sampled"] - full_tokens) / full_tokens
                    print(f"{label:>28} | sampled total vs full count: {error:+.3%}")
                path.unlink()


if __name__ == "__main__":
    main()
