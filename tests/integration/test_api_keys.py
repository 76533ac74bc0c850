"""/v1/keys through the REST API: StackStorm's shapes and errors, and secrets that never show in clear."""

from __future__ import annotations

import pytest
import webtest
from test_api_support import SECRET, api, api_settings, publisher, settings  # noqa: F401 (fixtures)

from st2common.services import triggertypes

# StackStorm's test key file and a value its API tests store pre-encrypted (see tests/unit/test_crypto.py).
ST2_KEY_FILE = ('{"hmacKey": {"hmacKeyString": "685EWJ8U2U_c3Ulv9ibB6aa0Y9aYm-0bCwe2mqjLJuw", "size": 256}, '
                '"aesKeyString": "eKGFrfNEUhAgX0uofaU1wQ", "mode": "CBC", "size": 128}')
ST2_CIPHERTEXT = ("3030303030298D848B45A24EDCD1A82FAB4E831E3FCE6E60956817A48A180E4C040801E"
                  "B30170DACF79498F30520236A629912C3584847098D")


@pytest.fixture
def keys(api, api_settings, publisher):
    """The API with StackStorm's test key as the datastore key and the system trigger types registered."""
    path = api_settings.keyvalue.encryption_key_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ST2_KEY_FILE)
    triggertypes.register_system_trigger_types(publisher)
    return api


def unguarded(api) -> webtest.TestApp:
    """The same app without the secret guard: for the requests that ask for decryption."""
    return webtest.TestApp(api.app)


def cli_set(api, name: str, value: str, status: int = 200, **extra):
    """PUT /v1/keys/<name> with the body `st2 key set` sends (short scope, null user, id = name)."""
    body = {"id": name, "name": name, "scope": "system", "user": None, "value": value, **extra}
    return api.put_json(f"/v1/keys/{name}", body, status=status)


def test_set_get_list_delete_with_stackstorms_shapes(keys):
    # When a key is set as the CLI sets it
    created = cli_set(keys, "api_url", "https://example.com").json
    # Then the answer is StackStorm's key-value pair document
    assert set(created) == {"id", "uid", "name", "value", "secret", "encrypted", "scope"}
    assert created["uid"] == "key_value_pair:st2kv.system:api_url" and created["scope"] == "st2kv.system"
    assert (created["secret"], created["encrypted"]) == (False, False)
    # And get and list (as the CLI asks for them) show it; the list is a plain array without a count
    assert keys.get("/v1/keys/api_url?decrypt=false&scope=system").json == created
    listed = keys.get("/v1/keys/?decrypt=false&scope=all&limit=50")
    assert listed.json == [created] and "X-Total-Count" not in listed.headers
    assert keys.get("/v1/keys").json == [created]
    # And the GET body is accepted back by PUT (as StackStorm's own tests do)
    assert keys.put_json("/v1/keys/api_url", dict(created, value="https://other")).json["value"] == "https://other"
    # When it is deleted; Then it is gone, and StackStorm's 404 names it
    assert keys.delete("/v1/keys/api_url?scope=system", status=204).body == b""
    missing = keys.get("/v1/keys/api_url", status=404).json
    assert missing == {"faultstring": "KeyValuePair with name: api_url and scope: st2kv.system not found in db."}
    keys.delete("/v1/keys/api_url", status=404)


def test_a_secret_is_never_shown_in_clear_unless_decrypt_is_asked(keys):
    # When a secret is set (the guard fails any response holding SECRET)
    stored = cli_set(keys, "db.password", SECRET, secret=True).json
    # Then every ordinary response shows ciphertext
    assert stored["encrypted"] is True and stored["secret"] is True and stored["value"] != SECRET
    assert keys.get("/v1/keys/db.password").json["value"] == stored["value"]
    assert keys.get("/v1/keys?scope=all").json[0]["value"] == stored["value"]
    # Including the trigger instances its write dispatched
    payloads = keys.get("/v1/triggerinstances?trigger=core.st2.key_value_pair.create").json
    assert [p["payload"]["object"]["name"] for p in payloads] == ["db.password"]
    # And the clear value comes back only with decrypt=true
    clear = unguarded(keys).get("/v1/keys/db.password?decrypt=true").json
    assert (clear["value"], clear["encrypted"], clear["secret"]) == (SECRET, False, True)
    assert unguarded(keys).get("/v1/keys?decrypt=true").json[0]["value"] == SECRET


