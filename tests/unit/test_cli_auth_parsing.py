"""The CLI's side of authentication without a server: options, which credentials a
command runs with, the token cache file and the config `login` writes."""

from __future__ import annotations

import json
import logging
import os
import time

import click
import pytest
from click.testing import CliRunner

from st2client.cli import cli
from st2client.client import St2ClientError
from st2client.commands import Session, session
from st2client.commands.auth import write_credentials
from st2client.credentials import TOKEN_GRACE_SECONDS, cache_token, read_cached_token, token_cache_path
from testsupport import free_port

# auth's -t is --only-token and login needs no credentials, as in StackStorm's CLI.
WITHOUT_CREDENTIAL_OPTIONS = {("auth",), ("login",)}


def _commands(group: click.Group, path: tuple = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))
        else:
            yield path + (name,), command


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty home folder (no ~/.st2 yet) and no ST2_* variables from the outer environment."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in [name for name in os.environ if name.startswith("ST2_")]:
        monkeypatch.delenv(name)
    return tmp_path


def _config(home, text: str):
    path = home / ".st2" / "config"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def _cache(username: str, token: str, seconds_left: int) -> None:
    path = token_cache_path(username)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"token": token, "expire_timestamp": int(time.time()) + seconds_left}))


def _session(env: dict, token: str | None = None, api_key: str | None = None) -> Session:
    # What a command's -t/--api-key callbacks leave on the session.
    sess = Session({}, env=dict(env, ST2_AUTH_URL=f"http://127.0.0.1:{free_port()}"))
    sess.token, sess.api_key = token, api_key
    return sess


def test_every_command_takes_a_token_and_an_api_key():
    # Given the whole command tree; Then each command accepts -t/--token and --api-key (auth and login excepted)
    missing = [" ".join(path) for path, command in _commands(cli)
               if path not in WITHOUT_CREDENTIAL_OPTIONS
               and not {"-t", "--token", "--api-key"} <= {o for p in command.params for o in p.opts}]
    assert missing == []
    assert {"auth", "login", "whoami", "apikey"} <= set(cli.commands)


@pytest.mark.parametrize("args", [["action", "list"], ["apikey", "list"], ["whoami"], ["key", "get", "x"],
                                  ["execution", "get", "abc"]])
def test_token_and_api_key_options_reach_the_session(args):
    # Given a command line with -t and --api-key after the subcommand
    root = cli.make_context("st2", list(args[:1]), resilient_parsing=True)
    root.obj = Session({}, env={})
    parent, command, rest = root, cli.commands[args[0]], args[1:]
    while isinstance(command, click.Group):
        parent = command.make_context(command.name, list(rest), parent=parent, resilient_parsing=True)
        command, rest = command.commands[rest[0]], rest[1:]
    # When it is parsed
    command.make_context(command.name, [*rest, "-t", "tok", "--api-key", "key"], parent=parent)
    # Then the session carries both
    assert (session(root).token, session(root).api_key) == ("tok", "key")


def test_config_user_with_a_cached_token_uses_it(home):
    # Given a config naming a user whose token is cached for another hour
    _config(home, "[credentials]\nusername = stanley\n")
    _cache("stanley", "cached", 3600)
    # When a command builds its client; Then the cached token is used, no auth server involved
    assert _session({}).client.token == "cached"


@pytest.mark.parametrize("env, option_token, option_key, expected", [
    ({"ST2_API_KEY": "envkey"}, None, None, (None, "envkey")),
    ({"ST2_AUTH_TOKEN": "envtoken"}, None, None, ("envtoken", None)),
    ({"ST2_AUTH_TOKEN": "envtoken"}, "opttoken", None, ("opttoken", None)),
    ({"ST2_API_KEY": "envkey"}, None, "optkey", (None, "optkey")),
    ({}, None, "optkey", (None, "optkey")),
    ({}, "opttoken", None, ("opttoken", None)),
])
def test_given_credentials_beat_the_config_user(home, env, option_token, option_key, expected):
    # Given a config user with a cached token, and a token or key on the command line or in the environment
    _config(home, "[credentials]\nusername = stanley\n")
    _cache("stanley", "cached", 3600)
    # When the client is built; Then the given credential is used and the cached token is not
    client = _session(env, option_token, option_key).client
    assert (client.token, client.api_key) == expected


def test_config_api_key_beats_the_config_user(home):
    _config(home, "[credentials]\nusername = stanley\napi_key = cfgkey\n")
    _cache("stanley", "cached", 3600)
    client = _session({}).client
    assert (client.token, client.api_key) == (None, "cfgkey")


