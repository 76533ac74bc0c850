"""/triggers: list, get by id, create, update, delete.

A trigger is a trigger type with concrete parameters, checked against the
type's parameters schema. Creating one whose type and parameters already have
a trigger answers that trigger, as StackStorm does. A trigger that rules use
cannot be deleted, nor have its type, parameters or ref changed.
"""

from __future__ import annotations

import logging
import uuid

import webob

from st2api.controllers.base import PAGING, Call, ResourceController, Route, reply
from st2common.exceptions import ConflictError, NotFoundError, ValidationError
from st2common.models.api import trigger as trigger_api
from st2common.models.db.trigger import TriggerDB, TriggerTypeDB, parameters_hash
from st2common.services import triggers as trigger_service, triggertypes

LOG = logging.getLogger(__name__)


class TriggersController(ResourceController):
    """Triggers, looked up by id."""

    resource = "triggers"
    model = TriggerDB
    lookup_by = "id"
    # `st2 trigger getspecs` asks ?type=; honouring it gives what the command means.
    supported_filters = {"type": "type", "name": "name", "pack": "pack"}
    default_sort = ("pack", "name")
    default_limit = None

    routes = (
        Route("GET", "", "get_all", {**PAGING, "id": "array", "type": "string", "name": "string",
                                     "pack": "string"}),
        Route("POST", "", "post", status=201),
        Route("GET", "{trigger_id}", "get_one"),
        Route("PUT", "{trigger_id}", "put"),
        Route("DELETE", "{trigger_id}", "delete", status=204),
    )

    def to_api(self, doc: TriggerDB, call: Call) -> dict:
        return trigger_api.trigger_to_api(doc)

    def get_all(self, call: Call) -> webob.Response:
        """GET /triggers."""
        return self.list_response(call)

    def get_one(self, call: Call) -> webob.Response:
        """GET /triggers/{trigger_id}."""
        return self.get_response(self.lookup(call.path["trigger_id"]), call)

    def post(self, call: Call) -> webob.Response:
        """POST /triggers: the trigger for (type, parameters), created when missing; 201."""
        body = trigger_api.validate_trigger_body(call.body())
        trigger_type = self._trigger_type(body["type"])
        parameters = self._parameters(trigger_type, body.get("parameters"), call)
        existing = trigger_service.find_trigger(trigger_type.ref, parameters)
        if existing is not None:
            return reply(self.to_api(existing, call), status=201)
        name = body.get("name") or (trigger_type.name if not parameters else str(uuid.uuid4()))
        doc = TriggerDB(name=name, pack=body.get("pack") or trigger_type.pack, type=trigger_type.ref,
                        parameters=parameters, description=body.get("description") or trigger_type.description)
        doc.set_identity()
        other = self.access().get(ref=doc.ref)
        if other is not None:
            raise ConflictError(f'Trigger "{doc.ref}" already exists.', conflict_id=str(other.pk))
        doc = self.access().add_or_update(doc)
        LOG.info("trigger %s (%s) created for type %s", doc.ref, doc.pk, trigger_type.ref)
        return reply(self.to_api(doc, call), status=201)

    def put(self, call: Call) -> dict:
        """PUT /triggers/{trigger_id}: replace a trigger's name, pack, description, type or parameters."""
        doc = self.lookup(call.path["trigger_id"])
        body = trigger_api.validate_trigger_body(call.body())
        trigger_type = self._trigger_type(body["type"])
        parameters = self._parameters(trigger_type, body.get("parameters"), call)
        name = body.get("name") or doc.name
        pack = body.get("pack") or doc.pack
        changes_identity = (trigger_type.ref != doc.type or parameters_hash(parameters) != doc.parameters_hash
                            or TriggerDB.make_ref(pack, name) != doc.ref)
        if changes_identity:
            used = trigger_service.count_rules_using(doc.ref)
            if used:
                raise ConflictError(f'Trigger "{doc.ref}" is used by {used} rule(s); its type, parameters and '
                                    f'ref cannot change', conflict_id=str(doc.pk))
            same = trigger_service.find_trigger(trigger_type.ref, parameters)
            if same is not None and same.pk != doc.pk:
                raise ConflictError(f'Trigger "{same.ref}" already has this type and these parameters',
                                    conflict_id=str(same.pk))
        doc.name, doc.pack, doc.type, doc.parameters = name, pack, trigger_type.ref, parameters
        doc.description = body.get("description") or doc.description
        doc.set_identity()
        doc = self.access().add_or_update(doc)
        LOG.info("trigger %s (%s) updated", doc.ref, doc.pk)
        return self.to_api(doc, call)

    def delete(self, call: Call) -> None:
        """DELETE /triggers/{trigger_id}."""
        doc = self.lookup(call.path["trigger_id"])
        used = trigger_service.count_rules_using(doc.ref)
        if used:
            raise ConflictError(f'Trigger "{doc.ref}" is used by {used} rule(s) and cannot be deleted',
                                conflict_id=str(doc.pk))
        self.access().delete(doc)
        LOG.info("trigger %s (%s) deleted", doc.ref, doc.pk)

    def _trigger_type(self, ref: str) -> TriggerTypeDB:
        try:
            return triggertypes.get_trigger_type(ref)
        except NotFoundError:
            raise ValidationError(f'trigger type "{ref}" is not registered', field="type") from None

    @staticmethod
    def _parameters(trigger_type: TriggerTypeDB, parameters, call: Call) -> dict:
        return triggertypes.validate_parameters(trigger_type, parameters or {},
                                                enforce=call.settings.system.validate_trigger_parameters)
