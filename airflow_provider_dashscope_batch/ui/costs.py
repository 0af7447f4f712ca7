"""
The batches' actual costs for the batches page, read from the transfer's XCom through Airflow's REST API.

The results transfer records each batch's actual cost in XCom
(:mod:`airflow_provider_dashscope_batch.cost.recorded`); the page reads it for the DAG runs its finished
batches name, with the viewing user's own credential (their bearer token or the UI's ``_token``
cookie, sent as a bearer token), so Airflow's authorization decides what they may read, as for any API
client: nothing is widened, no table is read.

The REST API is reached over HTTP at the public ``[api] base_url`` (``http://127.0.0.1:[api] port`` when
unset), never at an address the request names. Not in-process through ASGI: the plugin's app is mounted
inside Airflow's, which a plugin reaches only through Airflow's internal app factory (the request's
scope names the mounted sub-app); the loopback request passes the same authentication as any client.

Per DAG run and user, one list request finds the entries (the list endpoint carries no values) and one
request per entry reads it (one per transfer task that ran); answers are kept for :data:`COSTS_TTL`
seconds. Reading never holds the page up: all runs are read concurrently within :data:`READ_TIMEOUT`
seconds, and whatever fails or is late is simply unknown (shown as "—").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import httpx

from airflow_provider_dashscope_batch.cost.recorded import COSTS_XCOM_KEY, RecordedCost, parse_costs_xcom

__all__ = ["COSTS_TTL", "READ_TIMEOUT", "ActualCosts", "api_base"]

log = logging.getLogger(__name__)

#: Seconds a DAG run's costs are reused for the same user.
COSTS_TTL = 5.0
#: Seconds the page waits for the costs of all its DAG runs.
READ_TIMEOUT = 2.0
#: Most transfer tasks' entries read per DAG run.
_MAX_ENTRIES = 20
_MAX_CACHED = 1024

Run = tuple[str, str]


def api_base() -> str:
    """The REST API's root: ``[api] base_url`` + ``/api/v2`` (loopback on ``[api] port`` when unset)."""
    from airflow.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    if not base.startswith(("http://", "https://")):
        base = f"http://127.0.0.1:{conf.getint('api', 'port', fallback=8080)}"
    return f"{base}/api/v2"


class ActualCosts:
    """
    The cache of DAG runs' recorded costs of one api-server process, per user credential.

    :param base: The REST API root (default: :func:`api_base`, read at the first request).
    :param transport: An httpx transport (tests).
    """

    def __init__(self, base: str | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base = base
        self.transport = transport
        self.requests = 0  # REST requests sent, for the tests
        self._cache: OrderedDict[tuple[str, Run], tuple[float, dict[str, RecordedCost]]] = OrderedDict()

    async def of_runs(self, token: str, runs: Iterable[Run]) -> dict[str, RecordedCost]:
        """The costs recorded in ``runs`` the user may read, by batch id (what fails is left out)."""
        wanted = sorted(set(runs))
        if not token or not wanted:
            return {}
        user = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        found: dict[str, RecordedCost] = {}
        missing = []
        for run in wanted:
            cached = self._cache.get((user, run))
            if cached is not None and now - cached[0] < COSTS_TTL:
                found.update(cached[1])
            else:
                missing.append(run)
        if not missing:
            return found
        self.base = self.base or api_base()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        async with httpx.AsyncClient(
            base_url=self.base, headers=headers, timeout=READ_TIMEOUT, transport=self.transport
        ) as client:
            tasks = [asyncio.ensure_future(self._read(client, run)) for run in missing]
            done, late = await asyncio.wait(tasks, timeout=READ_TIMEOUT)
            for task in late:
                task.cancel()
        for run, task in zip(missing, tasks, strict=True):
            costs: dict[str, RecordedCost] = {}
            if task in done and task.exception() is None:
                costs = task.result()
            else:  # unknown for this view and the next few seconds': the page is not held up again
                why = "no answer in time" if task in late else task.exception()
                log.info("DashScope batches page: no costs for %s: %s", run, why)
            self._remember((user, run), costs)
            found.update(costs)
        return found

    def _remember(self, key: tuple[str, Run], costs: dict[str, RecordedCost]) -> None:
        self._cache[key] = (time.monotonic(), costs)
        self._cache.move_to_end(key)
        while len(self._cache) > _MAX_CACHED:
            self._cache.popitem(last=False)

    async def _read(self, client: httpx.AsyncClient, run: Run) -> dict[str, RecordedCost]:
        dag_id, run_id = (quote(v, safe="") for v in run)
        entries = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        self.requests += 1
        listed = await client.get(
            f"{entries}/~/xcomEntries", params={"xcom_key": COSTS_XCOM_KEY, "limit": _MAX_ENTRIES}
        )
        listed.raise_for_status()
        found: dict[str, RecordedCost] = {}
        for entry in listed.json().get("xcom_entries", [])[:_MAX_ENTRIES]:
            task_id, map_index = str(entry.get("task_id", "")), int(entry.get("map_index", -1))
            self.requests += 1
            answer = await client.get(
                f"{entries}/{quote(task_id, safe='')}/xcomEntries/{COSTS_XCOM_KEY}",
                params={"map_index": map_index},
            )
            answer.raise_for_status()
            found.update(parse_costs_xcom(_json_value(answer.json().get("value"))))
        return found


def _json_value(value: Any) -> Any:
    """The XCom's value: the API answers the stored JSON, as an object or as its text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value
