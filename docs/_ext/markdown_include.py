"""
``.. markdown-include:: path.md`` renders a small Markdown file (headings, paragraphs, lists, pipe
tables, fenced code) as reStructuredText, so pages such as the benchmark results live in one place
(``benchmarks/README.md``, next to the code that produces them) and the docs never copy them.

The leading ``# Title`` is dropped (the page has its own); other headings become rubrics (they
never join the page's section tree); relative links point at the repository on GitHub. Anything
fancier than that subset is a reason to simplify the Markdown.
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

REPO_URL = "https://github.com/airflow-provider-dashscope-batch/airflow-provider-dashscope-batch/blob/main/"

_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_TABLE_RULE = re.compile(r"^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?$")
_LIST_ITEM = re.compile(r"^([-*+]|\d+[.)])\s")


def _inline(text: str, base: str) -> str:
    """Translate Markdown inline markup (code, links) to reStructuredText."""
    out: list[str] = []
    pos = 0
    # Code spans first: their content is literal and must not be touched by the link rule.
    for match in _CODE.finditer(text):
        out.append(_links(text[pos : match.start()], base))
        out.append(f"``{match.group(1)}``")
        pos = match.end()
    out.append(_links(text[pos:], base))
    return "".join(out)


def _links(text: str, base: str) -> str:
    def repl(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if not re.match(r"^[a-z]+://", target) and not target.startswith("#"):
            target = REPO_URL + str(Path(base, target)).replace("\\", "/")
        elif target.startswith("#"):
            return label
        return f"`{label} <{target}>`__"

    return _LINK.sub(repl, text)


def _cells(row: str) -> list[str]:
    row = row.strip()
    row = row.removeprefix("|").removesuffix("|")
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row)]


def markdown_to_rst(markdown: str, base: str) -> list[str]:
    """
    Convert the supported Markdown subset to reStructuredText lines.

    :param markdown: The Markdown source.
    :param base: Directory of the Markdown file relative to the repository root, for relative links.
    """
    lines = markdown.splitlines()
    rst: list[str] = []

    def block() -> None:
        """Start a new block: reStructuredText needs a blank line before directives and lists."""
        if rst and rst[-1].strip():
            rst.append("")

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            language = stripped[3:].strip() or "text"
            block()
            rst += [f".. code-block:: {language}", ""]
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                rst.append("   " + lines[i])
                i += 1
            rst.append("")
            i += 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if heading:
            block()
            rst += [f".. rubric:: {_inline(heading.group(2), base)}", ""]
            i += 1
            continue
        if stripped.startswith("|") and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1].strip()):
            header = _cells(stripped)
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            block()
            rst += [".. list-table::", "   :header-rows: 1", ""]
            for row in [header, *rows]:
                row = (row + [""] * len(header))[: len(header)]
                rst.append(f"   * - {_inline(row[0], base) or '..'}")
                rst += [f"     - {_inline(cell, base) or '..'}" for cell in row[1:]]
            rst.append("")
            continue
        if not stripped or re.fullmatch(r"(-{3,}|\*{3,}|_{3,})", stripped):  # blank line, or a rule
            rst.append("")
            i += 1
            continue
        if stripped.startswith("<!--"):
            while i < len(lines) and "-->" not in lines[i]:
                i += 1
            i += 1
            continue
        if rst and rst[-1].strip():
            previous_is_list = bool(_LIST_ITEM.match(rst[-1])) or rst[-1].startswith(" ")
            if _LIST_ITEM.match(stripped) and not previous_is_list:
                block()  # a list right after a paragraph line
            elif previous_is_list and not _LIST_ITEM.match(stripped) and not line.startswith(" "):
                block()  # a paragraph right after a list
        text = line.rstrip()
        while text.count("`") % 2 and i + 1 < len(lines) and lines[i + 1].strip():
            i += 1  # a code span that wraps onto the next line: keep it on one line
            text += " " + lines[i].strip()
        rst.append(_inline(text, base))
        i += 1
    return rst


class MarkdownInclude(SphinxDirective):
    """Render a Markdown file (path relative to the current document) in place."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        rel, path = self.env.relfn2path(self.arguments[0], self.env.docname)
        self.env.note_dependency(rel)
        text = Path(path).read_text(encoding="utf-8")
        # The page has its own title: drop the Markdown file's leading "# Title".
        text = re.sub(r"\A\s*# [^\n]*\n", "", text)
        base = str(Path(path).resolve().parent.relative_to(Path(self.env.srcdir).resolve().parent))
        container = nodes.container()
        self.state.nested_parse(StringList(markdown_to_rst(text, base), path), self.content_offset, container)
        return container.children


def setup(app: Sphinx) -> dict[str, bool]:
    app.add_directive("markdown-include", MarkdownInclude)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
