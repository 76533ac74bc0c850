"""Settings: defaults, file values, ST2_<SECTION>__<OPTION> overrides, and errors that name the option."""

from pathlib import Path

import pytest

from st2common import config
from st2common.exceptions import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write_conf(folder: Path, text: str) -> Path:
    path = folder / "st2.conf"
    path.write_text(text)
    return path


def test_defaults_from_an_empty_file(tmp_path):
    # Given a config file with nothing in it
    path = write_conf(tmp_path, "")
    # When it is loaded with no environment overrides
    settings = config.load(path, env={})
    # Then every option has its documented default, typed
    assert settings.path == path.resolve()
    assert settings.base_path == tmp_path.resolve()
    assert settings.var_path == tmp_path.resolve() / "var"
    assert settings.api.port == 9101 and settings.auth.port == 9100 and settings.stream.port == 9102
    assert settings.database.embedded is False
    assert settings.database_url() == "mongodb://127.0.0.1:27017/st2"
    assert settings.messaging.url == "amqp://guest:guest@127.0.0.1:5672//"
    assert settings.scheduler.sleep_interval == pytest.approx(0.1)
    assert settings.api.allow_origin == ()
    assert settings.log.path == tmp_path.resolve() / "var" / "log"


def test_file_values_are_typed(tmp_path):
    # Given a file setting options of every type
    path = write_conf(tmp_path, """
[database]
embedded = True
port = 27999
db_name = other
[messaging]
url = filesystem://
filesystem_polling_interval = 0.5
[api]
allow_origin = http://a.example, http://b.example
""")
    # When it is loaded
    settings = config.load(path, env={})
    # Then the values come back as bool, int, str, float and tuple
    assert settings.database.embedded is True
    assert settings.database.port == 27999
    assert settings.database_url() == "mongodb://127.0.0.1:27999/other"
    assert settings.messaging.url == "filesystem://"
    assert settings.messaging.filesystem_polling_interval == pytest.approx(0.5)
    assert settings.api.allow_origin == ("http://a.example", "http://b.example")


def test_environment_overrides_the_file_with_typing(tmp_path):
    # Given a file value and environment variables in StackStorm's ST2_<SECTION>__<OPTION> form
    path = write_conf(tmp_path, "[api]\nport = 9200\n[database]\nembedded = True\n")
    env = {
        "ST2_API__PORT": "9300",
        "ST2_DATABASE__EMBEDDED": "false",
        "ST2_SCHEDULER__SLEEP_INTERVAL": "0.25",
        "ST2_MESSAGING__URL": "amqp://u:p@rabbit:5673//",
        "ST2_BASE_URL": "http://not-ours",  # the CLI's variable, not a config override
    }
    # When the settings are loaded
    settings = config.load(path, env=env)
    # Then the environment wins, and its strings are typed like the file's
    assert settings.api.port == 9300
    assert settings.database.embedded is False
    assert settings.scheduler.sleep_interval == pytest.approx(0.25)
    assert settings.messaging.url == "amqp://u:p@rabbit:5673//"


def test_config_path_from_the_environment(tmp_path):
    # Given ST2_CONFIG_PATH naming a file, When loading without a path, Then that file is used
    path = write_conf(tmp_path, "[api]\nport = 9555\n")
    settings = config.load(None, env={"ST2_CONFIG_PATH": str(path)})
    assert settings.path == path.resolve()
    assert settings.api.port == 9555


@pytest.mark.parametrize("text,env,section,option", [
    ("[bogus]\nx = 1\n", {}, "bogus", None),
    ("[api]\nprot = 9101\n", {}, "api", "prot"),
    ("", {"ST2_API__PROT": "9101"}, "api", "prot"),
    ("", {"ST2_BOGUS__X": "1"}, "bogus", None),
    ("[api]\nport = ninety\n", {}, "api", "port"),
    ("", {"ST2_DATABASE__EMBEDDED": "maybe"}, "database", "embedded"),
])
def test_unknown_or_mistyped_options_are_errors_naming_them(tmp_path, text, env, section, option):
    # Given a typo or a value of the wrong type, When loading, Then ConfigError names it on one line
    path = write_conf(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.load(path, env=env)
    assert (caught.value.section, caught.value.option) == (section, option)
    message = str(caught.value)
    assert "\n" not in message
    assert (option or section).lower() in message.lower()


@pytest.mark.parametrize("section,option,value", [
    ("messaging", "url", "amqp//x"),
    ("messaging", "url", "redis://x"),
    ("messaging", "url", "amqp://:5672//"),
    ("database", "host", "mongodb://"),
    ("database", "host", "mongodb://db:port/"),
    ("database", "host", "bad host"),
])
def test_malformed_urls_are_one_line_errors_naming_the_option(tmp_path, section, option, value):
    # Given a malformed URL, When loading, Then the error names the option and the value on one line
    path = write_conf(tmp_path, f"[{section}]\n{option} = {value}\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path, env={})
    assert (caught.value.section, caught.value.option) == (section, option)
    assert "\n" not in str(caught.value)
    assert value in str(caught.value)


def test_relative_paths_resolve_against_base_path(tmp_path):
    # Given base_path relative to the config file's folder and relative paths in other options
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    path = write_conf(conf_dir, """
[system]
base_path = ..
[database]
embedded_path = data/st2.sqlite
[content]
packs_base_paths = packs:/opt/more
[log]
path = /var/log/st2
""")
    # When loaded
    settings = config.load(path, env={})
    # Then base_path is the parent folder and relative paths hang off it; absolute ones stay
    base = tmp_path.resolve()
    assert settings.base_path == base
    assert settings.database.embedded_path == base / "data" / "st2.sqlite"
    assert settings.content.packs_base_paths == (base / "packs", Path("/opt/more"))
    assert settings.content.system_packs_base_path == base / "contrib" / "packs"
    assert settings.log.path == Path("/var/log/st2")


def test_shipped_embedded_conf_runs_from_the_checkout():
    # Given conf/st2.conf, When loaded, Then the platform runs embedded with var/ in the checkout
    settings = config.load(REPO / "conf" / "st2.conf", env={})
    assert settings.database.embedded is True
    assert settings.base_path == REPO
    assert settings.var_path == REPO / "var"
    assert settings.messaging.url == "filesystem://"
    assert settings.messaging.filesystem_path == REPO / "var" / "bus"
    assert settings.content.system_packs_base_path == REPO / "contrib" / "packs"


def test_prod_conf_loads_with_mongodb_and_rabbitmq():
    # Given conf/st2.prod.conf (docker-compose), When loaded, Then it points at the compose services
    settings = config.load(REPO / "conf" / "st2.prod.conf", env={})
    assert settings.database.embedded is False
    assert settings.database_url() == "mongodb://mongo:27017/st2"
    assert settings.messaging.url.startswith("amqp://") and "@rabbitmq:5672" in settings.messaging.url
    assert settings.base_path == Path("/opt/stackstorm")
    assert settings.api.host == "0.0.0.0" and settings.api.port == 9101
    assert settings.content.system_packs_base_path == Path("/opt/stackstorm/packs")
