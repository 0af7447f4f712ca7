"""Bearer authentication of the emulated API."""

from __future__ import annotations

import httpx
import pytest
from dashscope_batch_emulator import EmulatorServer
from emulator_helpers import assert_error


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer sk-wrong"}],
    ids=["missing", "empty", "not-bearer", "wrong-key"],
)
def test_requests_without_the_key_get_401(dashscope_emulator: EmulatorServer, headers):
    for method, path in [("GET", "/files"), ("POST", "/batches"), ("GET", "/batches/batch_x")]:
        response = httpx.request(method, dashscope_emulator.base_url + path, headers=headers)
        error = assert_error(response, 401, "invalid_api_key")
        assert error["type"] == "invalid_request_error"
        assert dashscope_emulator.api_key not in response.text


def test_the_right_key_is_accepted(dashscope_emulator: EmulatorServer):
    headers = {"Authorization": f"Bearer {dashscope_emulator.api_key}"}
    assert httpx.get(dashscope_emulator.base_url + "/files", headers=headers).status_code == 200
    assert dashscope_emulator.api_key not in repr(dashscope_emulator)


def test_accept_any_key_mode():
    with EmulatorServer(accept_any_key=True) as server:
        ok = httpx.get(server.base_url + "/batches", headers={"Authorization": "Bearer anything"})
        assert ok.status_code == 200
        assert_error(httpx.get(server.base_url + "/batches"), 401, "invalid_api_key")


def test_unknown_route_gets_a_dashscope_404(dashscope_emulator: EmulatorServer):
    response = httpx.get(dashscope_emulator.base_url + "/models/nope")
    assert_error(response, 404, "NotFound")
