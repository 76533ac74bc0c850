"""Rendering the parts of a workflow that hold expressions: input, vars, a task's
action, input, items, concurrency and delays, a transition's publish, and output.

Every function takes a ``Runtime`` (or builds one over given variables) and
returns plain data, raising ``ExpressionEvaluationException`` (or
``RenderError`` for a value of the wrong type); ``error_entry`` turns either
into StackStorm's error shape.

Datastore secrets decrypted while rendering (``st2kv(..., decrypt=true)``) leave
here sealed or masked (st2common.expressions.secrets): a child's input names
the item in a ``decrypt_kv`` template, the output and error messages show
``********``; the variables the conductor keeps in memory stay clear.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping

from st2common import expressions
from st2common.expressions import ExpressionEvaluationException, Runtime, secrets
from st2workflowengine.orquesta.spec import ItemsSpec, TaskSpec, TransitionSpec, WorkflowSpec


class RenderError(ExpressionEvaluationException):
    """An expression evaluated to a value of the wrong kind (items not a list, input not a dict ...)."""


def error_entry(exc: Exception, **where: Any) -> dict[str, Any]:
    """StackStorm's error record: ``{type: error, message: "Class: text", task_id?, route?, ...}``."""
    entry = {"type": "error", "message": secrets.mask(f"{type(exc).__name__}: {exc}")}
    entry.update({k: v for k, v in where.items() if v is not None})
    return entry


def _assign(pairs: tuple[tuple[str, Any], ...], variables: dict[str, Any], runtime: Runtime,
            errors: list[dict[str, Any]], target: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate name/value pairs in order; each name is visible to the ones after it."""
    target = {} if target is None else target
    for name, value in pairs:
        try:
            target[name] = expressions.evaluate(value, replace(runtime, variables=variables))
        except ExpressionEvaluationException as exc:
            errors.append(error_entry(exc))
            continue
        variables[name] = target[name]
    return target


def render_initial_context(spec: WorkflowSpec, inputs: dict[str, Any], context: dict[str, Any],
                           runtime: Runtime) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(rendered input, initial context, errors): given inputs win, defaults render in order, then vars."""
    variables = dict(context)
    rendered: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for item in spec.input:
        if item.name in inputs:
            rendered[item.name] = inputs[item.name]
            variables[item.name] = inputs[item.name]
        elif item.has_default:
            _assign(((item.name, item.default),), variables, runtime, errors, rendered)
        else:
            rendered[item.name] = variables[item.name] = None
    _assign(spec.vars, variables, runtime, errors)
    return rendered, variables, errors


def render_output(spec: WorkflowSpec, variables: dict[str, Any],
                  runtime: Runtime) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(output, errors); items that fail to render are left out and reported."""
    if not spec.output:
        return None, []
    errors: list[dict[str, Any]] = []
    output = _assign(spec.output, dict(variables), runtime, errors)
    return secrets.mask(output), errors


def publish(transition: TransitionSpec, variables: dict[str, Any],
            runtime: Runtime) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(published variables, errors) of one satisfied transition; variables is updated in place."""
    errors: list[dict[str, Any]] = []
    published = _assign(transition.publish, variables, runtime, errors)
    return published, errors


def is_satisfied(transition: TransitionSpec, runtime: Runtime) -> bool:
    """True when the transition's ``when`` holds (no ``when`` means on completion)."""
    if transition.when is None:
        return True
    return bool(expressions.evaluate(transition.when, runtime))


def seconds(value: Any, runtime: Runtime, what: str) -> float | int | None:
    """A delay: a number of seconds, or an expression yielding one."""
    if value is None:
        return None
    value = expressions.evaluate(value, runtime)
    if isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit():
        value = float(value) if "." in value else int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise RenderError(f'The value of "{what}" is not a positive number: {value!r}.')
    return value


def count(value: Any, runtime: Runtime, what: str) -> int | None:
    """A count (retry count, concurrency): an integer, or an expression yielding one."""
    if value is None:
        return None
    value = expressions.evaluate(value, runtime)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RenderError(f'The value of "{what}" is not a positive integer: {value!r}.')
    return value


def items(spec: ItemsSpec, runtime: Runtime) -> list[Any]:
    """The items a with-items task runs over; named items become dicts of their names."""
    values = expressions.evaluate(spec.items, runtime)
    if not isinstance(values, (list, tuple)):
        raise RenderError(f'The value of "{spec.items}" is not type of list.')
    if not spec.names:
        return list(values)
    if len(spec.names) == 1:
        return [{spec.names[0]: value} for value in values]
    rendered = []
    for value in values:
        if not isinstance(value, (list, tuple)) or len(value) != len(spec.names):
            raise RenderError(f'The item {value!r} does not match the item names {", ".join(spec.names)}.')
        rendered.append(dict(zip(spec.names, value)))
    return rendered


def action(task: TaskSpec, runtime: Runtime) -> tuple[str, dict[str, Any]]:
    """(action ref, input) of one child execution of task; inline ``k=v`` pairs win over input."""
    ref = expressions.evaluate(task.action, runtime)
    if not isinstance(ref, str) or not ref.strip():
        raise RenderError(f'The action "{task.action}" does not render to an action reference: {ref!r}.')
    rendered: Any = {}
    if task.input is not None:
        rendered = expressions.evaluate(task.input, runtime)
        if not isinstance(rendered, dict):
            raise RenderError(f'The input of task "{task.name}" does not render to a dict: {rendered!r}.')
    for name, value in task.inline_input:
        rendered[name] = expressions.evaluate(value, runtime)
    return ref.strip(), secrets.seal(rendered, _user(runtime))


def _user(runtime: Runtime) -> str | None:
    """The workflow's user: the one a child runs as, whose items its templates read."""
    st2 = runtime.variables.get("st2")
    return st2.get("user") if isinstance(st2, Mapping) else None


def retry_applies(task: TaskSpec, runtime: Runtime, status: str, tally: int,
                  count_of: Callable[[], int | None]) -> bool:
    """True when a task's retry policy asks for another run after this completion."""
    if task.retry is None or status == "canceled":
        return False
    limit = count_of()
    if limit is None or tally >= limit:
        return False
    if task.retry.when is None:
        return status in ("failed", "timeout", "abandoned")
    return bool(expressions.evaluate(task.retry.when, runtime))
