"""Rule matching, pure: which rules a trigger instance fires, why each criterion held or not, and
the action parameters a match renders.

A rule applies to a trigger instance when it is enabled, names the same
trigger (type and parameters) and every criterion holds, checked in order and
stopping at the first miss. Backstop rules are tried only when no standard
rule matched. As in StackStorm (st2reactor/rules/filter.py):

- a rule with criteria never matches an empty payload;
- a criterion reads one value from ``{"trigger": payload, **context}`` by its
  path (the first match; None when nothing is there);
- a string pattern is rendered with Jinja first; ``{{ trigger.count }}`` keeps
  its number or list type;
- a pattern that cannot be rendered, or a comparison that cannot be made,
  means no match *and* an error, which the enforcer records as a failed
  rule enforcement.

``context`` carries the lookups the caller provides (``st2kv``, ``system``);
nothing here reads the database or the clock, except the timediff operators.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2

from st2common import masking, operators, templating
from st2common.exceptions import StackStormBaseException, ValidationError
from st2common.models.db.rule import RULE_TYPE_BACKSTOP, RULE_TYPE_STANDARD
from st2common.models.db.trigger import parameters_hash
from st2common.operators import Criterion
from st2common.services.triggertypes import normalize_parameters

TRIGGER = "trigger"
ITEM = "item"


@dataclass(frozen=True)
class Rule:
    """What matching needs of a rule, parsed once (criteria validated)."""

    ref: str
    trigger_type: str
    trigger_parameters: Mapping[str, Any] = field(default_factory=dict)
    trigger_ref: str | None = None
    criteria: tuple[Criterion, ...] = ()
    action_ref: str = ""
    action_parameters: Mapping[str, Any] = field(default_factory=dict)
    enabled: bool = False
    rule_type: str = RULE_TYPE_STANDARD
    id: str | None = None
    uid: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Rule":
        """A Rule from the API / YAML shape (``trigger``, ``criteria``, ``action``, ``type`` ...)."""
        trigger = data.get("trigger") or {}
        action = data.get("action") or {}
        ref = data.get("ref") or f'{data.get("pack") or "default"}.{data.get("name")}'
        return cls(
            ref=ref,
            trigger_type=trigger.get("type") or "",
            trigger_parameters=dict(trigger.get("parameters") or {}),
            trigger_ref=trigger.get("ref"),
            criteria=operators.parse_criteria(data.get("criteria")),
            action_ref=action.get("ref") or "",
            action_parameters=dict(action.get("parameters") or {}),
            enabled=bool(data.get("enabled", False)),
            rule_type=(data.get("type") or {}).get("ref") or RULE_TYPE_STANDARD,
            id=str(data["id"]) if data.get("id") else None,
            uid=data.get("uid"),
        )

    @classmethod
    def from_db(cls, doc: Any) -> "Rule":
        """A Rule from a stored RuleDB."""
        return cls.from_dict({
            "ref": doc.ref, "id": str(doc.pk) if doc.pk else None, "uid": doc.uid,
            "trigger": dict(doc.trigger or {}), "criteria": dict(doc.criteria or {}),
            "action": dict(doc.action or {}), "enabled": doc.enabled, "type": dict(doc.type or {}),
        })

    @functools.cached_property
    def trigger_key(self) -> str:
        """Hash of the trigger parameters, as triggers are stored."""
        return parameters_hash(normalize_parameters(self.trigger_type, self.trigger_parameters))


@dataclass(frozen=True)
class TriggerInstance:
    """One occurrence to match: the trigger it is of (type, parameters, ref) and its payload."""

    trigger_type: str
    payload: Mapping[str, Any] | None
    trigger_parameters: Mapping[str, Any] = field(default_factory=dict)
    trigger_ref: str | None = None
    id: str | None = None

    @functools.cached_property
    def trigger_key(self) -> str:
        """Hash of the trigger parameters, as triggers are stored."""
        return parameters_hash(normalize_parameters(self.trigger_type, self.trigger_parameters))


@dataclass(frozen=True)
class CriterionResult:
    """How one criterion went: the value found, the rendered pattern, and the verdict (or the error)."""

    key: str
    operator: str
    pattern: Any
    rendered: Any = None
    value: Any = None
    matched: bool = False
    error: str | None = None
    evaluated: bool = True

    def explain(self) -> str:
        """One line for the rule tester."""
        head = f"{self.key} {self.operator} {self.rendered!r}"
        if not self.evaluated:
            return f"{head}: not evaluated (an earlier criterion did not match)"
        if self.error:
            return f"{head}: error: {self.error}"
        return f"{head}: payload value {self.value!r} {'matches' if self.matched else 'does not match'}"


@dataclass(frozen=True)
class Match:
    """One rule against one trigger instance: matched or not, why, and each criterion's result."""

    rule: Rule
    matched: bool
    reason: str
    criteria: tuple[CriterionResult, ...] = ()
    # Evaluating failed (render or comparison error): StackStorm records a failed enforcement.
    error: str | None = None


@dataclass(frozen=True)
class Matches:
    """The outcome for one trigger instance: the rules to enforce, and the rules that failed to evaluate."""

    matched: tuple[Match, ...]
    failed: tuple[Match, ...]


