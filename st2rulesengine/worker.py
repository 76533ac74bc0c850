"""The rules engine's consumer: trigger instance id -> load -> match -> enforce -> processed.

| consumes                                    | does                                                  |
| ------------------------------------------- | ----------------------------------------------------- |
| trigger_instances_dispatch (queue           | pending -> processing (compare-and-set: one copy wins, |
| trigger_instances_dispatch.rules_engine,    | a redelivered message does nothing), match against the |
| every copy competes)                        | rules of the instance's trigger type, enforce each     |
|                                             | match, -> processed (processing_failed on an error)    |
| rule create/update/delete (a broadcast      | refresh that rule in this process's rule index         |
| queue of this process on the rule exchange) |                                                       |
| trigger / trigger type writes (broadcast)   | forget the cached triggers and trigger types           |

Rules are looked up in memory, by trigger type, never queried per instance:
the index is loaded at start, kept current by the rule events, and reloaded
whole by the periodic sweep (a safety net for an event lost on the way).
Triggers and trigger types are cached the same way, so a non-matching
instance costs one read and two conditional writes.
"""

from __future__ import annotations

import datetime
import logging
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import eventlet
from eventlet.event import Event

from st2common import statuses, templating
from st2common.exceptions import NotFoundError, StackStormBaseException
from st2common.models.db.base import utcnow
from st2common.models.db.rule import RuleDB
from st2common.models.db.trace import COMPONENT_TRIGGER_INSTANCE, TraceDB
from st2common.models.db.trigger import TriggerDB, TriggerInstanceDB, TriggerTypeDB
from st2common.persistence.access import Access, to_object_id
from st2common.services import trace as trace_service
from st2common.services import triggers
from st2common.transport.consumer import Handler
from st2common.transport.publisher import Publisher
from st2rulesengine import matcher
from st2rulesengine.enforcer import Enforcer, Occurrence

LOG = logging.getLogger(__name__)

QUEUE = "trigger_instances_dispatch.rules_engine"


Entry = tuple[matcher.Rule, RuleDB]


class TypeRules:
    """The enabled rules of one trigger type, in order, with the equality index that narrows them.

    A rule whose first criterion is ``equals`` with a plain (not templated,
    hashable) pattern cannot match an instance whose value at that path is
    different, and the matcher, which checks criteria in order, would stop
    at that first criterion without an error; so such rules are looked up
    by (path, pattern) instead of being evaluated one by one. The others are
    always candidates. Candidates keep the rules' order.
    """

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self._scan: list[tuple[int, Entry]] = []
        self._keyed: dict[tuple, dict[Any, list[tuple[int, Entry]]]] = {}
        for position, entry in enumerate(entries):
            first = entry[0].criteria[0] if entry[0].criteria else None
            if first is not None and first.operator == "equals" and _indexable(first.pattern):
                self._keyed.setdefault(first.path, {}).setdefault(first.pattern, []).append((position, entry))
            else:
                self._scan.append((position, entry))

    def candidates(self, scope: Mapping[str, Any]) -> list[Entry]:
        """The rules that may match an instance with this scope (``trigger`` = its payload)."""
        if not self._keyed:
            return self.entries
        found = list(self._scan)
        for path, by_pattern in self._keyed.items():
            value = matcher.lookup(path, scope)
            try:
                found.extend(by_pattern.get(value, ()))
            except TypeError:
                # An unhashable value (dict, list) equals no plain pattern.
                continue
        found.sort(key=lambda item: item[0])
        return [entry for _, entry in found]


def _indexable(pattern: Any) -> bool:
    if pattern is None or isinstance(pattern, (bytes, dict, list)) or templating.is_template(pattern):
        return False
    if isinstance(pattern, float) and math.isnan(pattern):
        return False
    try:
        hash(pattern)
    except TypeError:
        return False
    return True


