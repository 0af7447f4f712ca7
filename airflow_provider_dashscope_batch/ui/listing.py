"""
What the batches page reads from the service: one page of a connection's batches, shared for a few seconds.

A page view costs at most one list request per connection: pages are kept for :data:`LIST_TTL` seconds
in the api-server process and shared by every user (each user's view is filtered from it afterwards),
and concurrent views of the same page wait for one request (single flight). The connection's key and
client are kept for :data:`CONNECTION_TTL` seconds; the client obeys the account's rate budget.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING

from airflow_provider_dashscope_batch.client.types import Batch, BatchStatus

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client.sync import DashScopeClient

__all__ = ["CONNECTION_TTL", "LIST_TTL", "BatchQuery", "ListedPage", "Listings", "UnknownConnection"]

#: Seconds a listed page is shared by all page views.
LIST_TTL = 5.0
#: Seconds a connection's key and client are reused.
CONNECTION_TTL = 60.0
#: Most listed pages kept at once.
_MAX_PAGES = 256


class UnknownConnection(LookupError):
    """The connection does not exist or has no API key (the message names only the id)."""


@dataclass(frozen=True)
class BatchQuery:
    """
    One page of the service's batch list: its filters, cursor and size.

    :param conn_id: The DashScope connection.
    :param ds_name: The name filter (the service matches it fuzzily).
    :param status: Only batches in these statuses.
    :param input_file_ids: Only batches of these input files.
    :param create_after: Only batches created after this (aware) time.
    :param create_before: Only batches created before this (aware) time.
    :param after: The page cursor (the last batch id of the page before).
    :param limit: Batches per page.
    """

    conn_id: str
    ds_name: str | None = None
    status: tuple[BatchStatus, ...] = ()
    input_file_ids: tuple[str, ...] = ()
    create_after: datetime | None = None
    create_before: datetime | None = None
    after: str | None = None
    limit: int = 25


@dataclass(frozen=True)
class ListedPage:
    """A listed page: its batches, the next page's cursor (None: last page), when it was read."""

    batches: tuple[Batch, ...]
    next_after: str | None
    read_at: float


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    page: ListedPage | None = None


@dataclass
class _Client:
    client: DashScopeClient
    expires: float


class Listings:
    """The shared cache of listed pages and connection clients of one api-server process."""

    def __init__(self, list_ttl: float = LIST_TTL) -> None:
        self.list_ttl = list_ttl
        self.requests = 0  # list requests sent, for the benchmark and tests
        self._pages: OrderedDict[BatchQuery, _Entry] = OrderedDict()
        self._clients: dict[str, _Client] = {}
        self._lock = threading.Lock()

    def client(self, conn_id: str) -> DashScopeClient:
        """The connection's client (built from the connection's password and extra; blocking)."""
        from airflow.models.connection import Connection

        from airflow_provider_dashscope_batch.client.sync import DashScopeClient
        from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook

        now = time.monotonic()
        with self._lock:
            cached = self._clients.get(conn_id)
        if cached is not None and cached.expires > now:
            return cached.client
        try:
            conn = Connection.get_connection_from_secrets(conn_id)
        except Exception:  # AirflowNotFoundException, or a secrets backend failing: treated alike
            raise UnknownConnection(conn_id) from None
        if not conn.password:
            raise UnknownConnection(conn_id)
        hook = DashScopeBatchHook(dashscope_conn_id=conn_id)
        client = hook.client_settings(conn.password, conn.extra_dejson).build(DashScopeClient)
        with self._lock:
            self._clients[conn_id] = _Client(client, now + CONNECTION_TTL)
        return client

    def page(self, query: BatchQuery) -> ListedPage:
        """The page ``query`` names: from the cache if read in the last ``list_ttl`` seconds (blocking)."""
        with self._lock:
            entry = self._pages.get(query)
            if entry is None:
                entry = self._pages[query] = _Entry()
                while len(self._pages) > _MAX_PAGES:
                    self._pages.popitem(last=False)
        with entry.lock:  # one request per page at a time; the others wait for its answer
            if entry.page is not None and time.monotonic() - entry.page.read_at < self.list_ttl:
                return entry.page
            entry.page = self._read(query)
            return entry.page

    def _read(self, query: BatchQuery) -> ListedPage:
        client = self.client(query.conn_id)
        with self._lock:
            self.requests += 1
        # one more than the page shows, so that whether a next page exists costs no second request
        listed = client.list_batches(
            after=query.after,
            ds_name=query.ds_name,
            status=[s.value for s in query.status] or None,
            input_file_ids=list(query.input_file_ids) or None,
            create_after=query.create_after,
            create_before=query.create_before,
            page_size=query.limit + 1,
            max_retries=1,
        )
        read = tuple(islice(listed, query.limit + 1))
        batches = read[: query.limit]
        more = len(read) > query.limit
        return ListedPage(batches, batches[-1].id if more and batches else None, time.monotonic())

    def forget(self, conn_id: str) -> None:
        """Drop the connection's cached pages (after a cancel, so the next view shows it)."""
        with self._lock:
            for query in [q for q in self._pages if q.conn_id == conn_id]:
                del self._pages[query]
