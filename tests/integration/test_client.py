"""The st2 CLI and Python client against the real API: st2api served in a green
thread on the embedded database and bus, with the runner types and the core
pack registered. Runs that must finish also start the action runner in-process;
the official st2client 3.9.0 CLI is driven against the same server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import eventlet
import pytest
from click.testing import CliRunner
from eventlet import wsgi

from testsupport import api_app
from st2client.cli import cli
from st2client.client import Client, HTTPError
from st2common.content import register
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from testsupport import make_settings
from e2e.st2client_compat import official_st2, run_official, side_by_side  # noqa: F401 (session fixture)

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 20.0


@pytest.fixture
def settings(tmp_path, embedded_mongo):
    """Settings whose packs are the shipped ones (core)."""
    return make_settings(tmp_path, embedded_mongo, extra={
        "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(REPO / "contrib" / "packs"),
        "ST2_CONTENT__PACKS_BASE_PATHS": str(tmp_path / "packs"),
    })


@pytest.fixture
def publisher(settings):
    publisher = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
    publisher.declare_work_queues()
    yield publisher
    publisher.close()


@pytest.fixture
def api_url(settings, db, publisher):
    """The API on a free port, served by eventlet's WSGI server in a green thread."""
    register(settings, publisher=publisher)
    sock = eventlet.listen(("127.0.0.1", 0))
    server = eventlet.spawn(wsgi.server, sock, api_app(settings, publisher), log_output=False)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server.kill()
    sock.close()


@pytest.fixture
def runner_service(settings, api_url, publisher):
    """The scheduler and action runner, consuming from this test's bus."""
    from st2actionrunner.cmd import ActionRunnerService

    service = ActionRunnerService(settings, publisher)
    service.start()
    yield service
    service.stop()


def st2(api_url: str, *args: str):
    """`st2 <args>` through click's CliRunner, against api_url, with no user config."""
    result = CliRunner().invoke(cli, ["--api-url", api_url, "--skip-config", *args], catch_exceptions=False)
    return result


