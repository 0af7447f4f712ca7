"""
The finish watcher's queue source: an AMQP 0-9-1 queue that an EventBridge rule targets.

EventBridge delivers ``dashscope:System:BatchTaskFinish`` events to an ApsaraMQ for RabbitMQ queue, which
a private Airflow reads with outbound connections only. :class:`RabbitMQSource` takes the waiting
messages with ``basic.get`` (at most :data:`MAX_MESSAGES` a round) and reads each body defensively with
the receiver's parser (:func:`~.receiver.finish_batch_id`: bounded size and depth, the batch id looked for
where the undocumented ``data`` may carry it). It never decides what counts: the watcher confirms each
batch id with one read and acknowledges the messages only after the round's events were handed on and
its cursor written (:mod:`~.watcher`). A message that names no batch is dropped (acknowledged) with a
sanitized log line; nothing of a body reaches the log.

The queue's address and credentials live in an Airflow connection of their own (``queue_conn_id``):
host, port, login, password, the virtual host as schema, and the extras ``queue`` (required) and
``ssl`` (``amqps``; also implied by the connection type ``amqps``). Only the connection id travels in
the trigger's kwargs. The AMQP client, ``aiormq``, is the optional ``rabbitmq`` extra.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio.to_thread

from airflow_provider_dashscope_batch.events.receiver import MAX_BODY_BYTES, BadRequest, finish_batch_id
from airflow_provider_dashscope_batch.hooks.dashscope import ConnectionSetupError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "INSTALL_HINT",
    "MAX_MESSAGES",
    "Delivery",
    "QueueSettings",
    "QueueUnavailable",
    "RabbitMQSource",
    "parse",
]

log = logging.getLogger(__name__)

#: Messages taken from the queue in one round (the rest wait for the next round).
MAX_MESSAGES = 200
#: Seconds to connect, or to wait for one broker answer.
TIMEOUT = 10.0
INSTALL_HINT = "pip install 'airflow-provider-dashscope-batch[rabbitmq]'"


class QueueUnavailable(Exception):
    """The broker could not be reached or refused an operation (the round goes on without the queue)."""


@dataclass(frozen=True)
class QueueSettings:
    """
    Where the queue is: read from the queue connection, never put in trigger kwargs or logs.

    :param url: The ``amqp://`` or ``amqps://`` URL with credentials (hidden from ``repr``).
    :param queue: The queue's name.
    """

    url: str = field(repr=False)
    queue: str

    @classmethod
    def from_connection(cls, conn_id: str, conn: Any) -> QueueSettings:
        """The settings of Airflow connection ``conn`` (id ``conn_id``)."""
        if importlib.util.find_spec("aiormq") is None:
            raise ConnectionSetupError(f"The finish watcher's RabbitMQ source needs aiormq: {INSTALL_HINT}")
        extra: Mapping[str, Any] = conn.extra_dejson or {}
        queue = extra.get("queue")
        if not isinstance(queue, str) or not queue or not conn.host:
            raise ConnectionSetupError(
                f"The queue connection {conn_id!r} needs a host and the extra 'queue' (the queue's name)."
            )
        ssl = conn.conn_type == "amqps" or str(extra.get("ssl", "")).lower() in ("1", "true", "yes")
        scheme = "amqps" if ssl else "amqp"
        port = conn.port or (5671 if ssl else 5672)
        user = f"{quote(conn.login or '', safe='')}:{quote(conn.password or '', safe='')}@"
        vhost = quote(conn.schema or "/", safe="")
        return cls(f"{scheme}://{user}{conn.host}:{port}/{vhost}", queue)


@dataclass(frozen=True)
class Delivery:
    """
    One message taken from the queue.

    :param tag: Its delivery tag on the channel.
    :param batch_id: The batch id its body names; None when it names none (dropped).
    """

    tag: int
    batch_id: str | None


def parse(body: bytes) -> str | None:
    """The batch id a message body names, or None (logged without any of the body)."""
    if len(body) > MAX_BODY_BYTES:
        reason = f"larger than {MAX_BODY_BYTES} bytes"
    else:
        try:
            return finish_batch_id(body)
        except BadRequest as exc:
            reason = str(exc)
    log.warning("Dropped a queue message that names no finished batch (%s; %d bytes)", reason, len(body))
    return None


class RabbitMQSource:
    """
    One connection and channel to the queue, opened on first use and again after a failure.

    :param settings: Reads where the queue is (blocking: reads the queue connection), on every connect,
        so a connection fixed or rotated in Airflow is used from the next reconnect on.
    :param max_messages: Messages taken in one :meth:`take`.
    """

    def __init__(self, settings: Callable[[], QueueSettings], *, max_messages: int = MAX_MESSAGES) -> None:
        self.read_settings, self.max_messages = settings, max_messages
        self.queue = ""
        self._connection: Any = None
        self._channel: Any = None

    async def _open(self) -> Any:
        if self._channel is None or self._channel.is_closed:
            await self.aclose()
            settings = await anyio.to_thread.run_sync(self.read_settings)
            import aiormq

            self.queue = settings.queue
            self._connection = await aiormq.connect(settings.url)
            self._channel = await self._connection.channel()
        return self._channel

    async def take(self) -> list[Delivery]:
        """The messages waiting (at most ``max_messages``), unacknowledged."""
        taken: list[Delivery] = []
        try:
            channel = await self._open()  # checks first that the client is installed
            from pamqp.commands import Basic

            while len(taken) < self.max_messages:
                message = await channel.basic_get(self.queue, timeout=TIMEOUT)
                if not isinstance(message.delivery, Basic.GetOk):
                    break
                taken.append(Delivery(message.delivery.delivery_tag, parse(message.body)))
        except ConnectionSetupError as exc:
            raise QueueUnavailable(str(exc)) from None
        except Exception as exc:
            await self.aclose()  # the broker requeues what this channel took
            raise QueueUnavailable(type(exc).__name__) from None
        return taken

    async def settle(self, deliveries: Sequence[Delivery], *, ack: bool) -> None:
        """Acknowledge ``deliveries`` (handed on, or dropped), or give them back to the queue.

        One by one: on Airflow 3.3 a message waits for its event's persistence while later ones are settled.
        """
        if not deliveries:
            return
        channel = self._channel
        if channel is None or channel.is_closed:
            return  # the channel they came on closed: the broker gave them back to the queue
        try:
            for delivery in deliveries:
                if ack:
                    await channel.basic_ack(delivery.tag)
                else:
                    await channel.basic_nack(delivery.tag, requeue=True)
        except Exception as exc:
            await self.aclose()  # unacknowledged messages go back to the queue with the channel
            raise QueueUnavailable(type(exc).__name__) from None

    async def aclose(self) -> None:
        """Close the connection (its unacknowledged messages go back to the queue)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            try:
                await connection.close()
            except Exception:
                log.debug("Closing the queue connection failed", exc_info=True)
