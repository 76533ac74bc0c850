"""Authentication and roles through the real API and auth apps: tokens, API keys, 401s, 403s, who am I."""

from __future__ import annotations

import base64
import re
import time

import pytest
import webtest
from test_api_support import SHIPPED, api_settings, publisher, settings, write  # noqa: F401 (fixtures)

from st2api.app import setup_app, setup_auth_app
from st2api.auth import NO_CREDENTIALS
from st2api.controllers.base import Controller
from st2common.content import register
from st2common.models.db.auth import TokenDB
from st2common.models.db.execution import ExecutionDB
from st2common.services import tokens, users
from st2common.util import crypto
from testsupport import make_settings

PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "carol": "carol-pw-3"}
ROLES = {"alice": ["observer"], "bob": ["admin"]}


@pytest.fixture
def auth_settings(tmp_path, embedded_mongo):
    """Settings with an htpasswd file of three users: alice observes, bob administers, carol has no role."""
    for user, roles in ROLES.items():
        write(tmp_path / "var" / "rbac" / "assignments" / f"{user}.yaml",
              f"username: {user}\nroles: {roles}\n")
    settings = make_settings(tmp_path, embedded_mongo, extra={
        "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(SHIPPED),
        "ST2_CONTENT__PACKS_BASE_PATHS": str(tmp_path / "packs"),
        "ST2_AUTH__CREDENTIAL_CACHE_TTL": "0.3",
    })
    crypto.write_key_file(settings.keyvalue.encryption_key_path)
    for user, password in PASSWORDS.items():
        # bcrypt's cheapest cost: the suite logs in often, and the cost is not under test.
        users.add_user(settings.auth.flat_file_path, user, password, rounds=4)
    return settings


@pytest.fixture
def settings(auth_settings):  # noqa: F811 (the db fixture connects with these)
    return auth_settings


@pytest.fixture
def apps(auth_settings, db, publisher):  # noqa: F811
    """(API app, auth app), content registered."""
    report = register(auth_settings, kinds=["actions"])
    assert report.ok, report.errors
    return (webtest.TestApp(setup_app(auth_settings, publisher)),
            webtest.TestApp(setup_auth_app(auth_settings, publisher)))


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def login(auth_app, user: str, **body) -> str:
    response = auth_app.post_json("/tokens", body, headers=basic(user, PASSWORDS[user]), status=201)
    return response.json["token"]


def example_path(controller: Controller, pattern: str) -> str:
    parts = ["x" if part.startswith("{") else part for part in pattern.split("/") if part]
    return "/v1/" + "/".join([controller.resource, *parts])


def test_every_route_but_token_creation_and_the_root_answers_401_without_credentials(apps):
    api, auth_app = apps
    # Given every route the two apps serve, found by walking their routing tables
    checked = 0
    for app in (api, auth_app):
        for controller in app.app.router.controllers.values():
            for route in controller.routes:
                path = example_path(controller, route.pattern)
                response = app.request(path, method=route.method, body=b"{}", status="*",
                                       headers={"Content-Type": "application/json"})
                # Then each one refuses a request without credentials; token creation asks for a password
                if route.public:
                    assert response.json == {"faultstring": "Invalid or missing credentials"}, path
                    continue
                assert response.status_int == 401, f"{route.method} {path}: {response.status_int} {response.text}"
                assert response.json == {"faultstring": NO_CREDENTIALS}
                checked += 1
    assert checked > 60
    # And the root answers anyone
    assert api.get("/v1/").json["version"]


