"""Authentication from the CLI's side against the real API and auth apps: `st2 login`,
`auth`, `whoami`, credentials from the config and the token cache, and `apikey`,
with our `st2` and the official st2client 3.9.0 on the same servers.

Both apps are served in green threads on free ports, on the embedded database
and bus; users are real entries in an htpasswd file.
"""

from __future__ import annotations

import json
import os

import eventlet
import pytest
from click.testing import CliRunner
from eventlet import wsgi

from st2api.app import setup_app, setup_auth_app
from st2client.cli import cli
from st2common.models.db.auth import TokenDB
from st2common.services.users import add_user, htpasswd_path
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from testsupport import make_settings
from e2e.st2client_compat import official_st2, run_official  # noqa: F401 (session fixture)

USER, PASSWORD = "stanley", "Ch4nge me"
UNAUTHORIZED = "Unauthorized - One of Token or API key required."


@pytest.fixture
def settings(tmp_path, embedded_mongo):
    """Settings with stanley an admin, and the users file under the test's folder."""
    return make_settings(tmp_path, embedded_mongo, extra={"ST2_SYSTEM__ADMIN_USERS": USER})


@pytest.fixture
def publisher(settings):
    publisher = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
    publisher.declare_work_queues()
    yield publisher
    publisher.close()


def _serve(app) -> tuple[str, object, object]:
    sock = eventlet.listen(("127.0.0.1", 0))
    server = eventlet.spawn(wsgi.server, sock, app, log_output=False)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, sock


@pytest.fixture
def urls(settings, db, publisher):
    """(api_url, auth_url): the API and the auth service on free ports, stanley in the users file."""
    add_user(htpasswd_path(settings), USER, PASSWORD)
    api, api_server, api_sock = _serve(setup_app(settings, publisher))
    auth, auth_server, auth_sock = _serve(setup_auth_app(settings, publisher))
    yield f"{api}/v1", auth
    for server, sock in ((api_server, api_sock), (auth_server, auth_sock)):
        server.kill()
        sock.close()


@pytest.fixture
def home(tmp_path):
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


@pytest.fixture
def st2(urls, home):
    """`st2 <args>` in-process, with HOME at an empty folder and only the servers' URLs in the environment."""
    api_url, auth_url = urls
    env = {name: None for name in os.environ if name.startswith("ST2_")}
    env.update({"HOME": str(home), "ST2_API_URL": api_url, "ST2_AUTH_URL": auth_url})

    def invoke(*args: str, input: str | None = None):
        return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)

    return invoke


