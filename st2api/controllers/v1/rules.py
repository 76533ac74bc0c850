"""/rules: list, get by ref or id, create, update, delete, the views, and the rule tester (POST /rules/test).

A rule names a trigger by type and parameters; creating or updating one finds
or creates the trigger (TriggerDB) for those parameters, and every write
recounts the rules using the old and new triggers, so a parameterised trigger
no rule uses any more is deleted (st2common.services.triggers). Those trigger
writes publish on the trigger exchange, which is how timers, webhooks and
sensors learn of the change without a restart.
"""

from __future__ import annotations

import logging
from typing import Any

import webob

from st2api.controllers.base import Call, ResourceController, Route, reply
from st2api.controllers.v1 import ruletester
from st2common.exceptions import ConflictError
from st2common.models.api import rule as rule_api
from st2common.models.db.action import ActionDB
from st2common.models.db.rule import RuleDB
from st2common.models.db.trigger import TriggerDB, TriggerTypeDB
from st2common.services import triggers as trigger_service

LOG = logging.getLogger(__name__)

SECRETS = {"show_secrets": "boolean"}
# GET /rules declares no offset and no sort (StackStorm's spec).
LIST_QUERY = {"limit": "integer", "include_attributes": "array", "exclude_attributes": "array", "id": "array",
              "name": "string", "pack": "string", "action": "string", "trigger": "string", "enabled": "boolean",
              "user": "string", **SECRETS}


