"""The Rule and RuleType shapes: RuleDB out as StackStorm's RuleAPI, and create/update bodies in.

A rule body is validated with the same schema and reference checks as a rule
file (st2common/content/rules.py): an unknown trigger type, action or rule
type, trigger parameters that do not fit the type, or an unknown criteria
operator is a ValidationError naming the field. Secret action parameters
(per the referenced action's and runner's schemas) are masked on the way out;
a masked value sent back (the CLI's enable/disable PUTs the GET body) keeps
the stored value.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from st2common.content import schemas
from st2common.content.rules import RULE_SCHEMA, References, RuleSpec, resolve_rule
from st2common.exceptions import ContentError, ValidationError
from st2common.models.api.base import MASKED, document_dict, mask_parameters, merged_parameter_schema
from st2common.models.db.action import ActionDB
from st2common.models.db.rule import RuleDB, RuleTypeDB
from st2common.models.db.runner import RunnerTypeDB
from st2common.models.db.trigger import TriggerDB
from st2common.persistence.access import Access

DEFAULT_PACK = "default"

FIELDS = ("uid", "ref", "name", "pack", "description", "enabled", "trigger", "criteria", "action", "type",
          "tags", "context", "metadata_file")
RULE_TYPE_FIELDS = ("name", "description", "enabled", "parameters")


def to_api(rule: RuleDB, secret_schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """rule as the API shows it; action parameters masked per secret_schema (None: nothing is secret)."""
    data = document_dict(rule, FIELDS)
    if "action" in data:
        action = dict(data["action"])
        action.setdefault("parameters", {})
        if secret_schema:
            action["parameters"] = mask_parameters(action["parameters"], dict(secret_schema))
        data["action"] = action
    if "trigger" in data:
        trigger = dict(data["trigger"])
        trigger.setdefault("parameters", {})
        data["trigger"] = trigger
    for name, empty in (("criteria", {}), ("tags", []), ("context", {})):
        data.setdefault(name, empty)
    return data


def rule_type_to_api(rule_type: RuleTypeDB) -> dict[str, Any]:
    """A rule type as GET /ruletypes shows it."""
    data = document_dict(rule_type, RULE_TYPE_FIELDS)
    data.setdefault("parameters", {})
    return data


class ActionSchemas:
    """The merged (runner + action) parameter schemas of actions, read once per request."""

    def __init__(self) -> None:
        self._schemas: dict[str, dict[str, Any] | None] = {}

    def load(self, refs: set[str]) -> None:
        """Read the schemas of every ref not read yet, in two queries."""
        missing = sorted(ref for ref in refs if ref and ref not in self._schemas)
        if not missing:
            return
        actions = Access(ActionDB).query(raw={"ref": {"$in": missing}}, only=("ref", "parameters", "runner_type"))
        names = sorted({(a.runner_type or {}).get("name") for a in actions} - {None})
        runners = {r.name: r for r in Access(RunnerTypeDB).query(raw={"name": {"$in": names}},
                                                                   only=("name", "runner_parameters"))} if names else {}
        for ref in missing:
            self._schemas[ref] = None
        for action in actions:
            runner = runners.get((action.runner_type or {}).get("name"))
            runner_parameters = dict(runner.runner_parameters or {}) if runner is not None else {}
            self._schemas[action.ref] = merged_parameter_schema(runner_parameters, dict(action.parameters or {}))

    def of(self, ref: str | None) -> dict[str, Any] | None:
        """The merged schema of an action (None when it is not registered)."""
        if not ref:
            return None
        self.load({ref})
        return self._schemas.get(ref)


def action_ref(rule: RuleDB) -> str | None:
    """The ref of the action a stored rule runs."""
    return (rule.action or {}).get("ref") if rule.action is not None else None


# -- bodies ----------------------------------------------------------------------------------------


def validate_body(body: Any) -> dict[str, Any]:
    """A rule create/update body checked against StackStorm's Rule schema (the rule file schema)."""
    if not isinstance(body, dict):
        raise ValidationError("Input body needs to be an object")
    try:
        schemas.validate(RULE_SCHEMA, body)
    except ContentError as exc:
        raise ValidationError(exc.reason, field=exc.field) from None
    return body


def resolve(body: Mapping[str, Any], validate_trigger_parameters: bool) -> RuleSpec:
    """The rule's references checked (trigger type, parameters, criteria, action, rule type)."""
    return resolve_rule(body, body.get("pack") or DEFAULT_PACK, References(), validate_trigger_parameters,
                        body.get("metadata_file"))


def restore_masked_parameters(body: dict[str, Any], stored: RuleDB | None, schema: Mapping[str, Any] | None) -> None:
    """Put the stored value back wherever a secret action parameter arrives as the mask (in place)."""
    if stored is None or not schema:
        return
    action = body.get("action") or {}
    if action.get("ref") != action_ref(stored):
        return
    new = action.get("parameters")
    old = dict((stored.action or {}).get("parameters") or {})
    if not isinstance(new, dict) or not old:
        return
    masked_old = mask_parameters(old, dict(schema))
    restored = dict(new)
    for name, value in new.items():
        if name in old and _holds_mask(value):
            restored[name] = _unmask(value, masked_old.get(name), old[name])
    body["action"] = dict(body["action"], parameters=restored)


def _holds_mask(value: Any) -> bool:
    if value == MASKED:
        return True
    if isinstance(value, dict):
        return any(_holds_mask(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_mask(v) for v in value)
    return False


def _unmask(value: Any, masked: Any, original: Any) -> Any:
    """value with every mask that stands where the stored value was masked replaced by the stored value."""
    if value == MASKED and masked == MASKED:
        return copy.deepcopy(original)
    if isinstance(value, dict) and isinstance(masked, dict) and isinstance(original, dict):
        return {k: _unmask(v, masked.get(k), original.get(k)) if k in original else v for k, v in value.items()}
    if isinstance(value, list) and isinstance(masked, list) and isinstance(original, list) \
            and len(value) == len(original):
        return [_unmask(v, m, o) for v, m, o in zip(value, masked, original)]
    return value


def apply_spec(spec: RuleSpec, trigger: TriggerDB, rule: RuleDB | None = None) -> RuleDB:
    """A new RuleDB from a resolved spec, or rule rewritten from it (a PUT is the whole rule)."""
    rule = rule if rule is not None else RuleDB()
    rule.name = spec.name
    rule.pack = spec.pack
    rule.description = spec.description
    rule.enabled = spec.enabled
    rule.trigger = {"type": spec.trigger_type.ref, "parameters": spec.trigger_parameters, "ref": trigger.ref}
    rule.criteria = spec.criteria
    rule.action = {"ref": spec.action_ref, "parameters": spec.action_parameters}
    rule.type = {"ref": spec.type_ref, "parameters": spec.type_parameters}
    rule.context = spec.context
    rule.tags = list(spec.tags)
    rule.metadata_file = spec.metadata_file
    rule.set_identity()
    return rule


def add_view_properties(items: list[dict[str, Any]], descriptions: Mapping[str, Mapping[str, str]]) -> None:
    """Add ``action.description`` and ``trigger.description`` (the trigger's, else its type's), in place.

    descriptions maps "action", "trigger" and "trigger_type" to {ref: description}.
    """
    for item in items:
        if isinstance(item.get("action"), dict):
            item["action"]["description"] = descriptions["action"].get(item["action"].get("ref"), "")
        if isinstance(item.get("trigger"), dict):
            trigger = item["trigger"]
            trigger["description"] = (descriptions["trigger"].get(trigger.get("ref"))
                                      or descriptions["trigger_type"].get(trigger.get("type")) or "")
