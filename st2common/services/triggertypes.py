"""Trigger types: StackStorm's system trigger types, and the checks of payloads and trigger
parameters against a type's schemas.

The system trigger types (all in pack ``core``) are registered by every
service at start and by content registration; they are kept here exactly as
StackStorm declares them (st2common/constants/triggers.py, v3), including the
draft-3 ``required: true`` inside ``properties``, because GET /triggertypes
shows them as they are. Validation understands both that form and draft-4
``required`` lists.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
from typing import Any, Mapping

import jsonschema
from jsonschema.exceptions import best_match

from st2common.exceptions import NotFoundError, ValidationError
from st2common.models.db.trigger import TriggerTypeDB
from st2common.persistence.access import Access

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


def get_trigger_type(ref: str) -> TriggerTypeDB:
    """The registered trigger type; NotFoundError naming it."""
    doc = Access(TriggerTypeDB).get(ref=ref)
    if doc is None:
        raise NotFoundError("trigger type", ref, f'trigger type "{ref}" is not registered')
    return doc
