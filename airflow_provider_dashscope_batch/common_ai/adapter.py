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

Rounds
    With ``resubmit_rounds`` > 0 (the host's query, ``?resubmit_rounds=1``, or the constructor; default 0)
    a batch that ends short of the job -- ``expired``, ``cancelled`` or ``completed`` with transient
    failures -- is followed by a round of the request lines minus every answered and every permanently
    failed request, as :class:`~airflow_provider_dashscope_batch.operators.batch.DashScopeCreateBatchOperator`
    does (``resubmit_errors``, e.g. ``?resubmit_errors=DataInspectionFailed:false,400:true``, overrides
    which failures are sent again). The batch id common.ai records stays the first round's; ``get_batch``
    reports the job (in progress while a round runs) and ``iter_results`` yields each request once, its
    first success, else its last error (:mod:`.rounds`). Only an adapter holding the request lines (the
    worker's, after ``validate_requests``) builds a round: with ``deferrable=False`` every round runs in
    the task; a deferred task's triggerer only waits for the rounds that exist, and a retry builds the
    next one when it re-attaches.

Input files
    The input file is uploaded under a token digested from the idempotency key and the input
    fingerprint, so a re-submit after a create that failed for good re-uses that file (found by its
    token, within a day) instead of uploading a second copy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from airflow.providers.common.ai.batch.base import (
    BatchAdapter,
    BatchState,
    ExtractedOutput,
    RawResultItem,
    SubmitResult,
)
from airflow.providers.common.compat.sdk import mask_secret

from airflow_provider_dashscope_batch.client import FILTER_SLACK, DashScopeClient, tokenized_filename
from airflow_provider_dashscope_batch.client.ambiguity import Ambiguity
from airflow_provider_dashscope_batch.client.types import BatchStatus, FileObject
from airflow_provider_dashscope_batch.common_ai.connection import (
    API_PATH,
    COST_PARAMS,
    cost_settings,
    resolve_host,
    round_settings,
)
from airflow_provider_dashscope_batch.common_ai.request_lines import (
    CHAT_ENDPOINT,
    DashScopeRequestLinesMixin,
    endpoint_for,
)
from airflow_provider_dashscope_batch.common_ai.result_items import (
    message_text,
    parse_result_line,
    state_of,
    strip_code_fence,
)
from airflow_provider_dashscope_batch.common_ai.rounds import (
    job_batch,
    meter_for,
    next_round,
    result_lines,
    round_batches,
)
from airflow_provider_dashscope_batch.cost.pricing import region_of
from airflow_provider_dashscope_batch.hooks.dashscope import account_budget
from airflow_provider_dashscope_batch.jobs.failures import ResubmitErrors
from airflow_provider_dashscope_batch.operators.rounds import JobRounds
from airflow_provider_dashscope_batch.results.lines import iter_lines
from airflow_provider_dashscope_batch.validation.builder import write_requests
from airflow_provider_dashscope_batch.validation.rules import (
    MAX_FILE_BYTES,
    MAX_LINES,
)
from airflow_provider_dashscope_batch.waiting.late import LateCopies, LateWatch

if TYPE_CHECKING:
    from airflow.providers.common.ai.batch.base import BatchRequest
    from airflow.providers.common.ai.batch.output_schema import OutputSpec

__all__ = [
    "API_KEY_ENV",
    "API_PATH",
    "CHAT_ENDPOINT",
    "COST_PARAMS",
    "DS_NAME_PREFIX",
    "FINGERPRINT_KEY",
    "DashScopeBatchAdapter",
    "cost_settings",
    "endpoint_for",
    "resolve_host",
]

log = logging.getLogger(__name__)

#: Environment variable the DashScope SDKs read the API key from; used when the connection has none.
API_KEY_ENV = "DASHSCOPE_API_KEY"
#: ``ds_name`` prefix of the batches this adapter creates; narrows the orphan search server-side.
DS_NAME_PREFIX = "airflow-llm-batch-"
FINGERPRINT_KEY = "input_fingerprint"

#: How long after a create failed a re-submit still re-uses its input file.
_REUSE_WINDOW = timedelta(days=1)


class DashScopeBatchAdapter(DashScopeRequestLinesMixin, BatchAdapter):
    """
    Batch adapter for the DashScope (Alibaba Cloud Model Studio) OpenAI-compatible Batch API.

    :param api_key: The DashScope API key (the connection's password); ``DASHSCOPE_API_KEY`` when empty.
    :param base_url: The connection's host: empty, a region id or a compatible-mode base URL, optionally
        with ``?workspace=<id>`` (see :func:`resolve_host`).
    :param client: A pre-built :class:`~airflow_provider_dashscope_batch.client.DashScopeClient`.
    :param resubmit_rounds: Most follow-up rounds after the first batch (default: the host's
        ``resubmit_rounds``, else 0: one batch).
    :param resubmit_errors: Which failed requests a round sends again, overriding the default
        (transient: HTTP 429/5xx or a throttling/service-fault code; permanent: the rest), as the
        create operator's ``resubmit_errors`` (default: the host's).
    """

    name = "dashscope"
    conn_types = frozenset({"pydanticai", "dashscope"})
    max_requests = MAX_LINES
    max_payload_bytes = MAX_FILE_BYTES
    allows_per_request_model = False

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        client: Any | None = None,
        resubmit_rounds: int | None = None,
        resubmit_errors: Mapping[int | str, bool] | None = None,
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
        rounds, policy = round_settings(base_url)
        if resubmit_rounds is not None:
            if not isinstance(resubmit_rounds, int) or resubmit_rounds < 0:
                raise ValueError(f"resubmit_rounds must be an int >= 0; got {resubmit_rounds!r}")
            rounds = resubmit_rounds
        self._max_rounds = 1 + rounds
        self._resubmit_errors = policy if resubmit_errors is None else ResubmitErrors.of(resubmit_errors)
        # the request lines validate_requests generated (written only when rounds may follow)
        self._spool: Path | None = None
        # the late-copy look-outs of the batches this adapter submitted or polls, by batch id
        self._watches: dict[str, LateWatch] = {}

    # ---------------------------------------------------------------------------------------- batch
    def _keep_requests(self) -> BinaryIO | None:
        """
        With rounds, a fresh temporary file for the request lines ``validate_requests`` checks.

        common.ai validates before every submit and every re-attach, so the worker's adapter holds the
        lines a follow-up round is built from (removed by :meth:`close`).
        """
        self._drop_lines()
        if self._max_rounds <= 1:
            return None
        self._spool = Path(tempfile.mkdtemp(prefix="dashscope-llm-source-")) / "requests.jsonl"
        return self._spool.open("wb")

    def _drop_lines(self) -> None:
        if self._spool is not None:
            shutil.rmtree(self._spool.parent, ignore_errors=True)
            self._spool = None

    def close(self) -> None:
        self._drop_lines()
        super().close()

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
        The batch's state; with rounds, the job's whose first batch it is (see :meth:`_job_state`).
        """
        state = self._batch_state(batch_id)
        if self._max_rounds <= 1 or state.status == "in_progress":
            return state
        return self._job_state(batch_id)

    def _job_state(self, batch_id: str) -> BatchState:
        """
        The job of first batch ``batch_id`` once that batch is terminal: in progress while its latest round
        runs or a next round is due (created here when this adapter holds the request lines), else the
        job's ending (:func:`~.rounds.job_batch`).
        """
        first = self._client.retrieve_batch(batch_id)
        ds_name = str((first.metadata or {}).get("ds_name") or f"{DS_NAME_PREFIX}{batch_id}")
        batches = round_batches(self._client, first, ds_name)
        if not batches[-1].status.is_terminal:
            return state_of(batches[-1])
        if self._spool is None:
            job = job_batch(batches, None)
            counts = job.request_counts
            due = batches[-1].status != BatchStatus.FAILED and len(batches) < self._max_rounds
            if due and counts is not None and counts.completed < counts.total:
                log.warning(
                    "Batch %s ended %s with %s of %s requests not answered, and this adapter (a deferred "
                    "task's triggerer) does not hold the request lines a follow-up round is built from: "
                    "wait with deferrable=False, or let a retry (fail_on_partial_error=True) send the rest.",
                    batches[-1].id,
                    batches[-1].status,
                    counts.total - counts.completed,
                    counts.total,
                )
            return state_of(job)
        region = self._price_region
        rounds = JobRounds(
            self._client, self._spool, self._resubmit_errors, log, meter=lambda: meter_for(region)
        )
        created = next_round(
            self._client,
            rounds,
            batches,
            ds_name=ds_name,
            key16=ds_name.removeprefix(DS_NAME_PREFIX),
            carried={FINGERPRINT_KEY: str((first.metadata or {}).get(FINGERPRINT_KEY, ""))},
            max_rounds=self._max_rounds,
            price_region=region,
            cost_policy=self._cost_policy,
        )
        if created is not None:
            return replace(state_of(created), status="in_progress")
        return state_of(job_batch(batches, rounds))

    def _batch_state(self, batch_id: str) -> BatchState:
        """
        One batch's state; while a late copy of its create or upload may appear, read through its input
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
                return state_of(batch)
            self._watches[batch_id] = watch
        now = time.time()
        last = now > watch.copies.until
        read = watch.look(self._client, now, last=last)
        if batch_id not in read.batches:
            raise read.errors[batch_id]
        batch = read.batches[batch_id]
        if last or (batch.status.is_terminal and watch.copies.derived):
            del self._watches[batch_id]
        elif batch.status.is_terminal:  # the window is still open: report it unfinished, look again
            return replace(state_of(batch), status="in_progress")
        return state_of(batch)

    def cancel_batch(self, batch_id: str) -> None:
        """Cancel the batch; with rounds, the job's running round (the first batch may be over)."""
        if self._max_rounds > 1:
            first = self._client.retrieve_batch(batch_id)
            if first.status.is_terminal:
                ds_name = str((first.metadata or {}).get("ds_name") or f"{DS_NAME_PREFIX}{batch_id}")
                batch_id = round_batches(self._client, first, ds_name)[-1].id
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
        """The batch's results; with rounds, the job's: each request once, first success else last error."""
        batch = self._client.retrieve_batch(batch_id)
        if self._max_rounds > 1:
            ds_name = str((batch.metadata or {}).get("ds_name") or f"{DS_NAME_PREFIX}{batch_id}")
            lines = result_lines(self._client, round_batches(self._client, batch, ds_name))
        else:
            lines = (
                (file_id, line)
                for file_id in (batch.output_file_id, batch.error_file_id)
                if file_id
                for line in iter_lines(self._client.iter_file_content(file_id))
            )
        return self._parsed(batch_id, lines)

    @staticmethod
    def _parsed(batch_id: str, lines: Iterator[tuple[str, bytes]]) -> Iterator[RawResultItem]:
        for file_id, line in lines:
            try:
                yield parse_result_line(line)
            except ValueError as exc:
                # The service returns the same line on every retry: skip it (common.ai counts the
                # request as missing) rather than never landing the batch.
                log.warning("Skipping an unparsable line of file %s of batch %s: %s", file_id, batch_id, exc)

    def extract_output(self, raw: RawResultItem, spec: OutputSpec) -> ExtractedOutput:
        """
        The answer of a successful request: the message ``content``.

        ``reasoning_content`` (thinking models) is the reasoning, not the answer; it is kept only as
        diagnostic text when the model produced no content. Structured output wrapped in a Markdown code
        fence is unwrapped.
        """
        message = raw.raw if isinstance(raw.raw, dict) else {}
        content = message_text(message.get("content"))
        if not content:
            return ExtractedOutput(kind="absent", text=message_text(message.get("reasoning_content")))
        if not spec.is_structured:
            return ExtractedOutput(kind="text", text=content)
        return ExtractedOutput(kind="json_text", text=strip_code_fence(content))


def _upload_token(idempotency_key: str, input_fingerprint: str) -> str:
    """The upload token of a submit's input file: the same requests under the same key, the same token."""
    return "llm-" + hashlib.sha256(f"{idempotency_key}\x1f{input_fingerprint}".encode()).hexdigest()[:40]
