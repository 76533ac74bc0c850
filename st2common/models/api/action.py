"""The Action shape: ActionDB out as StackStorm shows it, and API bodies in (create, update)."""

from __future__ import annotations

from typing import Any

from st2common.content import schemas
from st2common.exceptions import ContentError, ValidationError
from st2common.models.api.base import (
    document_dict, mask_schema_defaults, merged_parameter_schema, restore_masked_defaults,
)
from st2common.models.db.action import ActionDB
from st2common.models.db.runner import RunnerTypeDB

DEFAULT_PACK = "default"

FIELDS = ("uid", "ref", "name", "pack", "description", "enabled", "entry_point", "runner_type",
          "parameters", "output_schema", "tags", "notify", "metadata_file")


def to_api(action: ActionDB, mask_secrets: bool = True) -> dict[str, Any]:
    """action as the API shows it: runner_type is the runner's name, secret defaults masked."""
    data = document_dict(action, FIELDS)
    runner = data.get("runner_type")
    if isinstance(runner, dict):
        data["runner_type"] = runner.get("name")
    data.setdefault("parameters", {})
    data.setdefault("tags", [])
    if mask_secrets:
        data["parameters"] = mask_schema_defaults(data["parameters"])
    return data


def to_api_overview(action: ActionDB, runner: RunnerTypeDB | None, mask_secrets: bool = True) -> dict[str, Any]:
    """action with its runner's parameters merged into parameters (views/overview)."""
    data = to_api(action, mask_secrets=False)
    data["parameters"] = merged_parameters(action, runner)
    if mask_secrets:
        data["parameters"] = mask_schema_defaults(data["parameters"])
    return data


def merged_parameters(action: ActionDB, runner: RunnerTypeDB | None) -> dict[str, Any]:
    """The runner's parameters overlaid by the action's (views/parameters)."""
    runner_parameters = dict(runner.runner_parameters or {}) if runner is not None else {}
    return merged_parameter_schema(runner_parameters, dict(action.parameters or {}))


def validate_body(body: Any) -> dict[str, Any]:
    """An Action create/update body checked against StackStorm's Action schema."""
    if not isinstance(body, dict):
        raise ValidationError("Input body needs to be an object")
    try:
        schemas.validate(schemas.ACTION_SCHEMA, body)
    except ContentError as exc:
        raise ValidationError(exc.reason, field=exc.field) from None
    return body


def check_runner_parameters(body: dict[str, Any], runner: RunnerTypeDB) -> None:
    """Refuse overrides the runner forbids: an immutable runner parameter may only change its default."""
    runner_parameters = runner.runner_parameters or {}
    for name, spec in (body.get("parameters") or {}).items():
        runner_spec = runner_parameters.get(name)
        if not isinstance(runner_spec, dict) or not runner_spec.get("immutable"):
            continue
        changed = sorted(key for key in spec if key != "default" and spec[key] != runner_spec.get(key))
        if changed:
            raise ValidationError(
                f'The attribute "{changed[0]}" for the runner parameter "{name}" in action '
                f'"{body.get("pack", DEFAULT_PACK)}.{body["name"]}" cannot be overridden.',
                field=f"parameters.{name}.{changed[0]}")


def check_positions(parameters: dict[str, Any]) -> None:
    """Positions must be unique integers, as the shell runners place arguments by them."""
    seen: dict[int, str] = {}
    for name, spec in (parameters or {}).items():
        position = spec.get("position") if isinstance(spec, dict) else None
        if position is None:
            continue
        if position != int(position):
            raise ValidationError(f'Parameter "{name}": position must be an integer, got {position}',
                                  field=f"parameters.{name}.position")
        if int(position) in seen:
            raise ValidationError(
                f'Parameters "{seen[int(position)]}" and "{name}" have the same position {int(position)}',
                field=f"parameters.{name}.position")
        seen[int(position)] = name


def apply_body(body: dict[str, Any], runner: RunnerTypeDB, action: ActionDB | None = None) -> ActionDB:
    """A new ActionDB from a create body, or action rewritten from an update body (a PUT is the whole action)."""
    old_parameters = dict(action.parameters or {}) if action is not None else {}
    action = action if action is not None else ActionDB()
    parameters = restore_masked_defaults(body.get("parameters") or {}, old_parameters)
    check_positions(parameters)
    action.name = body["name"]
    action.pack = body.get("pack") or action.pack or DEFAULT_PACK
    action.description = body.get("description")
    action.enabled = bool(body.get("enabled", True))
    action.entry_point = body.get("entry_point") or ""
    action.runner_type = {"name": runner.name}
    action.parameters = parameters
    action.output_schema = body.get("output_schema") or {}
    action.notify = body.get("notify") or {}
    action.tags = body.get("tags") or []
    action.metadata_file = body.get("metadata_file") or action.metadata_file
    action.set_identity()
    return action
