"""The execution lifecycle end to end: request -> scheduler -> dispatcher -> runner -> recorded end.

Runs on both buses (the embedded filesystem bus, then RabbitMQ) and the
embedded database, with the action runner's scheduler and dispatcher consuming
in this process (green threads), exactly as st2actionrunner wires them.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from pathlib import Path

import eventlet
import pytest

from st2actionrunner.cmd import ActionRunnerService
from st2common import statuses
from st2common.content import bootstrap
from st2common.exceptions import NotFoundError, ParameterError, TransitionError
from st2common.models.db.action import ActionDB
from st2common.models.db.execution import ExecutionDB, ExecutionOutputDB
from st2common.models.db.runner import RunnerTypeDB
from st2common.persistence import db as database
from st2common.persistence.access import Access
from st2common.runners import registry
from st2common.runners.base import ActionRunner, RunResult
from st2common.services import executions
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from tests.conftest import make_settings

REPO = Path(__file__).resolve().parents[2]
MAX_RESULT_SIZE = 4000


class CrashingRunner(ActionRunner):
    """A runner with a bug: run() raises."""

    name = "crash-test"

    def run(self):
        raise RuntimeError("the runner blew up")


class SleepyRunner(ActionRunner):
    """A runner that waits a long time and has no cancel() of its own."""

    name = "sleepy-test"

    def run(self):
        eventlet.sleep(30)
        return RunResult(statuses.SUCCEEDED, {"slept": True})


def register_test_runner(monkeypatch, name: str, cls: type, action_name: str) -> str:
    """Plug a runner class into the registry and store a runner type and an action using it."""
    monkeypatch.setitem(registry.RUNNERS, name, f"{__name__}:{cls.__name__}")
    runner = RunnerTypeDB(name=name, runner_parameters={})
    runner.set_identity()
    Access(RunnerTypeDB).add_or_update(runner)
    action = ActionDB(name=action_name, pack="tests", runner_type={"name": name}, parameters={})
    action.set_identity()
    Access(ActionDB).add_or_update(action)
    return action.ref


class Platform:
    """The action runner of this test, and what a caller of the use-cases needs."""

    def __init__(self, settings, publisher: Publisher, service: ActionRunnerService) -> None:
        self.settings = settings
        self.publisher = publisher
        self.service = service
        self.executions = Access(ExecutionDB)

    def request(self, ref: str, parameters: dict | None = None, **kwargs) -> ExecutionDB:
        return executions.request(self.publisher, ref, parameters or {}, **kwargs)

    def wait_for(self, execution_id, wanted, timeout: float = 10.0) -> ExecutionDB:
        """Poll the record until its status is one of wanted (a deadline, not a sleep)."""
        wanted = {wanted} if isinstance(wanted, str) else set(wanted)
        deadline = time.monotonic() + timeout
        while True:
            execution = self.executions.get_by_id(execution_id)
            if execution.status in wanted:
                return execution
            if time.monotonic() > deadline:
                raise AssertionError(f"execution {execution_id} is {execution.status}, not {sorted(wanted)}")
            time.sleep(0.01)

    def run(self, ref: str, parameters: dict | None = None, timeout: float = 10.0, **kwargs) -> ExecutionDB:
        execution = self.request(ref, parameters, **kwargs)
        return self.wait_for(execution.pk, statuses.COMPLETED, timeout)


@pytest.fixture
def start_platform(bus_settings, tmp_path, embedded_mongo):
    """start_platform(**options) -> Platform: the core pack registered, an action runner consuming here."""
    started: list[tuple[Platform, object]] = []

    def start(extra: dict[str, str] | None = None, copies: int = 1) -> Platform:
        settings = make_settings(tmp_path, embedded_mongo, bus_settings.messaging.url, {
            "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(REPO / "contrib" / "packs"),
            "ST2_CONTENT__PACKS_BASE_PATHS": str(tmp_path / "packs"),
            "ST2_ACTIONRUNNER__MAX_RESULT_SIZE": str(MAX_RESULT_SIZE),
            **(extra or {}),
        })
        client = database.connect(settings)
        publisher = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
        publisher.declare_work_queues()
        report = bootstrap.register(settings, kinds=["runners", "actions"])
        assert Access(ActionDB).get(ref="core.local") is not None, report.errors
        services = [ActionRunnerService(settings, publisher) for _ in range(copies)]
        for service in services:
            service.start()
        platform = Platform(settings, publisher, services[0])
        platform.copies = services
        started.append((platform, client))
        return platform

    yield start
    for platform, client in started:
        for service in platform.copies:
            service.stop()
        platform.publisher.close()
        client.drop_database(platform.settings.database.db_name)
        database.disconnect()


@pytest.fixture
def platform(start_platform):
    # Given the core pack registered and an action runner consuming in this process
    return start_platform()


def log_statuses(execution: ExecutionDB) -> list[str]:
    return [entry["status"] for entry in execution.log]


def assert_timestamps_in_order(execution: ExecutionDB) -> None:
    stamps = [entry["timestamp"] for entry in execution.log]
    assert stamps == sorted(stamps)
    assert execution.start_timestamp <= stamps[0]
    assert execution.end_timestamp == stamps[-1]


def processes_with(marker: str) -> list[int]:
    """Pids whose command line contains marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return [pid for pid in found if pid != os.getpid()]


