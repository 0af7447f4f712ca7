"""DAGs the deployment scenarios run on a real scheduler, triggerer and LocalExecutor (not examples).

Each run gets its input file id (uploaded by the test, one file per scenario) and the results destination
in ``conf``, so scenarios never share a batch and their batches are told apart by input file.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, AirflowSkipException, Param, get_current_context, task

from airflow_provider_dashscope_batch.events import finished_batches_asset
from airflow_provider_dashscope_batch.events.watcher import payloads
from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)

ENDPOINT = "/v1/chat/ds-test"
#: Polls every 1-2 s against the emulator (production waits use the defaults).
FAST = {"poll_interval": 1, "max_poll_interval": 2}
#: How many creates the mapped DAG fans out to.
MAPPED_CREATES = 100
#: How many waits the high-availability DAG hands to the triggerers.
HA_CREATES = 6
#: How many creates the finish-events DAG fans out to.
EVENT_CREATES = 100
#: The finish watcher's list poll on the deployment (production: the default minute).
WATCH_SECONDS = 5
#: Where the finish-events results DAG lands each run's batches (the deployment sets it).
EVENTS_RESULTS = os.environ.get("DEPLOYMENT_EVENTS_RESULTS", "file:///tmp/deployment-events-results")
PARAMS = {
    "input_file_id": Param("", type="string"),
    "destination": Param("", type="string"),
}
DEFAULTS = {"start_date": datetime(2025, 1, 1), "schedule": None, "catchup": False, "params": PARAMS}

with DAG("deployment_deferred", **DEFAULTS):
    create = DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id="{{ params.input_file_id }}",
        endpoint=ENDPOINT,
        deferrable=True,
        **FAST,
    )
    land = DashScopeBatchResultsToObjectStorageOperator(
        task_id="land_results",
        batch_id="{{ ti.xcom_pull(task_ids='create_batch', key='batch_id') }}",
        destination="{{ params.destination }}",
    )
    create >> land

with DAG("deployment_single", **DEFAULTS):
    DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id="{{ params.input_file_id }}",
        endpoint=ENDPOINT,
        deferrable=True,
        **FAST,
    )

with DAG("deployment_in_process", **DEFAULTS):
    DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id="{{ params.input_file_id }}",
        endpoint=ENDPOINT,
        deferrable=False,
        retries=1,
        retry_delay=timedelta(seconds=1),
        **FAST,
    )

with DAG("deployment_mapped", max_active_tasks=MAPPED_CREATES, **DEFAULTS):
    DashScopeCreateBatchOperator.partial(
        task_id="create_batch",
        input_file_id="{{ params.input_file_id }}",
        endpoint=ENDPOINT,
        deferrable=True,
        **FAST,
    ).expand(metadata=[{"ds_name": f"create-{index}"} for index in range(MAPPED_CREATES)])

with DAG("deployment_ha", max_active_tasks=HA_CREATES, **DEFAULTS):
    DashScopeCreateBatchOperator.partial(
        task_id="create_batch",
        input_file_id="{{ params.input_file_id }}",
        endpoint=ENDPOINT,
        deferrable=True,
        **FAST,
    ).expand(metadata=[{"ds_name": f"ha-{index}"} for index in range(HA_CREATES)])

# Finish events: the batches call the api-server's receiver (the deployment sets
# [dashscope_batch] callback_base_url), which wakes the waits; they poll on their schedule all the same.
with DAG("deployment_events", max_active_tasks=EVENT_CREATES, **DEFAULTS):
    DashScopeCreateBatchOperator.partial(
        task_id="create_batch",
        input_file_id="{{ params.input_file_id }}",
        endpoint=ENDPOINT,
        deferrable=True,
        finish_callback="airflow",
    ).expand(metadata=[{"ds_name": f"event-{index}"} for index in range(EVENT_CREATES)])

with DAG("deployment_events_safety_net", **DEFAULTS):
    DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id="{{ params.input_file_id }}",
        endpoint=ENDPOINT,
        deferrable=True,
        finish_callback="airflow",
        **FAST,
    )

with DAG(
    "deployment_events_results",
    schedule=[finished_batches_asset("dashscope_default", poll_interval=WATCH_SECONDS, mailbox_interval=1)],
    start_date=datetime(2025, 1, 1),
    catchup=False,
):

    @task
    def finished_batches() -> list[str]:
        """The batches whose finish events started this run (none in a catch-up run: skip)."""
        events = get_current_context()["triggering_asset_events"]
        found = [
            finish["batch_id"] for events_of_asset in events.values() for finish in payloads(events_of_asset)
        ]
        if not found:
            raise AirflowSkipException("no finish left for this run (the watcher's catch-up event)")
        return found

    # every batch of the run in one transfer (one task process, one manifest listing each batch)
    DashScopeBatchResultsToObjectStorageOperator(
        task_id="land_results", batch_ids=finished_batches(), destination=EVENTS_RESULTS
    )

# The same results DAG for a connection whose finishes EventBridge delivers to a RabbitMQ queue; its list
# poll runs once (the watcher's baseline), so each finish comes from the queue.
with DAG(
    "deployment_queued_results",
    schedule=[
        finished_batches_asset("dashscope_queued", poll_interval=3600, queue_conn_id="dashscope_finish_queue")
    ],
    start_date=datetime(2025, 1, 1),
    catchup=False,
):
    DashScopeBatchResultsToObjectStorageOperator(
        task_id="land_results",
        dashscope_conn_id="dashscope_queued",
        batch_ids=finished_batches(),
        destination=EVENTS_RESULTS,
    )
