"""Outcome policy and polling decisions for DashScope batches: pure code, no I/O, no Airflow.

The create operator, the cancel operator, the sensor and the trigger all wait through :class:`BatchPoller`
and judge the finished batch through :class:`OutcomePolicy`, so there is exactly one implementation of
"is it done, how long until the next look, and is the result green".

Invariants:

* ``cancelling`` is not terminal: only ``completed``, ``failed``, ``expired`` and ``cancelled`` end a wait.
* A ``completed`` batch whose every request failed is not green by default.
* The deadline is wall-clock epoch seconds, so it means the same thing after a trigger is serialized and
  resumed in another process (a ``time.monotonic`` deadline would restart with the triggerer).
* :class:`BatchPoller` takes ``now`` from its caller and returns decisions; callers do the I/O and sleep.

Default poll schedule, sized for the account's retrieve limit of 1000 requests/min when one triggerer
holds the maximum of 1000 concurrent batches (the service allows 1000 running batches per account):

* no batch is polled more often than every ``poll_interval`` = 60 s (the service docs ask for > 1 min
  with exponential backoff), so 1000 waits make at most 1000 polls in any minute, whatever their phase;
* each first poll lands uniformly in ``[60 s, 240 s]`` (``first_poll_jitter`` = 3 × the interval), so
  1000 waits deferred at the same instant (a DAG fan-out, a triggerer restart) spread their first polls
  over 3 minutes; second polls then overlap the tail of that spread, and a replay of these decisions
  for 1000 simultaneous waits peaks at about 820 polls in its busiest minute (``benchmarks/README.md``;
  with a 1.5 × spread the peak was about 980);
* intervals grow ×1.5 (60, 90, 135, 202, 300 s) to the cap ``max_poll_interval`` = 300 s and each is
  stretched by up to 10 % jitter, so the waits stay spread and settle below 1000 / 300 s = 200 polls/min;
  detection of a finished batch is then at most 5 min late on a job that runs for hours;
* a 429 with ``Retry-After`` pushes the next poll out to at least that many seconds.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from airflow_provider_dashscope_batch.models import BatchStatus

__all__ = [
    "DEFAULT_ERROR_BUDGET",
    "DEFAULT_MAX_POLL_INTERVAL",
    "DEFAULT_POLL_BACKOFF",
    "DEFAULT_POLL_INTERVAL",
    "BatchPoller",
    "Outcome",
    "OutcomePolicy",
    "PollSchedule",
    "PollStep",
    "Verdict",
    "is_terminal",
]

DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_MAX_POLL_INTERVAL = 300.0
DEFAULT_POLL_BACKOFF = 1.5
DEFAULT_ERROR_BUDGET = 5


def is_terminal(status: str | None) -> bool:
    """Whether a batch status will never change again (``cancelling`` and unknown statuses are not)."""
    return status is not None and BatchStatus(status).is_terminal


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

    def evaluate(self, batch: Mapping[str, Any]) -> Verdict:
        """
        Judge a batch given as a JSON dict (``Batch.model_dump(mode="json")`` or a trigger event's batch).

        :param batch: The batch; must be terminal.
        :raises ValueError: if the batch is not terminal.
        """
        status = batch.get("status")
        batch_id = batch.get("id", "?")
        if not is_terminal(status):
            raise ValueError(f"Batch {batch_id} is not finished (status {status!r}); nothing to judge yet.")
        counts = batch.get("request_counts") or {}
        total, completed, failed = (int(counts.get(k) or 0) for k in ("total", "completed", "failed"))
        tally = f"{completed} of {total} requests succeeded, {failed} failed"
        if status == BatchStatus.COMPLETED:
            if failed and not completed:
                return Verdict(
                    self.on_all_failed, f"Batch {batch_id} completed but every request failed ({tally})."
                )
            if failed:
                return Verdict(
                    self.on_partial_failure, f"Batch {batch_id} completed with failures ({tally})."
                )
            return Verdict(Outcome.SUCCESS, f"Batch {batch_id} completed ({tally}).")
        if status == BatchStatus.EXPIRED:
            return Verdict(self.on_expired, f"Batch {batch_id} expired before finishing ({tally}).")
        if status == BatchStatus.CANCELLED:
            return Verdict(self.on_cancelled, f"Batch {batch_id} was cancelled ({tally}).")
        errors = "; ".join(_describe_errors(batch.get("errors")))
        return Verdict(self.on_failed, f"Batch {batch_id} failed" + (f": {errors}" if errors else "."))


def _describe_errors(errors: Any, limit: int = 5) -> list[str]:
    data = (errors.get("data") or []) if isinstance(errors, Mapping) else []
    out = []
    for err in data[:limit]:
        line = f" (line {err['line']})" if err.get("line") is not None else ""
        out.append(f"{err.get('code') or 'error'}{line}: {err.get('message') or ''}".strip())
    if len(data) > limit:
        out.append(f"... and {len(data) - limit} more")
    return out


@dataclass(frozen=True)
class PollSchedule:
    """
    How often to look at a batch.

    :param poll_interval: Shortest interval between two polls, seconds (default 60).
    :param max_poll_interval: Cap the interval grows to, seconds (default 300).
    :param backoff: Factor the interval grows by after each poll (default 1.5; 1 keeps it fixed).
    :param first_poll_jitter: The first poll waits ``poll_interval × (1 + U(0, first_poll_jitter))``
        (default 1.5) so that many waits started together spread out.
    :param jitter: Later intervals are stretched by ``U(0, jitter)`` (default 0.1).
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


@dataclass(frozen=True)
class PollStep:
    """
    One decision of :class:`BatchPoller`.

    :param action: ``"done"`` (terminal status seen), ``"wait"`` (sleep ``delay`` then poll again),
        ``"timeout"`` (the deadline passed) or ``"error"`` (stop; the error is not worth retrying or the
        error budget is spent).
    :param delay: Seconds to sleep before the next poll (``"wait"`` only).
    :param message: Why the wait ended (``"timeout"`` / ``"error"``).
    """

    action: str
    delay: float = 0.0
    message: str = ""


@dataclass
class BatchPoller:
    """
    Decide, poll after poll, whether to stop or how long to wait; never sleeps and never does I/O.

    :param schedule: The poll schedule.
    :param deadline: Wall-clock epoch seconds after which the wait ends with ``"timeout"`` (None: none).
    :param error_budget: Consecutive transient errors tolerated before giving up (a good poll resets it).
    :param rng: Random source for jitter (tests pass a seeded one).
    """

    schedule: PollSchedule = field(default_factory=PollSchedule)
    deadline: float | None = None
    error_budget: int = DEFAULT_ERROR_BUDGET
    rng: random.Random = field(default_factory=random.Random)
    polls: int = field(default=0, init=False)
    errors: int = field(default=0, init=False)
    _interval: float = field(default=0.0, init=False)

    def first_delay(self, now: float) -> PollStep:
        """The wait before the first poll (jittered), or ``"timeout"`` if the deadline already passed."""
        s = self.schedule
        self._interval = s.poll_interval
        return self._wait(s.poll_interval * (1 + self.rng.uniform(0, s.first_poll_jitter)), now)

    def on_status(self, status: str | None, now: float) -> PollStep:
        """
        React to a successful poll.

        :param status: The batch status just read.
        :param now: Current wall-clock epoch seconds.
        """
        self.polls += 1
        self.errors = 0
        if is_terminal(status):
            return PollStep("done")
        return self._wait(self._next_interval(), now)

    def on_error(
        self, error: str, *, transient: bool, now: float, retry_after: float | None = None
    ) -> PollStep:
        """
        React to a failed poll.

        :param error: Description of the error (no secrets), used in the final message.
        :param transient: Whether the error may go away (429, 5xx, connection trouble).
        :param now: Current wall-clock epoch seconds.
        :param retry_after: The service's ``Retry-After``, seconds, if it sent one.
        """
        if not transient:
            return PollStep("error", message=error)
        self.errors += 1
        if self.errors > self.error_budget:
            return PollStep(
                "error", message=f"Gave up after {self.errors} consecutive transient errors; last: {error}"
            )
        return self._wait(max(self._next_interval(), retry_after or 0.0), now)

    def _next_interval(self) -> float:
        s = self.schedule
        current = self._interval or s.poll_interval
        self._interval = min(current * s.backoff, s.max_poll_interval)
        return current * (1 + self.rng.uniform(0, s.jitter))

    def _wait(self, delay: float, now: float) -> PollStep:
        if self.deadline is None:
            return PollStep("wait", delay=delay)
        remaining = self.deadline - now
        if remaining <= 0:
            return PollStep("timeout", message=self.timeout_message())
        return PollStep("wait", delay=min(delay, remaining))

    def timeout_message(self) -> str:
        """Text of a timed-out wait."""
        return f"Stopped waiting: the deadline (epoch {self.deadline:.0f}) passed after {self.polls} polls."
