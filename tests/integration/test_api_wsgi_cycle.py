"""The API app's request cycle around the handlers (st2api/app.py): pecan's rules for empty answers,
request ids and CORS headers, each request on its own.

A small resource controller is served by setup_app with the real settings,
database and bus, through webtest as the other API tests do.
"""

from __future__ import annotations

import re

import pecan
import webob
import webtest
from test_api_support import api_settings, publisher, settings  # noqa: F401 (fixtures)

from st2api.app import setup_app
from st2api.controllers.base import Controller, Route
from st2api.controllers.v1 import CONTROLLERS
from testsupport import admin_token, make_settings

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class ProbeController(Controller):
    """Answers of each shape pecan treats apart."""

    resource = "probes"
    routes = (
        Route("GET", "none", "none"),
        Route("GET", "empty", "empty"),
        Route("GET", "silent-stream", "silent_stream"),
        Route("GET", "stream", "stream"),
        Route("GET", "not-modified", "not_modified"),
        Route("GET", "data", "data"),
        Route("GET", "request", "request"),
    )

    def none(self, call):
        return None

    def empty(self, call):
        return webob.Response(status=200, body=b"", content_type="application/json")

    def silent_stream(self, call):
        return webob.Response(status=200, app_iter=(part for part in ()), content_type="text/plain")

    def stream(self, call):
        return webob.Response(status=200, app_iter=(part for part in (b"one ", b"two")), content_type="text/plain")

    def not_modified(self, call):
        return webob.Response(status=304, content_type="application/json")

    def data(self, call):
        return {"ok": True}

    def request(self, call):
        # Handlers (and anything they call) may reach the request through pecan's context local.
        return {"path": pecan.request.path_info, "same": pecan.request.environ is call.request.environ}


def _app(settings, publisher, controllers=CONTROLLERS + (ProbeController,)):
    return webtest.TestApp(setup_app(settings, publisher, controllers=controllers))


def test_empty_answers_become_204_without_a_content_type_as_pecan_sends_them(api_settings, db, publisher):
    app = _app(api_settings, publisher)
    headers = {"X-Auth-Token": admin_token(api_settings)}
    # When a handler answers nothing, an empty 200 body, or a stream that yields nothing
    for path in ("none", "empty", "silent-stream"):
        response = app.get(f"/v1/probes/{path}", headers=headers)
        # Then the client gets a 204 with no body and no Content-Type
        assert response.status_int == 204, path
        assert response.body == b"" and "Content-Type" not in response.headers, path
    # And a 304 goes out without a Content-Type, a stream with a body as a 200 with it
    response = app.get("/v1/probes/not-modified", headers=headers, status=304)
    assert "Content-Type" not in response.headers
    response = app.get("/v1/probes/stream", headers=headers)
    assert response.status_int == 200 and response.body == b"one two"
    response = app.get("/v1/probes/data", headers=headers)
    assert response.status_int == 200 and response.json == {"ok": True}
    assert response.headers["Content-Type"] == "application/json"
    # And handlers see the request they serve through pecan.request
    assert app.get("/v1/probes/request", headers=headers).json == {"path": "/v1/probes/request", "same": True}


def test_every_request_gets_its_own_uuid4_request_id_unless_it_brings_one(api_settings, db, publisher):
    app = _app(api_settings, publisher)
    headers = {"X-Auth-Token": admin_token(api_settings)}
    # When many requests arrive without an X-Request-ID (more than one read of random bytes makes)
    seen = [app.get("/v1/probes/data", headers=headers).headers["X-Request-ID"] for _ in range(600)]
    # Then each answer carries a distinct uuid4
    assert len(set(seen)) == len(seen)
    assert all(UUID4.match(value) for value in seen)
    # And a request that names its id gets it back, errors included
    assert app.get("/v1/probes/data", headers={**headers, "X-Request-ID": "mine-1"}).headers["X-Request-ID"] == "mine-1"
    missing = app.get("/v1/nothing-here", headers={"X-Request-ID": "mine-2"}, status=404)
    assert missing.headers["X-Request-ID"] == "mine-2"


def test_cors_headers_follow_each_requests_origin(tmp_path, embedded_mongo, db, publisher):
    # Given an API allowing one origin
    allowed = "https://ui.example.com"
    settings = make_settings(tmp_path, embedded_mongo, extra={"ST2_API__ALLOW_ORIGIN": allowed})
    app = _app(settings, publisher)
    headers = {"X-Auth-Token": admin_token(settings)}
    # When requests from that origin, another one and none come in turn, twice
    for _ in range(2):
        for origin in (allowed, "https://evil.example.com", None):
            sent = dict(headers, Origin=origin) if origin else headers
            response = app.get("/v1/probes/data", headers=sent)
            # Then only the allowed origin is named back; the other CORS headers are always there
            assert response.headers.get("Access-Control-Allow-Origin") == (allowed if origin == allowed else None)
            assert response.headers["Access-Control-Allow-Credentials"] == "true"
            assert "X-Total-Count" in response.headers["Access-Control-Expose-Headers"]
            assert list(response.headers.keys()).count("X-Request-ID") == 1
