"""Authentication on a running platform: the admin st2ctl creates, and the official st2client logging in."""

from __future__ import annotations

import configparser
import json
import os
import stat
import time

import pytest
import requests
from e2e.conftest import Platform
from e2e.st2client_compat import official_st2, run_official  # noqa: F401 (session fixture)

pytestmark = pytest.mark.e2e


def test_a_fresh_install_creates_st2admin_with_a_generated_password_shown_once(tmp_path):
    # Given a fresh platform started without ST2_ADMIN_PASSWORD
    fresh = Platform(tmp_path / "fresh")
    fresh.admin_password = None
    try:
        first = fresh.st2ctl("start", "st2api")
        assert first.returncode == 0, first.stdout + first.stderr
        # Then st2ctl printed the generated password and kept it in a file only its owner reads
        secret_file = fresh.root / "var" / "auth" / "st2admin.password"
        password = secret_file.read_text().strip()
        assert password and password in first.stdout
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert stat.S_IMODE((fresh.root / "var" / "auth" / "htpasswd").stat().st_mode) == 0o600
        # And that password gets a token from the auth port, which opens the API
        response = requests.post(f"{fresh.auth_url}/tokens", json={}, auth=("st2admin", password), timeout=10)
        assert response.status_code == 201, response.text
        token = response.json()["token"]
        assert requests.get(f"{fresh.api_url}/v1/actions", headers={"X-Auth-Token": token}, timeout=10).ok
        assert requests.get(f"{fresh.api_url}/v1/actions", timeout=10).status_code == 401
        # And a restart does not print it again
        fresh.st2ctl("stop", "st2api")
        again = fresh.st2ctl("start", "st2api")
        assert again.returncode == 0 and password not in again.stdout
    finally:
        fresh.stop_and_check()


def test_the_official_client_logs_in_and_runs_core_local_with_its_token(official_st2, platform, tmp_path):
    # Given a home without any st2 config, and the official CLI pointed at the platform
    home = tmp_path / "home"
    (home / ".st2").mkdir(parents=True)
    env = {"HOME": str(home), "ST2_CLI_SKIP_CONFIG": "0", "ST2_AUTH_URL": platform.auth_url}
    # When st2admin logs in
    login = run_official(["login", "st2admin", "-p", platform.admin_password], platform.api_url, env=env)
    assert login.returncode == 0, login.stdout + login.stderr
    assert "Logged in as st2admin" in login.stdout
    # Then the token is cached and the config names the user, without the password
    cached = json.loads((home / ".st2" / "token-st2admin").read_text())
    assert len(cached["token"]) == 32
    config = configparser.ConfigParser()
    config.read(home / ".st2" / "config")
    assert config["credentials"]["username"] == "st2admin" and "password" not in config["credentials"]
    # And whoami and a run use that token
    whoami = run_official(["whoami"], platform.api_url, env=env)
    assert "st2admin" in whoami.stdout, whoami.stdout + whoami.stderr
    run = run_official(["run", "core.local", "cmd=echo logged-in"], platform.api_url, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "logged-in" in run.stdout and "succeeded" in run.stdout
    # And a wrong password is refused
    wrong = run_official(["login", "st2admin", "-p", "wrong"], platform.api_url, env=env)
    assert wrong.returncode != 0
    # And without credentials the CLI is refused with StackStorm's message
    bare = run_official(["action", "list"], platform.api_url, env={"HOME": str(tmp_path / "nobody")})
    assert bare.returncode != 0 and "Unauthorized" in bare.stdout + bare.stderr
    assert not os.environ.get("ST2_AUTH_TOKEN")


def test_an_action_calls_the_api_back_with_its_own_token_which_never_shows(platform, tmp_path):
    # Given a command that asks the API who it is, with the token its execution was given (kept in a file)
    kept = tmp_path / "token"
    script = (f"import os, urllib.request as u; open('{kept}', 'w').write(os.environ['ST2_ACTION_AUTH_TOKEN']); "
              "r = u.Request(os.environ['ST2_ACTION_API_URL'] + '/user', "
              "headers={'X-Auth-Token': os.environ['ST2_ACTION_AUTH_TOKEN']}); "
              "print(u.urlopen(r).read().decode()); print(os.environ['ST2_ACTION_AUTH_TOKEN'])")
    headers = platform.auth_headers()
    created = requests.post(f"{platform.api_url}/v1/executions", headers=headers, timeout=10, json={
        "action": "core.local", "parameters": {"cmd": f'python3 -c "{script}"'}})
    assert created.status_code == 201, created.text
    # When it has run
    execution = None
    for _ in range(300):
        execution = requests.get(f"{platform.api_url}/v1/executions/{created.json()['id']}", headers=headers,
                                 timeout=10).json()
        if execution["status"] not in ("requested", "scheduled", "running"):
            break
        time.sleep(0.1)
    # Then the API knew it as the user who ran it
    assert execution["status"] == "succeeded", execution
    stdout = execution["result"]["stdout"]
    assert json.loads(stdout.splitlines()[0])["username"] == "st2admin"
    # And the token it printed was masked in the stored result
    assert stdout.splitlines()[1] == "********"
    # And it was revoked when the run ended (the delete follows the end's write by a moment)
    for _ in range(50):
        validated = requests.post(f"{platform.auth_url}/tokens/validate", json={"token": kept.read_text()},
                                  headers=headers, timeout=10)
        if validated.json() == {"valid": False}:
            break
        time.sleep(0.05)
    assert validated.json() == {"valid": False}
