"""Action parameters: the effective schema, casting and validation of request values, rendering.

The effective schema of an action is its runner type's ``runner_parameters``
overlaid by the action's own ``parameters`` (``registry.merge_parameters``
applies StackStorm's override rules). Values go through two renderings, as
in StackStorm (``st2common/util/param.py``):

- ``render_live`` when the execution is requested: supplied values are cast to
  their declared types (text from the CLI becomes an integer, a list ...),
  supplied templates and templated defaults are rendered, and the whole set,
  defaults included, is validated (unknown, immutable, type, enum, required).
  It returns what the execution stores as its ``parameters``: the supplied
  values plus the rendered templated defaults of mutable parameters.
- ``render_final`` in the action runner just before the run: the stored values
  are literals, defaults fill the rest (immutable ones always win), templated
  defaults are rendered. ``ParameterSchema.split`` then separates the runner's
  parameters from the action's.

Templates may refer to other parameters; they are rendered in dependency
order, and a cycle or a reference to a parameter without a value is a
ParameterError naming the parameter. Other names in scope: ``action_context``
(the execution context) and ``config_context`` (the pack config), plus any
extra context a caller adds (the datastore lookups join here later).
"""

from __future__ import annotations

import ast
import json
import logging
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from typing import Any, Mapping

import jsonschema

from st2common.exceptions import ParameterError, ValidationError
from st2common.runners import registry
from st2common.templating import contains_template, render_value, variables

LOG = logging.getLogger(__name__)

#: What secret values are replaced with in API output and logs (StackStorm's MASKED_ATTRIBUTE_VALUE).
MASK = "********"
#: The text StackStorm's ``use_none`` filter renders, cast back to None.
NONE_MAGIC = "%*****__%NONE%__*****%"

# Attributes checked here directly; any other JSON Schema keyword goes to jsonschema.
_PLAIN_ATTRIBUTES = frozenset({"type", "description", "default", "required", "secret", "immutable",
                               "position", "enum", "title"})


