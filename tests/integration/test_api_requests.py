"""What any request gets regardless of the resource: JSON whatever the Accept header, 400 for undecodable input."""

from __future__ import annotations

from test_api_support import api, api_settings, publisher, settings  # noqa: F401 (fixtures)


def test_json_is_served_whatever_the_client_accepts(api):
    # When a client names a media type in Accept (curl -H "Accept: application/json", a browser, a script)
    for accept in ("application/json", "text/plain", "text/html,application/xhtml+xml", "*/*"):
        response = api.get("/v1/actions/core.noop", headers={"Accept": accept})
        # Then it gets the action as JSON, as StackStorm answers
        assert response.status_int == 200
        assert response.content_type == "application/json"
        assert response.json["ref"] == "core.noop"


def test_a_query_string_that_is_not_utf8_is_a_400_faultstring(api):
    # When the query string holds bytes that are not UTF-8
    response = api.get("/v1/actions?pack=%ff", status=400)
    # Then the client is told its request is malformed, in the API's error shape
    assert "malformed" in response.json["faultstring"]


def test_a_posted_execution_reads_back_the_same(api):
    # Given an execution requested through the API
    posted = api.post_json("/v1/executions", {"action": "core.noop"}, status=201).json
    # When it is read back alone and in the list
    one = api.get(f"/v1/executions/{posted['id']}").json
    listed = [row for row in api.get("/v1/executions?limit=50").json if row["id"] == posted["id"]]
    # Then every view shows the same record, liveaction included
    assert one == listed[0] == posted
    assert one["liveaction"]["action"] == "core.noop" and one["status"] == "requested"
