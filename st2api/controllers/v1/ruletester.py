"""The rule tester behind ``POST /rules/test`` (StackStorm's st2-rule-tester, as an API call).

Body: the rule, inline (``rule``: a rule document, as a file holds it or GET
/rules shows it) or stored (``rule_ref``: a ref or id); and what to test it
against: ``trigger_instance_id`` (a stored instance), ``trigger_instance``
(``{trigger?, payload}``; the trigger defaults to the rule's) or ``payload``
(a payload of the rule's trigger). Exactly one of each pair.

Answer (200): ``matched`` (the rules engine would request the action),
``reason``, ``error`` (a criterion or a parameter that could not be
evaluated), ``criteria`` (one entry per criterion, all evaluated:
``key, type, pattern, rendered, value, matched, evaluated, error?,
explanation``), ``action`` (``ref`` and the rendered ``parameters``, secret
ones masked), ``rule`` and ``trigger_instance``. Nothing is stored or run,
and a disabled rule is tested as if it were enabled (``rule.enabled`` says
which it is). Templates see ``trigger`` and ``st2kv``, as in the rules engine. As in StackStorm's tester, parameters that fail to render make
the answer a non-match.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from st2common import matcher
from st2common.exceptions import NotFoundError, ValidationError
from st2common.models.api import rule as rule_api
from st2common.models.api import trigger as trigger_api
from st2common.models.api.base import mask_parameters, validate
from st2common.models.db.rule import RuleDB
from st2common.models.db.trigger import TriggerDB, TriggerInstanceDB, TriggerTypeDB
from st2common.persistence.access import Access, to_object_id

TEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rule": {"type": "object"},
        "rule_ref": {"type": "string", "minLength": 1},
        "trigger_instance_id": {"type": "string", "minLength": 1},
        "trigger_instance": {
            "type": "object",
            "properties": {"trigger": {"type": "string"}, "payload": {"type": ["object", "null"]}},
            "required": ["payload"],
        },
        "payload": {"type": "object"},
    },
    "additionalProperties": False,
}


def run(body: Any, validate_trigger_parameters: bool, mask_secrets: bool) -> dict[str, Any]:
    """Evaluate the body's rule against its trigger instance; the tester's answer."""
    body = validate(TEST_SCHEMA, body)
    _exactly_one(body, ("rule", "rule_ref"))
    _exactly_one(body, ("trigger_instance_id", "trigger_instance", "payload"))
    data, stored = _rule(body, validate_trigger_parameters)
    rule = matcher.Rule.from_dict(data)
    instance, shown = _instance(body, rule)
    # The question is "would it fire", so a rule not enabled yet is tested as enabled.
    outcome = matcher.evaluate(dataclasses.replace(rule, enabled=True), instance, explain_all=True)
    schemas = rule_api.ActionSchemas()
    answer: dict[str, Any] = {
        "matched": outcome.matched,
        "reason": outcome.reason,
        "rule": {"ref": rule.ref, "id": str(stored.pk) if stored is not None else None,
                 "enabled": bool(data.get("enabled", False))},
        "trigger_instance": shown,
        "criteria": [_criterion(result) for result in outcome.criteria],
        "action": {"ref": rule.action_ref},
    }
    if outcome.error:
        answer["error"] = outcome.error
    rendered = matcher.render_action_parameters(rule.action_parameters, instance.payload)
    if rendered.error:
        answer["action"]["error"] = rendered.error
        if outcome.matched:
            answer.update(matched=False, reason="the action parameters cannot be rendered", error=rendered.error)
    else:
        parameters = rendered.values or {}
        schema = schemas.of(rule.action_ref) if mask_secrets else None
        answer["action"]["parameters"] = mask_parameters(parameters, schema) if schema else parameters
    return answer


def _exactly_one(body: Mapping[str, Any], names: tuple[str, ...]) -> None:
    given = [name for name in names if body.get(name) is not None]
    if len(given) != 1:
        raise ValidationError(f'give exactly one of {", ".join(names)} (got {", ".join(given) or "none"})',
                              field=names[0])


def _rule(body: Mapping[str, Any], validate_trigger_parameters: bool) -> tuple[dict[str, Any], RuleDB | None]:
    """The rule as matcher data (criteria checked, references resolved), and the stored rule if it is one."""
    access = Access(RuleDB)
    if body.get("rule_ref"):
        value = body["rule_ref"]
        stored = access.get(ref=value) if "." in value else None
        if stored is None and to_object_id(value) is not None:
            stored = access.get(id=to_object_id(value))
        if stored is None:
            raise NotFoundError("rule", value, f'Resource with a reference or id "{value}" not found')
        data = {"ref": stored.ref, "id": str(stored.pk), "enabled": stored.enabled,
                "trigger": dict(stored.trigger or {}), "criteria": dict(stored.criteria or {}),
                "action": dict(stored.action or {}), "type": dict(stored.type or {})}
        return data, stored
    given = rule_api.validate_body(dict(body["rule"]))
    given.setdefault("pack", rule_api.DEFAULT_PACK)
    stored = _stored_rule(access, given)
    if stored is not None:
        # A stored rule sent back as GET showed it carries masked secrets: test with the real values.
        rule_api.restore_masked_parameters(given, stored, rule_api.ActionSchemas().of(rule_api.action_ref(stored)))
    spec = rule_api.resolve(given, validate_trigger_parameters)
    data = {"ref": spec.ref, "enabled": spec.enabled,
            "trigger": {"type": spec.trigger_type.ref, "parameters": spec.trigger_parameters},
            "criteria": spec.criteria, "action": {"ref": spec.action_ref, "parameters": spec.action_parameters},
            "type": {"ref": spec.type_ref, "parameters": spec.type_parameters}}
    return data, stored


def _stored_rule(access: Access, given: Mapping[str, Any]) -> RuleDB | None:
    oid = to_object_id(given.get("id")) if given.get("id") else None
    if oid is not None:
        found = access.get(id=oid)
        if found is not None:
            return found
    return access.get(ref=f'{given["pack"]}.{given["name"]}')


def _instance(body: Mapping[str, Any], rule: matcher.Rule) -> tuple[matcher.TriggerInstance, dict[str, Any]]:
    """The trigger instance to test against, and how the answer shows it."""
    if body.get("trigger_instance_id"):
        value = body["trigger_instance_id"]
        oid = to_object_id(value)
        doc = Access(TriggerInstanceDB).get(id=oid) if oid is not None else None
        if doc is None:
            raise NotFoundError("trigger_instance", value, f'Unable to identify resource with id "{value}".')
        trigger_type, parameters = _trigger(doc.trigger)
        shown = trigger_api.trigger_instance_to_api(doc)
        instance = matcher.TriggerInstance(trigger_type, dict(doc.payload or {}), parameters, doc.trigger, str(doc.pk))
        return instance, shown
    given = body.get("trigger_instance") or {"payload": body.get("payload")}
    payload = dict(given.get("payload") or {})
    if given.get("trigger"):
        trigger_type, parameters = _trigger(given["trigger"])
        ref = given["trigger"]
    else:
        trigger_type, parameters, ref = rule.trigger_type, dict(rule.trigger_parameters), rule.trigger_ref
    shown = {"trigger": ref or trigger_type, "payload": payload}
    return matcher.TriggerInstance(trigger_type, payload, parameters, ref), shown


def _trigger(ref: str) -> tuple[str, dict[str, Any]]:
    """(type ref, parameters) of a trigger ref; a parameter-less trigger type's ref counts as its trigger."""
    trigger = Access(TriggerDB).get(ref=ref)
    if trigger is not None:
        return trigger.type, dict(trigger.parameters or {})
    if Access(TriggerTypeDB).get(ref=ref) is not None:
        return ref, {}
    raise ValidationError(f'trigger "{ref}" is not registered', field="trigger_instance.trigger")


def _criterion(result: matcher.CriterionResult) -> dict[str, Any]:
    item = {"key": result.key, "type": result.operator, "pattern": result.pattern, "rendered": result.rendered,
            "value": result.value, "matched": result.matched, "evaluated": result.evaluated,
            "explanation": result.explain()}
    if result.error:
        item["error"] = result.error
    return item
