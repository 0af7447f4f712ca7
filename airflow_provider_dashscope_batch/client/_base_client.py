"""What the sync and async clients share: :class:`BaseClient` and the machinery that declares their methods.

Every API call is declared once on :class:`BaseClient`, from the flow of :mod:`.resources` that
implements it (``FlowCall``, ``FlowListing``); each client class turns the declaration into a
method of its own kind when it is defined (the sync one returns the result, the async one awaits it;
listings are iterators or async iterators). A client writes only its driver (how a :class:`~._flow.Send`
and a :class:`~._flow.Sleep` are performed) and the streaming of downloads, so the two cannot drift apart.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

import httpx

from airflow_provider_dashscope_batch.client import ambiguity, copies, status
from airflow_provider_dashscope_batch.client._core import DEFAULT_TIMEOUT, ClientCore
from airflow_provider_dashscope_batch.client._retry import DEFAULT_MAX_RETRIES, RetryPolicy
from airflow_provider_dashscope_batch.client.ratelimit import RateBudget
from airflow_provider_dashscope_batch.client.resources import batches, files
from airflow_provider_dashscope_batch.regions import DEFAULT_BASE_URL

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client._flow import Flow, Listing, Send

T = TypeVar("T")
ItemT = TypeVar("ItemT")
P = ParamSpec("P")


HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)


class _FlowMethod:
    """
    One client method, declared once on :class:`BaseClient` from the flow it drives.

    Each client class gets a real method of its own kind (:meth:`method_for`): the sync client returns
    the flow's result, the async one awaits it; listings are iterators and async iterators. The flow's
    signature (its first parameter, the core, becoming ``self``) and docstring are the method's.
    """

    listing: ClassVar[bool] = False

    def __init__(self, flow: Callable[..., Any]) -> None:
        self.flow = flow

    def method_for(self, client_class: type[BaseClient[Any]]) -> Callable[..., Any]:
        """The method of this call on ``client_class`` (a :class:`BaseClient` subclass)."""
        flow, is_async = self.flow, issubclass(client_class.http_class, httpx.AsyncClient)
        driver = "_iterate" if self.listing else "_run"
        method: Callable[..., Any]
        if is_async and not self.listing:

            async def method(client: Any, *args: Any, **kwargs: Any) -> Any:
                return await client._run(flow(client._core, *args, **kwargs))

        else:

            def method(client: Any, *args: Any, **kwargs: Any) -> Any:
                return getattr(client, driver)(flow(client._core, *args, **kwargs))

        functools.update_wrapper(method, flow)
        name = flow.__name__.removesuffix("_flow")
        method.__name__, method.__qualname__ = name, f"{client_class.__name__}.{name}"
        method.__module__ = client_class.__module__
        flow_returns = re.fullmatch(r"\w+\[(.*)\]", flow.__annotations__["return"])
        assert flow_returns is not None
        returns = flow_returns.group(1)
        if self.listing:
            returns = f"{'AsyncIterator' if is_async else 'Iterator'}[{returns}]"
        signature = inspect.signature(flow)
        core, *params = signature.parameters.values()
        annotations = {k: v for k, v in flow.__annotations__.items() if k != core.name}
        method.__annotations__ = {**annotations, "return": returns}
        method.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[core.replace(name="self", annotation=inspect.Parameter.empty), *params],
            return_annotation=returns,
        )
        return method


class FlowCall(_FlowMethod, Generic[P, T]):
    """A method returning the result of a flow: ``T`` on the sync client, awaited on the async one."""

    def __init__(self, flow: Callable[Concatenate[ClientCore, P], Flow[T]]) -> None:
        super().__init__(flow)

    @overload
    def __get__(self, client: BaseClient[httpx.Client], owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(
        self, client: BaseClient[httpx.AsyncClient], owner: type[Any]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    @overload
    def __get__(self, client: None, owner: type[Any]) -> Self: ...
    def __get__(self, client: Any, owner: type[Any]) -> Any:
        return self if client is None else self.method_for(owner).__get__(client, owner)


class FlowListing(_FlowMethod, Generic[P, ItemT]):
    """A method iterating a listing flow: an iterator on the sync client, an async one on the other."""

    listing = True

    def __init__(self, flow: Callable[Concatenate[ClientCore, P], Listing[ItemT]]) -> None:
        super().__init__(flow)

    @overload
    def __get__(self, client: BaseClient[httpx.Client], owner: type[Any]) -> Callable[P, Iterator[ItemT]]: ...
    @overload
    def __get__(
        self, client: BaseClient[httpx.AsyncClient], owner: type[Any]
    ) -> Callable[P, AsyncIterator[ItemT]]: ...
    @overload
    def __get__(self, client: None, owner: type[Any]) -> Self: ...
    def __get__(self, client: Any, owner: type[Any]) -> Any:
        return self if client is None else self.method_for(owner).__get__(client, owner)


class BaseClient(Generic[HttpT]):
    """
    What the sync and async clients share: their constructor and their API, over a ``ClientCore``.

    Every API call is declared here once, from the flow that implements it (its signature and
    docstring are the call's); each client class turns it into a method of its own kind when it is
    defined. A client only drives the flows over its own ``httpx`` client (``http_class``) and streams
    downloads.
    """

    http_class: type[HttpT]

    upload_file = FlowCall(files.upload_file_flow)
    retrieve_file = FlowCall(files.retrieve_file_flow)
    list_files = FlowListing(files.list_files_flow)
    delete_file = FlowCall(files.delete_file_flow)
    create_batch = FlowCall(batches.create_batch_flow)
    find_batch = FlowCall(batches.find_batch_flow)
    cancel_duplicates = FlowCall(batches.cancel_duplicates_flow)
    retrieve_batch = FlowCall(batches.retrieve_batch_flow)
    list_batches = FlowListing(batches.list_batches_flow)
    cancel_batch = FlowCall(batches.cancel_batch_flow)
    # The create and upload with their Ambiguity (see :mod:`.ambiguity`), for callers that carry it.
    create_batch_receipt = FlowCall(ambiguity.create_batch_receipt_flow)
    upload_file_receipt = FlowCall(ambiguity.upload_file_receipt_flow)
    # Grouped status reads (one list request for up to 20 waits) and the late copies of an ambiguous
    # create or upload (see :mod:`.status` and :mod:`.copies`).
    read_statuses = FlowCall(status.read_statuses_flow)
    find_file_copies = FlowCall(copies.find_file_copies_flow)
    delete_file_copies = FlowCall(copies.delete_file_copies_flow)
    reconcile = FlowCall(copies.reconcile_flow)
    remove_late_copies = FlowCall(copies.remove_late_copies_flow)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, member in vars(BaseClient).items():
            if isinstance(member, _FlowMethod) and name not in vars(cls):
                setattr(cls, name, member.method_for(cls))

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        workspace: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: HttpT | None = None,
        retry_policy: RetryPolicy | None = None,
        rate_budget: RateBudget | None = None,
    ) -> None:
        self.rate_budget = rate_budget or RateBudget()
        self._core = ClientCore(
            api_key=api_key,
            base_url=base_url,
            workspace=workspace,
            timeout=timeout,
            retry=retry_policy or RetryPolicy(max_retries=max_retries),
        )
        self._owns_http = http_client is None
        self._http: HttpT = http_client or self.http_class(timeout=self._core.timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._core.base_url!r}, workspace={self._core.workspace!r})"

    def _must_read(self, step: Send, response: httpx.Response) -> bool:
        """Note a response with the rate budget; whether its body is read now (not handed back streaming)."""
        self.rate_budget.observe(step.request, response)
        return not (step.stream and response.is_success)

    @property
    def base_url(self) -> str:
        """The compatible-mode base URL requests go to."""
        return self._core.base_url

    @property
    def timeout(self) -> httpx.Timeout:
        """The per-request timeout (it sizes the window of a late-processed create, see ``ambiguity``)."""
        return self._core.timeout
