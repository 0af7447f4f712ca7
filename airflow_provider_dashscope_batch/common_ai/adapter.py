"""
DashScope batch adapter for common.ai's ``LLMBatchOperator`` / ``@task.llm_batch``.

common.ai picks this adapter for a ``model_id`` of ``"dashscope:<model>"`` (entry point
``airflow.providers.common.ai.batch_adapters``) and builds it from the connection's ``password``
(the API key) and ``host``. Everything else goes through this provider's client: the input file is
written to a temporary file and uploaded streamed, the batch is created idempotently (the client
finds the batch of an ambiguous create instead of creating a second one), errors are the client's
typed errors, and result files are read line by line.

Connections
    A ``pydanticai`` or ``dashscope`` connection. common.ai hands an adapter only ``password`` and
    ``host``, never the extra, so the region, base URL and workspace of a ``dashscope`` connection
    are read from its host: empty (``cn-beijing``), a region id (``ap-southeast-1``) or a
    compatible-mode base URL, optionally followed by ``?workspace=<workspace id>``.

Cost
    The lines ``validate_requests`` generates are estimated in the same pass (:doc:`/cost`) and the
    table is logged. The host's query may set a budget and the guard, as it sets the workspace:
    ``?max_cost=2.5&max_input_tokens=1000000&expected_output_tokens=300&budget_basis=expected
    &on_default_thinking=warn&price_region=ap-southeast-1``. A failed check raises
    ``LLMBatchInputError`` before anything is uploaded. The output ceiling is ``max_tokens`` per request.

Structured output
    ``output_type`` becomes ``response_format`` ``json_schema`` (``strict`` off, as common.ai's
    OpenAI adapter sends it). For models that accept only JSON mode, set
    ``request_params={"response_format": {"type": "json_object"}}``: the adapter then sends
    ``json_object`` and puts the JSON Schema into the system prompt (JSON mode needs the prompt to
    ask for JSON). Any other ``response_format`` with a structured ``output_type`` is an error, not
    silently replaced; without one, a request's ``response_format`` is checked against the shapes the
    service documents. Qwen models do not produce structured output in thinking mode, so a structured
    batch with ``enable_thinking`` true is rejected before anything is sent.

Input files
    The input file is uploaded under a token digested from the idempotency key and the input
    fingerprint, so a re-submit after a create that failed for good re-uses that file (found by its
    token, within a day) instead of uploading a second copy.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from airflow.providers.common.ai.batch.base import (
    BatchAdapter,
    BatchState,
    ExtractedOutput,
    RawResultItem,
    SubmitResult,
)
from airflow.providers.common.ai.exceptions import (
    LLMBatchInputError,
    LLMBatchLimitExceededError,
    LLMBatchModelMismatchError,
)
from airflow.providers.common.compat.sdk import mask_secret

from airflow_provider_dashscope_batch.client import DashScopeClient
from airflow_provider_dashscope_batch.client._params import FILTER_SLACK
from airflow_provider_dashscope_batch.client._uploads import tokenized_filename
from airflow_provider_dashscope_batch.client.ambiguity import Ambiguity
from airflow_provider_dashscope_batch.cost import (
    CostCheckError,
    CostEstimator,
    CostPolicy,
    load_price_table,
    region_of,
)
from airflow_provider_dashscope_batch.hooks.dashscope import account_budget
from airflow_provider_dashscope_batch.jsonl import encode_line, write_requests
from airflow_provider_dashscope_batch.models import Batch, BatchStatus, FileObject, ResultLine
from airflow_provider_dashscope_batch.regions import DEFAULT_BASE_URL, REGION_BASE_URLS
from airflow_provider_dashscope_batch.results import iter_lines
from airflow_provider_dashscope_batch.validation import (
    MAX_CUSTOM_ID_CHARS,
    MAX_FILE_BYTES,
    MAX_LINE_BYTES,
    MAX_LINES,
    TEST_MODEL,
    TEST_MODEL_ENDPOINT,
    TEST_MODEL_MAX_FILE_BYTES,
    TEST_MODEL_MAX_LINES,
    ValidationReport,
    validate_jsonl,
)
from airflow_provider_dashscope_batch.waiting.late import LateCopies, LateWatch, look_flow

if TYPE_CHECKING:
    from airflow.providers.common.ai.batch.base import BatchRequest
    from airflow.providers.common.ai.batch.output_schema import OutputSpec

log = logging.getLogger(__name__)

CHAT_ENDPOINT = "/v1/chat/completions"
API_PATH = "/compatible-mode/v1"
#: Environment variable the DashScope SDKs read the API key from; used when the connection has none.
API_KEY_ENV = "DASHSCOPE_API_KEY"
#: ``ds_name`` prefix of the batches this adapter creates; narrows the orphan search server-side.
DS_NAME_PREFIX = "airflow-llm-batch-"
FINGERPRINT_KEY = "input_fingerprint"

#: How long after a create failed a re-submit still re-uses its input file.
_REUSE_WINDOW = timedelta(days=1)

#: Error codes of requests the service never ran, as common.ai's per-item statuses.
_UNRUN_CODES = {"batch_expired": "expired", "batch_cancelled": "cancelled"}


def resolve_host(host: str | None) -> tuple[str, str | None]:
    """
    Return the base URL and workspace a connection's host names.

    :param host: Empty (``cn-beijing``), a region id, or a compatible-mode base URL (a bare
        ``https://host`` gets ``/compatible-mode/v1``); either may end in ``?workspace=<id>``.
    """
    if not host or not host.strip():
        return DEFAULT_BASE_URL, None
    location, _, query = host.strip().partition("?")
    params = parse_qs(query, keep_blank_values=True)
    if set(params) - {"workspace", *COST_PARAMS}:
        raise ValueError(
            f"The connection's host {host!r} may carry only '?workspace=<workspace id>' and the cost "
            f"settings {', '.join(COST_PARAMS)} in its query; "
            f"got {sorted(set(params) - {'workspace', *COST_PARAMS})}."
        )
    workspace = (params.get("workspace") or [""])[-1] or None
    if location in REGION_BASE_URLS:
        return REGION_BASE_URLS[location], workspace
    parts = urlsplit(location)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"The connection's host must be a DashScope region ({', '.join(REGION_BASE_URLS)}) or a "
            f"compatible-mode base URL such as {DEFAULT_BASE_URL!r}; got {location!r}."
        )
    path = parts.path.rstrip("/") or API_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")), workspace


#: Cost settings a connection's host query may carry (see the module docstring).
COST_PARAMS = (
    "max_cost",
    "max_input_tokens",
    "expected_output_tokens",
    "budget_basis",
    "on_default_thinking",
    "price_region",
)


def cost_settings(host: str | None) -> tuple[str | None, CostPolicy]:
    """The price region (``None``: from the base URL) and the cost policy a connection's host query sets."""
    params = {k: v[-1] for k, v in parse_qs((host or "").partition("?")[2]).items() if v}
    try:
        policy = CostPolicy(
            max_cost=params.get("max_cost"),  # type: ignore[arg-type]
            max_input_tokens=int(params["max_input_tokens"]) if "max_input_tokens" in params else None,
            expected_output_tokens=int(params["expected_output_tokens"])
            if "expected_output_tokens" in params
            else None,
            budget_basis=params.get("budget_basis"),  # type: ignore[arg-type]
            on_default_thinking=params.get("on_default_thinking", "error"),  # type: ignore[arg-type]
        )
    except (ValueError, ArithmeticError) as exc:
        raise ValueError(f"The connection's host {host!r} has a bad cost setting: {exc}") from None
    return params.get("price_region"), policy


def endpoint_for(model: str) -> str:
    """The batch endpoint of a chat model (``batch-test-model`` has its own)."""
    return TEST_MODEL_ENDPOINT if model == TEST_MODEL else CHAT_ENDPOINT


class _ChunkReader(io.RawIOBase):
    """A readable stream over an iterator of byte chunks, so generated lines validate without a file."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class DashScopeBatchAdapter(BatchAdapter):
    """
    Batch adapter for the DashScope (Alibaba Cloud Model Studio) OpenAI-compatible Batch API.

    :param api_key: The DashScope API key (the connection's password); ``DASHSCOPE_API_KEY`` when empty.
    :param base_url: The connection's host: empty, a region id or a compatible-mode base URL, optionally
        with ``?workspace=<id>`` (see :func:`resolve_host`).
    :param client: A pre-built :class:`~airflow_provider_dashscope_batch.client.DashScopeClient`.
    """

    name = "dashscope"
    conn_types = frozenset({"pydanticai", "dashscope"})
    max_requests = MAX_LINES
    max_payload_bytes = MAX_FILE_BYTES
    allows_per_request_model = False

    def __init__(
        self, *, api_key: str | None = None, base_url: str | None = None, client: Any | None = None
    ) -> None:
        if client is None:
            url, workspace = resolve_host(base_url)
            key = api_key or os.environ.get(API_KEY_ENV)
            if not key:
                raise ValueError(
                    "No DashScope API key: set the connection's password (or the DASHSCOPE_API_KEY "
                    "environment variable)."
                )
            mask_secret(key)
            budget = account_budget(key, url, workspace)
            client = DashScopeClient(api_key=key, base_url=url, workspace=workspace, rate_budget=budget)
        region, self._cost_policy = cost_settings(base_url)
        self._price_region = region or region_of(base_url=str(getattr(client, "base_url", "") or ""))
        self._client: DashScopeClient = client
        # the late-copy look-outs of the batches this adapter submitted or polls, by batch id
        self._watches: dict[str, LateWatch] = {}

    # ------------------------------------------------------------------------------------- requests
    def build_output_directive(self, spec: OutputSpec) -> dict[str, Any]:
        if not spec.is_structured:
            return {}
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": spec.schema_name, "schema": spec.json_schema, "strict": False},
            }
        }

    def _structured(self, spec: OutputSpec, params: dict[str, Any], index: int) -> tuple[dict[str, Any], str]:
        """
        The ``response_format`` of one request, and the system-prompt addition JSON mode needs.

        With a structured ``output_type`` the adapter owns ``response_format``: a request's own is an
        error unless it asks for JSON mode (``{"type": "json_object"}``), never silently replaced.
        """
        if not spec.is_structured:
            return {}, ""
        if params.get("enable_thinking") is True:
            raise LLMBatchInputError(
                "Qwen models do not return structured output in thinking mode, and this batch sets "
                "enable_thinking=True with a structured output_type. Set enable_thinking to False, or "
                "use output_type=str."
            )
        requested = params.get("response_format")
        if requested == {"type": "json_object"}:
            schema = json.dumps(spec.json_schema, ensure_ascii=False, separators=(",", ":"))
            instruction = f"Reply with one JSON object that conforms to this JSON Schema: {schema}"
            return {"response_format": {"type": "json_object"}}, instruction
        if requested is not None:
            shown = json.dumps(requested, ensure_ascii=False, default=str)
            raise LLMBatchInputError(
                f"Request {index} sets response_format {shown[:200]}, but the structured output_type "
                f"{spec.schema_name} sets its own (json_schema). Remove response_format from the "
                'request params, or set it to {"type": "json_object"} for a model that accepts only '
                "JSON mode."
            )
        return self.build_output_directive(spec), ""

    def _iter_lines(
        self,
        requests: list[BatchRequest],
        *,
        model: str,
        idempotency_key: str,
        output_spec: OutputSpec,
        system_prompt: str,
        max_tokens: int,
        request_params: dict[str, Any] | None,
    ) -> Iterator[dict[str, Any]]:
        """Yield one batch input line per request, lazily (a batch may be 500 MB)."""
        url = endpoint_for(model)
        for index, request in enumerate(requests):
            resolved_model = self.resolve_request_model(
                request.get("model"), default_bare_model=model, request_index=index
            )
            params = {**(request_params or {}), **(request.get("params") or {})}
            directive, instruction = self._structured(output_spec, params, index)
            system = request.get("system_prompt") or system_prompt
            if instruction:
                system = f"{system}\n\n{instruction}" if system else instruction
            messages = [{"role": "system", "content": system}] if system else []
            messages.append({"role": "user", "content": request["prompt"]})
            # User params first, then the keys this adapter manages, so params cannot swap the model
            # or the prompt.
            body = {
                **params,
                "model": resolved_model,
                "messages": messages,
                "max_tokens": request.get("max_tokens") or max_tokens,
                **directive,
            }
            yield {"custom_id": f"{idempotency_key}-{index}", "method": "POST", "url": url, "body": body}

    def validate_requests(
        self,
        requests: list[BatchRequest],
        *,
        model: str,
        output_spec: OutputSpec,
        idempotency_key: str,
        system_prompt: str = "",
        max_tokens: int = 1024,
        request_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Check the batch against the service's input-file rules before anything is sent.

        The request count and the ``custom_id`` length are checked first; then the lines ``submit``
        would write are generated and streamed through the provider's own preflight validation
        (:func:`~airflow_provider_dashscope_batch.validation.validate_jsonl`): 500 MB per file, 6 MB per
        line, one model and one thinking mode per file (``batch-test-model``: 100 lines, 1 MB).
        """
        test_model = model == TEST_MODEL
        max_requests = TEST_MODEL_MAX_LINES if test_model else self.max_requests
        if len(requests) > max_requests:
            raise LLMBatchLimitExceededError(
                f"DashScope accepts at most {max_requests} requests per batch"
                f"{' with ' + TEST_MODEL if test_model else ''}; got {len(requests)}. Split the input "
                f"across mapped task instances with .expand() so each instance submits at most "
                f"{max_requests} requests."
            )
        self.check_custom_id_length(idempotency_key, len(requests), max_length=MAX_CUSTOM_ID_CHARS)
        models = {
            self.resolve_request_model(r.get("model"), default_bare_model=model, request_index=i)
            for i, r in enumerate(requests)
        }
        if len(models) > 1:
            raise LLMBatchModelMismatchError(
                f"DashScope requires one model per batch; got {len(models)} ({sorted(models)!r}). "
                "Drop the per-request model overrides, or split the requests into one task per model."
            )
        lines = self._iter_lines(
            requests,
            model=model,
            idempotency_key=idempotency_key,
            output_spec=output_spec,
            system_prompt=system_prompt,
            max_tokens=max_tokens,
            request_params=request_params,
        )
        stream = io.BufferedReader(_ChunkReader(encode_line(line) for line in lines), buffer_size=1 << 20)
        try:
            table, region = load_price_table(self._price_region)
            estimator = CostEstimator(table, region, self._cost_policy, source="the batch")
            report = validate_jsonl(
                stream,
                endpoint=endpoint_for(model),
                name="the batch",
                max_violations=1,
                on_line=estimator.feed,
            )
            if not report.ok:
                raise self._validation_error(report, output_spec, test_model=test_model)
            estimate = estimator.finish()
            if estimate is not None:
                log.info("%s", estimate.table())
                self._cost_policy.enforce(estimate)
        except CostCheckError as exc:
            raise LLMBatchInputError(str(exc)) from None

    def _validation_error(
        self, report: ValidationReport, spec: OutputSpec, *, test_model: bool
    ) -> LLMBatchInputError:
        violation = report.violations[0]
        index = None if violation.line is None else violation.line - 1
        if violation.code == "file_too_large":
            limit = TEST_MODEL_MAX_FILE_BYTES if test_model else self.max_payload_bytes
            schema_bytes = len(json.dumps(self.build_output_directive(spec)))
            return LLMBatchLimitExceededError(
                f"DashScope accepts a batch input file of at most {limit // (1 << 20)} MB; this batch of "
                f"{report.line_count} requests is {report.bytes} bytes (the output_type schema adds "
                f"~{schema_bytes} bytes to every request). Split the input with .expand()."
            )
        if violation.code == "line_too_large":
            return LLMBatchLimitExceededError(
                f"Request {index} is larger than DashScope's {MAX_LINE_BYTES // (1 << 20)} MB per-request "
                "limit. Shorten its prompt (or the output_type schema); splitting the batch does not "
                "help a single oversized request."
            )
        if violation.code == "mismatched_thinking_mode":
            return LLMBatchInputError(
                f"Request {index} sets enable_thinking differently from the first request; DashScope "
                "requires one thinking mode per batch. Set enable_thinking in request_params, not per "
                "request."
            )
        where = "The batch" if index is None else f"Request {index}"
        return LLMBatchInputError(
            f"{where} breaks a DashScope batch input rule ({violation.code}): {violation.message}"
        )

    # ---------------------------------------------------------------------------------------- batch
    def submit(
        self,
        requests: list[BatchRequest],
        *,
        model: str,
        idempotency_key: str,
        input_fingerprint: str,
        output_spec: OutputSpec,
        system_prompt: str = "",
        max_tokens: int = 1024,
        request_params: dict[str, Any] | None = None,
        completion_window: str = "24h",
        **kwargs: Any,
    ) -> SubmitResult:
        """
        Upload the input file and create the batch.

        The file is uploaded under a token digested from ``idempotency_key`` and ``input_fingerprint``:
        when a create fails for good, a re-submit of the same requests finds that file by its token and
        creates the batch on it instead of uploading a second copy.

        The batch's metadata records ``idempotency_key`` (the client's own key, which also makes an
        ambiguous create find its batch instead of creating another) and ``input_fingerprint``, and its
        ``ds_name`` carries the key, so :meth:`find_orphaned_batch` can find it.
        """
        lines = self._iter_lines(
            requests,
            model=model,
            idempotency_key=idempotency_key,
            output_spec=output_spec,
            system_prompt=system_prompt,
            max_tokens=max_tokens,
            request_params=request_params,
        )
        endpoint = endpoint_for(model)
        filename = f"{idempotency_key}.jsonl"
        token = _upload_token(idempotency_key, input_fingerprint)
        uploaded = self._stored_input(tokenized_filename(filename, token))
        upload_ambiguity: Ambiguity | None = None
        if uploaded is not None:
            log.info("Re-using input file %s of an earlier submit whose create failed", uploaded.id)
        else:
            with tempfile.TemporaryDirectory(prefix="dashscope-llm-batch-") as tmp:
                path = os.path.join(tmp, filename)
                write_requests(lines, path, endpoint=endpoint)
                upload = self._client.upload_file_receipt(path, upload_token=token)
            uploaded, upload_ambiguity = upload.value, upload.ambiguity
        receipt = self._client.create_batch_receipt(
            input_file_id=uploaded.id,
            endpoint=endpoint,
            completion_window=completion_window,
            metadata={
                "ds_name": f"{DS_NAME_PREFIX}{idempotency_key}",
                FINGERPRINT_KEY: input_fingerprint[:16],
            },
            idempotency_key=idempotency_key,
        )
        batch = receipt.value
        copies = LateCopies.of(receipt.ambiguity, upload_ambiguity, uploaded.filename)
        if (watch := LateWatch.of(batch, copies)) is not None:
            self._watches[batch.id] = watch
        return SubmitResult(batch_id=batch.id, provider_input_ref=uploaded.id)

    def _stored_input(self, filename: str) -> FileObject | None:
        """The input file an earlier submit stored under ``filename`` (its token) in the last day, if any."""
        since = datetime.now(UTC) - _REUSE_WINDOW
        for stored in self._client.list_files(purpose="batch", create_after=since - FILTER_SLACK):
            if stored.filename == filename and (stored.created_at or 0) >= since.timestamp():
                return stored
        return None

    def get_batch(self, batch_id: str) -> BatchState:
        """
        The batch's state; while a late copy of its create or upload may appear, read through its input
        file's list, cancelling a duplicate batch and deleting a late file at first sight.

        After this adapter's own ambiguous submit a finished batch is reported ``in_progress`` until the
        window has closed; a batch submitted elsewhere (another adapter instance, e.g. the triggerer's) is
        given the window from its ``created_at`` and looked after only while it runs.
        """
        watch = self._watches.get(batch_id)
        if watch is None:
            batch = self._client.retrieve_batch(batch_id)
            found = Ambiguity.after_created(batch.created_at, self._client.timeout)
            watch = LateWatch.of(batch, LateCopies.of(found, derived=True))
            if watch is None:
                return _state_of(batch)
            self._watches[batch_id] = watch
        now = time.time()
        last = now > watch.copies.until
        read = self._client.run_flow(lambda core: look_flow(core, watch, now, last=last))
        if batch_id not in read.batches:
            raise read.errors[batch_id]
        batch = read.batches[batch_id]
        if last or (batch.status.is_terminal and watch.copies.derived):
            del self._watches[batch_id]
        elif batch.status.is_terminal:  # the window is still open: report it unfinished, look again
            return replace(_state_of(batch), status="in_progress")
        return _state_of(batch)

    def cancel_batch(self, batch_id: str) -> None:
        self._client.cancel_batch(batch_id)

    def find_orphaned_batch(
        self, idempotency_key: str, input_fingerprint: str, not_before: str
    ) -> str | None:
        """
        Find the batch a submit created whose response was never recorded.

        The client's own lookup (:meth:`~airflow_provider_dashscope_batch.client.DashScopeClient.find_batch`)
        over the batches whose ``ds_name`` carries the key (a server-side filter): the newest whose
        metadata holds both ``idempotency_key`` and ``input_fingerprint``, created at or after
        ``not_before`` less the client's clock skew.
        """
        batch = self._client.find_batch(
            idempotency_key=idempotency_key,
            ds_name=f"{DS_NAME_PREFIX}{idempotency_key}",
            created_after=datetime.fromisoformat(not_before) if not_before else None,
            metadata={FINGERPRINT_KEY: input_fingerprint[:16]},
        )
        return batch.id if batch is not None else None

    # -------------------------------------------------------------------------------------- results
    def iter_results(self, batch_id: str) -> Iterator[RawResultItem]:
        batch = self._client.retrieve_batch(batch_id)
        return self._iter_files(batch_id, [batch.output_file_id, batch.error_file_id])

    def _iter_files(self, batch_id: str, file_ids: list[str | None]) -> Iterator[RawResultItem]:
        for file_id in file_ids:
            if not file_id:
                continue
            for line in iter_lines(self._client.iter_file_content(file_id)):
                try:
                    yield _parse_result_line(line)
                except ValueError as exc:
                    # The service returns the same line on every retry: skip it (common.ai counts the
                    # request as missing) rather than never landing the batch.
                    log.warning(
                        "Skipping an unparsable line of file %s of batch %s: %s", file_id, batch_id, exc
                    )

    def extract_output(self, raw: RawResultItem, spec: OutputSpec) -> ExtractedOutput:
        """
        The answer of a successful request: the message ``content``.

        ``reasoning_content`` (thinking models) is the reasoning, not the answer; it is kept only as
        diagnostic text when the model produced no content. Structured output wrapped in a Markdown code
        fence is unwrapped.
        """
        message = raw.raw if isinstance(raw.raw, dict) else {}
        content = _text(message.get("content"))
        if not content:
            return ExtractedOutput(kind="absent", text=_text(message.get("reasoning_content")))
        if not spec.is_structured:
            return ExtractedOutput(kind="text", text=content)
        return ExtractedOutput(kind="json_text", text=_strip_code_fence(content))


# ------------------------------------------------------------------------------------------- helpers
_STATUS_MAP = {
    BatchStatus.COMPLETED: "completed",
    BatchStatus.FAILED: "failed",
    BatchStatus.EXPIRED: "expired",
    BatchStatus.CANCELLED: "cancelled",
}


def _upload_token(idempotency_key: str, input_fingerprint: str) -> str:
    """The upload token of a submit's input file: the same requests under the same key, the same token."""
    return "llm-" + hashlib.sha256(f"{idempotency_key}\x1f{input_fingerprint}".encode()).hexdigest()[:40]


def _state_of(batch: Batch) -> BatchState:
    """Collapse a batch into common.ai's status vocabulary and per-status counts."""
    counts = None
    if batch.request_counts is not None:
        rc = batch.request_counts
        # Requests neither completed nor failed when a batch expires or is cancelled never ran.
        never_ran = max(rc.total - rc.completed - rc.failed, 0)
        counts = {
            "succeeded": rc.completed,
            "errored": rc.failed,
            "expired": never_ran if batch.status == BatchStatus.EXPIRED else 0,
            "cancelled": never_ran if batch.status == BatchStatus.CANCELLED else 0,
        }
    errors = batch.errors.data if batch.errors is not None else []
    message = "; ".join(
        f"{e.code or 'error'}: {e.message or ''}".rstrip(": ") + (f" (line {e.line})" if e.line else "")
        for e in errors
    )
    return BatchState(
        status=_STATUS_MAP.get(batch.status, "in_progress"),  # type: ignore[arg-type]
        counts=counts,
        error_message=message or None,
    )


def _parse_result_line(line: bytes) -> RawResultItem:
    """One output- or error-file line as a :class:`RawResultItem` (``raw`` is the message dict)."""
    try:
        parsed = ResultLine.model_validate_json(line)
        index = int((parsed.custom_id or "").rsplit("-", 1)[1])
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{exc} in {line[:200]!r}") from None
    response = parsed.response
    body = (response.body if response is not None else None) or {}
    status_code = response.status_code if response is not None else None
    body_error = body.get("error") if isinstance(body.get("error"), dict) else {}
    code = (parsed.error.code if parsed.error else None) or body_error.get("code")
    message = (parsed.error.message if parsed.error else None) or body_error.get("message")
    if parsed.error is not None or body_error or status_code != 200:
        status = _UNRUN_CODES.get(str(code), "errored")
        return RawResultItem(
            custom_id=parsed.custom_id or "",
            index=index,
            provider_status=status,  # type: ignore[arg-type]
            model=body.get("model"),
            usage=None,
            finish_reason=None,
            error={
                "type": "provider_error" if status == "errored" else status,
                "message": message or f"HTTP {status_code}",
                "provider_code": str(code) if code is not None else (str(status_code or "") or None),
                "stage": "provider",
            },
            raw=None,
        )
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    usage = body.get("usage") or {}
    return RawResultItem(
        custom_id=parsed.custom_id or "",
        index=index,
        provider_status="success",
        model=body.get("model"),
        usage={
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
        },
        finish_reason=choice.get("finish_reason"),
        error=None,
        raw=choice.get("message") or {},
    )


def _text(value: Any) -> str | None:
    """Message content as text: a string, or the text parts of a list of content parts."""
    if isinstance(value, list):
        value = "".join(part.get("text", "") for part in value if isinstance(part, dict))
    return value if isinstance(value, str) and value.strip() else None


def _strip_code_fence(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        first_newline = stripped.find("\n")
        if first_newline != -1:
            return stripped[first_newline + 1 : -3].strip()
    return text
