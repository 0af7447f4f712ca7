"""
An auth manager with per-DAG rights for the batches-page tests: Simple auth manager, but some users may not
touch some DAGs. The api-server of those tests loads it from ``[core] auth_manager`` (this directory is put
on its PYTHONPATH); the page asks it through the auth manager's public methods like any other.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

#: DAGs each user may neither read nor edit.
DENIED_DAGS = {"outsider": {"secret_dag"}}


class PerDagAuthManager(SimpleAuthManager):
    """Simple auth manager whose :meth:`is_authorized_dag` also refuses :data:`DENIED_DAGS`."""

    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        if details is not None and details.id in DENIED_DAGS.get(user.get_name(), set()):
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
