"""Publishing small JSON messages that point at stored records.

One Publisher per process is enough: it keeps one connection and one channel,
shared by every thread and green thread under a lock. A publish that finds the
connection closed (by us or by the broker) reconnects and tries again, up to
RETRY_POLICY, then raises BusError.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import kombu
from kombu.utils.json import dumps

from st2common.exceptions import BusError
from st2common.transport.connection import is_filesystem, masked_url
from st2common.transport.topology import Topology

LOG = logging.getLogger(__name__)

# kombu's reconnect policy for one publish: about 10 s of retries before giving up.
RETRY_POLICY = {"max_retries": 10, "interval_start": 0.05, "interval_step": 0.25, "interval_max": 2.0}

# The default exchange: routing key = queue name (redeliveries go straight back to their queue).
DEFAULT_EXCHANGE = kombu.Exchange("")


class Publisher:
    """Publishes JSON bodies to the topology's exchanges, reconnecting on connection loss."""

    def __init__(self, connection: kombu.Connection, topology: Topology) -> None:
        self.connection = connection
        self.topology = topology
        # One channel is shared; green threads and threads take turns on it.
        self._lock = threading.RLock()
        self._producer: kombu.Producer | None = None
        self._send: Callable[..., Any] | None = None
        self._declared: set[str] = set()
        # The filesystem bus: publish on the channel itself (see _publish_on_channel).
        self._direct = False

    def _connect(self) -> None:
        """(Re)open the connection and build the producer and its retrying publish."""
        self._declared.clear()
        self.connection.ensure_connection(errback=self._on_error, **RETRY_POLICY)
        self._producer = kombu.Producer(self.connection.default_channel, serializer="json")
        self._send = self.connection.ensure(self._producer, self._producer.publish, errback=self._on_error,
                                            on_revive=self._on_revive, **RETRY_POLICY)
        self._direct = is_filesystem(self.connection)

    def _on_revive(self, channel) -> None:
        # A new channel after a reconnect: the broker may have lost what we declared.
        self._declared.clear()

    def _on_error(self, exc: Exception, interval: float) -> None:
        LOG.warning("bus at %s unreachable (%s); retrying in %.2fs", self.url, exc, interval)

    @property
    def url(self) -> str:
        """The bus URL, password masked."""
        return masked_url(self.connection.as_uri())

    def declare_work_queues(self) -> None:
        """Declare every work queue and binding so no message is dropped before its consumer starts."""
        with self._lock:
            try:
                if self._producer is None or not self.connection.connected:
                    self._connect()
                channel = self.connection.default_channel
                for queue in self.topology.all_work_queues():
                    queue(channel).declare()
            except Exception as exc:
                raise BusError(f"cannot declare queues on {self.url}: {exc}") from exc

    def publish(self, exchange: str, routing_key: str, body: dict[str, Any],
                headers: dict[str, Any] | None = None) -> None:
        """Publish body to <prefix>.<exchange> with routing_key."""
        self.publish_to(self.topology.exchange(exchange), routing_key, body, headers)

    def publish_to(self, exchange: kombu.Exchange, routing_key: str, body: dict[str, Any],
                   headers: dict[str, Any] | None = None) -> None:
        """Publish body to a kombu exchange (the default exchange routes straight to a queue)."""
        with self._lock:
            try:
                if self._producer is None or not self.connection.connected:
                    self._connect()
                # Virtual transports know an exchange's type only once this process declared it.
                declare = [exchange] if exchange.name and exchange.name not in self._declared else []
                if self._direct and not declare:
                    self._publish_on_channel(exchange.name, routing_key, body, headers or {})
                    return
                self._send(body, exchange=exchange, routing_key=routing_key, headers=headers or {},
                           declare=declare, serializer="json", delivery_mode=2)
                if declare:
                    self._declared.add(exchange.name)
            except Exception as exc:  # kombu and the transports raise many unrelated types
                LOG.error("publish to %s (%s) failed: %s", exchange.name or "queue", routing_key, exc)
                raise BusError(f"cannot publish to {exchange.name or 'queue ' + routing_key}: {exc}") from exc

    def _publish_on_channel(self, exchange: str, routing_key: str, body: dict[str, Any],
                            headers: dict[str, Any]) -> None:
        """The message Producer.publish would send, handed to the channel straight away.

        For the filesystem bus only, whose channel never drops: kombu's
        reconnect wrapper, serializer registry and batch bookkeeping (a
        coroutine-local lookup under eventlet) cost more than writing the file.
        """
        channel = self.connection.default_channel
        message = channel.prepare_message(dumps(body), 0, "application/json", "utf-8", headers, {"delivery_mode": 2})
        channel.basic_publish(message, exchange, routing_key)

    def close(self) -> None:
        """Release the connection; a later publish reconnects."""
        with self._lock:
            self._producer = None
            self._send = None
            self.connection.release()