class RuleIndex:
    """The enabled rules of this process, by trigger type, each with its stored document."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_type: dict[str, dict[str, Entry]] = {}
        self._type_of: dict[str, str] = {}
        self._compiled: dict[str, TypeRules] = {}
        # Rules refreshed while a load's query runs: its snapshot may predate their change.
        self._changed_during_load: set[str] | None = None
        self.version = 0

    def load(self) -> int:
        """Replace the index with every enabled rule in the database; how many there are."""
        with self._lock:
            self._changed_during_load = set()
        by_type: dict[str, dict[str, Entry]] = {}
        type_of: dict[str, str] = {}
        for doc in Access(RuleDB).query({"enabled": True}):
            entry = _parse(doc)
            if entry is not None:
                by_type.setdefault(entry[0].trigger_type, {})[str(doc.pk)] = entry
                type_of[str(doc.pk)] = entry[0].trigger_type
        with self._lock:
            self._by_type, self._type_of, self._compiled = by_type, type_of, {}
            changed, self._changed_during_load = self._changed_during_load or set(), None
            self.version += 1
        for rule_id in changed:
            self.refresh(rule_id)
        return len(self._type_of)

    def refresh(self, rule_id: str) -> None:
        """Take a rule's stored state (gone, disabled, changed) into the index."""
        oid = to_object_id(rule_id)
        doc = Access(RuleDB).get(id=oid) if oid is not None else None
        entry = _parse(doc) if doc is not None and doc.enabled else None
        with self._lock:
            if self._changed_during_load is not None:
                self._changed_during_load.add(rule_id)
            old_type = self._type_of.pop(rule_id, None)
            if old_type is not None:
                self._by_type.get(old_type, {}).pop(rule_id, None)
                self._compiled.pop(old_type, None)
            if entry is not None:
                self._by_type.setdefault(entry[0].trigger_type, {})[rule_id] = entry
                self._type_of[rule_id] = entry[0].trigger_type
                self._compiled.pop(entry[0].trigger_type, None)
            self.version += 1
        LOG.debug("rule index: rule %s %s", rule_id, "enabled" if entry else "dropped")

    def rules_for(self, trigger_type: str) -> TypeRules:
        """The enabled rules on a trigger type."""
        compiled = self._compiled.get(trigger_type)
        if compiled is None:
            with self._lock:
                compiled = TypeRules(list(self._by_type.get(trigger_type, {}).values()))
                self._compiled[trigger_type] = compiled
        return compiled

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._type_of

    def __len__(self) -> int:
        return len(self._type_of)


def _parse(doc: RuleDB) -> tuple[matcher.Rule, RuleDB] | None:
    try:
        return matcher.Rule.from_db(doc), doc
    except StackStormBaseException as exc:
        # Registration and the API refuse such rules; one written around them must not stop the others.
        LOG.error("rule %s is left out of matching: %s", doc.ref, exc)
        return None


class TriggerCache:
    """Triggers by ref and trigger types by ref, read once each until a trigger or type changes."""

    def __init__(self) -> None:
        self._triggers: dict[str, TriggerDB | None] = {}
        self._types: dict[str, TriggerTypeDB | None] = {}

    def trigger(self, ref: str) -> TriggerDB | None:
        """The trigger with this ref, or None."""
        if ref not in self._triggers:
            self._triggers[ref] = Access(TriggerDB).get(ref=ref)
        return self._triggers[ref]

    def trigger_type(self, ref: str) -> TriggerTypeDB | None:
        """The trigger type with this ref, or None."""
        if ref not in self._types:
            self._types[ref] = Access(TriggerTypeDB).get(ref=ref)
        return self._types[ref]

    def clear(self) -> None:
        """Forget everything (a trigger or type was written)."""
        self._triggers, self._types = {}, {}


@dataclass(frozen=True)
class Evaluation:
    """One instance matched: its trigger (None if gone), trigger type, outcome, and the rules' documents."""

    trigger: TriggerDB | None
    type_ref: str
    outcome: matcher.Matches
    docs: dict[str | None, RuleDB]


