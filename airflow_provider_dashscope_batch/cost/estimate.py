"""
The preflight cost estimate of a batch input, line by line, and the checks that stop a job before it is sent.

:class:`CostEstimator` reads one request line at a time (memory stays flat) and keeps per price tier
the requests, input tokens, output ceiling and expected output. Each request lands in the tier of its
own input tokens. The first line settles the model and thinking mode, so the checks that need only
those fail at once, before any later line is read:

* region availability: the region does not offer the model in batch (``ap-southeast-1``: qwen-max,
  qwen-plus, qwen-flash, qwen-turbo);
* the thinking-mode guard: the model thinks by default and ``enable_thinking`` is not set.

:meth:`CostPolicy.enforce` then applies the budget (``max_cost``, ``max_input_tokens``) to the total.
The estimate, the policy and the check errors are :mod:`~airflow_provider_dashscope_batch.cost.budget`'s.

Output: the ceiling is each request's ``max_tokens`` (``max_completion_tokens``), or the model's
documented maximum output where it has none; in thinking mode it adds ``thinking_budget`` (or the
maximum output again) for the reasoning. The expected figure is ``expected_output_tokens`` per request,
capped at its ceiling.

Sampling (with the tokenizer): the first million characters of prompt text are counted exactly, then
every request while the exactly counted text is under 2 % of all text seen, and any request whose
approximation reaches a quarter of the model's first tier boundary (so no request is put in the wrong
tier by an estimate). Other requests are priced by their ASCII and other characters at the tokens per
character of each class that a least-squares fit over the counted requests gives (the mix of English
and Chinese varies per request; one overall ratio would not follow it). ``CostEstimate.exact_requests``
says how many were counted exactly; the benchmark measures the total against a full count.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Literal

import msgspec

from airflow_provider_dashscope_batch.cost.budget import (
    APPROXIMATION_LABEL,
    BudgetExceededError,
    CostCheckError,
    CostEstimate,
    CostPolicy,
    RegionUnavailableError,
    ThinkingModeError,
    TierEstimate,
    UnpricedModelError,
    how_to_price,
)
from airflow_provider_dashscope_batch.cost.pricing import ModelPrice, PriceTable, RegionPrices
from airflow_provider_dashscope_batch.cost.tokens import (
    ASCII_RATE,
    MESSAGE_OVERHEAD,
    OTHER_RATE,
    REPLY_OVERHEAD,
    TokenizerUnavailable,
    char_classes,
    load_tokenizer,
)

__all__ = [
    "APPROXIMATION_LABEL",
    "BudgetExceededError",
    "CostCheckError",
    "CostEstimate",
    "CostEstimator",
    "CostPolicy",
    "RegionUnavailableError",
    "ThinkingModeError",
    "TierEstimate",
    "UnpricedModelError",
]

_EXACT_CHARS = 1_000_000
_SAMPLE_FRACTION = 0.02
_UNSET = msgspec.UNSET


class _Message(msgspec.Struct):
    role: Any = _UNSET
    content: Any = _UNSET


class _Body(msgspec.Struct):
    model: Any = _UNSET
    enable_thinking: Any = _UNSET
    messages: list[_Message] | msgspec.UnsetType = _UNSET
    input: Any = _UNSET
    max_tokens: Any = _UNSET
    max_completion_tokens: Any = _UNSET
    thinking_budget: Any = _UNSET
    tools: msgspec.Raw | msgspec.UnsetType = _UNSET


class _Line(msgspec.Struct):
    url: Any = _UNSET
    body: _Body | msgspec.UnsetType | None = _UNSET


_DECODER = msgspec.json.Decoder(_Line)


def _decode(line: bytes) -> _Line:
    try:
        return _DECODER.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):  # an unusual but valid shape: convert leniently
        obj = json.loads(line)
        body = obj.get("body") if isinstance(obj, dict) else None
        if not isinstance(body, dict):
            return _Line(url=obj.get("url", _UNSET) if isinstance(obj, dict) else _UNSET)
        messages = body.get("messages")
        tools = body.get("tools")
        return _Line(
            url=obj.get("url", _UNSET),
            body=_Body(
                model=body.get("model", _UNSET),
                enable_thinking=body.get("enable_thinking", _UNSET),
                messages=[
                    _Message(m.get("role", _UNSET), m.get("content", _UNSET))
                    if isinstance(m, dict)
                    else _Message()
                    for m in messages
                ]
                if isinstance(messages, list)
                else _UNSET,
                input=body.get("input", _UNSET),
                max_tokens=body.get("max_tokens", _UNSET),
                max_completion_tokens=body.get("max_completion_tokens", _UNSET),
                thinking_budget=body.get("thinking_budget", _UNSET),
                tools=_UNSET
                if tools is None
                else msgspec.Raw(json.dumps(tools, ensure_ascii=False).encode()),
            ),
        )


def _int(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


class _Tier:
    __slots__ = ("ceiling", "exact_input", "expected", "requests", "scaled_ascii", "scaled_other")

    def __init__(self) -> None:
        self.requests = 0
        self.exact_input = 0
        self.scaled_ascii = 0.0  # characters of requests not counted exactly: priced by the calibration
        self.scaled_other = 0.0
        self.ceiling = 0
        self.expected = 0


class CostEstimator:
    """
    Feed request lines (valid ones: run it behind validation), then :meth:`finish` for the estimate.

    :param table: The price table.
    :param region: The region's prices.
    :param policy: The task's policy (thinking guard, expected output).
    :param source: Name used in the estimate and messages.
    :param count_tokens: False to run only the first-line checks (no counting, no estimate).
    """

    def __init__(
        self,
        table: PriceTable,
        region: RegionPrices,
        policy: CostPolicy,
        *,
        source: str,
        count_tokens: bool = True,
    ) -> None:
        self.table = table
        self.region = region
        self.policy = policy
        self.source = source
        self.count_tokens = count_tokens
        self.warnings: list[str] = []
        self.model: str | None = None
        self.endpoint: str | None = None
        self.price: ModelPrice | None = None
        self.thinking: bool | None = None
        self.requests = 0
        self.exact_requests = 0
        self.media_requests = 0
        self._tiers: dict[int, _Tier] = {}
        self._seen_chars = 0
        self._exact_chars = 0
        # sums for least squares of exact tokens ~ a * ASCII chars + b * other chars over counted requests
        self._calibration = [0.0] * 5  # sum aa, ao, oo, a*exact, o*exact
        self._exact_above = float("inf")
        self._context: int | None = None  # the model's context per batch request, from the catalog
        self._encode = None
        self._roles: dict[str, int] = {}
        self.counting: Literal["tokenizer", "approximation"] = "approximation"
        if count_tokens:
            try:
                self._encode = load_tokenizer()
                self.counting = "tokenizer"
            except TokenizerUnavailable as exc:
                self.warnings.append(f"{exc}; token counts are approximate")

    # ------------------------------------------------------------------------------------- checks
    def _first(self, line: _Line, body: _Body) -> None:
        model = body.model if isinstance(body.model, str) else None
        self.model, self.endpoint = model, line.url if isinstance(line.url, str) else None
        if model is None:
            return
        explicit = body.enable_thinking if isinstance(body.enable_thinking, bool) else None
        entry = self.table.catalog.get(model)
        if entry is not None and not entry.batchable_in(self.region.region):
            offered = ", ".join(self.region.batch_models)
            raise RegionUnavailableError(
                f"{self.source}: model {model!r} does not run in batch in region {self.region.region} (the "
                f"model catalog lists it for {', '.join(sorted(entry.regions or ()))}; source: "
                f"{entry.cite()}); nothing was uploaded. Use a connection to one of those regions, or a "
                f"model this region offers ({offered}). If your account runs it here, add the region to the "
                "model's regions in the connection extra 'models'."
            )
        if entry is not None and entry.context_tokens is not None:
            self._context = entry.context_tokens
        if explicit is None and self.table.model_thinks_by_default(model):
            message = (
                f"{self.source}: model {model!r} thinks by default and the requests do not set "
                "enable_thinking, so every request would think (more output tokens, billed at the "
                'thinking output price). Set "enable_thinking": false (or true, if you want thinking) '
                "in every request body"
            )
            if self.policy.on_default_thinking == "error":
                raise ThinkingModeError(
                    f"{message}; nothing was uploaded. Or pass on_default_thinking='warn' to send as is."
                )
            self.warnings.append(message)
        self.thinking = self.table.thinking(model, explicit)
        self.price = self.region.models.get(model)
        if self.price is None:
            self.warnings.append(
                f"model {model!r} is unpriced in region {self.region.region}: tokens are counted, cost is "
                f"not. {how_to_price(model, self.region.region)}"
            )
        elif len(self.price.tiers) > 1 and self.price.tiers[0].max_input_tokens:
            self._exact_above = self.price.tiers[0].max_input_tokens / 4

    # -------------------------------------------------------------------------------------- lines
    def feed(self, line: bytes) -> None:
        """Add one request line (valid JSON with a ``body``; validation has checked it)."""
        if not self.count_tokens and self.requests:
            return
        parsed = _decode(line)
        body = parsed.body if isinstance(parsed.body, _Body) else _Body()
        if self.requests == 0:
            self._first(parsed, body)
        self.requests += 1
        if not self.count_tokens:
            return
        texts, fixed, media = self._texts(body)
        self.media_requests += media
        tokens, split = self._count(texts, fixed)
        price = self.price
        guess = tokens if split is None else tokens + split[0] * ASCII_RATE + split[1] * OTHER_RATE
        index = price.tier_of(int(guess)) if price is not None else 0
        if self._context is not None and guess > self._context:
            self.warnings.append(
                f"{self.source}: request {self.requests} has about {int(guess):,} input tokens, over "
                f"{self.model}'s context of {self._context:,} tokens per batch request (model catalog); "
                "the service fails it"
            )
            self._context = None  # once
        tier = self._tiers.get(index)
        if tier is None:
            tier = self._tiers[index] = _Tier()
        tier.requests += 1
        tier.exact_input += tokens  # everything, or the fixed template overhead of a scaled request
        if split is not None:
            tier.scaled_ascii += split[0]
            tier.scaled_other += split[1]
        ceiling = self._ceiling(body)
        tier.ceiling += ceiling
        if self.policy.expected_output_tokens is not None:
            tier.expected += min(self.policy.expected_output_tokens, ceiling)

    def _texts(self, body: _Body) -> tuple[list[str], int, int]:
        """The texts to count, the fixed template tokens not in them, and 1 if media parts were skipped."""
        texts: list[str] = []
        media = 0
        fixed = 0
        if body.messages is not _UNSET:
            fixed = REPLY_OVERHEAD
            for message in body.messages:
                fixed += MESSAGE_OVERHEAD + self._role_tokens(message.role)
                content = message.content
                if isinstance(content, str):
                    texts.append(content)
                elif isinstance(content, list):
                    for part in content:
                        if isinstance(part, dict):
                            text = part.get("text")
                            if isinstance(text, str):
                                texts.append(text)
                            elif part.get("type") not in (None, "text"):
                                media = 1
            if body.tools is not _UNSET:
                texts.append(bytes(body.tools).decode("utf-8", "replace"))
        elif isinstance(body.input, str):
            texts.append(body.input)
        elif isinstance(body.input, list):
            texts.extend(t for t in body.input if isinstance(t, str))
        return texts, fixed, media

    def _role_tokens(self, role: Any) -> int:
        if not isinstance(role, str):
            return 0
        tokens = self._roles.get(role)
        if tokens is None:
            tokens = self._roles[role] = self._encode(role) if self._encode is not None else 1
        return tokens

    def _count(self, texts: list[str], fixed: int) -> tuple[int, tuple[float, float] | None]:
        """Tokens of one request: ``(exact, None)``, or ``(fixed, (ASCII chars, other chars))`` to scale."""
        ascii_chars = other = 0.0
        for text in texts:
            a, o = char_classes(text)
            ascii_chars += a
            other += o
        encode = self._encode
        if encode is None:
            return fixed, (ascii_chars, other)
        chars = ascii_chars + other
        self._seen_chars += chars
        if (
            self._seen_chars <= _EXACT_CHARS
            or ascii_chars * ASCII_RATE + other * OTHER_RATE >= self._exact_above
            or self._exact_chars < _SAMPLE_FRACTION * self._seen_chars
        ):
            exact = sum(encode(t) for t in texts)
            self._exact_chars += chars
            c = self._calibration
            c[0] += ascii_chars * ascii_chars
            c[1] += ascii_chars * other
            c[2] += other * other
            c[3] += ascii_chars * exact
            c[4] += other * exact
            self.exact_requests += 1
            return fixed + exact, None
        return fixed, (ascii_chars, other)

    def _rates(self) -> tuple[float, float]:
        """Tokens per ASCII and per other character, fitted on the counted requests (else the fallback's)."""
        aa, ao, oo, ay, oy = self._calibration
        det = aa * oo - ao * ao
        if self.counting == "tokenizer" and det > 1e-9 * max(aa * oo, 1.0):
            a, o = (ay * oo - oy * ao) / det, (oy * aa - ay * ao) / det
            if a > 0 and o > 0:
                return a, o
        if self.counting == "tokenizer" and (aa or oo):  # one character class (or collinear): one ratio
            approx = (
                aa * ASCII_RATE * ASCII_RATE + oo * OTHER_RATE * OTHER_RATE + 2 * ao * ASCII_RATE * OTHER_RATE
            )
            ratio = (ay * ASCII_RATE + oy * OTHER_RATE) / approx if approx else 1.0
            return ASCII_RATE * ratio, OTHER_RATE * ratio
        return ASCII_RATE, OTHER_RATE

    def _ceiling(self, body: _Body) -> int:
        if body.messages is _UNSET:  # embeddings: no output tokens
            return 0
        cap = _int(body.max_tokens)
        if cap is None:
            cap = _int(body.max_completion_tokens)
        maximum = self.price.max_output_tokens if self.price is not None else None
        if cap is None:
            cap = maximum or 0
        if self.thinking:
            cap += _int(body.thinking_budget) or maximum or 0
        return cap

    # ------------------------------------------------------------------------------------- result
    def finish(self) -> CostEstimate | None:
        """The estimate of every line fed (``None`` when counting was off)."""
        if not self.count_tokens:
            return None
        ascii_rate, other_rate = self._rates()
        price = self.price
        region = self.region
        discount = self.table.batch_discount
        expected_on = self.policy.expected_output_tokens is not None
        tiers: list[TierEstimate] = []
        totals = [0, 0, 0, Decimal(0), Decimal(0)]
        for index in sorted(self._tiers):
            t = self._tiers[index]
            input_tokens = t.exact_input + round(t.scaled_ascii * ascii_rate + t.scaled_other * other_rate)
            if price is not None:
                tier = price.tiers[index]
                in_price, out_price = tier.input, tier.thinking_output if self.thinking else tier.output
                scale = discount / region.per_tokens
                cost_ceiling = (input_tokens * in_price + t.ceiling * out_price) * scale
                cost_expected = (
                    (input_tokens * in_price + t.expected * out_price) * scale if expected_on else None
                )
                label = tier.label(price.lower_bound(index))
            else:
                in_price = out_price = cost_ceiling = cost_expected = None
                label = "all"
            tiers.append(
                TierEstimate(
                    tier=label,
                    requests=t.requests,
                    input_tokens=input_tokens,
                    output_ceiling_tokens=t.ceiling,
                    expected_output_tokens=t.expected if expected_on else None,
                    input_price=in_price,
                    output_price=out_price,
                    cost_ceiling=_round(cost_ceiling),
                    cost_expected=_round(cost_expected),
                )
            )
            totals[0] += input_tokens
            totals[1] += t.ceiling
            totals[2] += t.expected
            if cost_ceiling is not None:
                totals[3] += cost_ceiling
            if cost_expected is not None:
                totals[4] += cost_expected
        priced = price is not None
        return CostEstimate(
            source=self.source,
            model=self.model,
            endpoint=self.endpoint,
            region=region.region,
            currency=region.currency,
            thinking=self.thinking,
            counting=self.counting,
            requests=self.requests,
            exact_requests=self.exact_requests,
            input_tokens=totals[0],
            output_ceiling_tokens=totals[1],
            expected_output_tokens=totals[2] if expected_on else None,
            unestimated_media_requests=self.media_requests,
            tiers=tiers,
            cost_ceiling=_round(totals[3]) if priced else None,
            cost_expected=_round(totals[4]) if priced and expected_on else None,
            batch_discount=discount,
            price_source=None
            if price is None
            else self.table.source_of(price) + (f"; note: {price.note}" if price.note else ""),
            price_table_date=self.table.retrieved,
            warnings=list(self.warnings),
        )


def _round(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(Decimal("0.000001"))
