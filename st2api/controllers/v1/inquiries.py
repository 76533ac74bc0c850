"""/inquiries: the pending inquiries (executions of core.ask), one of them, and the answer to one.

| route               | answer                                                                      |
| ------------------- | --------------------------------------------------------------------------- |
| GET /inquiries      | ``[{id, route, ttl, users, roles, schema}]``, newest first, 20 by default,  |
|                     | X-Total-Count                                                               |
| GET /inquiries/{id} | the same shape; 404 no such execution, 400 not an inquiry or not pending    |
| PUT /inquiries/{id} | body ``{id, response}`` -> 200 ``{id, response}``; 400 not pending or a     |
|                     | response the schema refuses, 403 a caller not in users/roles                |

The use-cases live in st2common.services.inquiries; this module only reads the
request and the caller (``call.user``, ``call.roles``, ``is_admin``).
"""

from __future__ import annotations

import logging
from typing import Any

import webob

from st2api.controllers.base import PAGING, Call, ResourceController, Route
from st2common.models.api.base import validate
from st2common.models.db.execution import ExecutionDB
from st2common.services import inquiries
from st2common.services.workflows import WorkflowService

LOG = logging.getLogger(__name__)

RESPONSE_BODY = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "response": {"type": "object"}},
    "required": ["response"],
}


class InquiriesController(ResourceController):
    """Inquiries: pending executions of the inquirer runner, looked up by execution id."""

    resource = "inquiries"
    model = ExecutionDB
    lookup_by = "id"
    default_sort = ("-start_timestamp",)
    default_limit = 20

    routes = (
        Route("GET", "", "get_all", PAGING),
        Route("GET", "{id}", "get_one"),
        Route("PUT", "{id}", "put", permission="inquiry_respond"),
    )

    def __init__(self, state) -> None:
        super().__init__(state)
        self._workflows: WorkflowService | None = None

    @property
    def workflows(self) -> WorkflowService:
        """What moves an answered inquiry's workflow on (made on first use)."""
        if self._workflows is None:
            self._workflows = WorkflowService(self.state.settings, self.state.publisher)
        return self._workflows

    def to_api(self, doc: ExecutionDB, call: Call) -> dict:
        return inquiries.to_api(doc)

    def attribute_filters(self, call: Call) -> tuple[list[str], list[str]]:
        # StackStorm accepts include/exclude here and ignores them: the shape is always the same six fields.
        return [], []

    def projection(self, include: list[str], exclude: list[str]) -> tuple[list[str], list[str]]:
        return ["result"], []

    def get_all(self, call: Call) -> webob.Response:
        """GET /inquiries."""
        return self.list_response(call, raw=dict(inquiries.PENDING_QUERY))

    def get_one(self, call: Call) -> dict[str, Any]:
        """GET /inquiries/{id}."""
        return inquiries.to_api(inquiries.get(self.access(), call.path["id"]))

    def put(self, call: Call) -> dict[str, Any]:
        """PUT /inquiries/{id}: answer it as the caller."""
        body = validate(RESPONSE_BODY, call.body())
        answer = inquiries.respond(self.workflows, call.path["id"], body["response"], call.user,
                                   roles=call.roles, is_admin=self.is_admin(call))
        LOG.info("inquiry %s: response accepted from %s", answer["id"], call.user)
        return answer
