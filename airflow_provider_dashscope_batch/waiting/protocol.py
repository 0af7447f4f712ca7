"""
How a wait for a DashScope batch goes and how it ends: the one module that owns the wait protocol.

The create and cancel operators (in-process or deferred), the sensor and the trigger all wait through
:class:`BatchWait` and judge the finished batch with :class:`OutcomePolicy`; the in-process loop
(:func:`wait_for_batch`) and the trigger's ``run()`` both end in one :class:`WaitEvent`, which is also
what crosses the triggerer boundary (:meth:`WaitEvent.to_payload` / :meth:`WaitEvent.from_payload`).
Nothing here imports Airflow.

Invariants:

* ``cancelling`` is not terminal: only ``completed``, ``failed``, ``expired`` and ``cancelled`` end a wait.
* A ``completed`` batch whose every request failed is not green by default.
* The deadline is wall-clock epoch seconds, so it means the same thing after a trigger is serialized and
  resumed in another process.
* One retry owner: while waiting, each poll is a single request (the client is told to send once) and
  :class:`BatchPoller` decides about errors, from the error's own ``retryable`` / ``retry_after``. A poll
  therefore costs exactly one request, and the poll schedule is the request rate.
* :class:`BatchPoller` takes ``now`` from its caller and returns decisions; callers do the I/O and sleep.

The default schedule keeps many concurrent waits inside the account's retrieve limit: the first poll of a
wait is spread over several intervals (waits deferred together do not poll together), intervals then grow
by ``backoff`` up to ``max_poll_interval`` with jitter, and a ``Retry-After`` pushes the next poll out.
``benchmarks/README.md`` replays the schedule for the largest fan-out and gives the measured peak.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from airflow_provider_dashscope_batch.client.errors import DashScopeError
from airflow_provider_dashscope_batch.client.types import Batch, BatchErrors, BatchStatus

__all__ = [
    "DEFAULT_ERROR_BUDGET",
    "DEFAULT_MAX_POLL_INTERVAL",
    "DEFAULT_POLL_BACKOFF",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_PROGRESS_INTERVAL",
    "BatchPoller",
    "BatchWait",
    "Outcome",
    "OutcomePolicy",
    "PollAction",
    "PollSchedule",
    "PollStep",
    "Verdict",
    "WaitEvent",
    "WaitEventKind",
    "WaitSettings",
    "kill_decision",
    "wait_for_batch",
]

DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_MAX_POLL_INTERVAL = 300.0
DEFAULT_POLL_BACKOFF = 1.5
DEFAULT_ERROR_BUDGET = 5
DEFAULT_PROGRESS_INTERVAL = 300.0


# --------------------------------------------------------------------------------------- outcome
class Outcome(StrEnum):
    """What a finished batch means for the Airflow task."""

    SUCCESS = "success"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Verdict:
    """
    The judgement of one finished batch.

    :param outcome: success, fail or skip.
    :param reason: One line for the task log / exception text (never holds secrets).
    """

    outcome: Outcome
    reason: str


@dataclass(frozen=True)
class OutcomePolicy:
    """
    Map a terminal batch to success, fail or skip.

    Each parameter accepts ``"success"``, ``"fail"`` or ``"skip"``. The defaults are the safe choice:
    only a batch that completed with at least one successful request is green.

    :param on_partial_failure: ``completed`` with some (not all) requests failed. Default ``success``
        (the error file holds the failed lines; the transfer operator can check counts).
    :param on_all_failed: ``completed`` but every request failed. Default ``fail``.
    :param on_expired: ``expired`` (the completion window ran out; finished requests are still billed
        and downloadable). Default ``fail``.
    :param on_cancelled: ``cancelled``. Default ``fail``.
    :param on_failed: ``failed`` (the service rejected the input file). Default ``fail``.
    """

    on_partial_failure: Outcome = Outcome.SUCCESS
    on_all_failed: Outcome = Outcome.FAIL
    on_expired: Outcome = Outcome.FAIL
    on_cancelled: Outcome = Outcome.FAIL
    on_failed: Outcome = Outcome.FAIL

    def __post_init__(self) -> None:
        for name in ("on_partial_failure", "on_all_failed", "on_expired", "on_cancelled", "on_failed"):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, Outcome(value))
            except ValueError:
                raise ValueError(f"{name}={value!r} is not one of {[o.value for o in Outcome]}") from None

    def evaluate(self, batch: Batch) -> Verdict:
        """
        Judge a finished batch.

        :param batch: The batch; must be terminal.
        :raises ValueError: if the batch is not terminal.
        """
        if not batch.status.is_terminal:
            raise ValueError(
                f"Batch {batch.id} is not finished (status {batch.status}); nothing to judge yet."
            )
        total, completed, failed = _counts(batch)
        tally = f"{completed} of {total} requests succeeded, {failed} failed"
        if batch.status == BatchStatus.COMPLETED:
            if failed and not completed:
                return Verdict(
                    self.on_all_failed, f"Batch {batch.id} completed but every request failed ({tally})."
                )
            if failed:
                return Verdict(
                    self.on_partial_failure, f"Batch {batch.id} completed with failures ({tally})."
                )
            return Verdict(Outcome.SUCCESS, f"Batch {batch.id} completed ({tally}).")
        if batch.status == BatchStatus.EXPIRED:
            return Verdict(self.on_expired, f"Batch {batch.id} expired before finishing ({tally}).")
        if batch.status == BatchStatus.CANCELLED:
            return Verdict(self.on_cancelled, f"Batch {batch.id} was cancelled ({tally}).")
        errors = "; ".join(_describe_errors(batch.errors))
        return Verdict(self.on_failed, f"Batch {batch.id} failed" + (f": {errors}" if errors else "."))


def _counts(batch: Batch) -> tuple[int, int, int]:
    counts = batch.request_counts
    return (counts.total, counts.completed, counts.failed) if counts is not None else (0, 0, 0)


def _describe_errors(errors: BatchErrors | None, limit: int = 5) -> list[str]:
    data = errors.data if errors is not None else []
    out = []
    for err in data[:limit]:
        line = f" (line {err.line})" if err.line is not None else ""
        out.append(f"{err.code or 'error'}{line}: {err.message or ''}".strip())
    if len(data) > limit:
        out.append(f"... and {len(data) - limit} more")
    return out


# --------------------------------------------------------------------------------------- polling
@dataclass(frozen=True, slots=True)
class PollSchedule:
    """
    How often to look at a batch.

    :param poll_interval: Shortest interval between two polls, seconds.
    :param max_poll_interval: Cap the interval grows to, seconds.
    :param backoff: Factor the interval grows by after each poll (1 keeps it fixed).
    :param first_poll_jitter: The first poll waits ``poll_interval × (1 + U(0, first_poll_jitter))`` so
        that many waits started together spread out.
    :param jitter: Later intervals are stretched by ``U(0, jitter)`` so the waits stay spread.
    """

    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL
    backoff: float = DEFAULT_POLL_BACKOFF
    first_poll_jitter: float = 3.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.poll_interval < 0 or self.max_poll_interval < self.poll_interval:
            raise ValueError("Need 0 <= poll_interval <= max_poll_interval.")
        if self.backoff < 1 or self.first_poll_jitter < 0 or self.jitter < 0:
            raise ValueError("Need backoff >= 1 and non-negative jitter.")


class PollAction(StrEnum):
    """What :class:`BatchPoller` decided."""

    WAIT = "wait"  # sleep ``delay``, then poll again
    DONE = "done"  # a terminal status was seen
    TIMEOUT = "timeout"  # the deadline passed
    ERROR = "error"  # stop: the error will not go away, or the error budget is spent


@dataclass(frozen=True, slots=True)
class PollStep:
    """
    One decision of :class:`BatchPoller`.

    :param action: What to do next.
    :param delay: Seconds to sleep before the next poll (``WAIT`` only).
    :param message: Why the wait ended (``TIMEOUT`` / ``ERROR``).
    """

    action: PollAction
    delay: float = 0.0
    message: str = ""


#: One jitter source for every poller: seeding a ``random.Random()`` reads the OS entropy pool, which
#: costs more than the rest of a trigger's start when a thousand triggers start together.
_JITTER = random.Random()


@dataclass(slots=True)
class BatchPoller:
    """
    Decide, poll after poll, whether to stop or how long to wait; never sleeps and never does I/O.

    :param schedule: The poll schedule.
    :param deadline: Wall-clock epoch seconds after which the wait ends with ``TIMEOUT`` (None: none).
    :param error_budget: Consecutive retryable errors tolerated before giving up (a good poll resets it).
    :param rng: Random source for jitter (tests pass a seeded one).
    """

    schedule: PollSchedule = field(default_factory=PollSchedule)
    deadline: float | None = None
    error_budget: int = DEFAULT_ERROR_BUDGET
    rng: random.Random = field(default_factory=lambda: _JITTER)
    polls: int = field(default=0, init=False)
    errors: int = field(default=0, init=False)
    _interval: float = field(default=0.0, init=False)

    def first_delay(self, now: float) -> PollStep:
        """The wait before the first poll (jittered), or ``TIMEOUT`` if the deadline already passed."""
        s = self.schedule
        self._interval = s.poll_interval
        return self._wait(s.poll_interval * (1 + self.rng.uniform(0, s.first_poll_jitter)), now)

    def on_status(self, status: BatchStatus, now: float) -> PollStep:
        """
        React to a successful poll.

        :param status: The batch status just read.
        :param now: Current wall-clock epoch seconds.
        """
        self.polls += 1
        self.errors = 0
        if BatchStatus(status).is_terminal:
            return PollStep(PollAction.DONE)
        return self._wait(self._next_interval(), now)

    def on_error(self, error: DashScopeError, now: float) -> PollStep:
        """
        React to a failed poll: retry a retryable error within the budget, honouring ``retry_after``.

        :param error: The client's error; its ``retryable`` and ``retry_after`` decide.
        :param now: Current wall-clock epoch seconds.
        """
        if not error.retryable:
            return PollStep(PollAction.ERROR, message=str(error))
        self.errors += 1
        if self.errors > self.error_budget:
            return PollStep(
                PollAction.ERROR,
                message=f"Gave up after {self.errors} consecutive transient errors; last: {error}",
            )
        return self._wait(max(self._next_interval(), error.retry_after or 0.0), now)

    def _next_interval(self) -> float:
        s = self.schedule
        current = self._interval or s.poll_interval
        self._interval = min(current * s.backoff, s.max_poll_interval)
        return current * (1 + self.rng.uniform(0, s.jitter))

    def _wait(self, delay: float, now: float) -> PollStep:
        if self.deadline is None:
            return PollStep(PollAction.WAIT, delay=delay)
        remaining = self.deadline - now
        if remaining <= 0:
            return PollStep(PollAction.TIMEOUT, message=self.timeout_message())
        return PollStep(PollAction.WAIT, delay=min(delay, remaining))

    def timeout_message(self) -> str:
        """Text of a timed-out wait."""
        return f"Stopped waiting: the deadline (epoch {self.deadline:.0f}) passed after {self.polls} polls."


@dataclass(frozen=True, slots=True)
class WaitSettings:
    """
    How a wait polls and when it ends: every trigger argument beyond the batches, declared once.

    The operators and the sensor build it, the triggers take it and serialize it (:meth:`to_dict`), so a
    new setting is one field here.

    :param poll_interval: Shortest seconds between two polls of one batch.
    :param max_poll_interval: Cap the interval grows to (at least ``poll_interval``).
    :param poll_backoff: Growth factor of the interval.
    :param deadline: Wall-clock epoch seconds after which a wait ends with a timeout.
    :param error_budget: Consecutive retryable polling errors tolerated per batch.
    :param cancel_on_kill: Cancel the batches when a user marks the deferred task failed (Airflow 3.3+).
    :param finish_events: The batches send finish events to this Airflow's receiver: a wait is also
        woken when the connection's mailbox names its batch (it polls on its schedule all the same).
    """

    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL
    poll_backoff: float = DEFAULT_POLL_BACKOFF
    deadline: float | None = None
    error_budget: int = DEFAULT_ERROR_BUDGET
    cancel_on_kill: bool = False
    finish_events: bool = False

    def __post_init__(self) -> None:
        poll = float(self.poll_interval)
        object.__setattr__(self, "poll_interval", poll)
        object.__setattr__(self, "max_poll_interval", max(float(self.max_poll_interval), poll))
        object.__setattr__(self, "poll_backoff", float(self.poll_backoff))
        object.__setattr__(self, "deadline", None if self.deadline is None else float(self.deadline))
        object.__setattr__(self, "error_budget", int(self.error_budget))
        if poll < 0 or self.poll_backoff < 1:
            raise ValueError("Need poll_interval >= 0 and poll_backoff >= 1.")

    @property
    def schedule(self) -> PollSchedule:
        """The poll schedule of these settings."""
        return PollSchedule(self.poll_interval, self.max_poll_interval, self.poll_backoff)

    def to_dict(self) -> dict[str, Any]:
        """Primitive form (trigger kwargs)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def of(cls, value: WaitSettings | Mapping[str, Any] | None) -> WaitSettings:
        """The settings given, or rebuilt from :meth:`to_dict`'s form, or the defaults (None)."""
        if isinstance(value, WaitSettings):
            return value
        return cls(**(value or {}))


