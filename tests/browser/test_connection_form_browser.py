"""The ``dashscope`` connection form, checked on a real Airflow api-server the way people use it.

``test_hook_meta_offers_the_dashscope_fields`` reads the API the UI builds the form from; it runs on
every supported Airflow (3.3 draws the form from ``conn-fields`` in the provider info, 3.0 from the hook's
``get_connection_form_widgets()``). ``test_connection_form_in_browser`` drives headless Chromium through
Admin -> Connections: add, save, reopen, Test against the emulator, Test with a wrong key.

Run: ``bash .ci/browser`` (``--screenshots`` also rewrites ``docs/screenshots/``).
"""

from __future__ import annotations

import json
import re
import secrets
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.browser

CONN_TYPE = "dashscope"
HOOK_NAME = "DashScope Batch"
#: Label of the password field, relabelled as the API key.
API_KEY_LABEL = re.compile(r"^\s*API key\s*$", re.IGNORECASE)
#: Extra field name -> pattern its label must match.
EXTRA_FIELD_LABELS: dict[str, re.Pattern[str]] = {
    "region": re.compile(r"^\s*Region\s*$", re.IGNORECASE),
    "base_url": re.compile(r"^\s*Base URL\s*$", re.IGNORECASE),
    "workspace_id": re.compile(r"^\s*Workspace( ID)?\s*$", re.IGNORECASE),
    "timeout": re.compile(r"^\s*Timeout\b", re.IGNORECASE),
    "max_retries": re.compile(r"^\s*Max(imum)? retries\s*$", re.IGNORECASE),
    "callback_base_url": re.compile(r"^\s*Airflow public URL\b", re.IGNORECASE),
}
REGIONS = ["cn-beijing", "ap-southeast-1", "custom"]
#: Standard fields that mean nothing for DashScope (the hook_meta API calls ``schema`` ``url_schema``).
HIDDEN_STANDARD_FIELDS = ["host", "port", "url_schema", "login"]
HIDDEN_STANDARD_LABEL = re.compile(r"^\s*(Host|Port|Schema|Login)\s*$", re.IGNORECASE)
#: Labels the UI shows for every connection type.
COMMON_LABELS = re.compile(r"^\s*(Connection ID|Connection Type|Description)\s*\*?\s*$", re.IGNORECASE)
AIRFLOW_VERSION = tuple(int(part) for part in version("apache-airflow").split(".")[:2])


def _dashscope_meta(server_url: str) -> dict[str, Any]:
    response = httpx.get(f"{server_url}/ui/connections/hook_meta", timeout=60)
    response.raise_for_status()
    entries = [entry for entry in response.json() if entry["connection_type"] == CONN_TYPE]
    assert len(entries) == 1, f"connection type {CONN_TYPE!r} listed {len(entries)} times by hook_meta"
    return entries[0]


def test_hook_meta_offers_the_dashscope_fields(airflow_api_server):
    meta = _dashscope_meta(airflow_api_server.url)

    assert meta["hook_name"] == HOOK_NAME
    standard = meta["standard_fields"]
    if AIRFLOW_VERSION < (3, 2):
        # Airflow < 3.2 calls the hook's get_ui_field_behaviour() and get_connection_form_widgets() in one
        # try block that gives up on any ImportError (wtforms, or anything those methods import).
        hints = airflow_api_server.log_lines("DashScopeBatchHook")
        assert standard, f"no field behaviour nor widgets from the hook; api-server log: {hints}"
    assert standard, "no field behaviour: the form would show host, port, schema and login"
    hidden = {name: (standard[name] or {}).get("hidden") for name in HIDDEN_STANDARD_FIELDS}
    assert all(hidden.values()), f"irrelevant standard fields shown: {hidden}"
    assert not standard["password"]["hidden"]
    assert API_KEY_LABEL.match(standard["password"]["title"] or ""), standard["password"]
    extra = meta["extra_fields"] or {}
    assert sorted(extra) == sorted(EXTRA_FIELD_LABELS), f"extra fields: {sorted(extra)}"
    for name, label in EXTRA_FIELD_LABELS.items():
        title = extra[name]["schema"].get("title") or ""
        assert label.search(title), f"extra field {name!r} is labelled {title!r}"
    assert extra["region"]["schema"].get("enum") == REGIONS
    assert "integer" in extra["max_retries"]["schema"]["type"]


def _needs_port_shim() -> bool:
    """
    Whether this Airflow's UI Test button fails for every connection that has no port.

    Airflow 3.3.2's UI posts ``port: Number(null)`` (0) and the test route then refuses to reuse the
    stored credentials ("The host or port to test differs from the stored connection"); fixed upstream
    by apache/airflow#73298, which makes ``_same_endpoint(0, None)`` true.
    """
    try:
        from airflow.api_fastapi.core_api.routes.public.connections import _same_endpoint
    except ImportError:  # Airflow < 3.3 has no such guard
        return False
    return not _same_endpoint(0, None)


