"""Inspection of a workflow definition before it runs, in StackStorm's categories.

- ``syntax``: JSON-schema violations (when there are any, nothing else is checked:
  the rest needs a definition that parses);
- ``semantics``: reserved task names, ``do`` targets that are not tasks, joins
  that cannot be satisfied, shorthand that does not parse, no start task;
- ``expression``: YAQL or Jinja that does not parse, or mixes the two;
- ``context``: a variable read where no path has assigned it yet;
- ``content``: actions that are malformed or not registered, missing or unexpected
  input (only when the service passes ``action_lookup``).

Every entry has ``type`` (its category), ``message``, ``spec_path`` and
``schema_path``; expression and context entries add ``language`` and ``expression``.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any, Callable, Iterator

from st2common import expressions
from st2workflowengine.orquesta.graph import WorkflowGraph
from st2workflowengine.orquesta.spec import (
    ENGINE_COMMANDS,
    TaskSpec,
    WorkflowInspectionError,
    WorkflowSpec,
    load,
    parse,
    parse_inline,
    split_action,
    syntax_errors,
)

CATEGORIES = ("syntax", "semantics", "expression", "context", "content")
TASK_SCHEMA = "properties.tasks.patternProperties.^\\w+$"
# Variables every workflow has before its input: StackStorm's runtime context.
RUNTIME_VARIABLES = frozenset({"st2", "parent"})
_REF = re.compile(r"^[^.\s]+\.[^\s]+$")
# Distinct definitions whose database-free inspection is kept.
_CACHE_SIZE = 256

# action_lookup(ref) -> the action's parameter schemas (runner's merged in), or None if not registered.
ActionLookup = Callable[[str], "dict[str, dict[str, Any]] | None"]


def _entry(category: str, message: str, spec_path: str, schema_path: str, **extra: Any) -> dict[str, Any]:
    return {"type": category, "message": message, "spec_path": spec_path, "schema_path": schema_path, **extra}


def _places(spec: WorkflowSpec) -> Iterator[tuple[str, str, Any, str | None]]:
    """(spec_path, schema_path, value, task name or None) of every value that may hold expressions."""
    for i, item in enumerate(spec.input):
        if item.has_default:
            yield f"input[{i}]", "properties.input", item.default, None
    for i, (_name, value) in enumerate(spec.vars):
        yield f"vars[{i}]", "properties.vars", value, None
    for name, task in spec.tasks.items():
        base, schema = f"tasks.{name}", TASK_SCHEMA
        yield f"{base}.action", f"{schema}.properties.action", task.action, name
        yield f"{base}.action", f"{schema}.properties.action", dict(task.inline_input), name
        yield f"{base}.input", f"{schema}.properties.input", task.input, name
        if task.with_items:
            yield f"{base}.with", f"{schema}.properties.with", [task.with_items.items,
                                                                 task.with_items.concurrency], name
        yield f"{base}.delay", f"{schema}.properties.delay", task.delay, name
        if task.retry:
            yield f"{base}.retry", f"{schema}.properties.retry", [task.retry.when, task.retry.count,
                                                                  task.retry.delay], name
        for transition in task.next:
            path, tschema = f"{base}.next[{transition.index}]", f"{schema}.properties.next.items.properties"
            yield f"{path}.when", f"{tschema}.when", transition.when, name
            yield f"{path}.publish", f"{tschema}.publish", dict(transition.publish), name
    for i, (_name, value) in enumerate(spec.output):
        yield f"output[{i}]", "properties.output", value, None


def semantics(spec: WorkflowSpec, raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Problems with names, targets, joins and shorthand."""
    errors = []
    graph = WorkflowGraph(spec)
    for name, task in spec.tasks.items():
        base = f"tasks.{name}"
        if name in ENGINE_COMMANDS:
            errors.append(_entry("semantics", f'The task name "{name}" is reserved with special function.',
                                 base, TASK_SCHEMA))
        raw_action = (raw["tasks"][name] or {}).get("action")
        if raw_action:
            rest = split_action(raw_action)[1]
            leftover = parse_inline(rest)[1] if rest else ""
            if leftover:
                errors.append(_entry("semantics", f'Unable to parse the inline input "{leftover}" of the action.',
                                     f"{base}.action", f"{TASK_SCHEMA}.properties.action"))
        for transition, raw_transition in zip(task.next, (raw["tasks"][name] or {}).get("next") or []):
            path = f"{base}.next[{transition.index}]"
            tschema = f"{TASK_SCHEMA}.properties.next.items.properties"
            for target in transition.do:
                if target not in ENGINE_COMMANDS and target not in spec.tasks:
                    errors.append(_entry("semantics", f'The task "{target}" is not defined.',
                                         f"{path}.do", f"{tschema}.do"))
            if isinstance(raw_transition.get("publish"), str) and parse_inline(raw_transition["publish"])[1]:
                errors.append(_entry("semantics", f'Unable to parse the publish "{raw_transition["publish"]}".',
                                     f"{path}.publish", f"{tschema}.publish"))
        barrier = graph.barrier(name)
        if barrier is not None:
            sources = len({edge.source for edge in graph.inbound(name)})
            if barrier > sources:
                errors.append(_entry("semantics",
                                     f'The join task "{name}" waits for {barrier} inbound tasks '
                                     f'but only {sources} transition to it.',
                                     f"{base}.join", f"{TASK_SCHEMA}.properties.join"))
    if not graph.start_tasks:
        errors.append(_entry("semantics", "Unable to identify any starting task.", "tasks", "properties.tasks"))
    return errors


