"""The Execution shape: ExecutionDB out as StackStorm's ActionExecutionAPI, and the request bodies in.

One stored record stands behind both of StackStorm's (execution and
liveaction), so the ``liveaction`` sub-object is derived from it, with the
execution's id. Falsy fields are dropped, as StackStorm drops them.
"""

from __future__ import annotations

from typing import Any, Mapping

from st2common.content.schemas import normalize_output_schema
from st2common.models.api.base import (
    isotime, jsonable, mask_parameters, mask_schema_defaults, mask_value, merged_parameter_schema, stored,
    validate,
)
from st2common.models.db.execution import ExecutionDB, ExecutionOutputDB

FIELDS = ("action", "runner", "status", "parameters", "result", "result_size", "context", "parent",
          "children", "log", "delay", "notify", "rule", "trigger", "trigger_type", "trigger_instance",
          "workflow_execution", "task_execution")

WORKFLOW_RUNNERS = frozenset({"orquesta", "action-chain"})

_FIELDS = ExecutionDB._fields
_FIELD_BY_DB_NAME = {field.db_field: name for name, field in _FIELDS.items()}

# Top-level fields always read from the database when include_attributes is given, so
# that masking works (StackStorm's mandatory_include_fields_retrieve for executions).
MASKING_FIELDS = ("action.parameters", "action.output_schema", "action.pack", "action.uid",
                  "runner.runner_parameters", "runner.output_key", "parameters", "context")

_PARAMETERS = {"type": "object"}

# POST /executions: StackStorm's LiveActionCreateAPI (a liveaction plus `user`).
CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "status": {"type": "string"},
        "start_timestamp": {"type": "string"},
        "end_timestamp": {"type": "string"},
        "action": {"type": "string", "minLength": 1},
        "action_is_workflow": {"type": "boolean"},
        "parameters": _PARAMETERS,
        "result": {},
        "context": {"type": "object"},
        "callback": {"type": "object"},
        "runner_info": {"type": "object"},
        "notify": {"type": "object"},
        "delay": {"type": ["integer", "null"], "minimum": 0},
        "user": {"type": ["string", "null"]},
    },
    "required": ["action"],
    "additionalProperties": False,
}

# POST /executions/{id}/re_run.
RERUN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "parameters": _PARAMETERS,
        "tasks": {"type": "array", "items": {"type": "string"}},
        "reset": {"type": "array", "items": {"type": "string"}},
        "user": {"type": ["string", "null"]},
        "delay": {"type": ["integer", "null"], "minimum": 0},
    },
    "additionalProperties": False,
}


def parameter_schema(execution: ExecutionDB) -> dict[str, Any]:
    """The merged runner + action parameter schema the execution was requested with."""
    return _parameter_schema(stored(execution, "action"), stored(execution, "runner"))


def _parameter_schema(action: dict | None, runner: dict | None) -> dict[str, Any]:
    return merged_parameter_schema((runner or {}).get("runner_parameters"), (action or {}).get("parameters"))


def mask_result(execution: ExecutionDB, result: Any) -> Any:
    """result with the secret properties of the output schema (under the runner's output key) masked."""
    return _mask_result(stored(execution, "action"), stored(execution, "runner"), result)


def _mask_result(action: dict | None, runner: dict | None, result: Any) -> Any:
    if not isinstance(result, dict):
        return result
    action, runner = action or {}, runner or {}
    output_schema = normalize_output_schema(action.get("output_schema") or runner.get("output_schema"))
    properties = output_schema.get("properties") or {}
    if not any(isinstance(spec, dict) and spec.get("secret") for spec in properties.values()):
        return result
    output_key = runner.get("output_key")
    spec = {"type": "object", "properties": properties}
    if output_key and isinstance(result.get(output_key), dict):
        return dict(result, **{output_key: mask_value(result[output_key], spec)})
    if not output_key:
        return mask_value(result, spec)
    return result


