"""Batches: the records of trigger instances enforced at the same time, stored in one round trip.

The consumer handles up to ``[messaging] prefetch_count`` instances at once,
each in a green thread; st2common/persistence/batches.py's Coalescer lets them
share inserts, and its Loader their reads (one query for the instances the
messages name).

| coalescer        | one batch is                                                    |
| ---------------- | --------------------------------------------------------------- |
| RecordWriter     | one insert of rule enforcements, one insert of trace links (a   |
|                  | link stored before is a conflict: that batch falls back to      |
|                  | storing each instance's links one by one, skipping the repeats) |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from st2common.exceptions import ConflictError
from st2common.models.db.enforcement import RuleEnforcementDB
from st2common.models.db.trace import TraceComponentDB, TraceDB
from st2common.persistence.access import Access
from st2common.persistence.batches import DEFAULT_BATCH_SIZE, Coalescer
from st2common.services import trace as trace_service


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
