"""Task execution records stored once, at their task's first kept status: an engine that stops while a
task runs loses nothing and runs nothing twice.

The engine chooses a task execution's id with the write that asks for its first
child (the write's pending entry names it), requests the child, and stores the
record just before the write that applies the child's completion. These tests
leave a workflow in the state an engine leaves behind when it stops while a
task runs (the child requested, its task execution not stored) and check that
a new engine, told of the child's completion or sweeping for it, stores the
record from the pending entry and carries the workflow on.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import eventlet

from st2common import statuses
from st2common.models.db.action import ActionDB
from st2common.models.db.workflow import TaskExecutionDB, WorkflowExecutionDB
from st2common.persistence.access import Access
from st2common.services.workflows import WorkflowService
from st2common.transport.connection import make_connection
from workflowsupport import embedded, platform  # noqa: F401 (fixtures)

STEPS = ["step1", "step2", "step3", "step4", "step5"]


def purge_updates(platform) -> None:
    """Drop the queued execution updates, as the embedded bus loses what a killed consumer held."""
    with make_connection(platform.settings.messaging) as conn:
        platform.publisher.topology.work_queue("workflow.action.update")(conn.channel()).purge()


def apply_step2_then_stop(platform, defer: bool):
    """A slow chain whose engine, stopped while step2 ran, is replaced by one that applies step2's
    completion and requests step3's child, then stops too; (the execution, step2's task, the outcome)."""
    execution = platform.request("wf_pack.slow_chain", {"pause": 0.2})
    step = platform.wait_for_task(execution, "step2", statuses.RUNNING)
    platform.engines.pop().stop()
    step = platform.wait_for(step.pk, statuses.COMPLETED)
    purge_updates(platform)
    crashed = WorkflowService(platform.settings, platform.publisher)
    orquesta = step.context["orquesta"]
    task = crashed.task(orquesta["task_execution_id"], orquesta["workflow_execution_id"])
    event = crashed.event(step, task)
    outcome = crashed.mutate(task.workflow_execution, lambda _w, conductor: crashed.apply(conductor, [event]),
                             before_write=crashed.recording([(task, step)], defer=defer))
    assert [t.task_id for t in outcome.next_tasks] == ["step3"]
    assert not crashed.request_children(outcome.workflow, outcome.next_tasks)
    return execution, task, outcome


def stop_before_storing_step3(platform):
    """A slow chain whose engine requested step3's child and stopped while it ran."""
    execution, task, outcome = apply_step2_then_stop(platform, defer=False)
    # step2's record was stored by the write that applied its completion; step3's only its pending entry names
    records = Access(TaskExecutionDB)
    assert records.get_by_id(task.pk).status == statuses.SUCCEEDED
    assert records.get(workflow_execution=str(outcome.workflow.pk), task_id="step3") is None
    pending = Access(WorkflowExecutionDB).get_by_id(outcome.workflow.pk).pending
    assert [p["task_id"] for p in pending] == ["step3"]
    return execution, pending[0]["task_execution_id"]


def assert_ran_once_with_records(platform, execution, step3_task_id: str) -> None:
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    children = platform.children(done)
    assert [c.context["orquesta"]["task_name"] for c in children] == STEPS
    workflow = Access(WorkflowExecutionDB).get(action_execution=str(done.pk))
    tasks = {str(t.pk): t for t in Access(TaskExecutionDB).query({"workflow_execution": str(workflow.pk)})}
    assert sorted(t.task_id for t in tasks.values()) == STEPS
    for child in children:
        task = tasks[child.context["orquesta"]["task_execution_id"]]
        assert task.status == statuses.SUCCEEDED and task.result == child.result
    if step3_task_id is not None:
        assert children[2].context["orquesta"]["task_execution_id"] == step3_task_id


def test_a_child_whose_task_execution_was_never_stored_carries_its_workflow_on(platform):
    # Given an engine that requested step3's child and stopped before storing its task execution
    execution, step3_task_id = stop_before_storing_step3(platform)
    # When a new engine starts and hears of the child's completion
    platform.start_engine()
    # Then it stores the task execution from the pending entry and the workflow completes, each step once
    assert_ran_once_with_records(platform, execution, step3_task_id)


