"""/traces: list and get, each trace with its trigger instances, rules and executions.

Components are stored one per document (TraceComponentDB); a page of traces
reads its components in one query and groups them back into StackStorm's
three lists. The component filters (execution, rule, trigger_instance) first
find the traces that hold such a component.
"""

from __future__ import annotations

from typing import Any

import webob

from st2api.controllers.base import PAGING, Call, ResourceController, Route, reply
from st2common.models.api import trace as trace_api
from st2common.models.db.trace import (
    COMPONENT_EXECUTION, COMPONENT_RULE, COMPONENT_TRIGGER_INSTANCE, TraceComponentDB, TraceDB,
)
from st2common.persistence.access import to_object_id

LIST_QUERY = {**PAGING, "id": "array", "trace_tag": "string", "execution": "string", "rule": "string",
              "trigger_instance": "string", "sort_asc": "string", "sort_desc": "string"}

# filter name -> the component type it looks for.
COMPONENT_FILTERS = {"execution": COMPONENT_EXECUTION, "rule": COMPONENT_RULE,
                     "trigger_instance": COMPONENT_TRIGGER_INSTANCE}

SORT_DESC = ("-start_timestamp", "-id")
SORT_ASC = ("+start_timestamp", "+id")


class TracesController(ResourceController):
    """Traces, looked up by id; newest first unless sort_asc=True."""

    resource = "traces"
    model = TraceDB
    lookup_by = "id"
    supported_filters = {"trace_tag": "trace_tag", "start_timestamp": "start_timestamp"}
    default_sort = SORT_DESC
    # The component lists are always built: they are not stored fields.
    mandatory_response = ("id", "trigger_instances", "rules", "action_executions")

    routes = (
        Route("GET", "", "get_all", LIST_QUERY),
        Route("GET", "{id}", "get_one"),
    )

    def to_api(self, doc: TraceDB, call: Call, components: dict[str, list] | None = None) -> dict:
        if components is None:
            components = self._components([str(doc.pk)])
        return trace_api.to_api(doc, components.get(str(doc.pk), []))

    def get_all(self, call: Call) -> webob.Response:
        """GET /traces."""
        # StackStorm compares with the literal "True" (the CLI sends sort_desc=True).
        ascending = call.query.get("sort_asc") == "True" and call.query.get("sort_desc") != "True"
        raw = self._component_filter(call)
        if raw is None:
            return reply([], headers={"X-Total-Count": "0"})
        # Rows are built without their components, which are then read for the whole page at once.
        response = self.list_response(call, raw=raw, sort=SORT_ASC if ascending else SORT_DESC,
                                      to_api=lambda doc, call: self.to_api(doc, call, {}))
        items = response.json
        components = self._components([item["id"] for item in items])
        for item in items:
            full = trace_api.to_api_lists(components.get(item["id"], []))
            item.update({name: value for name, value in full.items() if name in item})
        return reply(items, headers={k: v for k, v in response.headers.items() if k.startswith("X-")})

    def get_one(self, call: Call) -> webob.Response:
        """GET /traces/{id}."""
        return self.get_response(self.lookup(call.path["id"]), call)

    def _component_filter(self, call: Call) -> dict[str, Any] | None:
        """A raw filter on trace ids for the component filters given; None when no trace can match."""
        trace_ids: set[str] | None = None
        for name, component_type in COMPONENT_FILTERS.items():
            value = call.query.get(name)
            if not value:
                continue
            raw: dict[str, Any] = {"component_type": component_type, "object_id": value}
            if name == "rule":
                raw = {"component_type": component_type, "$or": [{"object_id": value}, {"ref": value}]}
            found = {c.trace_id for c in self.state.access(TraceComponentDB).query(raw=raw, only=("trace_id",))}
            trace_ids = found if trace_ids is None else trace_ids & found
        if trace_ids is None:
            return {}
        oids = [oid for oid in (to_object_id(t) for t in sorted(trace_ids)) if oid is not None]
        return {"_id": {"$in": oids}} if oids else None

    def _components(self, trace_ids: list[str]) -> dict[str, list[TraceComponentDB]]:
        grouped: dict[str, list[TraceComponentDB]] = {trace_id: [] for trace_id in trace_ids}
        if not trace_ids:
            return grouped
        for component in self.state.access(TraceComponentDB).query(raw={"trace_id": {"$in": trace_ids}}):
            grouped.setdefault(component.trace_id, []).append(component)
        return grouped
