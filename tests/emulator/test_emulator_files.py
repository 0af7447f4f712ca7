"""Files routes over real HTTP: upload, list (filters, pagination), retrieve, delete, content."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from emulator_helpers import Api, assert_error, jsonl, read_jsonl, request_line

PAIR = jsonl([request_line("1"), request_line("2")])


def test_upload_returns_file_object(api: Api):
    body = api.upload(PAIR, "prompts.jsonl")
    assert body["id"].startswith("file-batch-")
    assert body == {
        "id": body["id"],
        "object": "file",
        "bytes": len(PAIR),
        "created_at": body["created_at"],
        "filename": "prompts.jsonl",
        "purpose": "batch",
        "status": "processed",
        "status_details": None,
    }
    assert isinstance(body["created_at"], int)


def test_upload_streams_a_large_body_to_disk(api: Api):
    chunk = jsonl([request_line("x" * 10, extra="y" * 1000)])
    total = 0

    def body():
        nonlocal total
        yield b'--BOUNDARY\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        yield b'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        yield b"Content-Type: application/octet-stream\r\n\r\n"
        for _ in range(20_000):
            total += len(chunk)
            yield chunk
        yield b"\r\n--BOUNDARY--\r\n"

    response = api.http.post(
        "/files", content=body(), headers={"Content-Type": "multipart/form-data; boundary=BOUNDARY"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == total > 20_000_000


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"files": {"file": ("a.jsonl", PAIR)}, "data": {"purpose": "fine-tune"}}, "purpose"),
        ({"files": {"file": ("a.jsonl", PAIR)}}, "purpose"),
        ({"data": {"purpose": "batch"}, "files": {"other": ("a.jsonl", PAIR)}}, "file"),
        ({"json": {"purpose": "batch"}}, "file"),
    ],
    ids=["wrong-purpose", "no-purpose", "no-file-part", "not-multipart"],
)
def test_upload_rejects_bad_forms(api: Api, kwargs, param):
    error = assert_error(api.http.post("/files", **kwargs), 400, "InvalidParameter")
    assert error["param"] == param
    assert api.http.get("/files").json()["data"] == []


def test_upload_over_the_size_cap_is_rejected_and_not_stored(api: Api):
    api.emulator.configure(max_upload_bytes=100)
    response = api.http.post("/files", files={"file": ("a.jsonl", b"x" * 101)}, data={"purpose": "batch"})
    assert_error(response, 400, "FileTooLarge")
    assert api.http.get("/files").json()["data"] == []


def test_retrieve_and_delete(api: Api):
    file_id = api.upload(PAIR)["id"]
    assert api.http.get(f"/files/{file_id}").json()["id"] == file_id
    assert api.http.delete(f"/files/{file_id}").json() == {"object": "file", "deleted": True, "id": file_id}
    assert_error(api.http.get(f"/files/{file_id}"), 404, "NotFound")
    assert_error(api.http.delete(f"/files/{file_id}"), 404, "NotFound")


def test_list_newest_first_with_cursor_pagination(api: Api):
    ids = [api.upload(PAIR, f"{i}.jsonl")["id"] for i in range(5)]
    page = api.http.get("/files", params={"limit": 2}).json()
    assert page["object"] == "list"
    assert [f["id"] for f in page["data"]] == ids[::-1][:2]
    assert page["has_more"] is True
    rest = api.http.get("/files", params={"limit": 10, "after": page["data"][-1]["id"]}).json()
    assert [f["id"] for f in rest["data"]] == ids[::-1][2:]
    assert rest["has_more"] is False


def test_list_filters_by_purpose(api: Api):
    batch = api.run(jsonl([request_line("1")]))
    input_id = batch["input_file_id"]
    outputs = api.http.get("/files", params={"purpose": "batch_output"}).json()["data"]
    assert [f["id"] for f in outputs] == [batch["output_file_id"]]
    inputs = api.http.get("/files", params={"purpose": "batch"}).json()["data"]
    assert [f["id"] for f in inputs] == [input_id]


@pytest.mark.parametrize("fmt", ["%Y%m%d%H%M%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d", "%Y%m%d"])
def test_list_filters_by_creation_time_in_every_format(api: Api, fmt):
    old = api.upload(PAIR)["id"]
    api.emulator.advance(3 * 86400)
    new = api.upload(PAIR)["id"]
    created = datetime.fromtimestamp(api.http.get(f"/files/{new}").json()["created_at"], UTC)
    cut = (created - timedelta(days=1)).strftime(fmt)
    after = api.http.get("/files", params={"create_after": cut}).json()["data"]
    before = api.http.get("/files", params={"create_before": cut}).json()["data"]
    assert [f["id"] for f in after] == [new]
    assert [f["id"] for f in before] == [old]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 2001},
        {"limit": "x"},
        {"after": "file-batch-nope"},
        {"create_after": "12/11/2025"},
    ],
)
def test_list_rejects_bad_parameters(api: Api, params):
    api.upload(PAIR)
    error = assert_error(api.http.get("/files", params=params), 400, "InvalidParameter")
    assert error["param"] == next(iter(params))


def test_content_only_for_result_files(api: Api):
    api.emulator.fail_requests("^bad")
    batch = api.run(jsonl([request_line("good"), request_line("bad")]))
    assert_error(api.http.get(f"/files/{batch['input_file_id']}/content"), 400, "InvalidParameter")
    output = read_jsonl(api.content(batch["output_file_id"]))
    errors = read_jsonl(api.content(batch["error_file_id"]))
    assert [line["custom_id"] for line in output] == ["good"]
    assert [line["custom_id"] for line in errors] == ["bad"]
    assert_error(api.http.get("/files/file-batch_output-missing/content"), 404, "NotFound")
    meta = api.http.get(f"/files/{batch['output_file_id']}").json()
    assert meta["purpose"] == "batch_output"
    assert meta["bytes"] == len(api.content(batch["output_file_id"]))
