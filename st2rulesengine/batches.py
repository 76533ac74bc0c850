"""Batches: the status changes and records of trigger instances handled at the same time, one round trip each.

The consumer handles up to ``[rulesengine] prefetch_count`` instances at once,
each in a green thread; st2common/persistence/batches.py's Coalescer lets them
share inserts, and its Loader their reads (one query for the instances the
messages name). A batch is at most a quarter of them: while one batch's write
waits on the database, the engine renders and matches the next. With every
instance in one batch, the engine and the database took turns, each idle while
the other worked (docs/benchmarks.md, Session 8: a third more matched/s).

| coalescer        | one batch is                                                    |
| ---------------- | --------------------------------------------------------------- |
| RequestWriter    | one insert of the executions the matched rules request          |
|                  | (executions.request_many), then their messages: per execution,  |
|                  | liveaction.status ``requested`` and the create event            |
| RecordWriter     | one insert of rule enforcements, one insert of trace links (a   |
|                  | link stored before is a conflict: that batch falls back to      |
|                  | storing each instance's links one by one, skipping the repeats) |
|                  | then, in the same batch, processing -> processed of the claimed |
|                  | instances whose records these are (one conditional write)       |
| StatusWriter     | one conditional write (update many) per status change: the      |
|                  | claim pending -> processing, and pending -> processed of the    |
|                  | instances no rule matched (finish: processing -> processed of   |
|                  | instances without records)                                      |

A conditional write of many instances returns how many it moved, not which.
All of them: each claim won. None: each lost (another engine has them). Some
(another engine claimed one of them at the same moment, a duplicate message):
the claims this write won cannot be told from those it lost, so none of them
is enforced here; those this engine moved stay ``processing`` and the sweep
finishes them (st2rulesengine.sweep) as it finishes those of a dead engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from st2common import statuses
from st2common.models.db.enforcement import RuleEnforcementDB
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.trace import TraceDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.persistence.access import Access
from st2common.persistence.batches import DEFAULT_BATCH_SIZE, Coalescer
from st2common.services import executions
from st2common.services import trace as trace_service
from st2common.services import triggerinstances
from st2common.services.trace import Link
from st2common.transport.publisher import Publisher


@dataclass
class Records:
    """What one trigger instance's enforcement leaves on record: enforcements, and links in its trace.

    The enforcements are RuleEnforcementDB documents in their stored shape
    (plain dicts, inserted as they are).
    """

    enforcements: list[dict[str, Any]] = field(default_factory=list)
    trace: TraceDB | None = None
    links: list[Link] = field(default_factory=list)


class RecordWriter:
    """Stores the Records of concurrently enforced trigger instances and finishes them, one batch for all three."""

    def __init__(self, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.enforcements = Access(RuleEnforcementDB)
        self._store = Coalescer(self._insert, batch_size)

    def store(self, records: Records) -> None:
        """Store one instance's records; returns once they are written."""
        if records.enforcements or (records.trace is not None and records.links):
            self._store((records, None))

    def store_and_finish(self, records: Records, instance: TriggerInstanceDB) -> bool | None | Exception:
        """Store a claimed instance's records, then move it processing -> processed.

        The result is what StatusWriter.finish would answer for it: True, False (the sweep took it over), None.

        A failure to store raises (nothing was finished). A failure of the
        status write alone is returned, not raised: the records are stored.
        """
        return self._store((records, instance))

    def _insert(self, batch: list[tuple[Records, TriggerInstanceDB | None]]) -> list[bool | None | Exception]:
        # Nobody reads these documents back: the ones given are what was stored.
        self.enforcements.insert_raw([doc for records, _ in batch for doc in records.enforcements])
        # A link stored before (a recovered instance's) makes trace_service store that batch's one by one.
        trace_service.add_links_of([(records.trace, records.links) for records, _ in batch
                                    if records.trace is not None and records.links])
        finishing = [position for position, (_, instance) in enumerate(batch) if instance is not None]
        results: list[bool | None | Exception] = [None] * len(batch)
        if not finishing:
            return results
        try:
            moved = move([batch[position][1] for position in finishing], statuses.TRIGGER_INSTANCE_PROCESSING,
                         statuses.TRIGGER_INSTANCE_PROCESSED)
        except Exception as exc:  # the records are stored: only the finish failed
            moved = [exc] * len(finishing)
        for position, outcome in zip(finishing, moved):
            results[position] = outcome
        return results


class RequestWriter:
    """Requests the executions of concurrently enforced trigger instances, one insert per batch."""

    def __init__(self, publisher: Publisher, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.publisher = publisher
        self._request = Coalescer(self._insert, batch_size)

    def request(self, prepared: list[ExecutionDB]) -> list[ExecutionDB | Exception]:
        """Store and announce one instance's prepared executions; per execution, it stored or its error."""
        return self._request(prepared) if prepared else []

    def _insert(self, batch: list[list[ExecutionDB]]) -> list[list[ExecutionDB | Exception]]:
        outcomes = executions.request_many(self.publisher, [execution for prepared in batch for execution in prepared])
        split, start = [], 0
        for prepared in batch:
            split.append(outcomes[start:start + len(prepared)])
            start += len(prepared)
        return split


class StatusWriter:
    """Moves the status of concurrently handled trigger instances, one conditional write per batch and change."""

    def __init__(self, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self._claim = self._mover(statuses.TRIGGER_INSTANCE_PENDING, statuses.TRIGGER_INSTANCE_PROCESSING,
                                  batch_size)
        self._finish = self._mover(statuses.TRIGGER_INSTANCE_PROCESSING, statuses.TRIGGER_INSTANCE_PROCESSED,
                                   batch_size)
        self._skip = self._mover(statuses.TRIGGER_INSTANCE_PENDING, statuses.TRIGGER_INSTANCE_PROCESSED, batch_size)

    def claim(self, instance: TriggerInstanceDB) -> bool | None:
        """pending -> processing: True when this engine has it now, False when it had moved on, None when unknown.

        None: the batch's write moved some of its instances, which ones is not
        known; whichever this engine moved is left to the sweep.
        """
        return self._claim(instance)

    def finish(self, instance: TriggerInstanceDB) -> bool | None:
        """processing -> processed of a claimed instance: True, False (the sweep took it over), None (unknown)."""
        return self._finish(instance)

    def skip(self, instance: TriggerInstanceDB) -> bool | None:
        """pending -> processed of an instance no rule matched (nothing else to do for it)."""
        return self._skip(instance)

    @staticmethod
    def _mover(old: str, new: str, batch_size: int) -> Coalescer:
        return Coalescer(lambda batch: move(batch, old, new), batch_size)


def move(batch: list[TriggerInstanceDB], old: str, new: str) -> list[bool | None]:
    """Move the instances still old to new in one conditional write; per instance, as StatusWriter.claim says."""
    # The same instance twice (a duplicate message handled at the same moment): only the first can win.
    first: dict[str, int] = {}
    for position, instance in enumerate(batch):
        first.setdefault(str(instance.pk), position)
    moved = triggerinstances.move_instances([batch[position] for position in first.values()], old, new)
    outcome = True if moved == len(first) else False if moved == 0 else None
    won = set(first.values())
    results: list[bool | None] = [outcome if position in won else False for position in range(len(batch))]
    if outcome:
        for position in won:
            batch[position].status = new
    return results
