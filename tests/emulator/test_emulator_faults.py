"""Fault injection, request counting and the admin API, over real HTTP."""

from __future__ import annotations

import time

import httpx
import pytest
from dashscope_batch_emulator import EmulatorServer
from emulator_helpers import Api, assert_error, jsonl, request_line


@pytest.mark.parametrize(
    ("status", "code", "err_type"),
    [
        (429, "limit_requests", "limit_requests"),
        (500, "InternalError", "internal_error"),
        (503, "ServiceUnavailable", "internal_error"),
        (401, "invalid_api_key", "invalid_request_error"),
        (403, "AccessDenied", "invalid_request_error"),
    ],
)
def test_status_faults_fire_count_times_then_clear(api: Api, status, code, err_type):
    api.emulator.add_fault(method="GET", path="/files", status=status, count=2, retry_after=7)
    for _ in range(2):
        response = api.http.get("/files")
        error = assert_error(response, status, code)
        assert error["type"] == err_type
        assert response.headers.get("retry-after") == ("7" if status in (429, 503) else None)
    assert api.http.get("/files").status_code == 200
    assert api.emulator.faults() == []


def test_fault_matches_method_and_path_pattern(api: Api):
    rule = api.emulator.add_fault(method="GET", path="/batches/*", status=500)
    assert api.http.get("/batches").status_code == 200
    assert api.http.get("/batches/batch_x").status_code == 500
    assert api.http.post("/batches/batch_x/cancel").status_code == 404
    (listed,) = api.emulator.faults()
    assert listed["id"] == rule["id"]
    assert listed["fired"] == 1
    api.emulator.remove_fault(rule["id"])
    assert api.http.get("/batches/batch_x").status_code == 404


def test_probability_zero_never_fires_and_one_always_fires(api: Api):
    api.emulator.add_fault(path="/files", status=500, probability=0)
    assert all(api.http.get("/files").status_code == 200 for _ in range(20))
    api.emulator.clear_faults()
    api.emulator.add_fault(path="/files", status=500, probability=1)
    assert all(api.http.get("/files").status_code == 500 for _ in range(5))


def test_dropped_connection(api: Api):
    api.emulator.add_fault("drop", method="POST", path="/batches", count=1)
    file_id = api.upload(jsonl([request_line("1")]))["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.http.post("/batches", json=body)
    assert api.http.get("/batches").json()["data"] == []
    assert api.http.post("/batches", json=body).status_code == 200
    assert api.emulator.request_counts()["POST /batches"] == 2


def test_latency_delays_the_response(api: Api):
    api.emulator.add_fault("latency", path="/files", latency=3, count=1)
    with pytest.raises(httpx.ReadTimeout):
        api.http.get("/files", timeout=0.5)
    assert api.http.get("/files", timeout=0.5).status_code == 200


def _drain(response: httpx.Response, sink: bytearray) -> None:
    for chunk in response.iter_raw():
        sink.extend(chunk)


@pytest.mark.parametrize("truncate_at", [None, 10])
def test_truncated_download(api: Api, truncate_at):
    batch = api.run(jsonl([request_line(str(i)) for i in range(20)]))
    full = api.content(batch["output_file_id"])
    api.emulator.add_fault("truncate", path="/files/*/content", truncate_at=truncate_at, count=1)
    received = bytearray()
    with api.http.stream("GET", f"/files/{batch['output_file_id']}/content") as response:
        assert response.headers["content-length"] == str(len(full))
        with pytest.raises(httpx.RemoteProtocolError):
            _drain(response, received)
    assert received == full[: truncate_at if truncate_at is not None else len(full) // 2]
    assert api.content(batch["output_file_id"]) == full


def test_request_counts_per_route(api: Api):
    batch = api.run(jsonl([request_line("1")]))
    api.batch(batch["id"])
    api.http.get("/batches")
    counts = api.emulator.request_counts()
    assert counts == {
        "POST /files": 1,
        "POST /batches": 1,
        "GET /batches/{batch_id}": 2,
        "GET /batches": 1,
    }
    other = api.run(jsonl([request_line("2")]))
    assert api.emulator.request_counts(per_path=True)[f"GET /batches/{batch['id']}"] == 2
    assert api.emulator.request_counts(per_path=True)[f"GET /batches/{other['id']}"] == 1
    api.emulator.clear_request_counts()
    assert api.emulator.request_counts() == api.emulator.request_counts(per_path=True) == {}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/faults", {"kind": "explode"}),
        ("/faults", {"status": 200}),
        ("/faults", {"probability": 2}),
        ("/clock/advance", {"seconds": -1}),
    ],
)
def test_admin_rejects_bad_input(emu: EmulatorServer, path, body):
    assert httpx.post(emu.admin_url + path, json=body).status_code == 400


