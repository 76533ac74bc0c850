"""What the execution hot path keeps in memory or writes in batches still behaves as if it read every time.

Actions and runner types (requests), the policy index (scheduler and
notifier) and pack configs (runs) come from in-process caches; the action
triggers of executions that complete together are written in batches. Each
test changes something the way another process would, or completes many
executions at once, and checks what a user sees. Runs on both buses with the
action runner consuming in this process (test_lifecycle's fixture).
"""

from __future__ import annotations

import time

import pytest
from bson import ObjectId
from test_api_support import drain

from st2common import statuses
from st2common.exceptions import ValidationError
from st2common.models.db.action import ActionDB
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.policy import PolicyDB
from st2common.models.db.rule import RuleDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.persistence.access import Access
from st2common.services import trace as trace_service
from st2common.services import triggertypes
from test_lifecycle import start_platform  # noqa: F401 (fixture)


def wait_until(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def action_triggers() -> dict[str, list[TriggerInstanceDB]]:
    """The action trigger instances stored so far, by the execution they are about."""
    found: dict[str, list[TriggerInstanceDB]] = {}
    for instance in Access(TriggerInstanceDB).query({"trigger": triggertypes.ACTION_TRIGGER_REF}):
        found.setdefault(instance.payload["execution_id"], []).append(instance)
    return found


@pytest.fixture
def platform(start_platform):
    platform = start_platform()
    triggertypes.register_system_trigger_types(platform.publisher)
    return platform


def test_executions_completing_together_each_get_one_action_trigger_in_their_own_trace(platform):
    # When twenty executions are requested at once (their completions reach the notifier together)
    ids = [str(platform.request("core.noop").pk) for _ in range(20)]
    done = [platform.wait_for(i, statuses.COMPLETED) for i in ids]
    assert {e.status for e in done} == {statuses.SUCCEEDED}
    # Then each has exactly one action trigger, pending for the rules engines, with its payload
    found = wait_until(lambda: (lambda t: t if set(ids) <= set(t) else None)(action_triggers()),
                       "twenty action triggers")
    for execution_id in ids:
        [instance] = found[execution_id]
        assert instance.payload["status"] == "succeeded" and instance.payload["action_ref"] == "core.noop"
        # And each is in its execution's own trace, after the execution, caused by it
        trace = trace_service.trace_of("trigger_instance", instance.pk)
        assert trace.trace_tag == f"execution-{execution_id}"
        links = [(c.component_type, c.object_id, c.caused_by) for c in trace_service.components(trace)]
        assert links == [("action_execution", execution_id, {}),
                         ("trigger_instance", str(instance.pk), {"type": "action_execution", "id": execution_id})]
    # When every completion is delivered again, Then nothing is added
    for execution_id in ids:
        platform.publisher.publish("execution", "update", {"id": execution_id})
    marker = str(platform.run("core.noop").pk)
    wait_until(lambda: marker in action_triggers(), "the marker's action trigger")
    again = action_triggers()
    assert all(len(again[i]) == 1 for i in ids)
    for execution_id in ids:
        trace = trace_service.trace_of("action_execution", execution_id)
        assert len(trace_service.components(trace)) == 2


def test_an_action_changed_or_disabled_is_what_the_next_request_sees(platform):
    # Given core.local was just requested (its action and runner type are now in memory)
    assert platform.run("core.local", {"cmd": "true"}).status == statuses.SUCCEEDED
    actions = Access(ActionDB, platform.publisher)
    local = actions.get(ref="core.local")
    # When its cmd default changes, Then the next request carries it
    cmd = {key: value for key, value in local.parameters["cmd"].items() if key != "required"}
    local.parameters = {**local.parameters, "cmd": {**cmd, "default": "echo changed"}}
    actions.add_or_update(local)
    changed = platform.run("core.local")
    assert changed.status == statuses.SUCCEEDED and changed.result["stdout"] == "changed"
    # When it is disabled, Then the next request is refused at once
    local.enabled = False
    actions.add_or_update(local)
    with pytest.raises(ValidationError, match='Action "core.local" is disabled'):
        platform.request("core.local", {"cmd": "true"})


def test_a_policy_stored_by_another_process_applies_once_its_event_arrives(platform):
    # Given a failing action ran without policy (the policy index is now in memory)
    first = platform.run("core.local", {"cmd": "false"})
    assert first.status == statuses.FAILED
    # When another process stores a retry policy for it (not through this process's Access)
    # and announces it on the policy exchange, as `st2ctl reload` does
    policy = PolicyDB(name="retry_local", pack="tests", resource_ref="core.local", policy_type="action.retry",
                      enabled=True, parameters={"retry_on": "failure", "max_retry_count": 1})
    policy.set_identity()
    inserted = PolicyDB._get_collection().insert_one(policy.to_mongo().to_dict())
    platform.publisher.publish("policy", "create", {"id": str(inserted.inserted_id)})

    # Then a failing run is soon retried, long before the index would have expired on its own
    deadline = time.monotonic() + 5.0
    while True:
        failed = platform.run("core.local", {"cmd": "false"})
        try:
            retry = wait_until(lambda: Access(ExecutionDB).query(
                raw={"context.policies.retry.retried_liveaction_id": str(failed.pk)}), "its retry", 1.0)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    assert retry[0].action_ref == "core.local"


def test_what_the_notifier_hears_of_a_run_is_what_its_record_says(platform):
    # The action runner records a run's end without reading the record back: the copy it
    # holds from the claim, with the write's changes, is what it hands on.
    execution = platform.run("core.local", {"cmd": "echo held"})
    stored = Access(ExecutionDB).get_by_id(execution.pk)
    assert stored.status == statuses.SUCCEEDED and stored.result["stdout"] == "held"
    assert [entry["status"] for entry in stored.log] == ["requested", "scheduled", "running", "succeeded"]
    [instance] = wait_until(lambda: action_triggers().get(str(execution.pk)), "its action trigger")
    assert instance.payload["status"] == stored.status
    assert instance.payload["result"] == stored.result
    assert instance.payload["parameters"] == stored.parameters
    assert instance.payload["start_timestamp"].startswith(stored.start_timestamp.strftime("%Y-%m-%d %H:%M:%S"))


def test_action_triggers_skip_the_rules_engines_until_a_rule_is_on_them(platform):
    rules_queue = "trigger_instances_dispatch.rules_engine"
    # Given no rule on the action trigger: an execution's instance is stored processed, and no
    # rules engine is sent it (it would match it against no rule)
    first = str(platform.run("core.noop").pk)
    [instance] = wait_until(lambda: action_triggers().get(first), "the first action trigger")
    assert instance.status == statuses.TRIGGER_INSTANCE_PROCESSED
    assert drain(platform.settings, rules_queue, timeout=0.5) == []
    # When another process enables a rule on it (stored there, announced on the bus)
    rule_id = ObjectId()
    RuleDB._get_collection().insert_one({
        "_id": rule_id, "name": "on_actions", "pack": "default", "ref": "default.on_actions",
        "uid": "rule:default:on_actions", "enabled": True,
        "trigger": {"type": triggertypes.ACTION_TRIGGER_REF, "parameters": {}},
        "criteria": {}, "action": {"ref": "core.noop", "parameters": {}}})
    platform.publisher.publish("rule", "create", {"id": str(rule_id)})
    # Then the next executions' instances wait for the rules engines, which are sent them
    def sent_to_rules_engines():
        execution_id = str(platform.run("core.noop").pk)
        [latest] = wait_until(lambda: action_triggers().get(execution_id), "an action trigger")
        return latest if latest.status == statuses.TRIGGER_INSTANCE_PENDING else None
    latest = wait_until(sent_to_rules_engines, "an action trigger pending for the rules engines")
    assert str(latest.pk) in {body["id"] for body in drain(platform.settings, rules_queue, expect=10)}
