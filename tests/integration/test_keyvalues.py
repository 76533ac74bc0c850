"""The datastore service on the embedded database: scopes, TTL, prefixes, encryption, triggers, templates."""

from __future__ import annotations

import time

import eventlet
import pytest

from st2common import parameters, statuses
from st2common.exceptions import AccessDeniedError, NotFoundError, ParameterError, ValidationError
from st2common.models.db.keyvalue import KeyValuePairDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.persistence.access import Access
from st2common.services import keyvalues, triggertypes
from st2common.templating import st2kv_context
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from st2common.util import crypto
from test_lifecycle import start_platform  # noqa: F401 (fixture)


@pytest.fixture
def publisher(settings):
    pub = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
    pub.declare_work_queues()
    yield pub
    pub.close()


@pytest.fixture
def store(settings, db, publisher) -> keyvalues.Datastore:
    """The datastore with its key file generated and the key_value_pair trigger types registered."""
    crypto.write_key_file(settings.keyvalue.encryption_key_path)
    triggertypes.register_system_trigger_types(publisher)
    return keyvalues.Datastore(settings, publisher)


def stored(name: str, **filters) -> list[KeyValuePairDB]:
    """What the database holds under name, expired or not."""
    return Access(KeyValuePairDB).query({"name": name, **filters})


def instances(operation: str) -> list[dict]:
    ref = keyvalues.TRIGGERS[operation]
    return [i.payload for i in Access(TriggerInstanceDB).query({"trigger": ref}, order_by=["occurrence_time"])]


# -- scopes ------------------------------------------------------------------------------------


def test_system_and_user_scopes_are_separate_and_user_items_private(store):
    # Given a system item and two users' items under the same name
    store.set("region", "eu-west-1")
    store.set("region", "alice-region", scope="user", requester="alice", is_admin=False)
    store.set("region", "bob-region", scope="st2kv.user", requester="bob", is_admin=False)
    # Then each reader sees the system item and only their own user item
    assert store.get("region")["value"] == "eu-west-1"
    alice = store.get("region", scope="user", requester="alice", is_admin=False)
    assert (alice["value"], alice["user"], alice["scope"], alice["name"]) == (
        "alice-region", "alice", "st2kv.user", "region")
    assert alice["uid"] == "key_value_pair:st2kv.user:alice:region"
    listed = store.list(scope="all", requester="bob", is_admin=False)
    assert [(i["scope"], i.get("user"), i["value"]) for i in listed] == [
        ("st2kv.system", None, "eu-west-1"), ("st2kv.user", "bob", "bob-region")]
    # And another user's item is invisible to a non-administrator, who may not ask for it by name
    with pytest.raises(NotFoundError, match="KeyValuePair with name: carol:region and scope: st2kv.user"):
        store.get("region", scope="user", requester="carol", is_admin=False)
    with pytest.raises(AccessDeniedError, match='"user" attribute can only be provided by admins'):
        store.get("region", scope="user", user="alice", requester="bob", is_admin=False)
    with pytest.raises(AccessDeniedError):
        store.list(scope="user", user="alice", requester="bob", is_admin=False)
    # While an administrator may
    assert store.get("region", scope="user", user="alice")["value"] == "alice-region"
    # And setting again replaces, never duplicates
    store.set("region", "us-east-1")
    assert [d.value for d in stored("region", scope="st2kv.system")] == ["us-east-1"]


def test_bad_scope_and_bad_values_are_refused_naming_the_field(store):
    with pytest.raises(ValidationError, match=r"Scope st2 is not in allowed scopes list: \['system', 'user'") as bad:
        store.set("x", "1", scope="st2")
    assert bad.value.field == "scope"
    with pytest.raises(ValidationError, match="must be a string") as not_text:
        store.set("x", 5)
    assert not_text.value.field == "value"
    for ttl in (0, -1, "5", 1.5, True):
        with pytest.raises(ValidationError, match="ttl must be a positive integer") as bad_ttl:
            store.set("x", "1", ttl=ttl)
        assert bad_ttl.value.field == "ttl"
    assert stored("x") == []


# -- TTL ---------------------------------------------------------------------------------------


