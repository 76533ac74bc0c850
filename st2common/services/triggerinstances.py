"""Trigger instances: dispatch (store, trace, hand to the rules engines), status changes, re-emit.

Sensors, webhooks, timers, datastore writes and the notifier all go through
``dispatch``:

| step                                   | write / message                                            |
| -------------------------------------- | ---------------------------------------------------------- |
| resolve the trigger, check the payload | nothing (triggers.LOOKUPS; ValidationError naming          |
|                                        | ``payload.<field>``)                                       |
| store the instance                     | TriggerInstanceDB, status ``pending``                      |
| record the trace                       | TraceDB when new, one TraceComponentDB                     |
| nudge the rules engines                | trigger_instances_dispatch, routed by the trigger type ref:|
|                                        | ``{"id", "trace_id", "trace_tag"}`` (saves the engine a    |
|                                        | read of the trace)                                         |

The rules engine moves the instance pending -> processing -> processed (or
processing_failed) through ``update_instance_status``, one conditional write
per change; a re-emitted instance is a new one, as StackStorm's re_emit makes.
"""

from __future__ import annotations

import copy
import datetime
import logging
from typing import Any, Mapping

from st2common import statuses
from st2common.exceptions import ConflictError, ValidationError
from st2common.models.db.base import utcnow
from st2common.models.db.trace import COMPONENT_TRIGGER_INSTANCE
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.persistence.access import Access, to_object_id
from st2common.services import trace as trace_service
from st2common.services.triggers import resolve_trigger
from st2common.services.triggertypes import ACTION_TRIGGER_REF, NOTIFY_TRIGGER_REF, validate_payload

LOG = logging.getLogger(__name__)

DISPATCH_EXCHANGE = "trigger_instances_dispatch"
# Triggers whose instances are caused by an execution named in their payload (trace links).
_CAUSED_BY_EXECUTION = frozenset({ACTION_TRIGGER_REF, NOTIFY_TRIGGER_REF})
# dispatch()'s default for validate: [system] validate_trigger_payload, once configure() was called.
_defaults = {"validate_payload": True}


def configure(settings) -> None:
    """Take dispatch()'s payload validation default from [system] validate_trigger_payload."""
    _defaults["validate_payload"] = bool(settings.system.validate_trigger_payload)


def dispatch(publisher, trigger: str | Mapping[str, Any], payload: Mapping[str, Any] | None = None, *,
             trace_context: Mapping[str, Any] | str | None = None,
             occurrence_time: datetime.datetime | None = None, validate: bool | None = None,
             instance_id: Any = None) -> TriggerInstanceDB:
    """Store a trigger instance (pending), add it to its trace and hand it to the rules engines.

    trigger: a ref (``pack.name`` of a trigger, or of a trigger type without
    parameters) or ``{type, parameters}`` (or a TriggerAPI dict with id/ref).
    validate (default ``[system] validate_trigger_payload``) checks the
    payload against the type's payload_schema: ValidationError naming
    ``payload.<field>``. trace_context joins an existing trace
    (``{"trace_tag"}``, ``{"id_"}`` or a tag), else a new one is tagged
    ``trigger_instance-<id>``. An instance_id chosen by the caller makes the
    dispatch idempotent: a repeat stores nothing and returns the first instance.
    """
    trigger_db, trigger_type = resolve_trigger(trigger, publisher)
    payload = dict(payload or {})
    if _defaults["validate_payload"] if validate is None else validate:
        validate_payload(trigger_type, payload)
    fields = {"trigger": trigger_db.ref, "payload": payload, "occurrence_time": occurrence_time or utcnow(),
              "status": statuses.TRIGGER_INSTANCE_PENDING}
    instances = Access(TriggerInstanceDB)
    if instance_id is None:
        instance = instances.add_or_update(TriggerInstanceDB(**fields), publish=False)
    else:
        instance, existing = _store_once(instances, fields, instance_id)
        if existing is not None:
            if existing.status == statuses.TRIGGER_INSTANCE_PENDING:
                # The first attempt may have died before its message went out.
                publisher.publish(DISPATCH_EXCHANGE, trigger_type.ref, {"id": str(existing.pk)})
            return existing
    oid = instance.pk
    caused_by = payload.get("execution_id") if trigger_db.type in _CAUSED_BY_EXECUTION else None
    trace = trace_service.resolve(trace_context, trace_service.TRIGGER_INSTANCE_TAG.format(id=oid))
    trace_service.add_trigger_instance(trace, oid, trigger_db.ref, caused_by_execution=caused_by)
    publisher.publish(DISPATCH_EXCHANGE, trigger_type.ref,
                      {"id": str(oid), "trace_id": str(trace.pk), "trace_tag": trace.trace_tag})
    LOG.debug("trigger instance %s of %s dispatched (trace %s)", oid, trigger_db.ref, trace.pk)
    return instance


def _store_once(instances: Access[TriggerInstanceDB], fields: dict[str, Any],
                instance_id: Any) -> tuple[TriggerInstanceDB, TriggerInstanceDB | None]:
    """Insert an instance under instance_id unless it exists: (the new instance, the one found instead)."""
    oid = to_object_id(instance_id)
    if oid is None:
        raise ValidationError(f"instance_id {instance_id!r} is not an ObjectId", field="instance_id")
    instance = TriggerInstanceDB(id=oid, **fields)
    existing = instances.get(id=oid)
    if existing is None:
        try:
            # A true insert (saving a document with an id would replace one stored meanwhile).
            instances.insert_many([instance])
            return instance, None
        except ConflictError:
            existing = instances.get(id=oid)
    LOG.debug("trigger instance %s was dispatched before", oid)
    return instance, existing



def update_instance_status(instance: TriggerInstanceDB, new_status: str,
                           via: tuple[str, ...] = ()) -> TriggerInstanceDB | None:
    """Move a trigger instance to new_status if the table allows it; None when another writer moved it first.

    Statuses in via are passed through in the same write, each step checked
    against the table (a recovered instance goes processing_failed ->
    processing -> processed at once).
    """
    step_from = instance.status
    for step in (*via, new_status):
        statuses.check_transition("trigger_instance", instance.pk, step_from, step)
        step_from = step
    return Access(TriggerInstanceDB).update_if(instance.pk, {"status": instance.status}, {"status": new_status},
                                               publish=False)


def re_emit(publisher, instance_id: Any) -> TriggerInstanceDB:
    """Dispatch a stored instance's payload again as a new instance, as StackStorm's re_emit does.

    The payload gets ``__context: {original_id}``; the new instance joins the
    original's trace. NotFoundError when there is no such instance.
    """
    original = Access(TriggerInstanceDB).get_by_id(instance_id)
    payload = copy.deepcopy(dict(original.payload or {}))
    payload["__context"] = {"original_id": str(original.pk)}
    trace = trace_service.trace_of(COMPONENT_TRIGGER_INSTANCE, original.pk)
    context = trace_service.trace_context(trace) if trace is not None else None
    # The payload passed validation when it was first dispatched.
    instance = dispatch(publisher, original.trigger, payload, trace_context=context, validate=False)
    LOG.info("trigger instance %s re-emitted as %s", original.pk, instance.pk)
    return instance
