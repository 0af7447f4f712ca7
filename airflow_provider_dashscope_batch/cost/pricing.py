"""
The price table: real-time prices per region and model, tiered by a request's own input tokens.

The table ships as ``prices.json`` beside this module, with the page each price comes from and the
date it was read. A connection (extra ``prices``) and a task (``prices=``) can override or add models
without a release; :func:`load_price_table` merges the three, task last.

Arithmetic is in :class:`~decimal.Decimal`: a request costs
``(input_tokens * tier.input + output_tokens * tier.output) / per_tokens * batch_discount``, with the
tier picked by that request's input tokens and ``tier.thinking_output`` for a request in thinking
mode.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_dashscope_batch.regions import DEFAULT_REGION

__all__ = [
    "ModelKind",
    "ModelPrice",
    "PriceTable",
    "PriceTier",
    "RegionPrices",
    "load_price_table",
    "region_of",
]


class ModelKind(StrEnum):
    """How a model's requests are counted: chat messages, or embedding inputs."""

    CHAT = "chat"
    EMBEDDING = "embedding"


@dataclass(frozen=True)
class PriceTier:
    """
    Prices of requests whose own input is at most ``max_input_tokens`` (``None``: no upper bound).

    Prices are per ``RegionPrices.per_tokens`` tokens, in the region's currency, real-time.
    """

    max_input_tokens: int | None
    input: Decimal
    output: Decimal
    thinking_output: Decimal

    def label(self, lower: int) -> str:
        """The tier's input range as the billing pages write it: ``<=128K``, ``128K-256K`` or ``all``."""
        if self.max_input_tokens is None:
            return "all" if lower == 0 else f">{_k(lower)}"
        return f"<={_k(self.max_input_tokens)}" if lower == 0 else f"{_k(lower)}-{_k(self.max_input_tokens)}"


def _k(tokens: int) -> str:
    return f"{tokens // 1024}K" if tokens % 1024 == 0 else str(tokens)


@dataclass(frozen=True)
class ModelPrice:
    """One model's prices in one region, and what the estimate needs to know about it."""

    model: str
    kind: ModelKind
    tiers: tuple[PriceTier, ...]
    max_output_tokens: int | None = None
    source: str = ""
    note: str | None = None

    def tier_of(self, input_tokens: int) -> int:
        """Index of the tier a request of ``input_tokens`` input tokens is billed at (past all: the last)."""
        for i, tier in enumerate(self.tiers):
            if tier.max_input_tokens is None or input_tokens <= tier.max_input_tokens:
                return i
        return len(self.tiers) - 1

    def lower_bound(self, index: int) -> int:
        """The input tokens above which tier ``index`` starts."""
        return 0 if index == 0 else int(self.tiers[index - 1].max_input_tokens or 0)


@dataclass(frozen=True)
class RegionPrices:
    """
    One region's currency, price unit, batch model list and model prices.

    :param batch_models: Models the region offers in batch; ``None`` when the table does not restrict them.
    """

    region: str
    currency: str
    per_tokens: int
    batch_models: frozenset[str] | None
    models: Mapping[str, ModelPrice]

    def offers_in_batch(self, model: str) -> bool:
        """Whether ``model`` may be sent to this region's batch service."""
        return self.batch_models is None or model in self.batch_models


@dataclass(frozen=True)
class PriceTable:
    """The whole table: regions, the batch discount, where each price comes from, and thinking rules."""

    retrieved: str
    batch_discount: Decimal
    sources: Mapping[str, str]
    regions: Mapping[str, RegionPrices]
    thinks_by_default: tuple[re.Pattern[str], ...] = field(default=())
    always_thinks: tuple[re.Pattern[str], ...] = field(default=())
    overridden: tuple[str, ...] = ()
    """Models whose prices came from a connection or task override."""

    def region(self, name: str) -> RegionPrices:
        """Prices of region ``name``; an unknown region has no prices and no batch model list."""
        found = self.regions.get(name)
        if found is None:
            return RegionPrices(name, "?", 1_000_000, None, {})
        return found

    def model_thinks_by_default(self, model: str) -> bool:
        """A hybrid model that thinks unless ``enable_thinking`` is false (the qwen3.5 series, ...)."""
        return any(p.search(model) for p in self.thinks_by_default)

    def model_always_thinks(self, model: str) -> bool:
        """A thinking-only model (qwq, deepseek-r1, ``*-thinking-*``)."""
        return any(p.search(model) for p in self.always_thinks)

    def thinking(self, model: str, enable_thinking: bool | None) -> bool:
        """Whether a request to ``model`` with ``enable_thinking`` (``None``: unset) runs in thinking mode."""
        if self.model_always_thinks(model):
            return True
        if enable_thinking is None:
            return self.model_thinks_by_default(model)
        return enable_thinking

    def source_of(self, price: ModelPrice) -> str:
        """The page (and date) a model's price comes from."""
        if price.model in self.overridden:
            return "override (connection extra or task prices=)"
        return self.sources.get(price.source, price.source)


