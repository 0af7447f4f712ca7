"""
Which failed requests of a batch are worth sending again: a typed classification, overridable.

A request of a finished batch is *answered* (a line in the output file), *failed* (a line in the error
file) or *never ran* (no line in either: an expired or cancelled batch stops before it). A failure is
*transient* when its HTTP status is 429 or 5xx, or its code is one the service uses for throttling and
internal faults (:data:`TRANSIENT_CODES`, from the error-code page and the HTTP errors the API answers
with); every other failure is *permanent* (a 400 ``InvalidParameter``, content inspection, a context
too long): sent again it would fail again, and only cost a round. Pure code: no I/O, no Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["TRANSIENT_CODES", "FailureKind", "ResubmitErrors"]

#: Error codes of throttling and service faults (Model Studio's error-code page; the 429/5xx bodies).
TRANSIENT_CODES = frozenset(
    {
        "limit_requests",
        "Throttling",
        "Throttling.RateQuota",
        "Throttling.AllocationQuota",
        "InternalError",
        "InternalError.Algo",
        "ServiceUnavailable",
        "RequestTimeOut",
        "BadGateway",
        "GatewayTimeout",
    }
)


class FailureKind(StrEnum):
    """Why a request of a finished round has no answer."""

    NEVER_RAN = "never_ran"  # no line in the output or the error file: sent again
    TRANSIENT = "transient"  # throttled or a service fault: sent again
    PERMANENT = "permanent"  # the request itself is the problem: never sent again, ends as an error row


@dataclass(frozen=True)
class ResubmitErrors:
    """
    The classification of failed requests, with the user's overrides.

    A code's override wins over a status's, which wins over the default (transient: status 429 or
    5xx, or a code in :data:`TRANSIENT_CODES`; permanent: everything else).

    :param statuses: HTTP status -> ``True`` (send again) or ``False`` (never).
    :param codes: Error code -> ``True`` or ``False``.
    """

    statuses: Mapping[int, bool] = field(default_factory=dict)
    codes: Mapping[str, bool] = field(default_factory=dict)

    @classmethod
    def of(cls, overrides: Mapping[int | str, bool] | ResubmitErrors | None) -> ResubmitErrors:
        """
        Read ``resubmit_errors``: a mapping whose int (or all-digit) keys are HTTP statuses, other keys codes.

        :raises ValueError: for a value that is not a bool, or a status outside 400-599.
        """
        if isinstance(overrides, ResubmitErrors):
            return overrides
        statuses: dict[int, bool] = {}
        codes: dict[str, bool] = {}
        for key, resend in (overrides or {}).items():
            if not isinstance(resend, bool):
                raise ValueError(f"resubmit_errors[{key!r}] must be True or False; got {resend!r}")
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                status = int(key)
                if not 400 <= status <= 599:
                    raise ValueError(f"resubmit_errors: {key!r} is not an HTTP error status (400-599)")
                statuses[status] = resend
            else:
                codes[str(key)] = resend
        return cls(statuses, codes)

    def kind(self, status: int | None, code: str | None) -> FailureKind:
        """The kind of one failure, known by its HTTP status and error code (either may be missing)."""
        if code is not None and code in self.codes:
            return FailureKind.TRANSIENT if self.codes[code] else FailureKind.PERMANENT
        if status is not None and status in self.statuses:
            return FailureKind.TRANSIENT if self.statuses[status] else FailureKind.PERMANENT
        if status is not None and (status == 429 or 500 <= status <= 599):
            return FailureKind.TRANSIENT
        return FailureKind.TRANSIENT if code in TRANSIENT_CODES else FailureKind.PERMANENT
