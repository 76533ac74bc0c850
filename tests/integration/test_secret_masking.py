"""Secrets stay secret: an encrypted datastore item, a secret pack config option and a secret parameter
reach the command in clear, and nothing stored, served, printed by the CLI or logged shows them.

The action runner runs in this process (green threads) on the embedded database
and filesystem bus; the API is testsupport.api_app behind an extra guard that
fails any response showing the datastore or config secret, even with
show_secrets=true (they are never stored in clear, so nothing can reveal them).
"""

from __future__ import annotations

import json
import logging
import textwrap
import time
from pathlib import Path

import eventlet
import pytest
import webtest
from click.testing import CliRunner
from eventlet import wsgi

import testsupport
from st2actionrunner.cmd import ActionRunnerService
from st2client.cli import cli
from st2common import statuses
from st2common.content import register
from st2common.models.db.execution import ExecutionDB, ExecutionOutputDB
from st2common.models.db.runner import RunnerTypeDB
from st2common.persistence import db as database
from st2common.persistence.access import Access
from st2common.runners import registry
from st2common.runners.base import ActionRunner
from st2common.services import keyvalues, tokens
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from st2common.util import crypto

REPO = Path(__file__).resolve().parents[2]
KV_SECRET = "kv-planted-8d3f21"
CONFIG_SECRET = "config-planted-57ac0e"
PARAM_SECRET = "param-planted-e9b404"
# Never stored in clear, so shown nowhere, whatever the request asks for.
NEVER_SHOWN = (KV_SECRET, CONFIG_SECRET)
MASK = "********"

LOG = logging.getLogger(__name__)


class ChattyRunner(ActionRunner):
    """A runner that logs its command, prints it, then fails quoting it."""

    name = "chatty-test"

    def run(self):
        cmd = self.ctx.runner_parameters["cmd"]
        LOG.info("chatty runner about to run %s", cmd)
        self.ctx.output("stdout", f"running {cmd}\n")
        raise RuntimeError(f"could not run {cmd}")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def vault_pack(root: Path, configs: Path) -> None:
    """A pack with a secret config option, a local-shell-cmd action with a secret parameter, a chatty one."""
    pack = root / "vault"
    write(pack / "pack.yaml", "name: vault\ndescription: Secrets.\nversion: 0.1.0\nauthor: t\nemail: t@example.com\n")
    write(pack / "config.schema.yaml", """\
        password: {type: string, secret: true, required: true}
        region: {type: string, default: eu-west-1}
    """)
    write(pack / "actions" / "local.yaml", """\
        name: local
        runner_type: local-shell-cmd
        description: core.local with a secret token.
        enabled: true
        parameters:
          cmd: {type: string, required: true}
          token: {type: string, secret: true}
    """)
    write(pack / "actions" / "chatty.yaml", """\
        name: chatty
        runner_type: chatty-test
        description: Logs and fails quoting its command.
        enabled: true
    """)
    write(configs / "vault.yaml", f"password: {CONFIG_SECRET}\n")


