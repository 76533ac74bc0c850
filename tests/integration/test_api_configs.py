"""/v1/configs and /v1/config_schemas through the REST API, and `st2 pack config`.

The config of the fixture pack holds a planted secret in its secret option:
the guarded test client fails any response that shows it unless the request
asked for show_secrets=true.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import eventlet
import pytest
import yaml
from click.testing import CliRunner
from eventlet import wsgi
from test_api_support import DEFAULT_SECRET, SECRET, GuardedApp, write

from testsupport import api_app
from st2client.cli import cli
from st2common.content import register
from st2common.models.db.pack import ConfigDB
from st2common.persistence.access import Access
from st2common.services import configs
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from testsupport import make_settings

REPO = Path(__file__).resolve().parents[2]
CONFIG_PACK = REPO / "tests" / "fixtures" / "packs" / "config_pack"
MASK = "********"


@pytest.fixture
def settings(tmp_path, embedded_mongo):
    """The config pack (its token a planted secret) and a pack whose secret option has a planted default."""
    packs = tmp_path / "packs"
    shutil.copytree(CONFIG_PACK, packs / "config_pack")
    write(packs / "defaults_pack" / "pack.yaml",
          "name: defaults_pack\ndescription: d\nversion: 0.1.0\nauthor: t\nemail: t@example.com\n")
    write(packs / "defaults_pack" / "config.schema.yaml",
          f"password:\n  type: string\n  secret: true\n  default: {DEFAULT_SECRET}\n")
    write(tmp_path / "configs" / "config_pack.yaml",
          f"api_url: https://api.example.com\napi_token: {SECRET}\noptions:\n  verbose: true\n")
    return make_settings(tmp_path, embedded_mongo, extra={
        "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(REPO / "contrib" / "packs"),
        "ST2_CONTENT__PACKS_BASE_PATHS": str(packs),
        "ST2_CONTENT__CONFIGS_PATH": str(tmp_path / "configs"),
    })


@pytest.fixture
def publisher(settings, db):
    pub = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
    pub.declare_work_queues()
    report = register(settings, kinds=["actions", "configs"], publisher=pub)
    assert report.ok, report.errors
    yield pub
    pub.close()


@pytest.fixture
def api(settings, publisher) -> GuardedApp:
    return GuardedApp(api_app(settings, publisher))


def test_configs_are_listed_and_shown_with_secret_options_masked(api):
    # When the configs are listed
    listed = api.get("/v1/configs")
    # Then the pack's config comes as StackStorm's shape, its secret option masked
    [config] = listed.json
    assert set(config) == {"id", "pack", "values"} and config["pack"] == "config_pack"
    assert config["values"] == {"api_url": "https://api.example.com", "api_token": MASK,
                                "options": {"verbose": True}}
    assert listed.headers["X-Total-Count"] == "1"
    assert api.get("/v1/configs/config_pack").json == config
    # And show_secrets=true shows it in clear
    assert api.get("/v1/configs/config_pack?show_secrets=true").json["values"]["api_token"] == SECRET


def test_config_schemas_are_listed_with_secret_defaults_masked(api):
    schemas = {s["pack"]: s for s in api.get("/v1/config_schemas").json}
    assert set(schemas) == {"config_pack", "defaults_pack"}
    assert schemas["config_pack"]["attributes"]["timeout"] == {
        "description": "Seconds to wait for an answer.", "type": "integer", "default": 30}
    assert schemas["defaults_pack"]["attributes"]["password"]["default"] == MASK
    one = api.get("/v1/config_schemas/config_pack").json
    assert set(one) == {"id", "pack", "attributes"} and one == schemas["config_pack"]
    revealed = api.get("/v1/config_schemas/defaults_pack?show_secrets=true").json
    assert revealed["attributes"]["password"]["default"] == DEFAULT_SECRET


def test_unknown_packs_and_configs_are_404s(api):
    assert api.get("/v1/configs/nope", status=404).json == {
        "faultstring": 'Unable to identify resource with pack_ref "nope".'}
    assert api.get("/v1/configs/defaults_pack", status=404).json["faultstring"].endswith('"defaults_pack".')
    api.get("/v1/config_schemas/core", status=404)
    api.put_json("/v1/configs/nope", {"a": 1}, status=404)


def test_put_validates_against_the_schema_writes_the_file_and_stores_the_config(api, settings):
    # When a config is put with a value that does not fit
    bad = api.put_json("/v1/configs/config_pack", {"api_url": "https://b", "timeout": "soon"}, status=400)
    # Then the 400 names the pack and the option, and nothing changed
    assert bad.json["faultstring"].startswith('Failed validating attribute "timeout" in config for pack '
                                              '"config_pack"')
    assert api.put_json("/v1/configs/config_pack", {"timeout": 3}, status=400).json["faultstring"].startswith(
        'Failed validating attribute "api_url"')
    # When a valid config is put (a new secret among it)
    body = {"api_url": "https://b", "api_token": SECRET + "-2", "timeout": 9}
    saved = api.put_json("/v1/configs/config_pack", body).json
    # Then the answer masks the secret, and the file and the stored config hold the new values
    assert saved["values"] == {"api_url": "https://b", "api_token": MASK, "timeout": 9}
    path = Path(settings.content.configs_path) / "config_pack.yaml"
    assert yaml.safe_load(path.read_text()) == body
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Access(ConfigDB).get(pack="config_pack").values == body
    # And a run reads them (defaults filled in)
    assert configs.load("config_pack", settings=settings).values["timeout"] == 9
    # And a pack that had no config gets one
    assert api.put_json("/v1/configs/defaults_pack", {}).json["values"] == {}
    assert api.get("/v1/configs/defaults_pack").json["pack"] == "defaults_pack"


def test_a_config_that_failed_registration_is_fixed_by_a_put(api, settings):
    # Given a config registered with an error
    write(Path(settings.content.configs_path) / "config_pack.yaml", "api_url: x\ntimeout: soon\n")
    assert not register(settings, kinds=["configs"]).ok
    with pytest.raises(Exception, match="timeout"):
        configs.load("config_pack", settings=settings)
    # When a valid config is put; Then runs load it again
    api.put_json("/v1/configs/config_pack", {"api_url": "x", "timeout": 4})
    assert configs.load("config_pack", settings=settings).values["timeout"] == 4


# -- st2 pack config -----------------------------------------------------------------------------


@pytest.fixture
def api_url(settings, publisher):
    """The API on a free port (eventlet WSGI in a green thread)."""
    sock = eventlet.listen(("127.0.0.1", 0))
    server = eventlet.spawn(wsgi.server, sock, api_app(settings, publisher), log_output=False)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server.kill()
    sock.close()


def st2(api_url: str, *args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["--api-url", api_url, "--skip-config", *args], input=input,
                              catch_exceptions=False, env={"COLUMNS": "240"})


def test_pack_config_sets_options_from_pairs_a_file_or_prompts(api_url, settings, tmp_path):
    path = Path(settings.content.configs_path) / "config_pack.yaml"
    # When options are set as name=value pairs, typed by the schema
    result = st2(api_url, "pack", "config", "config_pack", "timeout=12", "options.verbose=false", "-j")
    # Then they are saved over the stored values, the secret kept (and masked in the output)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["values"] == {"api_url": "https://api.example.com", "api_token": MASK,
                               "options": {"verbose": False}, "timeout": 12}
    assert yaml.safe_load(path.read_text())["api_token"] == SECRET
    # When a value does not fit, Then the server's 400 is printed and nothing is saved
    bad = st2(api_url, "pack", "config", "config_pack", "timeout=soon")
    assert bad.exit_code != 0 and 'is not of type integer' in bad.output
    # When a file is given, Then it replaces the config
    values_file = write(tmp_path / "values.yaml", "api_url: https://from-file\n")
    assert st2(api_url, "pack", "config", "config_pack", "-f", str(values_file)).exit_code == 0
    assert yaml.safe_load(path.read_text()) == {"api_url": "https://from-file"}
    # When no values are given, Then each option is asked for, with its default offered
    answers = "https://prompted\nnew-token\n\n\n\ny\n"
    asked = st2(api_url, "pack", "config", "config_pack", input=answers)
    assert asked.exit_code == 0, asked.output
    assert yaml.safe_load(path.read_text()) == {"api_url": "https://prompted", "api_token": "new-token",
                                                "timeout": 30, "region": "eu-west-1"}
    # And a pack without a schema is refused
    missing = st2(api_url, "pack", "config", "core", "a=b")
    assert missing.exit_code == 1 and "doesn't have a config schema defined" in missing.output


def test_putting_back_what_get_showed_keeps_the_masked_secret(api, settings):
    # Given the config as GET shows it, the secret masked
    shown = api.get("/v1/configs/config_pack").json["values"]
    assert shown["api_token"] == MASK
    # When it is put back with one option changed
    api.put_json("/v1/configs/config_pack", dict(shown, timeout=8))
    # Then the stored secret is the real one, not the mask
    stored = yaml.safe_load((Path(settings.content.configs_path) / "config_pack.yaml").read_text())
    assert stored["api_token"] == SECRET and stored["timeout"] == 8
