"""/ruleenforcements: list, get, and the views that embed the trigger instance and the execution."""

from __future__ import annotations

from typing import Any

import webob

from st2api.controllers.base import PAGING, Call, ResourceController, Route, reply
from st2common.models.api import enforcement as enforcement_api
from st2common.models.api import execution as execution_api
from st2common.models.api import trigger as trigger_api
from st2common.models.api.base import parse_isotime
from st2common.models.db.enforcement import RuleEnforcementDB
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.persistence.access import to_object_id

LIST_QUERY = {**PAGING, "id": "array", "rule_ref": "string", "rule_id": "string", "execution": "string",
              "trigger_instance": "string", "enforced_at": "string", "enforced_at_gt": "string",
              "enforced_at_lt": "string"}


class RuleEnforcementsController(ResourceController):
    """Rule enforcements, looked up by id; newest first."""

    resource = "ruleenforcements"
    model = RuleEnforcementDB
    lookup_by = "id"
    supported_filters = {"rule_ref": "rule.ref", "rule_id": "rule.id", "execution": "execution_id",
                         "trigger_instance": "trigger_instance_id", "enforced_at": "enforced_at"}
    default_sort = ("-enforced_at",)
    default_limit = 50

    routes = (
        Route("GET", "", "get_all", LIST_QUERY),
        Route("GET", "views", "get_views", LIST_QUERY),
        Route("GET", "views/{id}", "get_view"),
        Route("GET", "{id}", "get_one"),
    )

    def to_api(self, doc: RuleEnforcementDB, call: Call) -> dict:
        return enforcement_api.to_api(doc)

    def filter_condition(self, name: str, stored: str, value: Any) -> tuple[str, Any]:
        if name == "enforced_at" and isinstance(value, str) and value.lower() != "null":
            if ".." in value:
                low, _, high = value.partition("..")
                return stored, {"$gte": parse_isotime(low, name), "$lte": parse_isotime(high, name)}
            return stored, parse_isotime(value, name)
        return super().filter_condition(name, stored, value)

    def _time_bounds(self, call: Call) -> dict[str, Any]:
        bounds = {}
        if call.query.get("enforced_at_gt"):
            bounds["$gt"] = parse_isotime(call.query["enforced_at_gt"], "enforced_at_gt")
        if call.query.get("enforced_at_lt"):
            bounds["$lt"] = parse_isotime(call.query["enforced_at_lt"], "enforced_at_lt")
        return {"enforced_at": bounds} if bounds else {}

    def get_all(self, call: Call) -> webob.Response:
        """GET /ruleenforcements."""
        return self.list_response(call, raw=self._time_bounds(call))

    def get_one(self, call: Call) -> webob.Response:
        """GET /ruleenforcements/{id}."""
        return self.get_response(self.lookup(call.path["id"]), call)

    def get_views(self, call: Call) -> webob.Response:
        """GET /ruleenforcements/views: each with its trigger instance and execution embedded."""
        response = self.list_response(call, raw=self._time_bounds(call))
        items = response.json
        self._add_views(items, call)
        return reply(items, headers={k: v for k, v in response.headers.items() if k.startswith("X-")})

    def get_view(self, call: Call) -> dict:
        """GET /ruleenforcements/views/{id}."""
        item = self.to_api(self.lookup(call.path["id"]), call)
        self._add_views([item], call)
        return item

    def _add_views(self, items: list[dict], call: Call) -> None:
        instance_ids = self._ids(item.get("trigger_instance_id") for item in items)
        execution_ids = self._ids(item.get("execution_id") for item in items)
        instances = {}
        if instance_ids:
            for doc in self.state.access(TriggerInstanceDB).query(raw={"_id": {"$in": instance_ids}}):
                instances[str(doc.pk)] = trigger_api.trigger_instance_to_api(doc)
        executions = {}
        if execution_ids:
            for doc in self.state.access(ExecutionDB).query(raw={"_id": {"$in": execution_ids}}):
                executions[str(doc.pk)] = execution_api.to_api(doc, mask_secrets=call.mask_secrets,
                                                               web_url_base=call.settings.webui.webui_base_url)
        enforcement_api.add_view_properties(items, instances, executions)

    @staticmethod
    def _ids(values) -> list:
        return list({oid for oid in (to_object_id(v) for v in values if v) if oid is not None})
