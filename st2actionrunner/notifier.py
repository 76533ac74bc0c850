"""The notifier: a finished execution dispatches the action trigger and its notify triggers.

| consumes                                   | does, for an execution in a completed status            |
| ------------------------------------------ | ------------------------------------------------------- |
| execution ``update`` events (queue         | ``core.st2.generic.actiontrigger`` when [action_sensor] |
| notifiers.execution.work, every action     | enable and the status is in emit_when;                  |
| runner competes)                           | ``core.st2.generic.notifytrigger`` once per route of    |
|                                            | the execution's notify on-complete, on-success (when    |
|                                            | succeeded) and on-failure (failed, timeout, abandoned)  |

Every execution update comes here. One that names a status (update_status
puts it in the message) that is not a completed one is dropped unread; the
rest are read, and ignored unless the record is completed. A completion may
still arrive twice (a redelivery, or an update that names no status read after
the record completed), and it must not dispatch twice: executions
carry no "notified" flag, so each trigger instance gets an id derived from
the execution, the trigger and the route: the second dispatch of the same
instance stores nothing (see triggerinstances.dispatch's instance_id).

The instances join the execution's trace, caused by the execution, as
StackStorm links them. An execution with no trace yet (requested through the
API, not by a rule) gets one, tagged ``execution-<id>`` or by its
``trace_context``, so the chain execution -> action trigger -> rule -> next
execution is on record. For an execution that carries no trace context and
has no parent, nothing else can have linked it to a trace, so its trace is
created without a lookup, under an id derived from the execution's (a repeat
stores nothing).

An execution this process's dispatcher completed is not read at all: the
dispatcher hands over the record its completing write returned
(``hand_over``), and the update's message, when it comes to this copy, takes
it from there. The record is the same a read would find (a completed
execution is written again only by this notifier's retry mark, which checks
the revision); a message this copy does not get is
read by the copy that does, and what is handed over is kept for a few
seconds and a few hundred executions at most.

Executions completed at the same time share the work: they are read in one
query (a batch Loader), and the action triggers of those without notify
routes are written together (st2actionrunner.actiontriggers: one insert each
of traces, trigger instances and trace links per batch). Nothing else reads
on this path: the trigger, the traces this process made and the policy index
come from memory. Executions with notify routes go one by one.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any, Mapping

from bson import ObjectId

from st2common import statuses, templating
from st2common.exceptions import StackStormBaseException
from st2common.models.api.base import isotime, mask_parameters
from st2common.models.api.execution import mask_result, parameter_schema
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.trace import COMPONENT_EXECUTION
from st2common.persistence.batches import Loader
from st2common.services import executions, triggerinstances, triggertypes
from st2common.services.keyvalues import Datastore
from st2common.services import trace as trace_service
from st2common.transport.consumer import Handler
from st2common.transport.publisher import Publisher
from st2actionrunner import policies
from st2actionrunner.actiontriggers import ActionTriggers

LOG = logging.getLogger(__name__)

QUEUE = "notifiers.execution.work"
ACTION_TRIGGER_KIND = "actiontrigger"
# Completed records handed over by the dispatcher wait this long (seconds), this many at most, for
# their update's message (another copy may get it, and then they are never taken).
HANDED_OVER_TTL = 5.0
HANDED_OVER_MAX = 256

# notify section -> (statuses it applies to (None: every completed one), default message suffix).
_SECTIONS = (
    ("on-complete", None, " completed."),
    ("on-success", frozenset({statuses.SUCCEEDED}), " succeeded."),
    ("on-failure", statuses.FAILED_STATES, " failed."),
)


def _utc(value: datetime.datetime | None) -> datetime.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    return value


def instance_id(execution: ExecutionDB, kind: str) -> ObjectId:
    """The id of the trigger instance of one kind an execution causes: the same on every delivery.

    Its time part is the execution's end, so instances still sort by when
    they happened; the rest is a digest of the execution id and the kind.
    """
    when = _utc(execution.end_timestamp) or execution.pk.generation_time
    digest = hashlib.sha1(f"{execution.pk}:{kind}".encode()).digest()[:8]
    return ObjectId(int(when.timestamp()).to_bytes(4, "big") + digest)


class Notifier(Handler):
    """Dispatches the action trigger and the notify triggers of completed executions."""

    def __init__(self, settings, publisher: Publisher) -> None:
        self.settings = settings
        self.queue = publisher.topology.work_queue(QUEUE)
        self.publisher = publisher
        self.action_trigger = settings.action_sensor.enable
        self.emit_when = frozenset(settings.action_sensor.emit_when)
        # st2kv in notify messages and data.
        self.datastore = Datastore(settings)
        self.access = executions.access(None)
        self.loader = Loader(self.access)
        # execution id -> (when, the completed record the dispatcher of this process wrote).
        self._handed: OrderedDict[str, tuple[float, ExecutionDB]] = OrderedDict()
        self.action_triggers = ActionTriggers(
            publisher, validate=settings.system.validate_trigger_payload, payload=action_trigger_payload,
            instance_id=lambda execution: instance_id(execution, ACTION_TRIGGER_KIND), one_by_one=self._dispatch_one,
            prefetch=settings.messaging.prefetch_count)

    def start(self) -> None:
        """Make sure the trigger types it dispatches exist, and follow the payload validation setting."""
        triggerinstances.configure(self.settings)
        triggertypes.register_system_trigger_types(self.publisher)

    def hand_over(self, execution: ExecutionDB) -> None:
        """Keep a record this process just completed for its update's message (spares reading it)."""
        now = time.monotonic()
        handed = self._handed
        handed[str(execution.pk)] = (now, execution)
        while handed and (len(handed) > HANDED_OVER_MAX or next(iter(handed.values()))[0] < now - HANDED_OVER_TTL):
            handed.popitem(last=False)

    def handle(self, body: dict[str, Any]) -> None:
        """Dispatch what a completed execution owes; anything else is not for us."""
        if body.get("status") and body["status"] not in statuses.COMPLETED:
            return
        handed = self._handed.pop(str(body.get("id")), None)
        execution = handed[1] if handed is not None else self.loader.get(body.get("id"))
        if execution is None or execution.status not in statuses.COMPLETED:
            return
        # Post-run policies (concurrency slots freed, retries requested): st2actionrunner.policies.
        policies.after_run(self.publisher, execution)
        emit = self.action_trigger and execution.status in self.emit_when
        notify = dict(execution.notify or {})
        if notify:
            context = self._trace_context(execution)
            self._notify(execution, notify, context)
            if emit:
                self._action_trigger(execution, context)
        elif emit:
            self.action_triggers.dispatch(execution)

    def _dispatch_one(self, execution: ExecutionDB) -> None:
        """The action trigger of one execution, its trace found or made on the way (a repeat stores nothing)."""
        self._action_trigger(execution, self._trace_context(execution))

    def _action_trigger(self, execution: ExecutionDB, context: Mapping[str, Any]) -> None:
        triggerinstances.dispatch(self.publisher, triggertypes.ACTION_TRIGGER_REF,
                                  action_trigger_payload(execution), trace_context=context,
                                  instance_id=instance_id(execution, ACTION_TRIGGER_KIND))
        LOG.debug("execution %s (%s): action trigger dispatched", execution.pk, execution.status)

    def _notify(self, execution: ExecutionDB, notify: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        scope = None
        for section, applies_to, suffix in _SECTIONS:
            spec = notify.get(section) or notify.get(section.replace("-", "_"))
            if not spec or (applies_to is not None and execution.status not in applies_to):
                continue
            routes = list(spec.get("routes") or spec.get("channels") or [])
            if not routes:
                continue
            scope = scope if scope is not None else self._scope(execution)
            payload = notify_payload(execution, spec, suffix, scope)
            for route in routes:
                triggerinstances.dispatch(self.publisher, triggertypes.NOTIFY_TRIGGER_REF,
                                          dict(payload, route=route, channel=route), trace_context=context,
                                          instance_id=instance_id(execution, f"notify:{section}:{route}"))
            LOG.debug("execution %s: %s notified to %s", execution.pk, section, routes)

    def _scope(self, execution: ExecutionDB) -> dict[str, Any]:
        """What notify messages and data render with (StackStorm's names)."""
        context = dict(execution.context or {})
        user = context.get("api_user") or context.get("user")
        return {**templating.st2kv_context(self.datastore, user), "action_parameters": dict(execution.parameters or {}),
                "action_context": context, "action_results": execution.result}

    def _trace_context(self, execution: ExecutionDB) -> dict[str, str]:
        """The execution's trace context, its trace made (and the execution linked) when it has none."""
        carried = dict((execution.context or {}).get("trace_context") or {})
        if carried.get("id_"):
            trace = trace_service.get(carried) if execution.parent else None
            if trace is not None:
                # A workflow's child carries its parent's trace by id and joins it only now.
                trace_service.add_execution(trace, execution.pk, execution.action_ref, parent_id=execution.parent)
            return carried
        if not carried.get("trace_tag") and not execution.parent:
            trace = trace_service.start_for_execution(execution.pk)
            trace_service.add_execution(trace, execution.pk, execution.action_ref)
            return trace_service.trace_context(trace)
        trace = trace_service.trace_of(COMPONENT_EXECUTION, execution.pk)
        if trace is None and execution.parent:
            trace = trace_service.trace_of(COMPONENT_EXECUTION, execution.parent)
        if trace is None:
            trace = trace_service.resolve(carried, trace_service.EXECUTION_TAG.format(id=execution.pk))
        trace_service.add_execution(trace, execution.pk, execution.action_ref, parent_id=execution.parent)
        return trace_service.trace_context(trace)


def runner_ref(execution: ExecutionDB) -> str | None:
    """The name of the runner type the execution ran with."""
    return (execution.runner or {}).get("name") or (execution.action or {}).get("runner_type")


def action_trigger_payload(execution: ExecutionDB) -> dict[str, Any]:
    """StackStorm's actiontrigger payload: its eight fields, secrets masked."""
    return {
        "execution_id": str(execution.pk),
        "status": execution.status,
        "start_timestamp": str(_utc(execution.start_timestamp)),
        # Deprecated in StackStorm and kept: rules written for it still match.
        "action_name": execution.action_ref,
        "action_ref": execution.action_ref,
        "runner_ref": runner_ref(execution),
        "parameters": mask_parameters(dict(execution.parameters or {}), parameter_schema(execution)),
        "result": mask_result(execution, execution.result),
    }


def notify_payload(execution: ExecutionDB, spec: Mapping[str, Any], suffix: str,
                   scope: Mapping[str, Any]) -> dict[str, Any]:
    """The notifytrigger payload for one notify section (route and channel are added per route)."""
    message = spec.get("message") or f"Action {execution.action_ref}{suffix}"
    data = dict(spec.get("data") or {})
    try:
        message = templating.render_value(message, scope)
    except StackStormBaseException as exc:
        # StackStorm sends the message unrendered rather than no notification.
        LOG.warning("execution %s: notify message not rendered: %s", execution.pk, exc)
    try:
        data = templating.render_value(data, scope)
    except StackStormBaseException as exc:
        LOG.warning("execution %s: notify data not rendered: %s", execution.pk, exc)
    # As in StackStorm: the result as JSON text, so any result fits the payload.
    data["result"] = json.dumps(mask_result(execution, execution.result), default=str)
    end = _utc(execution.end_timestamp) or datetime.datetime.now(datetime.timezone.utc)
    return {
        "execution_id": str(execution.pk),
        "status": execution.status,
        "start_timestamp": isotime(execution.start_timestamp),
        "end_timestamp": isotime(end),
        "action_ref": execution.action_ref,
        "runner_ref": runner_ref(execution),
        "message": message,
        "data": data,
    }
