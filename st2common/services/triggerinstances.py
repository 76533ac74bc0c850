"""Trigger instances: dispatch (store, trace, hand to the rules engines), status changes, re-emit.

Sensors, webhooks, timers, datastore writes and the notifier all go through
``dispatch``:

| step                                   | write / message                                            |
| -------------------------------------- | ---------------------------------------------------------- |
| resolve the trigger, check the payload | nothing (triggers.LOOKUPS; ValidationError naming          |
|                                        | ``payload.<field>``)                                       |
| store the instance and, at the same    | TriggerInstanceDB, status ``pending``; TraceDB when new,   |
| time (green threads), record the trace | one TraceComponentDB                                       |
| nudge the rules engines                | trigger_instances_dispatch, routed by the trigger type ref:|
|                                        | ``{"id", "trace_id", "trace_tag"}`` (saves the engine a    |
|                                        | read of the trace) and, for a small plain JSON payload,    |
|                                        | ``trigger, payload, occurrence_time`` (saves it a read of  |
|                                        | the instance: dispatch_message)                            |

The instance and its trace are written at the same time because the trace
needs only the instance's id (chosen here): the dispatch waits one round trip
less. The message goes out once both are stored. Should the instance's insert
fail (the database gone) after the trace's, that trace names an instance that
was never stored; should the trace fail, the instance waits without a message
and the rules engine's sweep re-publishes it, and the engine starts its trace.

The rules engine moves the instance pending -> processing -> processed (or
processing_failed), each change a conditional write: ``update_instance_status``
for one instance, ``move_instances`` for the instances handled at the same
moment; a re-emitted instance is a new one, as StackStorm's re_emit makes.
"""

from __future__ import annotations

import copy
import datetime
import logging
from typing import Any, Mapping

import eventlet
import mongoengine as me
from bson import ObjectId

from st2common import statuses
from st2common.exceptions import ConflictError, ValidationError
from st2common.models.db.base import document_of, utcnow
from st2common.models.db.trace import COMPONENT_TRIGGER_INSTANCE, TraceDB
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
             instance_id: Any = None, new_trace_tag: str | None = None) -> TriggerInstanceDB:
    """Store a trigger instance (pending), add it to its trace and hand it to the rules engines.

    trigger: a ref (``pack.name`` of a trigger, or of a trigger type without
    parameters) or ``{type, parameters}`` (or a TriggerAPI dict with id/ref).
    validate (default ``[system] validate_trigger_payload``) checks the
    payload against the type's payload_schema: ValidationError naming
    ``payload.<field>``. trace_context joins an existing trace
    (``{"trace_tag"}``, ``{"id_"}`` or a tag), else a new one is tagged
    ``trigger_instance-<id>``, or new_trace_tag (a tag the caller just made
    up: no trace can hold it yet, so none is looked up). An instance_id
    chosen by the caller makes the dispatch idempotent: a repeat stores
    nothing and returns the first instance.
    """
    trigger_db, trigger_type = resolve_trigger(trigger, publisher)
    payload = dict(payload or {})
    if _defaults["validate_payload"] if validate is None else validate:
        validate_payload(trigger_type, payload)
    fields = {"trigger": trigger_db.ref, "payload": payload, "occurrence_time": occurrence_time or utcnow(),
              "status": statuses.TRIGGER_INSTANCE_PENDING}
    instances = Access(TriggerInstanceDB)
    caused_by = payload.get("execution_id") if trigger_db.type in _CAUSED_BY_EXECUTION else None
    if instance_id is None:
        instance = TriggerInstanceDB(id=ObjectId(), **fields)
        try:
            # Checked before anything is written: an invalid instance must leave no trace behind.
            instance.validate()
        except me.ValidationError as exc:
            fields_in_error = sorted((exc.errors or {}).keys())
            raise ValidationError(f"invalid trigger_instance: {exc}",
                                  field=fields_in_error[0] if fields_in_error else None) from exc
        # The trace needs only the instance's id, so it is written while the instance is: one round trip
        # of the dispatch's latency instead of two or three. The message goes out once both are stored.
        stored = eventlet.spawn(instances.insert_many, [instance], reload=False)
        try:
            trace = _trace(trace_context, new_trace_tag, instance.pk, trigger_db.ref, caused_by)
        finally:
            stored.wait()
    else:
        instance, existing = _store_once(instances, fields, instance_id)
        if existing is not None:
            if existing.status == statuses.TRIGGER_INSTANCE_PENDING:
                # The first attempt may have died before its message went out.
                publisher.publish(DISPATCH_EXCHANGE, trigger_type.ref, {"id": str(existing.pk)})
            return existing
        trace = _trace(trace_context, new_trace_tag, instance.pk, trigger_db.ref, caused_by)
    publisher.publish(DISPATCH_EXCHANGE, trigger_type.ref, dispatch_message(instance, trace))
    LOG.debug("trigger instance %s of %s dispatched (trace %s)", instance.pk, trigger_db.ref, trace.pk)
    return instance


