"""Trigger types, triggers and trigger instances: StackStorm's system trigger types, trigger
get-or-create, payload checks, and dispatch / re-emit of trigger instances.

The system trigger types (all in pack ``core``) are registered by every
service at start and by content registration; they are kept here exactly as
StackStorm declares them (st2common/constants/triggers.py, v3), including the
draft-3 ``required: true`` inside ``properties``, because GET /triggertypes
shows them as they are. Validation understands both that form and draft-4
``required`` lists.

A trigger is a trigger type plus concrete parameters. It is found by type and
a hash of its parameters (the embedded server cannot match a whole parameters
dict), and created when missing: a parameter-less one is the type's "shadow"
trigger (same pack and name), any other gets a UUID name, as in StackStorm.

Dispatching a trigger instance (sensors, webhooks, timers, datastore writes,
the notifier all go through ``dispatch``):

| step                                   | write / message                                            |
| -------------------------------------- | ---------------------------------------------------------- |
| resolve the trigger, check the payload | nothing (ValidationError naming ``payload.<field>``)       |
| store the instance                     | TriggerInstanceDB, status ``pending``                      |
| record the trace                       | TraceDB when new, one TraceComponentDB                     |
| nudge the rules engines                | trigger_instances_dispatch, routed by the trigger type ref:|
|                                        | ``{"id", "trace_id", "trace_tag"}`` (saves the engine a    |
|                                        | read of the trace)                                         |

The rules engine moves the instance pending -> processing -> processed (or
processing_failed) through ``update_instance_status``; a re-emitted instance
is a new one, as StackStorm's re_emit makes.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import logging
import uuid
from typing import Any, Mapping

import jsonschema
from jsonschema.exceptions import best_match

from st2common import statuses
from st2common.exceptions import ConflictError, NotFoundError, ValidationError
from st2common.models.db.base import utcnow
from st2common.models.db.rule import RuleDB
from st2common.models.db.trigger import TriggerDB, TriggerInstanceDB, TriggerTypeDB, parameters_hash
from st2common.models.db.trace import COMPONENT_TRIGGER_INSTANCE
from st2common.persistence.access import Access, to_object_id
from st2common.services import trace as trace_service

LOG = logging.getLogger(__name__)

SYSTEM_PACK = "core"

WEBHOOK_TRIGGER_REF = "core.st2.webhook"
INTERVAL_TIMER_TRIGGER_REF = "core.st2.IntervalTimer"
DATE_TIMER_TRIGGER_REF = "core.st2.DateTimer"
CRON_TIMER_TRIGGER_REF = "core.st2.CronTimer"
ACTION_TRIGGER_REF = "core.st2.generic.actiontrigger"
NOTIFY_TRIGGER_REF = "core.st2.generic.notifytrigger"
INQUIRY_TRIGGER_REF = "core.st2.generic.inquiry"
FILE_WRITTEN_TRIGGER_REF = "core.st2.action.file_written"
SENSOR_SPAWN_TRIGGER_REF = "core.st2.sensor.process_spawn"
SENSOR_EXIT_TRIGGER_REF = "core.st2.sensor.process_exit"
KEY_VALUE_PAIR_CREATE_TRIGGER_REF = "core.st2.key_value_pair.create"
KEY_VALUE_PAIR_UPDATE_TRIGGER_REF = "core.st2.key_value_pair.update"
KEY_VALUE_PAIR_VALUE_CHANGE_TRIGGER_REF = "core.st2.key_value_pair.value_change"
KEY_VALUE_PAIR_DELETE_TRIGGER_REF = "core.st2.key_value_pair.delete"

TIMER_TRIGGER_REFS = (INTERVAL_TIMER_TRIGGER_REF, DATE_TIMER_TRIGGER_REF, CRON_TIMER_TRIGGER_REF)

_ANY = {}  # StackStorm declares most payload properties as an empty (anything) schema.
_OBJECT_PAYLOAD = {"type": "object", "properties": {"object": _ANY}}
_STRING_OR_INTEGER = [{"type": "string"}, {"type": "integer"}]


def _cron_field(minimum: int | None = None, maximum: int | None = None) -> dict[str, Any]:
    field: dict[str, Any] = {"anyOf": _STRING_OR_INTEGER}
    if minimum is not None:
        field.update({"minimum": minimum, "maximum": maximum})
    return field


TIMER_PAYLOAD_SCHEMA = {
    "type": "object",
    "properties": {
        "executed_at": {"type": "string", "format": "date-time", "default": "2014-07-30 05:04:24.578325"},
        "schedule": {"type": "object", "default": {"delta": 30, "units": "seconds"}},
    },
}

# name -> (description, payload_schema, parameters_schema); pack core.
_SYSTEM_TYPES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "st2.generic.actiontrigger": (
        "Trigger encapsulating the completion of an action execution.",
        {"type": "object", "properties": {name: _ANY for name in (
            "execution_id", "status", "start_timestamp", "action_name", "action_ref", "runner_ref",
            "parameters", "result")}},
        {},
    ),
    "st2.generic.notifytrigger": (
        "Notification trigger.",
        {"type": "object", "properties": {name: _ANY for name in (
            "execution_id", "status", "start_timestamp", "end_timestamp", "action_ref", "runner_ref",
            "channel", "route", "message", "data")}},
        {},
    ),
    "st2.action.file_written": (
        "Trigger encapsulating action file being written on disk.",
        {"type": "object", "properties": {"ref": _ANY, "file_path": _ANY, "host_info": _ANY}},
        {},
    ),
    "st2.generic.inquiry": (
        'Trigger indicating a new "inquiry" has entered "pending" status',
        {
            "type": "object",
            "properties": {
                "id": {"type": "string", "description": "ID of the new inquiry.", "required": True},
                "route": {"type": "string", "required": True,
                          "description": "An arbitrary value for allowing rules to route to proper "
                                         "notification channel."},
            },
            "additionalProperties": False,
        },
        {},
    ),
    # The container actually sends {id, timestamp, pid, cmd} / {id, timestamp, exit_code}.
    "st2.sensor.process_spawn": ("Trigger indicating sensor process is started up.", _OBJECT_PAYLOAD, {}),
    "st2.sensor.process_exit": ("Trigger indicating sensor process is stopped.", _OBJECT_PAYLOAD, {}),
    "st2.key_value_pair.create": ("Trigger encapsulating datastore item creation.", _OBJECT_PAYLOAD, {}),
    "st2.key_value_pair.update": ("Trigger encapsulating datastore set action.", _OBJECT_PAYLOAD, {}),
    "st2.key_value_pair.value_change": (
        "Trigger encapsulating a change of datastore item value.",
        {"type": "object", "properties": {"old_object": _ANY, "new_object": _ANY}},
        {},
    ),
    "st2.key_value_pair.delete": ("Trigger encapsulating datastore item deletion.", _OBJECT_PAYLOAD, {}),
    "st2.webhook": (
        "Trigger type for registering webhooks that can consume arbitrary payload.",
        {
            "type": "object",
            "properties": {
                "headers": {"type": "object"},
                "body": {"anyOf": [{"type": "array"}, {"type": "object"}]},
            },
        },
        {"type": "object", "properties": {"url": {"type": "string", "required": True}},
         "additionalProperties": False},
    ),
    "st2.IntervalTimer": (
        "Triggers on specified intervals. e.g. every 30s, 1week etc.",
        TIMER_PAYLOAD_SCHEMA,
        {
            "type": "object",
            "properties": {
                "timezone": {"type": "string"},
                "unit": {"enum": ["weeks", "days", "hours", "minutes", "seconds"], "required": True},
                "delta": {"type": "integer", "required": True},
            },
            "additionalProperties": False,
        },
    ),
    "st2.DateTimer": (
        "Triggers exactly once when the current time matches the specified time. "
        "e.g. timezone:UTC date:2014-12-31 23:59:59.",
        TIMER_PAYLOAD_SCHEMA,
        {
            "type": "object",
            "properties": {
                "timezone": {"type": "string"},
                "date": {"type": "string", "format": "date-time", "required": True},
            },
            "additionalProperties": False,
        },
    ),
    "st2.CronTimer": (
        "Triggers whenever current time matches the specified time constaints like a UNIX cron scheduler.",
        TIMER_PAYLOAD_SCHEMA,
        {
            "type": "object",
            "properties": {
                "timezone": {"type": "string"},
                "year": _cron_field(),
                "month": _cron_field(1, 12),
                "day": _cron_field(1, 31),
                "week": _cron_field(1, 53),
                "day_of_week": _cron_field(0, 6),
                "hour": _cron_field(0, 23),
                "minute": _cron_field(0, 59),
                "second": _cron_field(0, 59),
            },
            "additionalProperties": False,
        },
    ),
}


def system_trigger_types() -> list[dict[str, Any]]:
    """StackStorm's system trigger types as TriggerTypeAPI dicts (fresh copies)."""
    return [
        {"name": name, "pack": SYSTEM_PACK, "description": description,
         "payload_schema": copy.deepcopy(payload), "parameters_schema": copy.deepcopy(parameters), "tags": []}
        for name, (description, payload, parameters) in _SYSTEM_TYPES.items()
    ]


