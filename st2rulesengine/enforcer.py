"""Rule enforcement: one rule + one trigger instance -> a rule enforcement record and an execution request.

| outcome                                    | writes                                                  |
| ------------------------------------------ | ------------------------------------------------------- |
| parameters render, the request is accepted | the execution (executions.request, which publishes it); |
|                                            | its rule / trigger / trigger_type / trigger_instance;   |
|                                            | enforcement ``succeeded`` with execution_id; trace links |
|                                            | rule (caused by the instance) and execution (by the rule) |
| parameters fail to render, or the request  | enforcement ``failed`` with the reason; trace links the |
| is refused (unknown action, bad parameter) | rule                                                    |
| criteria could not be evaluated            | enforcement ``failed`` with the matcher's error         |

The execution's context is StackStorm's: ``trigger_instance {id, name}``,
``rule {id, name, ref}``, ``trace_context {id_, trace_tag}``, ``user`` (the
system user). Nothing an enforcement does stops the others: every error ends
up in the enforcement record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from st2common import statuses
from st2common.exceptions import StackStormBaseException
from st2common.models.api import rule as rule_api
from st2common.models.api.execution import parameter_schema
from st2common.models.api.trigger import trigger_instance_to_api, trigger_to_api, trigger_type_to_api
from st2common.models.db.enforcement import RuleEnforcementDB
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.rule import RuleDB
from st2common.models.db.trace import TraceDB
from st2common.models.db.trigger import TriggerDB, TriggerInstanceDB, TriggerTypeDB
from st2common.persistence.access import Access
from st2common.services import executions
from st2common.services import trace as trace_service
from st2common.transport.publisher import Publisher
from st2rulesengine.matcher import Rule, render_action_parameters

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Occurrence:
    """A trigger instance being processed, with its trigger, trigger type and trace."""

    instance: TriggerInstanceDB
    trigger: TriggerDB | None
    trigger_type: TriggerTypeDB | None
    trace: TraceDB | None

    @property
    def payload(self) -> dict[str, Any]:
        """The instance's payload (never None)."""
        return dict(self.instance.payload or {})


class Enforcer:
    """Enforces matched rules: renders their action parameters and requests the executions."""

    def __init__(self, publisher: Publisher, user: str = executions.SYSTEM_USER,
                 lookups: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.publisher = publisher
        self.user = user
        # Template lookups beside ``trigger`` (st2kv), built fresh for each enforcement.
        self.lookups = lookups or dict
        self.enforcements = Access(RuleEnforcementDB)
        self.executions = executions.access(None)

    def enforce(self, rule_doc: RuleDB, rule: Rule, occurrence: Occurrence) -> RuleEnforcementDB:
        """Render the rule's action parameters, request the execution, record the enforcement."""
        instance = occurrence.instance
        rendered = render_action_parameters(rule.action_parameters, occurrence.payload, self.lookups())
        if rendered.error:
            return self._record(rule_doc, occurrence, None, rendered.error, link_rule=True)
        context = self._context(rule_doc, occurrence)
        try:
            execution = executions.request(self.publisher, rule.action_ref, rendered.values, context=context,
                                           user=self.user)
        except StackStormBaseException as exc:
            reason = f'Failed to request action "{rule.action_ref}": {exc}'
            return self._record(rule_doc, occurrence, None, reason, link_rule=True)
        self._describe_origin(execution, rule_doc, occurrence)
        LOG.info("rule %s enforced for trigger instance %s: execution %s of %s", rule.ref, instance.pk,
                 execution.pk, rule.action_ref)
        return self._record(rule_doc, occurrence, execution, None, link_rule=True)

    def fail(self, rule_doc: RuleDB, occurrence: Occurrence, reason: str) -> RuleEnforcementDB:
        """Record a rule whose criteria could not be evaluated for the instance."""
        return self._record(rule_doc, occurrence, None, reason, link_rule=False)

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

    def _describe_origin(self, execution: ExecutionDB, rule_doc: RuleDB, occurrence: Occurrence) -> None:
        """Fill the execution's rule, trigger, trigger_type and trigger_instance, as StackStorm's shape has them."""
        # Secret action parameters of the rule stay out of the copy, as they stay out of API output.
        origin = {"rule": rule_api.to_api(rule_doc, parameter_schema(execution)),
                  "trigger_instance": trigger_instance_to_api(occurrence.instance)}
        if occurrence.trigger is not None:
            origin["trigger"] = trigger_to_api(occurrence.trigger)
        if occurrence.trigger_type is not None:
            origin["trigger_type"] = trigger_type_to_api(occurrence.trigger_type)
        try:
            # No event: the runners have the execution already and nothing waits for these fields.
            self.executions.update_if(execution.pk, {}, origin, publish=False)
        except StackStormBaseException as exc:
            LOG.warning("execution %s: rule and trigger not recorded: %s", execution.pk, exc)

    def _record(self, rule_doc: RuleDB, occurrence: Occurrence, execution: ExecutionDB | None,
                failure: str | None, link_rule: bool) -> RuleEnforcementDB:
        instance_id = str(occurrence.instance.pk)
        enforcement = RuleEnforcementDB(
            trigger_instance_id=instance_id,
            execution_id=str(execution.pk) if execution is not None else None,
            rule={"ref": rule_doc.ref, "id": str(rule_doc.pk), "uid": rule_doc.uid},
            status=statuses.ENFORCEMENT_FAILED if failure else statuses.ENFORCEMENT_SUCCEEDED,
            failure_reason=failure,
        )
        self.enforcements.add_or_update(enforcement, publish=False)
        if failure:
            LOG.warning("rule %s failed for trigger instance %s: %s", rule_doc.ref, instance_id, failure)
        if occurrence.trace is not None and link_rule:
            links = [trace_service.rule_link(rule_doc.pk, rule_doc.ref, instance_id)]
            if execution is not None:
                links.append(trace_service.execution_link(execution.pk, execution.action_ref, rule_doc.pk,
                                                          instance_id))
            trace_service.add_links(occurrence.trace, links)
        return enforcement
