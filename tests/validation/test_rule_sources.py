"""The docs name the public source of every validation rule, and list every catalog model with its pages."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import airflow_provider_dashscope_batch as package
from airflow_provider_dashscope_batch.catalog import shipped_catalog

ROOT = Path(package.__file__).parent
DOCS = ROOT.parent / "docs"


def test_every_validation_rule_names_its_source_in_the_docs():
    docs = (DOCS / "errors.rst").read_text()
    table = docs[docs.index("Where each validation rule comes from") :]
    codes: set[str] = set()
    for module in ("validation/rules.py", "validation/bodies.py"):
        text = ast.get_docstring(ast.parse((ROOT / module).read_text())) or ""
        codes |= set(re.findall(r"^``([a-z_]+)``", text, re.M))
    codes -= {"model_not_found"}  # service-side only
    assert len(codes) > 20
    assert sorted(c for c in codes if f"   * - ``{c}``" not in table) == []
    warnings = set(re.findall(r"   \* - ``([a-z_]+)``\n     - \*\*warning\*\*", table))
    assert warnings == {
        "custom_id_too_long",
        "unknown_model",
        "invalid_encoding_format",
        "unsupported_body_field",
    }


def test_the_models_page_lists_every_catalog_model_with_its_sources():
    page = (DOCS / "models.rst").read_text()
    for name, entry in shipped_catalog().models.items():
        row = page[page.index(f"   * - ``{name}``\n") :].split("\n   * - ", 1)[0]
        assert all(f"<{s.url}>`__ ({s.read})" in row for s in entry.sources), name
