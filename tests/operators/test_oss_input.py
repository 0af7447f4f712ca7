"""A batch created from a JSONL object in OSS (no upload), end to end against the emulator."""

from __future__ import annotations

import json

import pytest

from airflow_provider_dashscope_batch.client.errors import InvalidRequestError
from airflow_provider_dashscope_batch.client.oss_input import OssInput, parse_oss_input
from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator


class _TI:
    dag_id, task_id, run_id, map_index, try_number = "d", "c", "r", -1, 1

    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


@pytest.fixture
def oss(dashscope_emulator, tmp_path):
    """A local directory standing in for OSS, with one JSONL object ``my-bucket/in/requests.jsonl``."""
    root = tmp_path / "oss"
    key = root / "my-bucket" / "in" / "requests.jsonl"
    key.parent.mkdir(parents=True)
    lines = [
        {
            "custom_id": str(i),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "qwen-plus", "messages": [{"role": "user", "content": f"hi {i}"}]},
        }
        for i in range(3)
    ]
    key.write_text("".join(json.dumps(line) + "\n" for line in lines))
    dashscope_emulator.configure(oss_root=str(root), validating_seconds=0, finalizing_seconds=0)
    return dashscope_emulator


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (
            "oss:cn-beijing:my-bucket/in/requests.jsonl",
            OssInput("cn-beijing", "my-bucket", "in/requests.jsonl", False),
        ),
        (
            "https://my-bucket.oss-cn-beijing.aliyuncs.com/in/requests.jsonl?Expires=1&Signature=x",
            OssInput("cn-beijing", "my-bucket", "in/requests.jsonl", True),
        ),
        ("file-batch-123", None),
        ("https://example.com/in.jsonl", None),
        ("oss:cn-beijing:my-bucket", None),  # no object path
    ],
)
def test_the_two_oss_forms(value, parsed):
    assert parse_oss_input(value) == parsed


@pytest.mark.parametrize(
    "input_file_id",
    [
        "oss:cn-beijing:my-bucket/in/requests.jsonl",
        "https://my-bucket.oss-cn-beijing.aliyuncs.com/in/requests.jsonl?Expires=1700000000&Signature=x",
    ],
)
def test_an_oss_input_runs_end_to_end_without_an_upload(dashscope_conn, oss, input_file_id):
    create = DashScopeCreateBatchOperator(task_id="c", input_file_id=input_file_id, poll_interval=0.2)
    batch = create.execute({"ti": _TI()})
    assert batch["status"] == "completed"
    assert batch["input_file_id"] == input_file_id  # echoed, as the guide says
    assert batch["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert "POST /files" not in oss.request_counts()


def test_an_oss_input_is_refused_outside_beijing(dashscope_conn, oss):
    oss.configure(region="ap-southeast-1")
    create = DashScopeCreateBatchOperator(
        task_id="c", input_file_id="oss:cn-beijing:my-bucket/in/requests.jsonl", poll_interval=0.2
    )
    with pytest.raises(InvalidRequestError, match="OSS inputs are accepted in the cn-beijing region only"):
        create.execute({"ti": _TI()})


def test_a_missing_oss_object_is_refused(dashscope_conn, oss):
    create = DashScopeCreateBatchOperator(task_id="c", input_file_id="oss:cn-beijing:my-bucket/nope.jsonl")
    with pytest.raises(InvalidRequestError, match=r"OSS object my-bucket/nope\.jsonl does not exist"):
        create.execute({"ti": _TI()})
