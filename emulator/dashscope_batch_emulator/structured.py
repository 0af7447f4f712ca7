"""
The emulator's answers to structured-output requests (``response_format``).

``json_schema`` is answered with a minimal instance of the requested schema (required properties
only, each value the smallest that satisfies its constraints), ``json_object`` with a JSON object;
any other request gets ``None`` and keeps the model's usual text.
"""

from __future__ import annotations

import json
from typing import Any

#: The text every generated string starts from (cut or padded to the schema's length bounds).
TEXT = "emulated"

_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "duration": "PT0S",
    "email": "emulated@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}


def structured_answer(body: dict[str, Any]) -> str | None:
    """The message content answering ``body``'s ``response_format``, or ``None`` when it asks for text."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        value = minimal_instance(schema if isinstance(schema, dict) else {})
        return json.dumps(value, ensure_ascii=False)
    if kind == "json_object":
        return json.dumps({"result": TEXT})
    return None


def minimal_instance(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """
    A small value valid against ``schema`` (the JSON Schema subset Pydantic generates).

    Handles ``$ref`` into ``$defs``, ``const``, ``enum``, ``anyOf``/``oneOf`` (first non-null branch),
    ``allOf``, objects (required properties), arrays (``minItems``), strings (length bounds and common
    formats), numbers (bounds, exclusive bounds, ``multipleOf``), booleans and null.
    """
    defs = {**(defs or {}), **schema.get("$defs", {}), **schema.get("definitions", {})}
    if "$ref" in schema:
        target = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
        return minimal_instance(target, defs)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf"):
        if branches := schema.get(combinator):
            preferred = [b for b in branches if b.get("type") != "null"] or branches
            return minimal_instance(preferred[0], defs)
    if branches := schema.get("allOf"):
        merged: dict[str, Any] = {}
        for branch in branches:
            merged.update(defs.get(branch["$ref"].rsplit("/", 1)[-1], {}) if "$ref" in branch else branch)
        return minimal_instance(merged, defs)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: minimal_instance(properties.get(name, {}), defs) for name in schema.get("required", [])}
    if kind == "array":
        item = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        prefix = schema.get("prefixItems") or []
        values = [minimal_instance(p, defs) for p in prefix]
        missing = max(schema.get("minItems", 0) - len(values), 0)
        values += [minimal_instance(item, defs) for _ in range(missing)]
        return values
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return _string(schema)


def _number(schema: dict[str, Any], *, integer: bool) -> int | float:
    low = schema.get("minimum")
    if "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + (1 if integer else 1e-6)
    high = schema.get("maximum")
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - (1 if integer else 1e-6)
    value: int | float = 0 if low is None else low
    if high is not None and value > high:
        value = high
    step = schema.get("multipleOf")
    if step:
        value = -(-value // step) * step
    return int(-(-value // 1)) if integer else float(value)


def _string(schema: dict[str, Any]) -> str:
    value = _FORMATS.get(schema.get("format", ""), TEXT)
    minimum, maximum = schema.get("minLength", 0), schema.get("maxLength")
    if len(value) < minimum:
        value += "x" * (minimum - len(value))
    if maximum is not None:
        value = value[:maximum]
    return value