def test_an_item_with_ttl_1_is_gone_after_2_seconds_and_purged(store):
    # Given items set with a TTL of 1 second, and one without
    started = time.monotonic()
    store.set("short", "lived", ttl=1)
    # Read at once: under load the other writes below can take most of the second.
    try:
        shown = store.get("short")
    except NotFoundError:
        # Only a machine so busy that the set and this read took the whole second gets here.
        assert time.monotonic() - started >= 1.0, "the item was gone before its second was up"
    else:
        assert shown["value"] == "lived" and shown["expire_timestamp"].endswith("Z")
    store.set("short.secret", "lived", ttl=1, secret=True)
    store.set("long", "lived")
    # When 2 seconds have passed
    time.sleep(max(0.0, 2.0 - (time.monotonic() - started)))
    # Then every read has lost them at once
    with pytest.raises(NotFoundError):
        store.get("short")
    assert [i["name"] for i in store.list()] == ["long"]
    assert store.lookup("short") is None
    with pytest.raises(NotFoundError):
        store.delete("short")
    # And after a purge (or the database's TTL index) nothing of them is stored
    store.purge_expired()
    assert stored("short") == [] and stored("short.secret") == []
    assert [d.name for d in Access(KeyValuePairDB).query()] == ["long"]


def test_setting_an_item_again_without_ttl_clears_its_expiry(store):
    store.set("k", "v1", ttl=60)
    assert "expire_timestamp" in store.get("k")
    store.set("k", "v2")
    item = store.get("k")
    assert item["value"] == "v2" and "expire_timestamp" not in item


def test_the_periodic_purge_runs_until_stopped(store):
    purge = keyvalues.PeriodicPurge(store, interval=0.05).start()
    try:
        store.set("brief", "x", ttl=1)
        deadline = time.monotonic() + 5
        while stored("brief") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stored("brief") == []
    finally:
        purge.stop()


# -- listing -----------------------------------------------------------------------------------


def test_list_filters_by_prefix_literally_and_pages_each_scope(store):
    for name in ("app.b", "app.a", "appxc", "other"):
        store.set(name, name.upper())
    store.set("app.mine", "x", scope="user")
    # A prefix is literal text: "app." does not match "appxc"
    assert [i["name"] for i in store.list(prefix="app.", scope="system")] == ["app.a", "app.b"]
    assert [i["name"] for i in store.list(prefix="app.")] == ["app.a", "app.b", "app.mine"]
    assert [i["name"] for i in store.list(prefix="nothing")] == []
    assert [i["name"] for i in store.list(name="other")] == ["other"]
    # limit and offset apply to the system part and the user part each (StackStorm's behaviour)
    assert [i["name"] for i in store.list(limit=2)] == ["app.a", "app.b", "app.mine"]
    assert [i["name"] for i in store.list(limit=2, offset=2, scope="system")] == ["appxc", "other"]


# -- secrets -----------------------------------------------------------------------------------


def test_a_secret_is_stored_encrypted_and_decrypted_only_when_asked(store, settings):
    # When a secret is set
    shown = store.set("db.password", "hunter2", secret=True)
    # Then the database holds ciphertext that the key file decrypts
    (doc,) = stored("db.password")
    assert doc.value != "hunter2" and doc.secret and doc.encrypted
    key = crypto.read_key(settings.keyvalue.encryption_key_path)
    assert crypto.symmetric_decrypt(key, doc.value) == "hunter2"
    # And reads show the ciphertext, unless decrypt is asked for
    assert shown["value"] == doc.value and shown["encrypted"] is True and shown["secret"] is True
    assert store.get("db.password")["value"] == doc.value
    clear = store.get("db.password", decrypt=True)
    assert (clear["value"], clear["encrypted"], clear["secret"]) == ("hunter2", False, True)
    assert [i["value"] for i in store.list(decrypt=True)] == ["hunter2"]
    # And only an administrator decrypts a system secret; a user decrypts their own
    with pytest.raises(AccessDeniedError, match="Decrypt option requires administrator access"):
        store.get("db.password", decrypt=True, requester="alice", is_admin=False)
    store.set("token", "alice-token", scope="user", secret=True, requester="alice", is_admin=False)
    mine = store.get("token", scope="user", decrypt=True, requester="alice", is_admin=False)
    assert mine["value"] == "alice-token"


