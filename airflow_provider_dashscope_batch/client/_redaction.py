"""Keeping the API key out of logs: ``KeyRedactingFilter`` on the HTTP stack's loggers.

Errors are scrubbed where they are built (:meth:`~._core.ClientCore.scrub`); this filter covers what
``httpx`` and ``httpcore`` log themselves.
"""

from __future__ import annotations

import logging
from typing import ClassVar

#: Loggers of the HTTP stack whose records may quote response headers (where a gateway can echo the key).
HTTP_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


class KeyRedactingFilter(logging.Filter):
    """
    Scrubs the API keys of this process's clients from the HTTP stack's log records.

    ``httpcore`` logs response headers at DEBUG; a gateway that echoes the ``Authorization`` header would
    otherwise put the key into the logs. Installed once on ``HTTP_LOGGERS`` by the first client.
    """

    _keys: ClassVar[frozenset[str]] = frozenset()
    _installed: ClassVar[bool] = False

    @classmethod
    def protect(cls, key: str) -> None:
        """Scrub ``key`` from now on (and install the filter on first use)."""
        cls._keys = cls._keys | {key}  # replaced, never mutated: records may be filtered in other threads
        if not cls._installed:
            cls._installed = True
            for name in HTTP_LOGGERS:
                logging.getLogger(name).addFilter(cls())

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        leaked = [key for key in self._keys if key in message]
        if leaked:
            for key in leaked:
                message = message.replace(key, "***")
            record.msg, record.args = message, None
        return True
