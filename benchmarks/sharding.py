"""
Sharding benchmark: split + upload and merge of an input past one batch's limits, against plain tools.

One JSONL input of ``--lines`` chat requests and about ``--mb`` megabytes (default 150,000 lines, 1.5 GB:
10 KB per line) goes to the emulator (its own process) two ways, each in a fresh child process whose RSS is
read after its imports and again at its peak (``/proc/self/clear_refs``, then ``VmHWM``):

* ``sharding``: :func:`~airflow_provider_dashscope_batch.sharding.split_jsonl` with every line checked,
  each shard spooled to a local file, uploaded as soon as it is complete and deleted (what
  ``DashScopeShardedBatchOperator`` does before it creates the batches); also over the input's first
  tenth, to show that memory does not grow with the input;
* ``split -l + upload``: coreutils ``split -l 40000`` (no checks), then one upload per piece.

The shards then run as batches, and their results are merged two ways:

* ``merge``: the results transfer with ``batch_ids=`` (verified, hashed, one manifest) to a local folder,
  over all shards and over the first alone. Its child first pays what every Airflow task pays before
  or at its first ``ObjectStoragePath`` use, whatever it transfers -- importing Airflow, the plugins the
  task runner loads before ``execute()``, the provider filesystems Airflow registers on first use --
  so the RSS before is an Airflow task's floor and the growth is the merge's own;
* ``download + cat``: each output file downloaded with the client and appended to one local file.

Usage: ``python benchmarks/sharding.py [--quick] [--lines N --mb M]``; record the table in
``benchmarks/README.md`` with the command.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    API_KEY,
    Emulator,
    airflow_env,
    machine_line,
    report,
    run_child,
    table,
)

MiB = 1 << 20
SHARD_LINES = 40_000  # the split's default for these lines (80 % of 50,000); the baseline uses the same


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return float(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


# ---------------------------------------------------------------------------------------------- child
def child(args: argparse.Namespace) -> None:
    """Prepare the contender (imports, client), reset the peak RSS, time the operation alone."""
    from airflow_provider_dashscope_batch.client import DashScopeClient

    client = DashScopeClient(api_key=API_KEY, base_url=args.base_url, timeout=600)
    work = Path(tempfile.mkdtemp(prefix=args.child.replace(" ", "_") + "-", dir=args.workdir))
    if args.child == "sharding":
        from airflow_provider_dashscope_batch.sharding.split import split_jsonl

        def operation() -> dict[str, Any]:
            file_ids = []

            def spool(index: int) -> tuple[Any, str]:
                path = work / f"shard-{index:05d}.jsonl"
                return path.open("wb"), str(path)

            def upload(shard: Any) -> Any:
                file_ids.append(client.upload_file(shard.uri).id)
                Path(shard.uri).unlink()
                return shard

            result = split_jsonl(args.path, spool, on_shard=upload)
            return {"bytes": sum(s.bytes for s in result.shards), "file_ids": file_ids}

    elif args.child == "split -l + upload":

        def operation() -> dict[str, Any]:
            subprocess.run(
                ["split", "-l", str(SHARD_LINES), "-d", args.path, str(work / "piece-")], check=True
            )
            file_ids, size = [], 0
            for piece in sorted(work.iterdir()):
                uploaded = client.upload_file(piece, filename=piece.name + ".jsonl")
                file_ids.append(uploaded.id)
                size += uploaded.bytes
                piece.unlink()
            return {"bytes": size, "file_ids": file_ids}

    elif args.child == "merge":
        from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
            DashScopeBatchResultsToObjectStorageOperator,
        )

        operator = DashScopeBatchResultsToObjectStorageOperator(
            task_id="merge", batch_ids=args.batch_ids.split(","), destination=work.as_uri()
        )
        # Fixed costs outside the measurement, paid by every Airflow task before or at its first
        # ObjectStoragePath use whatever it transfers: the connection lookup, the plugins the task runner
        # loads in get_template_context() before execute(), and the provider filesystems Airflow registers
        # on a process's first ObjectStoragePath.fs (the amazon provider's brings boto3).
        operator.hook.get_conn().retrieve_batch(args.batch_ids.split(",")[0])
        from airflow.providers.common.compat.sdk import ObjectStoragePath
        from airflow.sdk.plugins_manager import integrate_macros_plugins

        integrate_macros_plugins()
        ObjectStoragePath(work.as_uri()).fs  # noqa: B018 - resolving the filesystem is the point

        def operation() -> dict[str, Any]:
            manifest = operator.execute(context={})
            return {"bytes": manifest["totals"]["bytes"], "lines": manifest["totals"]["output_lines"]}

    elif args.child == "download + cat":

        def operation() -> dict[str, Any]:
            size = 0
            with (work / "output.jsonl").open("wb") as out:
                for batch_id in args.batch_ids.split(","):
                    size += client.download_file(client.retrieve_batch(batch_id).output_file_id, out)
            return {"bytes": size}

    else:
        raise SystemExit(f"unknown contender {args.child}")
    gc.collect()
    rss_base = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    started = time.perf_counter()
    data = operation()
    seconds = time.perf_counter() - started
    report({**data, "seconds": seconds, "rss_base_mb": rss_base, "rss_peak_mb": _status_mb("VmHWM")})


# --------------------------------------------------------------------------------------------- parent
def _write_input(path: Path, lines: int, target: int) -> None:
    """``lines`` chat requests of about ``target / lines`` bytes each."""
    filler = "lorem ipsum dolor sit amet "
    per_line = max(1, (target // lines - 150) // len(filler))
    text = filler * per_line
    with path.open("w") as handle:
        for i in range(lines):
            body = {"model": "qwen-plus", "messages": [{"role": "user", "content": f"{i} {text}"}]}
            row = {"custom_id": f"r{i:07d}", "method": "POST", "url": "/v1/chat/completions", "body": body}
            handle.write(json.dumps(row) + "\n")


def _run_batches(emu: Emulator, file_ids: list[str]) -> list[str]:
    batch_ids = []
    for file_id in file_ids:
        created = emu.api.post(
            "/batches",
            json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        )
        created.raise_for_status()
        batch_ids.append(created.json()["id"])
    deadline = time.monotonic() + 1800
    for batch_id in batch_ids:
        while (batch := emu.api.get(f"/batches/{batch_id}").json())["status"] != "completed":
            if batch["status"] in ("failed", "expired", "cancelled") or time.monotonic() > deadline:
                raise SystemExit(f"batch {batch_id} ended {batch['status']}: {batch.get('errors')}")
            emu.advance(60)
            time.sleep(0.5)
    return batch_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="15,000 lines, 150 MB")
    parser.add_argument("--lines", type=int, default=150_000)
    parser.add_argument("--mb", type=int, default=1500)
    parser.add_argument("--smoke", action="store_true", help="smallest size: a CI check that it runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--batch-ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    lines, mb = (2_000, 4) if args.smoke else (15_000, 150) if args.quick else (args.lines, args.mb)
    print(machine_line(), flush=True)
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-sharding-") as tmp,
        Emulator(
            "--processing-rate", "1000000", "--validating-seconds", "0", "--finalizing-seconds", "0"
        ) as emu,
        airflow_env(
            {
                "dashscope_default": {
                    "conn_type": "dashscope",
                    "password": API_KEY,
                    "extra": {"base_url": emu.base_url},
                }
            }
        ) as env,
    ):
        source = Path(tmp) / "input.jsonl"
        _write_input(source, lines, mb * MiB)
        size = source.stat().st_size
        print(f"input: {lines:,} lines, {size / MiB:,.0f} MiB", flush=True)
        common = ["--base-url", emu.base_url, "--workdir", tmp]
        head = Path(tmp) / "head.jsonl"  # the first tenth: the same rows, to show the memory is flat
        with source.open("rb") as full, head.open("wb") as part:
            for _, line in zip(range(lines // 10), full, strict=False):
                part.write(line)
        uploads: dict[str, list[str]] = {}
        for contender, path, label in (
            ("sharding", head, "sharding, 1/10 input"),
            ("sharding", source, "sharding"),
            ("split -l + upload", source, "split -l + upload"),
        ):
            result = run_child(
                Path(__file__), ["--child", contender, *common, "--path", str(path)], env, 3600
            )
            if result.returncode or not result.data:
                raise SystemExit(f"{contender} failed:\n{result.stderr_tail}")
            uploads[label] = result.data["file_ids"]
            rows.append(
                ("split + upload", label, path.stat().st_size, lines // 10 if path == head else lines, result)
            )
        source.unlink()
        for label in ("sharding, 1/10 input", "split -l + upload"):
            for file_id in uploads[label]:
                emu.api.delete(f"/files/{file_id}").raise_for_status()
        batch_ids = _run_batches(emu, uploads["sharding"])
        for contender, ids, label in (
            ("merge", batch_ids[:1], "merge, 1 shard"),
            ("merge", batch_ids, "merge"),
            ("download + cat", batch_ids, "download + cat"),
        ):
            result = run_child(
                Path(__file__), ["--child", contender, *common, "--batch-ids", ",".join(ids)], env, 3600
            )
            if result.returncode or not result.data:
                raise SystemExit(f"{contender} failed:\n{result.stderr_tail}")
            rows.append(("merge", label, result.data["bytes"], result.data.get("lines", lines), result))
    print()
    print(
        table(
            [
                "step",
                "contender",
                "MiB",
                "seconds",
                "MiB/s",
                "lines/s",
                "RSS before MiB",
                "peak RSS MiB",
                "growth MiB",
                "CPU s",
            ],
            [
                (
                    step,
                    name,
                    f"{nbytes / MiB:,.0f}",
                    f"{r.data['seconds']:.1f}",
                    f"{nbytes / MiB / r.data['seconds']:.0f}",
                    f"{nlines / r.data['seconds']:,.0f}",
                    f"{r.data['rss_base_mb']:.0f}",
                    f"{r.data['rss_peak_mb']:.0f}",
                    f"{r.data['rss_peak_mb'] - r.data['rss_base_mb']:+.0f}",
                    f"{r.cpu_seconds:.1f}",
                )
                for step, name, nbytes, nlines, r in rows
            ],
        )
    )
    print(machine_line())


if __name__ == "__main__":
    main()
