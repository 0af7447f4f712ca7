"""Hook turning a ``dashscope`` Airflow connection into a DashScope Batch/Files client."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio.to_thread
from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.common.compat.sdk import BaseHook, mask_secret

from airflow_provider_dashscope_batch.client import (
    AsyncDashScopeClient,
    AuthenticationError,
    DashScopeClient,
    DashScopeError,
    InsufficientBalanceError,
    PermissionDeniedError,
    shared_async_client,
)
from airflow_provider_dashscope_batch.client._base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    REGION_BASE_URLS,
)
from airflow_provider_dashscope_batch.client.shared import DEFAULT_MAX_IN_FLIGHT
from airflow_provider_dashscope_batch.get_provider_info import (
    CONN_FIELDS,
    CUSTOM_REGION,
    UI_FIELD_BEHAVIOUR,
)

try:
    from airflow.providers.common.compat.connection import get_async_extra_dejson
except ImportError:  # common-compat < 1.23

    async def get_async_extra_dejson(conn: Any) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(lambda: conn.extra_dejson)


class DashScopeBatchHook(BaseHook):
    """
    Interact with the DashScope (Alibaba Cloud Model Studio) OpenAI-compatible Batch and Files API.

    The connection's password is the API key. Extra fields: ``region`` (``cn-beijing``,
    ``ap-southeast-1`` or ``custom``), ``base_url`` (overrides the region), ``workspace_id``
    (``X-DashScope-WorkSpace``), ``timeout`` (seconds) and ``max_retries``.

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
    def client_kwargs(self, password: str | None, extra: dict[str, Any]) -> dict[str, Any]:
        """
        Client constructor arguments from a connection's password and extra (no I/O).

        Extra keys are accepted plain (``region``) or prefixed (``extra__dashscope__region``).

        :param password: The connection's password (the API key).
        :param extra: The connection's deserialized extra.
        """

        def get(name: str) -> Any:
            value = extra.get(name)
            if value in (None, ""):
                value = extra.get(f"extra__{self.conn_type}__{name}")
            return None if value == "" else value

        conn_id = self.dashscope_conn_id
        if not password:
            raise ValueError(f"Connection {conn_id!r} has no API key: set the connection's password.")
        region = get("region")
        base_url = get("base_url")
        if not base_url:
            if region == CUSTOM_REGION:
                raise ValueError(f"Connection {conn_id!r}: region 'custom' needs a base_url.")
            if region is not None and region not in REGION_BASE_URLS:
                raise ValueError(
                    f"Connection {conn_id!r}: unknown region {region!r}; use one of "
                    f"{', '.join(REGION_BASE_URLS)} or set base_url."
                )
            base_url = REGION_BASE_URLS[region or "cn-beijing"]
        try:
            timeout = float(get("timeout") or DEFAULT_TIMEOUT)
            max_retries = int(get("max_retries") if get("max_retries") is not None else DEFAULT_MAX_RETRIES)
        except (TypeError, ValueError):
            raise ValueError(
                f"Connection {conn_id!r}: timeout must be a number and max_retries an integer."
            ) from None
        return {
            "api_key": password,
            "base_url": str(base_url),
            "workspace": get("workspace_id") or None,
            "timeout": timeout,
            "max_retries": max_retries,
        }

    def get_conn(self) -> DashScopeClient:
        """Return the (cached) synchronous client of the connection."""
        if self._client is None:
            conn = self.get_connection(self.dashscope_conn_id)
            kwargs = self.client_kwargs(conn.password, conn.extra_dejson)
            mask_secret(kwargs["api_key"])
            self._client = DashScopeClient(**kwargs)
        return self._client

    async def get_async_conn(self) -> AsyncDashScopeClient:
        """
        Return a new asynchronous client of the connection; the caller closes it (``async with``).

        The connection is read with ``get_async_connection``, which is safe inside a triggerer's event
        loop. Masking the key (a call to the supervisor) and building the client (httpx loads the CA
        bundle into an SSL context, 30-120 ms) run once in a worker thread, so neither stalls the loop.
        """
        conn = await get_async_connection(self.dashscope_conn_id, hook=self)
        kwargs = self.client_kwargs(conn.password, await get_async_extra_dejson(conn))

        def build() -> AsyncDashScopeClient:
            mask_secret(kwargs["api_key"])
            return AsyncDashScopeClient(**kwargs)

        return await anyio.to_thread.run_sync(build)

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
        """Check the key and endpoint by listing one batch; the message says what to fix."""
        try:
            client = self.get_conn()
            next(iter(client.list_batches(page_size=1)), None)
        except AuthenticationError as exc:
            return False, (
                f"DashScope rejected the API key ({exc}). Keys are per region: check that the key "
                f"belongs to the region of {self._base_url_hint()}."
            )
        except (PermissionDeniedError, InsufficientBalanceError) as exc:
            return False, f"The API key is valid but not allowed to use the Batch API: {exc}"
        except (DashScopeError, ValueError) as exc:
            return False, f"Could not reach DashScope at {self._base_url_hint()}: {exc}"
        return True, f"Connected to DashScope at {self._base_url_hint()}."

    def _base_url_hint(self) -> str:
        return self._client.base_url if self._client is not None else "the configured endpoint"

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