# ----------------------------------------------------------------------------------------- event
class WaitEventKind(StrEnum):
    """How a wait ended."""

    TERMINAL = "terminal"  # the batch reached a terminal status
    TIMEOUT = "timeout"  # the deadline passed first
    ERROR = "error"  # polling failed for good, or the wait could not start
    LATE_COPIES = "late_copies"  # a late copy of the batch's create or upload was seen: remove it, wait again


@dataclass(frozen=True)
class WaitEvent:
    """
    The end of one wait; the trigger's event payload is its JSON form.

    :param kind: How the wait ended.
    :param batch_id: The batch waited for.
    :param batch: The last batch read (the terminal one for ``TERMINAL``), or None if none was read.
    :param message: One line for the task log / exception text (never holds secrets).
    :param late_batch_ids: ``LATE_COPIES``: unfinished duplicates of the batch (same key and input file).
    :param late_file_ids: ``LATE_COPIES``: late copies of its input file's upload.
    :param resume: ``LATE_COPIES``: the trigger's kwargs, to wait again with once the copies are removed.
    """

    kind: WaitEventKind
    batch_id: str
    batch: Batch | None
    message: str
    late_batch_ids: tuple[str, ...] = ()
    late_file_ids: tuple[str, ...] = ()
    resume: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind is WaitEventKind.TERMINAL and (self.batch is None or not self.batch.status.is_terminal):
            raise ValueError(f"A terminal event for batch {self.batch_id} needs its terminal batch.")

    def to_payload(self) -> dict[str, Any]:
        """The JSON payload of the trigger event (the late-copy fields only for ``LATE_COPIES``)."""
        payload = {
            "status": self.kind.value,
            "batch_id": self.batch_id,
            "batch": None if self.batch is None else self.batch.model_dump(mode="json"),
            "message": self.message,
        }
        if self.kind is WaitEventKind.LATE_COPIES:
            payload.update(
                late_batch_ids=list(self.late_batch_ids),
                late_file_ids=list(self.late_file_ids),
                resume=None if self.resume is None else dict(self.resume),
            )
        return payload

    @classmethod
    def from_payload(cls, payload: Any) -> WaitEvent:
        """
        Read a trigger event payload back.

        :raises ValueError: if the payload is not a well-formed wait event.
        """
        try:
            if not isinstance(payload, Mapping):
                raise TypeError("not a mapping")
            batch = payload.get("batch")
            resume = payload.get("resume")
            return cls(
                WaitEventKind(payload["status"]),
                str(payload["batch_id"]),
                None if batch is None else Batch.model_validate(batch),
                str(payload.get("message") or ""),
                tuple(str(i) for i in payload.get("late_batch_ids") or ()),
                tuple(str(i) for i in payload.get("late_file_ids") or ()),
                None if resume is None else dict(resume),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"Unexpected event from the DashScope batch trigger: {payload!r} ({exc})"
            ) from None


