"""The event side on a running platform: webhooks, timers, a pack sensor and action triggers make rules run.

The platform is the module's own (tests/e2e/conftest.py ``events_platform``:
st2ctl start in a temporary folder with sensor_pack and e2e_events
registered), so its TickerSensor and its every-second timer run only while
this module does. The rules under test are e2e_events' (tests/fixtures/packs/
e2e_events/rules); everything is observed through the REST API and the two
CLIs (the project's `st2` and the official st2client 3.9.0).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from functools import partial

import pytest
import requests
import yaml

from e2e.conftest import TEST_PACKS, wait_for
from e2e.st2client_compat import (official_st2, run_official, run_project,  # noqa: F401 (session fixture)
                                  side_by_side)
from st2common.util.process import pid_alive

pytestmark = pytest.mark.e2e

TERMINAL = ("succeeded", "failed", "timeout", "canceled", "abandoned")
DONE = ("processed", "processing_failed")
CLI_TIMEOUT = 60
PACK = "e2e_events"

# The platform admin's credentials, for the requests and CLI runs of this module.
HTTP = requests.Session()
CREDENTIALS: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _credentials(events_platform):
    HTTP.headers.update(events_platform.auth_headers())
    CREDENTIALS.update(events_platform.auth_env())
    yield
    HTTP.headers.pop("X-Auth-Token", None)
    CREDENTIALS.clear()


@pytest.fixture(scope="module")
def api(events_platform) -> str:
    """The REST API of the module's platform, with its version prefix."""
    return f"{events_platform.api_url}/v1"


def get(url: str, **params):
    response = HTTP.get(url, params=params, timeout=10)
    assert response.status_code == 200, f"GET {url} {params}: {response.status_code} {response.text}"
    return response.json()


def wait_until(check, what: str, timeout: float):
    """Poll check until it returns something truthy; that value (AssertionError at the deadline)."""
    found = wait_for(check, timeout, interval=0.05)
    assert found, f"timed out after {timeout} s waiting for {what}"
    return found


def execution_done(api: str, ident: str, timeout: float = 10.0) -> dict:
    """The execution once terminal."""
    return wait_until(lambda: (record := get(f"{api}/executions/{ident}"))["status"] in TERMINAL and record,
                      f"execution {ident} terminal", timeout)


def enforcements(api: str, rule: str, **filters) -> list[dict]:
    return get(f"{api}/ruleenforcements", rule_ref=rule, limit=100, **filters)


def trace_tagged(api: str, tag: str, has: str = "trigger_instances", timeout: float = 10.0) -> dict:
    """The one trace with this tag, once its `has` list is not empty."""
    return wait_until(lambda: [t for t in get(f"{api}/traces", trace_tag=tag) if t[has]], f"trace {tag}",
                      timeout)[0]


def post_hook(api: str, body: dict, tag: str) -> None:
    response = HTTP.post(f"{api}/webhooks/e2e_deploy", json=body, headers={"St2-Trace-Tag": tag}, timeout=10)
    assert response.status_code == 202, response.text


@pytest.fixture(scope="module")
def deploy(api) -> dict:
    """A production deploy posted to the e2e_deploy hook and followed to its finished execution: the ids."""
    service, tag = f"billing-{uuid.uuid4().hex[:6]}", f"e2e-deploy-{uuid.uuid4().hex}"
    post_hook(api, {"env": "prod", "service": service}, tag)
    trace = trace_tagged(api, tag, has="action_executions")
    # The trace also gains the action trigger of the execution once that finishes.
    [instance] = [i for i in trace["trigger_instances"] if not i.get("caused_by")]
    [execution] = trace["action_executions"]
    [enforcement] = enforcements(api, f"{PACK}.webhook_deploy", trigger_instance=instance["object_id"])
    return {"service": service, "tag": tag, "trace": trace, "instance": instance["object_id"],
            "execution": execution["object_id"], "enforcement": enforcement["id"]}