def test_the_sweep_stores_the_task_execution_of_a_child_whose_update_was_lost(platform):
    # Given the same, and step3's updates lost while no engine listened
    execution, step3_task_id = stop_before_storing_step3(platform)
    child = platform.wait_for_task(execution, "step3", statuses.SUCCEEDED)
    purge_updates(platform)
    assert Access(TaskExecutionDB).query({"id": step3_task_id}) == []
    # When a new engine starts (sweeping often, so the test need not wait)
    platform.start_engine(sweep_interval=0.1, idle_after=1.0, startup_idle_after=0.05)
    # Then its sweep stores the record, applies the completion and requests nothing twice
    assert_ran_once_with_records(platform, execution, step3_task_id)
    assert child.context["orquesta"]["task_execution_id"] == step3_task_id


def test_task_executions_are_stored_with_the_ids_their_children_name(embedded):
    # When a workflow runs
    execution = embedded.run("wf_pack.sequential", {"who": "ids"})
    # Then every child names a stored task execution of its task, with its status and result
    workflow = Access(WorkflowExecutionDB).get(action_execution=str(execution.pk))
    tasks = {str(t.pk): t for t in Access(TaskExecutionDB).query({"workflow_execution": str(workflow.pk)})}
    children = embedded.children(execution)
    assert len(tasks) == len(children) == 3
    for child in children:
        task = tasks[child.context["orquesta"]["task_execution_id"]]
        assert task.task_id == child.context["orquesta"]["task_name"]
        assert task.status == statuses.SUCCEEDED and task.result == child.result
    # And nothing is left pending once it is done
    assert workflow.pending is None


def test_a_task_execution_is_stored_once_its_task_completes(platform):
    # Given a slow chain whose second step runs
    execution = platform.request("wf_pack.slow_chain", {"pause": 0.3})
    step = platform.wait_for_task(execution, "step2", statuses.RUNNING)
    records = Access(TaskExecutionDB)
    # Then its task execution is not stored while it runs: the workflow's pending entry names it
    task_id = step.context["orquesta"]["task_execution_id"]
    assert records.query({"id": task_id}) == []
    pending = Access(WorkflowExecutionDB).get_by_id(step.context["orquesta"]["workflow_execution_id"]).pending
    assert task_id in [p["task_execution_id"] for p in pending]
    # (step1's entry may stay, marked, until the next write: its record is stored just after step2 is
    # requested, so on a busy machine step2 may start first)
    for entry in pending:
        if entry["task_execution_id"] != task_id:
            assert entry["task_id"] == "step1" and entry["unrecorded"]
            deadline = time.monotonic() + 10
            while not (stored := records.query({"id": entry["task_execution_id"]})):
                assert time.monotonic() < deadline, "step1's task execution was never stored"
                time.sleep(0.01)
            assert stored[0].status == statuses.SUCCEEDED
    # And once the workflow is done, every task's is stored with its child's status and result
    assert_ran_once_with_records(platform, execution, None)


def test_a_retried_task_keeps_one_record_per_attempt(platform, tmp_path):
    # When a task fails once and its retry succeeds
    done = platform.run("wf_pack.flaky", {"flag": str(tmp_path / "flag")})
    # Then the workflow succeeds, and each attempt's task execution is stored as its child ended
    assert done.status == statuses.SUCCEEDED, done.result
    children = platform.children(done)
    assert [c.context["orquesta"]["task_name"] for c in children] == ["flaky", "flaky", "after"]
    workflow = Access(WorkflowExecutionDB).get(action_execution=str(done.pk))
    tasks = {str(t.pk): t for t in Access(TaskExecutionDB).query({"workflow_execution": str(workflow.pk)})}
    assert len(tasks) == 3
    attempts = [tasks[c.context["orquesta"]["task_execution_id"]] for c in children]
    assert [(t.task_id, t.attempt, t.status) for t in attempts] == [
        ("flaky", 0, statuses.FAILED), ("flaky", 1, statuses.SUCCEEDED), ("after", 0, statuses.SUCCEEDED)]
    assert [t.result for t in attempts] == [c.result for c in children]


