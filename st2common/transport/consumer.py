"""The consumer base: decode, call the handler, ack after the work.

Datasheet:

- Each message runs in its own green thread (at most ``pool_size`` at once,
  which is also the broker prefetch) and is acked only once its handler has
  returned. A consumer killed mid-way leaves the message unacked: RabbitMQ
  delivers it again to another consumer; the embedded bus loses it (the
  services' start-up sweeps re-publish stuck records).
- A handler that raises gets its message published again onto its own queue
  with a redelivery count in the ``x-st2-redeliveries`` header, after a short
  back-off, up to ``max_redeliveries`` times; then its ``give_up`` hook is
  called once with the last error (to mark the record failed) and the message
  is acked.
- A body that is not JSON, or not a JSON object, is logged and dropped: no
  handler could do anything with it and it must not stop the queue.
- A lost connection is re-opened with back-off; ``stop()`` makes ``run()``
  finish the handlers in flight, unbind and delete this consumer's broadcast
  queues (on the filesystem bus their bindings would otherwise outlive the
  process), then close the connection.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterable

import eventlet
import kombu
from kombu import Queue

from st2common.exceptions import BusError
from st2common.transport.connection import is_filesystem
from st2common.transport.filesystem import own_broadcast_queues, sweep_dead_processes
from st2common.transport.publisher import DEFAULT_EXCHANGE, Publisher

LOG = logging.getLogger(__name__)

REDELIVERY_HEADER = "x-st2-redeliveries"
# How often the loop looks at the stop flag while no message comes.
STOP_CHECK_INTERVAL = 0.1
# Back-off between attempts to reach a bus that is down.
RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)


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
                 max_redeliveries: int = 3, pool_size: int = 64, redelivery_delay: float = 0.05) -> None:
        self.connection = connection
        self.publisher = publisher
        self.handlers = list(handlers)
        self.max_redeliveries = max_redeliveries
        self.redelivery_delay = redelivery_delay
        self.pool = eventlet.GreenPool(pool_size)
        self.pool_size = pool_size
        self._ack_lock = threading.Lock()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._failures = 0

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Consume until stop(); reconnects when the connection drops."""
        while not self._stopping.is_set():
            try:
                self._consume()
            except Exception as exc:  # connection loss, broker refusals, and our own bugs alike
                if self._stopping.is_set():
                    break
                known = isinstance(exc, self.connection.connection_errors + self.connection.channel_errors
                                   + (OSError, kombu.exceptions.KombuError))
                LOG.warning("consumer of %s lost the bus (%s); reconnecting", self._queue_names(), exc,
                            exc_info=not known)
                self._reconnect(RECONNECT_DELAYS[min(self._failures, len(RECONNECT_DELAYS) - 1)])
                self._failures += 1
        self.pool.waitall()
        self.connection.release()

    def _consume(self) -> None:
        self.connection.ensure_connection(max_retries=1)
        filesystem = is_filesystem(self.connection)
        if filesystem:
            options = self.connection.transport_options
            sweep_dead_processes(options["control_folder"], options["data_folder_in"])
        channel = self.connection.channel()
        channel.basic_qos(0, self.pool_size, False)
        consumers = []
        try:
            for handler in self.handlers:
                consumer = kombu.Consumer(channel, queues=[handler.queue], accept=["json"],
                                          on_message=self._dispatcher(handler),
                                          on_decode_error=self._on_decode_error)
                consumer.consume()
                consumers.append(consumer)
            if filesystem:
                own_broadcast_queues(options["control_folder"], self._broadcast_names())
            self._ready.set()
            self._failures = 0
            LOG.info("consuming %s", self._queue_names())
            while not self._stopping.is_set():
                try:
                    self.connection.drain_events(timeout=STOP_CHECK_INTERVAL)
                except TimeoutError:
                    continue
            self._finish(channel, consumers)
        except Exception:
            self._discard(channel)
            raise

    def _finish(self, channel, consumers: list[kombu.Consumer]) -> None:
        """Let the handlers in flight ack, then cancel and drop this process's broadcast queues."""
        self.pool.waitall()
        with self._ack_lock:
            for consumer in consumers:
                consumer.cancel()
            if is_filesystem(self.connection):
                # RabbitMQ deletes auto-delete queues on cancel; the filesystem bus keeps the binding.
                for handler in self.handlers:
                    if handler.queue.auto_delete:
                        queue = handler.queue(channel)
                        queue.delete()
                        queue.purge()
                own_broadcast_queues(self.connection.transport_options["control_folder"],
                                     self._broadcast_names(), owned=False)
            channel.close()

    def _discard(self, channel) -> None:
        # Handlers in flight still own their messages and ack them: the filesystem bus must not
        # put them back on close (RabbitMQ does, once the connection is gone).
        channel.do_restore = False
        try:
            channel.close()
        except Exception:  # the channel died with the connection
            pass

    def _reconnect(self, delay: float) -> None:
        old, self.connection = self.connection, self.connection.clone()
        try:
            old.release()
        except Exception:  # already broken; nothing more to release
            pass
        self._stopping.wait(delay)

    def _broadcast_names(self) -> list[str]:
        return [handler.queue.name for handler in self.handlers if handler.queue.auto_delete]

    def _queue_names(self) -> str:
        return ", ".join(handler.queue.name for handler in self.handlers)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the consumers are registered with the broker."""
        return self._ready.wait(timeout)

    def stop(self) -> None:
        """Stop taking messages; run() returns once the handlers in flight finish and it has cleaned up."""
        self._stopping.set()

    # -- one message ----------------------------------------------------------------------

    def _dispatcher(self, handler: Handler):
        def on_message(message: kombu.Message) -> None:
            if self._stopping.is_set():
                # Left unacked: closing the channel hands it back to the queue.
                return
            try:
                body = message.decode()
            except Exception as exc:  # any decoder error means the same: unreadable
                self._on_decode_error(message, exc)
                return
            if not isinstance(body, dict):
                LOG.error("%s dropped a message whose body is a JSON %s, not an object", handler.queue.name,
                          type(body).__name__)
                self._ack(message)
                return
            self.pool.spawn_n(self._process, handler, body, message)
        return on_message

    def _on_decode_error(self, message: kombu.Message, exc: Exception) -> None:
        LOG.error("dropped a message that is not JSON (content type %s): %s", message.content_type, exc)
        self._ack(message)

    def _process(self, handler: Handler, body: dict[str, Any], message: kombu.Message) -> None:
        try:
            handler.handle(body)
        except Exception as exc:  # any handler error is retried, then given up on
            self._on_failure(handler, body, message, exc)
        else:
            self._ack(message)

    def _on_failure(self, handler: Handler, body: dict[str, Any], message: kombu.Message,
                    exc: Exception) -> None:
        record_id = body.get("id")
        headers = dict(message.headers or {})
        redeliveries = int(headers.get(REDELIVERY_HEADER, 0))
        if redeliveries < self.max_redeliveries:
            LOG.warning("%s failed on id=%s (delivery %d of %d): %s", handler.queue.name, record_id,
                        redeliveries + 1, self.max_redeliveries + 1, exc)
            # Unacked while it waits: a crash now still leaves it with the broker.
            eventlet.sleep(self.redelivery_delay * 2 ** redeliveries)
            headers[REDELIVERY_HEADER] = redeliveries + 1
            try:
                self.publisher.publish_to(DEFAULT_EXCHANGE, handler.queue.name, body, headers)
            except BusError:
                LOG.error("%s could not redeliver id=%s; handing it back to the queue", handler.queue.name,
                          record_id)
                self._requeue(message)
                return
            self._ack(message)
            return
        LOG.error("%s gave up on id=%s after %d deliveries: %s", handler.queue.name, record_id,
                  redeliveries + 1, exc, exc_info=exc)
        try:
            handler.give_up(body, exc)
        except Exception:
            LOG.exception("%s give_up failed for id=%s", handler.queue.name, record_id)
        self._ack(message)

    def _ack(self, message: kombu.Message) -> None:
        with self._ack_lock:
            try:
                message.ack()
            except Exception as exc:  # the channel died; the broker delivers it again
                LOG.warning("ack failed: %s", exc)

    def _requeue(self, message: kombu.Message) -> None:
        with self._ack_lock:
            try:
                message.requeue()
            except Exception as exc:  # the channel died; the broker delivers it again
                LOG.warning("requeue failed: %s", exc)


def run_in_background(consumer: Consumer) -> eventlet.greenthread.GreenThread:
    """Start consumer.run() in a green thread."""
    return eventlet.spawn(consumer.run)
