"""
The finish mailbox: how the api-server tells every triggerer which batches finished.

The receiver (on the api-server) and the deferred waits (in the triggerers, possibly on other hosts)
share only the metadata database, and a trigger reaches it only through the triggerer's supervisor.
The receiver therefore appends each verified finish to one Airflow Variable per connection,
``dashscope_batch_finished.<conn_id>``: a sequence number and the last :data:`MAILBOX_SIZE` batch ids.
Each triggerer reads that Variable once per round for all its waits of the connection
(:mod:`~airflow_provider_dashscope_batch.events.wake`), whatever their number.

The mailbox is a wake-up hint, not the record: the batch's status is always read from the service
before a wait ends, and the Asset event is the durable record of the finish. A reader that fell more
than :data:`MAILBOX_SIZE` finishes behind wakes all its waits of the connection once instead.

Nothing here imports Airflow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["MAILBOX_SIZE", "Mailbox", "asset_name", "asset_uri", "variable_key"]

#: Finishes a mailbox remembers.
MAILBOX_SIZE = 512


def variable_key(conn_id: str) -> str:
    """The Variable holding connection ``conn_id``'s mailbox."""
    return f"dashscope_batch_finished.{conn_id}"


def asset_name(conn_id: str) -> str:
    """Name of the Asset whose events are connection ``conn_id``'s verified batch finishes."""
    return f"dashscope_batch_finished.{conn_id}"


def asset_uri(conn_id: str) -> str:
    """URI of that Asset."""
    return f"dashscope-batch://{conn_id}/finished"


@dataclass(frozen=True)
class Mailbox:
    """
    The recent finishes of one connection.

    :param seq: How many finishes were ever posted (the sequence number of the newest).
    :param recent: ``(seq, batch_id)`` of the newest :data:`MAILBOX_SIZE` finishes, oldest first.
    """

    seq: int = 0
    recent: tuple[tuple[int, str], ...] = ()

    def posted(self, batch_id: str) -> Mailbox:
        """This mailbox with one more finish."""
        seq = self.seq + 1
        return Mailbox(seq, (*self.recent, (seq, batch_id))[-MAILBOX_SIZE:])

    def since(self, seq: int) -> tuple[list[str], bool]:
        """
        The batch ids posted after ``seq``, and whether some of them are no longer in the mailbox.

        :param seq: The newest sequence number the caller has seen.
        """
        ids = [batch_id for n, batch_id in self.recent if n > seq]
        oldest = self.recent[0][0] if self.recent else self.seq + 1
        return ids, seq < self.seq and oldest > seq + 1

    def __contains__(self, batch_id: object) -> bool:
        return any(batch_id == b for _, b in self.recent)

    def to_json(self) -> str:
        """The Variable's value."""
        return json.dumps({"seq": self.seq, "recent": [list(entry) for entry in self.recent]})

    @classmethod
    def from_value(cls, value: Any) -> Mailbox:
        """Read a Variable's value back; a missing or malformed value is an empty mailbox."""
        try:
            data = json.loads(value) if isinstance(value, (str, bytes)) else value
            recent = tuple((int(n), str(b)) for n, b in data["recent"])
            return cls(int(data["seq"]), recent)
        except (TypeError, ValueError, KeyError):
            return cls()