def test_children_that_complete_while_their_workflow_waits_for_its_turn_share_one_write(platform):
    # Given a fan-out whose 20 branches all succeeded while its engine heard of none of them
    platform.engines.pop().stop()
    execution = platform.request("wf_pack.fanout20")
    deadline = time.monotonic() + 20
    while (workflow := Access(WorkflowExecutionDB).get(action_execution=str(execution.pk))) is None:
        assert time.monotonic() < deadline, "the workflow execution was never stored"
        time.sleep(0.01)
    engine = WorkflowService(platform.settings, platform.publisher)
    engine.start(workflow.pk)
    engine.child_changed(platform.wait_for(platform.wait_for_task(execution, "fork", statuses.SUCCEEDED).pk,
                                           statuses.SUCCEEDED))
    branches = [platform.wait_for(c.pk, statuses.COMPLETED) for c in platform.children(execution)
                if c.context["orquesta"]["task_name"] != "fork"]
    assert len(branches) == 20
    purge_updates(platform)
    before = Access(WorkflowExecutionDB).get_by_id(workflow.pk).revision
    # When their updates arrive while another change of the workflow holds its turn
    gate = threading.Event()

    def hold(_workflow, _conductor) -> bool:
        gate.wait()
        return False
    holder = eventlet.spawn(engine.mutate, workflow.pk, hold)
    eventlet.sleep(0)
    updates = [eventlet.spawn(engine.child_changed, child) for child in branches]
    eventlet.sleep(0)
    gate.set()
    holder.wait()
    for update in updates:
        update.wait()
    # Then one write applied all 20 and their task executions are stored (a moment later), succeeded
    assert Access(WorkflowExecutionDB).get_by_id(workflow.pk).revision == before + 1
    expected = sorted(["fork"] + [c.context["orquesta"]["task_name"] for c in branches])
    deadline = time.monotonic() + 10
    while (stored := sorted(t.task_id for t in Access(TaskExecutionDB).query({"workflow_execution": str(workflow.pk)})
                            if t.status == statuses.SUCCEEDED)) != expected:
        assert time.monotonic() < deadline, stored
        time.sleep(0.01)
    # And an engine hearing of the join's completion finishes the workflow, the join run once
    platform.start_engine()
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert Counter(c.context["orquesta"]["task_name"] for c in platform.children(done))["join"] == 1


def test_a_task_whose_child_cannot_be_requested_fails_the_workflow_with_its_record_stored(platform):
    # Given the action of the join of a workflow's branches disabled after the workflow was inspected
    actions = Access(ActionDB)
    echo = actions.get_by_ref("core.echo")
    echo.enabled = False
    actions.add_or_update(echo, publish=False)
    try:
        # When the workflow reaches the join
        done = platform.run("wf_pack.parallel")
    finally:
        echo = actions.get_by_ref("core.echo")
        echo.enabled = True
        actions.add_or_update(echo, publish=False)
    # Then it fails naming the disabled action, with every branch run once and no child for the join
    assert done.status == statuses.FAILED, done.result
    assert any("disabled" in error["message"] and error.get("task_id") == "barrier"
               for error in done.result["errors"])
    names = platform.task_names(done)
    assert sorted(names) == ["intermediate", "parallel1", "parallel2", "parallel3"]
    # And every task, the join included, has its task execution stored
    workflow = Access(WorkflowExecutionDB).get(action_execution=str(done.pk))
    records = {t.task_id: t for t in Access(TaskExecutionDB).query({"workflow_execution": str(workflow.pk)})}
    assert sorted(records) == ["barrier", "intermediate", "parallel1", "parallel2", "parallel3"]
    assert all(records[name].status == statuses.SUCCEEDED for name in names)


def test_a_record_left_to_store_after_its_write_is_stored_by_the_next_engine(platform):
    # Given an engine that applied step2's completion, requested step3, and stopped before storing step2's record
    execution, task, outcome = apply_step2_then_stop(platform, defer=True)
    records = Access(TaskExecutionDB)
    assert records.query({"id": task.pk}) == []
    # The write kept step2's pending entry, marked, beside step3's
    pending = Access(WorkflowExecutionDB).get_by_id(outcome.workflow.pk).pending
    assert [(p["task_id"], bool(p.get("unrecorded"))) for p in pending] == [("step2", True), ("step3", False)]
    # When a new engine carries the workflow on
    platform.start_engine()
    # Then step2's record is stored, from its entry, with its child's status and result; each step ran once
    assert_ran_once_with_records(platform, execution, pending[1]["task_execution_id"])
    assert Access(WorkflowExecutionDB).get_by_id(outcome.workflow.pk).pending is None
