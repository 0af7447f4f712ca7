"""Results to typed tables (and the JSONL copy) against a download + cat and pyarrow's own JSON reader.

Usage (from the repository root)::

    .venv/bin/python benchmarks/results_tables.py                   # 500 MiB chat, 500 MiB embeddings
    .venv/bin/python benchmarks/results_tables.py --mb 50           # quick
    .venv/bin/python benchmarks/results_tables.py --kinds embeddings --vectors 1000000 \
        --pyarrow-mb 500 --repeat 1                                 # 1M vectors (~10 GB of JSON)

A result file is generated in /tmp (chat answers of ~1.4 KB, or embeddings of 10 vectors of
``--dimensions`` per line; deleted at the end) and served over loopback HTTP by a stdlib server in a
child process, answering ``GET /files/{id}`` and ``GET /files/{id}/content`` like the service. Each
contender runs in a fresh child process:

* ``download+cat``: ``DashScopeClient.download_file`` (the provider's streaming download to a file);
* ``pyarrow``: ``pyarrow.json.read_json`` of the local file + ``pyarrow.parquet.write_table`` (whole file
  in memory; ``--pyarrow-mb`` gives it only the file's first lines, for files past the machine's memory);
* ``provider-jsonl`` / ``provider-parquet``: the transfer's per-file path,
  ``ResultFileStager.stage`` + ``publish`` to a ``file://`` path (download, lines split, checked, counted
  and encoded in a worker thread, SHA-256 of source and written bytes, usage summary, writer thread).

The contenders run in ``--repeat`` rounds; a ratio is the median over rounds of the throughput ratio
within a round (the machine is shared and its load swings), throughput the size read over the fastest
wall time. "RSS growth" is the child's peak RSS (``VmHWM``, reset after the imports) minus its RSS after
the imports, the largest of the runs; "load" the one-minute load average after the run (median).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1 << 20
CHUNK = 1 << 20
CONTENDERS = ("download+cat", "pyarrow", "provider-jsonl", "provider-parquet")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def generate(kind: str, path: Path, mb: int, dimensions: int, vectors: int | None = None) -> int:
    """
    Write a result file of ``kind`` (chat or embeddings) of about ``mb`` MiB; return its line count.

    An embeddings file holds exactly ``vectors`` vectors (10 per line) when given. Its vectors are drawn
    from a pool of 1,000 serialised ones, so a 10 GB file is written at disk speed.
    """
    rng = random.Random(7)
    if kind == "embeddings":
        return _generate_embeddings(rng, path, mb, dimensions, vectors)
    words = ["batch", "qwen", "airflow", "vector", "杭州", "西湖", "table", "parquet", "stream", "token"]
    lines = 0
    with path.open("wb") as out:
        while out.tell() < mb * MiB:
            content = " ".join(rng.choice(words) for _ in range(160))
            body = {
                "created": 1768306034,
                "usage": {"completion_tokens": 654, "prompt_tokens": 14, "total_tokens": 668},
                "model": "qwen-plus",
                "id": f"chatcmpl-{lines}",
                "choices": [
                    {
                        "finish_reason": "stop",
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                    }
                ],
                "object": "chat.completion",
            }
            out.write(_result_line(lines, body))
            lines += 1
    return lines


def _result_line(n: int, body: object) -> bytes:
    line = {
        "id": f"r{n}",
        "custom_id": f"req-{n}",
        "response": {"status_code": 200, "request_id": f"r{n}", "body": body},
        "error": None,
    }
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _generate_embeddings(
    rng: random.Random, path: Path, mb: int, dimensions: int, vectors: int | None
) -> int:
    pool = [
        json.dumps([round(rng.uniform(-1, 1), 6) for _ in range(dimensions)], separators=(",", ":")).encode()
        for _ in range(1000)
    ]
    marker = b'"__DATA__"'
    lines = 0
    with path.open("wb") as out:
        while (out.tell() < mb * MiB) if vectors is None else (lines * 10 < vectors):
            body = {"object": "list", "data": "__DATA__", "model": "text-embedding-v4"}
            body["usage"] = {"prompt_tokens": 90, "total_tokens": 90}
            data = b",".join(
                b'{"object":"embedding","index":%d,"embedding":%s}' % (i, rng.choice(pool)) for i in range(10)
            )
            out.write(_result_line(lines, body).replace(marker, b"[" + data + b"]"))
            lines += 1
    return lines


def head(source: Path, target: Path, mb: int) -> None:
    """Copy the first whole lines of ``source`` up to about ``mb`` MiB into ``target``."""
    with source.open("rb") as src, target.open("wb") as out:
        while out.tell() < mb * MiB and (line := src.readline()):
            out.write(line)


def serve(directory: Path) -> None:
    """Serve ``<directory>/<file_id>`` as DashScope files until killed; print the port first."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parts = self.path.split("/")
            file_id = parts[parts.index("files") + 1]
            path = directory / file_id
            if self.path.endswith("/content"):
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(path.stat().st_size))
                self.end_headers()
                with path.open("rb") as handle:
                    self.connection.sendfile(handle)
                return
            body = json.dumps({"id": file_id, "object": "file", "bytes": path.stat().st_size}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def child(contender: str, kind: str, source: Path, target: Path, base_url: str) -> dict[str, float]:
    import pyarrow.json as pj
    import pyarrow.parquet as pq
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_dashscope_batch.client import DashScopeClient, RetryPolicy
    from airflow_provider_dashscope_batch.results.lines import ResultFormat
    from airflow_provider_dashscope_batch.results.tables import TableKind
    from airflow_provider_dashscope_batch.transfers.publishing import write_small_file
    from airflow_provider_dashscope_batch.transfers.staging import ResultFileStager

    client = DashScopeClient(api_key="sk-bench", base_url=base_url, timeout=600)
    file_id = source.name
    final = ObjectStoragePath(target.as_uri())
    write_small_file(final.parent / "warm-up", b"")  # fsspec's lazy imports happen before the clock starts
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM
    floor = _rss_kib("VmRSS")
    start = time.perf_counter()
    if contender == "download+cat":
        client.download_file(file_id, target)
    elif contender == "pyarrow":
        pq.write_table(pj.read_json(source), target)
    else:
        fmt = ResultFormat(contender.removeprefix("provider-"))
        table = TableKind.EMBEDDINGS if kind == "embeddings" else TableKind.REQUESTS
        stager = ResultFileStager(
            client, fmt, retry=RetryPolicy(max_retries=0), chunk_size=CHUNK, row_group_size=10_000
        )
        staged = stager.stage(file_id, final, table)
        staged.file.publish()
        assert staged.usage.requests == staged.record.lines
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "growth_mib": (_rss_kib("VmHWM") - floor) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=500, help="size of each generated result file (MiB)")
    parser.add_argument("--dimensions", type=int, default=1024)
    parser.add_argument("--vectors", type=int, help="embeddings: this many vectors (10 per line), not --mb")
    parser.add_argument(
        "--pyarrow-mb", type=int, help="pyarrow reads only the file's first whole lines up to this size (MiB)"
    )
    parser.add_argument("--kinds", nargs="+", default=["chat", "embeddings"])
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--repeat", type=int, default=3, help="rounds (each runs every contender once)")
    parser.add_argument("--child", nargs=5, metavar=("CONTENDER", "KIND", "SOURCE", "TARGET", "URL"))
    parser.add_argument("--serve", metavar="DIR")
    parser.add_argument("--smoke", action="store_true", help="smallest size: a CI check that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.mb, args.repeat, args.kinds = 1, 1, ["chat"]
        args.contenders = [c for c in args.contenders if c != "pyarrow"]
    if args.serve:
        serve(Path(args.serve))
        return
    if args.child:
        contender, kind, source, target, base_url = args.child
        print(json.dumps(child(contender, kind, Path(source), Path(target), base_url)))
        return
    print(f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; python {sys.version.split()[0]}")
    print(
        "file          | contender         |   MiB | seconds | MiB/s | vs download+cat | vs pyarrow "
        "| RSS growth MiB | load"
    )
    with tempfile.TemporaryDirectory(prefix="bench-results-") as tmp:
        served = Path(tmp) / "files"
        served.mkdir()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(served)], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        base_url = f"http://127.0.0.1:{server.stdout.readline().strip()}/compatible-mode/v1"
        try:
            run_all(args, Path(tmp), served, base_url)
        finally:
            server.terminate()
            server.wait()


def run_all(args: argparse.Namespace, tmp: Path, served: Path, base_url: str) -> None:
    """
    Generate each file and run the contenders on it in rounds (each round runs each once, in a child).

    Ratios are the median over rounds of throughput ratios taken within a round, so a load swing on the
    shared machine between rounds does not skew them (pyarrow may have read a smaller slice of the file);
    seconds are the fastest run.
    """
    for kind in args.kinds:
        source = served / f"file-batch_output-{kind}"
        lines = generate(
            kind, source, args.mb, args.dimensions, args.vectors if kind == "embeddings" else None
        )
        sizes = dict.fromkeys(args.contenders, source.stat().st_size / MiB)
        arrow_source = source
        if "pyarrow" in args.contenders and args.pyarrow_mb is not None:
            arrow_source = tmp / f"head-{kind}"
            head(source, arrow_source, args.pyarrow_mb)
            sizes["pyarrow"] = arrow_source.stat().st_size / MiB
        rounds: list[dict[str, dict[str, float]]] = []
        for _ in range(args.repeat):
            runs = {}
            for contender in args.contenders:
                target = tmp / f"out-{contender}"
                src = arrow_source if contender == "pyarrow" else source
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    contender,
                    kind,
                    str(src),
                    str(target),
                    base_url,
                ]
                out = subprocess.run(command, check=True, capture_output=True, text=True)
                runs[contender] = json.loads(out.stdout.strip().splitlines()[-1])
                runs[contender]["load"] = os.getloadavg()[0]
                runs[contender]["rate"] = sizes[contender] / runs[contender]["seconds"]
                target.unlink()
            rounds.append(runs)
        for contender in args.contenders:
            seconds = min(r[contender]["seconds"] for r in rounds)
            growth = max(r[contender]["growth_mib"] for r in rounds)
            ratios = [_ratio(rounds, contender, base) for base in ("download+cat", "pyarrow")]
            load = statistics.median(r[contender]["load"] for r in rounds)
            label = {"download+cat": kind, "pyarrow": f"{lines:,} lines"}.get(contender, "")
            print(
                f"{label:<13} | {contender:<17} | {sizes[contender]:5.0f} | {seconds:7.2f} | "
                f"{sizes[contender] / seconds:5.0f} | {ratios[0]:>15} | {ratios[1]:>10} | {growth:14.0f} | "
                f"{load:4.1f}"
            )
        source.unlink()
        if arrow_source != source:
            arrow_source.unlink()


def _ratio(rounds: list[dict[str, dict[str, float]]], contender: str, base: str) -> str:
    """Median over rounds of ``contender``'s throughput over ``base``'s in the same round."""
    if base not in rounds[0]:
        return "-"
    return f"{statistics.median(r[contender]['rate'] / r[base]['rate'] for r in rounds):.2f}x"


if __name__ == "__main__":
    main()