def test_a_pre_encrypted_value_is_verified_and_stored_as_is(store, settings):
    key = crypto.read_key(settings.keyvalue.encryption_key_path)
    ciphertext = crypto.symmetric_encrypt(key, "S3cret!Value")
    shown = store.set("pre", ciphertext, encrypted=True)
    assert (shown["value"], shown["secret"], shown["encrypted"]) == (ciphertext, True, True)
    assert store.get("pre", decrypt=True)["value"] == "S3cret!Value"
    with pytest.raises(ValidationError, match='Failed to verify the integrity of the provided value for key "bad"'):
        store.set("bad", "corrupted", encrypted=True)
    with pytest.raises(ValidationError, match="Failed to verify"):
        store.set("bad", ciphertext[:-2], encrypted=True)
    with pytest.raises(AccessDeniedError, match="Pre-encrypted option requires administrator access"):
        store.set("pre", ciphertext, encrypted=True, requester="alice", is_admin=False)
    assert stored("bad") == []


def test_without_a_key_file_secrets_are_refused_and_plain_items_work(settings, db):
    store = keyvalues.Datastore(settings)
    with pytest.raises(ValidationError, match="Crypto key not found in .*datastore_key.json. Unable to encrypt"):
        store.set("pw", "x", secret=True)
    assert store.set("plain", "x")["value"] == "x"
    assert stored("pw") == []


def test_racing_writers_leave_one_item_and_one_create(store):
    # When ten writers set the same new key at once
    pool = eventlet.GreenPool(10)
    results = list(pool.imap(lambda n: store.set("race", f"v{n}"), range(10)))
    # Then there is one item, holding one of their values, and exactly one create trigger
    (doc,) = stored("race")
    assert doc.value in {r["value"] for r in results}
    assert len(instances(keyvalues.CREATE)) == 1
    assert len(instances(keyvalues.UPDATE)) == 9


# -- triggers ----------------------------------------------------------------------------------


def test_writes_dispatch_the_key_value_pair_triggers(store):
    # When an item is created, set to the same value, changed, then deleted
    store.set("color", "red")
    store.set("color", "red")
    store.set("color", "blue", secret=True)
    store.delete("color")
    # Then create, update (for every set of an existing item), value_change and delete were dispatched
    (created,) = instances(keyvalues.CREATE)
    assert created["object"]["name"] == "color" and created["object"]["value"] == "red"
    assert [p["object"]["secret"] for p in instances(keyvalues.UPDATE)] == [False, True]
    (changed,) = instances(keyvalues.VALUE_CHANGE)
    assert changed["old_object"]["value"] == "red"
    # And a secret travels as ciphertext only
    assert changed["new_object"]["value"] != "blue" and changed["new_object"]["encrypted"] is True
    (deleted,) = instances(keyvalues.DELETE)
    assert deleted["object"]["uid"] == "key_value_pair:st2kv.system:color"
    assert all("blue" not in str(p) for op in keyvalues.TRIGGERS for p in instances(op))
    # And deleting what is not there names it in StackStorm's words
    with pytest.raises(NotFoundError, match="KeyValuePair with name: color and scope: st2kv.system not found in db."):
        store.delete("color")


# -- templates ---------------------------------------------------------------------------------

LOCAL = {"cmd": {"type": "string", "required": True}}