def _post_port_as_null(route: Any) -> None:
    body = json.loads(route.request.post_data or "{}")
    if body.get("port") == 0:
        body["port"] = None
    route.continue_(post_data=json.dumps(body))


class ConnectionDialog:
    """
    The Add/Edit Connection dialog of Airflow's React UI.

    Its extra-field labels are not tied to their inputs (``for`` names another id), so fields are found
    as the field group whose label matches.

    :param page: The Playwright page showing the dialog.
    """

    def __init__(self, page: Any) -> None:
        self.page = page
        self.root = page.get_by_role("dialog")

    def field(self, label: re.Pattern[str] | str) -> Any:
        if isinstance(label, str):
            label = re.compile(rf"^\s*{re.escape(label)}\s*\*?\s*$", re.IGNORECASE)
        return (
            self.root.locator("[data-scope=field][data-part=root]")
            .filter(has=self.page.locator("label").filter(has_text=label))
            .first
        )

    def input(self, label: re.Pattern[str] | str) -> Any:
        return self.field(label).locator("input:not([type=hidden]), textarea").first

    def labels(self) -> list[str]:
        return [text.strip(" *\n") for text in self.root.locator("label:visible").all_inner_texts()]

    def expand(self, section: str) -> None:
        button = self.root.get_by_role("button", name=section, exact=True)
        if button.get_attribute("aria-expanded") != "true":
            button.click()

    def save(self) -> None:
        from playwright.sync_api import expect

        self.root.get_by_role("button", name="Save").click()
        expect(self.root).to_be_hidden()


#: The newest "Test Connection ..." message, one not shown before (``seen`` holds the old ones' ids).
_NEW_TEST_RESULT = """seen => {
    const toast = [...document.querySelectorAll("[data-scope=toast][data-part=root]")]
        .find(t => !seen.includes(t.id) && t.textContent.includes("Test Connection"));
    return toast ? [toast.dataset.type, toast.innerText] : null;
}"""


def _press_test(page: Any, row: Any) -> tuple[str, str]:
    """Press the row's Test button; return the result message's type (success/error) and text."""
    toasts = page.locator("[data-scope=toast][data-part=root]")
    seen = toasts.evaluate_all("toasts => toasts.map(t => t.id)")
    row.get_by_role("button", name="Test Connection").click()
    kind, text = page.wait_for_function(_NEW_TEST_RESULT, arg=seen).json_value()
    return kind, text


#: True once no finite animation (dialogs, accordions, messages fading in) is running.
_ANIMATIONS_DONE = """() => document.getAnimations().every(
    a => a.playState !== "running" || a.effect.getComputedTiming().iterations === Infinity)"""


def _shoot(page: Any, directory: Path | None, name: str) -> None:
    if directory is not None:
        page.wait_for_function(_ANIMATIONS_DONE)
        page.screenshot(path=str(directory / f"{name}.png"))


