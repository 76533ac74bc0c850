"""Batches: the database work of trigger instances handled at the same time, done in one round trip.

The consumer handles up to ``[messaging] prefetch_count`` instances at once,
each in a green thread. A Coalescer lets them share reads and inserts: the
first request runs as soon as its green thread waits, the requests that
arrive while it runs go together in the next batch. An idle engine adds no
delay; a busy one makes one round trip per batch instead of one per instance.

| coalescer        | one batch is                                                    |
| ---------------- | --------------------------------------------------------------- |
| InstanceLoader   | one query for the trigger instances the messages name            |
| RecordWriter     | one insert of rule enforcements, one insert of trace links (a   |
|                  | link stored before is a conflict: that batch falls back to      |
|                  | storing each instance's links one by one, skipping the repeats) |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

import eventlet
from eventlet.event import Event

from st2common.exceptions import ConflictError
from st2common.models.db.enforcement import RuleEnforcementDB
from st2common.models.db.trace import TraceComponentDB, TraceDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.persistence.access import Access, to_object_id
from st2common.services import trace as trace_service

Request = TypeVar("Request")
Result = TypeVar("Result")

DEFAULT_BATCH_SIZE = 256


class Coalescer(Generic[Request, Result]):
    """Runs run(requests) -> results (same order) for the requests of concurrent green threads, in batches."""

    def __init__(self, run: Callable[[list[Request]], list[Result]], batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.run = run
        self.batch_size = batch_size
        self._waiting: list[tuple[Request, Event]] = []
        self._running = False

    def __call__(self, request: Request) -> Result:
        """The result of one request, once its batch ran; the batch's exception if it failed."""
        waiter = Event()
        self._waiting.append((request, waiter))
        if not self._running:
            self._running = True
            eventlet.spawn_n(self._drain)
        return waiter.wait()

    def _drain(self) -> None:
        # Green threads switch only on I/O: nothing can be queued between the last
        # emptiness check and _running going False.
        try:
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


class InstanceLoader:
    """Trigger instances by id, many in one query."""

    def __init__(self, access: Access[TriggerInstanceDB], batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.access = access
        self._load = Coalescer(self._query, batch_size)

    def get(self, instance_id: Any) -> TriggerInstanceDB | None:
        """The instance with this id, or None."""
        oid = to_object_id(instance_id)
        return self._load(oid) if oid is not None else None

    def _query(self, ids: list) -> list[TriggerInstanceDB | None]:
        found = {doc.pk: doc for doc in self.access.query({"id__in": ids})}
        return [found.get(oid) for oid in ids]


Link = tuple[str, Any, "str | None", "tuple[str, str] | None"]


@dataclass
class Records:
    """What one trigger instance's enforcement leaves on record: enforcements, and links in its trace."""

    enforcements: list[RuleEnforcementDB] = field(default_factory=list)
    trace: TraceDB | None = None
    links: list[Link] = field(default_factory=list)


class RecordWriter:
    """Stores the Records of concurrently enforced trigger instances, two inserts per batch."""

    def __init__(self, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.enforcements = Access(RuleEnforcementDB)
        self.links = Access(TraceComponentDB)
        self._store = Coalescer(self._insert, batch_size)

    def store(self, records: Records) -> None:
        """Store one instance's records; returns once they are written."""
        if records.enforcements or (records.trace is not None and records.links):
            self._store(records)

    def _insert(self, batch: list[Records]) -> list[None]:
        # Nobody reads these documents back: the ones given are what was stored.
        self.enforcements.insert_many([doc for records in batch for doc in records.enforcements], reload=False)
        linked = [records for records in batch if records.trace is not None and records.links]
        try:
            self.links.insert_many([_link_doc(records.trace, link) for records in linked for link in records.links],
                                   reload=False)
        except ConflictError:
            # A repeat of earlier work (a recovered instance): the trace service skips what is stored.
            for records in linked:
                trace_service.add_links(records.trace, records.links)
        return [None] * len(batch)


def _link_doc(trace: TraceDB, link: Link) -> TraceComponentDB:
    kind, object_id, ref, cause = link
    return TraceComponentDB(trace_id=str(trace.pk), component_type=kind, object_id=str(object_id), ref=ref,
                            caused_by_type=cause[0] if cause else None, caused_by_id=cause[1] if cause else None)
