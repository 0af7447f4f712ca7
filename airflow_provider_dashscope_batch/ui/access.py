"""
Who may see and cancel a batch on the batches page, asked of the auth manager in use.

A batch whose creator is known
(:func:`~airflow_provider_dashscope_batch.sharding.creator.creator_of`) belongs to its DAG: a user sees
it if the auth manager lets them read that DAG's task instances, and may cancel it if it lets them edit
them. A batch without a known DAG (created outside Airflow, or with metadata its key
does not confirm) is shown only to users who may edit the connection, and only they may cancel it. The
answers are memoised for one request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_dashscope_batch.sharding.creator import creator_of

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client.types import Batch

__all__ = ["Access", "csrf_token", "csrf_valid"]


@dataclass
class Access:
    """
    One signed-in user's rights on the page, for one request.

    :param user: The user, as the auth manager resolved it from the request's token.
    :param auth_manager: The auth manager in use.
    """

    user: Any
    auth_manager: Any
    _dags: dict[tuple[str, str], bool] = field(default_factory=dict)
    _connections: dict[str, bool] = field(default_factory=dict)

    def dag(self, dag_id: str, method: Literal["GET", "PUT"]) -> bool:
        """Whether the user may read (GET) or edit (PUT) the task instances of ``dag_id``."""
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

        if (dag_id, method) not in self._dags:
            self._dags[(dag_id, method)] = bool(
                self.auth_manager.is_authorized_dag(
                    method=method,
                    access_entity=DagAccessEntity.TASK_INSTANCE,
                    details=DagDetails(id=dag_id),
                    user=self.user,
                )
            )
        return self._dags[(dag_id, method)]

    def connection_editor(self, conn_id: str) -> bool:
        """Whether the user may edit the connection (sees and cancels its batches of no known DAG)."""
        from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails

        if conn_id not in self._connections:
            self._connections[conn_id] = bool(
                self.auth_manager.is_authorized_connection(
                    method="PUT", details=ConnectionDetails(conn_id=conn_id), user=self.user
                )
            )
        return self._connections[conn_id]

    def can_view(self, conn_id: str, batch: Batch) -> bool:
        """Whether the user sees the batch."""
        creator = creator_of(batch)
        return self.connection_editor(conn_id) if creator is None else self.dag(creator.dag_id, "GET")

    def can_cancel(self, conn_id: str, batch: Batch) -> bool:
        """Whether the user may cancel the batch."""
        creator = creator_of(batch)
        return self.connection_editor(conn_id) if creator is None else self.dag(creator.dag_id, "PUT")


def _secret() -> bytes:
    from airflow.configuration import conf

    key = conf.get("api", "secret_key", fallback="") or conf.get("api_auth", "jwt_secret", fallback="")
    return key.encode() if key else _PROCESS_SECRET


_PROCESS_SECRET = os.urandom(32)


def csrf_token(session_token: str, conn_id: str, batch_id: str) -> str:
    """
    The anti-forgery token of one cancel form: bound to the user's session token and to the batch.

    Without ``[api] secret_key`` (nor ``[api_auth] jwt_secret``) the key is this process's own, so a
    form is valid only in the api-server worker that rendered it.
    """
    session = hashlib.sha256(session_token.encode()).hexdigest()
    message = "\x1f".join(("dashscope-batch-cancel", session, conn_id, batch_id)).encode()
    return hmac.new(_secret(), message, hashlib.sha256).hexdigest()


def csrf_valid(token: str, session_token: str, conn_id: str, batch_id: str) -> bool:
    """Whether ``token`` is the anti-forgery token of this session's cancel form for the batch."""
    return hmac.compare_digest(token.encode(), csrf_token(session_token, conn_id, batch_id).encode())