class StrictGuard:
    """Fails any response that shows a never-stored secret, whatever the request asked for."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        body = b"".join(self.app(environ, start_response))
        for secret in NEVER_SHOWN:
            assert secret.encode() not in body, f"{environ['PATH_INFO']}?{environ.get('QUERY_STRING')} leaked it"
        return [body]


@pytest.fixture
def platform(tmp_path, embedded_mongo, monkeypatch, caplog):
    """The vault pack registered with its config, an action runner here, the guarded API, the planted secrets."""
    # Every level of our own loggers; the libraries at the level the services leave them (st2common.log).
    for name in ("amqp", "kombu", "pymongo", "urllib3", "eventlet.wsgi.server"):
        caplog.set_level(logging.WARNING, logger=name)
    caplog.set_level(logging.DEBUG)  # last: it sets the capturing handler's level too
    vault_pack(tmp_path / "packs", tmp_path / "configs")
    settings = testsupport.make_settings(tmp_path, embedded_mongo, extra={
        "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(REPO / "contrib" / "packs"),
        "ST2_CONTENT__PACKS_BASE_PATHS": str(tmp_path / "packs"),
        "ST2_CONTENT__CONFIGS_PATH": str(tmp_path / "configs"),
    })
    client = database.connect(settings)
    publisher = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
    publisher.declare_work_queues()
    monkeypatch.setitem(registry.RUNNERS, ChattyRunner.name, f"{__name__}:ChattyRunner")
    chatty = RunnerTypeDB(name=ChattyRunner.name, runner_parameters={"cmd": {"type": "string"}})
    chatty.set_identity()
    Access(RunnerTypeDB).add_or_update(chatty)
    report = register(settings, kinds=["runners", "actions", "configs"])
    assert report.ok, report.errors
    crypto.write_key_file(settings.keyvalue.encryption_key_path)
    keyvalues.Datastore(settings).set("pw", KV_SECRET, secret=True)
    monkeypatch.setattr(testsupport, "PLANTED_SECRETS", testsupport.PLANTED_SECRETS | {PARAM_SECRET, *NEVER_SHOWN})
    runner = ActionRunnerService(settings, publisher)
    runner.start()
    app = StrictGuard(testsupport.api_app(settings, publisher))
    yield Platform(settings, publisher, app)
    runner.stop()
    publisher.close()
    client.drop_database(settings.database.db_name)
    database.disconnect()


class Platform:
    def __init__(self, settings, publisher, app) -> None:
        self.settings = settings
        self.publisher = publisher
        self.app = app
        self.api = webtest.TestApp(app)

    def run(self, ref: str, parameters: dict, timeout: float = 15.0) -> ExecutionDB:
        """Request through the API, as a user does; the stored record once it ended."""
        created = self.api.post_json("/v1/executions", {"action": ref, "parameters": parameters}, status=201).json
        deadline = time.monotonic() + timeout
        while True:
            execution = Access(ExecutionDB).get_by_id(created["id"])
            if execution.status in statuses.COMPLETED:
                return execution
            assert time.monotonic() < deadline, f"execution {created['id']} is still {execution.status}"
            time.sleep(0.02)

    def st2(self, *args: str):
        """`st2 <args>` (our CLI) against the guarded API served on a free port."""
        sock = eventlet.listen(("127.0.0.1", 0))
        server = eventlet.spawn(wsgi.server, sock, self.app, log_output=False)
        try:
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
            return CliRunner().invoke(cli, ["--api-url", url, "--skip-config", *args], catch_exceptions=False)
        finally:
            server.kill()
            sock.close()


def stored(execution_id) -> str:
    """Everything stored about an execution (the record and its output chunks), as text."""
    record = Access(ExecutionDB).get_by_id(execution_id).to_mongo().to_dict()
    return json.dumps(record, default=str) + outputs(execution_id)


def outputs(execution_id) -> str:
    """The stored output chunks of an execution."""
    return "".join(c.data for c in Access(ExecutionOutputDB).query(raw={"execution_id": str(execution_id)}))


def test_secrets_reach_the_command_in_clear_and_nothing_shows_them(platform, tmp_path, caplog):
    # Given an encrypted item, a secret config option and a secret parameter, and a file the command writes
    seen = tmp_path / "seen"
    cmd = ("printf '%s|%s|%s' '{{ st2kv.system.pw | decrypt_kv }}' '{{ config_context.password }}' "
           f"'{{{{ token }}}}' > {seen}; echo kv={{{{ st2kv.system.pw | decrypt_kv }}}} "
           "config={{ config_context.password }} token={{ token }}")
    # When vault.local runs a command that reads them all through templates
    execution = platform.run("vault.local", {"cmd": cmd, "token": PARAM_SECRET})
    # Then the command got each in clear
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert seen.read_text() == f"{KV_SECRET}|{CONFIG_SECRET}|{PARAM_SECRET}"
    # And what it printed is stored masked (masked, not missing: it printed exactly the secrets)
    assert execution.result["stdout"] == f"kv={MASK} config={MASK} token={MASK}"
    # And the stored execution keeps the template; no clear value of them is stored anywhere
    assert execution.parameters["cmd"] == cmd
    assert not any(secret in stored(execution.pk) for secret in NEVER_SHOWN)
    # And the secret parameter, stored in clear as StackStorm stores it, is masked in what the run recorded
    assert PARAM_SECRET not in json.dumps(execution.result) + outputs(execution.pk)

    # And the API shows none of them (the guards fail any response that does)
    api, ex_id = platform.api, str(execution.pk)
    shown = api.get(f"/v1/executions/{ex_id}").json
    assert shown["parameters"] == {"cmd": cmd, "token": MASK}
    assert shown["liveaction"]["parameters"]["token"] == MASK
    assert [e["id"] for e in api.get("/v1/executions?action=vault.local").json] == [ex_id]
    assert api.get(f"/v1/executions/{ex_id}/output").text == f"kv={MASK} config={MASK} token={MASK}\n"
    assert json.loads(api.get(f"/v1/executions/{ex_id}/result").body)["stdout"].startswith("kv=")
    api.get(f"/v1/executions/{ex_id}/attribute/result")
    api.get("/v1/configs/vault")
    # And an admin asking for secrets sees the secret parameter as StackStorm shows it, nothing more
    revealed = api.get(f"/v1/executions/{ex_id}?show_secrets=true").json
    assert revealed["parameters"] == {"cmd": cmd, "token": PARAM_SECRET}
    assert api.get("/v1/executions?show_secrets=true&action=vault.local").json[0]["parameters"]["token"] == PARAM_SECRET

    # And the CLI prints none of them
    for args in (("execution", "get", ex_id), ("execution", "get", ex_id, "-j"), ("execution", "list", "-n", "5")):
        result = platform.st2(*args)
        assert result.exit_code == 0, result.output
        assert not any(secret in result.output for secret in (*NEVER_SHOWN, PARAM_SECRET)), result.output
    assert ex_id in platform.st2("execution", "get", ex_id).output

    # And no log line of the run, the API or the CLI shows them
    assert caplog.records
    planted = (*NEVER_SHOWN, PARAM_SECRET)
    leaks = [r.getMessage() for r in caplog.records if any(secret in r.getMessage() for secret in planted)]
    assert not leaks, leaks
    assert not any(secret in caplog.text for secret in planted)


def test_the_api_never_decrypts_what_a_request_template_reads(platform):
    # When a request's templates read a secret config option and a datastore secret
    created = platform.api.post_json("/v1/executions", {"action": "vault.local", "parameters": {
        "cmd": "echo {{ config_context.password }} {{ config_context.region }}",
        "token": "{{ st2kv.system.pw | decrypt_kv }}"}}, status=201).json
    # Then the request is accepted and stored with those templates as they are, for the run to render
    execution = Access(ExecutionDB).get_by_id(created["id"])
    assert execution.parameters == {"cmd": "echo {{ config_context.password }} {{ config_context.region }}",
                                    "token": "{{ st2kv.system.pw | decrypt_kv }}"}
    # While a template reading only an ordinary option renders at once, as before
    plain = platform.api.post_json("/v1/executions", {"action": "vault.local", "parameters": {
        "cmd": "echo {{ config_context.region }}"}}, status=201).json
    assert Access(ExecutionDB).get_by_id(plain["id"]).parameters == {"cmd": "echo eu-west-1"}


def test_a_runner_that_logs_and_quotes_a_secret_in_its_error_shows_it_nowhere(platform, caplog):
    # When a runner logs, prints and fails quoting a command holding a decrypted secret
    execution = platform.run("vault.chatty", {"cmd": "login --password {{ st2kv.system.pw | decrypt_kv }}"})
    # Then the run failed with its error and traceback stored masked
    assert execution.status == statuses.FAILED
    assert execution.result["error"] == f"could not run login --password {MASK}"
    assert MASK in execution.result["traceback"]
    # And its output chunk and every log line are masked too
    assert not any(secret in stored(execution.pk) for secret in NEVER_SHOWN)
    assert f"running login --password {MASK}" in platform.api.get(f"/v1/executions/{execution.pk}/output").text
    assert "chatty runner about to run login --password ********" in caplog.text
    assert KV_SECRET not in caplog.text


def test_a_request_rendering_a_secret_into_an_integer_fails_at_run_time_without_quoting_it(platform):
    # Given a datastore item that is not a number, rendered into an integer parameter at run time
    keyvalues.Datastore(platform.settings).set("port", "not-a-port-" + KV_SECRET, secret=True)
    execution = platform.run("core.local", {"cmd": "true", "timeout": "{{ st2kv.system.port | decrypt_kv }}"})
    # Then the run fails naming the parameter, without the value
    assert execution.status == statuses.FAILED
    assert 'parameter "timeout"' in execution.result["error"] and KV_SECRET not in json.dumps(execution.result)


def test_rerunning_keeps_the_template_and_decrypts_again(platform, tmp_path):
    # Given a run that decrypted an item
    seen = tmp_path / "again"
    first = platform.run("vault.local", {"cmd": f"printf %s '{{{{ st2kv.system.pw | decrypt_kv }}}}' >> {seen}"})
    assert first.status == statuses.SUCCEEDED, first.result
    # When it is re-run
    rerun = platform.api.post_json(f"/v1/executions/{first.pk}/re_run", {}, status=201).json
    deadline = time.monotonic() + 15
    while Access(ExecutionDB).get_by_id(rerun["id"]).status not in statuses.COMPLETED:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # Then the re-run stored the template again and its command got the clear value again
    assert Access(ExecutionDB).get_by_id(rerun["id"]).parameters == first.parameters
    assert seen.read_text() == KV_SECRET * 2


def test_show_secrets_from_someone_who_is_not_an_admin_is_ignored(platform):
    # Given an execution with a secret parameter, and an observer (who may read, but is no admin)
    execution = platform.run("vault.local", {"cmd": "true", "token": PARAM_SECRET})
    write(Path(platform.settings.rbac.assignments_path) / "olive.yaml", "username: olive\nroles: [observer]\n")
    _, token = tokens.issue(platform.settings, "olive")
    # When the observer asks for secrets, Then the answer is masked all the same
    headers = {"X-Auth-Token": token}
    shown = platform.api.get(f"/v1/executions/{execution.pk}?show_secrets=true", headers=headers).json
    assert shown["parameters"]["token"] == MASK
    listed = platform.api.get("/v1/executions?show_secrets=true&action=vault.local", headers=headers).json
    assert [e["parameters"]["token"] for e in listed] == [MASK]
