"""/v1/actions through the REST API: lists, lookups, the views, and create / update / delete."""

from __future__ import annotations

import mimetypes
import os

from test_api_support import (  # noqa: F401 (fixtures)
    DEFAULT_SECRET, api, api_settings, publisher, settings,
)

from st2common.models.api.base import MASKED

NEW_ACTION = {
    "name": "hello",
    "pack": "apitest",
    "runner_type": "local-shell-cmd",
    "description": "Says hello.",
    "parameters": {"cmd": {"type": "string", "default": "echo hello"},
                   "token": {"type": "string", "secret": True, "default": DEFAULT_SECRET}},
}


def test_list_returns_every_action_sorted_by_pack_and_name(api):
    # When every action is listed, with the columns `st2 action list` asks for
    response = api.get("/v1/actions?include_attributes=ref,pack,description")
    rows = response.json
    # Then core and apitest are there, in pack then name order, with only those columns plus id
    refs = [row["ref"] for row in rows]
    assert "core.local" in refs and "apitest.secretive" in refs
    assert refs == sorted(refs, key=lambda ref: tuple(ref.split(".", 1)))
    assert set(rows[0]) == {"id", "ref", "pack", "description"}
    # And no limit applies by default, so the total is the row count and there is no X-Limit
    assert response.headers["X-Total-Count"] == str(len(rows))
    assert "X-Limit" not in response.headers


def test_list_pages_with_limit_and_offset(api):
    # Given the full list of core actions
    everything = [row["ref"] for row in api.get("/v1/actions?pack=core").json]
    # When they are read two at a time from the third
    page = api.get("/v1/actions?pack=core&limit=2&offset=2")
    # Then that page is the third and fourth, with the total and the limit in the headers
    assert [row["ref"] for row in page.json] == everything[2:4]
    assert page.headers["X-Total-Count"] == str(len(everything))
    assert page.headers["X-Limit"] == "2"


def test_list_limit_rules(api):
    # limit=-1 means everything (every caller is an admin without RBAC)
    assert api.get("/v1/actions?limit=-1").headers.get("X-Limit") is None
    # 0 and values below -1 are refused, naming the value
    assert "must be a positive number or -1" in api.get("/v1/actions?limit=0", status=400).json["faultstring"]
    assert api.get("/v1/actions?limit=-5", status=400).json["faultstring"] == \
        'Limit, "-5" specified, must be a positive number.'


def test_list_sorts_by_filter_names_and_ignores_unknown_keys(api):
    # When sorted by name descending
    names = [row["name"] for row in api.get("/v1/actions?pack=core&sort=-name").json]
    # Then the order follows
    assert names == sorted(names, reverse=True)
    # And an unknown sort key falls back to the default order instead of failing
    assert api.get("/v1/actions?sort=bogus").status_int == 200


def test_list_filters_by_name_and_id(api):
    # Given two actions' ids
    local = api.get("/v1/actions/core.local").json
    noop = api.get("/v1/actions/core.noop").json
    # When filtered by a comma list of ids
    rows = api.get(f"/v1/actions?id={local['id']},{noop['id']}").json
    # Then exactly those come back
    assert sorted(row["ref"] for row in rows) == ["core.local", "core.noop"]
    # And a name filter matches across packs
    assert [row["ref"] for row in api.get("/v1/actions?name=secretive").json] == ["apitest.secretive"]


def test_exclude_attributes_is_limited_to_what_actions_allow(api):
    # When parameters are excluded
    row = api.get("/v1/actions?pack=core&exclude_attributes=parameters&limit=1").json[0]
    # Then they are gone and the rest is there
    assert "parameters" not in row and row["runner_type"]
    # And excluding anything else is a 400 naming it
    response = api.get("/v1/actions?exclude_attributes=name", status=400)
    assert response.json["faultstring"] == "Invalid or unsupported exclude attribute specified: name"
    # And include with exclude together is refused
    api.get("/v1/actions?include_attributes=ref&exclude_attributes=parameters", status=400)


def test_get_by_ref_and_by_id_give_the_stackstorm_shape(api):
    # When core.local is fetched by ref, then by id
    by_ref = api.get("/v1/actions/core.local").json
    by_id = api.get(f"/v1/actions/{by_ref['id']}").json
    # Then both are the same action, with runner_type as a name and StackStorm's fields
    assert by_ref == by_id
    assert by_ref["runner_type"] == "local-shell-cmd"
    assert by_ref["uid"] == "action:core:local"
    assert by_ref["parameters"]["cmd"]["required"] is True
    assert {"id", "ref", "name", "pack", "enabled", "entry_point", "parameters"} <= set(by_ref)


def test_an_unknown_action_is_a_404_naming_the_ref(api):
    response = api.get("/v1/actions/core.nope", status=404)
    assert response.json["faultstring"] == 'Resource with a reference or id "core.nope" not found'


def test_secret_defaults_are_masked_unless_asked_for(api):
    # When the secretive action is read normally
    masked = api.get("/v1/actions/apitest.secretive").json
    # Then its secret default is masked
    assert masked["parameters"]["api_key"]["default"] == MASKED
    # And show_secrets=true shows it
    shown = api.get("/v1/actions/apitest.secretive?show_secrets=true").json
    assert shown["parameters"]["api_key"]["default"] == DEFAULT_SECRET