def _json(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_login_caches_a_token_that_later_commands_use(st2, home):
    # Given no credentials at all, the API refuses
    refused = st2("action", "list")
    assert refused.exit_code == 1 and UNAUTHORIZED in refused.output
    # When stanley logs in
    result = st2("login", USER, "-p", PASSWORD)
    # Then StackStorm's messages are printed, the token is cached 0600 and the config names the user only
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Logged in as {USER}\n\nNote: You didn't use --write-password")
    cached = home / ".st2" / f"token-{USER}"
    assert set(json.loads(cached.read_text())) == {"token", "expire_timestamp"}
    assert oct(cached.stat().st_mode & 0o777) == "0o600"
    config = (home / ".st2" / "config").read_text()
    assert f"username = {USER}" in config and "password" not in config
    # And later commands run with the cached token, without asking for another one
    assert st2("action", "list").exit_code == 0
    whoami = st2("whoami")
    assert whoami.exit_code == 0
    assert whoami.output.startswith(f'Currently logged in as "{USER}".\n\nAuthentication method: '
                                    "authentication token\nAuthentication token expire time: ")
    assert " - Roles: system_admin" in whoami.output
    assert TokenDB.objects.count() == 1


def test_wrong_password_is_refused_and_nothing_is_written(st2, home):
    result = st2("login", USER, "-p", "wrong")
    assert result.exit_code == 1
    assert result.output.startswith(f"ERROR: Failed to log in as {USER}: 401 Client Error")
    assert "Invalid or missing credentials" in result.output
    assert not (home / ".st2").exists()
    assert st2("auth", "nobody", "-p", PASSWORD).exit_code == 1
    assert TokenDB.objects.count() == 0


def test_auth_prints_a_token_that_works(st2):
    # Given a token asked for with a TTL, the password typed at the prompt
    doc = _json(st2("auth", USER, "-l", "600", "-j", input=f"{PASSWORD}\n"))
    assert set(doc) == {"user", "token", "expiry"} and doc["user"] == USER
    # Then it authenticates a command given with -t, and -t alone prints just a token
    assert st2("action", "list", "-t", doc["token"]).exit_code == 0
    only = st2("auth", USER, "-p", PASSWORD, "-t")
    assert only.exit_code == 0 and len(only.output.strip()) == 32
    table = st2("auth", USER, "-p", PASSWORD)
    assert table.exit_code == 0 and "| user     | stanley" in table.output
    # And a token that is not one is refused
    bad = st2("action", "list", "-t", "0" * 32)
    assert bad.exit_code == 1 and "401" in bad.output


def test_config_password_gets_a_token_once_and_reuses_it(st2, home):
    # Given a config with the password (as `login -w` writes it) and no cached token
    assert st2("login", USER, "-p", PASSWORD, "-w").exit_code == 0
    assert f"password = {PASSWORD}" in (home / ".st2" / "config").read_text()
    (home / ".st2" / f"token-{USER}").unlink()
    # When two commands run; Then the first gets and caches a token, the second reuses it
    assert st2("action", "list").exit_code == 0
    assert (home / ".st2" / f"token-{USER}").exists()
    assert st2("rule", "list").exit_code == 0
    assert TokenDB.objects.count() == 2


def test_apikey_lifecycle(st2, tmp_path):
    assert st2("login", USER, "-p", PASSWORD).exit_code == 0
    # Given a new key, printed alone with -k
    key = st2("apikey", "create", "-k", "-m", '{"purpose": "ci"}').output.strip()
    created = _json(st2("apikey", "get", key, "-j"))
    key_id = created["id"]
    assert created["user"] == USER and created["metadata"] == {"purpose": "ci"}
    # Then the list shows it, and never the key itself
    listing = st2("apikey", "list", "-j")
    assert key_id in [k["id"] for k in _json(listing)] and key not in listing.output
    detail = st2("apikey", "list", "-d", "-j")
    assert key not in detail.output and all(k["key_hash"] == "********" for k in _json(detail))
    # And the key authenticates a command given with --api-key
    assert st2("action", "list", "--api-key", key).exit_code == 0
    # When it is disabled; Then it is refused, and enabling it again lets it in
    assert _json(st2("apikey", "disable", key_id, "-j"))["enabled"] is False
    refused = st2("action", "list", "--api-key", key)
    assert refused.exit_code == 1 and "API key is disabled" in refused.output
    assert _json(st2("apikey", "enable", key_id, "-j"))["enabled"] is True
    assert st2("action", "list", "--api-key", key).exit_code == 0
    # When the key, exported with its hash, is loaded back disabled; Then the stored key is disabled
    exported = [k for k in _json(st2("apikey", "list", "-d", "--show-secrets", "-j")) if k["id"] == key_id]
    assert exported[0]["key_hash"] not in ("", "********")
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps([dict(exported[0], enabled=False)]))
    assert [k["id"] for k in _json(st2("apikey", "load", str(keys_file), "-j"))] == [key_id]
    assert _json(st2("apikey", "get", key_id, "-j"))["enabled"] is False
    # When it is deleted; Then it is gone and refused
    deleted = st2("apikey", "delete", key_id)
    assert deleted.output == f'Resource with id "{key_id}" has been successfully deleted.\n'
    assert st2("action", "list", "--api-key", key).exit_code == 1
    missing = st2("apikey", "get", key_id)
    assert missing.exit_code == 1 and f'API Key "{key_id}" is not found.' in missing.output


def test_official_client_logs_in_and_manages_keys_on_our_servers(official_st2, urls, home, st2):
    api_url, auth_url = urls
    env = {"HOME": str(home), "ST2_AUTH_URL": auth_url, "ST2_CLI_SKIP_CONFIG": "0"}

    def official(*args: str):
        return run_official(list(args), api_url, env)

    # Given the official CLI logged in
    login = official("login", USER, "-p", PASSWORD)
    assert login.returncode == 0, login.stdout + login.stderr
    assert login.stdout.startswith(f"Logged in as {USER}")
    # Then it knows who it is, and our CLI uses the token it cached
    whoami = official("whoami")
    assert whoami.returncode == 0 and f'Currently logged in as "{USER}".' in whoami.stdout
    assert "Authentication method: authentication token" in whoami.stdout
    assert st2("whoami").output == whoami.stdout
    # And auth, apikey create and list work as with StackStorm
    token = official("auth", USER, "-p", PASSWORD, "-t")
    assert token.returncode == 0 and len(token.stdout.strip()) == 32
    key = official("apikey", "create", "-k")
    assert key.returncode == 0, key.stdout + key.stderr
    listing = official("apikey", "list", "-j")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert [k["user"] for k in json.loads(listing.stdout)] == [USER]
    assert key.stdout.strip() not in listing.stdout
    assert st2("action", "list", "--api-key", key.stdout.strip()).exit_code == 0