def test_a_token_from_the_auth_port_and_from_the_api_port(apps, auth_settings):
    api, auth_app = apps
    # When bob logs in on the auth port and on /auth/v1/tokens of the API port
    for app, path in ((auth_app, "/tokens"), (auth_app, "/v1/tokens"), (api, "/auth/v1/tokens")):
        response = app.post_json(path, {"ttl": 60}, headers=basic("bob", PASSWORDS["bob"]), status=201)
        body = response.json
        # Then he gets StackStorm's token document and the API's URL
        assert set(body) == {"id", "user", "token", "expiry", "metadata", "service"}
        assert body["user"] == "bob" and re.fullmatch(r"[0-9a-f]{32}", body["token"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", body["expiry"])
        assert response.headers["X-API-URL"] == f"http://127.0.0.1:{auth_settings.api.port}"
        # And the token is not stored in the clear
        assert not TokenDB.objects(token_hash=body["token"]).first()
        assert api.get("/v1/actions", headers={"X-Auth-Token": body["token"]}).status_int == 200


def test_wrong_credentials_and_too_long_ttls_are_refused(apps):
    _, auth_app = apps
    wrong = auth_app.post_json("/tokens", {}, headers=basic("bob", "nope"), status=401)
    assert wrong.json == {"faultstring": "Invalid or missing credentials"}
    assert auth_app.post_json("/tokens", {}, headers=basic("mallory", "x"), status=401)
    assert auth_app.post_json("/tokens", {}, status=401)
    assert auth_app.post_json("/tokens", {}, headers={"Authorization": "Bearer abc"}, status=401)
    too_long = auth_app.post_json("/tokens", {"ttl": 10 ** 7}, headers=basic("bob", PASSWORDS["bob"]), status=400)
    assert too_long.json["faultstring"] == "TTL specified 10000000 is greater than max allowed 86400."


def test_tokens_and_api_keys_open_the_api_as_headers_and_query_parameters(apps):
    api, auth_app = apps
    token = login(auth_app, "bob")
    key = api.post_json("/v1/apikeys", {}, headers={"X-Auth-Token": token}, status=201).json["key"]
    # Then each of the four ways in works
    assert api.get("/v1/actions", headers={"X-Auth-Token": token}).status_int == 200
    assert api.get("/v1/actions", headers={"St2-Api-Key": key}).status_int == 200
    assert api.get(f"/v1/actions?x-auth-token={token}").status_int == 200
    assert api.get(f"/v1/actions?st2-api-key={key}").status_int == 200
    # And the first credential present wins, even when a valid one follows
    refused = api.get("/v1/actions", headers={"X-Auth-Token": "0" * 32, "St2-Api-Key": key}, status=401)
    assert refused.json == {"faultstring": "Unauthorized"}
    # And a token request sets StackStorm's cookie, which opens the API on its own
    cookie = api.get("/v1/actions", headers={"X-Auth-Token": token}).headers["Set-Cookie"]
    assert cookie.startswith(f"auth-token={token};") and "HttpOnly" in cookie
    api.reset()


def test_an_expired_token_and_a_disabled_key_are_refused(apps):
    api, auth_app = apps
    short = login(auth_app, "bob", ttl=1)
    assert api.get("/v1/actions", headers={"X-Auth-Token": short}).status_int == 200
    time.sleep(1.2)
    expired = api.get("/v1/actions", headers={"X-Auth-Token": short}, status=401)
    assert expired.json == {"faultstring": "Unauthorized - Token has expired."}
    # And a key disabled through the API is refused at once
    token = login(auth_app, "bob")
    created = api.post_json("/v1/apikeys", {}, headers={"X-Auth-Token": token}, status=201).json
    assert api.get("/v1/actions", headers={"St2-Api-Key": created["key"]}).status_int == 200
    shown = api.get(f"/v1/apikeys/{created['id']}", headers={"X-Auth-Token": token}).json
    api.put_json(f"/v1/apikeys/{created['id']}", {**shown, "enabled": False}, headers={"X-Auth-Token": token})
    disabled = api.get("/v1/actions", headers={"St2-Api-Key": created["key"]}, status=401)
    assert disabled.json == {"faultstring": "Unauthorized - API key is disabled."}


def test_a_revoked_token_stops_working_within_the_cache_time(apps):
    api, auth_app = apps
    token = login(auth_app, "bob")
    assert api.get("/v1/actions", headers={"X-Auth-Token": token}).status_int == 200
    tokens.revoke(token)
    time.sleep(0.4)
    assert api.get("/v1/actions", headers={"X-Auth-Token": token}, status=401)


def test_validate_says_whether_a_token_is_valid(apps):
    _, auth_app = apps
    token = login(auth_app, "bob")
    headers = {"X-Auth-Token": token}
    assert auth_app.post_json("/tokens/validate", {"token": token}, headers=headers).json == {"valid": True}
    assert auth_app.post_json("/tokens/validate", {"token": "f" * 32}, headers=headers).json == {"valid": False}
    assert auth_app.post_json("/tokens/validate", {}, headers=headers, status=400)
    assert auth_app.post_json("/tokens/validate", {"token": token}, status=401)


def test_api_key_listings_never_show_the_key(apps):
    api, auth_app = apps
    admin, observer = login(auth_app, "bob"), login(auth_app, "alice")
    created = api.post_json("/v1/apikeys", {"metadata": {"used_by": "ci"}}, headers={"X-Auth-Token": admin},
                            status=201).json
    assert set(created) == {"id", "uid", "user", "key", "metadata", "created_at", "enabled"}
    listed = api.get("/v1/apikeys", headers={"X-Auth-Token": admin})
    for shown in listed.json + [api.get(f"/v1/apikeys/{created['key']}", headers={"X-Auth-Token": admin}).json]:
        assert created["key"] not in str(shown) and shown["key_hash"] == "********"
    assert listed.headers["X-Limit"] == "50"
    # An admin may see the hash; anyone else asking still gets the mask
    revealed = api.get("/v1/apikeys?show_secrets=true", headers={"X-Auth-Token": admin}).json
    assert len(revealed[0]["key_hash"]) == 128
    assert api.get("/v1/apikeys?show_secrets=true", headers={"X-Auth-Token": observer}).json == []
    api.delete(f"/v1/apikeys/{created['id']}", headers={"X-Auth-Token": admin}, status=204)
    assert api.get("/v1/actions", headers={"St2-Api-Key": created["key"]}, status=401)
    assert api.get(f"/v1/apikeys/{created['id']}", headers={"X-Auth-Token": admin}, status=404)
    # And a saved key is restored by its hash (st2 apikey load), without a new raw key
    saved = revealed[0]["key_hash"]
    loaded = api.post_json("/v1/apikeys", {"key_hash": saved, "user": "bob"}, headers={"X-Auth-Token": admin},
                           status=201).json
    assert "key" not in loaded
    assert api.get("/v1/actions", headers={"St2-Api-Key": created["key"]}).status_int == 200
    api.post_json("/v1/apikeys", {"key_hash": saved}, headers={"X-Auth-Token": admin}, status=409)
    api.post_json("/v1/apikeys", {"key_hash": "abc"}, headers={"X-Auth-Token": admin}, status=400)


def test_an_observer_reads_but_cannot_create_or_run(apps):
    api, auth_app = apps
    observer = {"X-Auth-Token": login(auth_app, "alice")}
    assert api.get("/v1/actions/core.local", headers=observer).status_int == 200
    run = api.post_json("/v1/executions", {"action": "core.noop"}, headers=observer, status=403)
    assert run.json["faultstring"] == 'User "alice" doesn\'t have required permission "execution_create"'
    action = {"name": "mine", "pack": "core", "runner_type": "noop", "entry_point": ""}
    api.post_json("/v1/actions", action, headers=observer, status=403)
    assert ExecutionDB.objects.count() == 0
    # But the POSTs that change nothing are reads
    inspected = api.post("/v1/workflows/inspect", "version: 1.0\ntasks: {}\n", headers=observer,
                         content_type="text/plain")
    assert inspected.status_int == 200
    # A user with no role may only ask who they are
    nobody = {"X-Auth-Token": login(auth_app, "carol")}
    api.get("/v1/actions", headers=nobody, status=403)
    assert api.get("/v1/user", headers=nobody, status=403)


def test_the_requester_is_recorded_and_reported(apps):
    api, auth_app = apps
    admin = {"X-Auth-Token": login(auth_app, "bob")}
    execution = api.post_json("/v1/executions", {"action": "core.noop"}, headers=admin, status=201).json
    assert execution["context"]["user"] == "bob"
    me = api.get("/v1/user", headers=admin).json
    assert me["username"] == "bob" and me["rbac"] == {"enabled": True, "roles": ["admin"], "is_admin": True}
    assert me["authentication"]["method"] == "authentication token"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", me["authentication"]["token_expire"])
    key = api.post_json("/v1/apikeys", {}, headers=admin, status=201).json["key"]
    by_key = api.get("/v1/user", headers={"St2-Api-Key": key}).json
    assert by_key["authentication"] == {"method": "API key", "location": "header"}


def test_user_scoped_keys_are_their_owners_alone(apps):
    api, auth_app = apps
    bob = {"X-Auth-Token": login(auth_app, "bob")}
    alice = {"X-Auth-Token": login(auth_app, "alice")}
    api.put_json("/v1/keys/note", {"name": "note", "value": "bob's", "scope": "user"}, headers=bob)
    assert api.get("/v1/keys/note?scope=user", headers=bob).json["value"] == "bob's"
    api.get("/v1/keys/note?scope=user", headers=alice, status=404)
    assert [k["name"] for k in api.get("/v1/keys?scope=all", headers=alice).json] == []
    # And decrypting a system item takes an admin; the owner may decrypt their own
    api.put_json("/v1/keys/pw", {"name": "pw", "value": "hidden-1", "secret": True}, headers=bob)
    refused = api.get("/v1/keys/pw?decrypt=true", headers=alice, status=403)
    assert refused.json["faultstring"] == "Decrypt option requires administrator access"
    assert api.get("/v1/keys/pw?decrypt=true", headers=bob).json["value"] == "hidden-1"
    api.put_json("/v1/keys/mine", {"name": "mine", "value": "own-1", "secret": True, "scope": "user"}, headers=bob)
    assert api.get("/v1/keys/mine?scope=user&decrypt=true", headers=bob).json["value"] == "own-1"


def test_with_auth_disabled_the_api_is_open_as_the_system_user(tmp_path, embedded_mongo, db, publisher):
    settings = make_settings(tmp_path, embedded_mongo, extra={"ST2_AUTH__ENABLE": "false"})
    api = webtest.TestApp(setup_app(settings, publisher))
    assert api.get("/v1/user").json["username"] == settings.system_user.user


def test_bodies_over_the_limit_are_413_before_authentication(apps):
    api, _ = apps
    body = b"x" * (11 * 1024 * 1024)
    response = api.post("/v1/executions", body, content_type="application/json", status=413)
    assert "maximum" in response.json["faultstring"]