def test_admin_config_validation(emu: EmulatorServer):
    for change in ({"time_scale": -1}, {"fail_custom_id_pattern": "("}, {"unknown": 1}):
        assert httpx.patch(emu.admin_url + "/config", json=change).status_code == 400
    assert emu.configure(processing_rate=7)["processing_rate"] == 7
    assert httpx.delete(emu.admin_url + "/faults/fault-missing").status_code == 404


def test_clock_scale_and_advance(emu: EmulatorServer):
    start = emu.now()
    assert emu.now() == start
    assert emu.advance(3600) == pytest.approx(start + 3600)
    emu.set_clock(time_scale=1000)
    later = emu.now()
    while emu.now() == later:
        pass
    assert emu.now() > later
    assert httpx.get(emu.admin_url + "/health").json()["status"] == "ok"


# ------------------------------------------------ faults after the request was handled (ambiguous outcomes)
def _create_body(api: Api) -> dict:
    file_id = api.upload(jsonl([request_line("1")]))["id"]
    return {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}


def _batches(api: Api) -> list[dict]:
    return api.http.get("/batches").json()["data"]


def test_status_after_processing_answers_an_error_for_work_done(api: Api):
    body = _create_body(api)
    api.emulator.add_fault(
        "status", method="POST", path="/batches", status=502, after_processing=True, count=1
    )
    assert_error(api.http.post("/batches", json=body), 502, "BadGateway")
    assert len(_batches(api)) == 1


def test_drop_after_processing_stores_the_upload_but_never_answers(api: Api):
    api.emulator.add_fault("drop", method="POST", path="/files", after_processing=True, count=1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.http.post(
            "/files", files={"file": ("x.jsonl", jsonl([request_line("1")]))}, data={"purpose": "batch"}
        )
    (stored,) = api.http.get("/files").json()["data"]
    assert stored["filename"] == "x.jsonl"


def test_latency_after_processing_holds_the_answer_of_work_done(api: Api):
    body = _create_body(api)
    api.emulator.add_fault(
        "latency", method="POST", path="/batches", latency=3, after_processing=True, count=1
    )
    with pytest.raises(httpx.ReadTimeout):
        api.http.post("/batches", json=body, timeout=0.5)
    assert len(_batches(api)) == 1  # handled before the answer was held back


def test_truncate_after_processing_cuts_the_answer_of_work_done(api: Api):
    body = _create_body(api)
    api.emulator.add_fault("truncate", method="POST", path="/batches", truncate_at=5, after_processing=True)
    with pytest.raises(httpx.RemoteProtocolError):
        api.http.post("/batches", json=body)
    assert len(_batches(api)) == 1


def test_defer_handles_the_request_after_the_client_gave_up(api: Api):
    body = _create_body(api)
    api.emulator.add_fault("defer", method="POST", path="/batches", latency=1.5, count=1)
    with pytest.raises(httpx.ReadTimeout):
        api.http.post("/batches", json=body, timeout=0.5)
    assert _batches(api) == []  # the client has given up; the request is still held
    deadline = time.monotonic() + 30
    while not (created := _batches(api)):
        assert time.monotonic() < deadline, "the deferred request was never handled"
        time.sleep(0.1)
    assert created[0]["input_file_id"] == body["input_file_id"]


def test_defer_answers_a_client_that_waits(api: Api):
    body = _create_body(api)
    api.emulator.add_fault("defer", method="POST", path="/batches", latency=0.2, count=1)
    response = api.http.post("/batches", json=body)
    assert response.status_code == 200
    assert [b["id"] for b in _batches(api)] == [response.json()["id"]]


def test_echo_headers_quotes_the_authorization_in_every_error_field(api: Api):
    api.emulator.add_fault("status", method="GET", path="/files", status=500, echo_headers=True, count=1)
    response = api.http.get("/files")
    error = assert_error(response, 500, f"InternalError.Bearer {api.emulator.api_key}")
    secret = api.emulator.api_key
    assert all(secret in error[field] for field in ("message", "type", "param", "code"))
    assert secret in response.json()["request_id"]
    assert secret in response.headers["x-request-id"]
    assert response.headers["x-echo-authorization"] == f"Bearer {secret}"


def test_new_fault_fields_through_the_admin_api(emu: EmulatorServer):
    admin = httpx.Client(base_url=emu.admin_url)
    rule = admin.post(
        "/faults", json={"kind": "defer", "latency": 2, "method": "POST", "path": "/files"}
    ).json()
    assert (rule["kind"], rule["after_processing"], rule["echo_headers"]) == ("defer", False, False)
    rule = admin.post("/faults", json={"kind": "drop", "after_processing": True, "echo_headers": True}).json()
    assert (rule["after_processing"], rule["echo_headers"]) == (True, True)
    assert admin.post("/faults", json={"kind": "later"}).status_code == 400
    admin.close()
