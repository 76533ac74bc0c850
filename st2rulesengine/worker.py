"""The rules engine's consumer: trigger instance id -> load -> match -> enforce -> processed.

| consumes                                    | does                                                  |
| ------------------------------------------- | ----------------------------------------------------- |
| trigger_instances_dispatch (queue           | pending -> processing (compare-and-set: one copy wins, |
| trigger_instances_dispatch.rules_engine,    | a redelivered message does nothing), match against the |
| every copy competes)                        | rules of the instance's trigger type, enforce each     |
|                                             | match, -> processed (processing_failed on an error)    |
| rule create/update/delete (a broadcast      | refresh that rule in this process's rule index         |
| queue of this process on the rule exchange) | (st2rulesengine.index)                                |
| trigger / trigger type writes (broadcast)   | forget the looked-up triggers and trigger types       |
|                                             | (triggers.lookup_handlers)                            |

Database commands per instance (the instances handled at the same moment
share the batched ones, st2rulesengine.batches); there is no load when the
message carries the instance (triggerinstances.dispatch_message):

| instance                | commands                                                      |
| ----------------------- | ------------------------------------------------------------- |
| no rule matches         | load, pending -> processed (both batched)                     |
| enforced by one rule    | load, pending -> processing (batched); the execution request  |
|                         | (its rule and trigger fields in the same document; batched:   |
|                         | executions.request_many); the enforcement and trace links     |
|                         | (plain documents) then processing -> processed, in one batch  |

An instance left ``processing`` by an engine that died is finished by the
sweep (st2rulesengine.sweep, ``recover``): the rules enforced before are not
enforced again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from st2common import statuses
from st2common.exceptions import NotFoundError, StackStormBaseException
from st2common.models.api.base import stored
from st2common.models.db.rule import RuleDB
from st2common.models.db.trace import COMPONENT_TRIGGER_INSTANCE, TraceDB
from st2common.models.db.trigger import TriggerDB, TriggerInstanceDB
from st2common.persistence.access import Access
from st2common.persistence.batches import DEFAULT_BATCH_SIZE, Loader
from st2common.services import trace as trace_service
from st2common.services import triggerinstances, triggers
from st2common.transport.consumer import Handler
from st2common.transport.publisher import Publisher
from st2rulesengine import matcher
from st2rulesengine.batches import Records, StatusWriter
from st2rulesengine.enforcer import Enforcer, Occurrence
from st2rulesengine.index import RuleIndex

LOG = logging.getLogger(__name__)

QUEUE = "trigger_instances_dispatch.rules_engine"


@dataclass(frozen=True)
class Evaluation:
    """One instance matched: its trigger (None if gone), trigger type, outcome, and the rules' documents."""

    trigger: TriggerDB | None
    type_ref: str
    outcome: matcher.Matches
    docs: dict[str | None, RuleDB]

    @property
    def anything(self) -> bool:
        """Whether some rule matched or could not be evaluated (something to record)."""
        return bool(self.outcome.matched or self.outcome.failed)


