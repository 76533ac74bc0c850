"""The one registry of functions that workflow expressions can call.

Every function here is available in YAQL (``<% basename(ctx(path)) %>``) and in
Jinja, both as a global (``{{ basename(ctx('path')) }}``) and as a filter
(``{{ ctx('path') | basename }}``). Functions that read the workflow's state
take the evaluating engine's context first (a parameter named ``context``, which
yaql fills in itself and Jinja fills in through ``pass_context``) and find the
``Runtime`` of the evaluation in it under ``__runtime``.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import jinja2
import jsonpath_ng

from st2common.exceptions import NotFoundError, StackStormBaseException
from st2common.expressions import secrets
from st2common.templating.filters import (
    basename, dirname, from_json_string, from_yaml_string, json_escape, regex_match, regex_replace,
    regex_search, regex_substring, to_human_time_from_seconds, to_json_string, to_yaml_string,
    version_bump_major, version_bump_minor, version_bump_patch, version_compare, version_equal,
    version_less_than, version_match, version_more_than, version_strip_patch,
)

RUNTIME_KEY = "__runtime"
# StackStorm's marker for "render this parameter as None" (``use_none``);
# an expression whose whole value is the marker evaluates to None.
NONE_MAGIC_VALUE = "%*****__%NONE%__*****%"
NO_ITEM = object()


class ExpressionEvaluationException(StackStormBaseException):
    """An expression could not be evaluated; the message names the expression."""


class VariableUndefinedError(ExpressionEvaluationException):
    """ctx() was asked for a variable that is not in the context."""

    def __init__(self, name: str) -> None:
        super().__init__(f'The variable "{name}" is undefined.', name=name)


class VariableInaccessibleError(ExpressionEvaluationException):
    """ctx() was asked for an internal (double underscore) variable."""

    def __init__(self, name: str) -> None:
        super().__init__(f'The variable "{name}" is for internal use and inaccessible.', name=name)


@dataclass
class Runtime:
    """What the workflow functions see while one expression is evaluated.

    ``task`` is the current task record (``id``, ``route``, ``status``,
    ``result``); ``find_task(task_id, route)`` returns another task's record
    (adding ``meta`` with the service's ids and timestamps) or None;
    ``kv_lookup(name, scope, user, decrypt)`` reads the datastore and raises
    NotFoundError for a missing key.
    """

    variables: Mapping[str, Any] = field(default_factory=dict)
    task: Mapping[str, Any] | None = None
    item: Any = NO_ITEM
    find_task: Callable[[str, int | None], Mapping[str, Any] | None] | None = None
    kv_lookup: Callable[[str, str, str | None, bool], Any] | None = None


def _runtime(context: Any) -> Runtime:
    try:
        runtime = context[RUNTIME_KEY]
    except KeyError:
        runtime = None
    if not isinstance(runtime, Runtime):
        raise ExpressionEvaluationException("The workflow runtime is not available to this expression.")
    return runtime


def _current_task(context: Any) -> Mapping[str, Any]:
    task = _runtime(context).task
    if not task:
        raise ExpressionEvaluationException("The current task is not set in the context.")
    return task


# Orquesta's workflow functions.

def ctx_(context: Any, key: str | None = None) -> Any:
    """The whole workflow context, or one variable of it."""
    variables = _runtime(context).variables
    if key is None:
        return {k: v for k, v in variables.items() if not k.startswith("__")}
    if key.startswith("__"):
        raise VariableInaccessibleError(key)
    if key not in variables:
        raise VariableUndefinedError(key)
    return variables[key]


def result_(context: Any) -> Any:
    """The current task's result (a list of item results for a with-items task)."""
    return _current_task(context).get("result")


def succeeded_(context: Any) -> bool:
    """True when the current task succeeded."""
    return _current_task(context).get("status") == "succeeded"


def failed_(context: Any) -> bool:
    """True when the current task failed, timed out or was abandoned."""
    return _current_task(context).get("status") in ("failed", "timeout", "abandoned")


def completed_(context: Any) -> bool:
    """True when the current task is in any completed status."""
    return _current_task(context).get("status") in ("succeeded", "failed", "timeout", "abandoned", "canceled")


def _find(context: Any, task_id: str, route: int | None) -> Mapping[str, Any] | None:
    runtime = _runtime(context)
    if route is None and runtime.task:
        route = runtime.task.get("route")
    return runtime.find_task(task_id, route) if runtime.find_task else None


def task_status_(context: Any, task_id: str, route: int | None = None) -> str | None:
    """Status of a task on the current (or given) route; None if it never ran."""
    record = _find(context, task_id, route)
    return record.get("status") if record else None


def task_(context: Any, task_id: str | None = None, route: int | None = None) -> dict[str, Any]:
    """StackStorm's view of a task execution: ids, status, result and timestamps."""
    if task_id is None:
        current = _current_task(context)
        task_id, route = current["id"], current.get("route")
    record = _find(context, task_id, route)
    if not record:
        raise ExpressionEvaluationException(f'Unable to find task execution for "{task_id}".')
    meta = record.get("meta") or {}
    variables = _runtime(context).variables
    st2 = variables.get("st2") if isinstance(variables.get("st2"), Mapping) else {}
    return {
        "task_execution_id": meta.get("task_execution_id"),
        "workflow_execution_id": meta.get("workflow_execution_id", st2.get("workflow_execution_id")),
        "task_name": record["id"],
        "task_id": record["id"],
        "route": record.get("route", 0),
        "result": record.get("result"),
        "status": record.get("status"),
        "start_timestamp": meta.get("start_timestamp"),
        "end_timestamp": meta.get("end_timestamp"),
    }


def item_(context: Any, key: str | None = None) -> Any:
    """The current with-items item, or one named value of it."""
    item = _runtime(context).item
    if item is NO_ITEM:
        raise ExpressionEvaluationException("The current item is not set in the context.")
    if key is None:
        return item
    if not isinstance(item, Mapping):
        raise ExpressionEvaluationException("Item is not type of dict.")
    if key not in item:
        raise ExpressionEvaluationException(f'Item does not have key "{key}".')
    return item[key]


def st2kv_(context: Any, key: str, decrypt: bool = False, **kwargs: Any) -> Any:
    """A datastore value: ``system.`` reads system scope, a bare key the user's scope."""
    if not isinstance(key, str):
        raise TypeError("Given key is not typeof string.")
    if not isinstance(decrypt, bool):
        raise TypeError("Decrypt parameter is not typeof bool.")
    runtime = _runtime(context)
    if runtime.kv_lookup is None:
        raise ExpressionEvaluationException("The datastore is not available to this expression.")
    st2 = runtime.variables.get("st2") or {}
    user = st2.get("user") if isinstance(st2, Mapping) else None
    scope, name = "user", key
    if key.startswith("system."):
        scope, name = "system", key[len("system."):]
    elif not user:
        raise ExpressionEvaluationException("Could not get user from context.")
    try:
        value = runtime.kv_lookup(name, scope, user, decrypt)
    except NotFoundError as exc:
        if "default" in kwargs:
            return kwargs["default"]
        raise ExpressionEvaluationException(str(exc)) from exc
    if decrypt:
        _record_secret(runtime, value, scope, name, user)
    return value


def _record_secret(runtime: Runtime, value: Any, scope: str, name: str, user: str | None) -> None:
    """Record a decrypted value so the engine keeps it out of what it stores (expressions.secrets).

    Only an item stored encrypted reads differently without decrypt: a plain item asked for with
    decrypt is no secret, and naming it in a decrypt_kv template would fail the child.
    """
    try:
        stored = runtime.kv_lookup(name, scope, user, False)
    except NotFoundError:
        return
    if stored != value:
        secrets.record(value, scope, name, user)


def json_(value: str) -> Any:
    """Parse a JSON string."""
    return json.loads(value)


def zip_(*lists: Any, pad: Any = None) -> list[list[Any]]:
    """Zip lists into a list of lists, padding the shorter ones."""
    return [list(row) for row in itertools.zip_longest(*lists, fillvalue=pad)]


# StackStorm's helpers are the Jinja filters of parameter rendering (one implementation);
# only these two differ in workflows.

def jsonpath_query(value: Any, query: str) -> list[Any] | None:
    """Values a JSONPath query matches in value, or None when nothing matches."""
    matches = [match.value for match in jsonpath_ng.parse(query).find(value)]
    return matches or None


def use_none(value: Any) -> Any:
    """Mark a None so that rendering keeps it None instead of the text 'None'."""
    return NONE_MAGIC_VALUE if value is None else value


# Functions that read the runtime get Jinja's context as their first argument.
_CONTEXT_FUNCTIONS = {
    "ctx": ctx_, "result": result_, "succeeded": succeeded_, "failed": failed_,
    "completed": completed_, "task_status": task_status_, "task": task_, "item": item_,
    "st2kv": st2kv_,
}
_PLAIN_FUNCTIONS = {
    "json": json_, "zip": zip_,
    "basename": basename, "dirname": dirname,
    "from_json_string": from_json_string, "to_json_string": to_json_string,
    "from_yaml_string": from_yaml_string, "to_yaml_string": to_yaml_string,
    "json_dump": to_json_string, "json_parse": from_json_string, "json_escape": json_escape,
    "yaml_dump": to_yaml_string, "yaml_parse": from_yaml_string,
    "jsonpath_query": jsonpath_query,
    "regex_match": regex_match, "regex_replace": regex_replace,
    "regex_search": regex_search, "regex_substring": regex_substring,
    "to_human_time_from_seconds": to_human_time_from_seconds, "use_none": use_none,
    "version_compare": version_compare, "version_more_than": version_more_than,
    "version_less_than": version_less_than, "version_equal": version_equal,
    "version_match": version_match, "version_bump_major": version_bump_major,
    "version_bump_minor": version_bump_minor, "version_bump_patch": version_bump_patch,
    "version_strip_patch": version_strip_patch,
}

# name -> (function, takes the engine's context first)
FUNCTIONS: dict[str, tuple[Callable[..., Any], bool]] = {
    **{name: (fn, True) for name, fn in _CONTEXT_FUNCTIONS.items()},
    **{name: (fn, False) for name, fn in _PLAIN_FUNCTIONS.items()},
}


def jinja_callables() -> dict[str, Callable[..., Any]]:
    """Every function as Jinja wants it: context functions marked pass_context."""
    return {name: (jinja2.pass_context(fn) if needs_context else fn)
            for name, (fn, needs_context) in FUNCTIONS.items()}
