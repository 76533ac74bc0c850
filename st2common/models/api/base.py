"""What every API shape shares: JSON-ready values, ISO timestamps, body validation and secret masking.

Documents go out as StackStorm shows them: ``_id`` becomes ``id`` (a string),
datetimes are ISO-8601 UTC with microseconds and a ``Z``, null fields are
dropped. Secret values (parameters declared ``secret: true``, anywhere in a
nested object or array schema) are replaced by ``MASKED`` on the way out.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any, Iterable

import jsonschema
from bson import ObjectId

from st2common.exceptions import ValidationError

MASKED = "********"

JSON_TYPES = ("array", "boolean", "integer", "number", "object", "string", "null")


def isotime(value: datetime.datetime | None) -> str | None:
    """value as StackStorm writes timestamps: 2024-01-01T00:00:00.000000Z (naive values are UTC)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_isotime(value: str, field: str) -> datetime.datetime:
    """An ISO-8601 string as an aware UTC datetime; ValidationError naming field otherwise."""
    try:
        parsed = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(f'Parameter "{field}": "{value}" is not a valid ISO-8601 timestamp',
                              field=field) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.astimezone(datetime.timezone.utc)


# Types jsonable returns as they are (exactly these: subclasses take the isinstance checks).
_PLAIN = frozenset({str, int, float, bool, type(None)})


def jsonable(value: Any) -> Any:
    """value with ObjectIds as strings and datetimes as ISO strings, recursively (dicts and lists copied)."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, dict):
        return {(k if type(k) is str else str(k)): (v if type(v) in _PLAIN else jsonable(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [v if type(v) in _PLAIN else jsonable(v) for v in value]
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, datetime.datetime):
        return isotime(value)
    return value


def stored(doc, name: str) -> Any:
    """A document's field value as loaded (None when absent).

    Reads the document's data past mongoengine's field descriptor, which on
    every read walks a dict or list field looking for references to
    dereference (there are none in these documents) and wraps it for change
    tracking: most of the cost of rendering a list of executions. Names that
    are not stored fields (properties) go through getattr.
    """
    data = getattr(doc, "_data", None)
    if data is not None and name in data and name in doc._fields:
        return data[name]
    return getattr(doc, name, None)


def document_dict(doc, fields: Iterable[str]) -> dict[str, Any]:
    """The named fields of a mongoengine document as a JSON-ready dict, id first, nulls dropped."""
    pk = doc.pk
    out: dict[str, Any] = {"id": str(pk)} if pk is not None else {}
    for name in fields:
        value = stored(doc, name)
        if value is not None:
            out[name] = jsonable(value)
    return out


def drop_falsy(data: dict[str, Any]) -> dict[str, Any]:
    """data without empty or false values (executions are shown that way)."""
    return {k: v for k, v in data.items() if v}


# -- request bodies ----------------------------------------------------------------------


def validate(schema: dict, body: Any, what: str = "body") -> dict:
    """Validate body against a Draft 4 schema; ValidationError with jsonschema's message and the field path."""
    if not isinstance(body, dict):
        raise ValidationError(f"Input {what} needs to be an object, got: {json_type(body)}")
    validator = _validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(body))
    if error is not None:
        field = ".".join(str(p) for p in error.absolute_path) or None
        message = error.message if not field else f"{error.message} (at {field})"
        raise ValidationError(message, field=field)
    return body


# id(schema) -> (schema, validator); holding the schema keeps its id from being reused.
_VALIDATOR_LIMIT = 256
_VALIDATORS: dict[int, tuple[dict, jsonschema.Draft4Validator]] = {}


def _validator(schema: dict) -> jsonschema.Draft4Validator:
    """schema's validator, built once per schema (the callers' schemas are constants)."""
    key = id(schema)
    cached = _VALIDATORS.get(key)
    if cached is None or cached[0] is not schema:
        if len(_VALIDATORS) >= _VALIDATOR_LIMIT:
            _VALIDATORS.clear()
        cached = _VALIDATORS[key] = (schema, jsonschema.Draft4Validator(schema))
    return cached[1]