def as_json(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_list_and_get_commands_show_the_registered_content(api_url):
    # Given the core pack registered; When the listing commands run; Then they show it like StackStorm's CLI
    result = st2(api_url, "action", "list")
    assert result.exit_code == 0
    assert re.search(r"\|\s*ref\s*\|\s*pack\s*\|\s*description\s*\|", result.output)
    assert re.search(r"\|\s*core\.local\s*\|\s*core\s*\|", result.output)
    assert {a["ref"] for a in as_json(st2(api_url, "action", "list", "-p", "core", "-j"))} >= {
        "core.local", "core.noop", "core.http"}
    local = as_json(st2(api_url, "action", "get", "core.local", "-j"))
    assert local["runner_type"] == "local-shell-cmd" and "cmd" in local["parameters"]
    detail = st2(api_url, "action", "get", "core.local")
    assert [line.split("|")[1].strip() for line in detail.output.splitlines()[3:6]] == ["id", "uid", "ref"]
    assert as_json(st2(api_url, "action", "get", "core.local", "-a", "ref", "pack", "-j")) == {
        "ref": "core.local", "pack": "core"}

    runners = as_json(st2(api_url, "runner", "list", "-j"))
    assert {"local-shell-cmd", "python-script", "noop"} <= {r["name"] for r in runners}
    assert all(isinstance(r["id"], str) for r in runners)
    assert as_json(st2(api_url, "runner", "get", "noop", "-j"))["name"] == "noop"
    packs = st2(api_url, "pack", "list")
    assert packs.exit_code == 0 and re.search(r"\|\s*core\s*\|\s*core\s*\|", packs.output)
    assert as_json(st2(api_url, "pack", "get", "core", "-j"))["name"] == "core"


def test_run_async_then_list_get_and_cancel(api_url):
    # Given no action runner; When core.noop is run with -a; Then it returns at once with the follow-up hint
    result = st2(api_url, "run", "core.noop", "-a")
    assert result.exit_code == 0, result.output
    execution_id = re.search(r"st2 execution get (\w+)", result.output).group(1)
    assert f"st2 execution tail {execution_id}" in result.output

    # And the execution is listed and shown, requested by the system user
    listed = as_json(st2(api_url, "execution", "list", "-j"))
    assert [(e["id"], e["action"]["ref"], e["status"]) for e in listed] == [
        (execution_id, "core.noop", "requested")]
    table = st2(api_url, "execution", "list")
    assert re.search(rf"\|\s*{execution_id}\s*\|\s*core\.noop\s*\|", table.output)
    shown = as_json(st2(api_url, "execution", "get", execution_id, "-j"))
    assert shown["id"] == execution_id and shown["status"] == "requested"
    text = st2(api_url, "execution", "get", execution_id)
    assert f"id: {execution_id}" in text.output and "action.ref: core.noop" in text.output

    # When it is canceled; Then the CLI says so and the execution ends canceled
    canceled = st2(api_url, "execution", "cancel", execution_id)
    assert canceled.exit_code == 0 and f"with id {execution_id} canceled." in canceled.output
    assert as_json(st2(api_url, "execution", "get", execution_id, "-j"))["status"] in ("canceling", "canceled")


def test_bad_input_is_reported_with_exit_code_1(api_url):
    missing = st2(api_url, "run", "nope.nothing")
    assert missing.exit_code == 1
    assert "ERROR: Resource with id or reference \"nope.nothing\" doesn't exist." in missing.output
    bad_type = st2(api_url, "run", "core.local", "cmd=true", "timeout=soon")
    assert bad_type.exit_code == 1 and 'parameter "timeout" of type integer' in bad_type.output
    unknown = st2(api_url, "run", "core.noop", "-a", "bogus=1")
    assert unknown.exit_code == 1 and "400 Client Error" in unknown.output and "bogus" in unknown.output
    absent = st2(api_url, "execution", "get", "5f0000000000000000000000")
    assert absent.exit_code == 1 and "not found" in absent.output
    assert st2(api_url, "action", "get", "core.nothing").exit_code == 1


def test_action_create_update_disable_delete(api_url, tmp_path):
    # Given an action metadata file; When it is created; Then it is stored under its pack
    meta = tmp_path / "hello.yaml"
    meta.write_text("name: hello\npack: default\nrunner_type: local-shell-cmd\ndescription: says hello\n"
                    "parameters:\n  cmd:\n    type: string\n    default: echo hello\n")
    created = st2(api_url, "action", "create", str(meta), "-j")
    assert as_json(created)["ref"] == "default.hello"

    # When its file changes and it is updated, then disabled; Then each change shows
    meta.write_text(meta.read_text().replace("says hello", "says hello twice"))
    assert as_json(st2(api_url, "action", "update", "default.hello", str(meta), "-j"))["description"] == \
        "says hello twice"
    assert as_json(st2(api_url, "action", "disable", "default.hello", "-j"))["enabled"] is False

    # When it is deleted; Then it is gone
    deleted = st2(api_url, "action", "delete", "default.hello")
    assert deleted.exit_code == 0
    assert 'Resource with id "default.hello" has been successfully deleted.' in deleted.output
    assert st2(api_url, "action", "get", "default.hello").exit_code == 1


def test_python_client_managers(api_url):
    # Given the Python client pointed at the API
    client = Client(api_url=api_url, env={}, config={})

    # Then each manager speaks to its resource, and errors carry the server's faultstring
    action = client.actions.get_by_ref_or_id("core.local")
    assert action.ref == "core.local" and action.runner_type == "local-shell-cmd"
    assert client.actions.get_by_ref_or_id("core.nothing") is None
    assert client.runners.get_by_name("local-shell-cmd").runner_parameters["cmd"]["type"] == "string"
    assert client.packs.get_by_id("core").ref == "core"
    execution = client.executions.create({"action": "core.noop", "parameters": {}})
    assert execution.status == "requested" and execution.action["ref"] == "core.noop"
    rows, total = client.executions.query_with_count(limit=5, parent="null")
    assert [e.id for e in rows] == [execution.id] and total == 1
    with pytest.raises(HTTPError) as failure:
        client.executions.create({"action": "core.nothing"})
    assert failure.value.status_code in (400, 404) and "core.nothing" in failure.value.faultstring


def test_run_waits_prints_the_result_and_exits_1_on_failure(api_url, runner_service):
    # Given the action runner; When core.local runs; Then the CLI waits and prints the result and succeeded
    result = st2(api_url, "run", "core.local", "cmd=echo hello")
    assert result.exit_code == 0, result.output
    assert re.search(r"^status: succeeded$", result.output, re.M)
    assert re.search(r"^  stdout: hello$", result.output, re.M)
    execution_id = re.search(r"^id: (\w+)$", result.output, re.M).group(1)

    # When a command fails; Then the exit code is 1
    failed = st2(api_url, "run", "core.local", "cmd=exit 3", "-j")
    assert failed.exit_code == 1
    assert json.loads(failed.output)["result"]["return_code"] == 3

    # When the first execution is re-run with an override; Then the new one carries it and the re-run link
    rerun = st2(api_url, "execution", "re-run", execution_id, "cmd=echo again", "-j")
    assert rerun.exit_code == 0, rerun.output
    again = json.loads(rerun.output)
    assert again["result"]["stdout"].strip() == "again" and again["status"] == "succeeded"
    client = Client(api_url=api_url, env={}, config={})
    assert client.executions.get_by_id(again["id"]).context["re-run"]["ref"] == execution_id
    key = st2(api_url, "execution", "get", execution_id, "-k", "stdout")
    assert key.output.strip() == "hello"
    tail = st2(api_url, "execution", "tail", execution_id)
    assert tail.output.splitlines()[0] == "hello"
    assert f"Execution {execution_id} has completed (status=succeeded)." in tail.output


def test_official_st2client_drives_the_api(api_url, runner_service, official_st2):
    # Given the official StackStorm CLI 3.9.0; When its most used commands run; Then each succeeds.
    # Commands that do not depend on each other run side by side (each is a ~1 s process, and
    # `st2 run` polls every 2 s).
    def official(*args: str):
        return lambda: run_official(list(args), api_url)

    actions, local, runners, packs, ran, noop = side_by_side([
        official("action", "list", "-j"), official("action", "get", "core.local", "-j"),
        official("runner", "list"), official("pack", "list"),
        official("run", "core.local", "cmd=echo hello", "-j"), official("run", "core.noop")])
    assert "core.local" in {a["ref"] for a in json.loads(actions.stdout)}
    assert local.returncode == 0 and json.loads(local.stdout)["runner_type"] == "local-shell-cmd"
    for done in (runners, packs):
        assert done.returncode == 0 and "ERROR" not in done.stdout, (done.args, done.stdout, done.stderr)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    execution = json.loads(ran.stdout)
    assert execution["status"] == "succeeded" and execution["result"]["stdout"] == "hello"
    assert noop.returncode == 0 and "succeeded" in noop.stdout, noop.stdout + noop.stderr

    # When the finished run is listed, shown and re-run
    listed, got, rerun = side_by_side([official("execution", "list"), official("execution", "get", execution["id"]),
                                       official("execution", "re-run", execution["id"], "-j")])
    assert listed.returncode == 0 and execution["id"] in listed.stdout, listed.stdout + listed.stderr
    assert got.returncode == 0 and "stdout: hello" in got.stdout, got.stdout + got.stderr
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert json.loads(rerun.stdout)["status"] == "succeeded"
