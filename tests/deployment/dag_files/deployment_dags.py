"""DAGs the deployment scenarios run on a real scheduler, triggerer and LocalExecutor (not examples).

Each run gets its input file id (uploaded by the test, one file per scenario) and the results destination
in ``conf``, so scenarios never share a batch and their batches are told apart by input file.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param

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