def test_a_webhook_matching_the_rule_criteria_runs_core_local_with_the_payload_value(api, deploy):
    # Given the rule webhook_deploy (env equals prod) on the e2e_deploy hook
    # When a production deploy was posted with a St2-Trace-Tag (fixture `deploy`)
    # Then core.local ran the command rendered from the payload, and succeeded
    execution = execution_done(api, deploy["execution"])
    assert execution["action"]["ref"] == "core.local"
    assert execution["parameters"] == {"cmd": f"echo deploying {deploy['service']}"}
    assert execution["status"] == "succeeded"
    assert execution["result"]["stdout"] == f"deploying {deploy['service']}"
    # And the enforcement records the rule, the instance and the execution
    enforcement = get(f"{api}/ruleenforcements/{deploy['enforcement']}")
    assert enforcement["rule"]["ref"] == f"{PACK}.webhook_deploy"
    assert (enforcement["trigger_instance_id"], enforcement["execution_id"]) == (deploy["instance"],
                                                                                 deploy["execution"])
    # And the instance holds the posted body and is processed
    instance = wait_until(lambda: (i := get(f"{api}/triggerinstances/{deploy['instance']}"))["status"] in DONE
                          and i, "instance processed", 10)
    assert instance["status"] == "processed"
    assert instance["payload"]["body"] == {"env": "prod", "service": deploy["service"]}


def test_the_trace_links_instance_enforcement_and_execution(api, deploy):
    # Given the deploy posted under its own trace tag
    # When its trace is read by id, once the execution has finished
    execution_done(api, deploy["execution"])
    trace = wait_until(lambda: len((t := get(f"{api}/traces/{deploy['trace']['id']}"))["trigger_instances"]) == 2
                       and t, "the action trigger in the trace", 10)
    # Then it holds the instance, the rule (caused by the instance), the execution (caused by the rule) and the
    # action trigger the execution dispatched when it finished (caused by the execution)
    assert trace["trace_tag"] == deploy["tag"]
    webhook, action_trigger = trace["trigger_instances"]
    assert (webhook["object_id"], webhook["caused_by"]) == (deploy["instance"], {})
    assert action_trigger["ref"] == "core.st2.generic.actiontrigger"
    assert action_trigger["caused_by"] == {"type": "action_execution", "id": deploy["execution"]}
    [rule] = trace["rules"]
    assert rule["ref"] == f"{PACK}.webhook_deploy"
    assert rule["caused_by"] == {"type": "trigger_instance", "id": deploy["instance"]}
    [execution] = trace["action_executions"]
    assert execution["object_id"] == deploy["execution"]
    assert execution["caused_by"] == {"type": "rule", "id": f"{rule['object_id']}:{deploy['instance']}"}
    # And the component filters find the same trace
    for name, value in {"execution": deploy["execution"], "trigger_instance": deploy["instance"]}.items():
        assert [t["id"] for t in get(f"{api}/traces", **{name: value})] == [trace["id"]]


def test_a_webhook_not_matching_the_criteria_runs_nothing(api):
    # Given the rule webhook_deploy, which wants env prod
    tag = f"e2e-staging-{uuid.uuid4().hex}"
    # When a staging deploy is posted
    post_hook(api, {"env": "staging", "service": "billing"}, tag)
    # Then its instance is processed without any enforcement or execution
    [instance] = trace_tagged(api, tag)["trigger_instances"]
    processed = wait_until(lambda: (i := get(f"{api}/triggerinstances/{instance['object_id']}"))["status"] in DONE
                           and i, "instance processed", 10)
    assert processed["status"] == "processed"
    assert enforcements(api, f"{PACK}.webhook_deploy", trigger_instance=instance["object_id"]) == []
    trace = get(f"{api}/traces", trace_tag=tag)[0]
    assert trace["rules"] == [] and trace["action_executions"] == []


def test_an_interval_timer_rule_fires_at_least_twice_in_5_seconds(api):
    # Given the rule every_second on core.st2.IntervalTimer {unit: seconds, delta: 1}, and what it did so far
    seen = {e["id"] for e in enforcements(api, f"{PACK}.every_second")}
    started = time.monotonic()
    # When at most 5 seconds pass
    # Then it is enforced at least twice more, each time running core.noop to success
    new = wait_until(lambda: len(fresh := [e for e in enforcements(api, f"{PACK}.every_second")
                                           if e["id"] not in seen]) >= 2 and fresh, "two more enforcements", 5)
    assert time.monotonic() - started <= 5.5
    for enforcement in new[:2]:
        execution = execution_done(api, enforcement["execution_id"])
        assert (execution["action"]["ref"], execution["status"]) == ("core.noop", "succeeded")
    # And GET /timers lists the timer with its parameters
    timers = get(f"{api}/timers", timer_type="core.st2.IntervalTimer")
    assert {"unit": "seconds", "delta": 1} in [t["parameters"] for t in timers]