def test_views_parameters_merges_runner_and_action_parameters(api):
    # When the parameter view of core.local is read
    parameters = api.get("/v1/actions/views/parameters/core.local").json["parameters"]
    # Then it has the runner's parameters (sudo, timeout, env) with the action's overrides (cmd)
    assert {"cmd", "sudo", "timeout", "env", "cwd"} <= set(parameters)
    assert parameters["cmd"]["required"] is True


def test_views_overview_lists_actions_with_merged_parameters(api):
    # When the overview of core actions is listed
    rows = api.get("/v1/actions/views/overview?pack=core").json
    local = next(row for row in rows if row["ref"] == "core.local")
    # Then each carries its runner's parameters too
    assert "sudo" in local["parameters"]
    # And the one-action form agrees, with secrets still masked
    one = api.get("/v1/actions/views/overview/apitest.secretive").json
    assert one["parameters"]["api_key"]["default"] == MASKED


def test_views_entry_point_returns_the_file(api):
    # When the entry point of a script action is read
    response = api.get("/v1/actions/views/entry_point/apitest.script")
    # Then its text comes back
    assert response.text == '#!/bin/sh\necho "hello $1"\n'
    assert response.content_type == (mimetypes.guess_type("script.sh")[0] or "text/plain")
    # And an action without one is a 404 saying so
    assert "has no entry_point" in api.get("/v1/actions/views/entry_point/core.local", status=404).json["faultstring"]


def test_create_get_update_delete(api):
    # When an action is created
    created = api.post_json("/v1/actions", NEW_ACTION, status=201).json
    # Then it gets its ref and uid from pack and name, and its secret default is masked
    assert created["ref"] == "apitest.hello" and created["uid"] == "action:apitest:hello"
    assert created["enabled"] is True and created["parameters"]["token"]["default"] == MASKED

    # When the CLI disables it (the whole GET body minus ref, enabled flipped)
    body = api.get("/v1/actions/apitest.hello").json
    body.pop("ref")
    body["enabled"] = False
    updated = api.put_json(f"/v1/actions/{created['id']}", body).json
    # Then it is disabled and its secret default survives the masked round trip
    assert updated["enabled"] is False
    shown = api.get("/v1/actions/apitest.hello?show_secrets=true").json
    assert shown["parameters"]["token"]["default"] == DEFAULT_SECRET

    # When it is deleted
    api.delete(f"/v1/actions/{created['id']}", status=204)
    # Then it is gone
    api.get("/v1/actions/apitest.hello", status=404)


def test_create_defaults_the_pack_to_default(api):
    body = {key: value for key, value in NEW_ACTION.items() if key != "pack"}
    assert api.post_json("/v1/actions", body, status=201).json["ref"] == "default.hello"


def test_creating_a_duplicate_is_a_409_with_the_conflict_id(api):
    # Given an action
    first = api.post_json("/v1/actions", NEW_ACTION, status=201).json
    # When it is created again
    response = api.post_json("/v1/actions", NEW_ACTION, status=409)
    # Then the answer points at the existing one
    assert response.json["conflict-id"] == first["id"]


def test_create_validation_names_the_field(api):
    # A missing required field
    missing = api.post_json("/v1/actions", {"name": "x", "pack": "apitest"}, status=400)
    assert "runner_type" in missing.json["faultstring"]
    # A parameter definition with a wrong type for `required`
    bad = dict(NEW_ACTION, parameters={"cmd": {"type": "string", "required": "yes"}})
    assert "parameters.cmd.required" in api.post_json("/v1/actions", bad, status=400).json["faultstring"]
    # An unknown top-level field
    extra = dict(NEW_ACTION, colour="blue")
    assert "colour" in api.post_json("/v1/actions", extra, status=400).json["faultstring"]
    # An unknown runner type
    unknown = dict(NEW_ACTION, runner_type="teleport")
    assert 'Runner type "teleport"' in api.post_json("/v1/actions", unknown, status=400).json["faultstring"]
    # Overriding more than the default of an immutable runner parameter
    immutable = dict(NEW_ACTION, runner_type="remote-shell-cmd", parameters={"dir": {"type": "integer"}})
    response = api.post_json("/v1/actions", immutable, status=400)
    assert 'runner parameter "dir"' in response.json["faultstring"]
    # while changing only its default is allowed
    default_only = dict(NEW_ACTION, runner_type="remote-shell-cmd", parameters={"dir": {"default": "/var/tmp"}})
    api.post_json("/v1/actions", default_only, status=201)


def test_system_pack_actions_cannot_be_changed(api):
    # When core.noop is changed or deleted through the API
    body = api.get("/v1/actions/core.noop").json
    put = api.put_json("/v1/actions/core.noop", dict(body, description="changed"), status=400)
    delete = api.delete("/v1/actions/core.noop", status=400)
    created = api.post_json("/v1/actions", dict(NEW_ACTION, pack="core"), status=400)
    # Then each is refused with StackStorm's message
    for response in (put, delete, created):
        assert response.json["faultstring"] == "Resources belonging to system level packs can't be manipulated"


def test_delete_with_remove_files_deletes_the_files(api, api_settings):
    # Given a script action whose files lie in its pack
    pack_dir = api_settings.content.packs_base_paths[0]
    metadata = f"{pack_dir}/apitest/actions/script.yaml"
    script = f"{pack_dir}/apitest/actions/script.sh"
    # When it is deleted with remove_files
    api.delete_json("/v1/actions/apitest.script", {"remove_files": True}, status=204)
    # Then its metadata and entry point files are gone too
    assert not os.path.exists(metadata) and not os.path.exists(script)