@pytest.mark.skipif(
    AIRFLOW_VERSION < (3, 2),
    reason="Airflow < 3.2 builds the form from the hook's widgets, checked through the API the UI reads "
    "(test_hook_meta_offers_the_dashscope_fields); Airflow 3.0.6's UI page fails under Starlette >= 1",
)
def test_connection_form_in_browser(airflow_api_server, browser_page, dashscope_emulator, screenshots_dir):
    page = browser_page
    from playwright.sync_api import expect

    key = dashscope_emulator.api_key
    wrong_key = f"sk-wrong-{secrets.token_hex(8)}"
    conn_id = "dashscope_browser"
    api_responses: list[Any] = []
    page.on("response", lambda r: api_responses.append(r) if "/static/" not in r.url else None)
    if _needs_port_shim():
        page.route("**/api/v2/connections/test", _post_port_as_null)

    def assert_no_key_in_page() -> None:
        html = page.content()
        values = page.eval_on_selector_all("input, textarea", "fields => fields.map(f => f.value)")
        # Booleans only: pytest would print the compared strings, key included.
        in_html = any(secret in html for secret in (key, wrong_key))
        in_fields = any(secret in value for secret in (key, wrong_key) for value in values)
        assert not in_html, "an API key is in the page's HTML"
        assert not in_fields, "an API key is in a form field"

    # Admin -> Connections -> Add Connection, DashScope type.
    page.goto(airflow_api_server.url)
    page.get_by_role("button", name="Admin").click()
    page.get_by_role("menuitem", name="Connections").click()
    expect(page).to_have_url(re.compile(r"/connections$"))
    page.get_by_role("button", name="Add Connection").click()
    dialog = ConnectionDialog(page)
    dialog.input("Connection ID").fill(conn_id)
    dialog.input("Connection Type").fill("DashScope")
    page.get_by_role("option", name=HOOK_NAME, exact=True).click()

    # Standard fields: only the masked API key (and the description every type has).
    dialog.expand("Standard Fields")
    api_key = dialog.input(API_KEY_LABEL)
    expect(api_key).to_have_attribute("type", "password")
    api_key.fill(key)
    labels = dialog.labels()
    assert not [label for label in labels if HIDDEN_STANDARD_LABEL.match(label)], labels
    others = [label for label in labels if not COMMON_LABELS.match(label)]
    assert len(others) == 1, f"standard fields: {labels}"
    assert API_KEY_LABEL.match(others[0]), f"standard fields: {labels}"
    _shoot(page, screenshots_dir, "connection-form-standard-fields")

    # Extra fields: exactly the DashScope ones.
    dialog.expand("Extra Fields")
    labels = dialog.labels()
    specific = [
        label for label in labels if not COMMON_LABELS.match(label) and not API_KEY_LABEL.match(label)
    ]
    for name, pattern in EXTRA_FIELD_LABELS.items():
        assert len([label for label in specific if pattern.search(label)]) == 1, f"{name}: {labels}"
    assert len(specific) == len(EXTRA_FIELD_LABELS), f"unexpected fields: {labels}"

    # Extra fields: region dropdown, then the emulator as a custom endpoint.
    dialog.input("Region").click()
    assert page.get_by_role("option").all_inner_texts() == REGIONS
    page.get_by_role("option", name="custom", exact=True).click()
    dialog.input("Base URL").fill(dashscope_emulator.base_url)
    dialog.input(EXTRA_FIELD_LABELS["workspace_id"]).fill("llm-browser-test")
    dialog.input(EXTRA_FIELD_LABELS["timeout"]).fill("30")
    dialog.input(EXTRA_FIELD_LABELS["max_retries"]).fill("1")
    _shoot(page, screenshots_dir, "connection-form-extra-fields")
    dialog.save()
    row = page.get_by_role("row").filter(has_text=conn_id)
    expect(row).to_be_visible()
    assert_no_key_in_page()
    stored = httpx.get(f"{airflow_api_server.url}/api/v2/connections/{conn_id}", timeout=30).json()
    assert (stored["conn_type"], stored["password"]) == (CONN_TYPE, "***")
    extra = json.loads(stored["extra"])
    assert sorted(extra) == sorted(EXTRA_FIELD_LABELS), f"saved extra: {extra}"
    saved = (
        extra["region"],
        extra["base_url"],
        extra["workspace_id"],
        extra["timeout"],
        extra["max_retries"],
    )
    assert saved == ("custom", dashscope_emulator.base_url, "llm-browser-test", 30, 1)

    # Reopen: values kept, the key not echoed.
    row.get_by_role("button", name="Edit Connection").click()
    dialog = ConnectionDialog(page)
    expect(dialog.field("Connection Type")).to_contain_text(HOOK_NAME)
    dialog.expand("Standard Fields")
    assert dialog.input(API_KEY_LABEL).input_value() in ("", "***")
    dialog.expand("Extra Fields")
    expect(dialog.field("Region")).to_contain_text("custom")
    expect(dialog.input("Base URL")).to_have_value(dashscope_emulator.base_url)
    expect(dialog.input(EXTRA_FIELD_LABELS["workspace_id"])).to_have_value("llm-browser-test")
    expect(dialog.input(EXTRA_FIELD_LABELS["timeout"])).to_have_value("30")
    expect(dialog.input(EXTRA_FIELD_LABELS["max_retries"])).to_have_value("1")
    assert_no_key_in_page()
    _shoot(page, screenshots_dir, "connection-form-edit")
    dialog.root.get_by_role("button", name="Close").click()

    # Test: the stored key against the emulator.
    kind, message = _press_test(page, row)
    assert kind == "success", message
    _shoot(page, screenshots_dir, "connection-test-success")
    assert_no_key_in_page()

    # A wrong key: Test fails and says why.
    row.get_by_role("button", name="Edit Connection").click()
    dialog = ConnectionDialog(page)
    dialog.expand("Standard Fields")
    dialog.input(API_KEY_LABEL).fill(wrong_key)
    dialog.save()
    kind, message = _press_test(page, row)
    assert kind == "error", message
    assert re.search(r"API key", message, re.IGNORECASE), message
    _shoot(page, screenshots_dir, "connection-test-failure")
    assert_no_key_in_page()

    bodies = [(r.url, r.text()) for r in api_responses if r.ok and r.status != 204]
    leaks = [url for url, body in bodies if key in body or wrong_key in body]
    assert not leaks, f"the API key came back from the api-server in: {leaks}"
