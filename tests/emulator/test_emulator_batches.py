"""Batches routes and lifecycle over real HTTP, on a frozen clock moved with ``advance()``."""

from __future__ import annotations

import json
import math
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest
from dashscope_batch_emulator import EmulatorServer, image_tokens_of
from dashscope_batch_emulator.usage import text_tokens
from emulator_helpers import (
    CHAT,
    TEST_ENDPOINT,
    Api,
    assert_error,
    ds_test_lines,
    jsonl,
    read_jsonl,
    request_line,
)

TIME_FIELDS = [
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
]


def test_create_returns_a_validating_batch(api: Api):
    file_id = api.upload(jsonl([request_line("1")]))["id"]
    metadata = {"ds_name": "nightly", "ds_description": "d" * 200, "idempotency_key": "k-1"}
    batch = api.create(file_id, metadata=metadata)
    assert batch["id"].startswith("batch_")
    assert batch["object"] == "batch"
    assert batch["status"] == "validating"
    assert batch["endpoint"] == CHAT
    assert batch["input_file_id"] == file_id
    assert batch["completion_window"] == "24h"
    assert batch["errors"] is None
    assert batch["output_file_id"] is None
    assert batch["error_file_id"] is None
    assert all(batch[name] is None for name in TIME_FIELDS)
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert batch["metadata"] == metadata
    assert api.batch(batch["id"]) == batch


@pytest.mark.parametrize(
    ("window", "hours"), [("24h", 24), ("1d", 24), ("336h", 336), ("14d", 336), ("48h", 48)]
)
def test_completion_window_accepted(api: Api, window, hours):
    batch = api.create(api.upload(jsonl([request_line("1")]))["id"], window=window)
    api.emulator.advance(0.5)
    batch = api.batch(batch["id"])
    assert batch["completion_window"] == window
    assert batch["expires_at"] - batch["created_at"] in (hours * 3600, hours * 3600 - 1)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"completion_window": "23h"}, "completion_window"),
        ({"completion_window": "337h"}, "completion_window"),
        ({"completion_window": "15d"}, "completion_window"),
        ({"completion_window": "24"}, "completion_window"),
        ({"completion_window": "1.5d"}, "completion_window"),
        ({"completion_window": "24H"}, "completion_window"),
        ({"completion_window": 24}, "completion_window"),
        ({"endpoint": "/v1/completions"}, "endpoint"),
        ({"input_file_id": "file-batch-missing"}, "input_file_id"),
        ({"input_file_id": None}, "input_file_id"),
        ({"metadata": {"ds_name": "n" * 101}}, "metadata.ds_name"),
        ({"metadata": {"ds_description": "d" * 201}}, "metadata.ds_description"),
        ({"metadata": {"ds_name": 5}}, "metadata"),
        ({"metadata": ["x"]}, "metadata"),
        ({"metadata": {"ds_batch_finish_callback": "ftp://x"}}, "metadata.ds_batch_finish_callback"),
    ],
)
def test_create_rejects_bad_parameters(api: Api, change, param):
    body = {"input_file_id": api.upload(jsonl([request_line("1")]))["id"], "endpoint": CHAT}
    body["completion_window"] = "24h"
    response = api.http.post("/batches", json={**body, **change})
    error = assert_error(response, 400, "InvalidParameter")
    assert error["param"] == param
    assert api.http.get("/batches").json()["data"] == []


def test_create_rejects_a_result_file_and_bad_json(api: Api):
    batch = api.run(jsonl([request_line("1")]))
    response = api.http.post(
        "/batches",
        json={"input_file_id": batch["output_file_id"], "endpoint": CHAT, "completion_window": "24h"},
    )
    assert_error(response, 400, "InvalidParameter")
    assert_error(api.http.post("/batches", content=b"{nope"), 400, "InvalidParameter")
    assert_error(api.http.post("/batches", json=[1]), 400, "InvalidParameter")


def test_retrieve_unknown_batch_is_404(api: Api):
    assert_error(api.http.get("/batches/batch_missing"), 404, "NotFound")


