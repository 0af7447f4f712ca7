"""The official openai SDK runs the docs' quick-start flow against the emulator (only URL and key differ)."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
from dashscope_batch_emulator import EmulatorServer
from openai import OpenAI

QUICKSTART = (
    '{"custom_id":"1","method":"POST","url":"/v1/chat/ds-test","body":{"model":"batch-test-model","messages":'
    '[{"role":"system","content":"You are a helpful assistant."},'
    '{"role":"user","content":"你好!有什麼可以協助你的嗎?"}]}}\n'
    '{"custom_id":"2","method":"POST","url":"/v1/chat/ds-test","body":{"model":"batch-test-model","messages":'
    '[{"role":"system","content":"You are a helpful assistant."},'
    '{"role":"user","content":"What is 2+2?"}]}}\n'
)


@pytest.fixture
def client(dashscope_emulator: EmulatorServer):
    with OpenAI(api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url) as client:
        yield client


def test_quick_start_flow(client: OpenAI, dashscope_emulator: EmulatorServer, tmp_path: Path):
    input_path = tmp_path / "test_model.jsonl"
    input_path.write_text(QUICKSTART, encoding="utf-8")
    file_object = client.files.create(file=input_path, purpose="batch")
    assert file_object.id.startswith("file-batch-")
    batch = client.batches.create(
        input_file_id=file_object.id, endpoint="/v1/chat/ds-test", completion_window="24h"
    )
    assert batch.status == "validating"
    status = batch.status
    while status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.05)
        status = client.batches.retrieve(batch_id=batch.id).status
    assert status == "completed"
    batch = client.batches.retrieve(batch_id=batch.id)
    assert batch.error_file_id is None
    assert batch.request_counts.completed == 2
    output_path = tmp_path / "result.jsonl"
    client.files.content(batch.output_file_id).write_to_file(output_path)
    lines = output_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert all('"content":"This is a test result."' in line for line in lines)


def test_list_with_filters_cancel_and_errors(
    client: OpenAI, dashscope_emulator: EmulatorServer, tmp_path: Path
):
    dashscope_emulator.set_clock(time_scale=0)
    input_path = tmp_path / "in.jsonl"
    input_path.write_text(QUICKSTART, encoding="utf-8")
    file_id = client.files.create(file=input_path, purpose="batch").id
    named = client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/ds-test",
        completion_window="24h",
        metadata={"ds_name": "任務名稱", "ds_description": "任務描述"},
    )
    other = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/ds-test", completion_window="14d")
    page = client.batches.list(
        limit=2,
        extra_query={"ds_name": "任務", "input_file_ids": file_id, "status": "validating,in_progress"},
    )
    assert [b.id for b in page.data] == [named.id]
    assert [b.id for b in client.batches.list(limit=1)] == [other.id, named.id]

    cancelled = client.batches.cancel(other.id)
    assert cancelled.status == "cancelling"
    dashscope_emulator.advance(60)
    assert client.batches.retrieve(other.id).status == "cancelled"
    assert [f.id for f in client.files.list(extra_query={"purpose": "batch"})] == [file_id]

    with pytest.raises(openai.BadRequestError) as bad:
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/ds-test", completion_window="2h")
    assert bad.value.code == "InvalidParameter"
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")
    with pytest.raises(openai.AuthenticationError):
        OpenAI(api_key="sk-wrong", base_url=dashscope_emulator.base_url, max_retries=0).files.list()
    assert client.files.delete(file_id).deleted is True


def test_sdk_retries_through_429_and_503(client: OpenAI, dashscope_emulator: EmulatorServer):
    dashscope_emulator.add_fault(path="/batches", status=429, retry_after=0, count=1)
    dashscope_emulator.add_fault(path="/batches", status=503, retry_after=0, count=1)
    assert client.batches.list().data == []
    assert dashscope_emulator.request_counts()["GET /batches"] == 3