def test_noop_goes_through_every_status(platform):
    # When core.noop is requested
    execution = platform.run("core.noop")
    # Then it succeeded with the noop result, having passed requested, scheduled, running
    assert execution.status == statuses.SUCCEEDED
    assert execution.result == {"failed": False, "succeeded": True, "return_code": 0}
    assert log_statuses(execution) == ["requested", "scheduled", "running", "succeeded"]
    assert_timestamps_in_order(execution)
    assert execution.runner_info["worker_id"] == platform.service.worker_id
    assert execution.runner_info["pid"] == os.getpid()
    assert execution.action["runner_type"] == "noop"
    assert execution.runner["name"] == "noop"
    assert execution.context["user"] == executions.SYSTEM_USER


def test_local_command_result_and_output_in_order(platform):
    # When a command that prints several lines runs
    execution = platform.run("core.local", {"cmd": "for i in 1 2 3 4 5; do echo line$i; done; echo err >&2"},
                             user="alice")
    # Then it succeeded, the result holds its output, and each line was stored as it came, in order
    assert execution.status == statuses.SUCCEEDED
    assert execution.result["stdout"] == "line1\nline2\nline3\nline4\nline5"
    assert execution.result["return_code"] == 0
    assert execution.context["user"] == "alice"
    assert execution.parameters == {"cmd": "for i in 1 2 3 4 5; do echo line$i; done; echo err >&2"}
    chunks = Access(ExecutionOutputDB).query({"execution_id": str(execution.pk)}, order_by=["id"])
    stdout = [c.data for c in chunks if c.output_type == "stdout"]
    assert stdout == [f"line{i}\n" for i in range(1, 6)]
    assert [c.data for c in chunks if c.output_type == "stderr"] == ["err\n"]
    assert all(c.action_ref == "core.local" and c.runner_ref == "local-shell-cmd" for c in chunks)


def test_echo_renders_its_immutable_command_from_the_message(platform):
    execution = platform.run("core.echo", {"message": "hello there"})
    assert execution.status == statuses.SUCCEEDED
    assert execution.result["stdout"] == "hello there"
    assert execution.parameters == {"message": "hello there"}


def test_failing_command_fails_with_its_exit_code(platform):
    execution = platform.run("core.local", {"cmd": "echo oops >&2; exit 3"})
    assert execution.status == statuses.FAILED
    assert execution.result["return_code"] == 3
    assert execution.result["stderr"] == "oops"
    assert log_statuses(execution)[-1] == "failed"


def test_timeout_kills_the_command(platform):
    marker = f"{random.randint(10, 99)}.{random.randint(100000, 999999)}"
    execution = platform.run("core.local", {"cmd": f"sleep {marker}", "timeout": "1"})
    assert execution.status == statuses.TIMED_OUT
    assert "1 seconds" in execution.result["error"]
    assert processes_with(f"sleep {marker}") == []


