"""Batches: the database work of messages handled at the same time, done in one round trip.

A consumer handles up to ``[messaging] prefetch_count`` messages at once, each
in a green thread. A Coalescer lets them share reads and inserts: the first
request runs as soon as its green thread waits, the requests that arrive while
it runs go together in the next batch. An idle service adds no delay; a busy
one makes one round trip per batch instead of one per message.

``Loader`` is the commonest use: records by id, many in one query.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Generic, TypeVar

import eventlet
from eventlet.event import Event

from st2common.persistence.access import Access, to_object_id

LOG = logging.getLogger(__name__)

Request = TypeVar("Request")
Result = TypeVar("Result")

DEFAULT_BATCH_SIZE = 256


class Coalescer(Generic[Request, Result]):
    """Runs run(requests) -> results (same order) for the requests of concurrent green threads, in batches.

    linger() gives the seconds a first request waits for others before its batch
    runs (none by default): for writes nobody waits on, so that requests that
    come one at a time still share a round trip. A linger ends early once
    ``enough`` requests wait: each holds a consumer's green thread (and its
    message) meanwhile, so a burst must not hold them all for the whole linger.
    """

    def __init__(self, run: Callable[[list[Request]], list[Result]], batch_size: int = DEFAULT_BATCH_SIZE,
                 linger: Callable[[], float] | None = None, enough: int | None = None) -> None:
        self.run = run
        self.batch_size = batch_size
        self.linger = linger
        self.enough = min(enough or batch_size, batch_size)
        self._waiting: list[tuple[Request, Event]] = []
        self._running = False
        # Set while a linger is under way: sent when enough requests wait.
        self._lingering: Event | None = None

    def __call__(self, request: Request) -> Result:
        """The result of one request, once its batch ran; the batch's exception if it failed."""
        waiter = Event()
        self._waiting.append((request, waiter))
        if not self._running:
            self._running = True
            eventlet.spawn_n(self._drain)
        elif self._lingering is not None and len(self._waiting) >= self.enough and not self._lingering.ready():
            self._lingering.send()
        return waiter.wait()

    def _drain(self) -> None:
        # Green threads switch only on I/O: nothing can be queued between the last
        # emptiness check and _running going False.
        try:
            self._pause()
            while self._waiting:
                batch, self._waiting = self._waiting[:self.batch_size], self._waiting[self.batch_size:]
                try:
                    results = self.run([request for request, _ in batch])
                except Exception as exc:  # every waiter raises it, each message is retried on its own
                    for _, waiter in batch:
                        waiter.send_exception(exc)
                    continue
                for (_, waiter), result in zip(batch, results):
                    waiter.send(result)
        finally:
            self._running = False

    def _pause(self) -> None:
        if self.linger is None:
            return
        try:
            wait = self.linger()
        except Exception:  # the batch then runs at once, and meets the trouble itself
            LOG.debug("coalescer: no linger", exc_info=True)
            return
        if wait > 0 and len(self._waiting) < self.enough:
            self._lingering = Event()
            try:
                with eventlet.Timeout(wait, False):
                    self._lingering.wait()
            finally:
                self._lingering = None


class Loader:
    """Documents by id, those of concurrent callers in one query."""

    def __init__(self, access: Access, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.access = access
        self._load = Coalescer(self._query, batch_size)

    def get(self, doc_id: Any):
        """The document with this id, or None."""
        oid = to_object_id(doc_id)
        return self._load(oid) if oid is not None else None

    def _query(self, ids: list) -> list:
        found = {doc.pk: doc for doc in self.access.query(raw={"_id": {"$in": ids}})}
        return [found.get(oid) for oid in ids]
