"""
Preflight validation benchmark: this provider's validator vs a naive ``json.loads``-per-line one.

Generates valid batch input files (default 50 MB / 5,000 lines and 500 MB / 50,000 lines, ~10 KB
per line of mixed English and Chinese prose) in a temporary directory that is deleted afterwards,
runs each validator in a fresh subprocess and reports throughput and that process's peak RSS.

    .venv/bin/python benchmarks/validation.py [--sizes 50 500] [--profile mix|en|zh] [--repeat 2]
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

LINE_BYTES = 10_000
EN = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "the",
    "analyst",
    "summarises",
    "quarterly",
    "revenue",
    "figures",
    "and",
    "asks",
    "the",
    "model",
    "to",
    "classify",
    "each",
    "customer",
    "review",
    "by",
    "sentiment",
    "and",
    "topic",
]
ZH = list(
    "杭州西湖是中國著名的風景名勝區位於浙江省杭州市西部因此得名它是中國十大風景名勝之一也是世界文化遺產"
)


def _text(rnd: random.Random, size: int, profile: str) -> str:
    out: list[str] = []
    total = 0
    while total < size:
        chinese = profile == "zh" or (profile == "mix" and rnd.random() < 0.4)
        if chinese:
            part = "".join(rnd.choices(ZH, k=20)) + ("。\n" if rnd.random() < 0.2 else "，")
        else:
            part = " ".join(rnd.choices(EN, k=12)) + ('." \n' if rnd.random() < 0.2 else ". ")
        out.append(part)
        total += len(part.encode())
    return "".join(out)


def generate(path: Path, lines: int, profile: str) -> None:
    """Write ``lines`` valid chat requests of about ``LINE_BYTES`` each."""
    rnd = random.Random(42)
    pool = [_text(rnd, LINE_BYTES - 250, profile) for _ in range(64)]
    with path.open("w", encoding="utf-8") as f:
        for i in range(lines):
            request = {
                "custom_id": f"request-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "qwen-plus",
                    "messages": [
                        {"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": pool[i % len(pool)]},
                    ],
                },
            }
            f.write(json.dumps(request, ensure_ascii=False, separators=(",", ":")) + "\n")


def run_one(validator: str, path: str) -> None:
    """Child process: validate ``path`` and print elapsed seconds (imports excluded) as JSON."""
    from typing import Any

    from pydantic import BaseModel

    from airflow_provider_dashscope_batch.validation.rules import validate_jsonl

    class Body(BaseModel):
        model: Any = None
        enable_thinking: Any = None

    class Request(BaseModel):
        custom_id: Any = None
        method: Any = None
        url: Any = None
        body: Body | None = None

    ok = True
    start = time.perf_counter()
    if validator == "naive":
        with open(path, encoding="utf-8") as f:
            for line in f:
                json.loads(line)
    elif validator == "pydantic":
        with open(path, "rb") as f:
            for line in f:
                Request.model_validate_json(line)
    else:
        ok = validate_jsonl(path).ok
    print(json.dumps({"seconds": time.perf_counter() - start, "ok": ok}))


def measure(validator: str, path: Path) -> tuple[float, float]:
    """Run one validator in a fresh process; return (seconds, peak RSS in MB) of that process."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", validator, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{validator} failed with exit code {proc.returncode}")
    result = json.loads(out)
    if not result["ok"]:
        raise SystemExit(f"{validator} rejected the generated file")
    return result["seconds"], usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 500], help="file sizes in MB (10^6)")
    parser.add_argument("--profile", choices=["mix", "en", "zh"], default="mix", help="text of the prompts")
    parser.add_argument("--validators", nargs="+", default=["naive", "pydantic", "provider"])
    parser.add_argument("--repeat", type=int, default=2, help="runs per validator; the best is kept")
    parser.add_argument("--smoke", action="store_true", help="smallest size: a CI check that it runs")
    parser.add_argument("--child", nargs=2, metavar=("VALIDATOR", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(*args.child)
        return
    if args.smoke:
        args.sizes, args.repeat = [1], 1

    python = sys.version.split()[0]
    print(f"python {python}, {os.cpu_count()} CPUs, profile={args.profile}, best of {args.repeat}")
    header = " | ".join(
        [f"{'input':>22}", f"{'validator':>9}", f"{'seconds':>7}", f"{'MB/s':>6}", "peak RSS MB", "vs naive"]
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="dashscope-bench-") as tmp:
        for size_mb in args.sizes:
            path = Path(tmp) / f"input-{size_mb}mb.jsonl"
            generate(path, lines=size_mb * 1_000_000 // LINE_BYTES, profile=args.profile)
            size = path.stat().st_size
            lines = size_mb * 1_000_000 // LINE_BYTES
            label = f"{size / 1e6:.0f} MB / {lines:,} lines"
            baseline = None
            for validator in args.validators:
                runs = [measure(validator, path) for _ in range(args.repeat)]
                seconds = min(r[0] for r in runs)
                rss = max(r[1] for r in runs)
                rate = size / seconds / 1e6
                baseline = baseline or (rate if validator == "naive" else None)
                ratio = f"{rate / baseline:.2f}x" if baseline else "-"
                print(
                    f"{label:>22} | {validator:>9} | {seconds:7.2f} | {rate:6.0f} | {rss:11.1f} | {ratio:>8}"
                )
            path.unlink()


if __name__ == "__main__":
    main()