def test_cancel_of_a_running_command_kills_it_within_two_seconds(platform):
    # Given a sleep 30 running
    marker = f"30.{random.randint(100000, 999999)}"
    execution = platform.request("core.local", {"cmd": f"sleep {marker}"})
    platform.wait_for(execution.pk, statuses.RUNNING)
    deadline = time.monotonic() + 5
    while not processes_with(f"sleep {marker}") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert processes_with(f"sleep {marker}")
    # When it is canceled
    started = time.monotonic()
    assert executions.cancel(platform.publisher, str(execution.pk), user="bob").status == statuses.CANCELING
    # Then it is canceled within 2 s and no process is left
    canceled = platform.wait_for(execution.pk, statuses.CANCELED, timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert log_statuses(canceled) == ["requested", "scheduled", "running", "canceling", "canceled"]
    assert processes_with(f"sleep {marker}") == []
    # And canceling again changes nothing; a finished execution cannot be canceled
    assert executions.cancel(platform.publisher, str(execution.pk)).status == statuses.CANCELED
    done = platform.run("core.noop")
    with pytest.raises(TransitionError):
        executions.cancel(platform.publisher, str(done.pk))


def test_delayed_execution_waits_then_runs(platform):
    # When core.noop is requested with a delay of 400 ms
    execution = platform.request("core.noop", delay=400)
    # Then it is delayed first, and runs once the delay is over
    platform.wait_for(execution.pk, statuses.DELAYED, timeout=2.0)
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED
    assert log_statuses(done) == ["requested", "delayed", "scheduled", "running", "succeeded"]
    scheduled_at = done.log[2]["timestamp"]
    assert (scheduled_at - done.start_timestamp).total_seconds() >= 0.39


def test_a_delayed_execution_survives_a_restart_of_the_action_runner(start_platform):
    # Given an execution delayed by a runner that then stops (its timer is lost)
    platform = start_platform()
    execution = platform.request("core.noop", delay=700)
    platform.wait_for(execution.pk, statuses.DELAYED, timeout=2.0)
    platform.service.stop()
    # When another action runner starts
    again = ActionRunnerService(platform.settings, platform.publisher)
    platform.copies.append(again)
    again.start()
    # Then it runs the execution once it is due, not later
    done = platform.wait_for(execution.pk, statuses.COMPLETED, timeout=3.0)
    assert done.status == statuses.SUCCEEDED
    assert done.runner_info["worker_id"] == again.worker_id
    assert (done.log[2]["timestamp"] - done.start_timestamp).total_seconds() >= 0.69


def test_cancel_of_a_delayed_execution_stops_it_before_it_runs(platform):
    execution = platform.request("core.noop", delay=60000)
    platform.wait_for(execution.pk, statuses.DELAYED, timeout=2.0)
    canceled = executions.cancel(platform.publisher, str(execution.pk), user="bob")
    assert canceled.status == statuses.CANCELED
    assert canceled.result == {"message": "Action canceled by user.", "user": "bob"}
    assert "running" not in log_statuses(canceled)


def test_re_run_with_overrides(platform):
    # Given a finished execution
    first = platform.run("core.local", {"cmd": "echo one", "timeout": 30})
    # When it is re-run with another command
    again = executions.re_run(platform.publisher, str(first.pk), {"cmd": "echo two"})
    done = platform.wait_for(again.pk, statuses.COMPLETED)
    # Then a new execution ran the merged parameters and points back at the first
    assert done.pk != first.pk
    assert done.result["stdout"] == "two"
    assert done.parameters == {"cmd": "echo two", "timeout": 30}
    assert done.context["re-run"] == {"ref": str(first.pk)}
    # And no_merge drops the old parameters
    bare = executions.re_run(platform.publisher, str(first.pk), {"cmd": "echo three"}, no_merge=True)
    assert bare.parameters == {"cmd": "echo three"}


def test_a_big_result_is_truncated_with_a_marker(platform):
    execution = platform.run("core.local", {"cmd": f"head -c {MAX_RESULT_SIZE * 3} /dev/zero | tr '\\0' a"})
    assert execution.status == statuses.SUCCEEDED
    result = execution.result
    assert result["result_truncated"] is True
    assert result["original_size"] > MAX_RESULT_SIZE * 3
    assert result["return_code"] == 0 and result["succeeded"] is True
    assert result["preview"].startswith('{"failed":false')
    assert len(json.dumps(result)) <= MAX_RESULT_SIZE
    assert execution.result_size == len(json.dumps(result, separators=(",", ":")))


def test_a_crashing_runner_fails_the_execution(platform, monkeypatch):
    # Given an action whose runner raises
    ref = register_test_runner(monkeypatch, "crash-test", CrashingRunner, "crash")
    # When it runs, then it failed with the error and the traceback, and is not stuck running
    execution = platform.run(ref)
    assert execution.status == statuses.FAILED
    assert execution.result["error"] == "the runner blew up"
    assert "RuntimeError" in execution.result["traceback"]
    assert log_statuses(execution) == ["requested", "scheduled", "running", "failed"]


def test_cancel_stops_a_runner_without_a_cancel_of_its_own(platform, monkeypatch):
    ref = register_test_runner(monkeypatch, "sleepy-test", SleepyRunner, "sleepy")
    execution = platform.request(ref)
    platform.wait_for(execution.pk, statuses.RUNNING)
    executions.cancel(platform.publisher, str(execution.pk))
    assert platform.wait_for(execution.pk, statuses.CANCELED, timeout=2.0).result is None


def test_a_missing_entry_point_fails_naming_the_path(platform):
    action = ActionDB(name="gone", pack="core", runner_type={"name": "local-shell-script"},
                      entry_point="no_such_script.sh", parameters={})
    action.set_identity()
    Access(ActionDB).add_or_update(action)
    execution = platform.run("core.gone")
    assert execution.status == statuses.FAILED
    assert "no_such_script.sh" in execution.result["error"]


def test_children_are_linked_to_their_parent(platform):
    parent = platform.request("core.noop", user="carol")
    child = platform.request("core.noop", parent=str(parent.pk), user="someone-else")
    assert child.parent == str(parent.pk)
    assert child.context["parent"] == {"execution_id": str(parent.pk)}
    assert child.context["user"] == "carol"
    assert platform.executions.get_by_id(parent.pk).children == [str(child.pk)]
    platform.wait_for(child.pk, statuses.COMPLETED)
    # A waiting child is canceled through canceling, finished by whichever runner gets the message
    waiting = platform.request("core.noop", parent=str(parent.pk), delay=60000)
    platform.wait_for(waiting.pk, statuses.DELAYED, timeout=2.0)
    assert executions.cancel(platform.publisher, str(waiting.pk)).status == statuses.CANCELING
    canceled = platform.wait_for(waiting.pk, statuses.CANCELED, timeout=2.0)
    assert log_statuses(canceled) == ["requested", "delayed", "canceling", "canceled"]
    assert platform.executions.get_by_id(parent.pk).children == [str(child.pk), str(waiting.pk)]


def test_bad_requests_store_nothing(platform):
    with pytest.raises(NotFoundError) as missing:
        platform.request("core.nope")
    assert "core.nope" in str(missing.value)
    with pytest.raises(ParameterError) as unknown:
        platform.request("core.local", {"cmd": "true", "colour": "red"})
    assert unknown.value.field == "colour"
    with pytest.raises(ParameterError) as typed:
        platform.request("core.local", {"cmd": "true", "timeout": "soon"})
    assert typed.value.field == "timeout"
    with pytest.raises(ParameterError) as required:
        platform.request("core.local", {})
    assert required.value.field == "cmd"
    assert platform.executions.count() == 0


def test_stop_abandons_what_still_runs(platform):
    marker = f"31.{uuid.uuid4().int % 1000000}"
    execution = platform.request("core.local", {"cmd": f"sleep {marker}"})
    platform.wait_for(execution.pk, statuses.RUNNING)
    abandoned = platform.service.dispatcher.shutdown(others_alive=lambda: False)
    assert abandoned == [str(execution.pk)]
    assert platform.executions.get_by_id(execution.pk).status == statuses.ABANDONED
    assert processes_with(f"sleep {marker}") == []


def test_a_full_pool_hands_work_over_the_bus(start_platform):
    # Given an action runner that runs one action at a time, busy with one
    platform = start_platform({"ST2_ACTIONRUNNER__ACTIONS_POOL_SIZE": "1"})
    busy = platform.request("core.local", {"cmd": "sleep 0.3"})
    platform.wait_for(busy.pk, statuses.RUNNING)
    # When another execution is requested
    queued = platform.request("core.noop")
    # Then it waits scheduled on the bus, and runs once the first is done
    platform.wait_for(queued.pk, statuses.SCHEDULED, timeout=2.0)
    done = platform.wait_for(queued.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED
    assert log_statuses(done) == ["requested", "scheduled", "running", "succeeded"]
    assert platform.wait_for(busy.pk, statuses.COMPLETED).end_timestamp <= done.log[2]["timestamp"]


def test_several_copies_run_each_execution_once(start_platform):
    # Given two action runners on the same bus and database
    platform = start_platform(copies=2)
    # When many executions are requested at once
    requested = [platform.request("core.local", {"cmd": "echo $ST2_ACTION_EXECUTION_ID"}) for _ in range(12)]
    done = [platform.wait_for(e.pk, statuses.COMPLETED) for e in requested]
    # Then each ran once, by one of them, and printed its own id
    assert all(e.status == statuses.SUCCEEDED for e in done)
    assert all(e.result["stdout"] == str(e.pk) for e in done)
    assert all(log_statuses(e).count("running") == 1 for e in done)
    workers = {e.runner_info["worker_id"] for e in done}
    assert workers <= {copy.worker_id for copy in platform.copies}
    outputs = Access(ExecutionOutputDB).query({"output_type": "stdout"})
    assert sorted(o.execution_id for o in outputs) == sorted(str(e.pk) for e in done)
