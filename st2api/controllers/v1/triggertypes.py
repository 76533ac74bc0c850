"""/triggertypes: list, get by ref or id, create, update, delete.

A trigger type without a parameters schema gets its "shadow" trigger (same
pack and name, no parameters) on create and update, as in StackStorm, so it
can be dispatched and used by rules at once. Types of system packs cannot be
changed or deleted; a type that rules still use cannot be deleted.
"""

from __future__ import annotations

import logging

import webob

from st2api.controllers.base import PAGING, Call, ResourceController, Route, reply
from st2common.content.triggers import spec_from_dict
from st2common.exceptions import ConflictError, ValidationError
from st2common.models.api import trigger as trigger_api
from st2common.models.db.rule import RuleDB
from st2common.models.db.trigger import TriggerDB, TriggerTypeDB
from st2common.services import triggers as trigger_service, triggertypes

LOG = logging.getLogger(__name__)

SYSTEM_PACKS = frozenset({triggertypes.SYSTEM_PACK})
DEFAULT_PACK = "default"


class TriggerTypesController(ResourceController):
    """Trigger types, looked up by ref (pack.name) or id."""

    resource = "triggertypes"
    model = TriggerTypeDB
    lookup_by = "ref"
    supported_filters = {"name": "name", "pack": "pack"}
    default_sort = ("ref",)
    mandatory_retrieve = ("pack", "name", "ref")
    mandatory_response = ("id", "ref")

    routes = (
        Route("GET", "", "get_all", {**PAGING, "id": "array", "name": "string", "pack": "string"}),
        Route("POST", "", "post", status=201),
        Route("GET", "{ref_or_id}", "get_one"),
        Route("PUT", "{ref_or_id}", "put"),
        Route("DELETE", "{ref_or_id}", "delete", status=204),
    )

    def to_api(self, doc: TriggerTypeDB, call: Call) -> dict:
        return trigger_api.trigger_type_to_api(doc)

    def get_all(self, call: Call) -> webob.Response:
        """GET /triggertypes."""
        return self.list_response(call)

    def get_one(self, call: Call) -> webob.Response:
        """GET /triggertypes/{ref_or_id}."""
        return self.get_response(self.lookup(call.path["ref_or_id"]), call)

    def post(self, call: Call) -> webob.Response:
        """POST /triggertypes: a new trigger type (pack "default" unless given); 201."""
        body = trigger_api.validate_trigger_type_body(call.body())
        spec = spec_from_dict(body, body.get("pack") or DEFAULT_PACK, body.get("metadata_file"))
        self._check_not_system(spec.pack)
        existing = self.access().get(ref=spec.ref)
        if existing is not None:
            raise ConflictError(f'Trigger type "{spec.ref}" already exists.', conflict_id=str(existing.pk))
        doc = TriggerTypeDB(name=spec.name, pack=spec.pack)
        doc = self.access().add_or_update(self._apply(spec, doc))
        self._ensure_shadow_trigger(doc)
        LOG.info("trigger type %s (%s) created", doc.ref, doc.pk)
        return reply(self.to_api(doc, call), status=201)

    def put(self, call: Call) -> dict:
        """PUT /triggertypes/{ref_or_id}: replace a trigger type (its ref cannot change while rules use it)."""
        doc = self.lookup(call.path["ref_or_id"])
        self._check_not_system(doc.pack)
        body = trigger_api.validate_trigger_type_body(call.body())
        spec = spec_from_dict(body, body.get("pack") or doc.pack, body.get("metadata_file") or doc.metadata_file)
        self._check_not_system(spec.pack)
        if spec.ref != doc.ref:
            other = self.access().get(ref=spec.ref)
            if other is not None:
                raise ConflictError(f'Trigger type "{spec.ref}" already exists.', conflict_id=str(other.pk))
            self._check_unused(doc, "renamed")
            self._delete_shadow_trigger(doc)
        doc = self.access().add_or_update(self._apply(spec, doc))
        self._ensure_shadow_trigger(doc)
        LOG.info("trigger type %s (%s) updated", doc.ref, doc.pk)
        return self.to_api(doc, call)

    def delete(self, call: Call) -> None:
        """DELETE /triggertypes/{ref_or_id}, with its shadow trigger."""
        doc = self.lookup(call.path["ref_or_id"])
        self._check_not_system(doc.pack)
        self._check_unused(doc, "deleted")
        self._delete_shadow_trigger(doc)
        self.access().delete(doc)
        LOG.info("trigger type %s (%s) deleted", doc.ref, doc.pk)

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _apply(spec, doc: TriggerTypeDB) -> TriggerTypeDB:
        doc.name = spec.name
        doc.pack = spec.pack
        doc.description = spec.description
        doc.payload_schema = spec.payload_schema
        doc.parameters_schema = spec.parameters_schema
        doc.tags = list(spec.tags)
        doc.metadata_file = spec.metadata_file
        doc.set_identity()
        return doc

    @staticmethod
    def _check_not_system(pack: str) -> None:
        if pack in SYSTEM_PACKS:
            raise ValidationError("Resources belonging to system level packs can't be manipulated", field="pack")

    def _check_unused(self, doc: TriggerTypeDB, verb: str) -> None:
        # StackStorm leaves such rules pointing at nothing; refusing keeps every rule loadable.
        rules = self.state.access(RuleDB).query(raw={"trigger.type": doc.ref}, only=("ref",), limit=5)
        if rules:
            names = ", ".join(rule.ref for rule in rules)
            raise ConflictError(f'Trigger type "{doc.ref}" cannot be {verb}: rules use it ({names})',
                                conflict_id=str(rules[0].pk))

    def _ensure_shadow_trigger(self, doc: TriggerTypeDB) -> None:
        if not doc.parameters_schema:
            trigger_service.get_or_create_trigger(doc, {}, self.state.publisher)

    def _delete_shadow_trigger(self, doc: TriggerTypeDB) -> None:
        access = self.state.access(TriggerDB)
        shadow = access.get(type=doc.ref, name=doc.name, pack=doc.pack)
        if shadow is not None and not shadow.parameters:
            access.delete(shadow)
