"""
What a common.ai connection's host names: the base URL, the workspace and the cost settings.

common.ai hands a batch adapter only the connection's ``password`` and ``host``, so a ``dashscope``
connection's region, base URL, workspace, budget and guard all ride in its host (see
:mod:`~airflow_provider_dashscope_batch.common_ai.adapter`).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit, urlunsplit

from airflow_provider_dashscope_batch.cost.budget import CostPolicy
from airflow_provider_dashscope_batch.jobs.failures import ResubmitErrors
from airflow_provider_dashscope_batch.regions import DEFAULT_BASE_URL, REGION_BASE_URLS, region_base_url

__all__ = ["API_PATH", "COST_PARAMS", "ROUND_PARAMS", "cost_settings", "resolve_host", "round_settings"]

API_PATH = "/compatible-mode/v1"


def resolve_host(host: str | None) -> tuple[str, str | None]:
    """
    Return the base URL and workspace a connection's host names.

    :param host: Empty (``cn-beijing``), a region id, or a compatible-mode base URL (a bare
        ``https://host`` gets ``/compatible-mode/v1``); either may end in ``?workspace=<id>``.
    """
    if not host or not host.strip():
        return DEFAULT_BASE_URL, None
    location, _, query = host.strip().partition("?")
    params = parse_qs(query, keep_blank_values=True)
    if set(params) - {"workspace", *COST_PARAMS, *ROUND_PARAMS}:
        raise ValueError(
            f"The connection's host {host!r} may carry only '?workspace=<workspace id>', the cost "
            f"settings {', '.join(COST_PARAMS)} and the round settings {', '.join(ROUND_PARAMS)} in its "
            f"query; got {sorted(set(params) - {'workspace', *COST_PARAMS, *ROUND_PARAMS})}."
        )
    workspace = (params.get("workspace") or [""])[-1] or None
    if location in REGION_BASE_URLS:
        return region_base_url(location, workspace), workspace
    parts = urlsplit(location)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"The connection's host must be a DashScope region ({', '.join(REGION_BASE_URLS)}) or a "
            f"compatible-mode base URL such as {DEFAULT_BASE_URL!r}; got {location!r}."
        )
    path = parts.path.rstrip("/") or API_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")), workspace


#: Cost settings a connection's host query may carry (see the module docstring).
COST_PARAMS = (
    "max_cost",
    "max_input_tokens",
    "expected_output_tokens",
    "budget_basis",
    "on_default_thinking",
    "price_region",
)


def cost_settings(host: str | None) -> tuple[str | None, CostPolicy]:
    """The price region (``None``: from the base URL) and the cost policy a connection's host query sets."""
    params = {k: v[-1] for k, v in parse_qs((host or "").partition("?")[2]).items() if v}
    try:
        policy = CostPolicy(
            max_cost=params.get("max_cost"),  # type: ignore[arg-type]
            max_input_tokens=int(params["max_input_tokens"]) if "max_input_tokens" in params else None,
            expected_output_tokens=int(params["expected_output_tokens"])
            if "expected_output_tokens" in params
            else None,
            budget_basis=params.get("budget_basis"),  # type: ignore[arg-type]
            on_default_thinking=params.get("on_default_thinking", "error"),  # type: ignore[arg-type]
        )
    except (ValueError, ArithmeticError) as exc:
        raise ValueError(f"The connection's host {host!r} has a bad cost setting: {exc}") from None
    return params.get("price_region"), policy


#: Round settings a connection's host query may carry: ``?resubmit_rounds=1&resubmit_errors=400:true``.
ROUND_PARAMS = ("resubmit_rounds", "resubmit_errors")


def round_settings(host: str | None) -> tuple[int, ResubmitErrors]:
    """
    The ``resubmit_rounds`` (default 0) and ``resubmit_errors`` a connection's host query sets.

    ``resubmit_errors`` is a comma list of ``<status or code>:<true|false>``, e.g.
    ``DataInspectionFailed:false,400:true``.
    """
    params = {k: v[-1] for k, v in parse_qs((host or "").partition("?")[2]).items() if v}
    try:
        rounds = int(params.get("resubmit_rounds", "0"))
        overrides: dict[int | str, bool] = {}
        for item in filter(None, params.get("resubmit_errors", "").split(",")):
            key, _, value = item.rpartition(":")
            if not key or value.lower() not in ("true", "false"):
                raise ValueError(f"{item!r} is not <status or code>:<true|false>")
            overrides[key] = value.lower() == "true"
        if rounds < 0:
            raise ValueError(f"resubmit_rounds must be >= 0, got {rounds}")
        return rounds, ResubmitErrors.of(overrides)
    except ValueError as exc:
        raise ValueError(f"The connection's host {host!r} has a bad round setting: {exc}") from None
