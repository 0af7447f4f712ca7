"""The provider registers with Airflow: CLI listing, provider-info schema, and the connection form."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_provider_dashscope_batch.get_provider_info import get_provider_info

AIRFLOW_BIN = Path(sys.executable).with_name("airflow")


def airflow_cli(*args: str) -> list[dict]:
    result = subprocess.run(
        [str(AIRFLOW_BIN), *args, "-o", "json"],
        # AIRFLOW_HOME etc. as set by tests/conftest.py; quiet, so stdout is only the JSON (3.0 logs there)
        env={**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout)


PROVIDER_INFO_MODULE = "airflow_provider_dashscope_batch.get_provider_info"
#: What provider discovery must not pay for: every Airflow process that discovers providers imports it.
HEAVY_PACKAGES = ("httpx", "pydantic", "anyio", "airflow_provider_dashscope_batch.client")


def test_provider_discovery_imports_nothing_heavy():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {PROVIDER_INFO_MODULE}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # stderr lines: "import time: self [us] | cumulative | <indent>module.name"
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert PROVIDER_INFO_MODULE in imported
    heavy = sorted(
        name for name in imported if any(name == p or name.startswith(f"{p}.") for p in HEAVY_PACKAGES)
    )
    assert not heavy, f"provider discovery imports {heavy}"


def test_providers_list_shows_the_provider():
    packages = {p["package_name"]: p for p in airflow_cli("providers", "list")}
    assert "airflow-provider-dashscope-batch" in packages


def test_providers_hooks_show_the_dashscope_connection_type():
    hooks = {h["connection_type"]: h for h in airflow_cli("providers", "hooks")}
    assert (
        hooks["dashscope"]["class"] == "airflow_provider_dashscope_batch.hooks.dashscope.DashScopeBatchHook"
    )
    assert hooks["dashscope"]["hook_name"] == "DashScope Batch"
    assert hooks["dashscope"]["conn_id_attribute_name"] == "dashscope_conn_id"


def test_providers_links_list_the_console_link():
    links = {link["extra_link_class_name"] for link in airflow_cli("providers", "links")}
    assert "airflow_provider_dashscope_batch.operators.links.DashScopeBatchConsoleLink" in links


def test_provider_info_matches_airflows_schema():
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-provider-dashscope-batch"
    assert info["filesystems"] == ["airflow_provider_dashscope_batch.fs.oss"]
    for key in ("operators", "sensors", "triggers", "hooks"):
        assert info[key][0]["python-modules"]


def _public_classes(base: type) -> set[str]:
    """Every concrete public subclass of ``base`` the package defines, as ``module.Class``."""
    import importlib
    import inspect
    import pkgutil

    import airflow_provider_dashscope_batch as package

    found = set()
    for module_info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        if ".emulator" in module_info.name or ".common_ai" in module_info.name:
            continue  # the emulator is the service's stand-in; the adapter registers through common.ai
        module = importlib.import_module(module_info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            public = not name.startswith("_") and "Base" not in name and "Mixin" not in name
            if public and cls.__module__ == module.__name__ and issubclass(cls, base):
                found.add(f"{module.__name__}.{name}")
    return found


def test_provider_info_lists_every_operator_sensor_and_trigger_module():
    """The registry and Airflow's docs tooling read these lists; a class outside them is invisible there."""
    from airflow.sdk import BaseOperator, BaseSensorOperator
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_dashscope_batch.operators.request_input import DashScopeRequestInputOperator
    from airflow_provider_dashscope_batch.triggers.base import DashScopeWaiterTrigger

    info = get_provider_info()
    listed = {
        key: {module for entry in info[key] for module in entry["python-modules"]}
        for key in ("operators", "sensors", "triggers")
    }
    operators = _public_classes(BaseOperator) - _public_classes(BaseSensorOperator)
    bases = {
        f"{cls.__module__}.{cls.__name__}" for cls in (DashScopeRequestInputOperator, DashScopeWaiterTrigger)
    }
    operators -= bases
    transfers = {entry["python-module"] for entry in info["transfers"]}
    found = {
        "operators": {name.rsplit(".", 1)[0] for name in operators} - transfers,
        "sensors": {name.rsplit(".", 1)[0] for name in _public_classes(BaseSensorOperator)},
        "triggers": {name.rsplit(".", 1)[0] for name in _public_classes(BaseTrigger) - bases},
    }
    assert found == listed


def test_declarative_form_reaches_the_providers_manager():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    widgets = manager.connection_form_widgets
    region = widgets["extra__dashscope__region"].field
    if isinstance(region, dict):  # Airflow >= 3.2: the declarative conn-fields
        assert region["schema"]["enum"] == ["cn-beijing", "ap-southeast-1", "custom"]
        assert region["schema"]["title"] == "Region"
    else:  # Airflow < 3.2: the hook's wtforms widgets, built from the same declaration
        assert region.args[0] == "Region"
    for name in ("base_url", "workspace_id", "timeout", "max_retries"):
        assert f"extra__dashscope__{name}" in widgets
    behaviour = manager.field_behaviours["dashscope"]
    assert set(behaviour["hidden_fields"]) == {"host", "schema", "port", "login"}
    assert behaviour["relabeling"] == {"password": "API Key"}
    assert behaviour["placeholders"]["extra__dashscope__base_url"].startswith("https://")


def test_python_form_widgets_mirror_conn_fields():
    """Airflow 3.0/3.1 build the form from these; wtforms only exists where FAB is installed."""
    pytest.importorskip("flask_appbuilder")
    from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook

    widgets = DashScopeBatchHook.get_connection_form_widgets()
    assert set(widgets) == {"region", "base_url", "workspace_id", "timeout", "max_retries"}


REPO_ROOT = Path(__file__).resolve().parents[2]


def test_version_matches_what_ships():
    """pyproject, the package, the provider info and the changelog's newest entry name one version."""
    from airflow_provider_dashscope_batch import __version__

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    changelog = (REPO_ROOT / "docs" / "changelog.rst").read_text()
    newest = re.search(r"^(\d+\.\d+\.\d+) \(", changelog, re.MULTILINE)
    assert newest, "docs/changelog.rst has no '<version> (<date or unreleased>)' heading"
    assert pyproject == __version__ == get_provider_info()["versions"][0] == newest.group(1)


def test_install_docs_name_the_wheel_this_version_builds():
    from airflow_provider_dashscope_batch import __version__

    wheel = f"dist/airflow_provider_dashscope_batch-{__version__}-py3-none-any.whl"
    for doc in ("README.md", "docs/quickstart.rst"):
        text = (REPO_ROOT / doc).read_text()
        assert wheel in text, f"{doc}: the install section must name {wheel}"
        stale = set(re.findall(r"dist/airflow_provider_dashscope_batch-[^ \"\[]+\.whl", text)) - {wheel}
        assert not stale, f"{doc} names another version's wheel: {sorted(stale)}"
