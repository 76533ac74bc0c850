"""Policies end to end: registration of policies/*.yaml, and their enforcement by two action runners.

The fixture pack tests/fixtures/packs/policy_pack has sleeping actions under
concurrency policies (delay at 2, cancel at 1, one per value of a parameter)
and an always-failing action with a retry policy. Runs on both buses with TWO
action runners (scheduler + dispatcher + notifier each) in this process,
competing for the same queues; the database is what keeps them within the
threshold, so the check is made on the records: no more executions were ever
running at once than the threshold allows.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from st2common import statuses
from st2common.content import register
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.policy import ConcurrencySlotDB, PolicyDB, PolicyTypeDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.persistence.access import Access
from st2common.services.policies import claim_slot, release_slots
from test_api_support import write
from test_lifecycle import start_platform  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]
POLICY_PACK = REPO / "tests" / "fixtures" / "packs" / "policy_pack"


@pytest.fixture
def policy_platform(start_platform, tmp_path):
    """Two action runners, the policy pack registered with its policies."""
    shutil.copytree(POLICY_PACK, tmp_path / "packs" / "policy_pack")
    platform = start_platform(copies=2)
    report = register(platform.settings, kinds=["policies"])
    assert report.ok, report.errors
    return platform


def wait_until(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def running_interval(execution: ExecutionDB):
    started = next(entry["timestamp"] for entry in execution.log if entry["status"] == statuses.RUNNING)
    return started, execution.end_timestamp


def most_at_once(executions: list[ExecutionDB]) -> int:
    """The largest number of these executions that were running at the same moment, from their records."""
    events = []
    for execution in executions:
        start, end = running_interval(execution)
        events += [(start, 1), (end, -1)]
    # An end and a start at the same millisecond: the end comes first (the slot was freed, then taken).
    events.sort(key=lambda event: (event[0], event[1]))
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def finish_all(platform, ids, timeout: float = 30.0) -> list[ExecutionDB]:
    return [platform.wait_for(i, statuses.COMPLETED, timeout) for i in ids]


def test_policy_types_and_pack_policies_are_registered(policy_platform):
    assert {t.ref for t in Access(PolicyTypeDB).query()} == {"action.concurrency", "action.concurrency.attr",
                                                             "action.retry"}
    sleepy = Access(PolicyDB).get(ref="policy_pack.sleepy.concurrency")
    assert (sleepy.resource_ref, sleepy.policy_type) == ("policy_pack.sleepy", "action.concurrency")
    # The type's defaults are stored with the parameters
    assert sleepy.parameters == {"threshold": 2, "action": "delay"}
    assert sleepy.metadata_file == "policies/sleepy_concurrency.yaml"


def test_a_policy_file_naming_an_unknown_action_or_type_is_reported(policy_platform, tmp_path):
    folder = tmp_path / "packs" / "policy_pack" / "policies"
    write(folder / "ghost.yaml", "name: ghost\nresource_ref: policy_pack.ghost\npolicy_type: action.retry\n"
                                 "parameters:\n  retry_on: failure\n")
    write(folder / "odd.yaml", "name: odd\nresource_ref: policy_pack.sleepy\npolicy_type: action.throttle\n")
    write(folder / "twice.yaml", "name: twice\nresource_ref: policy_pack.sleepy\npolicy_type: action.concurrency\n"
                                 "parameters:\n  threshold: 5\n")
    report = register(policy_platform.settings, kinds=["policies"])
    errors = {Path(e.path).name: e for e in report.errors}
    assert set(errors) == {"ghost.yaml", "odd.yaml", "twice.yaml"}
    assert 'action "policy_pack.ghost"' in str(errors["ghost.yaml"]) and errors["ghost.yaml"].line == 2
    assert 'policy type "action.throttle" is not known' in str(errors["odd.yaml"])
    assert "already has a action.concurrency policy" in str(errors["twice.yaml"])
    # And the good ones stay registered
    assert report.registered["policies"] == 4


def test_concurrency_of_two_keeps_at_most_two_running_across_two_action_runners(policy_platform):
    platform = policy_platform
    assert len(platform.copies) == 2
    # When six sleepy executions are requested at once
    ids = [platform.request("policy_pack.sleepy", {"seconds": 0.4}).pk for _ in range(6)]
    # Then all six succeed
    done = finish_all(platform, ids)
    assert [e.status for e in done] == [statuses.SUCCEEDED] * 6
    # And never more than two ran at the same time, though two did
    assert most_at_once(done) == 2
    # And those that found both slots taken waited as delayed first
    delayed = [e for e in done if statuses.DELAYED in [entry["status"] for entry in e.log]]
    assert len(delayed) >= 3
    # And no slot is left held
    wait_until(lambda: ConcurrencySlotDB.objects.count() == 0, "the slots to be freed", 5.0)


def test_concurrency_with_cancel_cancels_what_is_over_the_threshold(policy_platform):
    platform = policy_platform
    ids = [platform.request("policy_pack.guarded", {"seconds": 1}).pk for _ in range(3)]
    done = finish_all(platform, ids)
    assert sorted(e.status for e in done) == [statuses.CANCELED, statuses.CANCELED, statuses.SUCCEEDED]
    canceled = [e for e in done if e.status == statuses.CANCELED]
    assert all("policy_pack.guarded.concurrency" in e.result["message"] for e in canceled)


def test_concurrency_by_attribute_counts_each_value_apart(policy_platform):
    platform = policy_platform
    group_a = [platform.request("policy_pack.grouped", {"seconds": 0.4, "group": "a"}).pk for _ in range(2)]
    group_b = [platform.request("policy_pack.grouped", {"seconds": 0.4, "group": "b"}).pk]
    done_a, done_b = finish_all(platform, group_a), finish_all(platform, group_b)
    assert all(e.status == statuses.SUCCEEDED for e in done_a + done_b)
    # One at a time within a group; the other group ran alongside
    assert most_at_once(done_a) == 1
    assert most_at_once(done_a + done_b) == 2


def test_a_retry_policy_reruns_a_failing_action_the_configured_number_of_times(policy_platform):
    platform = policy_platform
    # When the always-failing action runs once
    first = platform.request("policy_pack.flaky")
    # Then it is retried twice (max_retry_count), each retry a new execution that failed too
    runs = wait_until(lambda: (lambda found: found if len(found) == 3 and all(
        e.status in statuses.COMPLETED for e in found) else None)(
        Access(ExecutionDB).query({"action_ref": "policy_pack.flaky"}, order_by=("start_timestamp",))),
        "the original and two retries")
    assert [e.status for e in runs] == [statuses.FAILED] * 3
    assert str(runs[0].pk) == str(first.pk)
    retries = [e.context["policies"]["retry"] for e in runs[1:]]
    assert retries == [
        {"applied_policy": "policy_pack.flaky.retry", "retry_count": 1, "retried_liveaction_id": str(runs[0].pk)},
        {"applied_policy": "policy_pack.flaky.retry", "retry_count": 2, "retried_liveaction_id": str(runs[1].pk)},
    ]
    # And once the last one's completion has been handled (its action trigger dispatched), no fourth comes
    wait_until(lambda: TriggerInstanceDB.objects(**{"payload__execution_id": str(runs[2].pk)}).count(),
               "the last run's completion to be handled")
    assert Access(ExecutionDB).count({"action_ref": "policy_pack.flaky"}) == 3


def test_a_slot_held_by_an_execution_that_no_longer_runs_is_taken_back(db):
    def execution(status: str) -> str:
        doc = ExecutionDB(status=status, action_ref="p.a", action={"ref": "p.a"}, runner={"name": "noop"})
        return str(Access(ExecutionDB).add_or_update(doc, publish=False).pk)

    # Given both slots of a policy held, one by an execution a dead runner left abandoned
    running, abandoned = execution(statuses.RUNNING), execution(statuses.RUNNING)
    assert claim_slot("p.c", 2, running)[0] and claim_slot("p.c", 2, abandoned)[0]
    newcomer, another = execution(statuses.REQUESTED), execution(statuses.REQUESTED)
    assert claim_slot("p.c", 2, newcomer) == (False, 2, False)
    Access(ExecutionDB).update_if(abandoned, {}, {"status": statuses.ABANDONED}, publish=False)
    # When a newcomer claims a slot; Then it gets the abandoned one's, and the next one finds none
    assert claim_slot("p.c", 2, newcomer) == (True, 1, True)
    assert claim_slot("p.c", 2, another) == (False, 2, False)
    # And claiming again is harmless; a release frees it
    assert claim_slot("p.c", 2, newcomer) == (True, 1, False)
    assert release_slots(newcomer) == 1
    assert claim_slot("p.c", 2, another)[0]
