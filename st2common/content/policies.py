"""Policy registration: the policy types, then ``policies/*.yaml`` of every pack.

The policy types are StackStorm's (``st2common/policies/meta/*.yaml``), kept
here as data and registered first. A policy file is StackStorm's PolicyAPI:
``name``, ``resource_ref`` (an action ref) and ``policy_type`` are required;
``parameters`` are checked against the type's schema and stored with its
defaults filled in. The action must be registered and the type known, or the
file is reported (ContentError naming them, with the file and line) and
skipped. An action has at most one policy of each type.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import jsonschema
from jsonschema.exceptions import best_match

from st2common.content import schemas
from st2common.content.loader import PackDir, YamlDocument
from st2common.exceptions import ConflictError, ContentError
from st2common.models.db.action import ActionDB
from st2common.models.db.policy import PolicyDB, PolicyTypeDB
from st2common.persistence.access import Access
from st2common.runners import registry

if TYPE_CHECKING:
    from st2common.content.bootstrap import Registration

LOG = logging.getLogger(__name__)

KIND = "policies"
TYPES_KIND = "policy_types"
FOLDER = "policies"

_DELAY_OR_CANCEL = {
    "description": "Which action to perform on the execution once the concurrency threshold has been reached.",
    "type": "string", "default": "delay", "enum": ["delay", "cancel"],
}
_THRESHOLD = {"description": "Concurrency threshold.", "type": "integer", "required": True, "minimum": 0}

# ref -> StackStorm's policy type metadata.
POLICY_TYPES: dict[str, dict[str, Any]] = {
    "action.concurrency": {
        "name": "concurrency", "resource_type": "action", "enabled": True,
        "description": "Limits the concurrent executions for the action.",
        "module": "st2actions.policies.concurrency",
        "parameters": {"threshold": _THRESHOLD, "action": _DELAY_OR_CANCEL},
    },
    "action.concurrency.attr": {
        "name": "concurrency.attr", "resource_type": "action", "enabled": True,
        "description": "Limits the concurrent executions for the action, counting only executions whose "
                       "given parameters have the same values.",
        "module": "st2actions.policies.concurrency_by_attr",
        "parameters": {
            "threshold": _THRESHOLD, "action": _DELAY_OR_CANCEL,
            "attributes": {"description": "Names of the parameters whose values are compared.",
                           "type": "array", "items": {"type": "string"}, "required": True},
        },
    },
    "action.retry": {
        "name": "retry", "resource_type": "action", "enabled": True,
        "description": "Retry (re-run) failed or timed out action.",
        "module": "st2actions.policies.retry",
        "parameters": {
            "retry_on": {"type": "string", "description": "Condition to retry on.", "required": True,
                         "enum": ["failure", "timeout"]},
            "max_retry_count": {"type": "integer", "description": "Maximum number of times to retry before "
                                "giving up.", "required": True, "minimum": 1, "maximum": 5, "default": 2},
            "delay": {"type": "number", "description": "Number of seconds to wait before retrying the execution.",
                      "required": False, "minimum": 0, "maximum": 120},
        },
    },
}

# StackStorm's PolicyAPI (no other keys).
POLICY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "uid": {"type": "string"},
        "ref": {"type": "string"},
        "name": {"type": "string", "minLength": 1},
        "pack": {"type": "string"},
        "description": {"type": "string"},
        "enabled": {"type": "boolean", "default": True},
        "resource_ref": {"type": "string", "minLength": 1},
        "policy_type": {"type": "string", "minLength": 1},
        "parameters": {"type": "object"},
        "metadata_file": {"type": "string"},
    },
    "required": ["name", "resource_ref", "policy_type"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class PolicySpec:
    """A validated policy, its parameters with the type's defaults."""

    name: str
    pack: str
    description: str
    enabled: bool
    resource_ref: str
    policy_type: str
    parameters: dict[str, Any]
    metadata_file: str | None = None

    @property
    def ref(self) -> str:
        return PolicyDB.make_ref(self.pack, self.name)

    def fields(self) -> dict[str, Any]:
        """The stored fields (the upsert key, ref, aside)."""
        return {"name": self.name, "pack": self.pack, "description": self.description, "enabled": self.enabled,
                "resource_ref": self.resource_ref, "policy_type": self.policy_type,
                "parameters": self.parameters, "metadata_file": self.metadata_file}


