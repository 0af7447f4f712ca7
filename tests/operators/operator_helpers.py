"""Test helpers of the operator tests: a task-instance stand-in and readers of what a job left behind."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from airflow_provider_dashscope_batch.jobs.ledger import request_id_of
from airflow_provider_dashscope_batch.results.lines import iter_lines


@dataclass
class TaskInstanceStub:
    """The few task-instance attributes the operator reads, without a task_state_store (as on 3.0-3.2)."""

    dag_id: str = "dag"
    task_id: str = "create_batch"
    run_id: str = "manual__1"
    map_index: int = -1
    try_number: int = 1
    xcoms: dict = field(default_factory=dict)
    state: str | None = "running"

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value

    def get_task_states(self, *, dag_id, task_ids, run_ids, map_index) -> dict:
        """The Task SDK's state read (through the supervisor in a real worker)."""
        assert (dag_id, task_ids, run_ids, map_index) == (self.dag_id, [self.task_id], [self.run_id], -1)
        return {self.run_id: {self.task_id: self.state}}


def next_try(ti: TaskInstanceStub) -> dict:
    ti.try_number += 1
    return {"ti": ti}


def ids_in(client, file_id: str | None) -> list[str]:
    if file_id is None:
        return []
    return [request_id_of(line) for line in iter_lines(client.iter_file_content(file_id))]


def check_billed_once(client, batch_ids: list[str]) -> set[str]:
    """Every round's ``completed`` summed equals the distinct answered ids: nothing answered twice."""
    batches = [client.retrieve_batch(batch_id) for batch_id in batch_ids]
    answered = [i for b in batches for i in ids_in(client, b.output_file_id)]
    assert sum(b.request_counts.completed for b in batches) == len(answered) == len(set(answered))
    return set(answered)


def table_ids(directory: Path, fmt: str) -> dict[str, list[str]]:
    """The ``custom_id`` of every row of a published result set, per kind (output / errors)."""
    found: dict[str, list[str]] = {"output": [], "errors": []}
    for kind, ids in found.items():
        for part in sorted((directory / kind).glob(f"part-*.{fmt}")):
            if fmt == "jsonl":
                ids.extend(json.loads(line)["custom_id"] for line in part.read_text().splitlines() if line)
            elif fmt == "csv":
                with part.open(newline="") as handle:
                    ids.extend(row["custom_id"] for row in csv.DictReader(handle))
            else:
                ids.extend(pq.read_table(part).column("custom_id").to_pylist())
    return found