def test_a_value_pre_encrypted_by_stackstorm_is_accepted_and_decrypts(keys):
    # Given a value StackStorm encrypted with the key this datastore uses
    stored = cli_set(keys, "secret_key1", ST2_CIPHERTEXT, encrypted=True).json
    # Then it is stored as-is, as a secret
    assert (stored["value"], stored["secret"], stored["encrypted"]) == (ST2_CIPHERTEXT, True, True)
    assert keys.get("/v1/keys/secret_key1?decrypt=true").json["value"] == "S3cret!Value"
    # And a corrupted one is refused in StackStorm's words
    refused = cli_set(keys, "secret_key2", "corrupted", status=400, encrypted=True).json
    assert refused["faultstring"].startswith(
        'Failed to verify the integrity of the provided value for key "secret_key2".')


def test_user_scope_keys_belong_to_the_requester(keys):
    cli_set(keys, "shared", "s")
    mine = keys.put_json("/v1/keys/shared", {"name": "shared", "value": "u", "scope": "user"}).json
    assert (mine["scope"], mine["user"], mine["uid"]) == ("st2kv.user", "stanley",
                                                          "key_value_pair:st2kv.user:stanley:shared")
    assert [(k["scope"], k["value"]) for k in keys.get("/v1/keys?scope=all").json] == [
        ("st2kv.system", "s"), ("st2kv.user", "u")]
    assert [k["value"] for k in keys.get("/v1/keys?scope=st2kv.user").json] == ["u"]
    assert keys.get("/v1/keys/shared?scope=user").json["value"] == "u"
    # Another user's keys may not be asked for while there is no RBAC, as in StackStorm
    for request in (lambda: keys.get("/v1/keys?user=alice", status=403),
                    lambda: keys.get("/v1/keys/shared?user=alice", status=403),
                    lambda: keys.delete("/v1/keys/shared?scope=user&user=alice", status=403),
                    lambda: keys.put_json("/v1/keys/x", {"value": "1", "scope": "user", "user": "alice"},
                                          status=403)):
        assert request().json["faultstring"] == '"user" attribute can only be provided by admins when RBAC is enabled'
    keys.delete("/v1/keys/shared?scope=user", status=204)
    assert keys.get("/v1/keys/shared").json["value"] == "s"


def test_prefix_and_ttl(keys):
    for name in ("app.a", "app.b", "other"):
        cli_set(keys, name, "x")
    assert [k["name"] for k in keys.get("/v1/keys?prefix=app.").json] == ["app.a", "app.b"]
    assert keys.get("/v1/keys?prefix=zzz").json == []
    with_ttl = cli_set(keys, "brief", "x", ttl=30).json
    assert with_ttl["expire_timestamp"].endswith("Z")


@pytest.mark.parametrize("body, field", [
    ({"value": "x", "ttl": 0}, "ttl"),
    ({"value": "x", "ttl": -5}, "ttl"),
    ({"value": "x", "ttl": "soon"}, "ttl"),
    ({"name": "x"}, "'value' is a required property"),
    ({"value": 5}, "value"),
    ({"value": "x", "colour": "red"}, "colour"),
    ({"value": "x", "scope": "st2"}, "Scope st2 is not in allowed scopes list"),
])
def test_bad_bodies_are_400_naming_the_field(keys, body, field):
    assert field in keys.put_json("/v1/keys/x", body, status=400).json["faultstring"]
    assert keys.get("/v1/keys").json == []


def test_bad_queries_are_refused(keys):
    assert keys.get("/v1/keys?scope=st2", status=400).json["faultstring"] == "Invalid scope: st2"
    assert "allowed scopes" in keys.get("/v1/keys/x?scope=st2", status=400).json["faultstring"]
    assert "must be a positive number" in keys.get("/v1/keys?limit=0", status=400).json["faultstring"]
    assert keys.get("/v1/keys?decrypt=maybe", status=400).json["faultstring"] == \
        'Parameter "decrypt" is not of type boolean'


def test_without_a_key_file_a_secret_is_a_400(api):
    refused = cli_set(api, "pw", SECRET, status=400, secret=True).json
    assert refused["faultstring"].startswith("Crypto key not found in ")
    assert api.get("/v1/keys").json == []
