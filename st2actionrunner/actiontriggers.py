"""The action triggers of executions that completed at the same time, written together.

The notifier hands each completed execution that owes only its action trigger
(no notify routes) to ``ActionTriggers.dispatch``; the ones handed over while
a batch is being written go in the next (st2common.persistence.batches).
Executions whose trace needs lookups (a parent's trace, a trace named by tag)
take the one-by-one path (the notifier's), as do repeats.
What one batch stores is what ``triggerinstances.dispatch`` stores for each,
in four round trips however many executions it holds:

| step                            | database                                                |
| ------------------------------- | ------------------------------------------------------- |
| the traces the executions carry | one query for those not created by this process         |
| (rule-requested executions)     |                                                         |
| the traces the others start     | one insert (``execution-<id>``, ids derived from the     |
|                                 | executions')                                            |
| the trace links                 | one insert: each execution that started its trace, or   |
|                                 | joins its parent's (a workflow's child), then its       |
|                                 | instance, caused by the execution                       |
| the trigger instances (pending) | one insert, ids derived from the executions'            |

then one message per instance on trigger_instances_dispatch, as dispatch
sends it. When no enabled rule is on the action trigger (triggers.has_rules,
kept current by the rule events), the instances are stored as ``processed``
and no message is sent: matching them against no rule is all a rules engine
would do, after a message, a read of its index and a write each; and the first of
a batch then waits RECORD_LINGER for more, so that executions ending one after
another (a workflow's tasks) share the writes too: a 10-task chain (about 100
ms) is one or two batches, not one per three tasks as with a 50 ms wait. Each
waiting completion holds one of the consumer's green threads (and its unacked
message), so a batch is written as soon as a quarter of the prefetch waits on
it: a burst keeps taking requests. Every id is derived, so a
repeat (a redelivered completion) is a conflict: the batch then goes through
the one-by-one path, which stores only what is missing. An execution whose carried trace no longer exists goes that
way too (a new trace is made for it there).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any, Callable

from st2common import statuses
from st2common.exceptions import ConflictError, ValidationError
from st2common.models.db.base import utcnow
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.persistence.access import Access
from st2common.persistence.batches import Coalescer
from st2common.services import trace as trace_service
from st2common.services import triggerinstances, triggers, triggertypes
from st2common.transport.publisher import Publisher

LOG = logging.getLogger(__name__)

# Seconds the first action trigger of a batch waits for others when no rule is on the action trigger
# (at most: the batch is written as soon as a quarter of the consumer's prefetch waits on it).
RECORD_LINGER = 0.25


class ActionTriggers:
    """Writes the action triggers of concurrently completed executions in batches."""

    def __init__(self, publisher: Publisher, validate: bool,
                 payload: Callable[[ExecutionDB], dict[str, Any]],
                 instance_id: Callable[[ExecutionDB], Any],
                 one_by_one: Callable[[ExecutionDB], None], prefetch: int = 64) -> None:
        self.publisher = publisher
        self.validate = validate
        self.payload = payload
        self.instance_id = instance_id
        self.one_by_one = one_by_one
        self.instances = Access(TriggerInstanceDB)
        # A lingering batch is written once a quarter of the consumer's prefetch waits on it: the
        # rest keeps taking requests and completions (a burst), while a chain's tasks wait together.
        self._write = Coalescer(self._write_batch, linger=self._linger, enough=max(1, prefetch // 4))

    def dispatch(self, execution: ExecutionDB) -> None:
        """Store and announce the action trigger of a completed execution; returns once it is written."""
        error = self._write((execution, utcnow()))
        if error is not None:
            raise error

    @staticmethod
    def _linger() -> float:
        # Instances no rule waits for are a record only: those of executions that end one after
        # another (a workflow's tasks) then share the writes. Their messages are acked once written.
        return 0.0 if triggers.has_rules(triggertypes.ACTION_TRIGGER_REF) else RECORD_LINGER

    def _write_batch(self, requests: list[tuple[ExecutionDB, datetime.datetime]]) -> list[Exception | None]:
        """Each execution's error (None when written); the batch's own trouble raises for all of them."""
        batch = [execution for execution, _ in requests]
        occurred = {str(execution.pk): when for execution, when in requests}
        trigger, trigger_type = triggers.resolve_trigger(triggertypes.ACTION_TRIGGER_REF, self.publisher)
        errors: dict[str, Exception | None] = {str(e.pk): None for e in batch}
        together, apart, known = self._partition(batch)
        payloads = {}
        for execution in list(together):
            payloads[str(execution.pk)] = self.payload(execution)
            if self.validate:
                try:
                    triggertypes.validate_payload(trigger_type, payloads[str(execution.pk)])
                except ValidationError as exc:
                    errors[str(execution.pk)] = exc
                    together.remove(execution)
        starting = [e for e in together if str(e.pk) not in known]
        started = dict(zip((str(e.pk) for e in starting), trace_service.start_for_executions([e.pk for e in starting])))
        instances, traces_links = [], []
        ruled = triggers.has_rules(trigger_type.ref)
        status = statuses.TRIGGER_INSTANCE_PENDING if ruled else statuses.TRIGGER_INSTANCE_PROCESSED
        for execution in together:
            execution_id = str(execution.pk)
            instance = TriggerInstanceDB(id=self.instance_id(execution), trigger=trigger.ref,
                                         payload=payloads[execution_id], occurrence_time=occurred[execution_id],
                                         status=status)
            instances.append(instance)
            if execution_id in started:
                links = [trace_service.execution_link(execution.pk, execution.action_ref)]
            elif execution.parent:
                # A workflow's child carries its parent's trace by id and joins it only now.
                links = [trace_service.execution_link(execution.pk, execution.action_ref, parent_id=execution.parent)]
            else:
                links = []
            links.append(trace_service.trigger_instance_link(instance.pk, trigger.ref, execution_id))
            traces_links.append((started.get(execution_id) or known[execution_id], links))
        if traces_links:
            # Before the instances: whoever finds an instance finds it in its trace. A repeat's links
            # go in here too (repeats skipped), as the one-by-one path makes none for an instance it
            # finds stored.
            trace_service.add_links_of(traces_links)
        try:
            # Every field is built here from checked values: mongoengine's validation and bulk insert
            # would only cost (a tenth of the action runner's CPU for a workflow's child).
            self.instances.insert_raw([instance.to_mongo() for instance in instances])
            repeated = False
        except ConflictError:
            # Some were dispatched before: the one-by-one path stores what is missing and announces
            # what is still pending.
            LOG.debug("action triggers of %d executions: some were dispatched before", len(together))
            repeated = True
        if repeated:
            apart.extend(together)
        elif ruled:
            for instance, (trace, _) in zip(instances, traces_links):
                # The instance travels whole when small, so the rules engine need not read it.
                self.publisher.publish(triggerinstances.DISPATCH_EXCHANGE, trigger_type.ref,
                                       triggerinstances.dispatch_message(instance, trace))
        for execution in apart:
            try:
                self.one_by_one(execution)
            except Exception as exc:  # this execution's message is retried, the others' are done
                errors[str(execution.pk)] = exc
        return [errors[str(e.pk)] for e in batch]

    @staticmethod
    def _partition(batch: list[ExecutionDB]) -> tuple[list[ExecutionDB], list[ExecutionDB], dict[str, Any]]:
        """(written together, one by one, execution id -> the stored trace it carries)."""
        carried = {str(e.pk): _carried_trace_id(e) for e in batch if batchable(e)}
        traces = trace_service.get_many(trace_id for trace_id in carried.values() if trace_id)
        for trace_id, trace in traces.items():
            # Traces never change: the next children of the same workflow find theirs without a query.
            trace_service.RECENT.put(trace_id, trace)
        known = {execution_id: traces[trace_id] for execution_id, trace_id in carried.items() if trace_id in traces}
        together, apart = [], []
        for execution in batch:
            execution_id = str(execution.pk)
            # A trace found by lookups is joined, and a carried trace that is gone made again, one by one.
            fits = execution_id in carried and (carried[execution_id] is None or execution_id in known)
            (together if fits else apart).append(execution)
        return together, apart, known


def batchable(execution: ExecutionDB) -> bool:
    """True when the execution's trace is known without lookups: named by id, or started by it."""
    carried = (execution.context or {}).get("trace_context") or {}
    if not isinstance(carried, dict):
        return False
    return bool(carried.get("id_")) or (not carried.get("trace_tag") and not execution.parent)


def _carried_trace_id(execution: ExecutionDB) -> str | None:
    """The id of the trace the execution's context names, if it names one by id."""
    carried = (execution.context or {}).get("trace_context") or {}
    trace_id = carried.get("id_") if isinstance(carried, dict) else None
    return str(trace_id) if trace_id else None