def _fill_defaults(definitions: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(dict(values))
    for name, spec in definitions.items():
        if name not in result and isinstance(spec, Mapping) and "default" in spec:
            result[name] = copy.deepcopy(spec["default"])
    return result


def check_parameters(policy_type: str, parameters: Any) -> dict[str, Any]:
    """parameters checked against the type's schema, defaults filled in; ContentError naming the parameter."""
    definitions = POLICY_TYPES[policy_type]["parameters"]
    if not isinstance(parameters, dict):
        raise ContentError(f"parameters must be a mapping, got {type(parameters).__name__}", field="parameters")
    filled = _fill_defaults(definitions, parameters)
    schema = registry.parameters_schema(definitions)
    error = best_match(jsonschema.Draft4Validator(schema).iter_errors(filled))
    if error is None:
        return filled
    where = list(error.absolute_path)
    message = error.message
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        where, message = where + missing[:1], f'"{missing[0]}" is a required parameter of {policy_type}'
    elif error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(definitions))
        where, message = where + extra[:1], f'"{extra[0]}" is not a parameter of {policy_type}'
    field = ".".join(["parameters", *(str(p) for p in where)])
    raise ContentError(f"{field}: {message}", field=field)


def parse_policy(data: Any, pack: str | None, action_exists: Callable[[str], bool],
                 line_of: Callable[[list[Any]], int | None] | None = None, path: str | None = None,
                 metadata_file: str | None = None) -> PolicySpec:
    """Validate one policy document; ContentError naming the field (and line), the action or the type."""
    schemas.validate(POLICY_SCHEMA, data, path=path, pack=pack, line_of=line_of)

    def fail(message: str, where: list[Any]) -> ContentError:
        return ContentError(message, pack=pack, path=path, line=line_of(where) if line_of else None,
                            field=schemas.field_name(where))

    pack_field = data.get("pack") or pack
    if pack is not None and pack_field != pack:
        raise fail(f'the policy is in pack "{pack}" but its "pack" field is "{pack_field}"', ["pack"])
    if not pack_field:
        raise fail('required field "pack" is missing', ["pack"])
    if data["policy_type"] not in POLICY_TYPES:
        raise fail(f'policy type "{data["policy_type"]}" is not known; valid policy types are: '
                   f'{", ".join(sorted(POLICY_TYPES))}', ["policy_type"])
    if not action_exists(data["resource_ref"]):
        raise fail(f'action "{data["resource_ref"]}" referenced by resource_ref is not registered',
                   ["resource_ref"])
    try:
        parameters = check_parameters(data["policy_type"], data.get("parameters") or {})
    except ContentError as exc:
        raise fail(exc.reason, (exc.field or "parameters").split(".")) from None
    return PolicySpec(name=data["name"], pack=pack_field, description=data.get("description", ""),
                      enabled=data.get("enabled", True), resource_ref=data["resource_ref"],
                      policy_type=data["policy_type"], parameters=parameters, metadata_file=metadata_file)


def action_registered(ref: str) -> bool:
    """True when an action with that ref is registered."""
    return Access(ActionDB).get(ref=ref) is not None


def register_policy_types(run: "Registration") -> None:
    """Upsert StackStorm's policy types (registered before any policy)."""
    run.report.start(TYPES_KIND)
    for ref, meta in POLICY_TYPES.items():
        _, changed = run.upsert(PolicyTypeDB, {"ref": ref}, meta)
        run.report.count(TYPES_KIND, changed)


def ensure_policy_types() -> None:
    """Store the policy types when they are not yet (an API started before any registration)."""
    access = Access(PolicyTypeDB)
    for ref, meta in POLICY_TYPES.items():
        if access.get(ref=ref) is None:
            doc = PolicyTypeDB(**meta)
            doc.set_identity()
            try:
                access.add_or_update(doc)
            except ConflictError:
                pass  # another process stored it first


def _register_file(run: "Registration", pack: PackDir, document: YamlDocument) -> tuple[bool, str]:
    spec = parse_policy(document.data, pack.ref, action_registered, document.line_of, str(document.path),
                        pack.relative(document.path))
    other = run.access(PolicyDB).get(resource_ref=spec.resource_ref, policy_type=spec.policy_type)
    if other is not None and other.ref != spec.ref:
        raise ContentError(f'action "{spec.resource_ref}" already has a {spec.policy_type} policy ({other.ref}); '
                           "an action has at most one policy of each type", pack=pack.ref,
                           path=str(document.path), line=document.line_of(["policy_type"]), field="policy_type")
    _, changed = run.upsert(PolicyDB, {"ref": spec.ref}, spec.fields())
    return changed, spec.ref


def register_pack_policies(run: "Registration", pack: PackDir) -> None:
    """Register every policy of one pack, reporting the files that cannot be."""
    for path in pack.metadata_files(FOLDER):
        run.register_file(KIND, pack, path, lambda document: _register_file(run, pack, document))


def register_policies(run: "Registration") -> None:
    """Register the policy types, then the policies of every pack (StackStorm's --register-policies)."""
    register_policy_types(run)
    packs = run.packs().all()
    run.report.start(KIND)
    for pack in packs:
        register_pack_policies(run, pack)
