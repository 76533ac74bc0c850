"""The conductor under control: canceling a paused workflow, and resuming a workflow whose task waits on a
paused subworkflow (the service resumes the subworkflow; its events bring the task back)."""

from __future__ import annotations

from st2workflowengine.orquesta import TaskEvent
from test_orquesta_conductor import Rehearsal, sequence, start


def test_canceling_a_paused_workflow_cancels_it_at_once():
    # Given a workflow paused between two tasks
    rehearsal = Rehearsal(start("chain10.yaml"))
    rehearsal.collect()
    rehearsal.conductor.request_workflow_status("pausing")
    rehearsal.step()
    assert rehearsal.conductor.get_workflow_status() == "paused"
    # When it is asked to cancel
    rehearsal.conductor.request_workflow_status("canceling")
    # Then nothing runs, so it is canceled at once, and nothing more is requested
    assert rehearsal.conductor.get_workflow_status() == "canceled"
    assert rehearsal.conductor.get_next_tasks() == []
    assert sequence(rehearsal.conductor) == ["task1"]


def test_resume_brings_back_a_task_whose_subworkflow_paused():
    # Given a workflow whose first task's child (a subworkflow) paused, which paused the workflow
    rehearsal = Rehearsal(start("chain10.yaml"))
    rehearsal.collect()
    task, _action = rehearsal.outstanding.popleft()
    conductor = rehearsal.conductor
    conductor.update_task_state(TaskEvent("task1", 0, "running", seq=task.seq, attempt=task.attempt))
    conductor.update_task_state(TaskEvent("task1", 0, "paused", seq=task.seq, attempt=task.attempt))
    assert conductor.get_workflow_status() == "paused"
    # When the workflow resumes
    conductor.request_workflow_status("resuming")
    # Then it runs again, its task resuming (active) until the subworkflow reports back, and nothing new starts
    assert conductor.get_workflow_status() == "running"
    assert conductor.get_task("task1")["status"] == "resuming"
    assert conductor.get_next_tasks() == []
    # When the subworkflow runs again and then succeeds, Then the workflow carries on to the end
    conductor.update_task_state(TaskEvent("task1", 0, "running", seq=task.seq, attempt=task.attempt))
    assert conductor.get_workflow_status() == "running"
    conductor.update_task_state(TaskEvent("task1", 0, "succeeded", seq=task.seq, attempt=task.attempt))
    assert rehearsal.run().get_workflow_status() == "succeeded"
    assert len(sequence(rehearsal.conductor)) == 10
