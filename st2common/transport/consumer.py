"""The consumer base: decode, call the handler, ack after the work.

A handler that raises gets its message redelivered (published again with a
redelivery count in its headers) up to ``max_redeliveries`` times; after
that its ``give_up`` hook marks the record failed and the message is acked.
Messages are acked only once the handler has returned, so a crash before
that leaves the message on a broker that keeps unacked messages (RabbitMQ);
the embedded bus loses it, which the start-up sweeps make good.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Iterable

import eventlet
import kombu
from kombu import Queue

from st2common.transport.publisher import Publisher

LOG = logging.getLogger(__name__)

REDELIVERY_HEADER = "x-st2-redeliveries"


class Handler:
    """What a consumer does with each message of its queue; hooks default to no-ops."""

    #: The queue this handler consumes (a kombu Queue, set by the subclass or its factory).
    queue: Queue

    def handle(self, body: dict[str, Any]) -> None:
        """Do the work for one message; raise to have it redelivered."""

    def give_up(self, body: dict[str, Any], error: BaseException) -> None:
        """Called once a message has failed every delivery: mark its record failed."""


class Consumer:
    """Runs handlers for their queues on one connection, each message in a green thread."""

    def __init__(self, connection: kombu.Connection, publisher: Publisher, handlers: Iterable[Handler],
                 max_redeliveries: int = 3, pool_size: int = 64) -> None:
        self.connection = connection
        self.publisher = publisher
        self.handlers = list(handlers)
        self.max_redeliveries = max_redeliveries
        self.pool = eventlet.GreenPool(pool_size)
        self.pool_size = pool_size
        self._ack_lock = threading.Lock()
        self._stopping = threading.Event()
        self._ready = threading.Event()

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Consume until stop(); reconnects when the connection drops."""
        while not self._stopping.is_set():
            try:
                self._consume()
            except (ConnectionError, socket.error, OSError, kombu.exceptions.OperationalError) as exc:
                if self._stopping.is_set():
                    break
                LOG.warning("bus connection lost (%s); reconnecting", exc)
                self.connection = self.connection.clone()
                eventlet.sleep(0.5)
        self.pool.waitall()

    def _consume(self) -> None:
        self.connection.ensure_connection(max_retries=None, interval_start=0.2, interval_max=2)
        channel = self.connection.channel()
        channel.basic_qos(0, self.pool_size, False)
        consumers = []
        for handler in self.handlers:
            consumer = kombu.Consumer(channel, queues=[handler.queue], accept=["json"],
                                      callbacks=[self._dispatcher(handler)])
            consumer.consume()
            consumers.append(consumer)
        self._ready.set()
        LOG.info("consuming %s", ", ".join(h.queue.name for h in self.handlers))
        try:
            while not self._stopping.is_set():
                try:
                    self.connection.drain_events(timeout=1)
                except socket.timeout:
                    continue
        finally:
            for consumer in consumers:
                try:
                    consumer.cancel()
                except Exception:  # the connection may already be gone
                    pass

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the consumers are registered with the broker."""
        return self._ready.wait(timeout)

    def stop(self) -> None:
        """Stop taking messages; run() returns once the handlers in flight finish."""
        self._stopping.set()

    # -- one message ----------------------------------------------------------------------

    def _dispatcher(self, handler: Handler):
        def on_message(body: Any, message: kombu.Message) -> None:
            self.pool.spawn_n(self._process, handler, body, message)
        return on_message

    def _process(self, handler: Handler, body: Any, message: kombu.Message) -> None:
        redeliveries = int((message.headers or {}).get(REDELIVERY_HEADER, 0))
        try:
            if not isinstance(body, dict):
                raise TypeError(f"message body is a {type(body).__name__}, not a JSON object")
            handler.handle(body)
        except Exception as exc:  # any handler error is retried, then given up on
            self._on_failure(handler, body, message, redeliveries, exc)
        finally:
            self._ack(message)

    def _on_failure(self, handler: Handler, body: Any, message: kombu.Message, redeliveries: int,
                    exc: Exception) -> None:
        record_id = body.get("id") if isinstance(body, dict) else None
        if redeliveries < self.max_redeliveries and isinstance(body, dict):
            LOG.warning("%s failed on id=%s (delivery %d of %d): %s", handler.queue.name, record_id,
                        redeliveries + 1, self.max_redeliveries + 1, exc, exc_info=True)
            headers = dict(message.headers or {})
            headers[REDELIVERY_HEADER] = redeliveries + 1
            # Straight back onto the same queue through the default exchange.
            self.publisher.publish_to(kombu.Exchange(""), handler.queue.name, body, headers)
            return
        LOG.error("%s gave up on id=%s after %d deliveries: %s", handler.queue.name, record_id,
                  redeliveries + 1, exc)
        try:
            handler.give_up(body if isinstance(body, dict) else {}, exc)
        except Exception:
            LOG.exception("%s give_up failed for id=%s", handler.queue.name, record_id)

    def _ack(self, message: kombu.Message) -> None:
        with self._ack_lock:
            try:
                message.ack()
            except Exception as exc:  # the channel died; the broker redelivers it
                LOG.warning("ack failed: %s", exc)


def run_in_background(consumer: Consumer) -> eventlet.greenthread.GreenThread:
    """Start consumer.run() in a green thread."""
    return eventlet.spawn(consumer.run)
