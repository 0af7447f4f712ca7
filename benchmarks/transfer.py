"""Upload, download and results transfer of a large file: this provider against the peers.

Usage (from the repository root, bench environment; see ``benchmarks/README.md``)::

    .venv-bench/bin/python benchmarks/transfer.py                # 50 MB and 500 MB (~6 min)
    .venv-bench/bin/python benchmarks/transfer.py --quick        # 20 MB

A ``dashscope-emulator`` process and a moto S3 server process (``ThreadedMotoServer``) run on loopback;
each contender runs in a fresh child process. Throughput is the file's size over the wall time of the
operation alone (imports and client construction excluded); peak RSS is the child's ``VmHWM`` during the
operation (reset after the imports), and "RSS growth" is that peak minus the RSS after the imports.

* upload: ``DashScopeClient.upload_file(path)`` vs the ``openai`` SDK's ``files.create(file=open(...))``;
* download of a result file: ``DashScopeClient.download_file(id, path)`` vs the SDK's
  ``files.content(id).write_to_file(path)`` (and its streaming form,
  ``files.with_streaming_response.content(id)`` + ``stream_to_file``);
* results transfer to S3: ``DashScopeBatchResultsToObjectStorageOperator`` (jsonl, default count check)
  with an ``s3://`` destination on moto, vs the pattern of ``HttpToS3Operator``:
  ``requests.get(url).content`` then ``S3Hook.load_bytes``.

The upload file is chat requests of ~10 KB per line; the result file is the output of an embeddings
batch whose vector length is chosen to reach the same size (the emulator only serves result files).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    API_KEY,
    Emulator,
    airflow_env,
    loadavg1,
    machine_line,
    report,
    run_child,
    table,
)

MiB = 1 << 20
S3_CONN_ID = "s3_bench"
S3_BUCKET = "bench-results"
CONTENDERS = {
    "upload": ("openai-sdk", "provider"),
    "download": ("openai-sdk", "openai-sdk-stream", "provider"),
    "transfer": ("http-to-s3", "provider-operator"),
}
BASELINES = {"upload": "openai-sdk", "download": "openai-sdk", "transfer": "http-to-s3"}


# ---------------------------------------------------------------------------------------------- child
def _status_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return float(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(args: argparse.Namespace) -> None:
    """Prepare the contender (imports, client), reset the peak RSS, time the operation alone."""
    import gc

    kind, contender, base_url = args.kind, args.contender, args.base_url
    out = Path(args.workdir) / f"out-{kind}-{contender}"
    if kind == "upload" and contender == "provider":
        from airflow_provider_dashscope_batch.client import DashScopeClient

        client = DashScopeClient(api_key=API_KEY, base_url=base_url, timeout=600)

        def operation() -> int:
            return client.upload_file(args.path).bytes

    elif kind == "upload" and contender == "openai-sdk":
        from openai import OpenAI

        sdk = OpenAI(api_key=API_KEY, base_url=base_url, timeout=600)

        def operation() -> int:
            with open(args.path, "rb") as handle:
                return sdk.files.create(file=handle, purpose="batch").bytes

    elif kind == "download" and contender == "provider":
        from airflow_provider_dashscope_batch.client import DashScopeClient

        client = DashScopeClient(api_key=API_KEY, base_url=base_url, timeout=600)

        def operation() -> int:
            return client.download_file(args.file_id, out)

    elif kind == "download" and contender.startswith("openai-sdk"):
        from openai import OpenAI

        sdk = OpenAI(api_key=API_KEY, base_url=base_url, timeout=600)

        def operation() -> int:
            if contender == "openai-sdk":
                sdk.files.content(args.file_id).write_to_file(out)
            else:
                with sdk.files.with_streaming_response.content(args.file_id) as response:
                    response.stream_to_file(out)
            return out.stat().st_size

    elif kind == "transfer" and contender == "provider-operator":
        if os.environ.get("BENCH_VARIANT") == "s3block5":  # diagnosis: 5 MiB s3fs parts instead of 50 MiB
            import s3fs

            s3fs.S3FileSystem.default_block_size = 5 * MiB
        from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
            DashScopeBatchResultsToObjectStorageOperator,
        )

        operator = DashScopeBatchResultsToObjectStorageOperator(
            task_id="results", batch_id=args.batch_id, destination=f"s3://{S3_CONN_ID}@{S3_BUCKET}/operator"
        )

        def operation() -> int:
            manifest = operator.execute(context={})
            return manifest["totals"]["bytes"]

    elif kind == "transfer" and contender == "http-to-s3":
        import requests
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        hook = S3Hook(aws_conn_id=S3_CONN_ID)
        hook.get_conn()

        def operation() -> int:
            # HttpToS3Operator: HttpHook.run(...) -> response.content -> S3Hook.load_bytes
            response = requests.get(
                f"{base_url}/files/{args.file_id}/content",
                headers={"Authorization": f"Bearer {API_KEY}"},
                timeout=600,
            )
            response.raise_for_status()
            hook.load_bytes(
                response.content, key="http-to-s3/output.jsonl", bucket_name=S3_BUCKET, replace=True
            )
            return len(response.content)

    else:
        raise SystemExit(f"unknown contender {kind}/{contender}")
    gc.collect()
    rss_base = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    profile = os.environ.get("BENCH_PROFILE")  # diagnosis: cProfile the operation into this file
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    nbytes = operation()
    seconds = time.perf_counter() - started
    if profile:
        profiler.disable()
        profiler.dump_stats(f"{profile}.{kind}.{contender}")
    report({"bytes": nbytes, "seconds": seconds, "rss_base_mb": rss_base, "rss_peak_mb": _status_mb("VmHWM")})


# --------------------------------------------------------------------------------------------- parent
def _write_upload_file(path: Path, target: int) -> None:
    """Chat requests of ~10 KB per line until ``target`` bytes (at most 50,000 lines)."""
    filler = "lorem ipsum dolor sit amet " * 380
    line_no = 0
    with path.open("w") as handle:
        while handle.tell() < target and line_no < 50_000:
            body = {"model": "qwen-plus", "messages": [{"role": "user", "content": f"{line_no} {filler}"}]}
            row = {"custom_id": f"r{line_no}", "method": "POST", "url": "/v1/chat/completions", "body": body}
            handle.write(json.dumps(row) + "\n")
            line_no += 1


def _make_result_file(emu: Emulator, workdir: Path, target: int) -> tuple[str, str]:
    """
    Run an embeddings batch with an output file of about ``target`` bytes; return batch and file id.

    10,000 lines whose vector length makes up the size; the model is one the emulator knows no limits
    of, so any ``dimensions`` is answered (text-embedding-v4 takes at most 2048, and a request asking for
    more fails alone, leaving a batch with no output file).
    """
    lines = 10_000
    dimensions = max(8, int((target / lines - 330) / 10.4))
    source = workdir / "embeddings.jsonl"
    with source.open("w") as handle:
        for i in range(lines):
            body = {"model": "bench-embedding", "input": f"text {i}", "dimensions": dimensions}
            row = {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings", "body": body}
            handle.write(json.dumps(row) + "\n")
    with source.open("rb") as handle:
        uploaded = emu.api.post(
            "/files", files={"file": ("embeddings.jsonl", handle)}, data={"purpose": "batch"}
        )
    uploaded.raise_for_status()
    created = emu.api.post(
        "/batches",
        json={
            "input_file_id": uploaded.json()["id"],
            "endpoint": "/v1/embeddings",
            "completion_window": "24h",
        },
    )
    created.raise_for_status()
    batch_id = created.json()["id"]
    deadline = time.monotonic() + 900
    while True:
        emu.advance(3600)
        batch = emu.api.get(f"/batches/{batch_id}").json()
        if batch["status"] == "completed" and batch["output_file_id"]:
            break
        if batch["status"] == "completed":
            raise SystemExit(f"embeddings batch produced no output file: {batch['request_counts']}")
        if batch["status"] in ("failed", "expired", "cancelled") or time.monotonic() > deadline:
            raise SystemExit(f"embeddings batch ended {batch['status']}: {batch.get('errors')}")
        time.sleep(0.5)
    return batch_id, batch["output_file_id"]


class MotoServer:
    """moto's ``ThreadedMotoServer`` in its own process on a free loopback port, with one bucket."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        code = (
            "import sys\nfrom moto.server import ThreadedMotoServer\n"
            f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False)\n"
            "s.start()\nprint('ready', flush=True)\nsys.stdin.read()\ns.stop()\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("moto server did not start")
        self.endpoint = f"http://127.0.0.1:{port}"
        import boto3

        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        self.s3.create_bucket(Bucket=S3_BUCKET)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_size(args: argparse.Namespace, mb: int, kinds: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp,
        Emulator(
            "--processing-rate", "1000000", "--validating-seconds", "0", "--finalizing-seconds", "0"
        ) as emu,
    ):
        workdir = Path(tmp)
        emu.configure(max_upload_bytes=mb * MiB + 64 * MiB)
        upload_path = workdir / "input.jsonl"
        _write_upload_file(upload_path, mb * MiB)
        batch_id = file_id = None
        if {"download", "transfer"} & set(kinds):
            print(f"  generating a ~{mb} MB result file on the emulator ...", flush=True)
            batch_id, file_id = _make_result_file(emu, workdir, mb * MiB)
        moto = MotoServer() if "transfer" in kinds else None
        connections = {
            S3_CONN_ID: {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": moto.endpoint if moto else "", "region_name": "us-east-1"},
            },
            "dashscope_default": {
                "conn_type": "dashscope",
                "password": API_KEY,
                "extra": {"base_url": emu.base_url, "timeout": 600},
            },
        }
        try:
            with airflow_env(connections) as env:
                for kind in kinds:
                    for contender in CONTENDERS[kind]:
                        if args.smoke and contender == "openai-sdk-stream":  # a variant of the baseline
                            continue
                        load = loadavg1()
                        result = run_child(
                            Path(__file__),
                            [
                                "--child",
                                contender,
                                "--kind",
                                kind,
                                "--base-url",
                                emu.base_url,
                                "--workdir",
                                tmp,
                                "--path",
                                str(upload_path),
                                "--file-id",
                                str(file_id),
                                "--batch-id",
                                str(batch_id),
                            ],
                            env,
                            timeout=900,
                        )
                        if not result.data:
                            raise SystemExit(
                                f"{kind}/{contender} failed (rc {result.returncode}):\n{result.stderr_tail}"
                            )
                        for leftover in workdir.glob("out-*"):
                            leftover.unlink()
                        row = {
                            "mb": mb,
                            "kind": kind,
                            "contender": contender,
                            "load": (load + loadavg1()) / 2,
                        }
                        row.update(
                            result.data, process_peak_rss_mb=result.peak_rss_mb, cpu=result.cpu_seconds
                        )
                        rows.append(row)
                        print(
                            f"  {mb:>4} MB {kind:>8} {contender:>18}: "
                            f"{row['bytes'] / MiB / row['seconds']:7.1f} MB/s, "
                            f"peak {row['rss_peak_mb']:.0f} MB, load {row['load']:.1f}",
                            flush=True,
                        )
        finally:
            if moto is not None:
                moto.close()
    return rows