SYSTEM_TRIGGER_TYPE_REFS: frozenset[str] = frozenset(f"{SYSTEM_PACK}.{name}" for name in _SYSTEM_TYPES)


def register_system_trigger_types(publisher=None) -> int:
    """Upsert every system trigger type and its shadow trigger (idempotent); how many records changed."""
    from st2common.content.bootstrap import Registration
    from st2common.content.triggers import register_system_types

    return register_system_types(Registration(None, publisher))


# -- schemas ------------------------------------------------------------------------------------

# Keywords whose values are data, not schemas: never rewritten.
_LITERAL_KEYWORDS = frozenset({"default", "enum", "const", "examples"})


def _draft4(schema: Any) -> Any:
    """A schema with draft-3 ``required: true`` inside properties moved to the parent's draft-4 list."""
    if isinstance(schema, list):
        return [_draft4(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _LITERAL_KEYWORDS:
            result[key] = value
            continue
        if key == "required" and not isinstance(value, list):
            continue
        if key in ("properties", "patternProperties", "definitions", "dependencies") and isinstance(value, Mapping):
            result[key] = {name: _draft4(sub) for name, sub in value.items()}
        else:
            result[key] = _draft4(value) if isinstance(value, (Mapping, list)) else value
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        flagged = [name for name, sub in properties.items() if isinstance(sub, Mapping) and sub.get("required") is True]
        if flagged:
            result["required"] = list(dict.fromkeys([*(result.get("required") or []), *flagged]))
    return result


@functools.lru_cache(maxsize=512)
def _validator(schema_json: str) -> jsonschema.Draft4Validator:
    schema = _draft4(json.loads(schema_json))
    jsonschema.Draft4Validator.check_schema(schema)
    # No format checker: StackStorm's own dates ("2014-12-31 23:59:59") are not RFC 3339.
    return jsonschema.Draft4Validator(schema)


def validate_against(schema: Mapping[str, Any] | None, instance: Any, what: str) -> None:
    """Check instance against a trigger type schema; ValidationError naming ``what.<field>``."""
    if not schema:
        return
    try:
        validator = _validator(json.dumps(schema, sort_keys=True, default=str))
    except jsonschema.SchemaError as exc:
        raise ValidationError(f"the {what} schema itself is invalid: {exc.message}", field=what) from None
    error = best_match(validator.iter_errors(instance))
    if error is None:
        return
    where = [what, *(str(part) for part in error.absolute_path)]
    message = error.message
    if error.validator == "required" and isinstance(error.instance, Mapping):
        missing = [name for name in error.validator_value if name not in error.instance]
        if missing:
            where.append(missing[0])
            message = f'"{missing[0]}" is a required property'
    elif error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = set(error.schema.get("properties") or {})
        extra = sorted(str(k) for k in error.instance if k not in known)
        if extra:
            where.append(extra[0])
    field = ".".join(where)
    raise ValidationError(f"{field}: {message}", field=field)


def _schema_of(trigger_type: TriggerTypeDB | Mapping[str, Any], name: str) -> dict[str, Any]:
    if isinstance(trigger_type, Mapping):
        return dict(trigger_type.get(name) or {})
    return dict(getattr(trigger_type, name, None) or {})


def _ref_of(trigger_type: TriggerTypeDB | Mapping[str, Any]) -> str:
    if isinstance(trigger_type, Mapping):
        return trigger_type.get("ref") or f'{trigger_type.get("pack")}.{trigger_type.get("name")}'
    return trigger_type.ref


def _with_defaults(schema: Mapping[str, Any], instance: Any) -> Any:
    """A copy of instance with missing or null top-level properties set to their schema defaults.

    StackStorm validates such a copy (and dispatches the original), which is
    why its own timers can send ``schedule: null`` against an object schema.
    """
    if not isinstance(instance, Mapping):
        return instance
    filled = dict(instance)
    for name, sub in (schema.get("properties") or {}).items():
        if filled.get(name) is None and isinstance(sub, Mapping) and sub.get("default") is not None:
            filled[name] = copy.deepcopy(sub["default"])
    return filled


def validate_payload(trigger_type: TriggerTypeDB | Mapping[str, Any], payload: Any) -> None:
    """Check a payload against the type's payload_schema; ValidationError naming ``payload.<field>``."""
    schema = _schema_of(trigger_type, "payload_schema")
    validate_against(schema, _with_defaults(schema, payload if payload is not None else {}), "payload")


def normalize_parameters(type_ref: str, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Parameters as stored: a webhook url without its leading and trailing "/"."""
    parameters = dict(parameters or {})
    # StackStorm strips when it serves the hook; stripping when storing makes
    # "/deploy" and "deploy" one trigger, which is what both rules meant.
    if type_ref == WEBHOOK_TRIGGER_REF and isinstance(parameters.get("url"), str):
        parameters["url"] = parameters["url"].strip("/")
    return parameters


def validate_parameters(trigger_type: TriggerTypeDB | Mapping[str, Any], parameters: Mapping[str, Any] | None,
                        enforce: bool = True) -> dict[str, Any]:
    """Trigger parameters as stored (normalised), checked against parameters_schema.

    System types are always checked; other types only when ``enforce``
    (``[system] validate_trigger_parameters``). Schema defaults count for the
    check but are not stored, as in StackStorm. ValidationError names
    ``parameters.<field>``.
    """
    type_ref = _ref_of(trigger_type)
    schema = _schema_of(trigger_type, "parameters_schema")
    values = normalize_parameters(type_ref, parameters)
    if not schema or not (enforce or type_ref in SYSTEM_TRIGGER_TYPE_REFS):
        return values
    validate_against(schema, _with_defaults(schema, values), "parameters")
    if type_ref == DATE_TIMER_TRIGGER_REF:
        _check_date(values.get("date"))
    return values


def _check_date(value: Any) -> None:
    try:
        datetime.datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise ValidationError(f'parameters.date: "{value}" is not a date and time (e.g. 2014-12-31 23:59:59)',
                              field="parameters.date") from None


# -- trigger types and triggers -----------------------------------------------------------------

def get_trigger_type(ref: str) -> TriggerTypeDB:
    """The registered trigger type; NotFoundError naming it."""
    doc = Access(TriggerTypeDB).get(ref=ref)
    if doc is None:
        raise NotFoundError("trigger type", ref, f'trigger type "{ref}" is not registered')
    return doc


def find_trigger(type_ref: str, parameters: Mapping[str, Any] | None) -> TriggerDB | None:
    """The trigger of type_ref with exactly these (normalised) parameters, or None."""
    digest = parameters_hash(normalize_parameters(type_ref, parameters))
    return Access(TriggerDB).get(type=type_ref, parameters_hash=digest)


def get_or_create_trigger(trigger_type: TriggerTypeDB, parameters: Mapping[str, Any] | None,
                          publisher=None) -> tuple[TriggerDB, bool]:
    """The trigger for (type, parameters), created when missing; (trigger, whether it was created).

    Parameters are expected validated (validate_parameters). Creating one
    publishes a trigger create event, which timers, webhooks and sensors watch.
    """
    parameters = normalize_parameters(trigger_type.ref, parameters)
    existing = find_trigger(trigger_type.ref, parameters)
    if existing is not None:
        return existing, False
    name = trigger_type.name if not parameters else str(uuid.uuid4())
    doc = TriggerDB(name=name, pack=trigger_type.pack, type=trigger_type.ref, parameters=parameters,
                    description=trigger_type.description)
    doc.set_identity()
    access = Access(TriggerDB, publisher)
    try:
        access.add_or_update(doc)
    except ConflictError:
        # Another process created the shadow trigger between our read and write.
        existing = find_trigger(trigger_type.ref, parameters)
        if existing is None:
            raise
        return existing, False
    LOG.info("trigger %s created for type %s", doc.ref, trigger_type.ref)
    return doc, True


def count_rules_using(trigger_ref: str) -> int:
    """How many rules name this trigger."""
    return Access(RuleDB).count(raw={"trigger.ref": trigger_ref})


def update_ref_count(trigger_ref: str, publisher=None) -> TriggerDB | None:
    """Recount the rules using a trigger; delete a parameterised trigger no rule uses. The trigger, or None.

    Counting instead of incrementing keeps registration idempotent: a
    re-registered rule does not count twice.
    """
    access = Access(TriggerDB, publisher)
    doc = access.get(ref=trigger_ref)
    if doc is None:
        return None
    count = count_rules_using(trigger_ref)
    if count == 0 and doc.parameters:
        access.delete(doc)
        LOG.info("trigger %s deleted: no rule uses it", trigger_ref)
        return None
    if doc.ref_count != count:
        doc = access.update_if(doc.pk, {}, {"ref_count": count}, publish=False) or doc
    return doc


# -- trigger instances ------------------------------------------------------------------------

DISPATCH_EXCHANGE = "trigger_instances_dispatch"
# Triggers whose instances are caused by an execution named in their payload (trace links).
_CAUSED_BY_EXECUTION = frozenset({ACTION_TRIGGER_REF, NOTIFY_TRIGGER_REF})
# dispatch()'s default for validate: [system] validate_trigger_payload, once configure() was called.
_defaults = {"validate_payload": True}
# System trigger types and their shadow triggers are constants of the code: each process reads
# them once (the notifier dispatches one for every finished execution).
_system_triggers: dict[str, tuple[TriggerDB, TriggerTypeDB]] = {}


def configure(settings) -> None:
    """Take dispatch()'s payload validation default from [system] validate_trigger_payload."""
    _defaults["validate_payload"] = bool(settings.system.validate_trigger_payload)


def resolve_trigger(trigger: str | Mapping[str, Any], publisher=None) -> tuple[TriggerDB, TriggerTypeDB]:
    """The stored trigger (and its type) that a ref or a ``{id | ref | type, parameters}`` dict names.

    A ref may name a trigger or a trigger type without parameters, whose
    shadow trigger is created when missing. NotFoundError names what is unknown.
    """
    triggers = Access(TriggerDB)
    if isinstance(trigger, str) and trigger in _system_triggers:
        return _system_triggers[trigger]
    if isinstance(trigger, str):
        found = triggers.get(ref=trigger)
        if found is None:
            trigger_type = Access(TriggerTypeDB).get(ref=trigger)
            if trigger_type is None or trigger_type.parameters_schema:
                raise NotFoundError("trigger", trigger, f'Trigger "{trigger}" is not registered')
            found, _ = get_or_create_trigger(trigger_type, {}, publisher)
    elif isinstance(trigger, Mapping):
        found = None
        if trigger.get("id"):
            found = triggers.get(id=trigger["id"]) if to_object_id(trigger["id"]) else None
        if found is None and trigger.get("ref"):
            found = triggers.get(ref=trigger["ref"])
        if found is None and trigger.get("type"):
            found = find_trigger(trigger["type"], trigger.get("parameters"))
            if found is None and not trigger.get("parameters"):
                return resolve_trigger(str(trigger["type"]), publisher)
        if found is None:
            name = trigger.get("ref") or trigger.get("type") or trigger.get("id")
            raise NotFoundError("trigger", name, f'Trigger {json.dumps(dict(trigger), default=str)} is not registered')
    else:
        raise ValidationError(f"trigger must be a ref or an object, not {type(trigger).__name__}", field="trigger")
    resolved = found, get_trigger_type(found.type)
    if found.ref in SYSTEM_TRIGGER_TYPE_REFS and found.ref == found.type:
        _system_triggers[found.ref] = resolved
    return resolved


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


def update_instance_status(instance: TriggerInstanceDB, new_status: str) -> TriggerInstanceDB | None:
    """Move a trigger instance to new_status if the table allows it; None when another writer moved it first."""
    statuses.check_transition("trigger_instance", instance.pk, instance.status, new_status)
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
