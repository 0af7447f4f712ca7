"""Mutation score of the pure modules, each against its own tests (run through ``.ci/mutation``).

mutmut 3 copies the project into ``mutants/`` and runs pytest there; this driver first copies the working
tree (tracked and untracked, not ignored files) into a scratch directory, writes mutmut's configuration
into that copy's ``pyproject.toml``, and runs mutmut there with a single worker, so the repository is never
written to. It then prints one table row per module and the diff of every surviving mutant that is not an
explained exclusion.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "airflow_provider_dashscope_batch"


@dataclass(frozen=True)
class Module:
    """A module (or package: a glob) to mutate and the test files that own its behaviour."""

    source: str
    tests: tuple[str, ...]
    # Tests left out (pytest node ids): those behind slow fixtures, since every mutant reruns them -- the
    # emulator scenarios that wait out real rate limits, moto's S3 server (s3fs also caches the first
    # pytest session's endpoint, and mutmut runs several sessions in one process).
    deselect: tuple[str, ...] = ()


# One line per module; a test path may be a directory, a file or a file::test node id.
MODULES: dict[str, Module] = {
    "validation": Module(
        f"{PACKAGE}/validation/rules.py",
        ("tests/validation/",),
        deselect=("tests/validation/test_jsonl_builder.py::test_csv_from_object_storage",),
    ),
    "line_reader": Module(f"{PACKAGE}/validation/lines.py", ("tests/validation/test_line_reader.py",)),
    "bodies": Module(
        f"{PACKAGE}/validation/bodies.py",
        ("tests/validation/test_bodies.py", "tests/validation/test_body_rules.py"),
    ),
    "event_tokens": Module(
        f"{PACKAGE}/events/tokens.py",
        ("tests/events/test_tokens_edges.py", "tests/events/test_tokens_and_mailbox.py"),
    ),
    "retry": Module(
        f"{PACKAGE}/client/_retry.py", ("tests/client/test_retry.py", "tests/client/test_request.py")
    ),
    "params": Module(f"{PACKAGE}/client/_params.py", ("tests/client/test_params.py",)),
    "waiting": Module(
        f"{PACKAGE}/waiting/protocol.py",
        ("tests/waiting/test_protocol.py",),
    ),
    "ratelimit": Module(
        f"{PACKAGE}/client/ratelimit.py",
        ("tests/client/test_ratelimit.py",),
        deselect=tuple(
            f"tests/client/test_ratelimit.py::{name}"
            for name in (
                "test_shared_budget_keeps_threads_under_the_servers_limit",
                "test_without_the_budget_the_same_load_is_refused",
                "test_retries_draw_from_the_bucket",
                "test_a_429_tightens_the_bucket_so_no_storm_follows",
                "test_async_face_waits_for_the_same_budget",
            )
        ),
    ),
    "results": Module(f"{PACKAGE}/results/lines.py", ("tests/results/test_lines.py",)),
    "result_tables": Module(f"{PACKAGE}/results/tables.py", ("tests/results/test_tables.py",)),
    "input_columns": Module(f"{PACKAGE}/results/input_columns.py", ("tests/results/test_input_columns.py",)),
    **{
        name: Module(f"{PACKAGE}/cost/{name}.py", ("tests/cost/",))
        for name in ("pricing", "actual", "estimate", "budget", "tokens")
    },
    "idempotency": Module(f"{PACKAGE}/client/identity.py", ("tests/client/test_identity.py",)),
}


@dataclass(frozen=True)
class Excluded:
    """A survivor left out of the score, matched by function and mutated line (not by mutant number): an
    equivalent mutant (no behaviour changes), or one that only a real deployment can tell apart."""

    module: str
    function: str  # mutmut's mangled name without the module, e.g. ``x_validate_line`` or ``xǁCǁmethod``
    mutated: str  # the mutant's changed line, stripped
    reason: str


_FAST_PATH = "only decides whether a line takes the fast path; the full check gives the same verdict"
_FALSY = "ensure_ascii=None is falsy, as False"
EXCLUDED: tuple[Excluded, ...] = (
    # validation.py
    Excluded("validation", "xǁLineCheckerǁcheck_line", "type(None) is _Body", _FAST_PATH),
    Excluded("validation", "xǁLineCheckerǁcheck_line", "and type(None) is str", _FAST_PATH),
    Excluded(
        "validation", "xǁLineCheckerǁcheck_line", "and 1 < len(custom_id) <= MAX_CUSTOM_ID_CHARS", _FAST_PATH
    ),
    Excluded(
        "validation", "xǁLineCheckerǁcheck_line", "and 0 < len(custom_id) < MAX_CUSTOM_ID_CHARS", _FAST_PATH
    ),
    Excluded("validation", "xǁLineCheckerǁcheck_line", 'and req.method == "XXPOSTXX"', _FAST_PATH),
    *(
        Excluded(
            "validation",
            "xǁLineCheckerǁcheck_line",
            f"self._check_fields(n, custom_id, req.method, req.url, body, {model}, {thinking})",
            "a line without an object body is reported before its model and thinking mode are read",
        )
        for model, thinking in (("None", "_UNSET"), ("_UNSET", "None"))
    ),
    *(
        Excluded("validation", "xǁLineCheckerǁ__init__", line, "set by the first line before it is read")
        for line in (
            "self.model_line = None",
            "self.model_line = 1",
            "self.thinking: Any = None",
            "self.thinking_line = None",
        )
    ),
    Excluded(
        "validation",
        "xǁLineCheckerǁ_check_custom_id",
        "shown = json.dumps(custom_id, ensure_ascii=None)",
        _FALSY,
    ),
    *(
        Excluded(
            "validation",
            f"xǁLineCheckerǁ{function}",
            f'got = "missing" if {field} is _UNSET else json.dumps({field}, ensure_ascii=None)',
            _FALSY,
        )
        for function, field in (("_check_fields", "method"), ("_check_url", "url"))
    ),
    Excluded(
        "validation",
        "xǁLineCheckerǁadd",
        "elif len(self.violations) <= self.max_violations:",
        "listed() caps the list at max_violations anyway; one more is kept, never shown",
    ),
    Excluded(
        "validation",
        "xǁLineCheckerǁadd",
        "self.file_violations.append(Violation(line=None, code=code, message=message, param=param))",
        "this branch is the one where line is None",
    ),
    *(
        Excluded("validation", "xǁLineCheckerǁ_check_response_format", line, _FALSY)
        for line in (
            'got = "missing" if kind is _UNSET else json.dumps(kind, ensure_ascii=None)',
            'got = "missing" if name is _UNSET else json.dumps(name, ensure_ascii=None)[:80]',
        )
    ),
    Excluded(
        "validation",
        "x__body_view",
        "view[key] = None",
        "on a chat body only the presence of input, dimensions and encoding_format is read (embeddings "
        "bodies are read whole)",
    ),
    *(
        Excluded(
            "validation",
            "x__lazy_message",
            f'decoded["content"] = {line}  # \'"\'',
            "a string content is left undecoded only for speed (benchmarks/validation.py); the rules "
            "read only that it is a string",
        )
        for line in (
            '"" if (memoryview(content)[0] == 0x22) and False else msgspec.json.decode(content)',
            '"XXXX" if memoryview(content)[0] == 0x22 else msgspec.json.decode(content)',
            '"" if memoryview(content)[0] == 35 else msgspec.json.decode(content)',
        )
    ),
    # line_reader.py
    Excluded(
        "line_reader",
        "x_read_lines",
        "limit = MAX_LINE_BYTES + 3  # room for a CRLF terminator",
        "any read limit over MAX_LINE_BYTES + 1 measures the same lengths (+2 fits a 6 MB line and CRLF)",
    ),
    *(
        Excluded(
            "line_reader",
            "x_read_lines",
            line,
            "a first line that is only a BOM and no newline is the file's last line, and no line came before",
        )
        for line in ("checker.blank_lines = 1", "break")
    ),
    *(
        Excluded(
            "line_reader",
            "x_read_lines",
            f"tail = last[{cut}:] + rest  # only the tail is needed, to measure the terminator "
            "(CR LF may straddle)",
            "only last's final byte can end the tail (a piece of 1 byte without newline is the stream's end)",
        )
        for cut in ("+1", "-2")
    ),
    # bodies.py
    Excluded("bodies", "x__shown", "text = json.dumps(value, ensure_ascii=None)", _FALSY),
    # events/tokens.py
    Excluded(
        "event_tokens",
        "x_callback_url",
        "return f\"{base_url.rstrip('/')}{ROUTE_PREFIX}/events/{quote(conn_id, safe='XXXX')}/{token}\"",
        "X is an unreserved character, never quoted anyway",
    ),
    # client/_retry.py
    *(
        Excluded("retry", "x_parse_retry_after", line, "httpx.Headers look names up case-insensitively")
        for line in (
            'if (value := headers.get("RETRY-AFTER-MS")) is not None:',
            'value = headers.get("RETRY-AFTER")',
        )
    ),
    # client/_params.py
    Excluded("params", "x_quote_segment", 'return quote(value, safe="XXXX")', "X is never quoted anyway"),
    Excluded(
        "params",
        "x_join_values",
        'return ",".join(str(v.value if (isinstance(v, BatchStatus)) and False else v) for v in values)',
        "BatchStatus is a StrEnum: str() of a member is its value",
    ),
    *(
        Excluded(
            "params",
            "x_parse_completion_window",
            line,
            "whole hours only reach this line (seconds % 3600 is checked first): / and // agree",
        )
        for line in (
            'hours, wire = int(seconds // 3600), f"{int(seconds / 3600)}h"',
            'hours, wire = int(seconds / 3600), f"{int(seconds // 3600)}h"',
        )
    ),
    # waiting.py
    Excluded(
        "waiting",
        "xǁBatchPollerǁfirst_delay",
        "self._interval = None",
        "an unset interval falls back to poll_interval, the value this line sets",
    ),
    # client/ratelimit.py
    *(
        Excluded("ratelimit", f"xǁRateBudgetǁ{face}", "if delay < 0:", "a zero delay sleeps 0 s, then sends")
        for face in ("wait", "await_turn")
    ),
    Excluded(
        "ratelimit",
        "xǁRequestKindǁof",
        "for index in range(len(parts) - 1, -2, -1):",
        "index -1 is the last part, already looked at first",
    ),
    Excluded(
        "ratelimit",
        "xǁTokenBucketǁ_refill",
        "quiet = now - self._resumed_at if self._resumed_at is not None else 1.0",
        "a limit is learned only after a pause, which sets _resumed_at",
    ),
    Excluded(
        "ratelimit",
        "xǁTokenBucketǁ_refill",
        "if now >= self._stamp:  # a stamp in the future is the end of a pause",
        "at now == stamp the refill adds no token and sets the stamp it already has",
    ),
    Excluded(
        "ratelimit",
        "xǁTokenBucketǁreserve",
        "wait = max(self._stamp - now, 0.0) + (-self._tokens / self.rate if self._tokens <= 0 else 0.0)",
        "with no token left the added wait is -0.0, which is 0.0",
    ),
    # cost/pricing.py
    *(
        Excluded("pricing", "x_region_of", line, "a host that names no region marker reads as the default")
        for line in (
            'host = urlsplit(str(base_url or get("base_url") or "XXXX")).hostname or ""',
            'host = urlsplit(str(base_url or get("base_url") or "")).hostname or "XXXX"',
        )
    ),
    # cost/actual.py
    *(
        Excluded(
            "actual", function, line, "a sum of Decimals from 0 is that Decimal; of none, 0 == Decimal(0)"
        )
        for function, line in (
            ("xǁActualCostǁtotal", "cost=sum((c.cost for c in costs), ),"),
            ("xǁCostMeterǁresult", "cost=sum((t.cost for t in tiers if t.cost is not None), ),"),
        )
    ),
    Excluded(
        "actual",
        "xǁCostMeterǁadd",
        "index = price.tier_of(prompt) if price is not None else 1",
        "an unpriced model has one tier, labelled all; its index is never shown",
    ),
    # cost/estimate.py
    *(
        Excluded(
            "estimate", "xǁCostEstimatorǁ_role_tokens", line, "the cache only saves encoding a role again"
        )
        for line in ("tokens = None", "tokens = self._roles.get(None)")
    ),
    *(
        Excluded(
            "estimate",
            "xǁCostEstimatorǁ_rates",
            f'if self.counting == "tokenizer" and {condition}:',
            "character counts are whole or half characters, so the determinant is 0 (one mix) or far above "
            "either threshold for any text a request can hold",
        )
        for condition in ("det >= 1e-9 * max(aa * oo, 1.0)", "det > 1e-9 * max(aa * oo, 2.0)")
    ),
    *(
        Excluded(
            "estimate",
            "xǁCostEstimatorǁ_rates",
            f"ratio = (ay * ASCII_RATE + oy * OTHER_RATE) / approx if {condition} else {default}",
            "this branch needs aa or oo, so approx is positive",
        )
        for condition, default in (("(approx) or True", "1.0"), ("approx", "2.0"))
    ),
    *(
        Excluded("estimate", "x__decode", line, "a missing url reads as no endpoint, None or UNSET alike")
        for line in (
            'return _Line(url=obj.get("url", None) if isinstance(obj, dict) else _UNSET)',
            'return _Line(url=obj.get("url", ) if isinstance(obj, dict) else _UNSET)',
            'url=obj.get("url", None),',
            'url=obj.get("url", ),',
        )
    ),
    *(
        Excluded(
            "estimate",
            "xǁCostEstimatorǁ_texts",
            line,
            "the raw JSON of tools is valid UTF-8 (codec names are case-insensitive; no error to handle)",
        )
        for line in (
            'texts.append(bytes(body.tools).decode("utf-8", ))',
            'texts.append(bytes(body.tools).decode("UTF-8", "replace"))',
            'texts.append(bytes(body.tools).decode("utf-8", "XXreplaceXX"))',
            'texts.append(bytes(body.tools).decode("utf-8", "REPLACE"))',
        )
    ),
    *(
        Excluded("estimate", "xǁCostEstimatorǁ__init__", line, "set by the first line before it is read")
        for line in ('self.model: str | None = ""', 'self.endpoint: str | None = ""')
    ),
    Excluded(
        "estimate", "xǁCostEstimatorǁ__init__", 'self._exact_above = float("INF")', "float() ignores case"
    ),
    Excluded(
        "estimate",
        "xǁCostEstimatorǁfeed",
        "index = price.tier_of(int(guess)) if price is not None else 1",
        "an unpriced model has one tier, labelled all; its key is never shown",
    ),
    *(
        Excluded(
            "estimate",
            "x__decode",
            line,
            "a lenient line's missing field reads as None or UNSET alike (neither a str, bool, int nor list)",
        )
        for line in (
            *(
                f'{key}=body.get("{key}", {default}),'
                for key in (
                    "model",
                    "enable_thinking",
                    "input",
                    "max_tokens",
                    "max_completion_tokens",
                    "thinking_budget",
                )
                for default in ("None", "")
            ),
            '_Message(m.get("role", None), m.get("content", _UNSET))',
            '_Message(m.get("role", ), m.get("content", _UNSET))',
            '_Message(m.get("role", _UNSET), m.get("content", None))',
            '_Message(m.get("role", _UNSET), m.get("content", ))',
        )
    ),
    Excluded(
        "estimate", "x__decode", "else msgspec.Raw(json.dumps(tools, ensure_ascii=None).encode()),", _FALSY
    ),
    Excluded(
        "estimate",
        "xǁCostEstimatorǁ_rates",
        'if self.counting == "tokenizer" or (aa or oo):  # one character class (or collinear): one ratio',
        "without the tokenizer nothing is counted exactly, so aa and oo are 0",
    ),
    # cost/tokens.py
    Excluded(
        "tokens",
        "x_load_tokenizer",
        "if _encoder is None or _unavailable is None:",
        "both are None here unless another thread loaded meanwhile (then loading again gives the same)",
    ),
    *(
        Excluded("tokens", "x_load_tokenizer", f'encode("{text}")', "the warm-up text is not counted")
        for text in ("XXwarm upXX", "WARM UP")
    ),
    Excluded(
        "tokens",
        "x_count_chat_prompt",
        "tokens += count_text(json.dumps(tools, ensure_ascii=None))",
        _FALSY,
    ),
    # idempotency.py
    Excluded(
        "idempotency", "x_parse_key", 'match = KEY_PATTERN.match(key or "XXXX")', 'no key matches, as with ""'
    ),
    # input_columns.py
    *(
        Excluded("input_columns", "x_publish_input_columns", f"shutil.copyfileobj(rows, out, {size})", reason)
        for size, reason in (
            ("None", "the chunk size of the copy; the bytes copied are the same"),
            ("", "the chunk size of the copy; the bytes copied are the same"),
            ("1 >> 20", "a zero chunk size is shutil's default one"),
            ("2 << 20", "the chunk size of the copy; the bytes copied are the same"),
            ("1 << 21", "the chunk size of the copy; the bytes copied are the same"),
        )
    ),
    *(
        Excluded(
            "input_columns", "xǁInputColumnsǁread", line, "any non-dict, non-list value fails the same check"
        )
        for line in ('header = ""', 'row = ""')
    ),
    *(
        Excluded(
            "input_columns",
            "xǁInputColumnsǁrow",
            f"return dict(zip(self.columns, found, {strict}))",
            "read() keeps only rows of exactly one value per column",
        )
        for strict in ("strict=None", "", "strict=False")
    ),
    Excluded(
        "input_columns",
        "xǁInputColumnsǁrow",
        "found = self.values.get(key) if (isinstance(key, str)) or True else None",
        "the ids the join looks up are strings or None (flattened by _as_str); None finds nothing either way",
    ),
    # results.py, result_tables.py
    Excluded(
        "results",
        "x__as_str",
        'return json.dumps(value, ensure_ascii=None, separators=(",", ":"))',
        _FALSY,
    ),
    Excluded(
        "result_tables",
        "xǁCsvEncoderǁ_flush",
        'self.out.write(self._buffer.getvalue().encode("UTF-8"))',
        "codec names are case-insensitive",
    ),
    Excluded(
        "result_tables",
        "xǁCsvEncoderǁrow",
        "if self._buffer.tell() > _CSV_FLUSH_BYTES:",
        "flushing at exactly 1 MB or one row later writes the same bytes",
    ),
    Excluded(
        "result_tables",
        "x__vector_text",
        'return None if vector is None else json.dumps(vector, separators=(",", "XX:XX"))',
        "a vector is a list: no key separator is written",
    ),
    Excluded(
        "result_tables",
        "x_open_encoder",
        "return JsonlEncoder(out, )",
        "the JSONL encoder copies bytes and never reads its table",
    ),
    *(
        Excluded(
            "result_tables",
            "xǁParquetEncoderǁ__init__",
            "self._columns: dict[str, list[Any]] = "
            f'{{name: [] for name in self.columns if name != "{name}"}}',
            "a list kept for the embedding column is never read (the vector column is built from _vectors)",
        )
        for name in ("XXembeddingXX", "EMBEDDING")
    ),
    *(
        Excluded(
            "result_tables",
            "xǁParquetEncoderǁ_flush",
            line,
            "Table.from_arrays casts each column to the schema's type (an inferred one, or null, alike)",
        )
        for line in (
            "arrays.append(pa.array(self._columns[column.name], type=None))",
            "arrays.append(pa.array(self._columns[column.name], ))",
        )
    ),
    *(
        Excluded(
            "result_tables",
            "xǁParquetEncoderǁ_open_writer",
            line,
            "which columns Parquet dictionary-encodes: the values read back are the same",
        )
        for line in (
            "dictionary = None",
            'dictionary = [name for name in schema.names if name == "embedding"]',
            'dictionary = [name for name in schema.names if name != "XXembeddingXX"]',
            'dictionary = [name for name in schema.names if name != "EMBEDDING"]',
            "return self._pq.ParquetWriter(self.out, schema, use_dictionary=None)",
            "return self._pq.ParquetWriter(self.out, schema, )",
        )
    ),
    *(
        Excluded(
            "result_tables",
            "xǁParquetEncoderǁ_vector_column",
            f"return pa.nulls(len(self._vector_mask), {arg})",
            "Table.from_arrays casts a column of nulls to the schema's type",
        )
        for arg in ("type=pa.list_(pa.float32(), )", "type=None", "")
    ),
    Excluded(
        "result_tables",
        "xǁParquetEncoderǁ_vector_column",
        'vectors, offset, zeros = array.array("f"), 0, array.array("f", [1.0] * size)',
        "the values under a null vector's mask are never read",
    ),
    *(
        Excluded("result_tables", "xǁParquetEncoderǁ_vector_column", line, reason)
        for line, reason in (
            (
                "mask = pa.array(self._vector_mask, type=pa.bool_()) "
                "if (any(self._vector_mask)) or True else None",
                "a mask of no missing vector nulls nothing, as no mask",
            ),
            (
                "mask = pa.array(self._vector_mask, type=None) if any(self._vector_mask) else None",
                "a list of bools is inferred as bool",
            ),
            (
                "mask = pa.array(self._vector_mask, ) if any(self._vector_mask) else None",
                "a list of bools is inferred as bool",
            ),
        )
    ),
)

# mutmut's exit-code classes, folded into the columns.
KILLED = {"killed", "timeout", "caught by type check"}
NO_TESTS = {"no tests"}


def scratch_copy(target: Path) -> None:
    """Copy the working tree's files mutmut needs (the package, tests, example data, project files)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard", "--", PACKAGE, "tests", "example_dags"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in [*(n.decode() for n in listed if n), "pyproject.toml", "uv.lock"]:
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is skipped
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def configure(target: Path, module: Module) -> None:
    """Append mutmut's settings for one module to the scratch copy's pyproject.toml."""
    settings = {
        "source_paths": [PACKAGE],
        "only_mutate": [module.source],
        "also_copy": ["example_dags"],
        "pytest_add_cli_args_test_selection": [
            *module.tests,
            *(arg for node in module.deselect for arg in ("--deselect", node)),
        ],
        "pytest_add_cli_args": ["-p", "no:cacheprovider"],
        "use_git_change_detection": False,
    }
    lines = ["", "[tool.mutmut]", *(f"{key} = {json.dumps(value)}" for key, value in settings.items())]
    with open(target / "pyproject.toml", "a") as f:
        f.write("\n".join(lines) + "\n")