def results_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        base = next(
            (
                b
                for b in rows
                if b["mb"] == r["mb"] and b["kind"] == r["kind"] and b["contender"] == BASELINES[r["kind"]]
            ),
            None,
        )
        speed = r["bytes"] / MiB / r["seconds"]
        base_speed = base["bytes"] / MiB / base["seconds"] if base else None
        out.append(
            [
                f"{r['mb']} MB",
                r["kind"],
                r["contender"],
                f"{r['bytes'] / MiB:.0f}",
                f"{r['seconds']:.2f}",
                f"{speed:.0f}",
                f"{speed / base_speed:.2f}x" if base_speed else "-",
                f"{r['rss_peak_mb']:.0f}",
                f"{r['rss_peak_mb'] - r['rss_base_mb']:.0f}",
                f"{r['load']:.1f}",
            ]
        )
    return table(
        [
            "size",
            "operation",
            "contender",
            "MB moved",
            "seconds",
            "MB/s",
            "vs baseline",
            "peak RSS MB",
            "RSS growth MB",
            "load",
        ],
        out,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one 20 MB size")
    parser.add_argument("--sizes", type=int, nargs="+", help="file sizes in MB (default 50 500)")
    parser.add_argument("--kinds", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS))
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--smoke", action="store_true", help="smallest size: a CI check that it runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--file-id", help=argparse.SUPPRESS)
    parser.add_argument("--batch-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.contender = args.child
        child(args)
        return
    sizes = args.sizes or ([2] if args.smoke else [20] if args.quick else [50, 500])
    print(machine_line(), flush=True)
    rows: list[dict[str, Any]] = []
    for mb in sizes:
        rows.extend(run_size(args, mb, args.kinds))
    print()
    print(
        "baselines: upload and download = openai-sdk (files.create / files.content().write_to_file), "
        "transfer = http-to-s3 (requests .content + S3Hook.load_bytes)"
    )
    print(results_table(rows))
    print(machine_line())
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
