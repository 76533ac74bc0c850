"""Rule enforcement: one rule + one trigger instance -> a rule enforcement record and an execution request.

| outcome                                    | writes                                                  |
| ------------------------------------------ | ------------------------------------------------------- |
| parameters render, the request is accepted | the execution (executions.request_many, which publishes |
|                                            | it, stored with the other instances' in one insert);    |
|                                            | its rule / trigger / trigger_type / trigger_instance;   |
|                                            | enforcement ``succeeded`` with execution_id; trace links |
|                                            | rule (caused by the instance) and execution (by the rule) |
| parameters fail to render, or the request  | enforcement ``failed`` with the reason; trace links the |
| is refused (unknown action, bad parameter) | rule                                                    |
| criteria could not be evaluated            | enforcement ``failed`` with the matcher's error         |

Enforcements and trace links are gathered in the instance's Records and
stored together with those of the other instances being enforced at the same
moment (st2rulesengine.batches). An execution requested by an engine that
died before storing its records is adopted on recovery: its enforcement is
recorded, nothing is requested again.

The execution's context is StackStorm's: ``trigger_instance {id, name}``,
``rule {id, name, ref}``, ``trace_context {id_, trace_tag}``, ``user`` (the
system user). Nothing an enforcement does stops the others: every error ends
up in the enforcement record.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from st2common import statuses
from st2common.exceptions import StackStormBaseException
from st2common.models.api import rule as rule_api
from st2common.models.api.base import merged_parameter_schema, stored
from st2common.models.api.trigger import trigger_instance_to_api, trigger_to_api, trigger_type_to_api
from st2common.models.db.base import utcnow
from st2common.models.db.enforcement import RuleEnforcementDB
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.rule import RuleDB
from st2common.models.db.trace import TraceDB
from st2common.models.db.trigger import TriggerDB, TriggerInstanceDB, TriggerTypeDB
from st2common.persistence.access import Access
from st2common.persistence.batches import DEFAULT_BATCH_SIZE
from st2common.services import executions
from st2common.services import trace as trace_service
from st2common.transport.publisher import Publisher
from st2rulesengine.batches import Records, RecordWriter, RequestWriter
from st2rulesengine.matcher import Rule, render_action_parameters

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Occurrence:
    """A trigger instance being processed, with its trigger, trigger type and trace."""

    instance: TriggerInstanceDB
    trigger: TriggerDB | None
    trigger_type: TriggerTypeDB | None
    trace: TraceDB | None

    @functools.cached_property
    def payload(self) -> dict[str, Any]:
        """The instance's payload (never None), read once for all the rules enforced."""
        return dict(stored(self.instance, "payload") or {})