def test_lifecycle_with_live_request_counts(api: Api):
    api.emulator.configure(processing_rate=1, validating_seconds=10, finalizing_seconds=10)
    batch = api.create(api.upload(jsonl([request_line(str(i)) for i in range(3)]))["id"])
    api.emulator.advance(9)
    assert api.batch(batch["id"])["status"] == "validating"
    api.emulator.advance(1.5)
    running = api.batch(batch["id"])
    assert running["status"] == "in_progress"
    assert running["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert running["in_progress_at"] == batch["created_at"] + 10
    api.emulator.advance(1)
    assert api.batch(batch["id"])["request_counts"]["completed"] == 1
    api.emulator.advance(2)
    finalizing = api.batch(batch["id"])
    assert finalizing["status"] == "finalizing"
    assert finalizing["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert finalizing["output_file_id"] is None
    api.emulator.advance(10)
    done = api.batch(batch["id"])
    assert done["status"] == "completed"
    assert done["output_file_id"] == "file-batch_output-" + batch["id"].removeprefix("batch_")
    assert done["error_file_id"] is None
    assert done["created_at"] <= done["in_progress_at"] <= done["finalizing_at"] <= done["completed_at"]
    assert done["failed_at"] is None
    assert done["cancelled_at"] is None


def test_test_model_answers_like_the_docs(api: Api):
    batch = api.run(ds_test_lines(2), TEST_ENDPOINT)
    lines = read_jsonl(api.content(batch["output_file_id"]))
    assert [line["custom_id"] for line in lines] == ["0", "1"]
    for line in lines:
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["response"]["request_id"]
        body = line["response"]["body"]
        assert body["model"] == "batch-test-model"
        assert body["object"] == "chat.completion"
        assert body["id"].startswith("chatcmpl-")
        assert body["usage"] == {"completion_tokens": 6, "prompt_tokens": 20, "total_tokens": 26}
        assert body["choices"] == [
            {"finish_reason": "stop", "index": 0, "message": {"content": "This is a test result."}}
        ]


def test_chat_models_answer_deterministically(api: Api):
    content = jsonl([request_line("a"), request_line("b")])
    first = read_jsonl(api.content(api.run(content)["output_file_id"]))
    second = read_jsonl(api.content(api.run(content)["output_file_id"]))
    answers = [line["response"]["body"]["choices"][0]["message"] for line in first]
    assert answers == [line["response"]["body"]["choices"][0]["message"] for line in second]
    assert answers[0] != answers[1]
    assert all(a["role"] == "assistant" and a["content"] for a in answers)
    usage = first[0]["response"]["body"]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_embeddings_are_deterministic_unit_vectors(api: Api):
    lines = [
        request_line("1", model="text-embedding-v4", url="/v1/embeddings", input=["hello", "world"]),
        request_line("2", model="text-embedding-v4", url="/v1/embeddings", input="hello", dimensions=64),
    ]
    for line in lines:
        line["body"].pop("messages")
    out = read_jsonl(api.content(api.run(jsonl(lines), "/v1/embeddings")["output_file_id"]))
    pair, single = out[0]["response"]["body"], out[1]["response"]["body"]
    assert [d["index"] for d in pair["data"]] == [0, 1]
    assert len(pair["data"][0]["embedding"]) == 1024
    assert len(single["data"][0]["embedding"]) == 64
    assert pair["data"][0]["embedding"][:64] != pair["data"][1]["embedding"][:64]
    assert math.isclose(sum(v * v for v in single["data"][0]["embedding"]), 1.0, rel_tol=1e-3)
    assert pair["usage"]["total_tokens"] > 0
    again = read_jsonl(api.content(api.run(jsonl(lines[:1]), "/v1/embeddings")["output_file_id"]))
    assert again[0]["response"]["body"]["data"] == pair["data"]


def test_failure_pattern_splits_output_and_error_files(api: Api):
    api.emulator.fail_requests(r"^bad-")
    batch = api.run(jsonl([request_line("ok-1"), request_line("bad-1"), request_line("ok-2")]))
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    assert batch["error_file_id"] == "file-batch_error-" + batch["id"].removeprefix("batch_")
    (error_line,) = read_jsonl(api.content(batch["error_file_id"]))
    assert set(error_line) == {"id", "custom_id", "response", "error"}
    assert error_line["custom_id"] == "bad-1"
    assert error_line["response"]["status_code"] == 400
    assert error_line["error"]["code"] == "InvalidParameter"
    assert error_line["error"]["message"]
    assert [x["custom_id"] for x in read_jsonl(api.content(batch["output_file_id"]))] == ["ok-1", "ok-2"]


def test_failure_marker_in_the_request_body(api: Api):
    spec = {"status_code": 429, "code": "Throttling", "message": "slow down"}
    batch = api.run(jsonl([request_line("1", x_emulator_fail=spec), request_line("2", x_emulator_fail=True)]))
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 2, "completed": 0, "failed": 2}
    assert batch["output_file_id"] is None
    first, second = read_jsonl(api.content(batch["error_file_id"]))
    assert first["error"] == {"code": "Throttling", "message": "slow down"}
    assert first["response"]["status_code"] == 429
    assert second["error"]["code"] == "InvalidParameter"


def _big_line(custom_id: str, size: int) -> dict:
    return request_line(custom_id, padding="p" * size)


@pytest.mark.parametrize(
    ("content", "endpoint", "code", "line"),
    [
        (b'{"custom_id": "1", nope\n', CHAT, "invalid_json_line", 1),
        (jsonl([request_line("1"), request_line("1")]), CHAT, "duplicate_custom_id", 2),
        (jsonl([request_line("1"), request_line("2", model="qwen-max")]), CHAT, "mismatched_model", 2),
        (jsonl([request_line("1", url="/v1/embeddings")]), CHAT, "url_mismatch", 1),
        (jsonl([request_line("1"), _big_line("2", 6 * 1024 * 1024)]), CHAT, "line_too_large", 2),
        (b"", CHAT, "empty_file", None),
        (
            b"".join([jsonl([request_line("0")])] * 1)
            + jsonl([request_line(str(i)) for i in range(1, 50_001)]),
            CHAT,
            "too_many_tasks",
            None,
        ),
        (ds_test_lines(101), TEST_ENDPOINT, "too_many_tasks", None),
        (
            jsonl(
                [
                    request_line(str(i), model="batch-test-model", url=TEST_ENDPOINT, padding="p" * 20_000)
                    for i in range(60)
                ]
            ),
            TEST_ENDPOINT,
            "file_too_large",
            None,
        ),
    ],
    ids=[
        "bad-json",
        "duplicate-id",
        "mixed-models",
        "url-mismatch",
        "line-over-6mb",
        "empty",
        "over-50k-lines",
        "test-model-over-100-lines",
        "test-model-over-1mb",
    ],
)
def test_validation_failures_fail_the_batch(api: Api, content, endpoint, code, line):
    batch = api.run(content, endpoint, seconds=5)
    assert batch["status"] == "failed"
    assert batch["failed_at"] is not None
    assert batch["in_progress_at"] is None
    assert batch["output_file_id"] is None
    assert batch["error_file_id"] is None
    assert batch["errors"]["object"] == "list"
    entries = [e for e in batch["errors"]["data"] if e["code"] == code]
    assert entries, batch["errors"]
    assert set(entries[0]) == {"code", "message", "param", "line"}
    assert entries[0]["line"] == line
    assert entries[0]["message"]


def test_input_file_deleted_before_validation_fails_the_batch(api: Api):
    file_id = api.upload(jsonl([request_line("1")]))["id"]
    batch = api.create(file_id)
    api.http.delete(f"/files/{file_id}")
    api.emulator.advance(5)
    failed = api.batch(batch["id"])
    assert failed["status"] == "failed"
    assert failed["errors"]["data"][0]["code"] == "file_not_found"


def test_cancel_keeps_finished_results(api: Api):
    api.emulator.configure(processing_rate=1, validating_seconds=1, cancelling_seconds=5)
    api.emulator.fail_requests("^2$")
    batch = api.create(api.upload(jsonl([request_line(str(i)) for i in range(10)]))["id"])
    api.emulator.advance(4.5)
    cancelling = api.http.post(f"/batches/{batch['id']}/cancel").json()
    assert cancelling["status"] == "cancelling"
    assert cancelling["cancelling_at"] is not None
    assert api.http.post(f"/batches/{batch['id']}/cancel").json()["status"] == "cancelling"
    api.emulator.advance(5)
    cancelled = api.batch(batch["id"])
    assert cancelled["status"] == "cancelled"
    assert cancelled["request_counts"] == {"total": 10, "completed": 2, "failed": 1}
    assert [x["custom_id"] for x in read_jsonl(api.content(cancelled["output_file_id"]))] == ["0", "1"]
    assert [x["custom_id"] for x in read_jsonl(api.content(cancelled["error_file_id"]))] == ["2"]
    assert api.http.post(f"/batches/{batch['id']}/cancel").json()["status"] == "cancelled"


def test_cancel_while_validating_and_after_the_end(api: Api):
    batch = api.create(api.upload(jsonl([request_line("1")]))["id"])
    assert api.http.post(f"/batches/{batch['id']}/cancel").json()["status"] == "cancelling"
    api.emulator.advance(60)
    cancelled = api.batch(batch["id"])
    assert cancelled["status"] == "cancelled"
    assert cancelled["output_file_id"] is None
    assert cancelled["in_progress_at"] is None
    done = api.run(jsonl([request_line("1")]))
    assert_error(api.http.post(f"/batches/{done['id']}/cancel"), 400, "InvalidParameter")
    assert_error(api.http.post("/batches/batch_missing/cancel"), 404, "NotFound")


def test_expiry_when_the_window_passes(api: Api):
    api.emulator.configure(processing_rate=1 / 3600)
    batch = api.create(api.upload(jsonl([request_line(str(i)) for i in range(100)]))["id"])
    api.emulator.advance(23 * 3600)
    assert api.batch(batch["id"])["status"] == "in_progress"
    api.emulator.advance(2 * 3600)
    expired = api.batch(batch["id"])
    assert expired["status"] == "expired"
    assert expired["expired_at"] == expired["expires_at"]
    assert expired["request_counts"]["total"] == 100
    assert expired["request_counts"]["completed"] == 23
    assert len(read_jsonl(api.content(expired["output_file_id"]))) == 23


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def callback_url():
    _Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_finish_callback_posts_the_batch(api: Api, callback_url):
    metadata = {"ds_batch_finish_callback": callback_url}
    batch = api.run(jsonl([request_line("1")]), metadata=metadata)
    for _ in range(200):
        if api.emulator.callbacks():
            break
        threading.Event().wait(0.05)
    (delivery,) = api.emulator.callbacks()
    assert delivery.pop("sent_at") <= time.time()
    assert delivery == {
        "batch_id": batch["id"],
        "url": callback_url,
        "status": "completed",
        "status_code": 204,
        "kind": "callback",
    }
    (payload,) = _Receiver.received
    assert payload["id"] == batch["id"]
    assert payload["status"] == "completed"
    assert payload["output_file_id"] == batch["output_file_id"]


# Listing -------------------------------------------------------------------------------------------------


@pytest.fixture
def three(api: Api) -> list[dict]:
    """Three batches created a day apart (oldest first), one named, one completed."""
    files = [api.upload(jsonl([request_line("1")]))["id"] for _ in range(3)]
    created = []
    for i, file_id in enumerate(files):
        created.append(api.create(file_id, metadata={"ds_name": ["Nightly Eval", "other", "nightly-2"][i]}))
        api.emulator.advance(86400)
    return [api.batch(b["id"]) for b in created]


def _ids(page: dict) -> list[str]:
    return [b["id"] for b in page["data"]]


def test_list_is_newest_first_with_cursors(api: Api, three):
    ids = [b["id"] for b in three][::-1]
    page = api.http.get("/batches", params={"limit": 2}).json()
    assert page["object"] == "list"
    assert _ids(page) == ids[:2]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[0], ids[1], True)
    rest = api.http.get("/batches", params={"after": page["last_id"]}).json()
    assert _ids(rest) == ids[2:]
    assert rest["has_more"] is False
    assert api.http.get("/batches").json()["has_more"] is False