class RulesController(ResourceController):
    """Rules, looked up by ref (pack.name) or id."""

    resource = "rules"
    model = RuleDB
    lookup_by = "ref"
    supported_filters = {"name": "name", "pack": "pack", "action": "action.ref", "trigger": "trigger.ref",
                         "enabled": "enabled", "user": "context.user"}
    default_sort = ("pack", "name")
    default_limit = None
    mandatory_retrieve = ("pack", "name")
    mandatory_response = ("id", "ref")

    routes = (
        Route("GET", "", "get_all", LIST_QUERY),
        Route("POST", "", "post", status=201),
        Route("POST", "test", "test", SECRETS, reads=True),
        Route("GET", "views", "get_views", LIST_QUERY),
        Route("GET", "views/{ref_or_id}", "get_view", SECRETS),
        Route("GET", "{ref_or_id}", "get_one", SECRETS),
        Route("PUT", "{ref_or_id}", "put"),
        Route("DELETE", "{ref_or_id}", "delete", status=204),
    )

    def to_api(self, doc: RuleDB, call: Call, schemas: rule_api.ActionSchemas | None = None) -> dict:
        secret_schema = None
        if call.mask_secrets and doc.action is not None:
            secret_schema = (schemas or rule_api.ActionSchemas()).of(rule_api.action_ref(doc))
        return rule_api.to_api(doc, secret_schema)

    def filter_condition(self, name: str, stored: str, value: Any) -> tuple[str, Any]:
        if name == "trigger" and isinstance(value, str) and value.lower() != "null":
            # The stored trigger's ref; for a parameter-less type that is the type's ref too,
            # and `st2 rule list -g <type>` means the type for parameterised ones as well.
            return "$or", [{"trigger.ref": value}, {"trigger.type": value}]
        return super().filter_condition(name, stored, value)

    # -- reads --------------------------------------------------------------------------

    def get_all(self, call: Call) -> webob.Response:
        """GET /rules."""
        return self.list_response(call, to_api=self._batch_to_api())

    def get_one(self, call: Call) -> webob.Response:
        """GET /rules/{ref_or_id}."""
        return self.get_response(self.lookup(call.path["ref_or_id"]), call)

    def get_views(self, call: Call) -> webob.Response:
        """GET /rules/views: rules with their action's and trigger's descriptions."""
        response = self.list_response(call, to_api=self._batch_to_api())
        items = response.json
        rule_api.add_view_properties(items, self._descriptions(items))
        return reply(items, headers={k: v for k, v in response.headers.items() if k.startswith("X-")})

    def get_view(self, call: Call) -> dict:
        """GET /rules/views/{ref_or_id}."""
        item = self.to_api(self.lookup(call.path["ref_or_id"]), call)
        rule_api.add_view_properties([item], self._descriptions([item]))
        return item

    def _batch_to_api(self):
        """A to_api reading each referenced action's schema once for the whole page."""
        schemas = rule_api.ActionSchemas()
        return lambda doc, call: self.to_api(doc, call, schemas)

    def _descriptions(self, items: list[dict]) -> dict[str, dict[str, str]]:
        actions = {i["action"].get("ref") for i in items if isinstance(i.get("action"), dict)} - {None}
        triggers = {i["trigger"].get("ref") for i in items if isinstance(i.get("trigger"), dict)} - {None}
        types = {i["trigger"].get("type") for i in items if isinstance(i.get("trigger"), dict)} - {None}
        return {
            "action": self._descriptions_of(ActionDB, actions),
            "trigger": self._descriptions_of(TriggerDB, triggers),
            "trigger_type": self._descriptions_of(TriggerTypeDB, types),
        }

    def _descriptions_of(self, model, refs: set[str]) -> dict[str, str]:
        if not refs:
            return {}
        docs = self.state.access(model).query(raw={"ref": {"$in": sorted(refs)}}, only=("ref", "description"))
        return {doc.ref: doc.description or "" for doc in docs}

    def test(self, call: Call) -> dict:
        """POST /rules/test: would a rule fire for a trigger instance, and with what parameters (ruletester)."""
        return ruletester.run(call.body(), call.settings.system.validate_trigger_parameters, call.mask_secrets)

    # -- writes -------------------------------------------------------------------------

    def post(self, call: Call) -> webob.Response:
        """POST /rules: a new rule (disabled unless the body says otherwise); 201."""
        body = rule_api.validate_body(call.body())
        body.setdefault("pack", rule_api.DEFAULT_PACK)
        body["context"] = dict(body.get("context") or {}, user=call.user)
        spec = rule_api.resolve(body, call.settings.system.validate_trigger_parameters)
        existing = self.access().get(ref=spec.ref)
        if existing is not None:
            raise ConflictError(f'Rule "{spec.ref}" already exists.', conflict_id=str(existing.pk))
        rule = self._save(spec, None)
        LOG.info("rule %s (%s) created by %s", rule.ref, rule.pk, call.user)
        return reply(self.to_api(rule, call), status=201)

    def put(self, call: Call) -> dict:
        """PUT /rules/{ref_or_id}: replace a rule (the pack is kept when the body has none)."""
        rule = self.lookup(call.path["ref_or_id"])
        body = rule_api.validate_body(call.body())
        if body.get("id") and body["id"] != str(rule.pk):
            LOG.warning("PUT /rules/%s: ignoring mismatched id %s in the body", call.path["ref_or_id"], body["id"])
        body.setdefault("pack", rule.pack)
        body["context"] = dict(body.get("context") or {}, user=call.user)
        schemas = rule_api.ActionSchemas()
        rule_api.restore_masked_parameters(body, rule, schemas.of(rule_api.action_ref(rule)))
        spec = rule_api.resolve(body, call.settings.system.validate_trigger_parameters)
        if spec.ref != rule.ref:
            other = self.access().get(ref=spec.ref)
            if other is not None:
                raise ConflictError(f'Rule "{spec.ref}" already exists.', conflict_id=str(other.pk))
        rule = self._save(spec, rule)
        LOG.info("rule %s (%s) updated by %s", rule.ref, rule.pk, call.user)
        return self.to_api(rule, call, schemas)

    def delete(self, call: Call) -> None:
        """DELETE /rules/{ref_or_id}; the trigger goes too when no other rule uses it."""
        rule = self.lookup(call.path["ref_or_id"])
        trigger_ref = (rule.trigger or {}).get("ref")
        self.access().delete(rule)
        if trigger_ref:
            trigger_service.update_ref_count(trigger_ref, self.state.publisher)
        LOG.info("rule %s (%s) deleted by %s", rule.ref, rule.pk, call.user)

    def _save(self, spec, rule: RuleDB | None) -> RuleDB:
        """Store the rule with the trigger for its parameters; recount the old and new triggers."""
        publisher = self.state.publisher
        previous = (rule.trigger or {}).get("ref") if rule is not None else None
        trigger, _ = trigger_service.get_or_create_trigger(spec.trigger_type, spec.trigger_parameters, publisher)
        try:
            rule = self.access().add_or_update(rule_api.apply_spec(spec, trigger, rule))
        finally:
            # Also on failure: a trigger created for a rule that was not stored is removed.
            trigger_service.update_ref_count(trigger.ref, publisher)
        if previous and previous != trigger.ref:
            trigger_service.update_ref_count(previous, publisher)
        return rule

