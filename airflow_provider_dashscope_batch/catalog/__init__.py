"""
The model catalog: what the provider knows of each model the batch service takes, as data.

One entry per model in ``models.json`` beside this module, each with the public pages it comes from
and the date they were read: the regions where the model runs in batch, its endpoint, what it reads
(images, video), its thinking mode, its context and input limits, its embedding limits and its
real-time price tiers per region. Validation
(:mod:`~airflow_provider_dashscope_batch.validation.bodies`), the CSV builder's packing
(:mod:`~airflow_provider_dashscope_batch.validation.builder`), the thinking guard and the cost
estimate (:mod:`~airflow_provider_dashscope_batch.cost`) all read it; nothing else encodes model
knowledge.

A model the catalog does not know is not refused: what depends on it is left unchecked, with a warning.
A connection extends or overrides the catalog without a release through its extra ``models`` (a JSON
object of model name -> entry fields, laid over the shipped entry); see ``docs/models.rst``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "CHAT_ENDPOINT",
    "CONNECTION_EXTRA",
    "EMBEDDINGS_ENDPOINT",
    "OVERRIDE_SOURCE",
    "Catalog",
    "EmbeddingLimits",
    "Modality",
    "ModelEntry",
    "PriceTier",
    "Region",
    "Source",
    "Thinking",
    "connection_catalog",
    "price_tiers",
    "shipped_catalog",
]

CHAT_ENDPOINT = "/v1/chat/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"
#: The key of the connection extra that extends or overrides the catalog.
CONNECTION_EXTRA = "models"


class Thinking(StrEnum):
    """
    A model's thinking mode.

    ``none``: thinks only when a request sets ``enable_thinking: true`` (where the model supports it);
    ``by_default``: thinks unless a request sets ``enable_thinking: false``; ``always``: a thinking-only
    model.
    """

    NONE = "none"
    BY_DEFAULT = "by_default"
    ALWAYS = "always"


class Modality(StrEnum):
    """What a model reads in a request."""

    TEXT = "text"
    IMAGE = "image"
    VIDEO = "video"


@dataclass(frozen=True)
class Source:
    """A public page a catalog fact comes from, and when it was read."""

    key: str
    url: str
    title: str
    read: str

    def cite(self) -> str:
        """The page as the docs and the estimate cite it."""
        return f"{self.url} ({self.title}; read {self.read})"


OVERRIDE_SOURCE = Source("override", "", "connection extra 'models'", "")


@dataclass(frozen=True)
class PriceTier:
    """
    Prices of requests whose own input is at most ``max_input_tokens`` (``None``: no upper bound).

    Real-time prices per :attr:`Region.per_tokens` tokens, in the region's currency.
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
class EmbeddingLimits:
    """
    Per-request limits of an embedding model.

    :param max_inputs: Texts one request's ``input`` may hold.
    :param dimensions: The ``dimensions`` values the model documents (empty: the parameter is not taken).
    :param default_dimensions: The vector length without ``dimensions``.
    """

    max_inputs: int
    dimensions: tuple[int, ...]
    default_dimensions: int


@dataclass(frozen=True)
class Region:
    """A region's price unit and whether its batches can notify their completion."""

    name: str
    currency: str
    per_tokens: int
    completion_notifications: bool
    sources: tuple[Source, ...] = ()


@dataclass(frozen=True)
class ModelEntry:
    """
    What the catalog knows of one model.

    :param regions: Regions where the model runs in batch (``None``: not stated, not checked).
    :param context_tokens: Tokens of input plus output one batch request may use, if stated.
    :param max_input_tokens: Input tokens one request may send, if stated.
    :param max_output_tokens: Output tokens a request gets without ``max_tokens``, if stated.
    :param prices: Real-time price tiers per region (a region not listed: unpriced there).
    """

    name: str
    endpoint: str = CHAT_ENDPOINT
    regions: frozenset[str] | None = None
    modalities: frozenset[Modality] = frozenset({Modality.TEXT})
    thinking: Thinking = Thinking.NONE
    context_tokens: int | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    embedding: EmbeddingLimits | None = None
    prices: Mapping[str, tuple[PriceTier, ...]] = field(default_factory=dict)
    sources: tuple[Source, ...] = ()
    note: str | None = None

    @property
    def reads_images(self) -> bool:
        """Whether requests may carry image (or, with :attr:`reads_video`, video) parts."""
        return Modality.IMAGE in self.modalities

    @property
    def reads_video(self) -> bool:
        """Whether requests may carry video parts."""
        return Modality.VIDEO in self.modalities

    def batchable_in(self, region: str) -> bool:
        """Whether the model runs in batch in ``region`` (true where the catalog does not say)."""
        return self.regions is None or region in self.regions

    def thinks(self, enable_thinking: bool | None) -> bool:
        """Whether a request with ``enable_thinking`` (``None``: unset) runs in thinking mode."""
        if self.thinking is Thinking.ALWAYS:
            return True
        if enable_thinking is None:
            return self.thinking is Thinking.BY_DEFAULT
        return enable_thinking

    def cite(self) -> str:
        """The pages this entry comes from."""
        return "; ".join(s.cite() for s in self.sources) or "no source given"


