"""Publishing small JSON messages that point at stored records."""

from __future__ import annotations

import logging
import threading
from typing import Any

import kombu

from st2common.exceptions import BusError
from st2common.transport.connection import masked_url
from st2common.transport.topology import Topology

LOG = logging.getLogger(__name__)

# kombu's reconnect policy for one publish: about 10 s of retries before giving up.
RETRY_POLICY = {"max_retries": 10, "interval_start": 0.05, "interval_step": 0.25, "interval_max": 2.0}


class Publisher:
    """Publishes JSON bodies to the topology's exchanges, reconnecting on connection loss."""

    def __init__(self, connection: kombu.Connection, topology: Topology) -> None:
        self.connection = connection
        self.topology = topology
        # One channel is shared; green threads and threads take turns on it.
        self._lock = threading.RLock()
        self._producer: kombu.Producer | None = None
        self._declared: set[str] = set()

    def _get_producer(self) -> kombu.Producer:
        if self._producer is None:
            self._producer = kombu.Producer(self.connection.default_channel, serializer="json")
        return self._producer

    def _on_revive(self, channel) -> None:
        # A reconnect gives a new channel; declarations must be made again on it.
        self._declared.clear()
        if self._producer is not None:
            self._producer.revive(channel)

    def declare_work_queues(self) -> None:
        """Declare every work queue and binding so no message is dropped before its consumer starts."""
        with self._lock:
            try:
                channel = self.connection.default_channel
                for queue in self.topology.all_work_queues():
                    queue(channel).declare()
            except Exception as exc:
                raise BusError(f"cannot declare queues on {masked_url(self.connection.as_uri())}: {exc}") from exc

    def publish(self, exchange: str, routing_key: str, body: dict[str, Any],
                headers: dict[str, Any] | None = None) -> None:
        """Publish body to <prefix>.<exchange> with routing_key."""
        self.publish_to(self.topology.exchange(exchange), routing_key, body, headers)

    def publish_to(self, exchange: kombu.Exchange, routing_key: str, body: dict[str, Any],
                   headers: dict[str, Any] | None = None) -> None:
        """Publish body to a kombu exchange (the default exchange routes straight to a queue)."""
        with self._lock:
            try:
                producer = self._get_producer()
                declare = [] if exchange.name in self._declared or not exchange.name else [exchange]
                publish = self.connection.ensure(producer, producer.publish, on_revive=self._on_revive,
                                                 **RETRY_POLICY)
                publish(body, exchange=exchange, routing_key=routing_key, headers=headers or {},
                        declare=declare, serializer="json", delivery_mode=2)
                if exchange.name:
                    self._declared.add(exchange.name)
            except Exception as exc:
                LOG.error("publish to %s (%s) failed: %s", exchange.name, routing_key, exc)
                raise BusError(f"cannot publish to {exchange.name or 'queue ' + routing_key}: {exc}") from exc

    def close(self) -> None:
        """Release the connection."""
        with self._lock:
            self._producer = None
            self.connection.release()