class InstanceLoader:
    """Loads the trigger instances that concurrent messages name, many in one query.

    The first message to ask runs a query at once; the messages that arrive
    while it is in flight wait for the next one, which takes them all. An
    idle engine adds no delay; a busy one reads the database once per batch
    instead of once per instance.
    """

    def __init__(self, access: Access[TriggerInstanceDB], batch_size: int = 256) -> None:
        self.access = access
        self.batch_size = batch_size
        self._waiting: list[tuple[Any, Event]] = []
        self._running = False

    def get(self, instance_id: Any) -> TriggerInstanceDB | None:
        """The instance with this id, or None."""
        oid = to_object_id(instance_id)
        if oid is None:
            return None
        waiter = Event()
        self._waiting.append((oid, waiter))
        if not self._running:
            self._running = True
            eventlet.spawn_n(self._load_batches)
        return waiter.wait()

    def _load_batches(self) -> None:
        # Green threads switch only on I/O: nothing can be queued between the last
        # emptiness check and _running going False.
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:self.batch_size], self._waiting[self.batch_size:]
                try:
                    found = {doc.pk: doc for doc in self.access.query({"id__in": [oid for oid, _ in batch]})}
                except Exception as exc:  # each waiting message gets the error and is redelivered
                    for _, waiter in batch:
                        waiter.send_exception(exc)
                    continue
                for oid, waiter in batch:
                    waiter.send(found.get(oid))
        finally:
            self._running = False


