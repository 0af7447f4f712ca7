"""Hook turning a ``dashscope`` Airflow connection into a DashScope Batch/Files client."""

from __future__ import annotations

import hashlib
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import anyio.to_thread
from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.common.compat.sdk import BaseHook, mask_secret

from airflow_provider_dashscope_batch.client import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    APIConnectionError,
    APIStatusError,
    AsyncDashScopeClient,
    AuthenticationError,
    DashScopeClient,
    InsufficientBalanceError,
    LocalValidationError,
    NotFoundError,
    PermissionDeniedError,
    shared_async_client,
)
from airflow_provider_dashscope_batch.client.loop_clients import DEFAULT_MAX_IN_FLIGHT
from airflow_provider_dashscope_batch.client.ratelimit import RateBudget, parse_rate_limits, rate_budget_for
from airflow_provider_dashscope_batch.hooks.connection_form import (
    CONN_FIELDS,
    CUSTOM_REGION,
    UI_FIELD_BEHAVIOUR,
)
from airflow_provider_dashscope_batch.regions import DEFAULT_REGION, REGION_BASE_URLS, region_base_url

try:
    from airflow.providers.common.compat.connection import get_async_extra_dejson
except ImportError:  # common-compat < 1.23

    async def get_async_extra_dejson(conn: Any) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(lambda: conn.extra_dejson)


_ClientT = TypeVar("_ClientT", DashScopeClient, AsyncDashScopeClient)


class ConnectionSetupError(ValueError):
    """The connection is set up wrongly (no API key, unknown region, ...); nothing was sent."""


@dataclass(frozen=True)
class ClientSettings:
    """
    The client a connection describes, read from its password and extra (no I/O).

    :param api_key: The API key (left out of ``repr``, so it never reaches a log line).
    :param base_url: Compatible-mode base URL of the region (or the connection's own).
    :param workspace: Workspace id, if any.
    :param timeout: Per-request timeout in seconds.
    :param max_retries: Retries of transient failures.
    :param rate_budget: The connection's request budget in this process.
    """

    api_key: str = field(repr=False)
    base_url: str
    workspace: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    rate_budget: RateBudget | None = field(default=None, repr=False)

    def build(self, client_class: type[_ClientT]) -> _ClientT:
        """A new client of ``client_class`` with these settings."""
        return client_class(
            api_key=self.api_key,
            base_url=self.base_url,
            workspace=self.workspace,
            timeout=self.timeout,
            max_retries=self.max_retries,
            rate_budget=self.rate_budget,
        )


#: The budget of each account (key digest, base URL, workspace) a hook has built a client for.
_account_budgets: dict[tuple[str, str, str | None], RateBudget] = {}


def _account(api_key: str, base_url: str, workspace: str | None) -> tuple[str, str, str | None]:
    return hashlib.sha256(api_key.strip().encode()).hexdigest()[:32], base_url.rstrip("/"), workspace


def account_budget(api_key: str, base_url: str, workspace: str | None = None) -> RateBudget:
    """
    The request budget of the account behind ``api_key`` at ``base_url``, for clients built without a
    connection id (the common.ai adapter is handed only a key and a host).

    It is the budget of a connection of this process with that key and endpoint, once a hook has built
    its client (so both obey one budget, with the connection's ``rate_limits`` / ``rate_share``);
    otherwise one budget per account at the documented limits.
    """
    account = _account(api_key, base_url, workspace)
    return _account_budgets.get(account) or rate_budget_for(("dashscope-account", *account))


