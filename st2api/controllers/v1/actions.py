"""/actions: list, get by ref or id, create, update, delete, and the parameters / overview / entry_point views."""

from __future__ import annotations

import logging
import mimetypes
from pathlib import Path

import webob

from st2api.controllers.base import PAGING, Call, ResourceController, Route, reply
from st2common.content.loader import search_paths
from st2common.exceptions import AccessDeniedError, ConflictError, NotFoundError, ValidationError
from st2common.models.api import action as action_api
from st2common.models.api.base import mask_schema_defaults
from st2common.models.db.action import ActionDB
from st2common.models.db.pack import PackDB
from st2common.models.db.runner import RunnerTypeDB

LOG = logging.getLogger(__name__)

# Content of these packs ships with the platform; the API may not change it (StackStorm's rule).
SYSTEM_PACKS = frozenset({"core"})

# Secret parameters' defaults are masked too (StackStorm shows them); show_secrets=true reveals them.
SECRETS = {"show_secrets": "boolean"}
LIST_QUERY = {**PAGING, "id": "array", "name": "string", "pack": "string", "tags": "string", **SECRETS}


class ActionsController(ResourceController):
    """Actions, looked up by ref (pack.name) or id."""

    resource = "actions"
    model = ActionDB
    lookup_by = "ref"
    supported_filters = {"name": "name", "pack": "pack", "tags": "tags.name"}
    default_sort = ("pack", "name")
    default_limit = None
    mandatory_retrieve = ("pack", "name")
    mandatory_response = ("id", "ref")
    valid_exclude = ("parameters", "notify")

    routes = (
        Route("GET", "", "get_all", LIST_QUERY),
        Route("POST", "", "post", status=201),
        Route("GET", "views/parameters/{ref_or_id}", "get_parameters", SECRETS),
        Route("GET", "views/overview", "get_overview_all", LIST_QUERY),
        Route("GET", "views/overview/{ref_or_id}", "get_overview", SECRETS),
        Route("GET", "views/entry_point/{ref_or_id}", "get_entry_point"),
        Route("GET", "{ref_or_id}", "get_one", SECRETS),
        Route("PUT", "{ref_or_id}", "put"),
        Route("DELETE", "{ref_or_id}", "delete", status=204),
    )

    def to_api(self, doc: ActionDB, call: Call) -> dict:
        return action_api.to_api(doc, mask_secrets=call.mask_secrets)

    # -- reads --------------------------------------------------------------------------

    def get_all(self, call: Call) -> webob.Response:
        """GET /actions."""
        return self.list_response(call)

    def get_one(self, call: Call) -> webob.Response:
        """GET /actions/{ref_or_id}."""
        return self.get_response(self.lookup(call.path["ref_or_id"]), call)

    def get_parameters(self, call: Call) -> dict:
        """GET /actions/views/parameters/{ref_or_id}: the runner's and the action's parameters merged."""
        action = self.lookup(call.path["ref_or_id"])
        parameters = action_api.merged_parameters(action, self._runner_of(action))
        if call.mask_secrets:
            parameters = mask_schema_defaults(parameters)
        return {"parameters": parameters}

    def get_overview_all(self, call: Call) -> webob.Response:
        """GET /actions/views/overview: actions with their runner's parameters merged in."""
        runners = {r.name: r for r in self.state.access(RunnerTypeDB).query()}

        def overview(doc: ActionDB, call: Call) -> dict:
            runner = runners.get((doc.runner_type or {}).get("name"))
            return action_api.to_api_overview(doc, runner, mask_secrets=call.mask_secrets)

        return self.list_response(call, to_api=overview)

    def get_overview(self, call: Call) -> dict:
        """GET /actions/views/overview/{ref_or_id}."""
        action = self.lookup(call.path["ref_or_id"])
        return action_api.to_api_overview(action, self._runner_of(action), mask_secrets=call.mask_secrets)

    def get_entry_point(self, call: Call) -> webob.Response:
        """GET /actions/views/entry_point/{ref_or_id}: the entry point file's text."""
        action = self.lookup(call.path["ref_or_id"])
        if not action.entry_point:
            raise NotFoundError("action", action.ref, f'Action "{action.ref}" has no entry_point to output.')
        path = self._inside_pack(action, Path("actions") / action.entry_point)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            raise NotFoundError("entry_point", str(path),
                                f'Entry point file "{path}" of action "{action.ref}" cannot be read.') from None
        content_type = mimetypes.guess_type(path.name)[0] or "text/plain"
        response = webob.Response(content_type=content_type, charset="utf-8")
        response.text = text
        return response

    # -- writes -------------------------------------------------------------------------

    def post(self, call: Call) -> webob.Response:
        """POST /actions: create an action in an existing runner type's shape (pack defaults to "default")."""
        body = action_api.validate_body(call.body())
        body.setdefault("pack", action_api.DEFAULT_PACK)
        self._check_not_system(body["pack"])
        runner = self._runner_named(body)
        action_api.check_runner_parameters(body, runner)
        action = action_api.apply_body(body, runner)
        existing = self.access().get(ref=action.ref)
        if existing is not None:
            raise ConflictError(f'Action "{action.ref}" already exists.', conflict_id=str(existing.pk))
        action = self.access().add_or_update(action)
        LOG.info("action %s (%s) created", action.ref, action.pk)
        return reply(self.to_api(action, call), status=201)

    def put(self, call: Call) -> dict:
        """PUT /actions/{ref_or_id}: replace an action (pack is kept from the existing one when missing)."""
        action = self.lookup(call.path["ref_or_id"])
        body = action_api.validate_body(call.body())
        if body.get("id") and body["id"] != str(action.pk):
            LOG.warning("PUT /actions/%s: ignoring mismatched id %s in the body", call.path["ref_or_id"], body["id"])
        body.setdefault("pack", action.pack)
        self._check_not_system(action.pack)
        self._check_not_system(body["pack"])
        runner = self._runner_named(body)
        action_api.check_runner_parameters(body, runner)
        old_ref = action.ref
        action = action_api.apply_body(body, runner, action)
        if action.ref != old_ref:
            other = self.access().get(ref=action.ref)
            if other is not None:
                raise ConflictError(f'Action "{action.ref}" already exists.', conflict_id=str(other.pk))
        action = self.access().add_or_update(action)
        LOG.info("action %s (%s) updated", action.ref, action.pk)
        return self.to_api(action, call)

    def delete(self, call: Call) -> None:
        """DELETE /actions/{ref_or_id}, with its files too when the body says {"remove_files": true}."""
        action = self.lookup(call.path["ref_or_id"])
        self._check_not_system(action.pack)
        body = call.body()
        remove_files = isinstance(body, dict) and body.get("remove_files") is True
        if remove_files:
            self._remove_files(action)
        self.access().delete(action)
        LOG.info("action %s (%s) deleted%s", action.ref, action.pk, " with its files" if remove_files else "")

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _check_not_system(pack: str) -> None:
        if pack in SYSTEM_PACKS:
            raise ValidationError("Resources belonging to system level packs can't be manipulated", field="pack")

    def _runner_named(self, body: dict) -> RunnerTypeDB:
        name = body["runner_type"]
        runner = self.state.access(RunnerTypeDB).get(name=name)
        if runner is None:
            known = sorted(r.name for r in self.state.access(RunnerTypeDB).query(only=("name",)))
            raise ValidationError(f'Runner type "{name}" is not registered; valid runner types are: '
                                  f'{", ".join(known) or "none"}', field="runner_type")
        return runner

    def _runner_of(self, action: ActionDB) -> RunnerTypeDB | None:
        return self.state.access(RunnerTypeDB).get(name=(action.runner_type or {}).get("name"))

    def _pack_dir(self, action: ActionDB) -> Path:
        pack = self.state.access(PackDB).get(ref=action.pack)
        if pack is not None and pack.path:
            return Path(pack.path)
        for base in search_paths(self.state.settings):
            if (base / action.pack).is_dir():
                return base / action.pack
        raise NotFoundError("pack", action.pack, f'Pack "{action.pack}" of action "{action.ref}" is not on disk.')

    def _inside_pack(self, action: ActionDB, relative: Path) -> Path:
        pack_dir = self._pack_dir(action).resolve()
        path = (pack_dir / relative).resolve()
        if not path.is_relative_to(pack_dir):
            raise ValidationError(f'"{relative}" of action "{action.ref}" points outside its pack', field="entry_point")
        return path

    def _remove_files(self, action: ActionDB) -> None:
        """Delete the action's metadata and entry point files (before the record, so nothing is half-done)."""
        relatives = [Path(action.metadata_file)] if action.metadata_file else []
        if action.entry_point:
            relatives.append(Path("actions") / action.entry_point)
        for relative in relatives:
            path = self._inside_pack(action, relative)
            try:
                path.unlink(missing_ok=True)
            except PermissionError:
                raise AccessDeniedError(f'No permission to delete "{path}" of action "{action.ref}"') from None
