"""The streaming split: shard boundaries, the validation rules over the whole input, and the sources."""

from __future__ import annotations

import hashlib
import io
import json

import pytest

from airflow_provider_dashscope_batch.sharding.split import (
    ShardLimits,
    ShardSizing,
    _SeenIds,
    split_csv,
    split_jsonl,
    split_requests,
)
from airflow_provider_dashscope_batch.validation.lines import MAX_LINE_BYTES
from airflow_provider_dashscope_batch.validation.rules import (
    MAX_FILE_BYTES,
    MAX_LINES,
    TEST_MODEL,
    JsonlValidationError,
    validate_jsonl,
)


def _line(
    i: int, *, model: str = "qwen-plus", custom_id: str | None = None, url: str = "/v1/chat/completions"
) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": f"hello {i:04d}"}]}
    return json.dumps({"custom_id": custom_id or f"req-{i:04d}", "method": "POST", "url": url, "body": body})


def _write(path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def _violations(exc: pytest.ExceptionInfo[JsonlValidationError]) -> list[tuple[int | None, str]]:
    return [(v.line, v.code) for v in exc.value.report.violations]


def test_shards_fill_up_to_the_line_limit_and_are_valid_files(tmp_path):
    _write(tmp_path / "in.jsonl", [_line(i) for i in range(250)])
    result = split_jsonl(tmp_path / "in.jsonl", tmp_path / "out", sizing=ShardSizing(max_requests=100))
    assert [(s.index, s.first_line, s.requests) for s in result.shards] == [
        (0, 1, 100),
        (1, 101, 100),
        (2, 201, 50),
    ]
    assert (result.model, result.endpoint, result.requests) == ("qwen-plus", "/v1/chat/completions", 250)
    joined = b""
    for shard in result.shards:
        data = (tmp_path / "out" / f"shard-{shard.index:05d}.jsonl").read_bytes()
        assert shard.uri == str(tmp_path / "out" / f"shard-{shard.index:05d}.jsonl")
        assert (shard.bytes, shard.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        assert validate_jsonl(io.BytesIO(data)).ok
        joined += data
    assert joined == (tmp_path / "in.jsonl").read_bytes()  # nothing lost, nothing reordered


def test_the_byte_limit_closes_a_shard_before_it_is_exceeded(tmp_path):
    lines = [_line(i) for i in range(30)]
    _write(tmp_path / "in.jsonl", lines)
    size = len(lines[0]) + 1
    result = split_jsonl(tmp_path / "in.jsonl", tmp_path / "out", sizing=ShardSizing(max_bytes=10 * size + 5))
    assert all(s.bytes <= 10 * size + 5 for s in result.shards)
    assert sum(s.requests for s in result.shards) == 30
    assert len(result.shards) == 3


def test_the_same_input_gives_the_same_shards(tmp_path):
    _write(tmp_path / "in.jsonl", [_line(i) for i in range(120)])
    first = split_jsonl(tmp_path / "in.jsonl", tmp_path / "a", sizing=ShardSizing(max_requests=50))
    second = split_jsonl(tmp_path / "in.jsonl", tmp_path / "b", sizing=ShardSizing(max_requests=50))
    assert [(s.first_line, s.sha256) for s in first.shards] == [
        (s.first_line, s.sha256) for s in second.shards
    ]


def test_default_limits_keep_a_margin_below_the_service_limits():
    limits = ShardLimits.for_model("qwen-plus")
    assert (limits.max_requests, limits.max_bytes) == (int(MAX_LINES * 0.8), int(MAX_FILE_BYTES * 0.8))
    assert ShardLimits.for_model(TEST_MODEL).max_requests == 80
    with pytest.raises(ValueError, match=r"max_requests must be in 1\.\.50,000"):
        ShardLimits.for_model("qwen-plus", max_requests=50_001)
    with pytest.raises(ValueError, match=r"max_requests must be in 1\.\.100 for batch-test-model"):
        ShardLimits.for_model(TEST_MODEL, max_requests=101)
    with pytest.raises(ValueError, match="margin"):
        ShardLimits.for_model(None, margin=1.5)


def test_the_test_model_gets_its_own_smaller_shards(tmp_path):
    _write(tmp_path / "in.jsonl", [_line(i, model=TEST_MODEL, url="/v1/chat/ds-test") for i in range(200)])
    result = split_jsonl(tmp_path / "in.jsonl", tmp_path / "out")
    assert [s.requests for s in result.shards] == [80, 80, 40]


def test_a_bad_line_is_named_by_its_line_in_the_original_input(tmp_path):
    lines = [_line(i) for i in range(250)]
    lines[233] = '{"custom_id": "x", "method": "POST"'
    _write(tmp_path / "in.jsonl", lines)
    with pytest.raises(JsonlValidationError) as exc:
        split_jsonl(tmp_path / "in.jsonl", tmp_path / "out", sizing=ShardSizing(max_requests=100))
    assert _violations(exc) == [(234, "invalid_json_line")]
    assert "in.jsonl line 234: invalid_json_line" in str(exc.value)


def test_custom_ids_are_unique_across_shards(tmp_path):
    lines = [_line(i) for i in range(250)]
    lines[220] = _line(220, custom_id="req-0007")
    _write(tmp_path / "in.jsonl", lines)
    with pytest.raises(JsonlValidationError) as exc:
        split_jsonl(tmp_path / "in.jsonl", tmp_path / "out", sizing=ShardSizing(max_requests=100))
    assert _violations(exc) == [(221, "duplicate_custom_id")]
    assert 'custom_id "req-0007" already used on line 8' in str(exc.value)


def test_one_model_across_all_shards(tmp_path):
    lines = [_line(i) for i in range(250)]
    lines[150] = _line(150, model="qwen-max")
    _write(tmp_path / "in.jsonl", lines)
    with pytest.raises(JsonlValidationError) as exc:
        split_jsonl(tmp_path / "in.jsonl", tmp_path / "out", sizing=ShardSizing(max_requests=100))
    assert _violations(exc) == [(151, "mismatched_model")]


def test_the_endpoint_is_enforced(tmp_path):
    _write(tmp_path / "in.jsonl", [_line(i) for i in range(3)])
    with pytest.raises(JsonlValidationError) as exc:
        split_jsonl(tmp_path / "in.jsonl", tmp_path / "out", endpoint="/v1/embeddings")
    assert [code for _, code in _violations(exc)] == ["url_mismatch"] * 3


def test_empty_input_blank_lines_and_bom(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(JsonlValidationError) as exc:
        split_jsonl(tmp_path / "empty.jsonl", tmp_path / "out")
    assert _violations(exc) == [(None, "empty_file")]
    (tmp_path / "bad.jsonl").write_bytes(b"\xef\xbb\xbf" + f"{_line(1)}\n\n{_line(2)}\n".encode())
    with pytest.raises(JsonlValidationError) as exc:
        split_jsonl(tmp_path / "bad.jsonl", tmp_path / "out")
    assert _violations(exc) == [(1, "invalid_encoding"), (2, "blank_line")]


def test_an_oversized_line_is_reported_not_kept(tmp_path):
    huge = json.dumps(
        {
            "custom_id": "big",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "qwen-plus", "input": "x" * (MAX_LINE_BYTES + 10)},
        }
    )
    _write(tmp_path / "in.jsonl", [_line(1), huge, _line(3)])
    with pytest.raises(JsonlValidationError) as exc:
        split_jsonl(tmp_path / "in.jsonl", tmp_path / "out")
    assert _violations(exc) == [(2, "line_too_large")]


def _line_of(length: int, custom_id: str = "sized") -> bytes:
    """A valid request line of exactly ``length`` bytes, terminator excluded."""
    head = f'{{"custom_id": "{custom_id}", "method": "POST", "url": "/v1/chat/completions", '
    head += '"body": {"model": "qwen-plus", "messages": [{"role": "user", "content": "'
    return (head + "x" * (length - len(head) - 5) + '"}]}}').encode()


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"])
@pytest.mark.parametrize(("length", "fits"), [(MAX_LINE_BYTES, True), (MAX_LINE_BYTES + 1, False)])
def test_the_line_limit_is_the_validators_on_the_same_bytes(tmp_path, length, fits, terminator):
    data = _line(1).encode() + b"\n" + _line_of(length) + terminator
    assert len(_line_of(length)) == length
    (tmp_path / "in.jsonl").write_bytes(data)
    expected = [] if fits else [(2, "line_too_large")]
    assert [(v.line, v.code) for v in validate_jsonl(tmp_path / "in.jsonl").violations] == expected
    if fits:
        assert split_jsonl(tmp_path / "in.jsonl", tmp_path / "out").requests == 2
        return
    with pytest.raises(JsonlValidationError) as exc:
        split_jsonl(tmp_path / "in.jsonl", tmp_path / "out")
    assert _violations(exc) == expected
    assert "in.jsonl line 2: line_too_large: line is 6,291,457 bytes; the limit is 6 MB" in str(exc.value)


def test_built_requests_meet_the_same_line_limit(tmp_path):
    big = json.loads(_line_of(MAX_LINE_BYTES + 40))  # built lines are written compact: ~30 bytes less
    with pytest.raises(JsonlValidationError) as exc:
        split_requests([json.loads(_line(1)), big], tmp_path / "out")
    assert _violations(exc) == [(2, "line_too_large")]


def test_a_line_larger_than_a_shard_is_a_violation(tmp_path):
    _write(tmp_path / "in.jsonl", [_line(1), _line(2, custom_id="x" * 200)])
    with pytest.raises(JsonlValidationError) as exc:
        split_jsonl(tmp_path / "in.jsonl", tmp_path / "out", sizing=ShardSizing(max_bytes=len(_line(1)) + 1))
    assert _violations(exc) == [(2, "line_too_large")]
    assert "a shard holds at most" in str(exc.value)


def test_on_shard_sees_each_complete_shard_and_none_after_a_violation(tmp_path):
    lines = [_line(i) for i in range(250)]
    lines[150] = "not json"
    _write(tmp_path / "in.jsonl", lines)
    seen = []

    def record(shard):
        assert (tmp_path / "out" / f"shard-{shard.index:05d}.jsonl").stat().st_size == shard.bytes  # closed
        seen.append(shard.index)
        return shard

    with pytest.raises(JsonlValidationError):
        split_jsonl(
            tmp_path / "in.jsonl", tmp_path / "out", sizing=ShardSizing(max_requests=100), on_shard=record
        )
    assert seen == [0]


def test_request_dicts_are_built_into_shards(tmp_path):
    bodies = ({"messages": [{"role": "user", "content": str(i)}]} for i in range(250))
    result = split_requests(bodies, tmp_path / "out", model="qwen-plus", sizing=ShardSizing(max_requests=100))
    assert [(s.first_line, s.requests) for s in result.shards] == [(1, 100), (101, 100), (201, 50)]
    first = json.loads((tmp_path / "out" / "shard-00001.jsonl").read_text().splitlines()[0])
    assert first["custom_id"] == "101"
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    duplicated = [{"custom_id": "a", "body": body}, {"custom_id": "a", "body": body}]
    with pytest.raises(JsonlValidationError) as exc:
        split_requests(duplicated, tmp_path / "dup")
    assert _violations(exc) == [(2, "duplicate_custom_id")]


def test_csv_rows_are_built_into_shards(tmp_path):
    (tmp_path / "in.csv").write_text("id,text\n" + "".join(f"c{i},hello {i}\n" for i in range(230)))
    result = split_csv(
        tmp_path / "in.csv",
        tmp_path / "out",
        model="qwen-plus",
        sizing=ShardSizing(max_requests=100),
        id_column="id",
        text_column="text",
    )
    assert [s.requests for s in result.shards] == [100, 100, 30]
    (tmp_path / "bad.csv").write_text("id,text\nc1,hello\nc2,\n")
    with pytest.raises(ValueError, match=r"bad\.csv line 3: the request text is empty"):
        split_csv(tmp_path / "bad.csv", tmp_path / "out2", model="qwen-plus")


def test_shards_land_in_object_storage(tmp_path, s3_bucket):
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    _write(tmp_path / "in.jsonl", [_line(i) for i in range(120)])
    destination = ObjectStoragePath("s3://s3_results@results-bucket/shards/run-1")
    result = split_jsonl(tmp_path / "in.jsonl", destination, sizing=ShardSizing(max_requests=50))
    keys = sorted(o["Key"] for o in s3_bucket.list_objects_v2(Bucket="results-bucket")["Contents"])
    assert keys == [f"shards/run-1/shard-0000{i}.jsonl" for i in range(3)]
    body = s3_bucket.get_object(Bucket="results-bucket", Key="shards/run-1/shard-00002.jsonl")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result.shards[2].sha256
    # and a shard in object storage is a source too
    again = split_jsonl(
        destination / "shard-00000.jsonl", tmp_path / "again", sizing=ShardSizing(max_requests=10)
    )
    assert again.requests == 50


def test_the_id_registry_keeps_first_lines_across_growth():
    seen = _SeenIds()
    for n in range(1, 5001):
        assert seen.setdefault(f"id-{n}", n) == n
    assert "id-4999" in seen
    assert "id-5001" not in seen
    assert seen.setdefault("id-17", 9999) == 17


def test_csv_embeddings_packed_into_shards(tmp_path):
    source = tmp_path / "texts.csv"
    source.write_text("id,text\n" + "".join(f"t{i},text {i}\n" for i in range(45)), encoding="utf-8")
    result = split_csv(
        source,
        tmp_path / "out",
        model="text-embedding-v4",
        endpoint="/v1/embeddings",
        inputs_per_request=10,
        sizing=ShardSizing(max_requests=2),
    )
    assert [s.requests for s in result.shards] == [2, 2, 1]  # 5 requests of up to 10 texts
    last = json.loads((tmp_path / "out" / "shard-00002.jsonl").read_text())
    assert json.loads(last["custom_id"]) == [f"t{i}" for i in range(40, 45)]
