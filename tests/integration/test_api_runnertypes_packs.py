"""/v1/runnertypes and /v1/packs through the REST API."""

from __future__ import annotations

from test_api_support import api, api_settings, publisher, settings  # noqa: F401 (fixtures)


def test_runner_list_has_the_columns_the_cli_reads(api):
    # When runners are listed the way `st2 runner list` does
    response = api.get("/v1/runnertypes?include_attributes=id,name,description")
    rows = response.json
    # Then every registered runner is there, sorted by name, each with a string id
    names = [row["name"] for row in rows]
    assert {"local-shell-cmd", "local-shell-script", "python-script", "http-request", "noop"} <= set(names)
    assert names == sorted(names)
    assert all(isinstance(row["id"], str) and set(row) <= {"id", "name", "description"} for row in rows)
    # And the default page size of 100 is announced
    assert response.headers["X-Limit"] == "100"
    assert response.headers["X-Total-Count"] == str(len(rows))


def test_runner_get_by_name_filter_then_path(api):
    # When the CLI looks a runner up by ?name=, as `st2 run` does
    rows = api.get("/v1/runnertypes/?name=local-shell-cmd").json
    # Then exactly one comes back, with its runner parameters
    assert len(rows) == 1 and "cmd" in rows[0]["runner_parameters"]
    # And the same runner answers by name and by id
    by_name = api.get("/v1/runnertypes/local-shell-cmd").json
    assert api.get(f"/v1/runnertypes/{by_name['id']}").json == by_name
    assert by_name["uid"] == "runner_type:local-shell-cmd"


def test_an_unknown_runner_is_a_404(api):
    response = api.get("/v1/runnertypes/teleport", status=404)
    assert response.json["faultstring"] == 'Resource with a name or id "teleport" not found'


def test_runner_disable_and_enable_apply_only_enabled(api):
    # Given the CLI's disable: the whole GET body with enabled flipped and a changed description
    body = api.get("/v1/runnertypes/noop").json
    body.update(enabled=False, description="changed")
    # When it is PUT back
    updated = api.put_json(f"/v1/runnertypes/{body['id']}", body).json
    # Then only enabled changed
    assert updated["enabled"] is False
    assert updated["description"] != "changed"
    # And a disabled runner's actions cannot be run
    response = api.post_json("/v1/executions", {"action": "core.noop"}, status=400)
    assert "disabled" in response.json["faultstring"]
    # And enabling it again works
    assert api.put_json("/v1/runnertypes/noop", dict(body, enabled=True)).json["enabled"] is True


def test_runner_put_validates_the_body(api):
    response = api.put_json("/v1/runnertypes/noop", {"enabled": "nope"}, status=400)
    assert "enabled" in response.json["faultstring"]


def test_pack_list_and_get(api):
    # When packs are listed the way `st2 pack list` does
    rows = api.get("/v1/packs?include_attributes=ref,name,description,version,author").json
    # Then core and apitest are there, sorted by ref, with those columns plus id
    refs = [row["ref"] for row in rows]
    assert {"core", "apitest"} <= set(refs) and refs == sorted(refs)
    assert set(rows[0]) == {"id", "ref", "name", "description", "version", "author"}
    # And a pack answers by ref and by id, with StackStorm's fields
    core = api.get("/v1/packs/core").json
    assert api.get(f"/v1/packs/{core['id']}").json == core
    assert core["uid"] == "pack:core" and core["version"] and core["author"]
    # And an unknown pack is a 404 naming it
    assert api.get("/v1/packs/nope", status=404).json["faultstring"] == 'Resource with a ref or id "nope" not found'