def same_trigger(rule: Rule, instance: TriggerInstance) -> bool:
    """True when the rule listens to the instance's trigger (type and parameters)."""
    if rule.trigger_type != instance.trigger_type:
        return False
    if rule.trigger_ref and instance.trigger_ref and rule.trigger_ref == instance.trigger_ref:
        return True
    return rule.trigger_key == instance.trigger_key


def lookup(path: tuple[Any, ...], scope: Any) -> Any:
    """The first value at path in scope, or None (parsed criterion paths, see operators.parse_path)."""
    node = scope
    for position, step in enumerate(path):
        # Fast path for the common case: field names through plain dicts.
        if type(node) is dict and type(step) is str:
            if step not in node:
                return None
            node = node[step]
            continue
        return next(_find(path[position:], node), None)
    return node


def _find(path: tuple[Any, ...], node: Any) -> Iterator[Any]:
    if not path:
        yield node
        return
    step, rest = path[0], path[1:]
    if step is operators.WILDCARD:
        children: Iterable[Any] = ()
        if isinstance(node, Mapping):
            children = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        for child in children:
            yield from _find(rest, child)
        return
    if isinstance(node, (list, tuple)):
        # "items.0" as well as JSONPath's "items[0]": both mean the first item to a rule author.
        index = step if isinstance(step, int) else int(step) if step.lstrip("-").isdigit() else None
        if index is not None and -len(node) <= index < len(node):
            yield from _find(rest, node[index])
        return
    if isinstance(node, Mapping):
        if step in node:
            yield from _find(rest, node[step])
        return
    if node is None or isinstance(node, (str, bytes, int, float, bool)):
        return
    # A lookup object from the context (a datastore scope) that answers item access.
    try:
        value = node[step]
    except (KeyError, IndexError, TypeError):
        return
    yield from _find(rest, value)


def _render_native(text: str, scope: Mapping[str, Any]) -> Any:
    """A template's value: a lone ``{{ expr }}`` keeps its type, anything else is text."""
    rendered = templating.render_value(text, scope, native=True)
    if isinstance(rendered, jinja2.Undefined):
        # A lone missing name comes back as a strict Undefined that fails only when used.
        try:
            str(rendered)
        except jinja2.UndefinedError as exc:
            raise ValidationError(f"undefined variable: {exc.message}") from None
    return rendered


def render_pattern(pattern: Any, scope: Mapping[str, Any]) -> Any:
    """A criterion pattern with its templates rendered; a lone ``{{ expr }}`` keeps its value's type."""
    if not isinstance(pattern, str) or not templating.is_template(pattern):
        return pattern
    return _render_native(pattern, scope)


def _rendered(pattern: Any, scope: Mapping[str, Any], cache: dict | None) -> Any:
    """render_pattern, remembered for one scope: rules of one trigger often share patterns."""
    if cache is None or not isinstance(pattern, str) or not templating.is_template(pattern):
        return render_pattern(pattern, scope)
    if pattern not in cache:
        try:
            cache[pattern] = (True, render_pattern(pattern, scope))
        except StackStormBaseException as exc:
            cache[pattern] = (False, exc)
    ok, value = cache[pattern]
    if not ok:
        raise value
    return value


def _check(criterion: Criterion, scope: Mapping[str, Any], cache: dict | None = None) -> CriterionResult:
    result = {"key": criterion.key, "operator": criterion.operator, "pattern": criterion.pattern}
    if criterion.operator == operators.SEARCH:
        return _check_search(criterion, scope, result)
    try:
        rendered = _rendered(criterion.pattern, scope, cache)
    except StackStormBaseException as exc:
        return CriterionResult(**result, rendered=criterion.pattern, matched=False,
                               error=f'failed to render pattern value "{criterion.pattern}" for key '
                                     f'"{criterion.key}": {exc}')
    value = None
    try:
        value = lookup(criterion.path, scope)
        matched = operators.apply(criterion.operator, value, rendered)
    except StackStormBaseException as exc:
        return CriterionResult(**result, rendered=rendered, value=value, matched=False, error=str(exc))
    return CriterionResult(**result, rendered=rendered, value=value, matched=matched)


def _check_search(criterion: Criterion, scope: Mapping[str, Any], result: dict) -> CriterionResult:
    value = lookup(criterion.path, scope)
    errors: list[str] = []

    def check(item: Any, child: Criterion) -> bool:
        # StackStorm renders child patterns with only "item" in scope; "trigger"
        # stays visible too, since a child pattern can only fail without it.
        outcome = _check(child, {**scope, ITEM: item})
        if outcome.error:
            errors.append(outcome.error)
        return outcome.matched

    try:
        matched = operators.search(value, criterion.children, criterion.condition, check)
    except StackStormBaseException as exc:
        errors.append(str(exc))
        matched = False
    error = errors[0] if errors else None
    return CriterionResult(**result, rendered=criterion.pattern, value=value, matched=matched and not error,
                           error=error)


def _scope(instance: TriggerInstance, context: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**(context or {}), TRIGGER: instance.payload}