def dispatch_message(instance: TriggerInstanceDB, trace: TraceDB) -> dict[str, Any]:
    """The message announcing a stored pending instance: its id, its trace and, if small and plain, its content.

    The content (trigger, payload, occurrence_time in epoch milliseconds) saves
    the rules engine reading the instance. It goes only when the payload comes
    back from JSON exactly as it comes back from the database: plain JSON
    (no dates, bytes, tuples), keys without the escape characters, at most
    INLINE_PAYLOAD_LIMIT characters or so.
    """
    body = {"id": str(instance.pk), "trace_id": str(trace.pk), "trace_tag": trace.trace_tag}
    payload = instance.payload or {}
    if _plain_json(payload, INLINE_PAYLOAD_LIMIT) >= 0:
        body.update(trigger=instance.trigger, payload=payload, occurrence_time=_millis(instance.occurrence_time))
    return body


def instance_from_message(body: Mapping[str, Any]) -> TriggerInstanceDB | None:
    """The pending instance a dispatch message carries whole, or None (only its id: read it)."""
    oid = to_object_id(body.get("id"))
    when = body.get("occurrence_time")
    if oid is None or not isinstance(body.get("trigger"), str) or not isinstance(body.get("payload"), dict) \
            or not isinstance(when, int) or isinstance(when, bool):
        return None
    # The payload converted as the constructor converts it (a copy): the message's is the handler's to drop.
    return document_of(TriggerInstanceDB, {
        "id": oid, "trigger": body["trigger"], "payload": _PAYLOAD_FIELD.to_python(body["payload"]),
        "occurrence_time": _EPOCH + datetime.timedelta(milliseconds=when),
        "status": statuses.TRIGGER_INSTANCE_PENDING})


def trace_from_message(body: Mapping[str, Any]) -> TraceDB | None:
    """The trace a dispatch message names (its id and tag, not read back), or None when it names none."""
    oid = to_object_id(body.get("trace_id")) if body.get("trace_id") else None
    tag = body.get("trace_tag")
    if oid is None or not tag or not isinstance(tag, str):
        return None
    return document_of(TraceDB, {"start_timestamp": utcnow(), "id": oid, "trace_tag": tag})


_PAYLOAD_FIELD = TriggerInstanceDB._fields["payload"]
# Rough characters of JSON a dispatch message carries at most (bigger payloads are read from the database).
INLINE_PAYLOAD_LIMIT = 64 * 1024
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_ESCAPE_CHARACTERS = ("\uff04", "\uff0e")


def _millis(value: datetime.datetime) -> int:
    """A time as BSON stores it: whole milliseconds since the epoch, UTC (naive values are UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc)
    value = value.replace(tzinfo=datetime.timezone.utc)
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _plain_json(value: Any, budget: int) -> int:
    """budget less the rough JSON size of value; negative when over budget or not plain JSON."""
    if isinstance(value, str):
        return budget - len(value) - 2
    if value is None or isinstance(value, (bool, int, float)):
        return budget - 8
    if isinstance(value, dict):
        for key, item in value.items():
            # Keys holding the escape characters come back from the database as "." and "$".
            if budget < 0 or not isinstance(key, str) or any(c in key for c in _ESCAPE_CHARACTERS):
                return -1
            budget = _plain_json(item, budget - len(key) - 3)
        return budget
    if isinstance(value, list):
        for item in value:
            if budget < 0:
                return -1
            budget = _plain_json(item, budget - 1)
        return budget
    return -1


def _trace(trace_context: Mapping[str, Any] | str | None, new_trace_tag: str | None, instance_id: Any,
           trigger_ref: str, caused_by: str | None) -> TraceDB:
    """The instance's trace (joined, or started) with the instance linked in it."""
    link = trace_service.trigger_instance_link(instance_id, trigger_ref, caused_by_execution=caused_by)
    if trace_context is None and new_trace_tag:
        return trace_service.create(new_trace_tag, link)
    return trace_service.resolve(trace_context, trace_service.TRIGGER_INSTANCE_TAG.format(id=instance_id), link)


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


def move_instances(instances: list[TriggerInstanceDB], old_status: str, new_status: str) -> int:
    """Move those of the instances that are still old_status to new_status, in one write; how many moved.

    The count says whether this write moved every one of them (count = number
    of distinct instances), none, or some without saying which.
    """
    for instance in instances:
        statuses.check_transition("trigger_instance", instance.pk, old_status, new_status)
    return Access(TriggerInstanceDB).set_many_if([instance.pk for instance in instances], {"status": old_status},
                                                 {"status": new_status})


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
