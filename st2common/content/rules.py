"""Rule registration: the rule types, then ``rules/*.yaml`` of every pack, validated (RuleAPI) and upserted.

Beyond the schema, a rule must name a registered rule type, a registered
trigger type (its parameters valid for that type's parameters schema: always
for system types, for the others when ``[system] validate_trigger_parameters``),
a registered action, and known criteria operators. The trigger for its
parameters is found or created, and ``trigger.ref`` names it. Rules default to
disabled, as in StackStorm; the file is the truth on every reload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from st2common import operators
from st2common.content import schemas
from st2common.content.loader import PackDir, YamlDocument
from st2common.exceptions import ContentError, ValidationError
from st2common.models.db.action import ActionDB
from st2common.models.db.rule import RULE_TYPE_BACKSTOP, RULE_TYPE_STANDARD, RuleDB, RuleTypeDB
from st2common.models.db.trigger import TriggerTypeDB
from st2common.persistence.access import Access
from st2common.services import triggers as trigger_service, triggertypes

if TYPE_CHECKING:
    from st2common.content.bootstrap import Registration

LOG = logging.getLogger(__name__)

KIND = "rules"
RULE_TYPES_KIND = "rule_types"
FOLDER = "rules"

RULE_TYPES: tuple[dict[str, Any], ...] = (
    {"name": RULE_TYPE_STANDARD, "description": "standard rule that is always applicable.",
     "enabled": True, "parameters": {}},
    {"name": RULE_TYPE_BACKSTOP, "description": "Rule that applies when no other rule has matched for a "
     "specific Trigger.", "enabled": True, "parameters": {}},
)

_NULLABLE_OBJECT = {"type": ["object", "null"]}

RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "ref": {"type": "string"},
        "uid": {"type": "string"},
        "name": {"type": "string", "minLength": 1},
        "pack": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "enabled": {"type": "boolean"},
        "type": {
            "type": "object",
            "properties": {"ref": {"type": "string"}, "parameters": _NULLABLE_OBJECT},
            "required": ["ref"],
            "additionalProperties": False,
        },
        "trigger": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "minLength": 1},
                "parameters": _NULLABLE_OBJECT,
                "ref": {"type": "string"},
                "description": {"type": "string"},
            },
            "required": ["type"],
            "additionalProperties": True,
        },
        "criteria": _NULLABLE_OBJECT,
        "action": {
            "type": "object",
            "properties": {
                "ref": {"type": "string", "minLength": 1},
                "description": {"type": "string"},
                "parameters": _NULLABLE_OBJECT,
            },
            "required": ["ref"],
            "additionalProperties": False,
        },
        "context": _NULLABLE_OBJECT,
        "tags": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
                "required": ["name"],
            },
        },
        "metadata_file": {"type": "string"},
    },
    "required": ["name", "trigger", "action"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class RuleSpec:
    """A validated rule whose references all exist."""

    name: str
    pack: str
    description: str
    enabled: bool
    trigger_type: TriggerTypeDB
    trigger_parameters: dict[str, Any]
    criteria: dict[str, Any]
    action_ref: str
    action_parameters: dict[str, Any]
    type_ref: str
    type_parameters: dict[str, Any]
    context: dict[str, Any]
    tags: tuple[dict[str, Any], ...]
    metadata_file: str | None

    @property
    def ref(self) -> str:
        return RuleDB.make_ref(self.pack, self.name)


class References:
    """The trigger types, actions and rule types rules refer to, read once each per run."""

    def __init__(self) -> None:
        self._trigger_types: dict[str, TriggerTypeDB | None] = {}
        self._actions: dict[str, bool] = {}
        self._rule_types: dict[str, bool] = {}

    def trigger_type(self, ref: str) -> TriggerTypeDB | None:
        """The registered trigger type, or None."""
        if ref not in self._trigger_types:
            self._trigger_types[ref] = Access(TriggerTypeDB).get(ref=ref)
        return self._trigger_types[ref]

    def action_exists(self, ref: str) -> bool:
        """True when an action with this ref is registered."""
        if ref not in self._actions:
            self._actions[ref] = Access(ActionDB).get(ref=ref) is not None
        return self._actions[ref]

    def rule_type_exists(self, name: str) -> bool:
        """True when a rule type of this name is registered."""
        if name not in self._rule_types:
            self._rule_types[name] = Access(RuleTypeDB).get(name=name) is not None
        return self._rule_types[name]


def resolve_rule(data: Mapping[str, Any], pack: str, references: References,
                 validate_trigger_parameters: bool = True, metadata_file: str | None = None) -> RuleSpec:
    """Check what a schema-valid rule refers to; ValidationError naming the field (``trigger.type`` ...)."""
    type_ref = (data.get("type") or {}).get("ref") or RULE_TYPE_STANDARD
    if not references.rule_type_exists(type_ref):
        raise ValidationError(f'rule type "{type_ref}" is not registered; valid rule types are: '
                              f'{RULE_TYPE_STANDARD}, {RULE_TYPE_BACKSTOP}', field="type.ref")
    trigger = data["trigger"]
    trigger_type = references.trigger_type(trigger["type"])
    if trigger_type is None:
        raise ValidationError(f'trigger type "{trigger["type"]}" is not registered', field="trigger.type")
    try:
        parameters = triggertypes.validate_parameters(trigger_type, trigger.get("parameters") or {},
                                                      enforce=validate_trigger_parameters)
    except ValidationError as exc:
        raise ValidationError(f"trigger.{exc.message}", field=f"trigger.{exc.field}") from None
    criteria = dict(data.get("criteria") or {})
    operators.parse_criteria(criteria)
    action = data["action"]
    if not references.action_exists(action["ref"]):
        raise ValidationError(f'action "{action["ref"]}" is not registered', field="action.ref")
    return RuleSpec(
        name=data["name"],
        pack=pack,
        description=data.get("description") or "",
        enabled=data.get("enabled", False),
        trigger_type=trigger_type,
        trigger_parameters=parameters,
        criteria=criteria,
        action_ref=action["ref"],
        action_parameters=dict(action.get("parameters") or {}),
        type_ref=type_ref,
        type_parameters=dict((data.get("type") or {}).get("parameters") or {}),
        context=dict(data.get("context") or {}),
        tags=tuple(dict(tag) for tag in data.get("tags") or ()),
        metadata_file=metadata_file,
    )


def _where(field: str | None, data: Any) -> list[Any]:
    """A dotted field name as a path into data; criteria keys hold dots, so the longest key wins."""
    if not field:
        return []
    path: list[Any] = []
    rest = field
    while rest:
        if not isinstance(data, Mapping):
            return path + rest.split(".")
        keys = sorted((str(k) for k in data if rest == str(k) or rest.startswith(f"{k}.")), key=len, reverse=True)
        if not keys:
            return path + rest.split(".")
        path.append(keys[0])
        data = data[keys[0]]
        rest = rest[len(keys[0]) + 1:]
    return path


def parse_rule(document: YamlDocument, pack: PackDir, references: References,
               validate_trigger_parameters: bool = True) -> RuleSpec:
    """Validate one rule file of pack; ContentError names the field and line."""
    data = document.data
    path = str(document.path)
    schemas.validate(RULE_SCHEMA, data, path=path, pack=pack.ref, line_of=document.line_of)
    pack_field = data.get("pack") or pack.ref
    if pack_field != pack.ref:
        raise ContentError(f'the rule is in pack "{pack.ref}" but its "pack" field is "{pack_field}"',
                           pack=pack.ref, path=path, line=document.line_of(["pack"]), field="pack")
    try:
        return resolve_rule(data, pack.ref, references, validate_trigger_parameters, pack.relative(document.path))
    except ValidationError as exc:
        where = _where(exc.field, data)
        raise ContentError(exc.message, pack=pack.ref, path=path, line=document.line_of(where),
                           field=exc.field) from None


def register_rule(run: "Registration", spec: RuleSpec) -> bool:
    """Upsert one rule, with the trigger for its parameters; True when the rule was written."""
    publisher = run.publisher
    trigger, _ = trigger_service.get_or_create_trigger(spec.trigger_type, spec.trigger_parameters, publisher)
    existing = run.access(RuleDB).get(ref=spec.ref)
    previous = (existing.trigger or {}).get("ref") if existing is not None else None
    fields = {
        "name": spec.name,
        "pack": spec.pack,
        "description": spec.description,
        "enabled": spec.enabled,
        "trigger": {"type": spec.trigger_type.ref, "parameters": spec.trigger_parameters, "ref": trigger.ref},
        "criteria": spec.criteria,
        "action": {"ref": spec.action_ref, "parameters": spec.action_parameters},
        "type": {"ref": spec.type_ref, "parameters": spec.type_parameters},
        "context": spec.context,
        "tags": list(spec.tags),
        "metadata_file": spec.metadata_file,
    }
    try:
        _, changed = run.upsert(RuleDB, {"ref": spec.ref}, fields)
    finally:
        # Also on failure: a trigger created for a rule that was not stored is removed.
        trigger_service.update_ref_count(trigger.ref, publisher)
    if previous and previous != trigger.ref:
        trigger_service.update_ref_count(previous, publisher)
    return changed


def register_rule_types(run: "Registration") -> None:
    """Upsert the standard and backstop rule types."""
    run.report.start(RULE_TYPES_KIND)
    for rule_type in RULE_TYPES:
        fields = {key: value for key, value in rule_type.items() if key != "name"}
        _, changed = run.upsert(RuleTypeDB, {"name": rule_type["name"]}, fields)
        run.report.count(RULE_TYPES_KIND, changed)


def register_pack_rules(run: "Registration", pack: PackDir, references: References) -> None:
    """Register every rule of one pack, reporting the files that cannot be."""
    settings = run.settings
    validate_parameters = settings.system.validate_trigger_parameters if settings is not None else True
    seen: dict[str, str] = {}

    def register(document: YamlDocument) -> tuple[bool, str]:
        spec = parse_rule(document, pack, references, validate_parameters)
        if spec.ref in seen:
            raise ContentError(f'rule "{spec.ref}" is already defined in {seen[spec.ref]}', pack=pack.ref,
                               path=str(document.path), line=document.line_of(["name"]), field="name")
        seen[spec.ref] = spec.metadata_file or str(document.path)
        return register_rule(run, spec), spec.ref

    for path in pack.metadata_files(FOLDER):
        run.register_file(KIND, pack, path, register)


def register_rules(run: "Registration") -> None:
    """Register the rule types, then the rules of every pack (StackStorm's --register-rules)."""
    register_rule_types(run)
    references = References()
    packs = run.packs().all()
    run.report.start(KIND)
    for pack in packs:
        register_pack_rules(run, pack, references)