def test_list_filters(api: Api, three):
    get = lambda **p: _ids(api.http.get("/batches", params=p).json())  # noqa: E731
    assert get(ds_name="nightly") == [three[2]["id"], three[0]["id"]]
    assert get(input_file_ids=f"{three[0]['input_file_id']},{three[1]['input_file_id']}") == [
        three[1]["id"],
        three[0]["id"],
    ]
    assert get(status="completed") == [b["id"] for b in three][::-1]
    assert get(status="failed,expired") == []

    def stamp(batch: dict, delta: int) -> str:
        return datetime.fromtimestamp(batch["created_at"] + delta, UTC).strftime("%Y%m%d%H%M%S")

    assert get(create_after=stamp(three[1], -1)) == [three[2]["id"], three[1]["id"]]
    assert get(create_before=stamp(three[1], 1)) == [three[1]["id"], three[0]["id"]]
    assert get(create_after=stamp(three[1], -1), create_before=stamp(three[1], 1)) == [three[1]["id"]]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"status": "done"},
        {"input_file_ids": ",".join(f"file-batch-{i}" for i in range(21))},
        {"create_after": "2025-03-04"},
        {"create_before": "20250304"},
        {"after": "batch_missing"},
    ],
)
def test_list_rejects_bad_parameters(api: Api, three, params):
    error = assert_error(api.http.get("/batches", params=params), 400, "InvalidParameter")
    assert error["param"] == next(iter(params))