def expression_errors(spec: WorkflowSpec) -> list[dict[str, Any]]:
    """Expressions that do not parse."""
    errors = []
    for spec_path, schema_path, value, _task in _places(spec):
        for problem in expressions.validate(value):
            errors.append(_entry("expression", problem["message"], spec_path, schema_path,
                                 language=problem["language"], expression=problem["expression"]))
    return errors


def _published(task: TaskSpec, upto: int | None = None) -> set[str]:
    return {name for t in task.next[:upto] for name, _value in t.publish}


def _known_at_tasks(spec: WorkflowSpec, graph: WorkflowGraph, initial: frozenset[str]) -> dict[str, set[str]]:
    """Variables some path has assigned on arrival at each reachable task (a fixed point)."""
    known: dict[str, set[str]] = {name: set(initial) for name in graph.start_tasks}
    changed = True
    while changed:
        changed = False
        for edge in graph.edges:
            if edge.source not in known:
                continue
            arriving = known[edge.source] | _published(spec.tasks[edge.source], edge.index + 1)
            target = known.setdefault(edge.target, set())
            if not arriving <= target:
                target |= arriving
                changed = True
    return known


def context_errors(spec: WorkflowSpec, app_context: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Variables read before any path assigns them."""
    errors: list[dict[str, Any]] = []

    def check(value: Any, known: set[str], spec_path: str, schema_path: str) -> None:
        for language, expression, name in expressions.variables(value):
            if name not in known:
                errors.append(_entry("context", f'Variable "{name}" is referenced before assignment.',
                                     spec_path, schema_path, language=language, expression=expression))

    known = set(RUNTIME_VARIABLES | set(app_context or {}))
    for i, item in enumerate(spec.input):
        if item.has_default:
            check(item.default, known, f"input[{i}]", "properties.input")
        known.add(item.name)
    for i, (name, value) in enumerate(spec.vars):
        check(value, known, f"vars[{i}]", "properties.vars")
        known.add(name)
    graph = WorkflowGraph(spec)
    at_task = _known_at_tasks(spec, graph, frozenset(known))
    for path, schema, value, task_name in _places(spec):
        if task_name is None or task_name not in at_task:
            continue
        task_known = set(at_task[task_name])
        if ".next[" in path:
            index = int(path.split(".next[")[1].split("]")[0])
            task_known |= _published(spec.tasks[task_name], index)
            if path.endswith(".publish"):
                _check_publish(spec.tasks[task_name].next[index].publish, task_known, path, schema, check)
                continue
        check(value, task_known, path, schema)
    final = set(known).union(*at_task.values()) if at_task else set(known)
    final |= {name for task in at_task for name in _published(spec.tasks[task])}
    for i, (name, value) in enumerate(spec.output):
        check(value, final, f"output[{i}]", "properties.output")
        final.add(name)
    return errors


def _check_publish(pairs: tuple[tuple[str, Any], ...], known: set[str], path: str, schema: str,
                   check: Callable[..., None]) -> None:
    for name, value in pairs:
        check(value, known, path, schema)
        known.add(name)


def content_errors(spec: WorkflowSpec, action_lookup: ActionLookup) -> list[dict[str, Any]]:
    """Actions that are malformed or not registered, and input that does not fit them."""
    errors = []
    for name, task in spec.tasks.items():
        ref = task.action
        if not ref or expressions.has_expression(ref):
            continue
        path, schema = f"tasks.{name}.action", f"{TASK_SCHEMA}.properties.action"
        if not _REF.match(ref):
            errors.append(_entry("content", f'The action reference "{ref}" is not formatted correctly.', path, schema))
            continue
        parameters = action_lookup(ref)
        if parameters is None:
            errors.append(_entry("content", f'The action "{ref}" is not registered in the database.', path, schema))
            continue
        if task.input is not None and not isinstance(task.input, dict):
            continue
        given = set(task.input or {}) | {key for key, _value in task.inline_input}
        input_path, input_schema = f"tasks.{name}.input", f"{TASK_SCHEMA}.properties.input"
        for param, meta in sorted(parameters.items()):
            if (meta or {}).get("required") and "default" not in (meta or {}) and param not in given:
                errors.append(_entry("content", f'Action "{ref}" is missing required input "{param}".',
                                     input_path, input_schema))
        for param in sorted(given - set(parameters)):
            errors.append(_entry("content", f'Action "{ref}" has unexpected input "{param}".',
                                 f"{input_path}.{param}", f"{input_schema}.patternProperties.^\\w+$"))
    return errors


def inspect(definition: str | dict[str, Any], action_lookup: ActionLookup | None = None,
            app_context: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every problem of a definition, by category; an empty dict when there are none."""
    return _inspect(definition, action_lookup, app_context)[1]


def _inspect(definition: str | dict[str, Any], action_lookup: ActionLookup | None,
             app_context: dict[str, Any] | None) -> tuple[WorkflowSpec | None, dict[str, list[dict[str, Any]]]]:
    """The spec (None when it does not parse) and every problem, by category."""
    text = definition if isinstance(definition, str) else json.dumps(definition, sort_keys=True, default=str)
    context = json.dumps(app_context, sort_keys=True, default=str) if app_context else None
    spec, found = _inspect_definition(text, isinstance(definition, str), context)
    found = copy.deepcopy(found)
    if spec is not None and action_lookup:
        content = content_errors(spec, action_lookup)
        if content:
            found["content"] = content
    return spec, found


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _inspect_definition(text: str, is_yaml: bool, app_context: str | None
                        ) -> tuple[WorkflowSpec | None, dict[str, list[dict[str, Any]]]]:
    """What inspection finds without the database (all but content), once per distinct definition.

    A workflow action runs its definition again and again: YAML, the schema, and
    every expression are parsed and checked once. Callers must not change what
    it returns (inspect() copies the errors).
    """
    try:
        raw = load(text if is_yaml else json.loads(text))
    except WorkflowInspectionError as exc:
        return None, exc.errors
    syntax = syntax_errors(raw)
    if syntax:
        return None, {"syntax": syntax}
    spec = parse(raw)
    found = {
        "semantics": semantics(spec, raw),
        "expression": expression_errors(spec),
        "context": context_errors(spec, json.loads(app_context) if app_context else None),
    }
    return spec, {category: errors for category, errors in found.items() if errors}


def flatten(result: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The one list StackStorm's inspect endpoint returns, sorted by category then schema path."""
    errors = [error for category in CATEGORIES for error in result.get(category, [])]
    return sorted(errors, key=lambda e: (CATEGORIES.index(e["type"]), e.get("schema_path") or "",
                                         e.get("spec_path") or ""))


def check(definition: str | dict[str, Any], action_lookup: ActionLookup | None = None,
          app_context: dict[str, Any] | None = None) -> WorkflowSpec:
    """The parsed spec of a definition that passes inspection; WorkflowInspectionError otherwise."""
    spec, result = _inspect(definition, action_lookup, app_context)
    if result:
        raise WorkflowInspectionError(result)
    return spec