class DashScopeBatchHook(BaseHook):
    """
    Interact with the DashScope (Alibaba Cloud Model Studio) OpenAI-compatible Batch and Files API.

    The connection's password is the API key. Extra fields: ``region`` (``cn-beijing``,
    ``ap-southeast-1`` or ``custom``), ``base_url`` (overrides the region), ``workspace_id``
    (``X-DashScope-WorkSpace``; in ``ap-southeast-1`` it also picks the workspace's own host, as the batch
    guide recommends), ``timeout`` (seconds), ``max_retries``, and the request budget ``rate_limits`` /
    ``rate_share`` (see :mod:`~airflow_provider_dashscope_batch.client.ratelimit`).

    :param dashscope_conn_id: The :ref:`DashScope connection id <howto/connection:dashscope>`.
    """

    conn_name_attr = "dashscope_conn_id"
    default_conn_name = "dashscope_default"
    conn_type = "dashscope"
    hook_name = "DashScope Batch"

    def __init__(self, dashscope_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dashscope_conn_id = dashscope_conn_id
        self._client: DashScopeClient | None = None

    # ----------------------------------------------------------------------------------- connection
    def client_settings(self, password: str | None, extra: dict[str, Any]) -> ClientSettings:
        """
        The settings of the client a connection's password and extra describe (no I/O).

        Extra keys are accepted plain (``region``) or prefixed (``extra__dashscope__region``); an unset
        ``timeout`` or ``max_retries`` leaves the client's default.

        :param password: The connection's password (the API key).
        :param extra: The connection's deserialized extra.
        :raises ConnectionSetupError: The connection lacks the key or names an unusable endpoint.
        """

        def get(name: str) -> Any:
            value = extra.get(name)
            if value in (None, ""):
                value = extra.get(f"extra__{self.conn_type}__{name}")
            return None if value == "" else value

        conn_id = self.dashscope_conn_id
        if not password or not password.strip():
            raise ConnectionSetupError(f"Connection {conn_id!r} has no API key (set the password).")
        region = get("region")
        base_url = get("base_url")
        workspace = get("workspace_id") or None
        if not base_url:
            if region == CUSTOM_REGION:
                raise ConnectionSetupError(
                    f"Connection {conn_id!r}: region {CUSTOM_REGION!r} needs a Base URL (base_url)."
                )
            if region is not None and region not in REGION_BASE_URLS:
                raise ConnectionSetupError(
                    f"Connection {conn_id!r}: unknown region {region!r}; choose one of "
                    f"{', '.join(REGION_BASE_URLS)}, or {CUSTOM_REGION!r} with a Base URL."
                )
            try:
                base_url = region_base_url(region or DEFAULT_REGION, workspace)
            except ValueError as exc:
                raise ConnectionSetupError(f"Connection {conn_id!r}: {exc}") from None
        try:
            timeout = float(get("timeout")) if get("timeout") is not None else DEFAULT_TIMEOUT
            max_retries = int(get("max_retries")) if get("max_retries") is not None else DEFAULT_MAX_RETRIES
        except (TypeError, ValueError):
            raise ConnectionSetupError(
                f"Connection {conn_id!r}: timeout must be a number and max_retries an integer."
            ) from None
        try:
            limits = parse_rate_limits(get("rate_limits"), get("rate_share"))
        except ValueError as exc:
            raise ConnectionSetupError(f"Connection {conn_id!r}: {exc}") from None
        budget = rate_budget_for((self.conn_type, conn_id), limits)
        _account_budgets.setdefault(_account(password, str(base_url), workspace), budget)
        return ClientSettings(
            api_key=password,
            base_url=str(base_url),
            workspace=workspace,
            timeout=timeout,
            max_retries=max_retries,
            rate_budget=budget,
        )

    def get_conn(self) -> DashScopeClient:
        """Return the (cached) synchronous client of the connection."""
        if self._client is None:
            conn = self.get_connection(self.dashscope_conn_id)
            settings = self.client_settings(conn.password, conn.extra_dejson)
            self._client = self._new_client(DashScopeClient, settings)
        return self._client

    def close(self) -> None:
        """Close the cached client (its connections); the next :meth:`get_conn` opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def get_async_conn(self) -> AsyncDashScopeClient:
        """
        Return a new asynchronous client of the connection; the caller closes it (``async with``).

        The connection is read with ``get_async_connection``, which is safe inside a triggerer's event
        loop. Masking the key (a call to the supervisor) and building the client (httpx loads the CA
        bundle into an SSL context) run in a worker thread, so neither stalls the loop.
        """
        conn = await get_async_connection(self.dashscope_conn_id, hook=self)
        settings = self.client_settings(conn.password, await get_async_extra_dejson(conn))
        return await anyio.to_thread.run_sync(self._new_client, AsyncDashScopeClient, settings)

    def _new_client(self, client_class: type[_ClientT], settings: ClientSettings) -> _ClientT:
        mask_secret(settings.api_key)
        try:
            return settings.build(client_class)
        except LocalValidationError as exc:  # e.g. a Base URL that is not http(s)
            raise ConnectionSetupError(f"Connection {self.dashscope_conn_id!r}: {exc}") from None

    def shared_async_client(
        self, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    ) -> AbstractAsyncContextManager[AsyncDashScopeClient]:
        """
        Borrow the async client shared by every user of this connection in the running event loop.

        Use this from triggers: one client (one connection pool) serves all triggers of a connection,
        with at most ``max_in_flight`` requests in flight; it closes when the last user leaves.

        :param max_in_flight: Concurrent requests of the shared client (set by its first user).
        """
        return shared_async_client(
            key=(self.conn_type, self.dashscope_conn_id),
            factory=self.get_async_conn,
            max_in_flight=max_in_flight,
        )

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the key and the endpoint by listing one batch.

        The request is sent once, without retries, so the UI's Test button answers within the
        connection's timeout even when the endpoint is down. The message names what to fix: a setup
        mistake (nothing was sent), a rejected key, an endpoint that does not answer, or one that
        answers with an error.
        """
        conn = self.get_connection(self.dashscope_conn_id)
        try:
            settings = self.client_settings(conn.password, conn.extra_dejson)
            client = self._new_client(DashScopeClient, replace(settings, max_retries=0))
        except ConnectionSetupError as exc:
            return False, str(exc)
        where = client.base_url
        try:
            with client:
                next(iter(client.list_batches(page_size=1)), None)
        except AuthenticationError as exc:
            return False, (
                f"DashScope at {where} rejected the API key ({exc}). Keys are per region: check that "
                "the key belongs to this endpoint's region."
            )
        except (PermissionDeniedError, InsufficientBalanceError) as exc:
            return False, f"The API key is valid but not allowed to use the Batch API: {exc}"
        except NotFoundError as exc:
            return False, f"No Batch API at {where} ({exc}); a Base URL ends in /compatible-mode/v1."
        except APIConnectionError as exc:
            return False, f"Could not reach DashScope at {where}: {exc}"
        except APIStatusError as exc:
            return False, f"DashScope at {where} answered with an error: {exc}"
        return True, f"Connected to DashScope at {where}."

    # ---------------------------------------------------------------------------------------- form
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Form behaviour for Airflow < 3.2 (>= 3.2 reads ``ui-field-behaviour`` from provider info)."""
        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """
        Extra-field widgets for Airflow < 3.2, derived from the declarative ``conn-fields``.

        Only wtforms is imported: Airflow 3.0/3.1 read these widgets through their React UI, which
        needs no Flask AppBuilder, and an import error here would silently drop the whole form.
        """
        from wtforms import IntegerField, StringField
        from wtforms.validators import Optional, any_of

        widgets: dict[str, Any] = {}
        for name, spec in CONN_FIELDS.items():
            schema = spec["schema"]
            validators: list[Any] = [Optional()]
            if "enum" in schema:
                validators.append(any_of(schema["enum"]))
            field_class = IntegerField if "integer" in schema["type"] else StringField
            widgets[name] = field_class(
                spec["label"],
                validators=validators,
                description=spec.get("description"),
                default=schema.get("default"),
            )
        return widgets
