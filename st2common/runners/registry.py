"""Runner registry: runner type name -> ``"module:Class"``, resolved lazily; and parameter merging.

The runner types' metadata (parameters, output key and schema) lives beside
this file in ``runners.yaml`` and is stored by content registration; this
module says which class runs each type. Nothing is imported until a runner is
resolved, so services that never run actions never import runner code.

An action's effective parameters are its runner's ``runner_parameters``
overlaid with the action's own ``parameters`` (StackStorm's rules): the action
may change only ``default``, ``description``, ``enum``, ``immutable`` and
``required`` of a runner parameter, may not re-declare ``immutable`` on one the
runner already fixes, every immutable parameter needs a default, and positions
are unique and contiguous from 0.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any, Mapping

from st2common.exceptions import ParameterError, RunnerError, UnknownRunnerError

METADATA_FILE = Path(__file__).with_name("runners.yaml")

RUNNERS: dict[str, str] = {
    "local-shell-cmd": "st2actionrunner.runners.local:LocalShellCommandRunner",
    "local-shell-script": "st2actionrunner.runners.local:LocalShellScriptRunner",
    "remote-shell-cmd": "st2actionrunner.runners.remote:RemoteShellCommandRunner",
    "remote-shell-script": "st2actionrunner.runners.remote:RemoteShellScriptRunner",
    "python-script": "st2actionrunner.runners.python:PythonRunner",
    "http-request": "st2actionrunner.runners.http:HttpRunner",
    "noop": "st2actionrunner.runners.noop:NoopRunner",
    "announcement": "st2actionrunner.runners.announcement:AnnouncementRunner",
    "inquirer": "st2actionrunner.runners.inquirer:InquirerRunner",
    "orquesta": "st2workflowengine.orquesta.runner:OrquestaRunner",
    "action-chain": "st2workflowengine.actionchain.runner:ActionChainRunner",
}

# Older names StackStorm still accepts for a runner type.
ALIASES: dict[str, str] = {"orchestra": "orquesta"}

# Runner types whose actions are workflows (run by the workflow engine's pool).
WORKFLOW_RUNNERS = ("orquesta", "action-chain")

OVERRIDABLE_ATTRIBUTES = ("default", "description", "enum", "immutable", "required")

# st2 extensions that are not JSON Schema keywords.
_EXTENSIONS = ("required", "secret", "immutable", "position")


def canonical_name(name: str) -> str:
    """The registered name for a runner type name or alias; UnknownRunnerError if neither."""
    if name in RUNNERS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    raise UnknownRunnerError(
        f'unknown runner type "{name}"; valid runner types are: {", ".join(sorted(RUNNERS))}',
        runner=name, valid=sorted(RUNNERS))


def resolve(name: str) -> type:
    """The runner class for a runner type name, imported on first use."""
    path = RUNNERS[canonical_name(name)]
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RunnerError(f'runner "{name}": cannot import {module_name}: {exc}', runner=name) from exc
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise RunnerError(f'runner "{name}": {module_name} has no class {class_name}', runner=name) from None


def check_parameter_overrides(runner_parameters: Mapping[str, Mapping[str, Any]],
                              action_parameters: Mapping[str, Mapping[str, Any]],
                              action_ref: str = "action") -> None:
    """Raise ParameterError (field ``parameters.<name>[.<attr>]``) for an override StackStorm refuses."""
    positions: dict[Any, list[str]] = {}
    for name, attrs in action_parameters.items():
        attrs = attrs or {}
        runner_attrs = runner_parameters.get(name)
        if runner_attrs is not None:
            for attr, value in attrs.items():
                if attr not in OVERRIDABLE_ATTRIBUTES and runner_attrs.get(attr) != value:
                    raise ParameterError(
                        f'the attribute "{attr}" of the runner parameter "{name}" in action "{action_ref}" '
                        'cannot be overridden', field=f"parameters.{name}.{attr}")
        if "immutable" in attrs:
            if runner_attrs is not None and "immutable" in runner_attrs:
                raise ParameterError(
                    f'parameter "{name}" is declared immutable in the runner; action "{action_ref}" '
                    'cannot override that', field=f"parameters.{name}.immutable")
            if attrs["immutable"] and "default" not in attrs and "default" not in (runner_attrs or {}):
                raise ParameterError(f'immutable parameter "{name}" requires a default value',
                                     field=f"parameters.{name}.default")
        if "position" in attrs:
            positions.setdefault(attrs["position"], []).append(name)
    for position, names in positions.items():
        if len(names) > 1:
            raise ParameterError(f'parameters {", ".join(sorted(names))} have the same position {position}',
                                 field=f"parameters.{sorted(names)[1]}.position")
    if sorted(positions) != list(range(len(positions))):
        raise ParameterError(
            f"positions of parameters must be contiguous from 0, got {sorted(positions)}",
            field="parameters")


def merge_parameters(runner_parameters: Mapping[str, Mapping[str, Any]] | None,
                     action_parameters: Mapping[str, Mapping[str, Any]] | None,
                     action_ref: str = "action") -> dict[str, dict[str, Any]]:
    """The effective parameter definitions of an action: runner's, overlaid by the action's.

    Each attribute the action sets replaces the runner's whole attribute; unlike
    StackStorm's deep update, an action's object ``default`` is not merged key
    by key into the runner's default, which is what an author writing one expects.
    """
    runner_parameters = runner_parameters or {}
    action_parameters = action_parameters or {}
    check_parameter_overrides(runner_parameters, action_parameters, action_ref)
    merged = {name: dict(copy.deepcopy(attrs or {})) for name, attrs in runner_parameters.items()}
    for name, attrs in action_parameters.items():
        merged.setdefault(name, {}).update(copy.deepcopy(dict(attrs or {})))
    return merged


def _to_draft4(definition: Any) -> Any:
    """One parameter definition as plain draft-4: boolean ``required`` becomes a list on the parent."""
    if not isinstance(definition, Mapping):
        return definition
    result: dict[str, Any] = {}
    for key, value in definition.items():
        if key in _EXTENSIONS:
            continue
        if key in ("properties", "patternProperties", "definitions") and isinstance(value, Mapping):
            result[key] = {name: _to_draft4(sub) for name, sub in value.items()}
        elif key in ("items", "additionalItems", "additionalProperties", "not"):
            result[key] = [_to_draft4(v) for v in value] if isinstance(value, list) else _to_draft4(value)
        elif key in ("allOf", "anyOf", "oneOf") and isinstance(value, list):
            result[key] = [_to_draft4(v) for v in value]
        else:
            result[key] = value
    properties = definition.get("properties")
    if isinstance(properties, Mapping):
        required = [name for name, sub in properties.items() if isinstance(sub, Mapping) and sub.get("required") is True]
        if required:
            result["required"] = required
    return result


def parameters_schema(parameters: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A draft-4 JSON Schema validating a parameters object against merged definitions."""
    return _to_draft4({"type": "object", "properties": dict(parameters), "additionalProperties": False})


def immutable_parameters(parameters: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Names of parameters a request may not set."""
    return sorted(name for name, attrs in parameters.items() if (attrs or {}).get("immutable"))


def secret_parameters(parameters: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Names of parameters whose values are masked in logs and API output."""
    return sorted(name for name, attrs in parameters.items() if (attrs or {}).get("secret"))
