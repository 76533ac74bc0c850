"""The Orquesta workflow language (native spec v1): schema, then typed frozen records.

``parse(definition)`` takes the YAML text (or the loaded mapping), checks it
against ``SCHEMA`` and builds a ``WorkflowSpec``; the shorthand forms (inline
``pack.action k=v`` input, ``a=1 b=<% %>`` publish, ``do: a, b``, the ``with``
strings) are expanded here once, so nothing downstream reads the raw mapping.
Semantic checks (reserved names, unknown ``do`` targets ...) live in
inspection.py, which reports every problem; ``parse`` only refuses what it
cannot build.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

import jsonschema
import yaml

from st2common.exceptions import ValidationError

ENGINE_COMMANDS = ("continue", "fail", "noop", "retry")
_CACHE_SIZE = 256
TASK_NAME = r"^\w+$"

_ANY = {"anyOf": [{"type": t} for t in ("null", "array", "boolean", "integer", "number", "object", "string")]}
_ONE_KEY = {"type": "object", "minProperties": 1, "maxProperties": 1,
            "patternProperties": {TASK_NAME: _ANY}, "additionalProperties": False}
_ASSIGNMENTS = {"type": "array", "minItems": 1, "items": _ONE_KEY}
_EXPRESSION_OR_SECONDS = {"oneOf": [{"type": "string", "minLength": 1}, {"type": "number", "minimum": 0}]}
_ITEMS_PATTERN = r"^\s*((\w+\s*,\s*)*\w+\s+in\s+)?({{.*}}|<%.*%>)\s*$"

_TRANSITION = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "when": {"type": "string", "minLength": 1},
        "publish": {"oneOf": [{"type": "string", "minLength": 1}, _ASSIGNMENTS]},
        "do": {"oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string", "minLength": 1}},
        ]},
    },
}

_TASK = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "action": {"type": "string", "minLength": 1},
        "input": {"oneOf": [{"type": "string", "minLength": 1},
                            {"type": "object", "patternProperties": {TASK_NAME: _ANY},
                             "additionalProperties": False}]},
        "next": {"type": "array", "items": _TRANSITION},
        "join": {"oneOf": [{"enum": ["all"]}, {"type": "integer", "minimum": 1}]},
        "with": {"oneOf": [
            {"type": "string", "pattern": _ITEMS_PATTERN},
            {"type": "object", "required": ["items"], "additionalProperties": False,
             "properties": {
                 "items": {"type": "string", "pattern": _ITEMS_PATTERN},
                 "concurrency": {"oneOf": [{"type": "string", "minLength": 1},
                                           {"type": "integer", "minimum": 1}]},
             }},
        ]},
        "retry": {
            "type": "object", "required": ["count"], "additionalProperties": False,
            "properties": {
                "when": {"type": "string", "minLength": 1},
                "count": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "integer", "minimum": 0}]},
                "delay": _EXPRESSION_OR_SECONDS,
            },
        },
        "delay": _EXPRESSION_OR_SECONDS,
    },
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["version", "tasks"],
    "additionalProperties": False,
    "properties": {
        "version": {"enum": ["1.0", 1.0]},
        "description": {"type": "string"},
        "input": {"type": "array", "minItems": 1, "items": {
            "oneOf": [{"type": "string", "pattern": TASK_NAME}, _ONE_KEY]}},
        "vars": _ASSIGNMENTS,
        "tasks": {"type": "object", "minProperties": 1,
                  "patternProperties": {TASK_NAME: _TASK}, "additionalProperties": False},
        "output": _ASSIGNMENTS,
    },
}

# name=value pairs: an expression, a quoted string, a JSON list/dict, or a bare token.
_INLINE_PAIR = re.compile(
    r"""(\w+)=(<%.*?%>|{{.*?}}|"(?:[^"\\]|\\.)*"|'[^']*'|\[.*?\]|\{.*?\}|[^\s,;]+)""", re.DOTALL)
