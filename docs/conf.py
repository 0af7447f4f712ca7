"""Sphinx configuration for the airflow-provider-dashscope-batch documentation."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# autodoc imports the provider, which imports Airflow: give Airflow a throw-away home inside the build
# directory, so building the docs never reads or writes the user's ~/airflow.
AIRFLOW_HOME = DOCS / "_build" / "airflow-home"
AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

from airflow_provider_dashscope_batch import __version__  # noqa: E402

project = "DashScope Batch provider for Apache Airflow"
author = "airflow-provider-dashscope-batch developers"
copyright = "2026, airflow-provider-dashscope-batch developers"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "markdown_include",
    "short_refs",
]
exclude_patterns = ["_build", "screenshots/README*"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
default_role = "py:obj"
nitpicky = True

html_theme = "furo"
html_title = f"DashScope Batch provider {release}"
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_inherit_docstrings = False
autodoc_preserve_defaults = True

# Type hints and docstrings name classes of Airflow, httpx, pydantic and the standard library. The docs
# are built offline (no intersphinx inventories), so those references cannot resolve and are accepted;
# every reference to a public name of THIS package must resolve (see _ext/short_refs.py).
_EXTERNAL_SHORT_NAMES = "|".join(
    [
        "str|int|float|bool|bytes|dict|list|tuple|set|frozenset|type|object|None|Any|Path|PathLike",
        "BinaryIO|IO|Iterator|AsyncIterator|Iterable|Sequence|Mapping|Callable|Literal|Self|Hashable",
        "Awaitable|Generator|AsyncGenerator|TypeVar|Generic|Union|Optional|ClassVar",
        # type variables of generic signatures (``Receipt[T]``)
        "T",
        "timedelta|datetime|date|TracebackType|Enum|ValueError|Exception",
        "json|logging|asyncio|anyio|httpx|pydantic|msgspec|fsspec|pyarrow|uvicorn|starlette",
        "Context|BaseHook|BaseOperator|BaseSensorOperator|BaseTrigger|TriggerEvent|ObjectStoragePath",
        "Connection|AirflowException|AirflowSkipException|AirflowFailException|AirflowSensorTimeout",
        "PokeReturnValue|BaseModel|ConfigDict|Field|Request|Response|Starlette|ASGIApp|AbstractFileSystem",
        "Asset|AirflowOptionalProviderFeatureException|Decimal|Pattern|contextmanager|OperatorLineage|Dataset|TaskInstanceKey|_T",
        # Literal type aliases of the transfer; their values are spelled out in the parameter docs.
        "OutputFormat|OverwritePolicy|CountCheck",
    ]
)
nitpick_ignore_regex = [
    (r"py:.*", r"(?!airflow_provider_dashscope_batch\.).*\..*"),  # dotted, outside
    (r"py:.*", rf"({_EXTERNAL_SHORT_NAMES})"),
    (r"py:.*", r"airflow_provider_dashscope_batch\..*\._\w+"),  # private helpers and bases
    (r"py:.*", r"airflow_provider_dashscope_batch\..*\.[A-Z]"),  # type variables (T, M)
    (r"py:.*", r"(airflow_provider_dashscope_batch\.client\._base_client\.)?HttpT"),  # BaseClient type var
    (r"py:attr", r"api_key"),  # EmulatorServer.api_key: an instance attribute autodoc cannot list
    (r"py:class", r"(ge|gt|le|lt)=.*"),  # pydantic field constraints (Annotated[int, Ge(0)]) in signatures
]
