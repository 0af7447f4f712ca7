"""
Make the next asset-triggered run of each DAG scheduled on the finish Asset take every recorded finish.

Up to Airflow 3.3 the scheduler gives an asset-triggered run the Asset's events up to the
``created_at`` of the DAG's queue row (``asset_dag_run_queue``), and that row is written only by the
first event after the previous run (PostgreSQL: ``ON CONFLICT DO NOTHING``; other databases merge
without touching ``created_at``). An event recorded after the row was written but before the scheduler
consumed it is in neither that run nor the queue: it waits for the next event, and the last finishes
of a burst wait forever (apache/airflow#56050, #56749). Airflow 3.4 references each event from the queue
(apache/airflow#70972), so there this does nothing.

:func:`queue_event` moves the row's ``created_at`` forward to the event's timestamp, in the transaction
that adds the event, the way apache/airflow#62501 did on PostgreSQL. If the scheduler holds the row (it
locks it while it creates the run), the upsert waits and, the row consumed, inserts a new one, so the
event is in the next run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["queue_event"]

log = logging.getLogger(__name__)


def queue_event(session: Session, asset: Any, event: Any) -> None:
    """Queue a run of every unpaused DAG scheduled on ``asset`` that takes ``event`` (Airflow < 3.4)."""
    from airflow.models.asset import AssetDagRunQueue, DagScheduleAssetReference
    from airflow.models.dag import DagModel
    from sqlalchemy import select

    if "asset_event_id" in AssetDagRunQueue.__table__.c:  # Airflow 3.4+: the queue references events
        return
    dag_ids = session.scalars(
        select(DagScheduleAssetReference.dag_id)
        .join(DagModel, DagModel.dag_id == DagScheduleAssetReference.dag_id)
        .where(DagScheduleAssetReference.asset_id == asset.id, DagModel.is_paused.is_(False))
        .order_by(DagScheduleAssetReference.dag_id)
    ).all()
    if not dag_ids:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        log.warning(
            "On %s the scheduler's queue of DAGs scheduled on %s is left to Airflow: a finish recorded "
            "while a run is being created waits for the next finish",
            dialect,
            asset.uri,
        )
        return
    stmt = insert(AssetDagRunQueue).values(
        [{"asset_id": asset.id, "target_dag_id": dag_id, "created_at": event.timestamp} for dag_id in dag_ids]
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["asset_id", "target_dag_id"],
            set_={"created_at": stmt.excluded.created_at},
            where=AssetDagRunQueue.created_at < stmt.excluded.created_at,
        )
    )