# ------------------------------------------------------------------------------------------ wait
@dataclass(slots=True)
class BatchWait:
    """
    One wait for one batch: feeds each read to a :class:`BatchPoller`, logs progress, ends in an event.

    Progress is logged when the status changes and otherwise at most every ``progress_interval``
    seconds (a status line with the request counts), so a stuck wait can be told from a slow batch
    without flooding the logs of many concurrent waits.

    :param batch_id: The batch to wait for.
    :param poller: The poll decisions.
    :param log: Where progress and retried errors go.
    :param progress_interval: Longest silence between two progress lines, seconds.
    :ivar status: The last status read.
    :ivar batch: The batch read by the poll that ended the wait (with :meth:`on_batch`: the last batch
        read; a wait that ends on errors after :meth:`on_read` keeps none).
    """

    batch_id: str
    poller: BatchPoller
    log: logging.Logger | Any
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    status: BatchStatus | None = field(default=None, init=False)
    batch: Batch | None = field(default=None, init=False)
    _logged_at: float | None = field(default=None, init=False)

    def start(self, now: float) -> PollStep:
        """The first decision: how long to wait before the first poll."""
        return self.poller.first_delay(now)

    def on_batch(self, batch: Batch, now: float) -> PollStep:
        """Record a successful read and decide what next."""
        step = self.on_read(batch.status, now, lambda: batch)
        self.batch = batch
        return step

    def on_read(self, status: BatchStatus, now: float, batch: Callable[[], Batch]) -> PollStep:
        """
        Record a successful read known by its status; ``batch()`` builds the batch read.

        The batch is built only for a progress line (a status change, or ``progress_interval`` of silence)
        and kept only when the wait ends, so the reads of a long wait keep nothing alive between polls:
        thousands of waits polling in one event loop then add next to nothing to the garbage collector's
        oldest generation (see :meth:`StatusReader.follow
        <airflow_provider_dashscope_batch.waiting.reader.StatusReader.follow>`).

        :param status: The status just read.
        :param now: Current wall-clock epoch seconds.
        :param batch: Builds the batch just read (raises :class:`DashScopeError` if it cannot).
        """
        changed, self.status = status != self.status, status
        step = self.poller.on_status(status, now)
        ends = step.action is not PollAction.WAIT
        if changed or self._logged_at is None or now - self._logged_at >= self.progress_interval:
            read = batch()
            total, completed, failed = _counts(read)
            self.log.info(
                "Batch %s is %s: %s of %s requests done, %s failed",
                self.batch_id,
                status,
                completed + failed,
                total,
                failed,
            )
            self._logged_at = now
            if ends:
                self.batch = read
        elif ends:
            self.batch = batch()
        return step

    def on_error(self, error: DashScopeError, now: float) -> PollStep:
        """Record a failed read and decide what next."""
        step = self.poller.on_error(error, now)
        if step.action is PollAction.WAIT:
            self.log.warning(
                "Polling batch %s failed (%s); next poll in %.0f s", self.batch_id, error, step.delay
            )
        return step

    def event(self, step: PollStep) -> WaitEvent:
        """The event that ends the wait after the poller's last (non-``WAIT``) decision."""
        if step.action is PollAction.DONE and self.batch is not None:
            return WaitEvent(
                WaitEventKind.TERMINAL,
                self.batch_id,
                self.batch,
                f"Batch {self.batch_id} is {self.batch.status}.",
            )
        if step.action is PollAction.TIMEOUT:
            return WaitEvent(WaitEventKind.TIMEOUT, self.batch_id, self.batch, step.message)
        return self.failed(step.message)

    def late_copies(self, batch_ids: Collection[str], file_ids: Collection[str]) -> WaitEvent:
        """A ``LATE_COPIES`` event: the wait saw these copies (the trigger adds its ``resume`` kwargs)."""
        found = [*(f"batch {i}" for i in batch_ids), *(f"file {i}" for i in file_ids)]
        return WaitEvent(
            WaitEventKind.LATE_COPIES,
            self.batch_id,
            self.batch,
            f"Late copies of batch {self.batch_id}'s create or upload: {', '.join(found)}.",
            tuple(batch_ids),
            tuple(file_ids),
        )

    def failed(self, why: str) -> WaitEvent:
        """An ``ERROR`` event: the wait failed for good or could not start."""
        return WaitEvent(
            WaitEventKind.ERROR, self.batch_id, self.batch, f"Waiting for batch {self.batch_id} failed: {why}"
        )


