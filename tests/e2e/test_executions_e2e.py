"""Run actions on the running platform through both CLIs: the project's `st2` and the official st2client 3.9.0.

One platform for the module (tests/e2e/conftest.py: st2ctl start in a temporary
folder, shipped packs and dummy_pack registered). The CLIs are subprocesses; what
they did is checked on the REST API. The official client polls every 2 s, so it
runs a few executions only. Then come regressions found end to end, and last
the test that SIGKILLs the action runner and starts it again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from datetime import datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from e2e.conftest import free_port, processes_with_env, wait_for
from e2e.st2client_compat import (official_st2, run_official, run_project,  # noqa: F401 (session fixture)
                                  side_by_side)
from st2actionrunner.runners import write_all
from st2common.util.process import pid_alive, tree_pids

pytestmark = pytest.mark.e2e

TERMINAL = ("succeeded", "failed", "timeout", "canceled", "abandoned")
ID_LINE = re.compile(r"^(?:\x1b\[\d+m)?id(?:\x1b\[0m)?: ([0-9a-f]{24})$", re.MULTILINE)
CLI_TIMEOUT = 60

# The platform admin's credentials, for the requests and CLI runs of this module.
HTTP = requests.Session()
CREDENTIALS: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _credentials(platform):
    HTTP.headers.update(platform.auth_headers())
    CREDENTIALS.update(platform.auth_env())
    yield
    HTTP.headers.pop("X-Auth-Token", None)
    CREDENTIALS.clear()


@pytest.fixture(params=["project", "official"])
def st2(request, api_url):
    """`st2 <args>` with each CLI in turn: the project's, then the official st2client 3.9.0."""
    if request.param == "official":
        request.getfixturevalue("official_st2")
        return lambda *args: run_official(list(args), api_url, env=CREDENTIALS, timeout=CLI_TIMEOUT)
    return lambda *args: run_project(list(args), api_url, env=CREDENTIALS)


def execution_id(output: str) -> str:
    """The execution id in `st2 run` / `re-run` output (the `id: ...` line, colours or not)."""
    found = ID_LINE.findall(output)
    assert found, f"no execution id in:\n{output}"
    return found[0]