class Shapes:
    """API shapes of shared documents (rule index entries, trigger lookups), built once per document object.

    Those documents are never changed in place: a change replaces the object,
    so the object itself says the shape is current. The shapes are shared by
    the executions that carry them and must not be changed either (so their
    stored form is made once: executions.share).
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._built: dict[int, tuple[Any, Any, dict[str, Any]]] = {}

    def of(self, doc: Any, build: Callable[[Any], dict[str, Any]], key: Any = None) -> dict[str, Any]:
        """build(doc), made once for this object and key."""
        entry = self._built.get(id(doc))
        if entry is not None and entry[0] is doc and entry[1] == key:
            return entry[2]
        if len(self._built) >= self.limit:
            # Replaced documents pile up here otherwise.
            self._built.clear()
        shape = executions.share(build(doc))
        self._built[id(doc)] = (doc, key, shape)
        return shape


class Enforcer:
    """Enforces matched rules: renders their action parameters and requests the executions."""

    def __init__(self, publisher: Publisher, user: str = executions.SYSTEM_USER,
                 lookups: Callable[[], Mapping[str, Any]] | None = None, writer: RecordWriter | None = None,
                 requests: RequestWriter | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.publisher = publisher
        self.user = user
        # Template lookups beside ``trigger`` (st2kv), built fresh for each enforcement.
        self.lookups = lookups or dict
        self.enforcements = Access(RuleEnforcementDB)
        self.executions = executions.access(None)
        self.writer = writer or RecordWriter(batch_size)
        self.requests = requests or RequestWriter(publisher, batch_size)
        self.shapes = Shapes()
        # The parameter specs a rule's shape is masked by, per rule document and action lookup (both shared).
        self._specs: dict[int, tuple[RuleDB, dict, dict, dict, dict, dict[str, Any]]] = {}

    def enforce(self, matches: Sequence[tuple[RuleDB, Rule]], occurrence: Occurrence,
                records: Records) -> list[dict[str, Any]]:
        """Render the matched rules' action parameters and request their executions; enforcements into records.

        The requests are stored with those of the other instances being
        enforced at the same moment (one insert); a rule whose request fails
        gets its failed enforcement, the others go on.
        """
        prepared = [self._prepare(rule_doc, rule, occurrence) for rule_doc, rule in matches]
        outcomes = iter(self.requests.request([item for item in prepared if isinstance(item, ExecutionDB)]))
        enforcements = []
        for (rule_doc, rule), item in zip(matches, prepared):
            if isinstance(item, ExecutionDB):
                outcome = next(outcomes)
                if isinstance(outcome, StackStormBaseException):
                    item = f'Failed to request action "{rule.action_ref}": {outcome}'
                elif isinstance(outcome, Exception):
                    raise outcome  # a bug, not a refusal: this instance fails (processing_failed)
            if isinstance(item, str):
                enforcements.append(self._record(rule_doc, occurrence, None, item, records, link_rule=True))
                continue
            LOG.info("rule %s enforced for trigger instance %s: execution %s of %s", rule.ref,
                     occurrence.instance.pk, item.pk, rule.action_ref)
            enforcements.append(self._record(rule_doc, occurrence, item, None, records, link_rule=True))
        return enforcements

    def _prepare(self, rule_doc: RuleDB, rule: Rule, occurrence: Occurrence) -> ExecutionDB | str:
        """The execution a matched rule requests, not stored yet, or why it cannot be requested."""
        rendered = render_action_parameters(rule.action_parameters, occurrence.payload, self.lookups())
        if rendered.error:
            return rendered.error
        try:
            return executions.prepare(rule.action_ref, rendered.values, context=self._context(rule_doc, occurrence),
                                      user=self.user, origin=lambda e: self._origin(e, rule_doc, occurrence))
        except StackStormBaseException as exc:
            return f'Failed to request action "{rule.action_ref}": {exc}'

    def fail(self, rule_doc: RuleDB, occurrence: Occurrence, reason: str, records: Records) -> dict[str, Any]:
        """Record a rule whose criteria could not be evaluated for the instance."""
        return self._record(rule_doc, occurrence, None, reason, records, link_rule=False)

    def adopt(self, rule_doc: RuleDB, occurrence: Occurrence, execution: ExecutionDB,
              records: Records) -> dict[str, Any]:
        """Record the enforcement of an execution requested for the instance before its records were stored."""
        if not execution.rule:
            # Requested without its origin (by a version that stored it in a second write).
            try:
                self.executions.update_if(execution.pk, {}, self._origin(execution, rule_doc, occurrence),
                                          publish=False)
            except StackStormBaseException as exc:
                LOG.warning("execution %s: rule and trigger not recorded: %s", execution.pk, exc)
        LOG.info("rule %s for trigger instance %s: execution %s was requested already; recorded", rule_doc.ref,
                 occurrence.instance.pk, execution.pk)
        return self._record(rule_doc, occurrence, execution, None, records, link_rule=True)

    def store(self, records: Records, finishing: TriggerInstanceDB | None = None) -> bool | None | Exception:
        """Write an instance's enforcements and trace links (batched with other instances').

        finishing: the claimed instance, moved processing -> processed in the
        same batch; RecordWriter.store_and_finish's result. Else None.
        """
        if finishing is not None:
            return self.writer.store_and_finish(records, finishing)
        self.writer.store(records)
        return None

    def done_for(self, instance: TriggerInstanceDB) -> tuple[set[str], dict[str, ExecutionDB]]:
        """What earlier processing of an instance left: the rule ids enforced, and executions by rule id."""
        instance_id = str(instance.pk)
        enforced = {(doc.rule or {}).get("id") for doc in self.enforcements.query({"trigger_instance_id": instance_id})}
        requested = {}
        for execution in self.executions.query(raw={"context.trigger_instance.id": instance_id}):
            rule_id = ((execution.context or {}).get("rule") or {}).get("id")
            if rule_id and rule_id not in enforced:
                requested.setdefault(rule_id, execution)
        return enforced, requested

    # -- the pieces -----------------------------------------------------------------------

    def _context(self, rule_doc: RuleDB, occurrence: Occurrence) -> dict[str, Any]:
        context: dict[str, Any] = {
            "trigger_instance": {"id": str(occurrence.instance.pk), "name": None},
            "rule": {"id": str(rule_doc.pk), "name": rule_doc.name, "ref": rule_doc.ref},
            "user": self.user,
        }
        if occurrence.trace is not None:
            context["trace_context"] = trace_service.trace_context(occurrence.trace)
        return context

    def _origin(self, execution: ExecutionDB, rule_doc: RuleDB, occurrence: Occurrence) -> dict[str, Any]:
        """The execution's rule, trigger, trigger_type and trigger_instance, as StackStorm's shape has them."""
        origin = {"rule": self._rule_shape(execution, rule_doc),
                  "trigger_instance": trigger_instance_to_api(occurrence.instance)}
        if occurrence.trigger is not None:
            origin["trigger"] = self.shapes.of(occurrence.trigger, trigger_to_api)
        if occurrence.trigger_type is not None:
            origin["trigger_type"] = self.shapes.of(occurrence.trigger_type, trigger_type_to_api)
        return origin

    def _rule_shape(self, execution: ExecutionDB, rule_doc: RuleDB) -> dict[str, Any]:
        """rule_doc as the API shows it, its secret action parameters masked as the execution's action declares."""
        # Secret action parameters of the rule stay out of the copy, as they stay out of API output. Only the
        # specs of the parameters the rule sets matter, and they are what the shape is kept under.
        action, runner = stored(execution, "action") or {}, stored(execution, "runner") or {}
        # The entry holds its rule document, so no other object can have its id meanwhile.
        entry = self._specs.get(id(rule_doc))
        if entry is None or entry[0] is not rule_doc or entry[1] is not action or entry[2] is not runner:
            names = ((stored(rule_doc, "action") or {}).get("parameters") or {}).keys()
            runner_specs = {name: spec for name, spec in (runner.get("runner_parameters") or {}).items()
                            if name in names}
            action_specs = {name: spec for name, spec in (action.get("parameters") or {}).items() if name in names}
            # The action is looked up again every second or so, most often unchanged: the specs are kept then.
            if entry is None or entry[0] is not rule_doc or (entry[3], entry[4]) != (runner_specs, action_specs):
                specs = merged_parameter_schema(runner_specs, action_specs)
            else:
                specs = entry[5]
            if len(self._specs) >= self.shapes.limit:
                # Replaced rules pile up here otherwise.
                self._specs.clear()
            entry = self._specs[id(rule_doc)] = (rule_doc, action, runner, runner_specs, action_specs, specs)
        specs = entry[5]
        return self.shapes.of(rule_doc, lambda doc: rule_api.to_api(doc, specs), specs)

    def _record(self, rule_doc: RuleDB, occurrence: Occurrence, execution: ExecutionDB | None,
                failure: str | None, records: Records, link_rule: bool) -> dict[str, Any]:
        instance_id = str(occurrence.instance.pk)
        rule_id = str(rule_doc.pk)
        # RuleEnforcementDB's stored shape, built here: the document class and its validation cost more than the
        # insert (every field is known good: ids, the rule's names, a status of ours).
        enforcement: dict[str, Any] = {
            "trigger_instance_id": instance_id,
            "rule": {"ref": rule_doc.ref, "id": rule_id, "uid": rule_doc.uid},
            "enforced_at": utcnow(),
            "status": statuses.ENFORCEMENT_FAILED if failure else statuses.ENFORCEMENT_SUCCEEDED,
        }
        if execution is not None:
            enforcement["execution_id"] = str(execution.pk)
        if failure:
            enforcement["failure_reason"] = failure
            LOG.warning("rule %s failed for trigger instance %s: %s", rule_doc.ref, instance_id, failure)
        records.enforcements.append(enforcement)
        if occurrence.trace is not None and link_rule:
            records.trace = occurrence.trace
            records.links.append(trace_service.rule_link(rule_id, rule_doc.ref, instance_id))
            if execution is not None:
                records.links.append(trace_service.execution_link(execution.pk, execution.action_ref, rule_id,
                                                                  instance_id))
        return enforcement
