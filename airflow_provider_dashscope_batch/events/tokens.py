"""
Callback URLs and their tokens: who may tell Airflow that a batch finished.

The receiver's route is reachable without an Airflow login (the service cannot log in), so each URL
carries a token: ``<nonce>.<mac>``, where the nonce is random per batch and the MAC is an HMAC-SHA256
of the connection id and the nonce under a key derived from the connection's API key. Whoever holds
the connection (the worker that mints, the api-server that checks) can verify a token without stored
state, nobody else can forge one, and the API key itself never appears in a URL. The EventBridge
target URL carries the connection's fixed-nonce token (one URL per connection: EventBridge sends every
batch's event to the same target).

Nothing here imports Airflow.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from urllib.parse import quote

__all__ = [
    "EVENTBRIDGE_NONCE",
    "ROUTE_PREFIX",
    "callback_url",
    "eventbridge_url",
    "mint_token",
    "token_is_valid",
]

#: Where the plugin mounts its app on the api-server; the receiver's route is ``/events/{conn}/{token}``.
ROUTE_PREFIX = "/dashscope-batch"
#: The nonce of a connection's EventBridge token.
EVENTBRIDGE_NONCE = "eventbridge"
_LABEL = b"airflow-provider-dashscope-batch/finish-events/v1"
_TOKEN = re.compile(r"^([A-Za-z0-9_-]{8,64})\.([0-9a-f]{32})$")


def _mac(api_key: str, conn_id: str, nonce: str) -> str:
    key = hmac.new(api_key.encode(), _LABEL, hashlib.sha256).digest()
    return hmac.new(key, f"{conn_id}\x1f{nonce}".encode(), hashlib.sha256).hexdigest()[:32]


def mint_token(api_key: str, conn_id: str, nonce: str | None = None) -> str:
    """
    A new callback token of connection ``conn_id`` (random nonce unless given).

    :param api_key: The connection's API key (the MAC's key is derived from it; it is not in the token).
    :param conn_id: The connection id (bound into the MAC).
    :param nonce: The nonce; random (144 bits) by default.
    """
    nonce = nonce or secrets.token_urlsafe(18)
    return f"{nonce}.{_mac(api_key, conn_id, nonce)}"


def token_is_valid(api_key: str, conn_id: str, token: str) -> bool:
    """Whether ``token`` was minted for ``conn_id`` with this key (constant-time comparison)."""
    match = _TOKEN.match(token)
    if match is None:
        return False
    return hmac.compare_digest(match.group(2), _mac(api_key, conn_id, match.group(1)))


def callback_url(base_url: str, conn_id: str, token: str) -> str:
    """The receiver's URL for one token: ``<base>/dashscope-batch/events/<conn_id>/<token>``."""
    return f"{base_url.rstrip('/')}{ROUTE_PREFIX}/events/{quote(conn_id, safe='')}/{token}"


def eventbridge_url(base_url: str, conn_id: str, api_key: str) -> str:
    """The HTTP(S) target URL to give EventBridge for connection ``conn_id``'s finish events."""
    return callback_url(base_url, conn_id, mint_token(api_key, conn_id, EVENTBRIDGE_NONCE))
