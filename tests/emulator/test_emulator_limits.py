"""The documented list-filter limits (always) and the account rate limits (when switched on)."""

from __future__ import annotations

import pytest
from dashscope_batch_emulator import EmulatorServer
from dashscope_batch_emulator.ratelimit import route_kind
from emulator_helpers import Api, assert_error, ds_test_lines


def test_list_filter_limits(api: Api):
    ids = ",".join(f"file-batch-{i}" for i in range(21))
    assert_error(api.http.get("/batches", params={"input_file_ids": ids}), 400, "InvalidParameter")
    assert api.http.get("/batches", params={"input_file_ids": ids.rsplit(",", 1)[0]}).status_code == 200
    for limit in (0, 101):
        assert_error(api.http.get("/batches", params={"limit": limit}), 400, "InvalidParameter")
    assert_error(api.http.get("/files", params={"limit": 2001}), 400, "InvalidParameter")


def test_list_pages_hold_at_most_100_batches(api: Api):
    file_id = api.upload(ds_test_lines(1))["id"]
    created = [api.create(file_id, endpoint="/v1/chat/ds-test")["id"] for _ in range(101)]
    first = api.http.get("/batches", params={"input_file_ids": file_id, "limit": 100}).json()
    assert (len(first["data"]), first["has_more"]) == (100, True)
    rest = api.http.get("/batches", params={"input_file_ids": file_id, "after": first["last_id"]}).json()
    assert [b["id"] for b in first["data"] + rest["data"]] == created[::-1]


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("POST", "/batches", "batch_create"),
        ("GET", "/batches", "batch_list"),
        ("GET", "/batches/batch_x", "batch_retrieve"),
        ("POST", "/batches/batch_x/cancel", "batch_cancel"),
        ("POST", "/files", "file_upload"),
        ("GET", "/files/file-x/content", "file_read"),
        ("DELETE", "/files/file-x", "file_read"),
        ("GET", "/models", None),
    ],
)
def test_route_kinds(method, path, kind):
    assert route_kind(method, path) == kind


def test_rate_limits_are_off_by_default(api: Api, emu: EmulatorServer):
    for _ in range(30):
        assert api.http.get("/batches").status_code == 200
    assert emu.rate_limits()["enabled"] is False


def test_rate_limit_answers_429_with_retry_after(api: Api, emu: EmulatorServer):
    report = emu.set_rate_limits({"batch_list": 3}, period_scale=100)  # 3 per 100 min: no refill here
    assert report["windows"]["batch_list"] == {"limit": 3, "period": 6000.0}
    assert [api.http.get("/batches").status_code for _ in range(3)] == [200] * 3
    refused = api.http.get("/batches")
    assert_error(refused, 429, "limit_requests")
    assert 5990 < float(refused.headers["retry-after"]) <= 6000
    assert api.http.get("/batches/batch_missing").status_code == 404  # other limits are separate
    report = emu.rate_limits()
    assert (report["admitted"]["batch_list"], report["rejected"]["batch_list"]) == (3, 1)
    assert emu.request_counts()["GET /batches"] == 4  # refused requests are counted too


def test_reset_and_delete_switch_rate_limits_off(api: Api, emu: EmulatorServer):
    emu.set_rate_limits({"batch_list": 1}, period_scale=100)
    api.http.get("/batches")
    assert api.http.get("/batches").status_code == 429
    emu.clear_rate_limits()
    assert api.http.get("/batches").status_code == 200
    emu.set_rate_limits({"batch_list": 1}, period_scale=100)
    emu.reset()
    assert [api.http.get("/batches").status_code for _ in range(3)] == [200] * 3


def test_bad_rate_limit_settings_are_refused(emu: EmulatorServer):
    for body in ({"limits": {"batch_lists": 5}}, {"period_scale": 0}, {"unknown": 1}):
        response = emu._admin.put("/rate-limits", json=body)
        assert response.status_code == 400, body