def test_a_timer_created_through_a_rule_fires_and_stops_once_the_rule_is_deleted(api):
    # Given a rule on a new every-second timer, created through the API while the platform runs
    body = yaml.safe_load((TEST_PACKS / PACK / "live_rules" / "every_second_utc.yaml").read_text())
    response = HTTP.post(f"{api}/rules", json=body, timeout=10)
    assert response.status_code == 201, response.text
    rule = response.json()
    trigger_ref = rule["trigger"]["ref"]
    try:
        # When a few seconds pass
        # Then its timer fires and the rule runs
        wait_until(lambda: len(enforcements(api, rule["ref"])) >= 2, "two enforcements of the new rule", 5)
        assert trigger_ref in [t["ref"] for t in get(f"{api}/timers")]
    finally:
        # When the rule is deleted
        assert HTTP.delete(f"{api}/rules/{rule['ref']}", timeout=10).status_code == 204
    # Then its timer is gone and, once the engine has heard of it, fires no more
    assert trigger_ref not in [t["ref"] for t in get(f"{api}/timers")]
    time.sleep(1.0)
    count = len(get(f"{api}/triggerinstances", trigger=trigger_ref, limit=100))
    time.sleep(2.2)
    assert len(get(f"{api}/triggerinstances", trigger=trigger_ref, limit=100)) == count


def tick_runs(api: str) -> dict[int, dict]:
    """{TickerSensor pid: succeeded execution} of the rule on_tick."""
    runs = {}
    for enforcement in enforcements(api, f"{PACK}.on_tick"):
        execution = get(f"{api}/executions/{enforcement['execution_id']}")
        if execution["status"] == "succeeded":
            runs[int(execution["result"]["stdout"].rpartition(" ")[2])] = execution
    return runs


def test_a_pack_sensor_makes_its_rule_run_and_is_respawned_after_a_kill(api):
    # Given TickerSensor (sensor_pack), dispatching sensor_pack.tick every 0.2 s, and the rule on_tick on its
    # third tick
    # When the container has started it
    # Then the rule ran a command naming the sensor's process
    runs = wait_until(lambda: tick_runs(api), "on_tick to run", 20)
    [pid] = runs
    assert runs[pid]["parameters"] == {"cmd": f"echo tick from {pid}"}
    assert pid_alive(pid)
    # When the sensor process is killed
    os.kill(pid, signal.SIGKILL)
    # Then the container respawns it and the new process makes the rule run again
    respawned = wait_until(lambda: [p for p in tick_runs(api) if p != pid], "on_tick from a respawned sensor", 20)
    assert pid_alive(respawned[0])
    # And the container told about the exit and the new process with its triggers
    exits = get(f"{api}/triggerinstances", trigger="core.st2.sensor.process_exit", limit=100)
    assert any(i["payload"]["id"] == "sensor_pack.TickerSensor" and i["payload"]["exit_code"] != 0 for i in exits)
    spawns = get(f"{api}/triggerinstances", trigger="core.st2.sensor.process_spawn", limit=100)
    assert respawned[0] in [i["payload"].get("pid") for i in spawns if i["payload"]["id"] == "sensor_pack.TickerSensor"]


