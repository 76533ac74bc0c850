"""A workflow's children listed in its execution a little after they are requested, all of them by its end,
and the orquesta runner's start recorded in one write.

The engine lists the children it requests in their parent's ``children`` a
moment later, those of several tasks in one write, and before the write that
ends the workflow. These tests check the list is whole and in order at the
end, that an engine stopping before it listed a child loses nothing (the
engine that ends the workflow lists it, once), and that listing twice adds
nothing twice.
"""

from __future__ import annotations

from st2common import statuses
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.workflow import TaskExecutionDB, WorkflowExecutionDB
from st2common.persistence.access import Access
from test_workflow_task_records import apply_step2_then_stop
from workflowsupport import embedded, platform  # noqa: F401 (fixtures)

STEPS = ["step1", "step2", "step3", "step4", "step5"]


def listed(execution) -> list[str]:
    """The children the execution's record lists, as stored."""
    return list(Access(ExecutionDB).get_by_id(execution.pk).children or [])


def test_a_finished_workflow_lists_every_child_once_in_order(platform):
    # When a chain and a fan-out run
    for ref, count in (("wf_pack.chain10", 10), ("wf_pack.fanout20", 22)):
        done = platform.run(ref)
        # Then each lists all its children, each once, in the order they were requested
        assert done.status == statuses.SUCCEEDED, done.result
        children = platform.children(done)
        assert len(children) == count
        assert sorted(listed(done)) == sorted(str(child.pk) for child in children)
        assert len(set(listed(done))) == count
        if ref == "wf_pack.chain10":
            assert listed(done) == [str(child.pk) for child in children]


def test_a_child_an_engine_did_not_list_before_it_stopped_is_listed_by_the_engine_that_ends_the_workflow(platform):
    # Given a slow chain whose engine stopped while step2 ran, and an engine that applied step2's completion,
    # requested step3's child and stopped before listing it
    execution, _task, _outcome = apply_step2_then_stop(platform, defer=False)
    step3 = platform.wait_for_task(execution, "step3", statuses.SUCCEEDED)
    assert str(step3.pk) not in listed(execution)
    # When a new engine carries the workflow on to its end
    platform.start_engine()
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    # Then every step ran once and the workflow lists each child once, step3's included
    assert done.status == statuses.SUCCEEDED, done.result
    children = platform.children(done)
    assert [c.context["orquesta"]["task_name"] for c in children] == STEPS
    assert sorted(listed(done)) == sorted(str(child.pk) for child in children)
    assert len(listed(done)) == len(STEPS)


def test_an_engine_that_stops_leaves_its_records_stored_and_its_children_listed(platform):
    # Given a slow chain whose second step runs
    execution = platform.request("wf_pack.slow_chain", {"pause": 0.3})
    step2 = platform.wait_for_task(execution, "step2", statuses.RUNNING)
    # When its engine stops
    platform.engines.pop().stop()
    # Then step1's task execution is stored and both children are listed (by its timer or its stop)
    step1 = platform.wait_for_task(execution, "step1", statuses.SUCCEEDED)
    workflow = Access(WorkflowExecutionDB).get_by_id(step2.context["orquesta"]["workflow_execution_id"])
    records = Access(TaskExecutionDB).query({"workflow_execution": str(workflow.pk)})
    assert [(t.task_id, t.status) for t in records] == [("step1", statuses.SUCCEEDED)]
    assert listed(execution) == [str(step1.pk), str(step2.pk)]
    # And a new engine finishes the workflow, each step once
    platform.start_engine()
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert listed(done) == [str(child.pk) for child in platform.children(done)]
    assert [c.context["orquesta"]["task_name"] for c in platform.children(done)] == STEPS


def test_children_listed_again_are_not_listed_twice(embedded):
    # Given a parent that lists one child
    parent = embedded.request("core.noop")
    access = Access(ExecutionDB)
    assert access.add_to_set(parent.pk, "children", ["a"])
    # When it is listed again with others (an engine's late write after the end's check)
    assert access.add_to_set(parent.pk, "children", ["b", "a", "c"])
    # Then each is listed once, the new ones after, in their order
    assert listed(parent) == ["a", "b", "c"]
    # And a record without the list gets it; a missing record says so
    ExecutionDB.objects(id=parent.pk).update_one(unset__children=True)
    assert access.add_to_set(parent.pk, "children", ["d", "d"])
    assert listed(parent) == ["d"]
    assert not access.add_to_set("5f0000000000000000000000", "children", ["e"])


def test_a_started_workflow_shows_an_empty_result_written_with_its_hand_over(embedded):
    # When a slow workflow runs
    execution = embedded.request("wf_pack.slow_chain", {"pause": 0.3})
    embedded.wait_for_task(execution, "step1", statuses.SUCCEEDED)
    # Then its execution shows the runner's empty result, from the write that handed it to the engine
    running = Access(ExecutionDB).get_by_id(execution.pk)
    assert running.status == statuses.RUNNING
    assert running.result == {} and running.result_size == 2
    assert running.workflow_execution
    # And once it is done, its status log shows one start and its end, and it lists its five children
    done = embedded.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert [entry["status"] for entry in done.log] == [
        statuses.REQUESTED, statuses.SCHEDULED, statuses.RUNNING, statuses.SUCCEEDED]
    assert len(listed(done)) == 5
