"""`st2 key ...`: our CLI and the official st2client 3.9.0 against the real API (served in a green thread)."""

from __future__ import annotations

import json

import pytest
from e2e.st2client_compat import official_st2, run_official, side_by_side  # noqa: F401 (session fixture)
from test_client import api_url, as_json, publisher, settings, st2  # noqa: F401 (fixtures)

from st2common.util import crypto


@pytest.fixture
def keys_url(settings, api_url):  # noqa: F811
    """The API, with a datastore key file as `st2ctl start` generates it."""
    crypto.write_key_file(settings.keyvalue.encryption_key_path)
    return api_url


def test_set_get_list_delete(keys_url):
    # When a key and a secret are set
    shown = st2(keys_url, "key", "set", "greeting", "hello")
    assert shown.exit_code == 0, shown.output
    assert [line.split("|")[1].strip() for line in shown.output.splitlines()[3:7]] == [
        "name", "value", "scope", "expire_timestamp"]
    assert as_json(st2(keys_url, "key", "set", "pw", "hunter2", "-e", "-j"))["value"] != "hunter2"
    # Then get shows the plain one and the secret's ciphertext, unless -d
    assert as_json(st2(keys_url, "key", "get", "greeting", "-j"))["value"] == "hello"
    assert as_json(st2(keys_url, "key", "get", "pw", "-j"))["value"] != "hunter2"
    assert as_json(st2(keys_url, "key", "get", "pw", "-d", "-j"))["value"] == "hunter2"
    # And list shows both (JSON in reverse, as StackStorm's CLI prints it), the table with its columns
    assert [k["name"] for k in as_json(st2(keys_url, "key", "list", "-j"))] == ["pw", "greeting"]
    table = st2(keys_url, "key", "list", "--prefix", "gree")
    assert "| name" in table.output and "greeting" in table.output and "pw" not in table.output
    # When one is deleted; Then it is gone, and deleting it again is an operation failure
    deleted = st2(keys_url, "key", "delete", "greeting")
    assert 'Resource with id "greeting" has been successfully deleted.' in deleted.output
    again = st2(keys_url, "key", "delete", "greeting")
    assert again.exit_code == 2 and 'Key Value Pair "greeting" is not found.' in again.output
    missing = st2(keys_url, "key", "get", "greeting")
    assert missing.exit_code == 1 and "not found" in missing.output


def test_ttl_user_scope_and_bad_input(keys_url):
    with_ttl = as_json(st2(keys_url, "key", "set", "brief", "x", "-l", "60", "-j"))
    assert with_ttl["expire_timestamp"].endswith("Z")
    mine = as_json(st2(keys_url, "key", "set", "mine", "x", "-s", "user", "-j"))
    assert mine["scope"] == "st2kv.user"
    assert [k["name"] for k in as_json(st2(keys_url, "key", "list", "-s", "user", "-j"))] == ["mine"]
    bad = st2(keys_url, "key", "set", "x", "y", "-l", "-5")
    assert bad.exit_code == 1 and "400 Client Error" in bad.output and "ttl" in bad.output
    both = st2(keys_url, "key", "set", "x", "y", "-e", "--encrypted")
    assert both.exit_code == 2


def test_load_reads_json_and_yaml_files(keys_url, tmp_path):
    items = tmp_path / "keys.yaml"
    items.write_text("- name: a\n  value: one\n- name: b\n  value: {nested: true}\n  secret: true\n")
    refused = st2(keys_url, "key", "load", str(items))
    assert refused.exit_code == 1 and "-c/--convert" in refused.output
    loaded = st2(keys_url, "key", "load", str(items), "-c", "-j")
    assert [k["name"] for k in as_json(loaded)] == ["a", "b"]
    assert as_json(st2(keys_url, "key", "get", "b", "-d", "-j"))["value"] == '{"nested": true}'
    single = tmp_path / "one.json"
    single.write_text(json.dumps({"name": "c", "value": "three", "ttl": 60}))
    assert st2(keys_url, "key", "load", str(single)).exit_code == 0
    assert "expire_timestamp" in as_json(st2(keys_url, "key", "get", "c", "-j"))
    deleted = st2(keys_url, "key", "delete_by_prefix", "-p", "a")
    assert "Deleted 1 keys" in deleted.output


def test_official_st2client_key_commands(keys_url, official_st2):  # noqa: F811
    def official(*args: str):
        done = run_official(list(args), keys_url)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    # When the official CLI sets a key, and a secret with a TTL (side by side: two keys of their own;
    # each run is a ~1 s process)
    greeting, secret = side_by_side([lambda: official("key", "set", "greeting", "hello"),
                                     lambda: official("key", "set", "pw", "hunter2", "--encrypt", "--ttl", "60", "-j")])
    assert greeting.returncode == 0, greeting.stdout
    assert secret.returncode == 0, secret.stdout
    stored = json.loads(secret.stdout)
    assert stored["value"] != "hunter2" and stored["expire_timestamp"]
    # Then its list shows both, the secret as ciphertext, and its get decrypts when asked
    listing, decrypted = side_by_side([lambda: official("key", "list", "-j"),
                                       lambda: official("key", "get", "pw", "--decrypt", "-j")])
    listed = {k["name"]: k for k in json.loads(listing.stdout)}
    assert listed["greeting"]["value"] == "hello" and listed["pw"]["value"] == stored["value"]
    assert listed["pw"]["encrypted"] is True and listed["pw"]["scope"] == "st2kv.system"
    assert json.loads(decrypted.stdout)["value"] == "hunter2"
    # When it deletes a key; Then the key is gone
    deleted = official("key", "delete", "greeting")
    assert deleted.returncode == 0 and "successfully deleted" in deleted.stdout
    assert official("key", "get", "greeting").returncode != 0
