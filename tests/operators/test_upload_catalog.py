"""The upload operator against the emulator, judged by the model catalog, with findings named in the
user's own input: what passes, what fails before upload, and what only warns."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator
from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator


class _TI:
    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


def _jsonl(path: Path, model: str, content: object, **body: object) -> Path:
    line = {
        "custom_id": "1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": content}], **body},
    }
    path.write_text(json.dumps(line) + "\n")
    return path


def _uploads(emulator) -> int:
    return emulator.request_counts().get("POST /files", 0)


@pytest.fixture
def fresh(dashscope_emulator):
    dashscope_emulator.clear_request_counts()
    return dashscope_emulator


IMAGE = [
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    {"type": "text", "text": "What is it?"},
]


def test_an_image_line_for_a_vision_model_of_the_newest_guide_is_uploaded(dashscope_conn, fresh, tmp_path):
    source = _jsonl(tmp_path / "in.jsonl", "qwen3.6-plus", IMAGE, enable_thinking=False)
    file_id = DashScopeUploadFileOperator(task_id="u", file=str(source)).execute({"ti": _TI()})
    assert file_id.startswith("file-")
    assert _uploads(fresh) == 1


def test_a_model_that_thinks_by_default_without_enable_thinking_fails_before_upload(
    dashscope_conn, fresh, tmp_path
):
    source = _jsonl(tmp_path / "in.jsonl", "qwen3.7-max", "hi")
    with pytest.raises(AirflowFailException, match=r"model 'qwen3\.7-max' thinks by default"):
        DashScopeUploadFileOperator(task_id="u", file=str(source)).execute({"ti": _TI()})
    assert _uploads(fresh) == 0


def test_a_model_the_catalog_says_is_not_batchable_in_beijing_fails_before_upload(
    dashscope_conn, fresh, tmp_path
):
    source = _jsonl(tmp_path / "in.jsonl", "qwen-turbo", "hi")
    with pytest.raises(
        AirflowFailException, match="model 'qwen-turbo' does not run in batch in region cn-beijing"
    ):
        DashScopeUploadFileOperator(task_id="u", file=str(source), estimate_cost=False).execute({"ti": _TI()})
    assert _uploads(fresh) == 0


def test_an_unknown_model_passes_with_a_warning_and_fails_only_under_max_cost(
    dashscope_conn, fresh, tmp_path
):
    source = _jsonl(tmp_path / "in.jsonl", "qwen9-plus", IMAGE)
    ti = _TI()
    DashScopeUploadFileOperator(task_id="u", file=str(source)).execute({"ti": ti})
    assert _uploads(fresh) == 1
    estimate = ti.xcom["cost_estimate"]
    assert estimate["cost_ceiling"] is None
    assert any("'qwen9-plus' is unpriced" in w for w in estimate["warnings"])
    with pytest.raises(AirflowFailException) as failure:
        DashScopeUploadFileOperator(task_id="u", file=str(source), max_cost=1).execute({"ti": _TI()})
    message = str(failure.value)
    assert "model 'qwen9-plus' is unpriced in region 'cn-beijing'" in message
    assert 'connection extra \'models\', e.g. {"qwen9-plus": {"prices": {"cn-beijing": [' in message
    assert _uploads(fresh) == 1  # the second task uploaded nothing


def test_an_unknown_model_is_priced_through_the_connection_catalog(dashscope_conn, fresh, tmp_path):
    entry = {
        "qwen9-plus": {"max_output_tokens": 10, "prices": {"cn-beijing": [{"input": "1", "output": "2"}]}}
    }
    dashscope_conn(models=json.dumps(entry))
    source = _jsonl(tmp_path / "in.jsonl", "qwen9-plus", "hi")
    ti = _TI()
    DashScopeUploadFileOperator(task_id="u", file=str(source), max_cost=1).execute({"ti": ti})
    assert ti.xcom["cost_estimate"]["cost_ceiling"] is not None


def test_three_bad_csv_rows_are_reported_at_once_by_their_csv_lines_and_not_retried(
    dashscope_conn, fresh, tmp_path
):
    source = tmp_path / "bad.csv"
    source.write_text("id,text\n1,fine\n,no id\n3,\n4,fine too\n5\n")
    task = DashScopeUploadFileOperator(task_id="u", csv=str(source), model="qwen-plus", text_column="text")
    with pytest.raises(AirflowFailException) as failure:  # Airflow does not retry this exception
        task.execute({"ti": _TI()})
    message = str(failure.value)
    assert f"{source}: 3 problem(s) building the requests" in message
    assert f"{source} line 3: id column 0 is missing or empty" in message
    assert f"{source} line 4: the request text is empty" in message
    assert f"{source} line 6: text column 'text' is missing" in message
    assert "dashscope-upload-" not in message
    assert _uploads(fresh) == 0


def test_a_rule_broken_by_a_built_line_names_the_csv_line_and_the_estimate_the_csv(
    dashscope_conn, fresh, tmp_path
):
    source = tmp_path / "pics.csv"
    source.write_text("id,text,image\n\n1,a,\n2,b,https://example.com/b.png\n")  # a blank line: no request
    task = DashScopeUploadFileOperator(
        task_id="u", csv=str(source), model="qwen-plus", text_column="text", image_column="image"
    )
    with pytest.raises(AirflowFailException) as failure:
        task.execute({"ti": _TI()})
    assert f"{source} line 3: image column 'image' is missing or empty" in str(failure.value)
    source.write_text("id,text,image\n\n1,a,https://example.com/a.png\n")
    with pytest.raises(AirflowFailException) as failure:
        task.execute({"ti": _TI()})
    assert f"{source} line 3: unsupported_content_part: body.messages[0].content[0]" in str(failure.value)
    assert _uploads(fresh) == 0
    source.write_text("id,text\n1,a\n2,b\n")
    ti = _TI()
    DashScopeUploadFileOperator(task_id="u", csv=str(source), model="qwen-plus", text_column="text").execute(
        {"ti": ti}
    )
    assert ti.xcom["cost_estimate"]["source"] == str(source)


def test_the_sharded_operator_reports_every_bad_csv_row_and_sends_nothing(dashscope_conn, fresh, tmp_path):
    source = tmp_path / "bad.csv"
    source.write_text("id,text\n1,fine\n,no id\n3,\n")
    task = DashScopeShardedBatchOperator(task_id="s", csv=str(source), model="qwen-plus", text_column="text")
    with pytest.raises(AirflowFailException) as failure:
        task.execute({"ti": _TI()})
    assert f"{source} line 3: id column 0 is missing or empty" in str(failure.value)
    assert f"{source} line 4: the request text is empty" in str(failure.value)
    assert _uploads(fresh) == 0


@pytest.mark.parametrize("callback", ["airflow", "https://example.com/hook"])
def test_a_finish_callback_on_a_region_without_notifications_fails_before_create(
    dashscope_conn, fresh, client, callback
):
    dashscope_conn(region="ap-southeast-1", callback_base_url="https://airflow.example.com")
    line = {
        "custom_id": "1",
        "method": "POST",
        "url": "/v1/chat/ds-test",
        "body": {"model": "batch-test-model", "messages": [{"role": "user", "content": "hi"}]},
    }
    file_id = client.upload_file(io.BytesIO(json.dumps(line).encode() + b"\n"), filename="in.jsonl").id
    create = DashScopeCreateBatchOperator(
        task_id="c", input_file_id=file_id, endpoint="/v1/chat/ds-test", finish_callback=callback
    )
    with pytest.raises(AirflowFailException, match="region ap-southeast-1 sends no completion notifications"):
        create.execute({"ti": _TI()})
    assert "POST /batches" not in fresh.request_counts()
    sharded = DashScopeShardedBatchOperator(
        task_id="s", requests=[{"messages": []}], model="qwen-plus", finish_callback=callback
    )
    with pytest.raises(AirflowFailException, match="the wait then polls on its normal schedule"):
        sharded.execute({"ti": _TI()})
    assert _uploads(fresh) == 1  # the scene's own upload only
