"""/executions (also served as /actionexecutions): list, get, request, cancel, pause, resume, re-run,
output, children, attribute and result.

Writes go through st2common.services.executions (prepare, then request_many through
st2api/batching.py; cancel, re_run) and st2common.services.workflows (pause, resume);
this module only translates HTTP to those use-cases and records to StackStorm's
execution shape. Secrets are masked in every response unless show_secrets=true.
"""

from __future__ import annotations

import gzip
import json
import logging
from typing import Any

import webob
from bson import ObjectId

from st2api.batching import RequestBatcher
from st2api.controllers.base import PAGING, Call, ResourceController, Route, reply
from st2common import statuses
from st2common.exceptions import (
    AccessDeniedError, DatabaseError, NotFoundError, TransitionError, ValidationError,
)
from st2common.models.api import execution as execution_api
from st2common.models.api.base import parse_isotime, validate
from st2common.models.db.execution import ExecutionDB, ExecutionOutputDB
from st2common.persistence.access import DB_ERRORS, to_object_id
from st2common.services import executions, workflows

LOG = logging.getLogger(__name__)

LIST_QUERY = {
    **PAGING, "sort_asc": "string", "sort_desc": "string", "id": "array", "status": "string",
    "parent": "string", "action": "string", "runner": "string", "user": "string", "rule": "string",
    "trigger": "string", "trigger_type": "string", "trigger_instance": "string", "liveaction": "string",
    "timestamp": "string", "timestamp_gt": "string", "timestamp_lt": "string", "show_secrets": "boolean",
    "filter": "string",
}
SECRETS = {"show_secrets": "boolean"}
# GET /executions/{id}/attribute/{name} serves only these (StackStorm's list).
ATTRIBUTES = ("action__pack", "action__uid", "result", "trigger_instance", "status")
# Largest max_result_size a client may ask for (StackStorm's limit).
MAX_RESULT_SIZE = 14 * 1024 * 1024
LAST = "last"

# PUT /executions/{id}: StackStorm's LiveActionAPI; only status and result are acted on.
UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {**{k: v for k, v in execution_api.CREATE_SCHEMA["properties"].items() if k != "action"},
                   "action": {"type": "string"},
                   "status": {"type": "string", "enum": list(statuses.EXECUTION_STATUSES)}},
    "additionalProperties": False,
}
_CANCEL = (statuses.CANCELING, statuses.CANCELED)
_PAUSE = (statuses.PAUSING, statuses.PAUSED)

# Response keys whose values are masked with the action's and runner's parameter and output schemas.
_MASKED_KEYS = frozenset({"parameters", "result", "action", "runner", "liveaction"})
# The stored fields the liveaction sub-object is derived from (execution_api._liveaction).
_LIVEACTION_FIELDS = ("action_ref", "action", "runner", "parameters", "runner_info", "notify")

SORT_DESC = ("-start_timestamp", "action_ref")
SORT_ASC = ("+start_timestamp", "action_ref")


