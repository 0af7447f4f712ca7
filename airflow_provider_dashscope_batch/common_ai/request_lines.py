"""
common.ai's requests as DashScope batch input lines, checked before anything is sent.

Each ``BatchRequest`` becomes one ``/v1/chat/completions`` line (``batch-test-model`` has its own
endpoint) whose body carries the structured-output directive (``json_schema``, or JSON mode with the
schema in the system prompt); the lines are generated lazily and streamed through the provider's own
preflight validation and cost estimate, the same ones ``submit`` writes.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from airflow.providers.common.ai.batch.base import BatchAdapter
from airflow.providers.common.ai.exceptions import (
    LLMBatchInputError,
    LLMBatchLimitExceededError,
    LLMBatchModelMismatchError,
)

from airflow_provider_dashscope_batch.cost.budget import CostCheckError, CostPolicy
from airflow_provider_dashscope_batch.cost.estimate import CostEstimator
from airflow_provider_dashscope_batch.cost.pricing import load_price_table
from airflow_provider_dashscope_batch.validation.builder import encode_line
from airflow_provider_dashscope_batch.validation.lines import MAX_LINE_BYTES
from airflow_provider_dashscope_batch.validation.rules import (
    MAX_CUSTOM_ID_CHARS,
    TEST_MODEL,
    TEST_MODEL_ENDPOINT,
    TEST_MODEL_MAX_FILE_BYTES,
    TEST_MODEL_MAX_LINES,
    ValidationReport,
    validate_jsonl,
)

if TYPE_CHECKING:
    from airflow.providers.common.ai.batch.base import BatchRequest
    from airflow.providers.common.ai.batch.output_schema import OutputSpec

__all__ = ["CHAT_ENDPOINT", "DashScopeRequestLinesMixin", "endpoint_for"]

#: The adapter's logger: the estimate table is the adapter's log line, as before this module was split out.
log = logging.getLogger("airflow_provider_dashscope_batch.common_ai.adapter")

CHAT_ENDPOINT = "/v1/chat/completions"


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


def _tee(chunks: Iterable[bytes], sink: BinaryIO | None) -> Iterator[bytes]:
    """``chunks``, each also written to ``sink`` (if any) as it passes."""
    for chunk in chunks:
        if sink is not None:
            sink.write(chunk)
        yield chunk


class DashScopeRequestLinesMixin(BatchAdapter):
    """
    The request half of :class:`~airflow_provider_dashscope_batch.common_ai.adapter.DashScopeBatchAdapter`.

    ``_price_region`` and ``_cost_policy`` are the adapter's (from the connection's host).
    """

    _price_region: str
    _cost_policy: CostPolicy

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
        (:func:`~airflow_provider_dashscope_batch.validation.rules.validate_jsonl`): 500 MB per file, 6 MB per
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
        keep = self._keep_requests()
        chunks = (encode_line(line) for line in lines)
        stream = io.BufferedReader(_ChunkReader(_tee(chunks, keep)), buffer_size=1 << 20)
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
        finally:
            if keep is not None:
                keep.close()

    def _keep_requests(self) -> BinaryIO | None:
        """Where ``validate_requests`` also writes the lines it checks (``None``: nowhere)."""
        return None

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
