"""
Finish events: each finish of a batch this deployment created becomes one Asset event, the Airflow way.

* :mod:`~.watcher` -- the ``BaseEventTrigger`` an ``AssetWatcher`` runs: list polling (every region, no
  inbound traffic) and the receiver's mailbox; one Asset event per finish, exactly once.
* :mod:`~.tokens` -- the finish-events secret: callback tokens and the batches' ownership marks.
* :mod:`~.callback` -- what an operator puts in a batch's metadata (the mark, the callback URL).
* :mod:`~.receiver` -- the api-server app that verifies DashScope callbacks and EventBridge deliveries and
  posts them to the mailbox.
* :mod:`~.mailbox` -- the per-connection Variable through which the receiver reaches the triggerers.
* :mod:`~.rabbitmq` -- the watcher's queue source: a RabbitMQ queue that EventBridge delivers to.
* :mod:`~.wake` -- the triggerer side of deferred waits: the mailbox wakes them early.
* :mod:`~.plugin` -- the Airflow plugin that mounts the receiver.

See the "Completion events" page of the docs.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_dashscope_batch.events.mailbox import asset_name, asset_uri

__all__ = ["AIRFLOW_RECEIVER", "asset_name", "asset_uri", "finished_batches_asset"]

#: ``finish_callback`` value that points the batch's callback at this Airflow's receiver.
AIRFLOW_RECEIVER = "airflow"


def finished_batches_asset(
    conn_id: str = "dashscope_default",
    *,
    poll_interval: float = 60.0,
    mailbox_interval: float | None = None,
    catch_up_delay: float | None = 30.0,
    queue_conn_id: str | None = None,
) -> Any:
    """
    The Asset whose events are connection ``conn_id``'s finishes, watched by the finish watcher.

    Schedule DAGs on it. ``poll_interval``, ``mailbox_interval``, ``catch_up_delay`` and ``queue_conn_id``
    are those of :class:`~.watcher.DashScopeBatchFinishTrigger` (set ``mailbox_interval`` when the receiver
    is set up, ``queue_conn_id`` when EventBridge delivers to a RabbitMQ queue).
    """
    from airflow.sdk import Asset, AssetWatcher

    from airflow_provider_dashscope_batch.events.watcher import DashScopeBatchFinishTrigger

    trigger = DashScopeBatchFinishTrigger(
        conn_id,
        poll_interval=poll_interval,
        mailbox_interval=mailbox_interval,
        catch_up_delay=catch_up_delay,
        queue_conn_id=queue_conn_id,
    )
    watcher = AssetWatcher(name=f"dashscope_batch_finish_watcher.{conn_id}", trigger=trigger)
    return Asset(name=asset_name(conn_id), uri=asset_uri(conn_id), watchers=[watcher])