def wait_for_batch(
    read: Callable[[], Batch],
    wait: BatchWait,
    *,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> WaitEvent:
    """
    Wait in-process: sleep, ``read()`` the batch once per poll, until the wait ends.

    :param read: One status read of the batch, a single request (the client must not retry it).
    :param wait: The wait's state and decisions.
    :param sleep: How to sleep (tests may pass a fake).
    :param clock: Wall-clock epoch seconds.
    """
    step = wait.start(clock())
    while step.action is PollAction.WAIT:
        sleep(step.delay)
        try:
            batch = read()
        except DashScopeError as exc:
            step = wait.on_error(exc, clock())
        else:
            step = wait.on_batch(batch, clock())
    return wait.event(step)


# ------------------------------------------------------------------------------------- user action
def kill_decision(task_state: str | None, batch_id: str) -> tuple[bool, str]:
    """
    Whether a kill of a waiting task cancels its batch, and the log line that says why.

    Airflow kills a waiting task (the worker's ``on_kill``, the trigger's ``on_kill`` on 3.3+) for a
    clear, a mark failed, a mark success and a worker shutdown alike; the task instance's state right
    after tells them apart. Only ``failed`` (a user marked the task or its run failed) cancels: after a
    clear the next try re-attaches to the batch, after a mark success its results stay useful, after a
    worker shutdown the retry re-attaches. An unreadable state keeps the batch (a new try may own it).

    :param task_state: The task instance's state now (read by the Airflow layer, e.g.
        :func:`~airflow_provider_dashscope_batch.triggers.base.task_instance_state`).
    :param batch_id: The batch the task waits for.
    """
    if task_state == "failed":
        return True, f"Cancelling batch {batch_id}: the task was marked failed."
    if task_state in ("success", "skipped"):
        return False, (
            f"The task was marked {task_state} while batch {batch_id} is unfinished: the batch keeps "
            "running and its results stay downloadable; cancel it (DashScopeCancelBatchOperator) if "
            "they are not wanted."
        )
    if task_state is None:
        return (
            False,
            f"Not cancelling batch {batch_id}: the task's state is unknown, so a new try may own it.",
        )
    return False, (
        f"Not cancelling batch {batch_id}: the task instance is now {task_state!r} (cleared, retried or "
        "shutting down), and its next try re-attaches to the batch."
    )