@pytest.mark.parametrize("config, seconds_left", [
    ("[credentials]\nusername = stanley\npassword = pw\n", TOKEN_GRACE_SECONDS - 1),
    ("[credentials]\nusername = stanley\npassword = pw\n[cli]\ncache_token = False\n", 3600),
])
def test_unusable_cache_and_no_auth_server_goes_on_without_a_token(home, caplog, config, seconds_left):
    # Given a cached token that is about to expire (or caching turned off) and no auth server listening
    _config(home, config)
    _cache("stanley", "cached", seconds_left)
    # When the client is built
    with caplog.at_level(logging.WARNING):
        client = _session({}).client
    # Then the command goes on without credentials, with StackStorm's warning
    assert (client.token, client.api_key) == (None, None)
    assert "Auth API server is not available, skipping authentication." in caplog.text


def test_skip_config_ignores_the_config_user(home):
    _config(home, "[credentials]\nusername = stanley\n")
    _cache("stanley", "cached", 3600)
    assert _session({"ST2_CLI_SKIP_CONFIG": "1"}).client.token is None


def test_token_cache_file_format_and_expiry(home):
    # Given a token document as POST /tokens returns it
    path = cache_token({"user": "stanley", "token": "abc", "expiry": "2999-01-01T00:00:00.000000Z"})
    # Then it is cached as StackStorm's CLI does, readable by its owner only
    assert path == home / ".st2" / "token-stanley"
    assert json.loads(path.read_text()) == {"token": "abc", "expire_timestamp": 32472144000}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert read_cached_token("stanley") == "abc" and read_cached_token("other") is None
    # And a token is not used within the grace period before its expiry
    assert read_cached_token("stanley", now=32472144000 - TOKEN_GRACE_SECONDS - 1) == "abc"
    assert read_cached_token("stanley", now=32472144000 - TOKEN_GRACE_SECONDS + 1) is None
    path.write_text("not json")
    with pytest.raises(St2ClientError, match="corrupted or invalid"):
        read_cached_token("stanley")


def test_corrupt_cache_fails_the_command_with_stackstorms_messages(home):
    _config(home, "[credentials]\nusername = stanley\n")
    token_cache_path("stanley").write_text("{}")
    result = CliRunner().invoke(cli, ["action", "list"])
    assert result.exit_code == 1
    assert result.output.startswith("Failed to authenticate with credentials provided in the config.\nERROR: File ")


def test_login_config_keeps_other_settings_and_stores_the_password_only_when_asked(tmp_path):
    # Given a config with other sections and an old password
    path = tmp_path / "config"
    path.write_text("[cli]\ncache_token = True\n\n[credentials]\npassword = old%pw\n")
    os.chmod(path, 0o640)
    # When login writes the user without -w; Then the old password is gone, the rest kept, the mode unchanged
    write_credentials(path, "stanley")
    text = path.read_text()
    assert "[cli]\ncache_token = True" in text and "username = stanley" in text and "password" not in text
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    # When it writes with -w into a new file; Then the password is there and only the owner can read it
    fresh = tmp_path / "sub" / "config"
    write_credentials(fresh, "stanley", "s3cr%t")
    assert "password = s3cr%t" in fresh.read_text()
    assert oct(fresh.stat().st_mode & 0o777) == "0o600"


def _offline_env() -> dict:
    return {"ST2_AUTH_URL": f"http://127.0.0.1:{free_port()}", "ST2_API_URL": f"http://127.0.0.1:{free_port()}/v1"}


def test_login_without_an_auth_server_fails_and_writes_nothing(home):
    result = CliRunner().invoke(cli, ["login", "stanley", "-p", "pw"], env=_offline_env())
    assert result.exit_code == 1
    assert result.output.startswith("ERROR: Failed to log in as stanley: ")
    assert not (home / ".st2").exists()


def test_whoami_without_a_server_says_so_and_exits_zero_like_stackstorm(home):
    result = CliRunner().invoke(cli, ["whoami"], env=_offline_env())
    assert (result.exit_code, result.output) == (0, "Unable to retrieve currently logged-in user\n")


@pytest.mark.parametrize("args, message", [
    (["apikey", "create", "-m", "{not json"], "invalid JSON"),
    (["auth", "stanley", "-l", "soon"], "'soon' is not a valid integer"),
    (["apikey", "list", "-n", "many"], "'many' is not a valid integer"),
    (["apikey", "enable"], "Missing argument 'KEY-OR-ID'"),
    (["login"], "Missing argument 'USERNAME'"),
])
def test_usage_errors_exit_2(home, args, message):
    result = CliRunner().invoke(cli, args, env=_offline_env())
    assert result.exit_code == 2 and message in result.output
