"""One :class:`AsyncDashScopeClient` per (running event loop, key), shared by every user in that loop.

A triggerer runs up to a thousand triggers in one event loop. A client per trigger costs a connection
pool each (``benchmarks/README.md`` has the memory this takes); one client per connection and loop, with
the requests in flight bounded by a semaphore, keeps memory flat and the loop responsive. The client is
created by the first user, reference-counted, and closed when the last user leaves. Its users also share,
through the connection, its request budget (:mod:`~airflow_provider_dashscope_batch.client.ratelimit`);
the wait layer above keeps one status reader per shared client.
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

from airflow_provider_dashscope_batch.client.async_ import AsyncDashScopeClient

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "shared_async_client"]

DEFAULT_MAX_IN_FLIGHT = 32

ClientFactory = Callable[[], "AsyncDashScopeClient | Awaitable[AsyncDashScopeClient]"]


@dataclass
class _Entry:
    ready: asyncio.Future[AsyncDashScopeClient]
    users: int = 0
    semaphore: anyio.Semaphore = field(default_factory=lambda: anyio.Semaphore(DEFAULT_MAX_IN_FLIGHT))


_registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, _Entry]] = (
    weakref.WeakKeyDictionary()
)


@asynccontextmanager
async def shared_async_client(
    key: Hashable, factory: ClientFactory, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
) -> AsyncIterator[AsyncDashScopeClient]:
    """
    Borrow the client shared under ``key`` in the running event loop, creating it on first use.

    :param key: Identity of the client, e.g. the connection id (never the API key itself).
    :param factory: Builds the client (sync or async callable); called once per loop and key.
    :param max_in_flight: Requests the shared client sends at once; set by the first user.
    """
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    loop = asyncio.get_running_loop()
    clients = _registry.setdefault(loop, {})
    entry = clients.get(key)
    if entry is None:
        entry = _Entry(ready=loop.create_future(), semaphore=anyio.Semaphore(max_in_flight))
        clients[key] = entry
        entry.users += 1
        try:
            made = factory()
            client = await made if inspect.isawaitable(made) else made
            client.limit_concurrency(entry.semaphore)
        except BaseException as exc:
            clients.pop(key, None)
            entry.ready.set_exception(exc)
            entry.ready.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        entry.ready.set_result(client)
    else:
        entry.users += 1
        try:
            client = await asyncio.shield(entry.ready)
        except BaseException:
            entry.users -= 1
            raise
    del factory  # a borrow lasts as long as its user's wait: drop the factory (often a hook's method)
    try:
        yield client
    finally:
        entry.users -= 1
        if entry.users == 0 and clients.get(key) is entry:
            del clients[key]
            await client.aclose()
