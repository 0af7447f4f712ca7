"""
Resolve Python cross-references to this package that Sphinx's own lookup misses:

* short names, e.g. ``:class:`DashScopeBatchTrigger``` in the sensor's docstring (Airflow-style
  docstrings name sibling classes without their module; Sphinx only looks in the current module);
* re-exported names, e.g. ``airflow_provider_dashscope_batch.client.DashScopeClient``, documented where
  it is defined (``client.sync``).

A reference resolves only when exactly one documented object of the package matches, so nitpicky mode
still rejects typos and ambiguous names.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util.nodes import make_refnode

PACKAGE = "airflow_provider_dashscope_batch"


def _candidates(objects: dict, target: str) -> list[str]:
    parts = target.split(".")
    if parts[0] != PACKAGE:
        return [n for n in objects if n.startswith(PACKAGE + ".") and n.endswith("." + target)]
    # A re-export: the object is defined in a submodule of some prefix of the target.
    for cut in range(len(parts) - 1, 0, -1):
        prefix, tail = ".".join(parts[:cut]) + ".", "." + ".".join(parts[cut:])
        found = [n for n in objects if n.startswith(prefix) and n.endswith(tail)]
        if found:
            return found
    return []


def _resolve(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    domain = env.get_domain("py")
    objects = {name: obj for name, obj in domain.objects.items() if not obj.aliased}
    matches = _candidates(objects, target)
    if len(matches) != 1:
        return None
    obj = objects[matches[0]]
    return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, matches[0])


def setup(app: Sphinx) -> dict[str, bool]:
    app.connect("missing-reference", _resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
