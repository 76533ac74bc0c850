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
extra context a caller adds (``st2kv``, the datastore lookups).

Secrets never reach the stored execution through a template. ``render_live``
holds back, unrendered, every template that reads a secret, and they render in
the action runner only:

| a template is held when it                        | seen                                   |
| ------------------------------------------------- | -------------------------------------- |
| decrypts a datastore item (``decrypt_kv``)        | in its text                            |
| refers to a parameter that is (or holds) a secret | in its variables                       |
| reads a pack config option that is (or holds) a   | when rendering (the option is not read |
| secret, through ``config_context``                | then, so the API never decrypts it)    |
| refers to a held parameter                        | in its variables                       |

The stored value of a held parameter is its template; ``render_final`` knows it
by the same marks. Its values carry ``revealed``, the clear text of what it
decrypted, for the action runner to scrub out of what the run records
(st2common/masking.py), and an error about a value that carries a secret quotes
``********`` instead of the value.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from typing import Any, Iterable, Mapping

import jsonschema

from st2common.casting import MASK, NONE_MAGIC, cast, shown  # noqa: F401 (MASK, NONE_MAGIC: public here too)
from st2common.exceptions import ParameterError, ValidationError
from st2common.masking import ConfigGate, Scrubber, decrypts, held_templates, secret_reads
from st2common.models.api.base import has_secrets
from st2common.runners import registry
from st2common.templating import contains_template, render_value, revealed, variables

LOG = logging.getLogger(__name__)

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

    @functools.cached_property
    def secret_holders(self) -> frozenset[str]:
        """Parameters that are secret or hold a secret property (templates reading them are held)."""
        return frozenset(n for n, d in self.definitions.items() if has_secrets(d))

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


class RenderedValues(dict):
    """render_final's values, with the clear text of the datastore secrets the rendering decrypted."""

    revealed: tuple[str, ...] = ()


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


def validate(schema: ParameterSchema, values: Mapping[str, Any], held: Iterable[str] = (),
             hidden: Iterable[str] = ()) -> None:
    """Check cast values against the schema: required, enum and the JSON Schema constraints.

    held: parameters whose templates render at run time (present, checked then);
    hidden: parameters whose values carry a secret (never quoted in an error).
    """
    _check_required(schema, values, dict.fromkeys(held, True))
    hidden = frozenset(hidden)
    constrained: dict[str, dict[str, Any]] = {}
    for name, definition in schema.definitions.items():
        value = values.get(name)
        if value is None:
            continue
        if name in hidden:
            definition = {**definition, "secret": True}
        enum = definition.get("enum")
        if enum is not None and value not in enum:
            raise ParameterError(f'parameter "{name}": {shown(value, definition)} is not one of {enum!r}',
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
           extra: Mapping[str, Any] | None, gate: bool = False) -> dict[str, Any]:
    scope: dict[str, Any] = dict(extra or {})
    scope["action_context"] = dict(context or {})
    action_context = scope["action_context"]
    pack = action_context.get("pack")
    if config is None:
        # No config loaded by the caller: the pack's config is read only if a template asks for it.
        from st2common.services.configs import LazyConfig

        config_context = LazyConfig(pack, action_context.get("api_user") or action_context.get("user"))
    else:
        config_context = dict(config)
    scope["config_context"] = ConfigGate(config_context, pack) if gate else config_context
    return scope


def _refs(name: str, template: Any) -> frozenset[str]:
    try:
        return variables(template)
    except ValidationError as exc:
        raise ParameterError(f'parameter "{name}": {exc}', field=name) from exc