def loaded_values(son: Mapping[str, Any]) -> dict[str, Any]:
    """A stored execution's raw document as the field values mongoengine would load (keys unescaped).

    For to_api without building an ExecutionDB: its constructor costs a read
    of one execution more CPU than the rest of the request.
    """
    values: dict[str, Any] = {}
    for key, value in son.items():
        name = _FIELD_BY_DB_NAME.get(key)
        if name is not None:
            values[name] = _FIELDS[name].to_python(value) if value is not None else None
    return values


def to_api(execution: ExecutionDB | Mapping[str, Any], mask_secrets: bool = True,
           web_url_base: str | None = None) -> dict[str, Any]:
    """An execution (a document, or loaded_values of one) as GET /executions/{id} shows it.

    ISO timestamps, elapsed_seconds, the liveaction sub-object, secrets masked.
    """
    # A document's loaded values, past mongoengine's field descriptors (see base.stored).
    values = execution._data if isinstance(execution, ExecutionDB) else execution
    pk = values.get("id")
    data: dict[str, Any] = {"id": str(pk)}
    for name in FIELDS:
        data[name] = jsonable(values.get(name))
    action = data.get("action") or {}
    if isinstance(action.get("runner_type"), dict):
        data["action"] = dict(action, runner_type=action["runner_type"].get("name"))
    start, end = values.get("start_timestamp"), values.get("end_timestamp")
    data["start_timestamp"] = isotime(start)
    if end is not None:
        data["end_timestamp"] = isotime(end)
        if start is not None:
            data["elapsed_seconds"] = round((end - start).total_seconds(), 6)
    if mask_secrets:
        stored_action, stored_runner = values.get("action"), values.get("runner")
        if data["parameters"]:
            data["parameters"] = mask_parameters(data["parameters"], _parameter_schema(stored_action, stored_runner))
        data["result"] = _mask_result(stored_action, stored_runner, data["result"])
        # The copies of the action and runner carry the secret parameters' defaults.
        if data.get("action"):
            data["action"] = dict(data["action"], parameters=mask_schema_defaults(data["action"].get("parameters")))
        if data.get("runner"):
            data["runner"] = dict(data["runner"],
                                  runner_parameters=mask_schema_defaults(data["runner"].get("runner_parameters")))
    data["liveaction"] = _liveaction(values, data)
    if web_url_base:
        data["web_url"] = f"{web_url_base.rstrip('/')}/#/history/{pk}/general"
    return {k: v for k, v in data.items() if v}


def _liveaction(values: Mapping[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """StackStorm's liveaction sub-object, derived from the one record."""
    runner_name = (values.get("runner") or {}).get("name")
    live = {
        "id": data["id"],
        "action": values.get("action_ref") or (data.get("action") or {}).get("ref"),
        "parameters": data.get("parameters") or {},
        "callback": {},
        "runner_info": jsonable(values.get("runner_info")) or {},
        "action_is_workflow": runner_name in WORKFLOW_RUNNERS,
    }
    if data.get("notify"):
        live["notify"] = data["notify"]
    return live


def attribute(execution: ExecutionDB, name: str, mask_secrets: bool = True) -> Any:
    """One attribute for GET /executions/{id}/attribute/{name} (``action__pack`` is action.pack)."""
    if "__" in name:
        head, _, tail = name.partition("__")
        return (jsonable(stored(execution, head)) or {}).get(tail)
    value = jsonable(stored(execution, name))
    if name == "result" and mask_secrets:
        value = mask_result(execution, value)
    return value


def output_text(chunks: list[ExecutionOutputDB]) -> str:
    """Stored output chunks joined, as GET /executions/{id}/output returns them."""
    return "".join(chunk.data or "" for chunk in chunks)


def validate_create(body: Any) -> dict[str, Any]:
    """A POST /executions body checked against LiveActionCreateAPI."""
    return validate(CREATE_SCHEMA, body)


def validate_rerun(body: Any) -> dict[str, Any]:
    """A POST /executions/{id}/re_run body checked against its schema."""
    return validate(RERUN_SCHEMA, body)