def stamp(text: str) -> float:
    """Seconds since the epoch of an API timestamp (2026-11-21T07:01:03.123000Z)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def get_execution(api_url: str, ident: str) -> dict:
    response = HTTP.get(f"{api_url}/v1/executions/{ident}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def request_execution(api_url: str, action: str, **parameters) -> str:
    response = HTTP.post(f"{api_url}/v1/executions", json={"action": action, "parameters": parameters},
                             timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def wait_status(api_url: str, ident: str, statuses=TERMINAL, timeout: float = 10.0) -> dict:
    """Poll the execution until its status is one of statuses; the last record seen."""
    last = {}

    def reached():
        last.update(get_execution(api_url, ident))
        return last["status"] in statuses

    wait_for(reached, timeout)
    assert last["status"] in statuses, f"execution {ident} is {last['status']}, not {statuses}"
    return last


def action_processes(ident: str) -> dict[int, str]:
    """{pid: command line} of live processes running for the execution (its ST2_ACTION_EXECUTION_ID)."""
    return processes_with_env("ST2_ACTION_EXECUTION_ID", ident)


def runs_command(ident: str, command: str) -> bool:
    """True when a process of the execution runs command."""
    return any(command in cmdline for cmdline in action_processes(ident).values())


@pytest.fixture(scope="module")
def json_server():
    """A local HTTP server answering every GET with a JSON document; (url, document)."""
    document = {"answer": 42, "items": [1, "two"], "nested": {"ok": True}}
    body = json.dumps(document).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's hook name
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/data?x=1", document
    server.shutdown()
    server.server_close()


# -- running actions ----------------------------------------------------------------------

def test_run_core_local_prints_hello_and_succeeded(st2, api_url):
    # When `st2 run core.local cmd="echo hello"` runs
    result = st2("run", "core.local", "cmd=echo hello")

    # Then it prints hello and succeeded, exits 0, and the API holds the same result
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello" in result.stdout
    assert "succeeded" in result.stdout
    execution = get_execution(api_url, execution_id(result.stdout))
    assert execution["status"] == "succeeded"
    assert execution["result"]["stdout"] == "hello"
    assert execution["result"]["return_code"] == 0
    assert execution["start_timestamp"] <= execution["end_timestamp"]


def test_run_core_noop_succeeds(st2, api_url):
    result = st2("run", "core.noop")

    assert result.returncode == 0, result.stdout + result.stderr
    execution = get_execution(api_url, execution_id(result.stdout))
    assert execution["status"] == "succeeded"
    assert execution["action"]["ref"] == "core.noop"


def test_failing_command_exits_1_and_is_failed(st2, api_url):
    result = st2("run", "core.local", "cmd=echo oops >&2; exit 3")

    assert result.returncode == 1, result.stdout + result.stderr
    execution = get_execution(api_url, execution_id(result.stdout))
    assert execution["status"] == "failed"
    assert execution["result"]["return_code"] == 3
    assert execution["result"]["stderr"] == "oops"


def test_python_script_action_returns_a_dict(api_url):
    # When dummy_pack's python-script action runs through the CLI
    result = run_project(["run", "dummy_pack.return_dict", "count=3"], api_url, env=CREDENTIALS)

    # Then its run() return value is stored as a dict, the parameters cast and defaulted
    assert result.returncode == 0, result.stdout + result.stderr
    execution = get_execution(api_url, execution_id(result.stdout))
    assert execution["status"] == "succeeded"
    value = execution["result"]["result"]
    assert isinstance(value, dict)
    assert value["values"] == {"count": 3, "name": "world"}
    assert value["execution_id"] == execution["id"]


def test_http_action_returns_the_json_body_parsed(api_url, json_server):
    url, document = json_server

    result = run_project(["run", "core.http", f"url={url}"], api_url, env=CREDENTIALS)

    assert result.returncode == 0, result.stdout + result.stderr
    execution = get_execution(api_url, execution_id(result.stdout))
    assert execution["status"] == "succeeded"
    assert execution["result"]["status_code"] == 200
    assert execution["result"]["body"] == document


# -- the official client reads what it lists ----------------------------------------------

def test_official_client_lists_and_gets(official_st2, api_url):
    # Given a finished execution
    ident = request_execution(api_url, "core.local", cmd="echo listed")
    wait_status(api_url, ident)

    # When the official client lists and gets actions, executions, runners and packs (side by side:
    # they only read, and each is a ~1 s process)
    commands = {
        "action list": ["action", "list"],
        "action get": ["action", "get", "core.local"],
        "execution list": ["execution", "list", "-n", "5"],
        "execution get": ["execution", "get", ident],
        "execution get json": ["execution", "get", ident, "-j"],
        "runner list": ["runner", "list"],
        "pack list": ["pack", "list"],
    }
    shown = dict(zip(commands, side_by_side(
        [partial(run_official, args, api_url, env=CREDENTIALS) for args in commands.values()])))

    # Then every command succeeds and shows the key values
    for name, result in shown.items():
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert "ERROR" not in result.stdout + result.stderr, f"{name}: {result.stdout}{result.stderr}"
    assert "core.local" in shown["action list"].stdout
    assert "dummy_pack.return_dict" in shown["action list"].stdout
    assert "local-shell-cmd" in shown["action get"].stdout
    assert ident in shown["execution list"].stdout
    assert "listed" in shown["execution get"].stdout
    assert json.loads(shown["execution get json"].stdout)["status"] == "succeeded"
    for runner in ("local-shell-cmd", "python-script", "http-request", "noop"):
        assert runner in shown["runner list"].stdout
    for pack in ("core", "dummy_pack"):
        assert pack in shown["pack list"].stdout


def test_re_run_creates_a_new_execution_pointing_at_the_first(st2, api_url):
    # Given a finished execution
    first = request_execution(api_url, "core.local", cmd="echo again")
    wait_status(api_url, first)

    # When it is re-run
    result = st2("execution", "re-run", first)

    # Then a new execution ran the same parameters, its context naming the original
    assert result.returncode == 0, result.stdout + result.stderr
    second = execution_id(result.stdout)
    assert second != first
    execution = wait_status(api_url, second)
    assert execution["context"]["re-run"]["ref"] == first
    assert execution["parameters"] == {"cmd": "echo again"}
    assert execution["status"] == "succeeded"
    assert execution["result"]["stdout"] == "again"


def test_re_run_with_a_parameter_override(api_url):
    first = request_execution(api_url, "core.local", cmd="echo before")
    wait_status(api_url, first)

    result = run_project(["execution", "re-run", first, "cmd=echo after"], api_url, env=CREDENTIALS)

    assert result.returncode == 0, result.stdout + result.stderr
    execution = wait_status(api_url, execution_id(result.stdout))
    assert execution["context"]["re-run"]["ref"] == first
    assert execution["result"]["stdout"] == "after"


# -- cancel -------------------------------------------------------------------------------

def test_cancel_ends_canceled_within_2s_and_leaves_no_process(st2, api_url):
    # Given a running `sleep 30`, its processes visible
    ident = request_execution(api_url, "core.local", cmd="sleep 30")
    wait_status(api_url, ident, ("running",))
    assert wait_for(partial(runs_command, ident, "sleep 30"), 5.0)

    # When it is canceled through the CLI
    result = st2("execution", "cancel", ident)
    answered = time.monotonic()

    # Then it is canceled within 2 s of the request (the CLI's own start-up aside), and no
    # process of it is left
    assert result.returncode == 0, result.stdout + result.stderr
    assert "canceled" in result.stdout
    execution = wait_status(api_url, ident, ("canceled",), timeout=2.0)
    assert time.monotonic() - answered < 2.0
    log = {entry["status"]: stamp(entry["timestamp"]) for entry in execution["log"]}
    assert [entry["status"] for entry in execution["log"]][-2:] == ["canceling", "canceled"]
    assert log["canceled"] - log["canceling"] < 2.0
    assert wait_for(lambda: not action_processes(ident), 1.0), action_processes(ident)


# -- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("args,named", [
    (["dummy_pack.return_dict", "count=many"], "count"),
    (["core.local", "cmd=true", "bogus=1"], "bogus"),
    (["core.local"], "cmd"),
])
def test_bad_parameters_are_refused_naming_the_parameter(api_url, args, named):
    before = HTTP.get(f"{api_url}/v1/executions", params={"limit": 1}, timeout=10).headers["X-Total-Count"]

    result = run_project(["run", *args], api_url, env=CREDENTIALS)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "ERROR" in result.stdout
    assert f"'{named}'" in result.stdout or f'"{named}"' in result.stdout, result.stdout
    after = HTTP.get(f"{api_url}/v1/executions", params={"limit": 1}, timeout=10).headers["X-Total-Count"]
    assert after == before


@pytest.mark.parametrize("action,parameters,named", [
    ("core.local", {"cmd": "true", "timeout": "soon"}, "timeout"),
    ("core.local", {"cmd": "true", "bogus": 1}, "bogus"),
    ("core.local", {"env": {"A": "1"}}, "cmd"),
])
def test_api_refuses_bad_parameters_with_400_naming_them(api_url, action, parameters, named):
    response = HTTP.post(f"{api_url}/v1/executions", json={"action": action, "parameters": parameters},
                             timeout=10)

    assert response.status_code == 400, response.text
    assert named in response.json()["faultstring"]


def test_unknown_action_is_named(st2, api_url):
    result = st2("run", "core.does_not_exist", "x=1")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "core.does_not_exist" in result.stdout
    response = HTTP.post(f"{api_url}/v1/executions", json={"action": "core.does_not_exist"}, timeout=10)
    assert response.status_code == 404
    assert "core.does_not_exist" in response.json()["faultstring"]


# -- regressions found end to end ----------------------------------------------------------

def test_writing_to_a_pipe_whose_reader_died_raises_instead_of_spinning():
    # Seen end to end: core.local_sudo on a host without sudo exits before reading its
    # password, and eventlet's green os.write retried EPIPE forever: the action runner
    # spun at full CPU and the execution stayed running. Runners write through write_all.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        with pytest.raises(BrokenPipeError):
            write_all(write_end, b"password\n")
    finally:
        os.close(write_end)


def test_a_python_worker_killed_mid_run_fails_the_run_and_takes_its_children(api_url, tmp_path):
    # Given dummy_pack.sleep running in a python worker, with a child `sleep` holding the worker's output
    pid_file = tmp_path / "pids"
    ident = request_execution(api_url, "dummy_pack.sleep", seconds=30, pid_file=str(pid_file))
    assert wait_for(pid_file.exists, 10.0)
    worker, child = (int(line) for line in pid_file.read_text().split())

    # When the worker is killed
    os.kill(worker, signal.SIGKILL)

    # Then the run fails at once instead of waiting for the child, and the child is gone
    execution = wait_status(api_url, ident, timeout=5.0)
    assert execution["status"] == "failed"
    assert wait_for(lambda: not pid_alive(child), 2.0)
    # And the pack's next run gets a new worker
    again = wait_status(api_url, request_execution(api_url, "dummy_pack.return_dict"))
    assert again["status"] == "succeeded"
    assert again["result"]["result"]["pid"] != worker


# -- a killed action runner (last: it restarts the action runner) -------------------------

def test_runs_of_a_sigkilled_action_runner_become_abandoned_at_its_restart(platform, api_url):
    # Given two running executions, a shell command and a python-script action
    idents = [request_execution(api_url, "core.local", cmd="sleep 30"),
              request_execution(api_url, "dummy_pack.sleep", seconds=30)]
    for ident in idents:
        wait_status(api_url, ident, ("running",))
        assert wait_for(partial(runs_command, ident, "sleep 30"), 5.0)

    # When the action runner is SIGKILLed, and started again with st2ctl
    runner = platform.pid("st2actionrunner")
    family = tree_pids(runner) - {runner}
    workers = [pid for pid in family if b"python_wrapper" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert workers
    os.kill(runner, signal.SIGKILL)
    result = platform.st2ctl("start", "st2actionrunner")
    assert result.returncode == 0, result.stdout + result.stderr

    # Then both executions are abandoned, with an end timestamp
    for ident in idents:
        execution = wait_status(api_url, ident, ("abandoned",), timeout=5.0)
        assert execution["end_timestamp"]
    # And the restarted runner runs new work
    assert wait_status(api_url, request_execution(api_url, "core.noop"))["status"] == "succeeded"
    # And nothing of the dead runner's runs is left: its python worker died with it, and the
    # restarted runner killed what the runs had started (StackStorm orphans them)
    assert not [pid for pid in workers if pid_alive(pid)]
    for ident in idents:
        assert wait_for(lambda: not action_processes(ident), 5.0), action_processes(ident)