def _resolve(schema: ParameterSchema, literals: Mapping[str, Any], templates: Mapping[str, Any],
             scope: dict[str, Any], hold: bool) -> tuple[dict[str, Any], set[str]]:
    """Render templates (name -> value with Jinja in it) in dependency order.

    Returns their cast values and the names whose templates read a secret: with
    hold (request time) those are left unrendered, else (run time) rendered
    and never quoted in an error.
    """
    if not templates:
        return {}, set()
    graph: dict[str, frozenset[str]] = {}
    for name, template in templates.items():
        refs = _refs(name, template)
        for ref in refs:
            if ref in schema.definitions and ref not in literals and ref not in templates:
                raise ParameterError(
                    f'parameter "{name}": dependency unsatisfied in variable "{ref}" (it has no value)',
                    field=name)
        graph[name] = refs
    edges = {n: refs & templates.keys() for n, refs in graph.items()}
    try:
        # No template refers to another (the usual case): the sorter would give them in this order too.
        order = list(TopologicalSorter(edges).static_order()) if any(edges.values()) else list(edges)
    except CycleError as exc:
        cycle = list(exc.args[1])
        raise ParameterError(f'parameter "{cycle[0]}": cyclic dependency between parameters '
                             f'{" -> ".join(cycle)}', field=cycle[0]) from None
    scope.update(literals)
    secret_sources = schema.secret_holders if hold else schema.secret_holders | {"config_context"}
    reads = secret_reads(scope)
    rendered: dict[str, Any] = {}
    secret: set[str] = set()
    for name in order:
        template = templates[name]
        if decrypts(template) or graph[name] & (secret_sources | secret):
            secret.add(name)
            if hold:
                continue
        before = reads()
        try:
            value = render_value(template, scope)
        except ValidationError as exc:
            if hold and reads() != before:
                secret.add(name)
                continue
            reason = Scrubber(revealed(scope)).text(str(exc))
            raise ParameterError(f'parameter "{name}": {reason}', field=name) from None
        if reads() != before:
            secret.add(name)
            if hold:
                continue
        definition = schema.definitions.get(name, {})
        if name in secret:
            definition = {**definition, "secret": True}
        scope[name] = rendered[name] = cast(name, value, definition)
    return rendered, secret


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


def render_live(schema: ParameterSchema, supplied: Mapping[str, Any] | None,
                context: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None,
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Request-time rendering: cast, render and validate; the values an execution stores.

    A None value counts as not supplied; a supplied template that reads a secret is stored as it
    is (rendered at run time). Raises ParameterError naming the parameter.
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
    rendered, held = _resolve(schema, literals, templates, _scope(context, config, extra, gate=True), hold=True)
    values = {**literals, **rendered}
    validate(schema, values, held=held)
    live = {name: values[name] if name in values else templates[name] for name in given}
    for name in templated_defaults:
        if name not in held and not schema.definitions[name].get("immutable"):
            live[name] = values[name]
    return live


def render_final(schema: ParameterSchema, live: Mapping[str, Any] | None,
                 context: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None) -> RenderedValues:
    """Run-time rendering: stored values as literals plus every default; all values, validated.

    Stored templates that read secrets (held back by render_live) render here; the
    result's ``revealed`` lists the clear text of the datastore items they decrypted.
    """
    literals: dict[str, Any] = {}
    templates: dict[str, Any] = {}
    stored: dict[str, Any] = {}
    for name, value in (live or {}).items():
        definition = schema.definitions.get(name)
        if definition is None:
            # The action changed since the request; what it no longer declares cannot be passed on.
            LOG.debug("action %s no longer declares parameter %s; dropped", schema.action_ref, name)
            continue
        if value is None or definition.get("immutable"):
            continue
        stored[name] = value
    held: set[str] = set()
    if any(contains_template(value) for value in stored.values()):
        # Defaults render anyway; they count because a stored template reading a held default was held too.
        defaults = {name: definition["default"] for name, definition in schema.definitions.items()
                    if name not in stored and contains_template(definition.get("default"))}
        held = held_templates({**defaults, **stored}, schema.secret_holders) & stored.keys()
    for name, value in stored.items():
        if name in held:
            templates[name] = value
        else:
            literals[name] = cast(name, value, schema.definitions[name])
    _defaults(schema, {**literals, **templates}, literals, templates)
    _check_required(schema, literals, templates)
    scope = _scope(context, config, extra)
    rendered, secret = _resolve(schema, literals, templates, scope, hold=False)
    values = RenderedValues({**literals, **rendered})
    values.revealed = tuple(revealed(scope))
    validate(schema, values, hidden=secret)
    return values