def test_templates_read_keys_and_decrypt_secrets(store):
    # Given plain, dotted, secret and user items
    store.set("greeting", "hello")
    store.set("app.token", "tok")
    store.set("app.count", "7")
    store.set("password", "hunter2", secret=True)
    store.set("mine", "alice-value", scope="user", user="alice")
    schema = parameters.ParameterSchema.build(LOCAL, {
        "cmd": {"type": "string", "default": "echo {{ st2kv.system.greeting }} {{ st2kv.system.password | "
                                             "decrypt_kv }} {{ st2kv.user.mine }} [{{ st2kv.system.missing }}]"},
        "token": {"type": "string", "default": '{{ st2kv.system.app.token }}/{{ st2kv.system["app.token"] }}'},
        "count": {"type": "integer", "default": "{{ st2kv.system.app.count }}"},
        "cipher": {"type": "string", "default": "{{ st2kv.system.password }}"},
    })
    # When the parameters render for alice with the datastore in the context
    values = parameters.render_final(schema, {}, {"user": "alice"},
                                     extra=st2kv_context(store, "alice"))
    # Then keys, the decrypted secret and the user's key reach the command; a missing key is ""
    assert values["cmd"] == "echo hello hunter2 alice-value []"
    # And dotted names are joined, even one spelled like a str method; types follow the parameter
    assert values["token"] == "tok/tok" and values["count"] == 7
    # And a secret without decrypt_kv stays ciphertext, as plain text
    assert values["cipher"] == stored("password")[0].value and type(values["cipher"]) is str


def test_decrypt_kv_of_a_missing_item_names_the_item_and_the_parameter(store):
    schema = parameters.ParameterSchema.build(LOCAL, {
        "cmd": {"type": "string", "default": "echo {{ st2kv.system.nope | decrypt_kv }}"}})
    with pytest.raises(ParameterError, match='parameter "cmd".*Referenced datastore item "st2kv.system.nope"'):
        parameters.render_final(schema, {}, {"user": "stanley"}, extra=st2kv_context(store, "stanley"))


def test_each_render_reads_the_datastore_afresh(store):
    schema = parameters.ParameterSchema.build(LOCAL, {
        "cmd": {"type": "string", "default": "echo {{ st2kv.system.v }}"}})
    store.set("v", "one")
    assert parameters.render_final(schema, {}, extra=st2kv_context(store, None))["cmd"] == "echo one"
    store.set("v", "two", ttl=60)
    assert parameters.render_final(schema, {}, extra=st2kv_context(store, None))["cmd"] == "echo two"


def test_without_a_datastore_in_the_context_reads_work_and_decryption_says_why_not(store):
    # Given a caller that renders without supplying the datastore
    store.set("plain", "value")
    store.set("mine", "alice-value", scope="user", user="alice")
    store.set("password", "hunter2", secret=True)
    schema = parameters.ParameterSchema.build(LOCAL, {
        "cmd": {"type": "string", "default": "echo {{ st2kv.system.plain }} {{ st2kv.user.mine }}"}})
    # Then lookups still read the datastore, for the user in action_context
    assert parameters.render_final(schema, {}, {"user": "alice"})["cmd"] == "echo value alice-value"
    secret = parameters.ParameterSchema.build(LOCAL, {
        "cmd": {"type": "string", "default": "{{ st2kv.system.password | decrypt_kv }}"}})
    with pytest.raises(ParameterError, match="given no datastore settings"):
        parameters.render_final(secret, {}, {"user": "alice"})


def test_keys_reach_a_core_local_command_through_templates(start_platform, tmp_path):  # noqa: F811
    # Given a system key and alice's own key
    platform = start_platform()
    store = keyvalues.Datastore(platform.settings)
    store.set("greeting", "hello from the datastore")
    store.set("mine", "alice-value", scope="user", user="alice")
    # When alice runs core.local with a command that reads both
    execution = platform.run("core.local", {"cmd": "echo {{ st2kv.system.greeting }} / {{ st2kv.user.mine }}"},
                             user="alice")
    # Then the command printed their values
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert execution.result["stdout"] == "hello from the datastore / alice-value"


def test_an_encrypted_key_reaches_the_command_but_never_the_stored_execution(start_platform):  # noqa: F811
    # Given an encrypted system key
    platform = start_platform()
    crypto.write_key_file(platform.settings.keyvalue.encryption_key_path)
    store = keyvalues.Datastore(platform.settings)
    store.set("db_password", "s3cr3t-Pa55", secret=True)
    # When core.local runs a command that decrypts it
    execution = platform.run("core.local", {"cmd": "echo pw={{ st2kv.system.db_password | decrypt_kv }}"})
    # Then the command got the clear value (its output is stored masked: only the clear value is masked),
    # while the stored parameters keep the template
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert execution.result["stdout"] == "pw=********"
    assert "s3cr3t-Pa55" not in str(execution.parameters)