def evaluate(rule: Rule, instance: TriggerInstance, context: Mapping[str, Any] | None = None,
             explain_all: bool = False) -> Match:
    """One rule against one instance (backstop ordering aside); explain_all evaluates every criterion."""
    return _evaluate(rule, instance, _scope(instance, context), None, explain_all)


def _evaluate(rule: Rule, instance: TriggerInstance, scope: dict[str, Any], cache: dict | None,
              explain_all: bool = False) -> Match:
    if not rule.enabled:
        return Match(rule, False, "the rule is disabled")
    if not same_trigger(rule, instance):
        return Match(rule, False, f"the rule listens to another trigger ({rule.trigger_ref or rule.trigger_type})")
    if not rule.criteria:
        return Match(rule, True, "the trigger matches and the rule has no criteria")
    if not instance.payload:
        return Match(rule, False, "the rule has criteria and the payload is empty")
    results: list[CriterionResult] = []
    failed: CriterionResult | None = None
    for criterion in rule.criteria:
        if failed is not None and not explain_all:
            results.append(CriterionResult(criterion.key, criterion.operator, criterion.pattern,
                                           rendered=criterion.pattern, evaluated=False))
            continue
        outcome = _check(criterion, scope, cache)
        results.append(outcome)
        if failed is None and (outcome.error or not outcome.matched):
            failed = outcome
    if failed is None:
        return Match(rule, True, "every criterion matches", tuple(results))
    if failed.error:
        return Match(rule, False, f"criterion {failed.key} could not be evaluated", tuple(results),
                     error=f"Failed to match rule {rule.ref}: {failed.error}")
    return Match(rule, False, f"criterion {failed.key} does not match", tuple(results))


def _may_fire(rule: Rule, instance: TriggerInstance, scope: dict[str, Any], cache: dict) -> bool:
    """False when _evaluate would find a plain miss; True when it would find a match or an error.

    The same checks in the same order, without recording each criterion's
    result: an instance meets most rules of its trigger type only to miss
    them, and only matches and errors need the details.
    """
    if not rule.enabled or not same_trigger(rule, instance):
        return False
    if not rule.criteria:
        return True
    if not instance.payload:
        return False
    for criterion in rule.criteria:
        if criterion.operator == operators.SEARCH:
            return True
        try:
            rendered = _rendered(criterion.pattern, scope, cache)
            if not operators.OPERATORS[criterion.operator](lookup(criterion.path, scope), rendered):
                return False
        except Exception:  # whatever it was, _evaluate meets it again and says what it means
            return True
    return True


def match(rules: Iterable[Rule], instance: TriggerInstance, context: Mapping[str, Any] | None = None) -> Matches:
    """The rules to enforce for an instance (standard ones, else backstop ones), and those that errored."""
    standard: list[Rule] = []
    backstop: list[Rule] = []
    for rule in rules:
        (backstop if rule.rule_type == RULE_TYPE_BACKSTOP else standard).append(rule)
    matched: list[Match] = []
    failed: list[Match] = []
    scope = _scope(instance, context)
    cache: dict[str, Any] = {}
    for group in (standard, backstop):
        if group is backstop and matched:
            break
        for rule in group:
            if not _may_fire(rule, instance, scope, cache):
                continue
            outcome = _evaluate(rule, instance, scope, cache)
            if outcome.matched:
                matched.append(outcome)
            elif outcome.error:
                failed.append(outcome)
    return Matches(tuple(matched), tuple(failed))


# -- action parameters ------------------------------------------------------------------------

@dataclass(frozen=True)
class RenderedParameters:
    """A rule's action parameters rendered from a payload, or why they could not be."""

    values: dict[str, Any] | None
    error: str | None = None


def _render_parameter(value: Any, scope: Mapping[str, Any]) -> Any:
    if isinstance(value, Mapping):
        return {key: _render_parameter(item, scope) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_render_parameter(item, scope) for item in value]
    if not templating.is_template(value):
        return value
    rendered = _render_native(value, scope)
    # StackStorm renders to text and the action's parameter types cast it back.
    # A list, dict or null keeps its value (text would be a Python repr or
    # "None"); anything else becomes text, so a string parameter still gets one.
    if rendered is None or isinstance(rendered, (Mapping, list, tuple, str)):
        return rendered
    return str(rendered)


def render_action_parameters(parameters: Mapping[str, Any] | None, payload: Mapping[str, Any] | None,
                             context: Mapping[str, Any] | None = None) -> RenderedParameters:
    """Render ``{{ trigger.x }}`` (and the context's lookups) in a rule's action parameters.

    A value that decrypts a datastore item is passed on as a template: the action
    runner renders it (with the trigger instance's payload), so the clear value is
    never stored in the execution.
    """
    scope = {**(context or {}), TRIGGER: dict(payload or {})}
    values: dict[str, Any] = {}
    for name, value in (parameters or {}).items():
        if masking.decrypts(value):
            values[name] = value
            continue
        try:
            values[name] = _render_parameter(value, scope)
        except StackStormBaseException as exc:
            return RenderedParameters(None, f'failed to render parameter "{name}": {exc}')
    return RenderedParameters(values)
