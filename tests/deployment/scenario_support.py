"""
A real Airflow deployment for the scenario tests, and the scenario each test drives on it.

``airflow api-server``, ``scheduler`` (with LocalExecutor, whose workers run the tasks), ``dag-processor``
and ``triggerer`` run as separate processes of the Airflow installed next to the running interpreter, in
a throw-away AIRFLOW_HOME.

The metadata DB is a throw-away PostgreSQL cluster (:class:`PostgresServer`) when the PostgreSQL drivers
(psycopg2, asyncpg) are installed, else SQLite: Airflow 3 allows LocalExecutor on SQLite (tasks reach the
DB only through the api-server's execution API), but with SQLite's defaults the components die of
"database is locked" once 100 mapped tasks resume together, so it runs in write-ahead-log mode and
writers wait for the lock instead of failing after five seconds.

The service is the bundled emulator on loopback, accepting only one freshly minted API key. Tests act as
an operator would: the api-server's REST API (trigger, clear, mark failed or success) and signals.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import sqlalchemy
from dashscope_batch_emulator.server import EmulatorServer

from airflow_provider_dashscope_batch.client import DashScopeClient

DAG_FILES = Path(__file__).resolve().parent / "dag_files"
SAMPLE_REQUESTS = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "requests.jsonl"
DAG_IDS = (
    "deployment_deferred",
    "deployment_single",
    "deployment_in_process",
    "deployment_mapped",
    "deployment_ha",
    "deployment_events",
    "deployment_events_safety_net",
    "deployment_events_results",
    "deployment_queued_results",
)
COMPONENTS = ("scheduler", "dag-processor", "triggerer")
STARTUP_TIMEOUT = 240.0
#: The deployment connection's finish-events secret (the scenarios mark their batches with it).
FINISH_EVENTS_SECRET = "deployment-finish-events-secret"
#: The DashScope connection whose finish watcher reads the RabbitMQ queue (dag_files/deployment_dags.py).
QUEUED_CONN_ID = "dashscope_queued"
#: The Airflow connection of that queue, and the queue's name.
QUEUE_CONN_ID = "dashscope_finish_queue"
FINISH_QUEUE = "dashscope-batch-finishes"
#: Emulated seconds per real second once a scenario lets its batches run (they finish within a poll).
RUNNING_CLOCK = 30.0
AIRFLOW_VERSION = tuple(int(part) for part in version("apache-airflow").split(".")[:2])
T = TypeVar("T")
#: How many creates the mapped scenario fans out to (tests/deployment/dag_files sets the same number).
MAPPED_CREATES = 100
#: How many waits the high-availability scenario hands to the triggerers (likewise).
HA_CREATES = 6
#: The emulator's counter names of the routes the scenarios look at.
CREATE = "POST /batches"
LIST = "GET /batches"
CANCEL = "POST /batches/{batch_id}/cancel"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], T], what: str, timeout: float = 120.0, interval: float = 0.5) -> T:
    """Return the first truthy result of ``check()``, or fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Deployment:
    """
    Airflow's components as separate processes over one AIRFLOW_HOME, and a REST client for the API.

    :param home: The throw-away AIRFLOW_HOME (DB, logs, config); component output goes to ``output``.
    :param conn: The ``dashscope_default`` connection as a JSON string (given to every component).
    :param postgres: The running PostgreSQL of the metadata DB; ``None`` uses SQLite in ``home``.
    """

    def __init__(self, home: Path, conn: str, postgres: PostgresServer | None = None) -> None:
        self.home = home
        self.logs = home / "logs"
        self.output = home / "component-output"
        self.output.mkdir(parents=True, exist_ok=True)
        self.db = home / "airflow.db"
        self.events_results = home / "events-results"
        self.postgres = postgres
        self.airflow = str(Path(sys.executable).with_name("airflow"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._starts: dict[str, int] = {}
        self._args: dict[str, tuple[str, ...]] = {}
        self._commands: dict[str, str] = {}
        self._envs: dict[str, dict[str, str]] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env.update(
            AIRFLOW_HOME=str(home),
            AIRFLOW_CONN_DASHSCOPE_DEFAULT=conn,
            PYTHONDONTWRITEBYTECODE="1",
            # On SQLite, writers wait for the lock up to a minute instead of failing after five seconds.
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgres.url
            if postgres
            else f"sqlite:///{self.db}?timeout=60",
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__DAGS_FOLDER=str(DAG_FILES),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.url}/execution/",
            AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__API__BASE_URL=self.url,
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            AIRFLOW__API_AUTH__JWT_ISSUER="airflow-dashscope-deployment-test",
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(_free_port()),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(_free_port()),
            # A restarted triggerer takes over the triggers of a killed one after this many seconds.
            AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="1",
            AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD="5",
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
            # 100 task processes parse the DAG file at once: on a loaded 2-CPU machine that takes a while.
            AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="180",
            # ... and 100 resumed tasks call the execution API at once: more pooled DB connections.
            AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW="30",
            # finish_callback="airflow": DashScope (the emulator) reaches the receiver on the api-server.
            AIRFLOW__DASHSCOPE_BATCH__CALLBACK_BASE_URL=self.url,
            # where the finish-events results DAG lands the results (dag_files/deployment_dags.py)
            DEPLOYMENT_EVENTS_RESULTS=self.events_results.as_uri(),
        )
        self._api: httpx.Client | None = None

    # -- processes ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Migrate the DB, start every component and wait until the api-server serves the scenario DAGs."""
        migrate = subprocess.run(
            [self.airflow, "db", "migrate"], env=self.env, capture_output=True, text=True, check=False
        )
        (self.output / "db-migrate.out").write_text(migrate.stdout + migrate.stderr)
        if migrate.returncode:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stderr[-4000:]}")
        if self.db.exists():  # write-ahead logging: readers do not wait for a writer (a setting of the file)
            with sqlite3.connect(self.db) as db:
                db.execute("PRAGMA journal_mode=WAL")
        self.spawn("api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1")
        for name in COMPONENTS:
            self.spawn(name)
        wait_for(self._api_ready, "the api-server", STARTUP_TIMEOUT)
        token = httpx.get(f"{self.url}/auth/token", timeout=30).json()["access_token"]
        self._api = httpx.Client(
            base_url=f"{self.url}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        wait_for(self._dags_parsed, "the dag-processor to parse the scenario DAGs", STARTUP_TIMEOUT)

    def spawn(self, name: str, *args: str, command: str | None = None, **env: str) -> None:
        """
        Start ``airflow <command>`` (default: ``name``) in its own session, known as ``name``.

        A second instance of a component gets its own name and, where it serves something, its own port
        (``spawn("triggerer-2", command="triggerer", AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=...)``);
        each start writes its own output file.
        """
        self._starts[name] = self._starts.get(name, 0) + 1
        self._args[name] = args
        self._commands[name] = command or self._commands.get(name, name)
        self._envs[name] = {**self._envs.get(name, {}), **env}
        out = self.output / f"{name}-{self._starts[name]}.out"
        with out.open("wb") as stream:
            self.procs[name] = subprocess.Popen(
                [self.airflow, self._commands[name], *args],
                env={**self.env, **self._envs[name]},
                stdout=stream,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self, name: str) -> None:
        """SIGKILL a component and everything it started (its process group), like a crashed container."""
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        """Stop every component (SIGTERM to each process group, SIGKILL after a grace period)."""
        if self._api is not None:
            self._api.close()
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def halt(self, name: str) -> None:
        """Stop a component gracefully (SIGTERM, as an operator's ``systemctl stop`` does)."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)

    def forget(self, name: str) -> None:
        """Stop a component if it runs and drop it, so :meth:`revive` does not start it again."""
        if name in self.procs and self.procs[name].poll() is None:
            self.halt(name)
        for known in (self.procs, self._args, self._commands, self._envs):
            known.pop(name, None)

    def revive(self) -> None:
        """Start again every component that is not running (a scenario that failed midway stopped it)."""
        for name, args in self._args.items():
            if name not in self.procs or self.procs[name].poll() is not None:
                self.spawn(name, *args)

    def assert_running(self) -> None:
        """Fail if a component died, showing the end of its output."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"airflow {name} exited with {proc.returncode}:\n{self.tail(name)}")

    def output_of(self, name: str) -> str:
        """Everything a component wrote to its output, over all its starts."""
        paths = sorted(self.output.glob(f"{name}-[0-9]*.out"))
        return "".join(path.read_bytes().decode(errors="replace") for path in paths)

    def tail(self, name: str, chars: int = 4000) -> str:
        """The end of a component's latest output."""
        path = self.output / f"{name}-{self._starts.get(name, 1)}.out"
        return path.read_bytes()[-chars:].decode(errors="replace") if path.exists() else ""

    def _api_ready(self) -> bool:
        self.assert_running()
        try:
            return httpx.get(f"{self.url}/api/v2/monitor/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def _dags_parsed(self) -> bool:
        self.assert_running()
        return all(self.api("GET", f"/dags/{d}", ok=(200, 404)).get("dag_id") == d for d in DAG_IDS)

    # -- REST API ----------------------------------------------------------------------------------

    def api(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        """
        Call the REST API (``/api/v2`` + ``path``); fail on an unexpected status.

        A read the api-server could not answer (a 5xx such as "Database error", or no answer in time,
        both seen on a loaded machine) is tried again up to three times: the scenarios poll what the
        deployment did, and one failed look is not a verdict on it. Writes are sent once.
        """
        assert self._api is not None
        for attempt in range(4 if method == "GET" else 1):
            if attempt:
                time.sleep(2.0)
            try:
                response = self._api.request(method, path, **kwargs)
            except httpx.TimeoutException:
                if method != "GET" or attempt == 3:
                    raise
                continue
            if response.status_code < 500 or method != "GET":
                break
        if response.status_code not in ok:
            raise AssertionError(f"{method} {path} answered {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else {}

    def trigger(self, dag_id: str, run_id: str, **conf: Any) -> None:
        """Start a DAG run, as the UI's Trigger button does."""
        self.api(
            "POST",
            f"/dags/{dag_id}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": None, "conf": conf},
        )

    def run_state(self, dag_id: str, run_id: str) -> str:
        """The DAG run's state."""
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 180.0) -> str:
        """Wait until the DAG run is finished; return its state."""

        def finished() -> str | None:
            self.assert_running()
            state = self.run_state(dag_id, run_id)
            return state if state in ("success", "failed") else None

        return wait_for(finished, f"DAG run {dag_id}/{run_id} to finish", timeout)

    def task(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        """The (unmapped) task instance as the REST API shows it."""
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")

    def mapped(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every mapped instance of a task."""
        return self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/listMapped",
            params={"limit": 1000},
        )["task_instances"]

    def wait_task(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        state: str,
        *,
        try_number: int = 1,
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        """Wait until the task instance's try ``try_number`` is in ``state``; return it."""

        def reached() -> dict[str, Any] | None:
            self.assert_running()
            ti = self.task(dag_id, run_id, task_id)
            return ti if ti["state"] == state and ti["try_number"] == try_number else None

        return wait_for(reached, f"{dag_id}/{run_id}/{task_id} try {try_number} to be {state}", timeout)

    def clear(self, dag_id: str, run_id: str, task_id: str) -> None:
        """Clear one task instance, as the UI's Clear button does."""
        self.api(
            "POST",
            f"/dags/{dag_id}/clearTaskInstances",
            json={"dry_run": False, "dag_run_id": run_id, "task_ids": [task_id], "only_failed": False},
        )

    def set_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        """Mark a task instance failed or success, as the UI's Mark as buttons do."""
        self.api(
            "PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", json={"new_state": state}
        )

    def default_pool(self) -> dict[str, Any]:
        """The default pool with its occupied, running and deferred slot counts."""
        return self.api("GET", "/pools/default_pool")

    # -- evidence ----------------------------------------------------------------------------------

    def query(self, statement: str, **params: Any) -> list[tuple[Any, ...]]:
        """
        Rows of a read-only SQL statement on the metadata DB, for what the REST API cannot show.

        (Airflow 3.3's asset-event endpoints answer 500 while a run an event started is still queued.)
        """
        url = self.postgres.url if self.postgres is not None else f"sqlite:///{self.db}"
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as connection:
                return [tuple(row) for row in connection.execute(sqlalchemy.text(statement), params)]
        finally:
            engine.dispose()

    def files_containing(self, secret: str) -> list[Path]:
        """
        The files that contain ``secret``: logs under AIRFLOW_HOME/logs, the components' output, and the
        metadata DB (trigger kwargs, XComs, rendered template fields).
        """
        needle = secret.encode()
        if self.postgres is not None:
            self.postgres.dump(self.home / "metadata-dump.sql")
        files = [
            p for root in (self.logs, self.output) if root.exists() for p in root.rglob("*") if p.is_file()
        ]
        files += [
            p for p in self.home.glob("*") if p.is_file() and p.name.startswith(("airflow.db", "metadata"))
        ]
        return [path for path in files if _contains(path, needle)]


def _contains(path: Path, needle: bytes, chunk: int = 1 << 20) -> bool:
    """Whether the file contains ``needle``, read in chunks that overlap by the needle's length."""
    tail = b""
    with path.open("rb") as stream:
        while block := stream.read(chunk):
            if needle in tail + block:
                return True
            tail = block[-len(needle) :]
    return False


class PostgresServer:
    """
    A throw-away PostgreSQL cluster on loopback for the metadata DB, owned by the test session.

    Uses Debian's ``postgresql`` package, installed with ``apt-get`` when missing and running as root
    (CI); as root the server runs as the package's ``postgres`` user, which PostgreSQL requires.
    Durability is off (``fsync``, ``synchronous_commit``): the cluster is deleted afterwards.
    """

    def __init__(self) -> None:
        self.bin = self._bin_dir()
        self.as_postgres = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="dashscope-deployment-pg-"))
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.port = _free_port()
        self.url = f"postgresql+psycopg2://airflow@127.0.0.1:{self.port}/airflow"
        self.log = self.root / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        """Whether Airflow can use PostgreSQL here: its drivers are installed (the server is found later)."""
        return all(importlib.util.find_spec(name) for name in ("psycopg2", "asyncpg"))

    @staticmethod
    def _bin_dir() -> Path:
        def found() -> list[Path]:
            return sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))

        if not found() and os.geteuid() == 0 and shutil.which("apt-get"):
            quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": True}
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "update", "-qq"], env=env, **quiet)
            subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], env=env, **quiet)
        if not found():
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        return found()[-1].parent

    def _run(self, *args: str) -> None:
        subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            user="postgres" if self.as_postgres else None,
        )

    def start(self) -> None:
        """Create the cluster and the ``airflow`` database, and start the server (see :attr:`url`)."""
        self._run("initdb", "-D", str(self.data), "-U", "airflow", "--auth=trust", "-E", "UTF8", "--no-sync")
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
                    *("-D", str(self.data), "-p", str(self.port), "-c", "listen_addresses=127.0.0.1"),
                    *("-c", f"unix_socket_directories={self.root}", "-c", "max_connections=300"),
                    *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user="postgres" if self.as_postgres else None,
            )
        wait_for(self._ready, "PostgreSQL to accept connections", 60)
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "airflow", "airflow")

    def dump(self, path: Path) -> None:
        """Write the ``airflow`` database as SQL to ``path``."""
        client = [
            str(self.bin / "pg_dump"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "airflow",
            "airflow",
        ]
        with path.open("wb") as out:
            subprocess.run(client, stdout=out, check=True)

    def _ready(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"postgres exited:\n{self.log.read_text(errors='replace')[-4000:]}")
        probe = [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(probe, check=False).returncode == 0

    def stop(self) -> None:
        """Stop the server and delete the cluster."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def task_process(ti: dict[str, Any]) -> psutil.Process | None:
    """The process running a task instance: the task runner titles itself ``airflow worker -- <ti id>``."""
    title = f"airflow worker -- {ti['id']}"
    for proc in psutil.process_iter(["cmdline"]):
        if title in " ".join(proc.info["cmdline"] or ()):
            return proc
    return None


def busy_with(tis: list[dict[str, Any]]) -> list[str]:
    """
    The titles of processes still working for these task instances.

    A LocalExecutor worker titles itself ``airflow worker -- LocalExecutor: <ti id>`` while it supervises
    a task and reports the outcome to the scheduler when the supervisor is done; the task runner
    ``airflow worker -- <ti id>``. None left means no executor slot is held.
    """
    ids = {ti["id"] for ti in tis}
    titles = (" ".join(proc.info["cmdline"] or ()) for proc in psutil.process_iter(["cmdline"]))
    return [title for title in titles if title.startswith("airflow worker") and title.split()[-1] in ids]


class Scenario:
    """
    One scenario's own input file, run id and results folder, on the shared emulator and deployment.

    The emulator's clock is frozen while the scenario sets the scene (batches stay ``validating``) and
    the request counters start at zero after the upload.
    """

    def __init__(self, name: str, deployment: Deployment, emulator: EmulatorServer, results: Path) -> None:
        self.deployment = deployment
        self.emulator = emulator
        self.run_id = f"{name}-{secrets.token_hex(4)}"
        self.results = results
        emulator.set_clock(time_scale=0)
        self.dag_id: str | None = None
        self.client = DashScopeClient(api_key=emulator.api_key, base_url=emulator.base_url)
        self.input_file_id = self.client.upload_file(SAMPLE_REQUESTS).id
        emulator.clear_request_counts()

    def trigger(self, dag_id: str) -> None:
        """Start this scenario's run of ``dag_id`` with its input file and results folder."""
        self.dag_id = dag_id
        self.deployment.trigger(
            dag_id, self.run_id, input_file_id=self.input_file_id, destination=self.results.as_uri()
        )

    def wait_task(self, task_id: str, state: str, *, try_number: int = 1) -> dict[str, Any]:
        """Wait until try ``try_number`` of this run's task is in ``state``; return the task instance."""
        return self.deployment.wait_task(self.dag_id, self.run_id, task_id, state, try_number=try_number)

    def wait_run(self) -> str:
        """Wait until this scenario's DAG run is finished; return its state."""
        return self.deployment.wait_run(self.dag_id, self.run_id)

    def batch_reads(self, batch_id: str) -> int:
        """How many ``GET /batches/{id}`` reads of this batch reached the service (other clients' aside)."""
        return self.emulator.request_counts(per_path=True).get(f"GET /batches/{batch_id}", 0)

    def wait_batch_reads(self, batch_id: str, more_than: int = 0) -> int:
        """Wait until more than ``more_than`` reads of ``batch_id`` reached the service; return how many."""
        return wait_for(
            lambda: (reads := self.batch_reads(batch_id)) > more_than and reads,
            f"more than {more_than} status reads of {batch_id}",
        )

    def _trigger_logs(self, task_id: str, try_number: int, map_index: int) -> list[Path]:
        folder = (
            self.deployment.logs / f"dag_id={self.dag_id}" / f"run_id={self.run_id}" / f"task_id={task_id}"
        )
        if map_index >= 0:
            folder /= f"map_index={map_index}"
        return sorted(folder.glob(f"attempt={try_number}.log.trigger.*.log"))

    def trigger_log(self, task_id: str, try_number: int) -> str:
        """What the triggerer logged for one try of this run's task (``attempt=N.log.trigger.<job>.log``)."""
        return "".join(
            path.read_text(errors="replace") for path in self._trigger_logs(task_id, try_number, -1)
        )

    def trigger_jobs(self, task_id: str, try_number: int = 1, map_index: int = -1) -> set[str]:
        """The triggerer jobs that started the trigger of this try (their log of it says ``starting``)."""
        return {
            path.name.rsplit(".", 2)[-2]
            for path in self._trigger_logs(task_id, try_number, map_index)
            if ' starting"' in path.read_text(errors="replace")
        }

    def wait_trigger_started(
        self, task_id: str, try_number: int = 1, *, map_index: int = -1, besides: frozenset[str] = frozenset()
    ) -> str:
        """
        Wait until a triggerer job not in ``besides`` started the trigger of this try; return that job.

        Only a running trigger hears of a user's action on its task (its ``on_kill``): a task marked
        failed before any triggerer started its trigger loses the trigger unseen (docs/operators/create.rst).
        """
        other = f" other than {', '.join(sorted(besides))}" if besides else ""
        task = f"{task_id}[{map_index}]" if map_index >= 0 else task_id
        return wait_for(
            lambda: next(iter(sorted(self.trigger_jobs(task_id, try_number, map_index) - besides)), None),
            f"a triggerer{other} to start the trigger of try {try_number} of {task}",
        )

    def let_batches_run(self, *deferred: dict[str, Any]) -> None:
        """
        Start the emulator's clock once no executor slot works for the ``deferred`` task instances.

        The batches then finish within a poll or two. Waiting for the slots first matters: when a trigger
        fires before the scheduler has heard that the deferring workload ended, Airflow takes that late
        report for the resumed try's and fails the task ("finished with state success, but the task
        instance's state attribute is queued").
        """
        self.wait_released(*deferred)
        self.wait_heard(*deferred)
        self.emulator.set_clock(time_scale=RUNNING_CLOCK)

    def wait_released(self, *tis: dict[str, Any]) -> None:
        """Wait until no process works for these task instances (no executor slot is held for them)."""
        wait_for(lambda: not busy_with(list(tis)), "the executor to release the task instances")

    def wait_heard(self, *tis: dict[str, Any]) -> None:
        """
        Wait until the scheduler has taken the executor's report that each try's deferring workload ended.

        The worker's process is gone a scheduler loop or more before that (seconds on a busy machine).
        """
        heard = [
            "Received executor event with state success for task instance TaskInstanceKey("
            f"dag_id='{ti['dag_id']}', task_id='{ti['task_id']}', run_id='{ti['dag_run_id']}', "
            f"try_number={ti['try_number']}, map_index={ti['map_index']})"
            for ti in tis
        ]

        def all_heard() -> bool:
            output = self.deployment.output_of("scheduler")
            return all(line in output for line in heard)

        wait_for(all_heard, "the scheduler to hear that the deferring workloads ended")

    def counts(self) -> dict[str, int]:
        """The emulator's request counters of this scenario (read before :meth:`batches` adds a list call)."""
        return self.emulator.request_counts()

    def batches(self) -> list[Any]:
        """Every batch created over this scenario's input file."""
        return list(self.client.list_batches(input_file_ids=self.input_file_id))

    def assert_key_not_logged(self) -> None:
        """The API key is in no log file under AIRFLOW_HOME/logs and in no component's output."""
        leaked = self.deployment.files_containing(self.emulator.api_key)
        assert not leaked, f"the API key appears in {[str(p) for p in leaked]}"
        assert any(self.deployment.logs.rglob("*.log")), "no task logs were written: the check saw nothing"

    def close(self) -> None:
        """
        Leave nothing behind for the next scenario: let the batches finish and the run end (or fail it).

        A scenario that failed midway may leave a wait polling, which the next scenario's request
        counters would otherwise see.
        """
        try:
            if self.dag_id is not None:
                self.deployment.revive()
                self.emulator.set_clock(time_scale=RUNNING_CLOCK)
                try:
                    self.deployment.wait_run(self.dag_id, self.run_id, timeout=60)
                except AssertionError:
                    self.deployment.api(
                        "PATCH", f"/dags/{self.dag_id}/dagRuns/{self.run_id}", json={"state": "failed"}
                    )
                    # A task already handed to a worker runs on; its requests must not reach the next
                    # scenario's counters.
                    tis = self.deployment.api(
                        "GET",
                        f"/dags/{self.dag_id}/dagRuns/{self.run_id}/taskInstances",
                        params={"limit": 1000},
                    )["task_instances"]
                    wait_for(lambda: not busy_with(tis), "the failed run's workers to end", timeout=300)
        finally:
            self.client.close()
