"""The API test client, its fixtures, and the conventions every endpoint shares.

Every API test goes through GuardedApp: it fails any response that contains a
planted secret (unless the request asked for show_secrets=true), and any error
response that is not a {"faultstring": ...} body. The app runs against the real
embedded database and the filesystem bus; the shipped core pack and a test pack
with secret parameters are registered first.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
import webtest
import webob

from testsupport import PLANTED_SECRETS, api_app, guarded, make_settings
from st2common.content import register
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "contrib" / "packs"

# Values that must never appear in a response: a secret given at request time,
# a secret parameter's default, and a secret nested inside an object parameter.
SECRET = "planted-secret-7f1c93"
DEFAULT_SECRET = "planted-default-91ab0e"
NESTED_SECRET = "planted-nested-55d2aa"
PLANTED = (SECRET, DEFAULT_SECRET, NESTED_SECRET)
PLANTED_SECRETS.update(PLANTED)

SECRETIVE_ACTION = f"""\
name: secretive
runner_type: local-shell-cmd
description: An action with secret parameters.
enabled: true
parameters:
  cmd:
    type: string
    default: "true"
  password:
    type: string
    secret: true
    required: true
  api_key:
    type: string
    secret: true
    default: {DEFAULT_SECRET}
  count:
    type: integer
    default: 1
  creds:
    type: object
    properties:
      token:
        type: string
        secret: true
      user:
        type: string
  mode:
    type: string
    enum: [fast, slow]
"""

SCRIPT_ACTION = """\
name: script
runner_type: local-shell-script
description: A shell script action.
entry_point: script.sh
parameters:
  name:
    type: string
    position: 0
"""


class GuardedApp(webtest.TestApp):
    """webtest's TestApp over api_app (credentials, planted secrets) that also checks error bodies."""

    def do_request(self, req, status=None, expect_errors=None):
        response = super().do_request(req, status=status, expect_errors=expect_errors)
        if response.status_int >= 400:
            assert set(response.json) - {"conflict-id"} == {"faultstring"}, response.text
        return response


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def api_settings(tmp_path, embedded_mongo):
    """Settings searching the shipped packs, then this test's packs (with the `apitest` pack)."""
    packs = tmp_path / "packs"
    write(packs / "apitest" / "pack.yaml",
          "name: apitest\ndescription: API test pack.\nversion: 0.1.0\nauthor: tester\nemail: t@example.com\n")
    write(packs / "apitest" / "actions" / "secretive.yaml", SECRETIVE_ACTION)
    write(packs / "apitest" / "actions" / "script.yaml", SCRIPT_ACTION)
    write(packs / "apitest" / "actions" / "script.sh", "#!/bin/sh\necho \"hello $1\"\n")
    return make_settings(tmp_path, embedded_mongo, extra={
        "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(SHIPPED),
        "ST2_CONTENT__PACKS_BASE_PATHS": str(packs),
        "ST2_WEBUI__WEBUI_BASE_URL": "https://st2.example.com",
    })


@pytest.fixture
def publisher(api_settings):
    """A publisher on the test's own bus, with every work queue declared."""
    pub = Publisher(make_connection(api_settings.messaging), Topology(api_settings.messaging.prefix))
    pub.declare_work_queues()
    yield pub
    pub.close()


@pytest.fixture
def settings(api_settings):
    """The db fixture connects with these settings."""
    return api_settings


@pytest.fixture
def api(api_settings, db, publisher) -> GuardedApp:
    """The API on a freshly registered database: runner types, core and apitest."""
    report = register(api_settings, kinds=["actions"])
    assert report.ok, report.errors
    return GuardedApp(api_app(api_settings, publisher))


def drain(settings, queue_name: str, timeout: float = 5.0, expect: int = 1) -> list[dict]:
    """The message bodies on a work queue, waiting until expect arrived or timeout."""
    topology = Topology(settings.messaging.prefix)
    bodies: list[dict] = []
    deadline = time.monotonic() + timeout
    with make_connection(settings.messaging) as conn:
        queue = topology.work_queue(queue_name)(conn.default_channel)
        while len(bodies) < expect and time.monotonic() < deadline:
            message = queue.get(no_ack=True)
            if message is None:
                time.sleep(0.01)
                continue
            bodies.append(message.payload)
    return bodies


# -- conventions every endpoint shares ---------------------------------------------------------


def test_the_root_answers_under_every_prefix(api):
    # When the API root is asked for under each served prefix
    for path in ("/", "/v1", "/v1/", "/api/v1", "/api/v1/"):
        # Then it says what it is
        assert api.get(path).json["version"]