def test_an_action_trigger_rule_runs_when_another_execution_fails(api):
    # Given the rule on_failure on core.st2.generic.actiontrigger (status failed, command marked e2e-must-fail)
    # When a marked core.local run fails
    response = HTTP.post(f"{api}/executions", timeout=10, json={
        "action": "core.local", "parameters": {"cmd": "echo e2e-must-fail; exit 3"}})
    assert response.status_code == 201, response.text
    failed = execution_done(api, response.json()["id"])
    assert failed["status"] == "failed"
    # Then the rule runs the recovery command naming the failed execution
    [enforcement] = wait_until(lambda: [e for e in enforcements(api, f"{PACK}.on_failure") if e.get("execution_id")
                                        and get(f"{api}/triggerinstances/{e['trigger_instance_id']}")["payload"]
                                        ["execution_id"] == failed["id"]], "on_failure enforced", 10)
    recovery = execution_done(api, enforcement["execution_id"])
    assert (recovery["status"], recovery["result"]["stdout"]) == ("succeeded", f"recovering {failed['id']}")
    # And one trace holds it all: the failed run, the action trigger it caused, the rule, the recovery
    [trace] = get(f"{api}/traces", execution=failed["id"])
    assert {e["object_id"] for e in trace["action_executions"]} == {failed["id"], recovery["id"]}
    assert enforcement["trigger_instance_id"] in [i["object_id"] for i in trace["trigger_instances"]]
    assert f"{PACK}.on_failure" in [r["ref"] for r in trace["rules"]]


@pytest.fixture(params=["project", "official"])
def st2(request, events_platform):
    """`st2 <args> -j` with each CLI in turn (the project's, then the official st2client 3.9.0): the JSON shown."""
    if request.param == "official":
        request.getfixturevalue("official_st2")

    def run(*args: str):
        if request.param == "official":
            result = run_official([*args, "-j"], events_platform.api_url, env=CREDENTIALS, timeout=CLI_TIMEOUT)
        else:
            result = run_project([*args, "-j"], events_platform.api_url, env=CREDENTIALS)
        assert result.returncode == 0, f"st2 {' '.join(args)}: {result.stdout}{result.stderr}"
        return json.loads(result.stdout)
    return run


def rows(shown) -> list[dict]:
    """A list command's rows (a single row may be shown as the object itself)."""
    return shown if isinstance(shown, list) else [shown]


def test_both_clis_list_and_show_rules_enforcements_triggers_instances_and_traces(st2, deploy):
    # Given the deploy run through the rule webhook_deploy (fixture `deploy`)
    rule = f"{PACK}.webhook_deploy"
    # When the CLI lists and shows each kind of event record (side by side: they only read, and each
    # is a ~1 s process)
    (rules, shown_rule, rule_enforcements, enforcement, trigger_types, tick_type, instance, traces, trace,
     timers) = side_by_side([
        partial(st2, "rule", "list", "-p", PACK), partial(st2, "rule", "get", rule),
        partial(st2, "rule-enforcement", "list", "--rule", rule),
        partial(st2, "rule-enforcement", "get", deploy["enforcement"]),
        partial(st2, "trigger", "list"), partial(st2, "trigger", "get", "sensor_pack.tick"),
        partial(st2, "trigger-instance", "get", deploy["instance"]),
        partial(st2, "trace", "list", "-c", deploy["tag"]), partial(st2, "trace", "get", deploy["trace"]["id"]),
        partial(st2, "timer", "list")])
    webhook_trigger = shown_rule["trigger"]["ref"]
    instances = st2("trigger-instance", "list", "--trigger", webhook_trigger)
    # Then each shows the records of that run
    assert {f"{PACK}.{name}" for name in ("webhook_deploy", "every_second", "on_tick", "on_failure")} <= {
        r["ref"] for r in rows(rules)}
    assert (shown_rule["ref"], shown_rule["trigger"]["type"], shown_rule["enabled"]) == (rule, "core.st2.webhook",
                                                                                        True)

    assert deploy["enforcement"] in [e["id"] for e in rows(rule_enforcements)]
    assert (enforcement["execution_id"], enforcement["trigger_instance_id"]) == (deploy["execution"],
                                                                                 deploy["instance"])

    assert {"core.st2.webhook", "core.st2.IntervalTimer", "sensor_pack.tick"} <= {t["ref"] for t in rows(trigger_types)}
    assert tick_type["payload_schema"]["required"] == ["count", "pid", "watched"]

    assert deploy["instance"] in [i["id"] for i in rows(instances)]
    assert instance["payload"]["body"]["service"] == deploy["service"]

    assert [t["id"] for t in rows(traces)] == [deploy["trace"]["id"]]
    assert [e["object_id"] for e in trace["action_executions"]] == [deploy["execution"]]

    assert "core.st2.IntervalTimer" in {t["type"] for t in rows(timers)}
