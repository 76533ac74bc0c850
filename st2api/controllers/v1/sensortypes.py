"""/sensortypes: list, get by ref or id, and PUT to enable or disable a sensor.

As in StackStorm, only ``enabled`` is applied by PUT (the CLI's enable and
disable send the whole GET body back, so every emitted field is accepted),
an absent ``enabled`` means true, and sensors of system packs cannot be
changed. The write publishes an update on the sensor exchange, which the
sensor containers watch to start or stop the sensor's process. Lists have
no default limit and take no offset or sort.
"""

from __future__ import annotations

import logging
from typing import Any

import webob

from st2api.controllers.base import Call, ResourceController, Route
from st2common.exceptions import ValidationError
from st2common.models.api.base import document_dict, validate
from st2common.models.db.sensor import SensorTypeDB

LOG = logging.getLogger(__name__)

# StackStorm's SYSTEM_PACK_NAMES: their content is not changed through the API.
SYSTEM_PACKS = frozenset({"chatops", "core", "linux", "packs"})

FIELDS = ("uid", "ref", "name", "class_name", "pack", "description", "artifact_uri", "entry_point", "enabled",
          "trigger_types", "poll_interval", "metadata_file")

UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "uid": {"type": "string"},
        "ref": {"type": "string"},
        "name": {"type": "string"},
        "class_name": {"type": "string"},
        "pack": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "artifact_uri": {"type": "string"},
        "entry_point": {"type": "string"},
        "enabled": {"type": "boolean"},
        "trigger_types": {"type": "array"},
        "poll_interval": {"type": ["number", "null"]},
        "metadata_file": {"type": ["string", "null"]},
    },
    "additionalProperties": False,
}


def to_api(doc: SensorTypeDB) -> dict[str, Any]:
    """A sensor type as GET /sensortypes shows it."""
    data = document_dict(doc, FIELDS)
    data.setdefault("trigger_types", [])
    return data


class SensorTypesController(ResourceController):
    """Sensor types, looked up by ref (pack.ClassName) or id."""

    resource = "sensortypes"
    model = SensorTypeDB
    lookup_by = "ref"
    supported_filters = {"name": "name", "pack": "pack", "trigger": "trigger_types", "enabled": "enabled"}
    default_sort = ("pack", "name")
    default_limit = None
    mandatory_retrieve = ("pack", "name", "ref")
    mandatory_response = ("id", "ref")

    routes = (
        Route("GET", "", "get_all", {"limit": "integer", "include_attributes": "array",
                                     "exclude_attributes": "array", "id": "array", "name": "string",
                                     "pack": "string", "trigger": "string", "enabled": "boolean"}),
        Route("GET", "{ref_or_id}", "get_one"),
        Route("PUT", "{ref_or_id}", "put"),
    )

    def to_api(self, doc: SensorTypeDB, call: Call) -> dict:
        return to_api(doc)

    def get_all(self, call: Call) -> webob.Response:
        """GET /sensortypes."""
        return self.list_response(call)

    def get_one(self, call: Call) -> webob.Response:
        """GET /sensortypes/{ref_or_id}."""
        return self.get_response(self.lookup(call.path["ref_or_id"]), call)

    def put(self, call: Call) -> dict:
        """PUT /sensortypes/{ref_or_id}: enable or disable a sensor."""
        doc = self.lookup(call.path["ref_or_id"])
        if doc.pack in SYSTEM_PACKS:
            raise ValidationError("Resources belonging to system level packs can't be manipulated", field="pack")
        body = validate(UPDATE_SCHEMA, call.body())
        enabled = body.get("enabled", True)
        if enabled != doc.enabled:
            doc.enabled = enabled
            doc = self.access().add_or_update(doc)
            LOG.info("sensor type %s (%s) %s", doc.ref, doc.pk, "enabled" if enabled else "disabled")
        return to_api(doc)