class ExecutionsController(ResourceController):
    """Executions: one record per action run, looked up by id (or ``last``)."""

    resource = "executions"
    model = ExecutionDB
    lookup_by = "id"
    supported_filters = {
        "action": "action_ref", "status": "status", "liveaction": "_id", "parent": "parent",
        "rule": "rule.name", "runner": "runner.name", "timestamp": "start_timestamp",
        "trigger": "trigger.name", "trigger_type": "trigger_type.name",
        "trigger_instance": "trigger_instance.id", "user": "context.user",
    }
    default_sort = SORT_DESC
    mandatory_retrieve = ("id",) + execution_api.MASKING_FIELDS
    valid_exclude = ("result", "trigger_instance", "status")

    routes = (
        Route("GET", "", "get_all", LIST_QUERY),
        Route("POST", "", "post", SECRETS, status=201),
        Route("GET", "{id}/output", "get_output", {"output_type": "string"}),
        Route("GET", "{id}/children", "get_children", {"depth": "integer", **SECRETS}),
        Route("GET", "{id}/attribute/{attribute}", "get_attribute", SECRETS),
        Route("GET", "{id}/result", "get_result",
              {"download": "boolean", "compress": "boolean", "pretty_format": "boolean", **SECRETS}),
        Route("POST", "{id}/re_run", "re_run", {"no_merge": "boolean", **SECRETS}, status=201),
        Route("GET", "{id}", "get_one", {"include_attributes": "array", "exclude_attributes": "array",
                                          "max_result_size": "integer", **SECRETS}),
        Route("PUT", "{id}", "put", SECRETS),
        Route("DELETE", "{id}", "delete", SECRETS),
    )

    def __init__(self, state) -> None:
        super().__init__(state)
        self._batcher = RequestBatcher(state.publisher)

    def projection(self, include: list[str], exclude: list[str]) -> tuple[list[str], list[str]]:
        """With include_attributes, only the stored fields the asked-for keys are rendered from.

        A poll for ``status`` reads the status, not the action and runner
        copies that masking needs when parameters or results are shown.
        """
        if not include:
            return super().projection(include, exclude)
        asked = {path.split(".")[0] for path in include}
        wanted = asked & set(self.model._fields)
        if asked & _MASKED_KEYS:
            wanted |= {"action", "runner"}
        if "liveaction" in asked:
            wanted |= set(_LIVEACTION_FIELDS)
        # elapsed_seconds and the timestamps are computed from both ends.
        wanted |= {"start_timestamp", "end_timestamp"}
        wanted.discard("id")
        return sorted(wanted), []

    def to_api(self, doc: ExecutionDB | dict[str, Any], call: Call) -> dict:
        return execution_api.to_api(doc, mask_secrets=call.mask_secrets,
                                    web_url_base=call.settings.webui.webui_base_url)

    # -- reads --------------------------------------------------------------------------

    def get_all(self, call: Call) -> webob.Response:
        """GET /executions: newest first unless sort_asc or timestamp_gt says otherwise."""
        q = call.query
        ascending = not (q.get("timestamp_lt") or q.get("sort_desc")) and (q.get("timestamp_gt") or q.get("sort_asc"))
        sort = SORT_ASC if ascending else SORT_DESC
        raw: dict[str, Any] = {}
        bounds = {}
        if q.get("timestamp_gt"):
            bounds["$gt"] = parse_isotime(q["timestamp_gt"], "timestamp_gt")
        if q.get("timestamp_lt"):
            bounds["$lt"] = parse_isotime(q["timestamp_lt"], "timestamp_lt")
        if bounds:
            raw["start_timestamp"] = bounds
        return self.list_response(call, raw=raw, sort=sort)

    def filter_query(self, call: Call) -> dict[str, Any]:
        query = super().filter_query(call)
        if call.query.get("filter"):
            query.update(self._advanced_filters(call.query["filter"]))
        return query

    def filter_condition(self, name: str, stored: str, value: Any) -> tuple[str, Any]:
        if name == "liveaction":
            return stored, to_object_id(value)
        if name == "timestamp":
            if ".." in value:
                low, _, high = value.partition("..")
                return stored, {"$gte": parse_isotime(low, name), "$lte": parse_isotime(high, name)}
            return stored, parse_isotime(value, name)
        return super().filter_condition(name, stored, value)

    def _advanced_filters(self, text: str) -> dict[str, str]:
        """?filter=field.path:value other:value (space separated), matched as strings."""
        out = {}
        for token in text.split(" "):
            if not token:
                continue
            key, sep, value = token.partition(":")
            if not sep or not key:
                raise ValidationError(f'invalid format for filter "{token}"', field="filter")
            if key.split(".")[0] not in self.model._fields:
                raise ValidationError(f'Cannot resolve field "{key}"', field="filter")
            out[key] = value
        return out

    def get_one(self, call: Call) -> webob.Response:
        """GET /executions/{id}; ``last`` is the most recent one."""
        include, exclude = self.attribute_filters(call)
        only, leave_out = self.projection(include, exclude)
        execution = self._loaded(call.path["id"], only=only, exclude=leave_out)
        data = self.shape(self.to_api(execution, call), include, exclude)
        max_size = call.query.get("max_result_size")
        if max_size is not None:
            if not 0 < max_size <= MAX_RESULT_SIZE:
                raise ValidationError(f"max_result_size must be a positive number of bytes up to {MAX_RESULT_SIZE}",
                                      field="max_result_size")
            if (execution.get("result_size") or 0) > max_size:
                data.pop("result", None)
        return reply(data)

    def get_output(self, call: Call) -> webob.Response:
        """GET /executions/{id}/output: the stored stdout/stderr chunks as text."""
        execution = self._execution(call.path["id"], only=("id",))
        raw: dict[str, Any] = {"execution_id": str(execution.pk)}
        output_type = call.query.get("output_type") or "all"
        if output_type != "all":
            raw["output_type"] = output_type
        chunks = self.state.access(ExecutionOutputDB).query(raw=raw, order_by=("timestamp", "id"))
        response = webob.Response(content_type="text/plain", charset="utf-8")
        response.text = execution_api.output_text(chunks)
        return response

    def get_children(self, call: Call) -> list[dict]:
        """GET /executions/{id}/children: descendants to depth (-1: all), each after its parent."""
        root = self._execution(call.path["id"])
        depth = call.query.get("depth", -1)
        by_parent: dict[str, list[ExecutionDB]] = {}
        level_ids, level = [str(root.pk)], 0
        while level_ids and (depth < 0 or level < depth):
            docs = self.access().query(raw={"parent": {"$in": level_ids}}, order_by=("start_timestamp", "id"))
            for doc in docs:
                by_parent.setdefault(doc.parent, []).append(doc)
            level_ids, level = [str(doc.pk) for doc in docs], level + 1
        ordered: list[ExecutionDB] = []

        def walk(parent_id: str) -> None:
            for child in by_parent.get(parent_id, []):
                ordered.append(child)
                walk(str(child.pk))

        walk(str(root.pk))
        return [self.to_api(doc, call) for doc in ordered]

    def get_attribute(self, call: Call) -> webob.Response:
        """GET /executions/{id}/attribute/{attribute}: one attribute's raw value."""
        name = call.path["attribute"]
        if name not in ATTRIBUTES:
            raise ValidationError(f'Invalid attribute "{name}" specified. Valid attributes are: '
                                  f'{", ".join(self.valid_exclude)}', field="attribute")
        execution = self._execution(call.path["id"])
        return reply(execution_api.attribute(execution, name, mask_secrets=call.mask_secrets))

    def get_result(self, call: Call) -> webob.Response:
        """GET /executions/{id}/result: the result as JSON text, optionally pretty, gzipped or as a download."""
        execution = self._execution(call.path["id"])
        result = execution_api.attribute(execution, "result", mask_secrets=call.mask_secrets)
        indent = 4 if call.query.get("pretty_format") else None
        body = json.dumps(result, indent=indent).encode("utf-8")
        content_type = "text/json"
        filename = f"execution_{execution.pk}_result.json"
        if call.query.get("compress"):
            body, content_type, filename = gzip.compress(body), "application/x-gzip", filename + ".gz"
        response = webob.Response(body=body, content_type=content_type, charset=None)
        if call.query.get("download"):
            response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    # -- writes -------------------------------------------------------------------------

    def post(self, call: Call) -> webob.Response:
        """POST /executions: validate and store a request (status requested); 201 with the execution."""
        body = execution_api.validate_create(call.body())
        context = dict(body.get("context") or {})
        context.update(self._header_context(call))
        action_ref = body["action"]
        # An unknown action is a 404 naming the ref (StackStorm answers 400 here; the issue asks for 404,
        # and the official CLI reads only the faultstring).
        execution = executions.prepare(
            action_ref, body.get("parameters") or {}, context=context, delay=body.get("delay"),
            notify=body.get("notify") or None, user=self._requester(call, body))
        # Stored with the requests that arrive meanwhile, in one insert.
        execution = self._batcher.store(execution)
        return reply(self.to_api(execution, call), status=201)

    @staticmethod
    def _header_context(call: Call) -> dict[str, Any]:
        raw = call.request.headers.get("st2-context")
        if not raw:
            return {}
        try:
            context = json.loads(raw)
        except ValueError:
            context = None
        if not isinstance(context, dict):
            raise ValidationError("Unable to convert st2-context from the headers into JSON.", field="st2-context")
        return context

    def _requester(self, call: Call, body: dict) -> str:
        """The user an execution runs as: the caller, or the body's user when an admin names one."""
        user = body.get("user") or call.user
        if user != call.user and not self.is_admin(call):
            raise AccessDeniedError('"user" attribute can only be provided by admins when RBAC is enabled')
        return user

    def re_run(self, call: Call) -> webob.Response:
        """POST /executions/{id}/re_run: request the same action again, parameters overlaid; 201."""
        body = execution_api.validate_rerun(call.body())
        old = self._execution(call.path["id"], only=("id", "action_ref"))
        try:
            execution = executions.re_run(
                self.state.publisher, str(old.pk), body.get("parameters") or {},
                no_merge=call.query.get("no_merge", False), delay=body.get("delay"),
                user=self._requester(call, body), tasks=body.get("tasks"), reset=body.get("reset"))
        except NotFoundError as exc:
            if exc.resource == "action":
                raise ValidationError(f'Action "{old.action_ref}" cannot be found.', field="action") from None
            raise
        return reply(self.to_api(execution, call), status=201)

    def put(self, call: Call) -> webob.Response:
        """PUT /executions/{id}: cancel, pause or resume by status; other statuses and results written as given."""
        body = validate(UPDATE_SCHEMA, call.body())
        execution = self._execution(call.path["id"])
        if execution.status in statuses.COMPLETED:
            raise ValidationError("Execution is already in completed state.", field="status")
        status, execution_id = body.get("status"), str(execution.pk)
        publisher = self.state.publisher
        try:
            if status in _CANCEL:
                execution = executions.cancel(publisher, execution_id, user=call.user)
            elif status in _PAUSE:
                execution = workflows.pause(publisher, execution_id, user=call.user)
            elif status == statuses.RESUMING:
                execution = workflows.resume(publisher, execution_id, user=call.user)
            elif status is not None:
                changes = {"result": body["result"]} if "result" in body else {}
                execution = executions.update_status(
                    executions.access(publisher), execution, status,
                    publish_work=status in executions.WORK_STATUSES, **changes)
            elif "result" in body:
                execution = self.access().update_if(execution.pk, {"status": execution.status},
                                                     {"result": body["result"]}) or execution
        except (ValidationError, TransitionError) as exc:
            raise ValidationError(f"Failed updating execution. {exc}", field="status") from None
        LOG.info("execution %s: %s requested by %s (%s)", execution.pk, status or "result update", call.user,
                 execution.status)
        return reply(self.to_api(execution, call))

    def delete(self, call: Call) -> webob.Response:
        """DELETE /executions/{id}: cancel. A finished one answers 200 with a faultstring, as StackStorm does."""
        execution = self._execution(call.path["id"])
        if execution.status == statuses.CANCELED:
            return reply(self.to_api(execution, call))
        if execution.status not in statuses.CANCELABLE:
            return reply({"faultstring": f"Action cannot be canceled. State = {execution.status}."})
        try:
            execution = executions.cancel(self.state.publisher, str(execution.pk), user=call.user)
        except TransitionError as exc:
            # It finished between our read and the cancel.
            return reply({"faultstring": f"Action cannot be canceled. State = {exc.old}."})
        LOG.info("execution %s: cancel requested by %s (%s)", execution.pk, call.user, execution.status)
        return reply(self.to_api(execution, call))

    # -- helpers ------------------------------------------------------------------------

    def _execution(self, value: str, only=()) -> ExecutionDB:
        """The execution a path id names (``last``: the newest), reading only some fields if asked."""
        oid = self._execution_id(value)
        doc = self.access().get_fields(oid, only) if oid is not None else None
        if doc is None:
            raise NotFoundError("execution", value, f'Unable to identify resource with id "{value}".')
        return doc

    def _loaded(self, value: str, only=(), exclude=()) -> dict[str, Any]:
        """The stored fields of the execution a path id names as execution_api.loaded_values.

        One find_one and no ExecutionDB built: on a GET of one execution, the
        document's constructor and a queryset cost more CPU than the read itself.
        """
        oid = self._execution_id(value)
        son = None
        if oid is not None:
            projection = {name: 1 for name in only} or {name: 0 for name in exclude} or None
            try:
                son = ExecutionDB._get_collection().find_one({"_id": oid}, projection)
            except DB_ERRORS as exc:
                raise DatabaseError(f"reading execution {value}: {exc}") from exc
        if son is None:
            raise NotFoundError("execution", value, f'Unable to identify resource with id "{value}".')
        return execution_api.loaded_values(son)

    def _execution_id(self, value: str) -> ObjectId | None:
        """The id a path names: ``last`` is the newest execution's."""
        if value != LAST:
            return to_object_id(value)
        newest = self.access().query(order_by=("-id",), limit=1, only=("id",))
        if not newest:
            raise ValidationError("No executions found in the database")
        return newest[0].pk
