"""What an operator puts in a batch's metadata so that its finish becomes an event: mark, callback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_dashscope_batch.events.tokens import (
    MARK_KEY,
    PREVIOUS_SECRET_EXTRA,
    SECRET_EXTRA,
    callback_url,
    mark,
    mint_token,
)

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook

__all__ = ["BASE_URL_EXTRA", "event_secrets", "finish_event_metadata", "public_base_url"]

#: Connection extra naming the public base URL of the Airflow api-server (what DashScope can reach).
BASE_URL_EXTRA = "callback_base_url"


def event_secrets(extra: Mapping[str, Any]) -> tuple[str, ...]:
    """The connection's finish-events secrets, current first (empty: finish events are not set up)."""
    current, previous = extra.get(SECRET_EXTRA), extra.get(PREVIOUS_SECRET_EXTRA)
    if not isinstance(current, str) or not current:
        return ()
    return (current, previous) if isinstance(previous, str) and previous else (current,)


def public_base_url(conn_id: str, extra: Mapping[str, Any]) -> str:
    """
    The api-server's public base URL: the connection's ``callback_base_url`` extra, else the
    ``[dashscope_batch] callback_base_url`` option.

    :raises ConnectionSetupError: Neither is set, or the value is not an http(s) URL.
    """
    from airflow.providers.common.compat.sdk import conf

    from airflow_provider_dashscope_batch.hooks.dashscope import ConnectionSetupError

    base = extra.get(BASE_URL_EXTRA) or conf.get("dashscope_batch", BASE_URL_EXTRA, fallback=None)
    if not base:
        raise ConnectionSetupError(
            f'finish_callback="airflow" needs the public URL of the Airflow api-server: set the extra '
            f"{BASE_URL_EXTRA!r} of connection {conn_id!r} (e.g. https://airflow.example.com) or the "
            f"option [dashscope_batch] {BASE_URL_EXTRA}."
        )
    if not str(base).startswith(("http://", "https://")):
        raise ConnectionSetupError(f"Connection {conn_id!r}: {BASE_URL_EXTRA} must be an http(s) URL.")
    return str(base)


def finish_event_metadata(
    hook: DashScopeBatchHook, idempotency_key: str, *, callback: bool
) -> dict[str, str]:
    """
    The metadata that makes a batch's finish an event of ``hook``'s connection.

    The mark (:func:`~.tokens.mark`) whenever the connection has a finish-events secret, so the finish
    watcher counts the batch as this deployment's; with ``callback`` also the receiver's callback URL with a
    fresh token (masked).

    :raises ConnectionSetupError: ``callback`` without a secret or a public base URL.
    """
    from airflow.providers.common.compat.sdk import mask_secret

    from airflow_provider_dashscope_batch.hooks.dashscope import ConnectionSetupError

    conn_id = hook.dashscope_conn_id
    extra = hook.get_connection(conn_id).extra_dejson
    found = event_secrets(extra)
    if not found:
        if callback:
            raise ConnectionSetupError(
                f'finish_callback="airflow" needs the extra {SECRET_EXTRA!r} of connection {conn_id!r}: '
                "a random secret of your own (e.g. `openssl rand -hex 32`), independent of the API key."
            )
        return {}
    metadata = {MARK_KEY: mark(found[0], conn_id, idempotency_key)}
    if callback:
        token = mint_token(found[0], conn_id)
        mask_secret(token)
        metadata["ds_batch_finish_callback"] = callback_url(public_base_url(conn_id, extra), conn_id, token)
    return metadata
