"""/timers: the triggers of the three timer types (created by rules), with their parameters."""

from __future__ import annotations

import webob

from st2api.controllers.base import Call, ResourceController, Route
from st2common.exceptions import NotFoundError, ValidationError
from st2common.models.api import trigger as trigger_api
from st2common.models.db.trigger import TriggerDB
from st2common.services.triggertypes import TIMER_TRIGGER_REFS


class TimersController(ResourceController):
    """Timer triggers, looked up by ref (pack.name) or id."""

    resource = "timers"
    model = TriggerDB
    lookup_by = "ref"
    default_sort = ("type", "name")
    default_limit = None

    routes = (
        Route("GET", "", "get_all", {"timer_type": "string"}),
        Route("GET", "{ref_or_id}", "get_one"),
    )

    def to_api(self, doc: TriggerDB, call: Call) -> dict:
        return trigger_api.trigger_to_api(doc)

    def get_all(self, call: Call) -> webob.Response:
        """GET /timers[?timer_type=core.st2.IntervalTimer|core.st2.DateTimer|core.st2.CronTimer]."""
        timer_type = call.query.get("timer_type")
        if timer_type and timer_type not in TIMER_TRIGGER_REFS:
            raise ValidationError(f'Timer type {timer_type} not in supported types - '
                                  f'{", ".join(TIMER_TRIGGER_REFS)}.', field="timer_type")
        raw = {"type": timer_type or {"$in": list(TIMER_TRIGGER_REFS)}}
        return self.list_response(call, raw=raw)

    def get_one(self, call: Call) -> webob.Response:
        """GET /timers/{ref_or_id}."""
        value = call.path["ref_or_id"]
        doc = self.lookup(value)
        if doc.type not in TIMER_TRIGGER_REFS:
            raise NotFoundError("timer", value, f'Resource with a reference or id "{value}" not found')
        return self.get_response(doc, call)