_SEPARATORS = re.compile(r"^[\s,;]*$")
_LEADING_EXPRESSION = re.compile(r"^\s*(<%.*?%>|{{.*?}})", re.DOTALL)
_WITH = re.compile(r"^\s*(?:(?P<names>\w+(?:\s*,\s*\w+)*)\s+in\s+)?(?P<items>{{.*}}|<%.*%>)\s*$", re.DOTALL)


class WorkflowInspectionError(ValidationError):
    """The definition failed inspection; ``errors`` maps each category to its problems."""

    def __init__(self, errors: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__("Workflow definition failed inspection.")
        self.errors = errors


@dataclass(frozen=True)
class InputSpec:
    """A workflow input: a name, and a default (which may be an expression)."""

    name: str
    default: Any = None
    has_default: bool = False


@dataclass(frozen=True)
class TransitionSpec:
    """One entry of a task's ``next``: when, publish (ordered pairs), do (tasks or commands)."""

    index: int
    when: str | None
    publish: tuple[tuple[str, Any], ...]
    do: tuple[str, ...]


@dataclass(frozen=True)
class ItemsSpec:
    """A task's ``with``: the items expression, the item names, the concurrency."""

    items: str
    names: tuple[str, ...]
    concurrency: int | str | None


@dataclass(frozen=True)
class RetrySpec:
    """A task's ``retry``: how many times, on what condition, after how long."""

    count: int | str
    when: str | None
    delay: int | float | str | None


@dataclass(frozen=True)
class TaskSpec:
    """One task, shorthand expanded: ``inline_input`` holds the ``pack.action k=v`` pairs."""

    name: str
    action: str | None
    input: dict[str, Any] | str | None
    inline_input: tuple[tuple[str, Any], ...]
    next: tuple[TransitionSpec, ...]
    join: str | int | None
    with_items: ItemsSpec | None
    retry: RetrySpec | None
    delay: int | float | str | None

    @property
    def is_join(self) -> bool:
        """True when the task is a barrier for its inbound transitions."""
        return self.join is not None


@dataclass(frozen=True, eq=False)
class WorkflowSpec:
    """A whole workflow; ``definition`` keeps the mapping it was built from (for serialising).

    Compared and hashed by identity: parse() hands out one instance per definition.
    """

    version: str
    description: str | None
    input: tuple[InputSpec, ...]
    vars: tuple[tuple[str, Any], ...]
    tasks: dict[str, TaskSpec]
    output: tuple[tuple[str, Any], ...]
    definition: dict[str, Any]

    def task(self, name: str) -> TaskSpec:
        """The task named name (KeyError if there is none)."""
        return self.tasks[name]


def load(definition: str | dict[str, Any]) -> dict[str, Any]:
    """The definition as a mapping: YAML text is parsed, a mapping is taken as is."""
    if isinstance(definition, (str, bytes)):
        try:
            definition = yaml.safe_load(definition)
        except yaml.YAMLError as exc:
            raise WorkflowInspectionError({"syntax": [{
                "type": "syntax", "message": f"Unable to parse the workflow definition as YAML: {exc}",
                "spec_path": None, "schema_path": None}]}) from exc
    if not isinstance(definition, dict):
        raise WorkflowInspectionError({"syntax": [{
            "type": "syntax", "message": "The workflow definition is not a mapping.",
            "spec_path": None, "schema_path": None}]})
    return definition


def spec_path(parts: Iterable[Any]) -> str:
    """A path into the definition as orquesta writes it: tasks.task1.next[0].do"""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def syntax_errors(definition: dict[str, Any]) -> list[dict[str, Any]]:
    """Every JSON-schema violation of the definition, as inspection entries."""
    validator = jsonschema.Draft7Validator(SCHEMA)
    errors = []
    for error in validator.iter_errors(definition):
        errors.append({
            "type": "syntax",
            "message": error.message,
            "spec_path": spec_path(error.absolute_path) or None,
            "schema_path": ".".join(str(p) for p in error.absolute_schema_path),
        })
    return sorted(errors, key=lambda e: (e["spec_path"] or "", e["schema_path"]))


def _inline_value(raw: str) -> Any:
    if raw.startswith(("<%", "{{")):
        return raw
    if raw.startswith("'") and raw.endswith("'") and len(raw) > 1:
        return raw[1:-1]
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_inline(text: str) -> tuple[tuple[tuple[str, Any], ...], str]:
    """``k=v k2="x y", k3=<% e %>`` as ordered pairs, plus any text that is not a pair."""
    pairs = tuple((m.group(1), _inline_value(m.group(2))) for m in _INLINE_PAIR.finditer(text))
    leftover = _INLINE_PAIR.sub(" ", text)
    return pairs, ("" if _SEPARATORS.match(leftover) else leftover.strip())


def split_action(action: str) -> tuple[str, str]:
    """(action ref or expression, inline parameter text) of a task's ``action``."""
    match = _LEADING_EXPRESSION.match(action)
    if match:
        return match.group(1), action[match.end():].strip()
    head, _, rest = action.strip().partition(" ")
    return head, rest.strip()


def parse_with(text: str) -> tuple[tuple[str, ...], str] | None:
    """(item names, items expression) of a ``with`` string, None when it does not parse."""
    match = _WITH.match(text)
    if match is None:
        return None
    names = tuple(n.strip() for n in (match.group("names") or "").split(",") if n.strip())
    return names, match.group("items").strip()


def parse_do(do: str | list[str] | None) -> tuple[str, ...]:
    """Task names and engine commands of a transition's ``do`` (comma-separated allowed)."""
    if do is None:
        return ()
    entries = [do] if isinstance(do, str) else list(do)
    return tuple(name.strip() for entry in entries for name in entry.split(",") if name.strip())


def _assignments(items: list[dict[str, Any]] | None) -> tuple[tuple[str, Any], ...]:
    return tuple(next(iter(item.items())) for item in (items or []))


def _transition(index: int, raw: dict[str, Any]) -> TransitionSpec:
    publish = raw.get("publish")
    pairs = parse_inline(publish)[0] if isinstance(publish, str) else _assignments(publish)
    return TransitionSpec(index=index, when=raw.get("when"), publish=pairs, do=parse_do(raw.get("do")))


def _task(name: str, raw: dict[str, Any]) -> TaskSpec:
    action, inline = raw.get("action"), ()
    if action is not None:
        action, rest = split_action(action)
        inline = parse_inline(rest)[0] if rest else ()
    with_items = None
    if "with" in raw:
        with_raw = raw["with"] if isinstance(raw["with"], dict) else {"items": raw["with"]}
        names, items = parse_with(with_raw["items"])
        with_items = ItemsSpec(items=items, names=names, concurrency=with_raw.get("concurrency"))
    retry = None
    if "retry" in raw:
        retry = RetrySpec(count=raw["retry"]["count"], when=raw["retry"].get("when"),
                          delay=raw["retry"].get("delay"))
    return TaskSpec(
        name=name, action=action, input=raw.get("input"), inline_input=inline,
        next=tuple(_transition(i, t) for i, t in enumerate(raw.get("next") or [])),
        join=raw.get("join"), with_items=with_items, retry=retry, delay=raw.get("delay"),
    )


def _input(item: str | dict[str, Any]) -> InputSpec:
    if isinstance(item, str):
        return InputSpec(name=item)
    name, default = next(iter(item.items()))
    return InputSpec(name=name, default=default, has_default=True)


def parse(definition: str | dict[str, Any]) -> WorkflowSpec:
    """Build the typed spec; WorkflowInspectionError lists the syntax errors if any.

    Specs are immutable, so one is built per distinct definition and shared: the
    service rebuilds a conductor on every event, and schema validation dominates.
    """
    raw = load(definition)
    return _parse_cached(json.dumps(raw, sort_keys=True, default=str))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse_cached(text: str) -> WorkflowSpec:
    raw = json.loads(text)
    errors = syntax_errors(raw)
    if errors:
        raise WorkflowInspectionError({"syntax": errors})
    return WorkflowSpec(
        version=str(raw["version"]),
        description=raw.get("description"),
        input=tuple(_input(item) for item in raw.get("input") or []),
        vars=_assignments(raw.get("vars")),
        tasks={name: _task(name, task or {}) for name, task in raw["tasks"].items()},
        output=_assignments(raw.get("output")),
        definition=raw,
    )
