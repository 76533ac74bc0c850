"""The TriggerType, Trigger and TriggerInstance shapes, and the trigger type / trigger bodies in."""

from __future__ import annotations

from typing import Any

from st2common.content import schemas
from st2common.content.triggers import TRIGGER_TYPE_SCHEMA
from st2common.exceptions import ContentError, ValidationError
from st2common.models.api.base import document_dict, validate
from st2common.models.db.trigger import TriggerDB, TriggerInstanceDB, TriggerTypeDB

TRIGGER_TYPE_FIELDS = ("uid", "ref", "name", "pack", "description", "payload_schema", "parameters_schema",
                       "tags", "metadata_file")
TRIGGER_FIELDS = ("uid", "ref", "name", "pack", "type", "parameters", "description")
TRIGGER_INSTANCE_FIELDS = ("trigger", "occurrence_time", "payload", "status")

# StackStorm's TriggerAPI; every field the API emits is accepted back (GET, edit, PUT).
TRIGGER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "ref": {"type": "string"},
        "uid": {"type": "string"},
        "name": {"type": "string", "minLength": 1},
        "pack": {"type": "string", "minLength": 1},
        "type": {"type": "string", "minLength": 1},
        "parameters": {"type": ["object", "null"]},
        "description": {"type": ["string", "null"]},
    },
    "required": ["type"],
    "additionalProperties": True,
}


def trigger_type_to_api(trigger_type: TriggerTypeDB) -> dict[str, Any]:
    """A trigger type as GET /triggertypes shows it."""
    data = document_dict(trigger_type, TRIGGER_TYPE_FIELDS)
    data.setdefault("payload_schema", {})
    data.setdefault("parameters_schema", {})
    data.setdefault("tags", [])
    return data


def trigger_to_api(trigger: TriggerDB) -> dict[str, Any]:
    """A trigger as GET /triggers, /webhooks and /timers show it."""
    data = document_dict(trigger, TRIGGER_FIELDS)
    data.setdefault("parameters", {})
    return data


def trigger_instance_to_api(instance: TriggerInstanceDB) -> dict[str, Any]:
    """A trigger instance as GET /triggerinstances shows it."""
    data = document_dict(instance, TRIGGER_INSTANCE_FIELDS)
    data.setdefault("payload", {})
    return data


def validate_trigger_type_body(body: Any) -> dict[str, Any]:
    """A trigger type create/update body checked against StackStorm's TriggerType schema."""
    if not isinstance(body, dict):
        raise ValidationError("Input body needs to be an object")
    try:
        schemas.validate(TRIGGER_TYPE_SCHEMA, body)
    except ContentError as exc:
        raise ValidationError(exc.reason, field=exc.field) from None
    return body


def validate_trigger_body(body: Any) -> dict[str, Any]:
    """A trigger create/update body checked against StackStorm's Trigger schema."""
    return validate(TRIGGER_SCHEMA, body)
