"""JSON Schemas of pack content, and validation that names the offending field and line.

The shapes follow StackStorm: ``pack.yaml`` is ``PackAPI`` (extra keys allowed),
action metadata is ``ActionAPI`` (no extra keys), a runner type is
``RunnerTypeAPI``. Every parameter definition, of an action or of a runner, is
checked against StackStorm's custom draft-4 meta-schema
(``util/schema/action_params.json``): a single simple ``type``, a boolean
``required`` (draft-3 style), and the ``secret``, ``immutable`` and ``position``
extensions, with no other keys.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

import jsonschema
from jsonschema.exceptions import best_match

from st2common.exceptions import ContentError

SIMPLE_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")

PACK_REF_PATTERN = r"^[a-z0-9_]+$"
SEMVER_PATTERN = (
    r"^(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)"
    r"(?:-[\da-zA-Z\-]+(?:\.[\da-zA-Z\-]+)*)?(?:\+[\da-zA-Z\-]+(?:\.[\da-zA-Z\-]+)*)?$"
)

_PARAM = "#/definitions/parameter"

# StackStorm's action_params.json, with its self-references pointed at
# definitions/parameter so the same text can sit inside the action and runner schemas.
DEFINITIONS: dict[str, Any] = {
    "parameterArray": {"type": "array", "minItems": 1, "items": {"$ref": _PARAM}},
    "positiveInteger": {"type": "integer", "minimum": 0},
    "positiveIntegerDefault0": {"allOf": [{"$ref": "#/definitions/positiveInteger"}, {"default": 0}]},
    "simpleTypes": {"enum": list(SIMPLE_TYPES)},
    "stringArray": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True},
    "parameter": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "$schema": {"type": "string"},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "default": {},
            "multipleOf": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
            "maximum": {"type": "number"},
            "exclusiveMaximum": {"type": "boolean", "default": False},
            "minimum": {"type": "number"},
            "exclusiveMinimum": {"type": "boolean", "default": False},
            "maxLength": {"$ref": "#/definitions/positiveInteger"},
            "minLength": {"$ref": "#/definitions/positiveIntegerDefault0"},
            "pattern": {"type": "string", "format": "regex"},
            "additionalItems": {"anyOf": [{"type": "boolean"}, {"$ref": _PARAM}], "default": {}},
            "items": {"anyOf": [{"$ref": _PARAM}, {"$ref": "#/definitions/parameterArray"}], "default": {}},
            "maxItems": {"$ref": "#/definitions/positiveInteger"},
            "minItems": {"$ref": "#/definitions/positiveIntegerDefault0"},
            "uniqueItems": {"type": "boolean", "default": False},
            "maxProperties": {"$ref": "#/definitions/positiveInteger"},
            "minProperties": {"$ref": "#/definitions/positiveIntegerDefault0"},
            "required": {"type": "boolean", "default": False},
            "secret": {"type": "boolean", "default": False},
            "additionalProperties": {"anyOf": [{"type": "boolean"}, {"$ref": _PARAM}], "default": {}},
            "definitions": {"type": "object", "additionalProperties": {"$ref": _PARAM}, "default": {}},
            "properties": {"type": "object", "additionalProperties": {"$ref": _PARAM}, "default": {}},
            "patternProperties": {"type": "object", "additionalProperties": {"$ref": _PARAM}, "default": {}},
            "dependencies": {
                "type": "object",
                "additionalProperties": {"anyOf": [{"$ref": _PARAM}, {"$ref": "#/definitions/stringArray"}]},
            },
            "enum": {"type": "array", "minItems": 1, "uniqueItems": True},
            "type": {"$ref": "#/definitions/simpleTypes"},
            "position": {"type": "number", "minimum": 0},
            "immutable": {"type": "boolean", "default": False},
            "allOf": {"$ref": "#/definitions/parameterArray"},
            "anyOf": {"$ref": "#/definitions/parameterArray"},
            "oneOf": {"$ref": "#/definitions/parameterArray"},
            "not": {"$ref": _PARAM},
        },
        "dependencies": {"exclusiveMaximum": ["maximum"], "exclusiveMinimum": ["minimum"]},
        "additionalProperties": False,
    },
}

PARAMETERS = {
    "type": "object",
    "patternProperties": {r"^\w+$": {"$ref": _PARAM}},
    "additionalProperties": False,
}

PARAMETER_SCHEMA: dict[str, Any] = {"$ref": _PARAM, "definitions": DEFINITIONS}

PACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "ref": {"type": "string", "pattern": PACK_REF_PATTERN},
        "description": {"type": "string"},
        "version": {"type": "string", "pattern": SEMVER_PATTERN},
        "author": {"type": "string"},
        "email": {"type": "string", "format": "email"},
        "keywords": {"type": "array", "items": {"type": "string"}},
        "stackstorm_version": {"type": "string"},
        "python_versions": {
            "type": "array", "items": {"type": "string", "enum": ["2", "3"]},
            "minItems": 1, "maxItems": 2, "uniqueItems": True,
        },
        "contributors": {"type": "array", "items": {"type": "string", "maxLength": 100}},
        "dependencies": {"type": "array", "items": {"type": "string"}},
        "system": {"type": "object"},
    },
    "required": ["name", "description", "version", "author"],
    "additionalProperties": True,
}

_NOTIFY_SUB = {
    "type": "object",
    "properties": {
        "message": {"type": "string"},
        "data": {"type": "object"},
        "routes": {"type": "array", "items": {"type": "string"}},
        "channels": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}

ACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "ref": {"type": "string"},
        "uid": {"type": "string"},
        "name": {"type": "string", "minLength": 1},
        "pack": {"type": "string"},
        "description": {"type": "string"},
        "enabled": {"type": "boolean", "default": True},
        "entry_point": {"type": "string", "default": ""},
        "runner_type": {"type": "string", "minLength": 1},
        "parameters": PARAMETERS,
        "output_schema": {"type": "object"},
        "notify": {
            "type": "object",
            "properties": {"on-complete": _NOTIFY_SUB, "on-success": _NOTIFY_SUB, "on-failure": _NOTIFY_SUB},
            "additionalProperties": False,
        },
        "tags": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
                "required": ["name"],
            },
        },
        "metadata_file": {"type": "string"},
    },
    "required": ["name", "runner_type"],
    "additionalProperties": False,
    "definitions": DEFINITIONS,
}

RUNNER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "enabled": {"type": "boolean", "default": True},
        "runner_package": {"type": "string"},
        "runner_module": {"type": "string"},
        "runner_parameters": PARAMETERS,
        "output_key": {"type": "string"},
        "output_schema": {"type": "object"},
    },
    "required": ["name", "runner_parameters"],
    "additionalProperties": False,
    "definitions": DEFINITIONS,
}

# id(schema) -> (schema, validator); the schema is kept so its id is never reused.
_VALIDATORS: dict[int, tuple[Mapping[str, Any], jsonschema.Draft4Validator]] = {}


def _validator(schema: Mapping[str, Any]) -> jsonschema.Draft4Validator:
    cached = _VALIDATORS.get(id(schema))
    if cached is None:
        jsonschema.Draft4Validator.check_schema(schema)
        validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
        cached = _VALIDATORS[id(schema)] = (schema, validator)
    return cached[1]


def field_name(path: Iterable[Any]) -> str | None:
    """A JSON path as the dotted field name users see (``parameters.cmd.type``)."""
    parts = [str(part) for part in path]
    return ".".join(parts) if parts else None


def _offending_path(error: jsonschema.ValidationError) -> tuple[list[Any], str]:
    """The path of the field really at fault, and the message to show for it."""
    path = list(error.absolute_path)
    instance, schema = error.instance, error.schema
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = set(schema.get("properties", {}))
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        extras = sorted(str(k) for k in instance
                        if k not in known and not any(p.search(str(k)) for p in patterns))
        if extras:
            return path + [extras[0]], f'unknown field "{extras[0]}" (additional properties are not allowed)'
    if error.validator == "required" and isinstance(error.validator_value, list) and isinstance(instance, dict):
        missing = [name for name in error.validator_value if name not in instance]
        if missing:
            return path + [missing[0]], f'required field "{missing[0]}" is missing'
    return path, error.message


def validate(schema: Mapping[str, Any], data: Any, path: str | None = None, pack: str | None = None,
             line_of=None, prefix: Sequence[Any] = ()) -> None:
    """Check data against schema; raise ContentError naming the field (and line, via line_of)."""
    errors = list(_validator(schema).iter_errors(data))
    if not errors:
        return
    error = best_match(errors)
    where, message = _offending_path(error)
    where = list(prefix) + where
    line = line_of(where) if line_of is not None else None
    field = field_name(where)
    text = f"{field}: {message}" if field else message
    raise ContentError(text, pack=pack, path=path, line=line, field=field)


def normalize_output_schema(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """A full JSON Schema for output; the legacy form (a bare properties dict) is wrapped."""
    if not schema:
        return {}
    structural = {"type", "properties", "anyOf", "oneOf", "allOf", "not", "$ref", "items", "enum"}
    if structural & set(schema):
        return dict(schema)
    return {"type": "object", "properties": dict(schema), "additionalProperties": True}
