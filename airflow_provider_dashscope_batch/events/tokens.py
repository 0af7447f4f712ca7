"""
Who may tell Airflow that a batch finished: callback tokens and ownership marks, under a finish-events secret.

Each connection that uses finish events has its own secret (:data:`SECRET_EXTRA`, independent of the
API key, so rotating the key loses nothing), and may keep the one before it (:data:`PREVIOUS_SECRET_EXTRA`)
while batches minted under it are still running: every check accepts either, minting uses the current one.

* A callback token is ``<nonce>.<mac>``: a random nonce per batch and an HMAC-SHA256 of the connection id and
  the nonce. The receiver checks it without stored state; the API key never appears in a URL. The
  EventBridge token uses the fixed nonce :data:`EVENTBRIDGE_NONCE` (one target per connection).
* A batch's *mark* is ``metadata[MARK_KEY]``: the MAC of the connection id and the batch's idempotency key.
  Only a holder of the secret can make it, and it cannot be copied onto another batch (another key), so it
  identifies the batches this deployment created through this connection wherever their finish is seen
  (a list page, an EventBridge event, a mailbox post).

Nothing here imports Airflow.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from urllib.parse import quote

__all__ = [
    "EVENTBRIDGE_NONCE",
    "MARK_KEY",
    "PREVIOUS_SECRET_EXTRA",
    "ROUTE_PREFIX",
    "SECRET_EXTRA",
    "TOKEN_PATTERN",
    "callback_url",
    "eventbridge_url",
    "is_marked",
    "mark",
    "mint_token",
    "token_is_valid",
]

#: Where the plugin mounts its app on the api-server; the receiver's route is ``/events/{conn}/{token}``.
ROUTE_PREFIX = "/dashscope-batch"
#: The nonce of a connection's EventBridge token.
EVENTBRIDGE_NONCE = "eventbridge"
#: Connection extra holding the current finish-events secret.
SECRET_EXTRA = "finish_events_secret"
#: Connection extra holding the previous secret, still accepted during a rotation.
PREVIOUS_SECRET_EXTRA = "finish_events_previous_secret"
#: Batch metadata field holding the batch's ownership mark.
MARK_KEY = "airflow_finish_events"
#: A token's shape (matched whole).
TOKEN_PATTERN = re.compile(r"([A-Za-z0-9_-]{8,64})\.([0-9a-f]{32})")
_LABEL = b"airflow-provider-dashscope-batch/finish-events/v2"


def _mac(secret: str, *parts: str) -> str:
    key = hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest()
    return hmac.new(key, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()[:32]


def mint_token(secret: str, conn_id: str, nonce: str | None = None) -> str:
    """
    A new callback token of connection ``conn_id`` (random nonce unless given).

    :param secret: The connection's current finish-events secret.
    :param conn_id: The connection id (bound into the MAC).
    :param nonce: The nonce; random (144 bits) by default.
    """
    nonce = nonce or secrets.token_urlsafe(18)
    return f"{nonce}.{_mac(secret, 'token', conn_id, nonce)}"


def token_is_valid(secrets_: Sequence[str], conn_id: str, token: str) -> bool:
    """Whether ``token`` was minted for ``conn_id`` under one of ``secrets_`` (constant time)."""
    match = TOKEN_PATTERN.fullmatch(token)
    if match is None:
        return False
    nonce, given = match.groups()
    results = [hmac.compare_digest(given, _mac(s, "token", conn_id, nonce)) for s in secrets_]
    return any(results)


def mark(secret: str, conn_id: str, idempotency_key: str) -> str:
    """The ownership mark of the batch created with ``idempotency_key`` through ``conn_id``."""
    return _mac(secret, "mark", conn_id, idempotency_key)


def is_marked(secrets_: Sequence[str], conn_id: str, metadata: Mapping[str, object] | None) -> bool:
    """Whether batch ``metadata`` carries a mark of ``conn_id`` made under one of ``secrets_``."""
    metadata = metadata or {}
    given, key = metadata.get(MARK_KEY), metadata.get("idempotency_key")
    if not isinstance(given, str) or not isinstance(key, str):
        return False
    return any([hmac.compare_digest(given, mark(s, conn_id, key)) for s in secrets_])


def callback_url(base_url: str, conn_id: str, token: str) -> str:
    """The receiver's URL for one token: ``<base>/dashscope-batch/events/<conn_id>/<token>``."""
    return f"{base_url.rstrip('/')}{ROUTE_PREFIX}/events/{quote(conn_id, safe='')}/{token}"


def eventbridge_url(base_url: str, conn_id: str, secret: str) -> str:
    """The HTTP(S) target URL to give EventBridge for connection ``conn_id``'s finish events."""
    return callback_url(base_url, conn_id, mint_token(secret, conn_id, EVENTBRIDGE_NONCE))