def json_type(value: Any) -> str:
    """The JSON type name of a Python value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    return "object"


# -- secrets -------------------------------------------------------------------------------


def merged_parameter_schema(runner_parameters: dict | None, action_parameters: dict | None) -> dict:
    """Runner parameters overlaid by the action's own (the action's keys win), as StackStorm merges them."""
    merged = copy.deepcopy(runner_parameters or {})
    for name, spec in (action_parameters or {}).items():
        if name in merged and isinstance(merged[name], dict) and isinstance(spec, dict):
            merged[name].update(copy.deepcopy(spec))
        else:
            merged[name] = copy.deepcopy(spec)
    return merged


def _is_secret(spec: Any) -> bool:
    return isinstance(spec, dict) and spec.get("secret") is True


def has_secrets(spec: Any) -> bool:
    """True when spec, or anything nested in its properties or items, is declared secret."""
    if not isinstance(spec, dict):
        return False
    if _is_secret(spec):
        return True
    if any(has_secrets(s) for s in (spec.get("properties") or {}).values()):
        return True
    if has_secrets(spec.get("additionalProperties")):
        return True
    return has_secrets(spec.get("items"))


def mask_value(value: Any, spec: Any) -> Any:
    """value with whatever spec declares secret replaced by MASKED (objects and arrays recursively)."""
    if not isinstance(spec, dict) or value is None:
        return value
    if _is_secret(spec):
        return MASKED
    if isinstance(value, dict):
        props = spec.get("properties") or {}
        extra = spec.get("additionalProperties")
        out = {}
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            out[key] = mask_value(item, sub)
        return out
    if isinstance(value, list) and isinstance(spec.get("items"), dict):
        return [mask_value(item, spec["items"]) for item in value]
    return value


def secret_values(value: Any, spec: Any, inside: bool = False) -> list[Any]:
    """The leaves of value that spec declares secret (what mask_value would mask), for scrubbing."""
    spec = spec if isinstance(spec, dict) else {}
    inside = inside or _is_secret(spec)
    if isinstance(value, dict):
        props = spec.get("properties") or {}
        extra = spec.get("additionalProperties")
        return [leaf for key, item in value.items()
                for leaf in secret_values(item, props.get(key, extra), inside)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in secret_values(item, spec.get("items"), inside)]
    return [value] if inside and value not in (None, "") else []


def mask_parameters(values: dict | None, schema: dict | None) -> dict:
    """Parameter values with every secret one (per its schema) masked."""
    if not values:
        return values or {}
    schema = schema or {}
    if not any(has_secrets(spec) for spec in schema.values()):
        return values
    return {name: mask_value(value, schema.get(name)) for name, value in values.items()}


def mask_schema_defaults(schema: dict | None) -> dict:
    """A parameter schema with the defaults of secret parameters masked."""
    if not schema or not any(has_secrets(spec) for spec in schema.values()):
        return schema or {}
    out = {}
    for name, spec in schema.items():
        if isinstance(spec, dict) and has_secrets(spec) and "default" in spec:
            spec = dict(spec, default=mask_value(spec["default"], spec))
        out[name] = spec
    return out


def restore_masked_defaults(new_schema: dict, old_schema: dict | None) -> dict:
    """Keep stored secret defaults where a client sent the masked value back (enable/disable round-trips)."""
    old_schema = old_schema or {}
    out = {}
    for name, spec in (new_schema or {}).items():
        old = old_schema.get(name)
        if (isinstance(spec, dict) and isinstance(old, dict) and has_secrets(old) and "default" in old
                and "default" in spec and spec["default"] == mask_value(old["default"], old)):
            spec = dict(spec, default=old["default"])
        out[name] = spec
    return out