class RulesEngine(Handler):
    """Matches each trigger instance against the rules of its trigger type and enforces the matches."""

    def __init__(self, publisher: Publisher, enforcer: Enforcer | None = None,
                 lookups: Callable[[], Mapping[str, Any]] | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.queue = publisher.topology.work_queue(QUEUE)
        self.publisher = publisher
        self.rules = RuleIndex()
        self.lookups = lookups or dict
        self.enforcer = enforcer or Enforcer(publisher, lookups=self.lookups, batch_size=batch_size)
        self.instances = Access(TriggerInstanceDB)
        self.loader = Loader(self.instances, batch_size)
        self.statuses = StatusWriter(batch_size)
        # Ids of the instances this process holds in ``processing`` right now: never stuck.
        self.in_hand: set[str] = set()

    def handlers(self) -> list[Handler]:
        """This handler and the ones keeping its rule index and trigger lookups current."""
        topology = self.publisher.topology
        return [self, _RuleEvents(topology.broadcast_queue("rule"), self.rules), *triggers.lookup_handlers(topology)]

    def handle(self, body: dict[str, Any]) -> None:
        """Process the trigger instance body["id"] unless another copy has it already."""
        # The message carries a small instance whole; the claim below still checks the stored status.
        instance = triggerinstances.instance_from_message(body) or self.loader.get(body.get("id"))
        if instance is None:
            LOG.warning("rules engine: no trigger instance %s", body.get("id"))
            return
        if instance.status != statuses.TRIGGER_INSTANCE_PENDING:
            LOG.debug("rules engine: trigger instance %s is %s; nothing to do", instance.pk, instance.status)
            return
        # Matching has no side effects, so it runs before the claim: an instance no rule
        # matches is done in one write.
        evaluation = self.match(instance)
        if not evaluation.anything:
            self.statuses.skip(instance)
            return
        claimed = self.statuses.claim(instance)
        if claimed is None:
            LOG.warning("rules engine: trigger instance %s was claimed at the same moment elsewhere; if this engine "
                        "has it, the sweep finishes it", instance.pk)
        if not claimed:
            return
        self._finish(instance, evaluation, body)

    def recover(self, instance: TriggerInstanceDB) -> bool:
        """Finish an instance whose processing a dead engine left half done; True once it is processed.

        The caller took it over (processing -> processing_failed), so a second
        failure leaves it processing_failed: it is re-processed once. Rules
        enforced before are skipped; an execution requested without its
        enforcement being stored is recorded, not requested again.
        """
        enforced, requested = self.enforcer.done_for(instance)
        evaluation = self.match(instance)
        failed = tuple(f for f in evaluation.outcome.failed if f.rule.id not in enforced)
        matched = tuple(m for m in evaluation.outcome.matched if m.rule.id not in enforced)
        LOG.warning("rules engine: trigger instance %s was left processing; %d rules enforced before, "
                    "%d to enforce now", instance.pk, len(enforced), len(matched) + len(failed))
        remaining = Evaluation(evaluation.trigger, evaluation.type_ref, matcher.Matches(matched, failed),
                               evaluation.docs)
        return self._finish(instance, remaining, {}, requested, via=(statuses.TRIGGER_INSTANCE_PROCESSING,))

    def _finish(self, instance: TriggerInstanceDB, evaluation: Evaluation, body: dict[str, Any],
                requested: Mapping[str, Any] | None = None, via: tuple[str, ...] = ()) -> bool:
        """Enforce the evaluation of an instance this process holds, then -> processed; True if it got there."""
        self.in_hand.add(str(instance.pk))
        try:
            try:
                finished = self.enforce(instance, evaluation, self._trace(instance, body), requested, finish=not via)
            except Exception:  # a bug or the database going away: the record says so, the queue goes on
                LOG.exception("rules engine: trigger instance %s failed", instance.pk)
                if instance.status != statuses.TRIGGER_INSTANCE_PROCESSING_FAILED:
                    triggerinstances.update_instance_status(instance, statuses.TRIGGER_INSTANCE_PROCESSING_FAILED)
                return False
            if not via:
                if isinstance(finished, Exception):
                    # Only processing -> processed failed, the records are stored: the message is retried
                    # (and finds the instance processing), the sweep finishes it.
                    raise finished
                return bool(finished)
            return triggerinstances.update_instance_status(instance, statuses.TRIGGER_INSTANCE_PROCESSED,
                                                           via=via) is not None
        finally:
            self.in_hand.discard(str(instance.pk))

    def match(self, instance: TriggerInstanceDB) -> Evaluation:
        """The rules of the instance's trigger type it matches, and those that could not be evaluated."""
        trigger = triggers.lookup_trigger(instance.trigger)
        type_ref = trigger.type if trigger is not None else instance.trigger
        rules = self.rules.rules_for(type_ref)
        if not rules.entries:
            return Evaluation(trigger, type_ref, matcher.Matches((), ()), {})
        lookups = self.lookups()
        # As stored, past the field's descriptor (its read wraps and copies the value): matching only reads it.
        payload = stored(instance, "payload")
        candidates = rules.candidates({**lookups, matcher.TRIGGER: payload})
        subject = matcher.TriggerInstance(
            trigger_type=type_ref, payload=payload,
            trigger_parameters=dict(stored(trigger, "parameters") or {}) if trigger is not None else {},
            trigger_ref=instance.trigger, id=str(instance.pk))
        outcome = matcher.match([rule for rule, _ in candidates], subject, lookups)
        return Evaluation(trigger, type_ref, outcome, {rule.id: doc for rule, doc in candidates})

    def enforce(self, instance: TriggerInstanceDB, evaluation: Evaluation, trace: TraceDB,
                requested: Mapping[str, Any] | None = None, finish: bool = False) -> bool | None | Exception:
        """Record the rules that errored and enforce the matches of a claimed instance.

        requested: executions by rule id that an earlier attempt requested
        without recording them; those rules are recorded, not requested again.
        finish: move the instance processing -> processed in the same batch as
        its records, and return RecordWriter.store_and_finish's result (or the error of
        that write alone, the records being stored); else None.
        """
        requested = requested or {}
        occurrence = Occurrence(instance, evaluation.trigger, triggers.lookup_trigger_type(evaluation.type_ref), trace)
        records = Records()
        for failed in evaluation.outcome.failed:
            self.enforcer.fail(evaluation.docs[failed.rule.id], occurrence, failed.error, records)
        to_request = []
        for match in evaluation.outcome.matched:
            rule_doc = evaluation.docs[match.rule.id]
            if match.rule.id not in requested:
                to_request.append((rule_doc, match.rule))
                continue
            try:
                self.enforcer.adopt(rule_doc, occurrence, requested[match.rule.id], records)
            except StackStormBaseException as exc:
                # One rule that could not be recorded must not stop the others.
                LOG.error("rule %s for trigger instance %s: %s", match.rule.ref, instance.pk, exc)
        self.enforcer.enforce(to_request, occurrence, records)
        return self.enforcer.store(records, instance if finish else None)

    def _load(self, instance_id: Any) -> TriggerInstanceDB | None:
        try:
            return self.instances.get_by_id(instance_id)
        except NotFoundError:
            return None

    def _trace(self, instance: TriggerInstanceDB, body: dict[str, Any]) -> TraceDB:
        """The instance's trace: the one dispatch named, else found by its link, else a new one."""
        named = triggerinstances.trace_from_message(body)
        if named is not None:
            # Dispatch stored it and says what it is: no need to read it back.
            return named
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
            triggerinstances.update_instance_status(instance, statuses.TRIGGER_INSTANCE_PROCESSING_FAILED)


class _RuleEvents(Handler):
    """Rule create/update/delete events -> RuleIndex.refresh."""

    def __init__(self, queue, rules: RuleIndex) -> None:
        self.queue = queue
        self.rules = rules

    def handle(self, body: dict[str, Any]) -> None:
        """Refresh the rule named by the event."""
        self.rules.refresh(str(body.get("id")))
