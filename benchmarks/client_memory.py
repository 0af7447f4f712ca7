"""Peak RSS of a streamed upload and download through DashScopeClient, against the emulator.

Usage: ``python benchmarks/client_memory.py [--mb 500]``. Generates a JSONL file of about ``--mb`` MB,
uploads it, runs it through the emulator (clock advanced, no real waiting), downloads the output file to
disk, and prints peak RSS (stdlib ``resource``) next to the file sizes. Streaming holds if peak RSS stays
far below the file size and roughly constant when ``--mb`` grows.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

from airflow_provider_dashscope_batch.client import DashScopeClient
from airflow_provider_dashscope_batch.emulator import EmulatorServer


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_input(path: Path, target_mb: int) -> int:
    """Write chat requests of ~10 KB each until the file reaches ``target_mb``; return the line count."""
    filler = "x" * 10_000
    lines = 0
    with path.open("w") as handle:
        while handle.tell() < target_mb * 1024 * 1024 and lines < 50_000:
            body = {"model": "qwen-plus", "messages": [{"role": "user", "content": f"{lines} {filler}"}]}
            handle.write(
                json.dumps(
                    {"custom_id": str(lines), "method": "POST", "url": "/v1/chat/completions", "body": body}
                )
                + "\n"
            )
            lines += 1
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="input file size in MB (service limit: 500)")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmulatorServer(
            root=Path(tmp) / "emu", processing_rate=100_000.0, max_upload_bytes=600 * 1024 * 1024
        ) as emu,
    ):
        source = Path(tmp) / "input.jsonl"
        lines = write_input(source, args.mb)
        input_bytes = source.stat().st_size
        baseline = peak_rss_mb()
        with DashScopeClient(api_key=emu.api_key, base_url=emu.base_url, timeout=600) as client:
            uploaded = client.upload_file(source)
            after_upload = peak_rss_mb()
            batch = client.create_batch(input_file_id=uploaded.id, endpoint="/v1/chat/completions")
            while not batch.status.is_terminal:
                emu.advance(3600)
                batch = client.retrieve_batch(batch.id)
            if batch.output_file_id is None:
                sys.exit(f"batch ended {batch.status} without output: {batch.errors}")
            target = Path(tmp) / "output.jsonl"
            downloaded = client.download_file(batch.output_file_id, target)
            after_download = peak_rss_mb()
    size_mb = input_bytes / 2**20
    print(f"input:  {size_mb:8.1f} MB, {lines} lines (uploaded {uploaded.bytes / 2**20:.1f} MB)")
    print(f"output: {downloaded / 2**20:8.1f} MB downloaded")
    print(f"peak RSS baseline: {baseline:.0f} MB")
    print(f"peak RSS after upload: {after_upload:.0f} MB, after download: {after_download:.0f} MB")
    print(f"growth over baseline: {after_download - baseline:.0f} MB for a {size_mb:.0f} MB file")
    print("(the emulator runs in this process, so its own buffers count too)")


if __name__ == "__main__":
    main()