def mutmut(target: Path, *args: str) -> None:
    log = target / "mutmut.log"
    with open(log, "a") as out:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "mutmut"), *args],
            cwd=target,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if done.returncode:
        sys.exit(f"mutmut {' '.join(args)} failed ({done.returncode}); its output: {log}")


def statuses(target: Path) -> dict[str, str]:
    """Mutant name -> mutmut's status, read back from the metadata mutmut wrote into ``mutants/``."""
    os.chdir(target)  # mutmut reads its configuration from the working directory
    from mutmut.stats import status_by_exit_code

    result = {}
    for meta in (target / "mutants").rglob("*.py.meta"):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        result.update({name: status_by_exit_code[code] for name, code in codes.items()})
    return result


def mutated_line(target: Path, source: str, name: str) -> tuple[str, str]:
    """The mutant's diff and its first added line (stripped)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    os.chdir(target)
    diff = get_diff_for_mutant(name, path=source)
    added = [
        line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")
    ]
    return diff, added[0] if added else ""


def run_module(key: str, module: Module, workdir: Path, *, run: bool = True) -> dict[str, object]:
    target = workdir / key
    if run:
        missing = [t for t in module.tests if not (REPO / t.partition("::")[0]).exists()]
        if missing:
            sys.exit(f"{key}: no such test path {', '.join(missing)}; update MODULES in {__file__}")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        scratch_copy(target)
        configure(target, module)
        print(f"== {key}: mutmut in {target} (log: {target / 'mutmut.log'})", flush=True)
        mutmut(target, "run", "--max-children", "1")
    counts: Counter[str] = Counter()
    survivors = []
    for name, status in sorted(statuses(target).items()):
        if status in KILLED:
            counts["killed"] += 1
        elif status in NO_TESTS:
            counts["no tests"] += 1
        else:
            survivors.append(name)
    explained, unexplained, matched = [], [], set()
    for name in survivors:
        function = name.rpartition(".")[2].partition("__mutmut_")[0]
        diff, line = mutated_line(target, _source_of(target, module, name), name)
        match = next(
            (e for e in EXCLUDED if e.module == key and e.function == function and e.mutated == line), None
        )
        (explained if match else unexplained).append((name, diff))
        matched.add(match)
    for stale in (e for e in EXCLUDED if e.module == key and e not in matched):
        print(f"   note: no surviving mutant matches the exclusion {stale.function}: {stale.mutated}")
    stats = json.loads((target / "mutants" / "mutmut-stats.json").read_text())
    total = sum(counts.values()) + len(survivors)
    scored = total - len(explained)
    return {
        "module": module.source.removeprefix(f"{PACKAGE}/"),
        "tests": f"{', '.join(module.tests)} ({len(stats['duration_by_test'])})",
        "mutants": total,
        "killed": counts["killed"],
        "survived": len(unexplained),
        "excluded": len(explained),
        "no tests": counts["no tests"],
        "score": 100.0 * counts["killed"] / scored if scored else 100.0,
        "unexplained": unexplained,
    }


def _source_of(target: Path, module: Module, name: str) -> str:
    """The source file (relative to the copy) that holds the mutant ``name``."""
    dotted = name.rpartition(".")[0]
    for candidate in (Path(dotted.replace(".", "/") + ".py"), Path(dotted.replace(".", "/")) / "__init__.py"):
        if (target / candidate).exists():
            return str(candidate)
    raise FileNotFoundError(f"no source file for {name} under {module.source}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "modules", nargs="*", metavar="module", help=f"any of {', '.join(MODULES)} (default: all)"
    )
    parser.add_argument("--workdir", type=Path, help="where the scratch copies go (default: a new temp dir)")
    parser.add_argument("--quiet", action="store_true", help="do not print the survivors' diffs")
    parser.add_argument(
        "--report-only", action="store_true", help="only print the table of the runs already in --workdir"
    )
    args = parser.parse_args()
    if unknown := set(args.modules) - set(MODULES):
        parser.error(f"unknown module(s) {', '.join(sorted(unknown))}; known: {', '.join(MODULES)}")
    if args.report_only and not args.workdir:
        parser.error("--report-only needs the --workdir of an earlier run")
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="dashscope-mutation-"))).resolve()
    keys = args.modules or [key for key in MODULES if not args.report_only or (workdir / key).is_dir()]
    rows = [run_module(key, MODULES[key], workdir, run=not args.report_only) for key in keys]
    if not args.quiet:
        for row in rows:
            for name, diff in row["unexplained"]:
                print(f"\n# survived: {name}\n{diff}")
    header = (
        "module",
        "tests",
        "mutants",
        "killed + timeout",
        "survived",
        "excluded",
        "no test reaches",
        "score",
    )
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        cells = (
            r["module"],
            r["tests"],
            r["mutants"],
            r["killed"],
            r["survived"],
            r["excluded"],
            r["no tests"],
        )
        print("| " + " | ".join(map(str, cells)) + f" | {r['score']:.1f} % |")
    print(f"\nscratch copies (mutmut browse / mutmut show NAME from there): {workdir}")


if __name__ == "__main__":
    main()
