"""The callback URL an operator puts in a batch's metadata for ``finish_callback="airflow"``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_dashscope_batch.events.tokens import callback_url, mint_token

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook

__all__ = ["BASE_URL_EXTRA", "airflow_callback_url", "public_base_url"]

#: Connection extra naming the public base URL of the Airflow api-server (what DashScope can reach).
BASE_URL_EXTRA = "callback_base_url"


def public_base_url(conn_id: str, extra: dict) -> str:
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


def airflow_callback_url(hook: DashScopeBatchHook) -> str:
    """A new callback URL with a fresh token for one batch of ``hook``'s connection; masks the token."""
    from airflow.providers.common.compat.sdk import mask_secret

    conn_id = hook.dashscope_conn_id
    conn = hook.get_connection(conn_id)
    base = public_base_url(conn_id, conn.extra_dejson)
    token = mint_token(conn.password or "", conn_id)
    mask_secret(token)
    return callback_url(base, conn_id, token)
