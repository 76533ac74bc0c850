"""Sensor registration: ``sensors/*.yaml`` of every pack, validated and upserted by ref.

As in StackStorm, only the metadata is registered: ``class_name`` becomes the
sensor's name (ref ``<pack>.<class_name>``), ``entry_point`` is the Python
file relative to ``sensors/``, and ``artifact_uri`` is that file's absolute
``file://`` URI. The class is imported only by the sensor container, but a
missing file is reported here, where the author sees it. The trigger types a
sensor declares are registered by the triggers registrar; here the sensor
keeps their refs. ``poll_interval`` is at least 4 seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st2common.content import schemas
from st2common.content.loader import PackDir, YamlDocument
from st2common.content.triggers import SENSORS_FOLDER, TRIGGER_TYPE_SCHEMA
from st2common.exceptions import ContentError
from st2common.models.db.sensor import MINIMUM_POLL_INTERVAL, SensorTypeDB
from st2common.models.db.trigger import TriggerTypeDB

if TYPE_CHECKING:
    from st2common.content.bootstrap import Registration

LOG = logging.getLogger(__name__)

KIND = "sensors"

# StackStorm reads the keys it knows and ignores the rest, so extra keys are allowed.
SENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "class_name": {"type": "string", "minLength": 1},
        "entry_point": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "enabled": {"type": "boolean"},
        "poll_interval": {"type": "number", "minimum": MINIMUM_POLL_INTERVAL},
        "trigger_types": {"type": ["array", "null"], "items": TRIGGER_TYPE_SCHEMA},
        "pack": {"type": "string"},
        "artifact_uri": {"type": "string"},
        "metadata_file": {"type": "string"},
    },
    "required": ["class_name", "entry_point"],
    "additionalProperties": True,
}


@dataclass(frozen=True)
class SensorSpec:
    """The validated metadata of one sensor."""

    class_name: str
    pack: str
    entry_point: str
    artifact_uri: str
    description: str
    enabled: bool
    poll_interval: float | None
    trigger_types: tuple[str, ...]
    metadata_file: str

    @property
    def ref(self) -> str:
        return SensorTypeDB.make_ref(self.pack, self.class_name)


def _error(message: str, document: YamlDocument, pack: PackDir, where: list[Any]) -> ContentError:
    return ContentError(message, pack=pack.ref, path=str(document.path), line=document.line_of(where),
                        field=schemas.field_name(where))


def parse_sensor(document: YamlDocument, pack: PackDir) -> SensorSpec:
    """Validate one sensor metadata file of pack; ContentError names the field and line."""
    data = document.data
    schemas.validate(SENSOR_SCHEMA, data, path=str(document.path), pack=pack.ref, line_of=document.line_of)
    pack_field = data.get("pack") or pack.ref
    if pack_field != pack.ref:
        raise _error(f'the sensor is in pack "{pack.ref}" but its "pack" field is "{pack_field}"',
                     document, pack, ["pack"])
    source = (document.path.parent / data["entry_point"]).resolve()
    if not source.is_file():
        raise _error(f'entry_point "{data["entry_point"]}": no such file {source}', document, pack, ["entry_point"])
    return SensorSpec(
        class_name=data["class_name"],
        pack=pack.ref,
        entry_point=data["entry_point"],
        artifact_uri=f"file://{source}",
        description=data.get("description") or "",
        enabled=data.get("enabled", True),
        poll_interval=data.get("poll_interval"),
        trigger_types=tuple(TriggerTypeDB.make_ref(pack.ref, t["name"]) for t in data.get("trigger_types") or ()),
        metadata_file=pack.relative(document.path),
    )


def sensor_files(pack: PackDir) -> list[Path]:
    """The sensor metadata files of a pack, in name order."""
    return pack.metadata_files(SENSORS_FOLDER)


def register_sensor(run: "Registration", spec: SensorSpec) -> bool:
    """Upsert one sensor type; True when it was written."""
    fields = {
        "name": spec.class_name,
        "pack": spec.pack,
        "class_name": spec.class_name,
        "entry_point": spec.entry_point,
        "artifact_uri": spec.artifact_uri,
        "description": spec.description,
        "enabled": spec.enabled,
        "poll_interval": int(spec.poll_interval) if spec.poll_interval is not None else None,
        "trigger_types": list(spec.trigger_types),
        "metadata_file": spec.metadata_file,
    }
    _, changed = run.upsert(SensorTypeDB, {"ref": spec.ref}, fields)
    return changed


def register_pack_sensors(run: "Registration", pack: PackDir) -> None:
    """Register every sensor of one pack, reporting the files that cannot be."""
    seen: dict[str, str] = {}

    def register(document: YamlDocument) -> tuple[bool, str]:
        spec = parse_sensor(document, pack)
        if spec.ref in seen:
            raise _error(f'sensor "{spec.ref}" is already defined in {seen[spec.ref]}',
                         document, pack, ["class_name"])
        seen[spec.ref] = spec.metadata_file
        return register_sensor(run, spec), spec.ref

    for path in sensor_files(pack):
        run.register_file(KIND, pack, path, register)


def register_sensors(run: "Registration") -> None:
    """Register the sensors of every pack on the search path (StackStorm's --register-sensors)."""
    packs = run.packs().all()
    run.report.start(KIND)
    for pack in packs:
        register_pack_sensors(run, pack)