def _tier(raw: Mapping[str, Any]) -> PriceTier:
    limit = raw.get("max_input_tokens")
    return PriceTier(
        max_input_tokens=None if limit is None else int(limit),
        input=Decimal(str(raw["input"])),
        output=Decimal(str(raw.get("output", "0"))),
        thinking_output=Decimal(str(raw.get("thinking_output", raw.get("output", "0")))),
    )


def _model(name: str, raw: Mapping[str, Any]) -> ModelPrice:
    try:
        tiers = tuple(_tier(t) for t in raw["tiers"])
        if not tiers:
            raise ValueError("no tiers")
        return ModelPrice(
            model=name,
            kind=ModelKind(raw.get("kind", "chat")),
            tiers=tiers,
            max_output_tokens=None if raw.get("max_output_tokens") is None else int(raw["max_output_tokens"]),
            source=str(raw.get("source", "")),
            note=raw.get("note"),
        )
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise ValueError(
            f"price of model {name!r} is malformed ({exc!r}); give "
            '{"kind": "chat", "max_output_tokens": 32768, "tiers": [{"max_input_tokens": null, '
            '"input": "0.0008", "output": "0.002", "thinking_output": "0.008"}]}'
        ) from None


@cache
def _shipped() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("prices.json").read_text(encoding="utf-8")
    return json.loads(text)


def _as_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object of model -> price, got {type(value).__name__}")
    return value


def load_price_table(
    region: str, *, connection_prices: Any = None, task_prices: Any = None
) -> tuple[PriceTable, RegionPrices]:
    """
    The shipped table with the connection's and then the task's model prices laid over ``region``.

    :param region: The region the overrides apply to.
    :param connection_prices: The connection extra's ``prices`` (a mapping or JSON text), model -> price.
    :param task_prices: The task's ``prices=``, same shape.
    :return: The table and the chosen region's prices.
    :raises ValueError: if an override is malformed (the message shows the expected shape).
    """
    raw = _shipped()
    regions: dict[str, RegionPrices] = {}
    for name, data in raw["regions"].items():
        batch = data.get("batch_models")
        regions[name] = RegionPrices(
            region=name,
            currency=data["currency"],
            per_tokens=int(data["per_tokens"]),
            batch_models=None if batch is None else frozenset(batch),
            models={m: _model(m, p) for m, p in data["models"].items()},
        )
    overridden: list[str] = []
    for what, prices in (("connection extra 'prices'", connection_prices), ("task prices=", task_prices)):
        extra = {m: _model(m, p) for m, p in _as_mapping(prices, what).items()}
        if extra:
            base = regions.get(region) or RegionPrices(region, "?", 1_000_000, None, {})
            regions[region] = RegionPrices(
                base.region, base.currency, base.per_tokens, base.batch_models, {**base.models, **extra}
            )
            overridden.extend(extra)
    table = PriceTable(
        retrieved=raw["retrieved"],
        batch_discount=Decimal(raw["batch_discount"]),
        sources=raw["sources"],
        regions=regions,
        thinks_by_default=tuple(re.compile(p) for p in raw["thinks_by_default"]),
        always_thinks=tuple(re.compile(p) for p in raw["always_thinks"]),
        overridden=tuple(overridden),
    )
    return table, table.region(region)


_HOST_REGIONS = (("dashscope-intl.", "ap-southeast-1"), (".ap-southeast-1.", "ap-southeast-1"))


def region_of(extra: Mapping[str, Any] | None = None, base_url: str | None = None) -> str:
    """
    The price region of a connection: its ``region`` extra, else what its base URL names, else the default.

    :param extra: The connection's extra (plain or ``extra__dashscope__`` keys).
    :param base_url: A base URL to read the region from when the extra names none.
    """
    extra = extra or {}

    def get(name: str) -> Any:
        return extra.get(name) or extra.get(f"extra__dashscope__{name}") or None

    region = get("region")
    if region and region in _shipped()["regions"]:
        return str(region)
    host = urlsplit(str(base_url or get("base_url") or "")).hostname or ""
    for marker, name in _HOST_REGIONS:
        if marker in f".{host}.":
            return name
    return DEFAULT_REGION
