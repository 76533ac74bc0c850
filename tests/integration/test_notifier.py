"""The notifier end to end: a finished execution dispatches core.st2.generic.actiontrigger (once) and its
notify triggers, and a rule on the action trigger runs an action when another execution fails.

Runs on both buses and the embedded database, with the action runner (scheduler, dispatcher and
notifier) and the rules engine consuming in this process, as their console scripts wire them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import eventlet
import pytest
from eventlet import wsgi

from st2actionrunner.cmd import ActionRunnerService
from testsupport import api_app
from st2common import statuses
from st2common.content import bootstrap
from st2common.models.db.enforcement import RuleEnforcementDB
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.rule import RuleDB
from st2common.models.db.trace import TraceDB
from st2common.models.db.trigger import TriggerInstanceDB, TriggerTypeDB
from st2common.persistence import db as database
from st2common.persistence.access import Access
from st2common.services import executions, triggers, triggertypes
from st2common.services import trace as trace_service
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from st2rulesengine.cmd import RulesEngineService
from tests.conftest import free_port, make_settings

REPO = Path(__file__).resolve().parents[2]


class Platform:
    """An action runner and a rules engine of this test."""

    def __init__(self, settings, publisher: Publisher, runner: ActionRunnerService,
                 engine: RulesEngineService) -> None:
        self.settings = settings
        self.publisher = publisher
        self.runner = runner
        self.engine = engine

    def run(self, ref: str, parameters: dict | None = None, **kwargs) -> ExecutionDB:
        execution = executions.request(self.publisher, ref, parameters or {}, **kwargs)
        return wait_for(lambda: self.finished(execution.pk), f"execution {execution.pk} finished")

    @staticmethod
    def finished(execution_id) -> ExecutionDB | None:
        execution = Access(ExecutionDB).get_by_id(execution_id)
        return execution if execution.status in statuses.COMPLETED else None

    def add_rule(self, name: str, trigger_type: str, criteria: dict, action: str, parameters: dict) -> RuleDB:
        trigger, _ = triggers.get_or_create_trigger(triggertypes.get_trigger_type(trigger_type), {}, self.publisher)
        rule = RuleDB(name=name, pack="tests", enabled=True, criteria=criteria,
                      trigger={"type": trigger_type, "parameters": {}, "ref": trigger.ref},
                      action={"ref": action, "parameters": parameters})
        rule.set_identity()
        Access(RuleDB, self.publisher).add_or_update(rule)
        wait_for(lambda: str(rule.pk) in self.engine.engine.rules, f"rule {name} in the index")
        return rule


def wait_for(check, what: str, timeout: float = 10.0):
    """Poll check() until it returns something truthy (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def instances_of(trigger_ref: str) -> list[TriggerInstanceDB]:
    return Access(TriggerInstanceDB).query({"trigger": trigger_ref}, order_by=["occurrence_time", "id"])


def action_triggers_for(execution: ExecutionDB) -> list[TriggerInstanceDB]:
    return [i for i in instances_of(triggertypes.ACTION_TRIGGER_REF) if i.payload["execution_id"] == str(execution.pk)]


@pytest.fixture
def start_platform(bus_settings, tmp_path, embedded_mongo):
    """start_platform(extra env) -> Platform: the core pack registered, runner and rules engine consuming."""
    started: list[tuple[Platform, object]] = []

    def start(extra: dict[str, str] | None = None) -> Platform:
        settings = make_settings(tmp_path, embedded_mongo, bus_settings.messaging.url, {
            "ST2_API__PORT": str(free_port()),
            "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(REPO / "contrib" / "packs"),
            "ST2_CONTENT__PACKS_BASE_PATHS": str(tmp_path / "packs"),
            **(extra or {}),
        })
        client = database.connect(settings)
        publisher = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
        publisher.declare_work_queues()
        bootstrap.register(settings, kinds=["runners", "actions"])
        runner = ActionRunnerService(settings, publisher)
        runner.start()
        engine = RulesEngineService(settings, publisher)
        engine.start()
        platform = Platform(settings, publisher, runner, engine)
        started.append((platform, client))
        return platform

    yield start
    for platform, client in started:
        platform.engine.stop()
        platform.runner.stop()
        platform.publisher.close()
        client.drop_database(platform.settings.database.db_name)
        database.disconnect()


@pytest.fixture
def platform(start_platform) -> Platform:
    return start_platform()


def test_a_failing_execution_dispatches_the_action_trigger_once(platform):
    # When a command fails
    failed = platform.run("core.local", {"cmd": "echo broken >&2; exit 2", "timeout": 30})
    assert failed.status == statuses.FAILED
    # Then one action trigger carries StackStorm's fields for it
    [instance] = wait_for(lambda: action_triggers_for(failed), "the action trigger")
    assert set(instance.payload) == {"execution_id", "status", "start_timestamp", "action_name", "action_ref",
                                     "runner_ref", "parameters", "result"}
    assert instance.payload["status"] == "failed"
    assert instance.payload["action_ref"] == instance.payload["action_name"] == "core.local"
    assert instance.payload["runner_ref"] == "local-shell-cmd"
    assert instance.payload["parameters"] == {"cmd": "echo broken >&2; exit 2", "timeout": 30}
    assert instance.payload["result"]["return_code"] == 2 and instance.payload["result"]["stderr"] == "broken"
    assert instance.payload["start_timestamp"].endswith("+00:00")
    # And it is in the execution's trace, caused by the execution
    trace = wait_for(lambda: trace_service.trace_of("trigger_instance", instance.pk), "the trace")
    links = {c.component_type: c for c in trace_service.components(trace)}
    assert trace.trace_tag == f"execution-{failed.pk}"
    assert links["action_execution"].object_id == str(failed.pk)
    assert links["trigger_instance"].caused_by == {"type": "action_execution", "id": str(failed.pk)}
    # When the completing update is delivered again, Then no second action trigger appears
    platform.publisher.publish("execution", "update", {"id": str(failed.pk)})
    done = platform.run("core.noop")
    wait_for(lambda: action_triggers_for(done), "the next execution's action trigger")
    assert len(action_triggers_for(failed)) == 1


def test_a_rule_on_the_action_trigger_runs_when_another_execution_fails(platform):
    # Given a rule that echoes the id of any failed core.local execution
    platform.add_rule("on_failure", triggertypes.ACTION_TRIGGER_REF,
                      {"trigger.status": {"type": "equals", "pattern": "failed"},
                       "trigger.action_ref": {"type": "equals", "pattern": "core.local"}},
                      "core.echo", {"message": "{{ trigger.execution_id }} failed"})
    # When core.local succeeds, then fails
    succeeded = platform.run("core.local", {"cmd": "true"})
    failed = platform.run("core.local", {"cmd": "false"})
    # Then the rule ran core.echo once, for the failure only, with the failed execution's id
    instance = wait_for(lambda: action_triggers_for(failed), "the action trigger")[0]
    enforcement = wait_for(lambda: Access(RuleEnforcementDB).get(trigger_instance_id=str(instance.pk)),
                           "the enforcement")
    echo = wait_for(lambda: platform.finished(enforcement.execution_id), "the echo")
    assert echo.status == statuses.SUCCEEDED
    assert echo.result["stdout"] == f"{failed.pk} failed"
    assert echo.context["rule"]["ref"] == "tests.on_failure"
    ok_instance = wait_for(lambda: action_triggers_for(succeeded), "the success's action trigger")[0]
    wait_for(lambda: Access(TriggerInstanceDB).get_by_id(ok_instance.pk).status == "processed", "processed")
    assert Access(RuleEnforcementDB).count() == 1
    # And one trace holds it all: failed execution -> action trigger -> rule -> echo (-> the echo's own
    # action trigger, which no rule takes)
    trace = trace_service.trace_of("action_execution", failed.pk)
    links = trace_service.components(trace)
    assert [(c.component_type, c.object_id) for c in links][:4] == [
        ("action_execution", str(failed.pk)), ("trigger_instance", str(instance.pk)),
        ("rule", enforcement.rule["id"]), ("action_execution", str(echo.pk))]


def test_notify_routes_dispatch_notify_triggers(platform):
    # When an execution with on-complete and on-failure notifications fails
    notify = {"on-complete": {"routes": ["slack"]},
              "on-failure": {"routes": ["pager", "mail"], "message": "{{ action_parameters.cmd }} broke",
                             "data": {"code": "{{ action_results.return_code }}"}},
              "on-success": {"routes": ["never"]}}
    failed = platform.run("core.local", {"cmd": "exit 4"}, notify=notify)
    # Then one notify trigger per route of the sections that apply
    def by_route():
        found = [i for i in instances_of(triggertypes.NOTIFY_TRIGGER_REF)
                 if i.payload["execution_id"] == str(failed.pk)]
        return {i.payload["route"]: i.payload for i in found} if len(found) == 3 else None
    routes = wait_for(by_route, "three notify triggers")
    assert set(routes) == {"slack", "pager", "mail"}
    assert routes["slack"]["message"] == "Action core.local completed."
    assert routes["pager"]["message"] == "exit 4 broke" and routes["pager"]["channel"] == "pager"
    assert routes["pager"]["data"]["code"] == 4
    assert json.loads(routes["mail"]["data"]["result"])["return_code"] == 4
    assert routes["slack"]["status"] == "failed" and routes["slack"]["runner_ref"] == "local-shell-cmd"
    assert routes["slack"]["end_timestamp"].endswith("Z")


def test_the_action_trigger_can_be_turned_off(start_platform):
    # Given [action_sensor] enable = False
    platform = start_platform({"ST2_ACTION_SENSOR__ENABLE": "false"})
    # When an execution with a notification finishes, Then only the notification is dispatched
    done = platform.run("core.noop", notify={"on-complete": {"routes": ["chat"]}})
    wait_for(lambda: instances_of(triggertypes.NOTIFY_TRIGGER_REF), "the notify trigger")
    assert action_triggers_for(done) == []


def test_core_inject_trigger_dispatches_through_the_api(platform):
    # Given the API serving on its port, a trigger type and a rule on it
    api = platform.settings.api
    sock = eventlet.listen((api.host, api.port))
    server = eventlet.spawn(wsgi.server, sock, api_app(platform.settings, platform.publisher), log_output=False)
    try:
        kind = TriggerTypeDB(name="injected", pack="tests", payload_schema={}, parameters_schema={})
        kind.set_identity()
        Access(TriggerTypeDB).add_or_update(kind)
        platform.add_rule("on_injected", "tests.injected", {"trigger.size": {"type": "gt", "pattern": 2}},
                          "core.echo", {"message": "size {{ trigger.size }}"})
        # When core.inject_trigger runs for it with a payload and a trace tag
        injected = platform.run("core.inject_trigger", {"trigger": "tests.injected", "payload": {"size": 3},
                                                        "trace_tag": "injected-1"})
        # Then it succeeded, the instance was dispatched in that trace, and the rule ran
        assert injected.status == statuses.SUCCEEDED, injected.result
        [instance] = wait_for(lambda: instances_of("tests.injected"), "the injected instance")
        assert instance.payload == {"size": 3}
        assert Access(TraceDB).count({"trace_tag": "injected-1"}) == 1
        enforcement = wait_for(lambda: Access(RuleEnforcementDB).get(trigger_instance_id=str(instance.pk)),
                               "the enforcement")
        echo = wait_for(lambda: platform.finished(enforcement.execution_id), "the echo")
        assert echo.result["stdout"] == "size 3"
        assert echo.context["trace_context"]["trace_tag"] == "injected-1"
    finally:
        server.kill()
        sock.close()