@dataclass(frozen=True)
class ParameterSchema:
    """An action's effective parameters: its runner type's, overlaid by its own."""

    definitions: Mapping[str, Mapping[str, Any]]
    runner_names: frozenset[str]
    action_names: tuple[str, ...]
    action_ref: str = "action"

    @classmethod
    def build(cls, runner_parameters: Mapping[str, Mapping] | None, action_parameters: Mapping[str, Mapping] | None,
              action_ref: str = "action") -> "ParameterSchema":
        """Merge runner and action parameters; ParameterError for an override StackStorm refuses."""
        definitions = registry.merge_parameters(runner_parameters, action_parameters, action_ref)
        runner_names = frozenset(runner_parameters or {})
        action_names = tuple(name for name in (action_parameters or {}) if name not in runner_names)
        return cls(definitions, runner_names, action_names, action_ref)

    @property
    def secret_names(self) -> frozenset[str]:
        """Parameters whose values are masked."""
        return frozenset(n for n, d in self.definitions.items() if d.get("secret"))

    @property
    def immutable_names(self) -> frozenset[str]:
        """Parameters a request may not set."""
        return frozenset(n for n, d in self.definitions.items() if d.get("immutable"))

    def action_definitions(self) -> dict[str, dict[str, Any]]:
        """The action's own parameters (not the runner's), in declaration order."""
        return {name: dict(self.definitions[name]) for name in self.action_names}

    def split(self, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(runner parameters, action parameters): a name the runner declares belongs to the runner."""
        runner = {n: v for n, v in values.items() if n in self.runner_names}
        action = {n: v for n, v in values.items() if n not in self.runner_names}
        return runner, action

    def mask(self, values: Mapping[str, Any] | None) -> dict[str, Any]:
        """A copy of values with every secret parameter masked."""
        return mask_secrets(values, self.secret_names)


def mask_secrets(values: Mapping[str, Any] | None, secret_names) -> dict[str, Any]:
    """A copy of values with the named parameters' values replaced by MASK."""
    return {n: (MASK if n in secret_names and v is not None else v) for n, v in (values or {}).items()}


# -- casting ------------------------------------------------------------------------------------

def _shown(value: Any, definition: Mapping[str, Any]) -> str:
    return MASK if definition.get("secret") else repr(value)


def _type_error(name: str, value: Any, definition: Mapping[str, Any], type_name: str) -> ParameterError:
    return ParameterError(f'parameter "{name}": {_shown(value, definition)} is not of type \'{type_name}\'',
                          field=name)


def _cast_integer(value: Any) -> Any:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise TypeError


def _cast_number(value: Any) -> Any:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        return float(value.strip())
    raise TypeError


_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0"})


def _cast_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise TypeError


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        # StackStorm falls back to a Python literal (a rendered dict prints as one).
        return ast.literal_eval(text)


def _cast_array(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            decoded = _decode(text)
            if isinstance(decoded, (list, tuple)):
                return list(decoded)
            raise TypeError
        # The CLI's form: a comma-separated list.
        return [part.strip() for part in text.split(",") if part.strip()]
    raise TypeError


def _cast_object(value: Any) -> Any:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        decoded = _decode(value.strip())
        if isinstance(decoded, dict):
            return decoded
    raise TypeError


def _cast_string(value: Any) -> Any:
    if isinstance(value, str):
        return value
    raise TypeError


def _cast_null(value: Any) -> Any:
    raise TypeError


_CASTS = {
    "integer": _cast_integer,
    "number": _cast_number,
    "boolean": _cast_boolean,
    "array": _cast_array,
    "object": _cast_object,
    "string": _cast_string,
    "null": _cast_null,
}


def cast(name: str, value: Any, definition: Mapping[str, Any]) -> Any:
    """value converted to the parameter's declared type; ParameterError naming it when it cannot be."""
    if value is None or value == NONE_MAGIC:
        return None
    caster = _CASTS.get(definition.get("type"))
    if caster is None:
        return value
    try:
        return caster(value)
    except (TypeError, ValueError, SyntaxError, MemoryError, RecursionError):
        raise _type_error(name, value, definition, definition["type"]) from None


# -- validation ---------------------------------------------------------------------------------

def check_request(schema: ParameterSchema, supplied: Mapping[str, Any]) -> None:
    """Refuse unknown parameters and values for immutable ones."""
    unknown = [name for name in supplied if name not in schema.definitions]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise ParameterError(
            f"Additional properties are not allowed ({listed} {'was' if len(unknown) == 1 else 'were'} "
            f"unexpected) for action {schema.action_ref}", field=unknown[0])
    immutable = [name for name in supplied if schema.definitions[name].get("immutable")]
    if immutable:
        raise ParameterError(f"Override of immutable parameter(s) {', '.join(immutable)} is unsupported.",
                             field=immutable[0])


def _check_required(schema: ParameterSchema, *present: Mapping[str, Any]) -> None:
    for name, definition in schema.definitions.items():
        if definition.get("required") and not any(p.get(name) is not None for p in present):
            raise ParameterError(f"'{name}' is a required property (action {schema.action_ref})", field=name)


def validate(schema: ParameterSchema, values: Mapping[str, Any]) -> None:
    """Check cast values against the schema: required, enum and the JSON Schema constraints."""
    _check_required(schema, values)
    constrained: dict[str, dict[str, Any]] = {}
    for name, definition in schema.definitions.items():
        value = values.get(name)
        if value is None:
            continue
        enum = definition.get("enum")
        if enum is not None and value not in enum:
            raise ParameterError(f'parameter "{name}": {_shown(value, definition)} is not one of {enum!r}',
                                 field=name)
        if not _PLAIN_ATTRIBUTES.issuperset(definition):
            constrained[name] = {k: v for k, v in definition.items() if k != "default"}
    if constrained:
        _validate_constraints(constrained, {n: values[n] for n in constrained})


def _validate_constraints(definitions: dict[str, dict[str, Any]], values: dict[str, Any]) -> None:
    validator = jsonschema.Draft4Validator(registry.parameters_schema(definitions))
    error = jsonschema.exceptions.best_match(validator.iter_errors(values))
    if error is None:
        return
    name = str(error.path[0]) if error.path else next(iter(values))
    message = error.message if not definitions.get(name, {}).get("secret") else "value does not fit the schema"
    raise ParameterError(f'parameter "{name}": {message}', field=name)


# -- rendering ----------------------------------------------------------------------------------

def _scope(context: Mapping[str, Any] | None, config: Mapping[str, Any] | None,
           extra: Mapping[str, Any] | None) -> dict[str, Any]:
    scope: dict[str, Any] = dict(extra or {})
    scope["action_context"] = dict(context or {})
    if config is None:
        # No config loaded by the caller: the pack's config is read only if a template asks for it.
        from st2common.services.configs import LazyConfig

        action_context = scope["action_context"]
        scope["config_context"] = LazyConfig(action_context.get("pack"),
                                             action_context.get("api_user") or action_context.get("user"))
    else:
        scope["config_context"] = dict(config)
    return scope


def _resolve(schema: ParameterSchema, literals: Mapping[str, Any], templates: Mapping[str, Any],
             scope: dict[str, Any]) -> dict[str, Any]:
    """Render templates (name -> value with Jinja in it) in dependency order; their cast values."""
    graph: dict[str, set[str]] = {}
    for name, template in templates.items():
        try:
            refs = variables(template)
        except ValidationError as exc:
            raise ParameterError(f'parameter "{name}": {exc}', field=name) from exc
        for ref in refs:
            if ref in schema.definitions and ref not in literals and ref not in templates:
                raise ParameterError(
                    f'parameter "{name}": dependency unsatisfied in variable "{ref}" (it has no value)',
                    field=name)
        graph[name] = {ref for ref in refs if ref in templates}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = list(exc.args[1])
        raise ParameterError(f'parameter "{cycle[0]}": cyclic dependency between parameters '
                             f'{" -> ".join(cycle)}', field=cycle[0]) from None
    scope.update(literals)
    rendered: dict[str, Any] = {}
    for name in order:
        try:
            value = render_value(templates[name], scope)
        except ValidationError as exc:
            raise ParameterError(f'parameter "{name}": {exc}', field=name) from exc
        value = cast(name, value, schema.definitions.get(name, {}))
        scope[name] = rendered[name] = value
    return rendered


def _defaults(schema: ParameterSchema, given: Mapping[str, Any], literals: dict[str, Any],
              templates: dict[str, Any]) -> list[str]:
    """Add the defaults of parameters not given; the names whose default is a template."""
    templated = []
    for name, definition in schema.definitions.items():
        if name in given or "default" not in definition:
            continue
        default = definition["default"]
        if contains_template(default):
            templates[name] = default
            templated.append(name)
        else:
            literals[name] = cast(name, default, definition)
    return templated


def _decrypts(value: Any) -> bool:
    """True for a template that decrypts a datastore value (rendered only at run time)."""
    return isinstance(value, str) and "decrypt_kv" in value and contains_template(value)


def render_live(schema: ParameterSchema, supplied: Mapping[str, Any] | None,
                context: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None,
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Request-time rendering: cast, render and validate; the values an execution stores.

    A None value counts as not supplied. Raises ParameterError naming the parameter.
    """
    given = {name: value for name, value in (supplied or {}).items() if value is not None}
    check_request(schema, given)
    literals: dict[str, Any] = {}
    templates: dict[str, Any] = {}
    for name, value in given.items():
        if contains_template(value):
            templates[name] = value
        else:
            literals[name] = cast(name, value, schema.definitions[name])
    templated_defaults = _defaults(schema, given, literals, templates)
    _check_required(schema, literals, templates)
    if any(_decrypts(template) for template in templates.values()):
        # A template that decrypts a datastore secret is rendered only in the action
        # runner (render_final), so the clear value never reaches the stored execution.
        return {name: literals.get(name, templates.get(name)) for name in given}
    rendered = _resolve(schema, literals, templates, _scope(context, config, extra))
    values = {**literals, **rendered}
    validate(schema, values)
    live = {name: values[name] for name in given}
    for name in templated_defaults:
        if not schema.definitions[name].get("immutable"):
            live[name] = values[name]
    return live


def render_final(schema: ParameterSchema, live: Mapping[str, Any] | None,
                 context: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run-time rendering: stored values as literals plus every default; all values, validated.

    Stored templates that decrypt a datastore secret (kept unrendered by render_live) render here.
    """
    literals: dict[str, Any] = {}
    templates: dict[str, Any] = {}
    for name, value in (live or {}).items():
        definition = schema.definitions.get(name)
        if definition is None:
            # The action changed since the request; what it no longer declares cannot be passed on.
            LOG.debug("action %s no longer declares parameter %s; dropped", schema.action_ref, name)
            continue
        if value is None or definition.get("immutable"):
            continue
        if _decrypts(value):
            templates[name] = value
            continue
        literals[name] = cast(name, value, definition)
    _defaults(schema, {**literals, **templates}, literals, templates)
    _check_required(schema, literals, templates)
    rendered = _resolve(schema, literals, templates, _scope(context, config, extra))
    values = {**literals, **rendered}
    validate(schema, values)
    return values
