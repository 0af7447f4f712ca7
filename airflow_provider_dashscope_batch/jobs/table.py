"""
One row per request over a job's batches: which error lines a later batch of the job supersedes.

A job's rounds never send an answered request again, so each request has at most one output line over
all its batches; a failed one may have an error line in several rounds, and a later answer or error
supersedes it. The table keeps the first success, else the last error. Only error lines that a later
batch could supersede are remembered (never the first batch's answers), so memory grows with the
failures, not the job. Pure code: no I/O, no Airflow.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SupersededErrors"]


class SupersededErrors:
    """
    Fed each batch's result ids in order, says which error lines of earlier batches to leave out.

    Feed batch 0's error ids, then for each later batch its output ids and its error ids; a batch's
    :meth:`of` is final once every later batch is fed.
    """

    def __init__(self) -> None:
        self._last_error: dict[str, int] = {}
        self._superseded: dict[int, set[str]] = {}

    def feed(self, index: int, ids: Iterable[str | None], *, errors: bool) -> None:
        """Take batch ``index``'s output (``errors=False``) or error ids."""
        for custom_id in ids:
            if custom_id is None:
                continue
            earlier = self._last_error.pop(custom_id, None)
            if earlier is not None and earlier < index:
                self._superseded.setdefault(earlier, set()).add(custom_id)
            if errors:
                self._last_error[custom_id] = index

    def of(self, index: int) -> set[str]:
        """The ids whose error line in batch ``index`` a later batch superseded."""
        return self._superseded.get(index, set())