def test_reset_forgets_everything(dashscope_emulator: EmulatorServer):
    api = Api(dashscope_emulator)
    api.run(jsonl([request_line("1")]))
    dashscope_emulator.fail_requests("x")
    dashscope_emulator.add_fault(path="/nothing")
    dashscope_emulator.reset()
    assert api.http.get("/batches").json()["data"] == []
    assert api.http.get("/files").json()["data"] == []
    assert dashscope_emulator.faults() == []
    assert dashscope_emulator.request_counts() == {"GET /batches": 1, "GET /files": 1}
    assert dashscope_emulator.configure()["fail_custom_id_pattern"] is None


def test_text_tokens_are_the_emulators_own_approximation():
    assert text_tokens("question a") == 2 + 1  # letters: one token per 4, rounded up
    assert text_tokens("Hi, there!") == 1 + 1 + 2 + 1  # each ASCII mark is a token
    assert text_tokens("你好世界") == 3  # other characters: one token per 1.5
    assert text_tokens("") == 0


def test_chat_usage_is_counted_by_the_emulator(api: Api):
    plain = request_line("a", enable_thinking=False)
    thinking = request_line("b", model="qwen3.6-plus")  # thinks by default: enable_thinking unset
    first, second = read_jsonl(api.content(api.run(jsonl([plain]))["output_file_id"])) + read_jsonl(
        api.content(api.run(jsonl([thinking]))["output_file_id"])
    )
    body = first["response"]["body"]
    assert body["usage"]["prompt_tokens"] == 3 + 5 + text_tokens("question a")  # reply opening, markers
    assert body["usage"]["completion_tokens"] == text_tokens(body["choices"][0]["message"]["content"])
    assert "reasoning_content" not in body["choices"][0]["message"]
    body = second["response"]["body"]
    message = body["choices"][0]["message"]
    reasoning = body["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning == text_tokens(message["reasoning_content"]) > 0
    assert body["usage"]["completion_tokens"] == text_tokens(message["content"]) + reasoning


def test_a_body_that_breaks_its_endpoints_rules_fails_that_request_alone(api: Api):
    """The service validates the file's lines, but fails a request whose body it cannot take by itself."""
    bad = request_line(
        "bad-1", model="text-embedding-v4", url="/v1/embeddings", input=[f"t{i}" for i in range(11)]
    )
    good = request_line("ok-1", model="text-embedding-v4", url="/v1/embeddings", input="hello")
    for line in (bad, good):
        line["body"].pop("messages")
    batch = api.run(jsonl([good, bad]), "/v1/embeddings")
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    (error_line,) = read_jsonl(api.content(batch["error_file_id"]))
    assert error_line["custom_id"] == "bad-1"
    assert error_line["error"]["code"] == "InvalidParameter"
    assert "takes at most 10 per request" in error_line["error"]["message"]


def test_chat_answers_cut_by_max_tokens_and_image_tokens(api: Api):
    def answer(line: dict) -> dict:
        (result,) = read_jsonl(api.content(api.run(jsonl([line]))["output_file_id"]))
        return result["response"]["body"]

    cut = answer(request_line("cut", max_tokens=2))
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 2
    think = answer(request_line("think", enable_thinking=True))
    assert think["choices"][0]["finish_reason"] == "stop"
    assert think["choices"][0]["message"]["reasoning_content"]
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    seen = answer(request_line("img", model="qwen-vl-max", messages=[{"role": "user", "content": [image]}]))
    # a URL counts as a 1024x1024 image (the emulator downloads nothing): at most 1,280 patches + 2
    details = seen["usage"]["prompt_tokens_details"]
    assert details["image_tokens"] == image_tokens_of(image, "qwen-vl-max", {}) == 35 * 35 + 2
    assert seen["usage"]["prompt_tokens"] == details["image_tokens"] + details["text_tokens"]


def _deliveries(api: Api, count: int) -> list[dict]:
    deadline = time.monotonic() + 30
    while len(api.emulator.callbacks()) < count:
        assert time.monotonic() < deadline, api.emulator.callbacks()
        threading.Event().wait(0.05)
    return api.emulator.callbacks()


def test_callbacks_can_arrive_twice_late_or_never(api: Api, callback_url):
    metadata = {"ds_batch_finish_callback": callback_url}
    api.emulator.configure(callback_deliveries=0)
    lost = api.run(jsonl([request_line("1")]), metadata=metadata)
    api.emulator.configure(callback_deliveries=2, callback_delay=0.5)
    started = time.time()
    twice = api.run(jsonl([request_line("1")]), metadata=metadata)
    sent = _deliveries(api, 2)
    assert [d["batch_id"] for d in sent] == [twice["id"], twice["id"]]
    assert all(d["sent_at"] - started >= 0.5 for d in sent)
    assert lost["id"] not in {p["id"] for p in _Receiver.received}


def test_late_callbacks_of_batches_that_finished_together_arrive_out_of_order(api: Api, callback_url):
    api.emulator.configure(time_scale=0, callback_delay_jitter=1.0)
    file_id = api.upload(jsonl([request_line("1")]))["id"]
    metadata = {"ds_batch_finish_callback": callback_url}
    created = [api.create(file_id, metadata=metadata)["id"] for _ in range(12)]
    api.emulator.advance(3600)  # all finish in one engine step
    sent = sorted(_deliveries(api, 12), key=lambda d: d["sent_at"])
    assert sorted(d["batch_id"] for d in sent) == sorted(created)
    assert sent[-1]["sent_at"] - sent[0]["sent_at"] > 0.2  # spread over the jitter, not sent at once
    assert [d["batch_id"] for d in sent] != created


def test_an_eventbridge_target_gets_a_cloudevent_per_finished_batch(api: Api, callback_url):
    api.emulator.configure(eventbridge_target=callback_url)
    batch = api.run(jsonl([request_line("1")]))
    (delivery,) = _deliveries(api, 1)
    assert (delivery["kind"], delivery["batch_id"]) == ("eventbridge", batch["id"])
    (event,) = _Receiver.received
    assert event["specversion"] == "1.0"
    assert (event["source"], event["type"]) == ("acs.dashscope", "dashscope:System:BatchTaskFinish")
    assert event["data"]["id"] == batch["id"]
    assert event["data"]["status"] == "completed"