@dataclass(frozen=True)
class Catalog:
    """The models and regions, the batch discount, and which entries a connection overrode."""

    models: Mapping[str, ModelEntry]
    regions: Mapping[str, Region]
    batch_discount: Decimal
    read: str
    sources: Mapping[str, Source]
    overridden: frozenset[str] = frozenset()

    def get(self, model: str) -> ModelEntry | None:
        """The entry of ``model``, ``None`` for a model the catalog does not know."""
        return self.models.get(model)

    def region(self, name: str) -> Region:
        """Region ``name``; one the catalog does not know has no currency and no notifications."""
        return self.regions.get(name) or Region(name, "?", 1_000_000, False)

    def batchable(self, region: str) -> list[str]:
        """The models the catalog lists for batch in ``region``."""
        return sorted(m for m, e in self.models.items() if e.regions is not None and region in e.regions)

    def with_overrides(self, raw: Any, what: str = "connection extra 'models'") -> Catalog:
        """
        This catalog with ``raw`` (model name -> entry fields, a mapping or JSON text) laid over it.

        A field given replaces the shipped one; ``prices`` is merged per region. A new model takes the
        defaults of :class:`ModelEntry` for the fields it leaves out (chat endpoint, text only, no
        thinking, any region).

        :raises ValueError: naming the model and the field that is malformed.
        """
        given = _as_mapping(raw, what)
        if not given:
            return self
        models = dict(self.models)
        for name, fields in given.items():
            if not isinstance(fields, Mapping):
                raise ValueError(f"{what}: model {name!r} must be a JSON object of entry fields")
            base = models.get(name) or ModelEntry(name)
            try:
                models[name] = _overlay(base, fields, self.sources)
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                raise ValueError(
                    f"{what}: model {name!r} is malformed ({exc}); e.g. "
                    '{"regions": ["cn-beijing"], "thinking": "none", "prices": {"cn-beijing": '
                    '[{"max_input_tokens": null, "input": "0.0008", "output": "0.002"}]}}'
                ) from None
        return replace(self, models=models, overridden=self.overridden | frozenset(given))


def _as_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object of model -> entry, got {type(value).__name__}")
    return value


def price_tiers(raw: Any) -> tuple[PriceTier, ...]:
    """Price tiers from their JSON form (a list of ``{max_input_tokens, input, output, thinking_output}``)."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("prices of a region must be a non-empty list of tiers")
    tiers = []
    for tier in raw:
        limit = tier.get("max_input_tokens")
        output = Decimal(str(tier.get("output", "0")))
        tiers.append(
            PriceTier(
                max_input_tokens=None if limit is None else int(limit),
                input=Decimal(str(tier["input"])),
                output=output,
                thinking_output=Decimal(str(tier["thinking_output"]))
                if tier.get("thinking_output") is not None
                else output,
            )
        )
    return tuple(tiers)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _overlay(base: ModelEntry, raw: Mapping[str, Any], sources: Mapping[str, Source]) -> ModelEntry:
    """``base`` with the fields of ``raw`` (its JSON form) replacing its own."""
    changes: dict[str, Any] = {}
    unknown = set(raw) - {
        "endpoint",
        "regions",
        "modalities",
        "thinking",
        "context_tokens",
        "max_input_tokens",
        "max_output_tokens",
        "embedding",
        "prices",
        "sources",
        "note",
    }
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
    if "endpoint" in raw:
        changes["endpoint"] = str(raw["endpoint"])
    if "regions" in raw:
        regions = raw["regions"]
        changes["regions"] = None if regions is None else frozenset(str(r) for r in regions)
    if "modalities" in raw:
        changes["modalities"] = frozenset(Modality(m) for m in raw["modalities"]) | {Modality.TEXT}
    if "thinking" in raw:
        changes["thinking"] = Thinking(raw["thinking"])
    for key in ("context_tokens", "max_input_tokens", "max_output_tokens"):
        if key in raw:
            changes[key] = _optional_int(raw[key])
    if "embedding" in raw:
        e = raw["embedding"]
        changes["embedding"] = (
            None
            if e is None
            else EmbeddingLimits(
                int(e["max_inputs"]),
                tuple(int(d) for d in e.get("dimensions", ())),
                int(e["default_dimensions"]),
            )
        )
    if "prices" in raw:
        if not isinstance(raw["prices"], Mapping):
            raise ValueError("prices must be a JSON object of region -> tiers")
        changes["prices"] = {**base.prices, **{r: price_tiers(t) for r, t in raw["prices"].items()}}
    if "sources" in raw:
        changes["sources"] = tuple(sources[s] for s in raw["sources"])
    elif base.sources and changes:
        changes["sources"] = (*base.sources, OVERRIDE_SOURCE)
    elif not base.sources:
        changes["sources"] = (OVERRIDE_SOURCE,)
    if "note" in raw:
        changes["note"] = raw["note"]
    return replace(base, **changes)


@cache
def shipped_catalog() -> Catalog:
    """The catalog that ships in the package (``models.json``)."""
    raw = json.loads(resources.files(__package__).joinpath("models.json").read_text(encoding="utf-8"))
    sources = {k: Source(k, s["url"], s["title"], s["read"]) for k, s in raw["sources"].items()}
    regions = {
        name: Region(
            name,
            r["currency"],
            int(r["per_tokens"]),
            bool(r["completion_notifications"]),
            tuple(sources[s] for s in r.get("sources", ())),
        )
        for name, r in raw["regions"].items()
    }
    models = {name: _overlay(ModelEntry(name), fields, sources) for name, fields in raw["models"].items()}
    return Catalog(models, regions, Decimal(raw["batch_discount"]), raw["read"], sources)


def connection_catalog(extra: Mapping[str, Any] | None) -> Catalog:
    """
    The shipped catalog with a connection extra's ``models`` laid over it.

    :raises ValueError: if the extra's ``models`` is malformed (the message shows the expected shape).
    """
    extra = extra or {}
    raw = extra.get(CONNECTION_EXTRA) or extra.get(f"extra__dashscope__{CONNECTION_EXTRA}")
    return shipped_catalog().with_overrides(raw)
