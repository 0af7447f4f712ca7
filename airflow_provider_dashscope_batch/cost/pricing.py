"""
Prices per region and model, read from the model catalog, tiered by a request's own input tokens.

The prices ship in the model catalog (:mod:`airflow_provider_dashscope_batch.catalog`), with the page each
comes from and the date it was read; a connection extends or overrides them (extra ``models``), a task lays
its own over the connection's region (``prices=``). :func:`load_price_table` gives the result.

Arithmetic is in :class:`~decimal.Decimal`: a request costs
``(input_tokens * tier.input + output_tokens * tier.output) / per_tokens * batch_discount``, with the
tier picked by that request's input tokens and ``tier.thinking_output`` for a request in thinking
mode.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_dashscope_batch.catalog import (
    EMBEDDINGS_ENDPOINT,
    Catalog,
    ModelEntry,
    PriceTier,
    price_tiers,
    shipped_catalog,
)
from airflow_provider_dashscope_batch.regions import DEFAULT_REGION

__all__ = [
    "ModelKind",
    "ModelPrice",
    "PriceTable",
    "RegionPrices",
    "load_price_table",
    "region_of",
]

_TASK_OVERRIDE = "override (task prices=)"


class ModelKind(StrEnum):
    """How a model's requests are counted: chat messages, or embedding inputs."""

    CHAT = "chat"
    EMBEDDING = "embedding"


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
    """One region's currency, price unit and model prices, and the catalog that says what runs there."""

    region: str
    currency: str
    per_tokens: int
    models: Mapping[str, ModelPrice]
    catalog: Catalog

    def offers_in_batch(self, model: str) -> bool:
        """Whether ``model`` may run in this region's batch service (true for a model not in the catalog)."""
        entry = self.catalog.get(model)
        return entry is None or entry.batchable_in(self.region)

    @property
    def batch_models(self) -> list[str]:
        """The models the catalog lists for batch in this region."""
        return self.catalog.batchable(self.region)


@dataclass(frozen=True)
class PriceTable:
    """The catalog's prices of every region, the batch discount, and which prices a task overrode."""

    catalog: Catalog
    regions: Mapping[str, RegionPrices]
    overridden: tuple[str, ...] = ()
    """Models whose prices came from the task's ``prices=``."""

    @property
    def retrieved(self) -> str:
        """When the catalog's pages were read."""
        return self.catalog.read

    @property
    def batch_discount(self) -> Decimal:
        """The batch price as a fraction of the real-time price."""
        return self.catalog.batch_discount

    def region(self, name: str) -> RegionPrices:
        """Prices of region ``name``; an unknown region has no prices."""
        found = self.regions.get(name)
        if found is None:
            return RegionPrices(name, "?", 1_000_000, {}, self.catalog)
        return found

    def model_thinks_by_default(self, model: str) -> bool:
        """A model the catalog says thinks unless ``enable_thinking`` is false."""
        entry = self.catalog.get(model)
        return entry is not None and entry.thinks(None) and not self.model_always_thinks(model)

    def model_always_thinks(self, model: str) -> bool:
        """A model the catalog says is thinking-only."""
        entry = self.catalog.get(model)
        return entry is not None and entry.thinks(False)

    def thinking(self, model: str, enable_thinking: bool | None) -> bool:
        """Whether a request to ``model`` with ``enable_thinking`` (``None``: unset) runs in thinking mode."""
        entry = self.catalog.get(model)
        if entry is None:
            return bool(enable_thinking)
        return entry.thinks(enable_thinking)

    def source_of(self, price: ModelPrice) -> str:
        """The page (and date) a model's price comes from."""
        if price.model in self.overridden:
            return _TASK_OVERRIDE
        return price.source


def _kind(entry: ModelEntry | None, raw: Mapping[str, Any] | None = None) -> ModelKind:
    if raw is not None and "kind" in raw:
        return ModelKind(raw["kind"])
    return (
        ModelKind.EMBEDDING if entry is not None and entry.endpoint == EMBEDDINGS_ENDPOINT else ModelKind.CHAT
    )


def _entry_price(entry: ModelEntry, region: str) -> ModelPrice:
    note = entry.note
    if entry.max_output_tokens is None and _kind(entry) is ModelKind.CHAT:
        note = (
            note + " " if note else ""
        ) + "No documented maximum output: give max_tokens to bound the estimate."
    return ModelPrice(
        model=entry.name,
        kind=_kind(entry),
        tiers=entry.prices[region],
        max_output_tokens=entry.max_output_tokens,
        source=entry.cite(),
        note=note,
    )


def _task_price(name: str, raw: Any, entry: ModelEntry | None) -> ModelPrice:
    try:
        if not isinstance(raw, Mapping):
            raise TypeError("not an object")
        limit = raw.get("max_output_tokens", entry.max_output_tokens if entry is not None else None)
        return ModelPrice(
            model=name,
            kind=_kind(entry, raw),
            tiers=price_tiers(raw["tiers"]),
            max_output_tokens=None if limit is None else int(limit),
            source=str(raw.get("source", "")),
            note=raw.get("note"),
        )
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise ValueError(
            f"price of model {name!r} is malformed ({exc!r}); give "
            '{"max_output_tokens": 32768, "tiers": [{"max_input_tokens": null, '
            '"input": "0.0008", "output": "0.002", "thinking_output": "0.008"}]}'
        ) from None


def load_price_table(
    region: str, *, catalog: Catalog | None = None, task_prices: Any = None
) -> tuple[PriceTable, RegionPrices]:
    """
    The catalog's prices, with the task's model prices laid over ``region``.

    :param region: The region the task's prices apply to.
    :param catalog: The model catalog (default: the shipped one; a connection's comes from
        :func:`~airflow_provider_dashscope_batch.catalog.connection_catalog`).
    :param task_prices: The task's ``prices=`` (a mapping or JSON text), model -> ``{"tiers": [...]}``, in
        the region's currency per its price unit.
    :return: The table and the chosen region's prices.
    :raises ValueError: if an override is malformed (the message shows the expected shape).
    """
    catalog = catalog or shipped_catalog()
    names = set(catalog.regions) | {region}
    regions: dict[str, RegionPrices] = {}
    for name in sorted(names):
        info = catalog.region(name)
        models = {m: _entry_price(e, name) for m, e in catalog.models.items() if name in e.prices}
        regions[name] = RegionPrices(name, info.currency, info.per_tokens, models, catalog)
    extra = {m: _task_price(m, p, catalog.get(m)) for m, p in _task_mapping(task_prices).items()}
    if extra:
        base = regions[region]
        regions[region] = RegionPrices(
            base.region, base.currency, base.per_tokens, {**base.models, **extra}, catalog
        )
    table = PriceTable(catalog=catalog, regions=regions, overridden=tuple(extra))
    return table, table.region(region)


def _task_mapping(value: Any) -> Mapping[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"task prices= is not valid JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"task prices= must be a JSON object of model -> price, got {type(value).__name__}")
    return value


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
    if region and region in shipped_catalog().regions:
        return str(region)
    host = urlsplit(str(base_url or get("base_url") or "")).hostname or ""
    for marker, name in _HOST_REGIONS:
        if marker in f".{host}.":
            return name
    return DEFAULT_REGION
