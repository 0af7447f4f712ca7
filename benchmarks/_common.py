"""Shared plumbing of the benchmarks: the emulator as a separate process, child processes, tables.

Everything talks to 127.0.0.1 only. Every measured contender runs in a fresh child process started by
:func:`run_child`, which reads the child's peak RSS and CPU time from ``os.wait4`` (so the parent's own
memory never counts), and the emulator runs in its own process (``dashscope-emulator``) so its work is
not charged to the contender either.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
BIN_DIR = Path(sys.executable).parent
API_KEY = "sk-bench-loopback"


def machine_line() -> str:
    """Python version, CPUs and the current load average, for the header of every table."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load}"


def loadavg1() -> float:
    """The one-minute load average."""
    return os.getloadavg()[0]


class Emulator:
    """
    A ``dashscope-emulator`` process on a free loopback port, with its admin API.

    :param options: Extra command-line options (``--processing-rate`` …).
    """

    def __init__(self, *options: str) -> None:
        self._storage = tempfile.TemporaryDirectory(prefix="bench-emulator-")
        cmd = [
            str(BIN_DIR / "dashscope-emulator"),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "--storage-dir",
            self._storage.name,
            "--log-level",
            "warning",
            *options,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url.startswith("http://127.0.0.1:"):
            self.close()
            raise RuntimeError(f"dashscope-emulator did not start (first line {self.base_url!r})")
        self.root_url = self.base_url.split("/compatible-mode", 1)[0]
        self.admin = httpx.Client(base_url=f"{self.root_url}/_emulator", timeout=600)
        self.api = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.admin.get("/health").raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def configure(self, **fields: Any) -> dict[str, Any]:
        return self._ok(self.admin.patch("/config", json=fields))

    def clock(self) -> float:
        return float(self._ok(self.admin.get("/clock"))["now"])

    def advance(self, seconds: float) -> None:
        self._ok(self.admin.post("/clock/advance", json={"seconds": seconds}))

    def add_latency(self, seconds: float) -> None:
        """Delay every API request by ``seconds`` (admin routes are never delayed)."""
        self._ok(self.admin.post("/faults", json={"kind": "latency", "latency": seconds, "path": "*"}))

    def clear_faults(self) -> None:
        self._ok(self.admin.delete("/faults"))

    def request_counts(self) -> dict[str, int]:
        return self._ok(self.admin.get("/requests"))["counts"]

    def clear_request_counts(self) -> None:
        self._ok(self.admin.delete("/requests"))

    @staticmethod
    def _ok(response: httpx.Response) -> Any:
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        for client in (getattr(self, "admin", None), getattr(self, "api", None)):
            if client is not None:
                client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._storage.cleanup()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def airflow_env(connections: dict[str, dict[str, Any]]) -> Iterator[dict[str, str]]:
    """
    Environment for a child: a throw-away AIRFLOW_HOME and ``AIRFLOW_CONN_*`` connections.

    :param connections: conn id -> connection JSON (``conn_type``, ``password``, ``host``, ``extra``).
    """
    with tempfile.TemporaryDirectory(prefix="bench-airflow-home-") as home:
        env = dict(os.environ)
        env.update(
            AIRFLOW_HOME=home,
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
            AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            env.pop(name, None)
        for conn_id, conn in connections.items():
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
        yield env


@dataclass
class ChildResult:
    """What a child process reported (its last stdout line, JSON) plus its rusage."""

    data: dict[str, Any]
    peak_rss_mb: float
    cpu_seconds: float
    wall_seconds: float
    returncode: int
    stderr_tail: str


def run_child(script: Path, args: Sequence[str], env: dict[str, str], timeout: float) -> ChildResult:
    """
    Run ``python script args…`` and collect its JSON report and rusage (peak RSS, user+system CPU).

    :param timeout: Seconds after which the child is killed (its report is then empty).
    """
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, str(script), *args], stdout=out, stderr=err, env=env)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = [line for line in out.read().decode(errors="replace").splitlines() if line.startswith("{")]
        tail = err.read().decode(errors="replace")[-3000:]
    return ChildResult(
        data=json.loads(lines[-1]) if lines else {},
        peak_rss_mb=usage.ru_maxrss / 1024,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        wall_seconds=time.monotonic() - started,
        returncode=proc.returncode,
        stderr_tail=tail,
    )


def report(data: dict[str, Any]) -> None:
    """Print a child's JSON report as its last stdout line."""
    print(json.dumps(data), flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A right-aligned plain-text table."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [" | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]
