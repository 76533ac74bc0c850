"""Pack configs: registration against config.schema.yaml, resolution at run time, and what actions see.

The fixture pack tests/fixtures/packs/config_pack has a schema (a required
api_url, a secret api_token, defaults for timeout, region and a nested
option), a python action returning self.config items, and a shell action
whose parameter defaults read config_context. Each test copies it into its
own packs folder and writes its config into its own configs folder.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from st2common import statuses
from st2common.content import bootstrap, register
from st2common.exceptions import ValidationError
from st2common.models.db.pack import ConfigDB, ConfigSchemaDB, PackDB
from st2common.persistence.access import Access
from st2common.services import configs, keyvalues, triggertypes
from st2common.util import crypto
from testsupport import make_settings
from test_lifecycle import start_platform  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]
CONFIG_PACK = REPO / "tests" / "fixtures" / "packs" / "config_pack"
TOKEN = "tok-3f9a0c-clear"


def write_config(settings, text: str) -> Path:
    path = Path(settings.content.configs_path) / "config_pack.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def pack_settings(tmp_path, embedded_mongo, bus_url: str = "filesystem://"):
    shutil.copytree(CONFIG_PACK, tmp_path / "packs" / "config_pack")
    return make_settings(tmp_path, embedded_mongo, bus_url, extra={
        "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(REPO / "contrib" / "packs"),
        "ST2_CONTENT__PACKS_BASE_PATHS": str(tmp_path / "packs"),
        "ST2_CONTENT__CONFIGS_PATH": str(tmp_path / "configs"),
    })


@pytest.fixture
def settings(tmp_path, embedded_mongo):
    """The fixture pack in this test's packs folder, configs in this test's configs folder."""
    return pack_settings(tmp_path, embedded_mongo)


def secret_store(settings) -> keyvalues.Datastore:
    """The datastore with a key file, as `make up` leaves it."""
    crypto.write_key_file(settings.keyvalue.encryption_key_path)
    return keyvalues.Datastore(settings)


# -- registration ------------------------------------------------------------------------------


def test_a_valid_config_is_registered_with_its_schema(settings, db):
    # Given a config that fits the schema, its token a datastore reference
    write_config(settings, """\
        api_url: https://api.example.com
        api_token: "{{ st2kv.system.api_token }}"
        timeout: 5
    """)
    # When configs are registered (`st2ctl reload` registers them by default, last)
    assert bootstrap.DEFAULT_KINDS[-1] == "configs"
    report = register(settings, kinds=["configs"])
    # Then the schema and the values are stored, templates unrendered
    assert report.ok, report.errors
    assert report.registered["configs"] == 1
    schema = Access(ConfigSchemaDB).get(pack="config_pack")
    assert schema.attributes["api_token"]["secret"] is True
    config = Access(ConfigDB).get(pack="config_pack")
    assert config.values == {"api_url": "https://api.example.com", "api_token": "{{ st2kv.system.api_token }}",
                             "timeout": 5}
    assert config.error is None
    # And registering again writes nothing
    assert register(settings, kinds=["configs"]).changed["configs"] == 0


def test_a_config_that_violates_its_schema_is_reported_naming_pack_key_and_file(settings, db):
    # Given a config whose timeout is not an integer
    path = write_config(settings, """\
        api_url: https://api.example.com
        timeout: soon
    """)
    # When configs are registered
    report = register(settings, kinds=["configs"])
    # Then the error names the pack, the option, the file and its line
    [error] = report.errors
    assert 'Failed validating attribute "timeout" in config for pack "config_pack"' in str(error)
    assert "'soon' is not of type 'integer'" in str(error)
    assert (error.path, error.line, error.field, error.pack) == (str(path), 2, "timeout", "config_pack")
    # And the pack is registered all the same, its config stored with the error
    assert Access(PackDB).get(ref="config_pack") is not None
    assert Access(ConfigDB).get(pack="config_pack").error == str(error)
    # And loading it for a run fails with that message
    with pytest.raises(ValidationError, match='attribute "timeout"'):
        configs.load("config_pack", settings=settings)


def test_a_missing_required_option_and_a_broken_schema_are_named(settings, db, tmp_path):
    # Given a config without the required api_url
    write_config(settings, "timeout: 3\n")
    report = register(settings, kinds=["configs"])
    # Then the option is named
    assert [e.field for e in report.errors] == ["api_url"]
    assert '"api_url" is a required option' in str(report.errors[0])
    # Given the pack's config.schema.yaml is empty
    schema_path = tmp_path / "packs" / "config_pack" / "config.schema.yaml"
    schema_path.write_text("")
    report = register(settings, kinds=["configs"])
    # Then registration names the file as an error
    assert any(e.path == str(schema_path) and "empty" in str(e) for e in report.errors), report.errors
    # Given an option with a type that does not exist
    schema_path.write_text("api_url:\n  type: url\n")
    report = register(settings, kinds=["configs"])
    error = next(e for e in report.errors if e.path == str(schema_path))
    assert error.line == 2 and error.field == "api_url.type"


def test_a_removed_config_file_is_forgotten(settings, db):
    # Given a registered config
    path = write_config(settings, "api_url: https://a\n")
    register(settings, kinds=["configs"])
    assert Access(ConfigDB).get(pack="config_pack") is not None
    # When its file is removed and configs are registered again
    path.unlink()
    register(settings, kinds=["configs"])
    # Then the stored config is gone (the schema stays, it is still in the pack)
    assert Access(ConfigDB).get(pack="config_pack") is None
    assert Access(ConfigSchemaDB).get(pack="config_pack") is not None


# -- resolution --------------------------------------------------------------------------------


def test_load_fills_defaults_and_renders_datastore_references_per_user(settings, db):
    # Given a secret system item and a user item, and a config referring to both
    store = secret_store(settings)
    store.set("api_token", TOKEN, secret=True)
    store.set("region", "alice-region", scope="user", requester="alice", is_admin=False)
    write_config(settings, """\
        api_url: https://api.example.com
        api_token: "{{ st2kv.system.api_token }}"
        region: "{{ st2kv.user.region }}"
        timeout: "{{ st2kv.system.timeout }}"
        options: {}
    """)
    store.set("timeout", "12")
    assert register(settings, kinds=["configs"]).ok
    # When alice's run loads it
    loaded = configs.load("config_pack", user="alice", settings=settings)
    # Then the secret option is decrypted, the user item is alice's, text is cast to the option's type,
    # and defaults fill what the file leaves out, nested ones too
    assert loaded.values == {"api_url": "https://api.example.com", "api_token": TOKEN, "region": "alice-region",
                             "timeout": 12, "options": {"verbose": False}}
    # And it knows its secrets, for masking
    assert loaded.masked()["api_token"] == "********" and loaded.secret_values() == [TOKEN]
    # When bob's run loads it, his (missing) user item gives no value
    assert configs.load("config_pack", user="bob", settings=settings).values["region"] is None


def test_a_dynamic_value_that_cannot_be_cast_fails_naming_the_key(settings, db):
    store = secret_store(settings)
    store.set("timeout", "later")
    write_config(settings, 'api_url: x\ntimeout: "{{ st2kv.system.timeout }}"\n')
    assert register(settings, kinds=["configs"]).ok
    with pytest.raises(ValidationError, match='for key "timeout".*for pack "config_pack"'):
        configs.load("config_pack", settings=settings)


# -- actions see it ----------------------------------------------------------------------------


@pytest.fixture
def config_platform(start_platform, bus_settings, tmp_path):
    """The action runner of start_platform with the config pack, its configs folder and a datastore key."""
    shutil.copytree(CONFIG_PACK, tmp_path / "packs" / "config_pack")
    platform = start_platform(extra={"ST2_CONTENT__CONFIGS_PATH": str(tmp_path / "configs")})
    triggertypes.register_system_trigger_types(platform.publisher)
    platform.store = secret_store(platform.settings)
    return platform


def test_a_python_action_reads_its_config_with_a_value_from_the_datastore(config_platform):
    platform = config_platform
    # Given the api token in the datastore (encrypted) and a config that refers to it
    platform.store.set("api_token", TOKEN, secret=True)
    write_config(platform.settings, """\
        api_url: https://api.example.com
        api_token: "{{ st2kv.system.api_token }}"
        region: eu-central-1
    """)
    assert register(platform.settings, kinds=["configs"]).ok
    # When the pack's python action reads its options through self.config
    execution = platform.run("config_pack.read_config", {"keys": ["api_url", "api_token", "timeout", "region"]},
                             timeout=20)
    # Then it sees the file's values, the token from the datastore in clear (the stored result masks
    # exactly that clear value), and the defaults
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert execution.result["result"]["values"] == {"api_url": "https://api.example.com", "api_token": "********",
                                                    "timeout": 30, "region": "eu-central-1"}
    assert execution.result["result"]["names"] == ["api_token", "api_url", "options", "region", "timeout"]
    # And parameter defaults read config_context, at request time and just before the run
    echoed = platform.run("config_pack.echo_region")
    assert echoed.status == statuses.SUCCEEDED, echoed.result
    assert echoed.parameters == {"label": "eu-central-1"}
    assert echoed.result["stdout"] == "label=eu-central-1 timeout=30"


def test_actions_of_a_pack_whose_config_is_invalid_fail_until_it_is_fixed(config_platform):
    platform = config_platform
    # Given a config that does not fit the schema
    write_config(platform.settings, "api_url: https://a\ntimeout: soon\n")
    assert not register(platform.settings, kinds=["configs"]).ok
    # When an action of the pack runs, Then it fails with the registration's message
    failed = platform.run("config_pack.read_config", timeout=20)
    assert failed.status == statuses.FAILED
    assert 'Failed validating attribute "timeout" in config for pack "config_pack"' in failed.result["error"]
    assert "config_pack.yaml:2" in failed.result["error"]
    # When the file is fixed and registered again, Then the action succeeds
    write_config(platform.settings, "api_url: https://a\ntimeout: 7\n")
    assert register(platform.settings, kinds=["configs"]).ok
    fixed = platform.run("config_pack.read_config", {"keys": ["timeout"]}, timeout=20)
    assert fixed.status == statuses.SUCCEEDED, fixed.result
    assert fixed.result["result"]["values"] == {"timeout": 7}