def test_resources_answer_under_v1_api_v1_and_bare_paths_with_a_trailing_slash(api):
    # Given the core pack is registered
    # When the same action is asked for through every prefix, with and without a trailing slash
    for path in ("/v1/actions/core.noop", "/api/v1/actions/core.noop", "/actions/core.noop",
                 "/v1/actions/core.noop/", "/api/v1/actions/core.noop/"):
        # Then each gives the same action
        assert api.get(path).json["ref"] == "core.noop"
    # And a query string after the trailing slash is read
    assert len(api.get("/v1/actions/?pack=core&limit=2").json) == 2


def test_an_unknown_route_is_a_404_faultstring(api):
    # When a path nothing serves is asked for
    response = api.get("/v1/nothing/here", status=404)
    # Then the answer is StackStorm's
    assert response.json == {"faultstring": "The resource could not be found."}


def test_options_is_answered_empty_with_cors_headers_for_configured_origins_only(tmp_path, embedded_mongo, db,
                                                                                 publisher):
    # Given an API allowing one origin
    settings = make_settings(tmp_path, embedded_mongo, extra={"ST2_API__ALLOW_ORIGIN": "https://ui.example"})
    app = GuardedApp(api_app(settings, publisher))
    # When a browser sends a pre-flight request from it
    response = app.options("/v1/executions", headers={"Origin": "https://ui.example"})
    # Then it gets an empty 200 with the CORS headers
    assert response.status_int == 200 and response.body == b""
    assert response.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    assert "X-Total-Count" in response.headers["Access-Control-Expose-Headers"]
    # And another origin is not allowed
    other = app.options("/v1/executions", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_no_origin_is_allowed_by_default(api):
    response = api.get("/v1/packs", headers={"Origin": "http://127.0.0.1:3000"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_every_response_carries_cors_headers_and_a_request_id(api):
    # When a request fails
    response = api.get("/v1/actions/no.such", status=404, headers={"X-Request-ID": "abc-123"})
    # Then it still carries the CORS headers and echoes the request id
    assert response.headers["Access-Control-Allow-Methods"] == "GET,POST,PUT,DELETE,OPTIONS"
    assert response.headers["X-Request-ID"] == "abc-123"
    # And a request without an id gets one
    assert len(api.get("/v1/packs").headers["X-Request-ID"]) == 36


def test_a_malformed_body_is_a_400_naming_the_problem(api):
    # When the body is not JSON
    response = api.post("/v1/executions", "{not json", content_type="application/json", status=400)
    # Then the faultstring says so
    assert response.json["faultstring"].startswith("Failed to parse request body")


def test_a_body_over_the_size_limit_is_refused(tmp_path, embedded_mongo, db, publisher):
    # Given an API whose bodies may not exceed 100 bytes
    settings = make_settings(tmp_path, embedded_mongo, extra={"ST2_API__MAX_BODY_SIZE": "100"})
    app = GuardedApp(api_app(settings, publisher))
    # When a larger body is posted
    response = app.post_json("/v1/executions", {"action": "core.noop", "parameters": {"x": "y" * 200}},
                             status=413)
    # Then it is refused before anything is read
    assert "100 bytes" in response.json["faultstring"]


def test_a_bad_query_parameter_type_is_a_400_naming_it(api):
    # When limit is not an integer, or show_secrets not a boolean
    bad_limit = api.get("/v1/executions?limit=ten", status=400)
    bad_flag = api.get("/v1/executions?show_secrets=perhaps", status=400)
    # Then each names the parameter, in StackStorm's words
    assert bad_limit.json["faultstring"] == 'Parameter "limit" is not of type integer'
    assert bad_flag.json["faultstring"] == 'Parameter "show_secrets" is not of type boolean'


def test_the_guard_fails_a_response_that_leaks_a_secret(api, api_settings):
    # Given the real response to a request that asked for secrets
    revealed = api.get("/v1/actions/apitest.secretive?show_secrets=true")
    assert DEFAULT_SECRET in revealed.text

    def replay(environ, start_response):
        return webob.Response(body=revealed.body, content_type="application/json")(environ, start_response)

    # When the guard sees that body answer a request that did not ask for secrets
    # Then it fails the test
    with pytest.raises(AssertionError, match="leaked a secret"):
        GuardedApp(guarded(replay, api_settings)).get("/v1/actions/apitest.secretive")