class RulesEngine(Handler):
    """Matches each trigger instance against the rules of its trigger type and enforces the matches."""

    def __init__(self, publisher: Publisher, enforcer: Enforcer | None = None,
                 lookups: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.queue = publisher.topology.work_queue(QUEUE)
        self.publisher = publisher
        self.rules = RuleIndex()
        self.triggers = TriggerCache()
        self.lookups = lookups or dict
        self.enforcer = enforcer or Enforcer(publisher, lookups=self.lookups)
        self.instances = Access(TriggerInstanceDB)
        self.loader = InstanceLoader(self.instances)

    def handlers(self) -> list[Handler]:
        """This handler and the ones keeping its rule index and trigger cache current."""
        topology = self.publisher.topology
        return [self,
                _Refresh(topology.broadcast_queue("rule"), lambda body: self.rules.refresh(str(body.get("id")))),
                _Refresh(topology.broadcast_queue("trigger"), lambda body: self.triggers.clear()),
                _Refresh(topology.broadcast_queue("triggertype"), lambda body: self.triggers.clear())]

    def handle(self, body: dict[str, Any]) -> None:
        """Process the trigger instance body["id"] unless another copy has it already."""
        instance = self.loader.get(body.get("id"))
        if instance is None:
            LOG.warning("rules engine: no trigger instance %s", body.get("id"))
            return
        if instance.status != statuses.TRIGGER_INSTANCE_PENDING:
            LOG.debug("rules engine: trigger instance %s is %s; nothing to do", instance.pk, instance.status)
            return
        # Matching has no side effects, so it runs before the claim: an instance no rule
        # matches is done in one write.
        evaluation = self.match(instance)
        if not evaluation.outcome.matched and not evaluation.outcome.failed:
            triggers.update_instance_status(instance, statuses.TRIGGER_INSTANCE_PROCESSED)
            return
        claimed = triggers.update_instance_status(instance, statuses.TRIGGER_INSTANCE_PROCESSING)
        if claimed is None:
            return
        final = statuses.TRIGGER_INSTANCE_PROCESSED
        try:
            self.enforce(claimed, evaluation, self._trace(claimed, body))
        except Exception:  # a bug or the database going away: the record says so, the queue goes on
            LOG.exception("rules engine: trigger instance %s failed", claimed.pk)
            final = statuses.TRIGGER_INSTANCE_PROCESSING_FAILED
        triggers.update_instance_status(claimed, final)

    def match(self, instance: TriggerInstanceDB) -> Evaluation:
        """The rules of the instance's trigger type it matches, and those that could not be evaluated."""
        trigger = self.triggers.trigger(instance.trigger)
        type_ref = trigger.type if trigger is not None else instance.trigger
        rules = self.rules.rules_for(type_ref)
        if not rules.entries:
            return Evaluation(trigger, type_ref, matcher.Matches((), ()), {})
        lookups = self.lookups()
        candidates = rules.candidates({**lookups, matcher.TRIGGER: instance.payload})
        subject = matcher.TriggerInstance(
            trigger_type=type_ref, payload=instance.payload,
            trigger_parameters=dict(trigger.parameters or {}) if trigger is not None else {},
            trigger_ref=instance.trigger, id=str(instance.pk))
        outcome = matcher.match([rule for rule, _ in candidates], subject, lookups)
        return Evaluation(trigger, type_ref, outcome, {rule.id: doc for rule, doc in candidates})

    def enforce(self, instance: TriggerInstanceDB, evaluation: Evaluation, trace: TraceDB) -> list:
        """Record the rules that errored and enforce the matches of a claimed instance; the enforcements."""
        occurrence = Occurrence(instance, evaluation.trigger, self.triggers.trigger_type(evaluation.type_ref), trace)
        enforcements = [self.enforcer.fail(evaluation.docs[failed.rule.id], occurrence, failed.error)
                        for failed in evaluation.outcome.failed]
        for match in evaluation.outcome.matched:
            try:
                enforcements.append(self.enforcer.enforce(evaluation.docs[match.rule.id], match.rule, occurrence))
            except StackStormBaseException as exc:
                # The enforcement record itself could not be written; the other rules still run.
                LOG.error("rule %s for trigger instance %s: %s", match.rule.ref, instance.pk, exc)
        return enforcements

    def _load(self, instance_id: Any) -> TriggerInstanceDB | None:
        try:
            return self.instances.get_by_id(instance_id)
        except NotFoundError:
            return None

    def _trace(self, instance: TriggerInstanceDB, body: dict[str, Any]) -> TraceDB:
        """The instance's trace: the one dispatch named, else found by its link, else a new one."""
        if body.get("trace_id") and body.get("trace_tag") and to_object_id(body["trace_id"]):
            # Dispatch stored it and says what it is: no need to read it back.
            return TraceDB(id=to_object_id(body["trace_id"]), trace_tag=body["trace_tag"])
        found = trace_service.trace_of(COMPONENT_TRIGGER_INSTANCE, instance.pk)
        if found is not None:
            return found
        trace = trace_service.create(trace_service.TRIGGER_INSTANCE_TAG.format(id=instance.pk))
        trace_service.add_trigger_instance(trace, instance.pk, instance.trigger)
        return trace

    def give_up(self, body: dict[str, Any], error: BaseException) -> None:
        """An instance that could not even be claimed after every retry: processing_failed."""
        instance = self._load(body.get("id"))
        if instance is not None and instance.status == statuses.TRIGGER_INSTANCE_PENDING:
            triggers.update_instance_status(instance, statuses.TRIGGER_INSTANCE_PROCESSING_FAILED)

    # -- the sweep ------------------------------------------------------------------------

    def backlog(self) -> int | None:
        """How many messages wait on the engines' queue (None when the bus cannot say)."""
        try:
            with self.publisher.connection.clone() as connection:
                return self.queue(connection.default_channel).queue_declare(passive=True).message_count
        except Exception as exc:  # kombu and the transports raise many unrelated types
            LOG.debug("rules engine: queue depth unknown: %s", exc)
            return None

    def republish_pending(self, stuck_after: float = 0.0) -> list[str]:
        """Nudge again every instance pending for at least stuck_after seconds (a lost message); their ids.

        While messages wait on the queue, pending instances are most likely
        behind them, not lost: re-publishing would only duplicate the backlog,
        so the sweep waits until the queue is empty.
        """
        if self.backlog():
            return []
        cutoff = utcnow() - datetime.timedelta(seconds=stuck_after)
        stuck = self.instances.query({"status": statuses.TRIGGER_INSTANCE_PENDING},
                                     raw={"occurrence_time": {"$lte": cutoff}}, order_by=["occurrence_time"],
                                     only=("id", "trigger"))
        for instance in stuck:
            trigger = self.triggers.trigger(instance.trigger)
            routing_key = trigger.type if trigger is not None else instance.trigger
            self.publisher.publish(triggers.DISPATCH_EXCHANGE, routing_key, {"id": str(instance.pk)})
        if stuck:
            LOG.info("rules engine sweep: %d pending trigger instances re-published", len(stuck))
        return [str(instance.pk) for instance in stuck]


class _Refresh(Handler):
    """Runs a refresh callback for every message of a broadcast queue."""

    def __init__(self, queue, callback: Callable[[dict[str, Any]], None]) -> None:
        self.queue = queue
        self.callback = callback

    def handle(self, body: dict[str, Any]) -> None:
        """Refresh from one event."""
        self.callback(body)
