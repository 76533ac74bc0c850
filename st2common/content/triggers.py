"""Trigger type registration: StackStorm's system types, ``triggers/*.yaml``, and the types sensors declare.

Each trigger type is validated (TriggerTypeAPI: no extra keys) and upserted
by ref; a type without a parameters schema also gets its "shadow" trigger
(same pack and name, no parameters), so it can be dispatched and used by
rules at once. A ``pack:`` field must name the pack the file lies in; the
types a sensor declares (its ``trigger_types`` list) always belong to the
sensor's pack, as in StackStorm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mongoengine as me

from st2common.content import schemas
from st2common.content.loader import PackDir, YamlDocument, load_mapping
from st2common.exceptions import ContentError
from st2common.models.db.trigger import TriggerTypeDB
from st2common.services import triggers as trigger_service, triggertypes

if TYPE_CHECKING:
    from st2common.content.bootstrap import Registration

LOG = logging.getLogger(__name__)

KIND = "triggers"
FOLDER = "triggers"
SENSORS_FOLDER = "sensors"

_TAGS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
        "required": ["name"],
    },
}

TRIGGER_TYPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "ref": {"type": "string"},
        "uid": {"type": "string"},
        "name": {"type": "string", "minLength": 1},
        "pack": {"type": "string"},
        "description": {"type": "string"},
        "payload_schema": {"type": ["object", "null"]},
        "parameters_schema": {"type": ["object", "null"]},
        "tags": _TAGS,
        "metadata_file": {"type": "string"},
    },
    "required": ["name"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class TriggerTypeSpec:
    """The validated definition of one trigger type."""

    name: str
    pack: str
    description: str
    payload_schema: dict[str, Any]
    parameters_schema: dict[str, Any]
    tags: tuple[dict[str, Any], ...]
    metadata_file: str | None

    @property
    def ref(self) -> str:
        return TriggerTypeDB.make_ref(self.pack, self.name)


def spec_from_dict(data: dict[str, Any], pack: str, metadata_file: str | None = None) -> TriggerTypeSpec:
    """A TriggerTypeSpec from an already validated definition."""
    return TriggerTypeSpec(
        name=data["name"],
        pack=pack,
        description=data.get("description") or "",
        payload_schema=dict(data.get("payload_schema") or {}),
        parameters_schema=dict(data.get("parameters_schema") or {}),
        tags=tuple(dict(tag) for tag in data.get("tags") or ()),
        metadata_file=metadata_file,
    )


def parse_trigger_type(document: YamlDocument, pack: PackDir) -> TriggerTypeSpec:
    """Validate one ``triggers/*.yaml`` file of pack."""
    data = document.data
    schemas.validate(TRIGGER_TYPE_SCHEMA, data, path=str(document.path), pack=pack.ref, line_of=document.line_of)
    pack_field = data.get("pack") or pack.ref
    if pack_field != pack.ref:
        raise ContentError(f'the trigger type is in pack "{pack.ref}" but its "pack" field is "{pack_field}"',
                           pack=pack.ref, path=str(document.path), line=document.line_of(["pack"]), field="pack")
    return spec_from_dict(data, pack.ref, pack.relative(document.path))


def sensor_trigger_types(document: YamlDocument, pack: PackDir) -> tuple[list[TriggerTypeSpec], list[ContentError]]:
    """The trigger types a sensor metadata file declares, and the entries that fail validation."""
    declared = document.data.get("trigger_types") or []
    path = str(document.path)
    if not isinstance(declared, list):
        return [], [ContentError("trigger_types must be a list of trigger type definitions", pack=pack.ref,
                                 path=path, line=document.line_of(["trigger_types"]), field="trigger_types")]
    specs, errors = [], []
    for index, data in enumerate(declared):
        try:
            schemas.validate(TRIGGER_TYPE_SCHEMA, data, path=path, pack=pack.ref, line_of=document.line_of,
                             prefix=("trigger_types", index))
        except ContentError as exc:
            errors.append(exc)
            continue
        specs.append(spec_from_dict(data, pack.ref, pack.relative(document.path)))
    return specs, errors


def register_trigger_type(run: "Registration", spec: TriggerTypeSpec) -> bool:
    """Upsert one trigger type and, when it takes no parameters, its shadow trigger; True when written."""
    fields = {
        "name": spec.name,
        "pack": spec.pack,
        "description": spec.description,
        "payload_schema": spec.payload_schema,
        "parameters_schema": spec.parameters_schema,
        "tags": list(spec.tags),
        "metadata_file": spec.metadata_file,
    }
    doc, changed = run.upsert(TriggerTypeDB, {"ref": spec.ref}, fields)
    if not spec.parameters_schema:
        _, created = trigger_service.get_or_create_trigger(doc, {}, run.publisher)
        changed = changed or created
    return changed


def register_system_types(run: "Registration") -> int:
    """Upsert StackStorm's system trigger types; how many were written."""
    written = 0
    for data in triggertypes.system_trigger_types():
        changed = register_trigger_type(run, spec_from_dict(data, triggertypes.SYSTEM_PACK))
        run.report.count(KIND, changed)
        written += int(changed)
    return written


def _pack_trigger_types(pack: PackDir) -> list[tuple[Path, TriggerTypeSpec | ContentError]]:
    """Every trigger type defined in a pack (triggers/ first, then sensors/), or why it cannot be read."""
    found: list[tuple[Path, TriggerTypeSpec | ContentError]] = []
    for path in pack.metadata_files(FOLDER):
        try:
            found.append((path, parse_trigger_type(load_mapping(path, pack=pack.ref), pack)))
        except ContentError as exc:
            found.append((path, exc))
    for path in pack.metadata_files(SENSORS_FOLDER):
        try:
            document = load_mapping(path, pack=pack.ref)
        except ContentError as exc:
            found.append((path, exc))
            continue
        specs, errors = sensor_trigger_types(document, pack)
        found.extend((path, item) for item in [*specs, *errors])
    return found


def register_pack_trigger_types(run: "Registration", pack: PackDir) -> None:
    """Register the trigger types of one pack, reporting what cannot be."""
    report = run.report
    seen: dict[str, str] = {}
    for path, item in _pack_trigger_types(pack):
        if isinstance(item, ContentError):
            report.fail(KIND, item)
            continue
        if item.ref in seen:
            report.fail(KIND, ContentError(f'trigger type "{item.ref}" is already defined in {seen[item.ref]}',
                                           pack=pack.ref, path=str(path), field="name"))
            continue
        seen[item.ref] = item.metadata_file or str(path)
        try:
            changed = register_trigger_type(run, item)
        except me.ValidationError as exc:
            report.fail(KIND, ContentError(f"cannot be stored: {exc}", pack=pack.ref, path=str(path)))
            continue
        report.count(KIND, changed)
        if changed:
            LOG.info("trigger type %s registered from %s", item.ref, path)


def register_triggers(run: "Registration") -> None:
    """Register the system trigger types and every pack's (StackStorm's --register-triggers)."""
    run.report.start(KIND)
    register_system_types(run)
    for pack in run.packs().all():
        register_pack_trigger_types(run, pack)
