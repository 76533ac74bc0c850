"""Task execution records stored after their first child is requested: an engine that stops in between
loses nothing and runs nothing twice.

The engine chooses a task execution's id with the write that asks for its first
child (the write's pending entry names it), requests the child, then stores the
record. These tests leave a workflow in the state such an engine leaves behind
(the child requested, its task execution not stored) and check that a new
engine, told of the child's completion or sweeping for it, stores the record
from the pending entry and carries the workflow on.
"""

from __future__ import annotations

from st2common import statuses
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


def stop_before_storing_step3(platform):
    """A slow chain whose engine requested step3's child and stopped before storing its task execution."""
    execution = platform.request("wf_pack.slow_chain", {"pause": 0.2})
    step = platform.wait_for_task(execution, "step2", statuses.RUNNING)
    platform.engines.pop().stop()
    step = platform.wait_for(step.pk, statuses.COMPLETED)
    purge_updates(platform)
    crashed = WorkflowService(platform.settings, platform.publisher)
    task = crashed.task(step.context["orquesta"]["task_execution_id"])
    event = crashed.event(step, task)
    outcome = crashed.mutate(task.workflow_execution, lambda _w, conductor: crashed.apply(conductor, [event]))
    assert [t.task_id for t in outcome.next_tasks] == ["step3"]
    assert not crashed.request_children(outcome.workflow, outcome.next_tasks)
    # (step2's own record brought in line, so the records checked at the end are all of this test's doing)
    crashed.record_task(outcome.conductor, task, step)
    # The record that engine had not stored yet
    records = Access(TaskExecutionDB)
    record = records.get(workflow_execution=str(outcome.workflow.pk), task_id="step3")
    records.delete(record, publish=False)
    pending = Access(WorkflowExecutionDB).get_by_id(outcome.workflow.pk).pending
    assert [p["task_execution_id"] for p in pending] == [str(record.pk)]
    return execution, str(record.pk)


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
