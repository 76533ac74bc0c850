"""The Execution shape: ExecutionDB out as StackStorm's ActionExecutionAPI, and the request bodies in.

One stored record stands behind both of StackStorm's (execution and
liveaction), so the ``liveaction`` sub-object is derived from it, with the
execution's id. Falsy fields are dropped, as StackStorm drops them.
"""

from __future__ import annotations

from typing import Any

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
    action = stored(execution, "action") or {}
    runner = stored(execution, "runner") or {}
    return merged_parameter_schema(runner.get("runner_parameters"), action.get("parameters"))


def mask_result(execution: ExecutionDB, result: Any) -> Any:
    """result with the secret properties of the output schema (under the runner's output key) masked."""
    action = stored(execution, "action") or {}
    runner = stored(execution, "runner") or {}
    if not isinstance(result, dict):
        return result
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


def to_api(execution: ExecutionDB, mask_secrets: bool = True, web_url_base: str | None = None) -> dict[str, Any]:
    """execution as GET /executions/{id} shows it: ISO timestamps, elapsed_seconds, liveaction, secrets masked."""
    data: dict[str, Any] = {"id": str(execution.pk)}
    for name in FIELDS:
        data[name] = jsonable(stored(execution, name))
    action = data.get("action") or {}
    if isinstance(action.get("runner_type"), dict):
        data["action"] = dict(action, runner_type=action["runner_type"].get("name"))
    start, end = execution.start_timestamp, execution.end_timestamp
    data["start_timestamp"] = isotime(start)
    if end is not None:
        data["end_timestamp"] = isotime(end)
        if start is not None:
            data["elapsed_seconds"] = round((end - start).total_seconds(), 6)
    if mask_secrets:
        data["parameters"] = mask_parameters(data["parameters"], parameter_schema(execution))
        data["result"] = mask_result(execution, data["result"])
        # The copies of the action and runner carry the secret parameters' defaults.
        if data.get("action"):
            data["action"] = dict(data["action"], parameters=mask_schema_defaults(data["action"].get("parameters")))
        if data.get("runner"):
            data["runner"] = dict(data["runner"],
                                  runner_parameters=mask_schema_defaults(data["runner"].get("runner_parameters")))
    data["liveaction"] = _liveaction(execution, data)
    if web_url_base:
        data["web_url"] = f"{web_url_base.rstrip('/')}/#/history/{execution.pk}/general"
    return {k: v for k, v in data.items() if v}


def _liveaction(execution: ExecutionDB, data: dict[str, Any]) -> dict[str, Any]:
    """StackStorm's liveaction sub-object, derived from the one record."""
    runner_name = (stored(execution, "runner") or {}).get("name")
    live = {
        "id": data["id"],
        "action": execution.action_ref or (data.get("action") or {}).get("ref"),
        "parameters": data.get("parameters") or {},
        "callback": {},
        "runner_info": jsonable(stored(execution, "runner_info")) or {},
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

