"""The conductor rehearsed on fixture workflows, plus control: pause, resume, cancel, re-run.

A rehearsal plays the service: it asks for the next tasks, answers each child
in the order they were requested (running, then the mocked outcome), and
round-trips the conductor through JSON between every event, so every step also
proves serialisation is lossless.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import pytest
import yaml

from st2common.exceptions import TransitionError, ValidationError
from st2workflowengine.orquesta import TaskEvent, WorkflowConductor, WorkflowEvent

FIXTURES = Path(__file__).parent.parent / "fixtures" / "workflows"
CASES = [
    pytest.param(path.name, case, id=f"{path.stem}: {case['name']}")
    for path in sorted((FIXTURES / "rehearsals").glob("*.yaml"))
    for case in yaml.safe_load(path.read_text())["cases"]
]


def definition(name: str) -> str:
    return (FIXTURES / name).read_text()


def roundtrip(conductor: WorkflowConductor) -> WorkflowConductor:
    data = json.loads(json.dumps(conductor.serialize()))
    again = WorkflowConductor.deserialize(data)
    assert again.serialize() == data
    return again


class Rehearsal:
    """Plays the service around one conductor with mocked child outcomes."""

    def __init__(self, conductor: WorkflowConductor, mocks: dict | None = None) -> None:
        self.conductor = conductor
        self.mocks = {task: deque(outcomes) for task, outcomes in (mocks or {}).items()}
        self.outstanding: deque = deque()
        self.requests: dict[str, list[dict]] = {}
        self.max_active: dict[str, int] = {}

    def outcome(self, task_id: str, action) -> tuple[str, object]:
        queue = self.mocks.get(task_id)
        if queue:
            mock = queue.popleft()
            return mock.get("status", "succeeded"), mock.get("result")
        if action.action == "core.echo":
            return "succeeded", {"stdout": action.input.get("message")}
        return "succeeded", None

    def collect(self) -> None:
        for task in self.conductor.get_next_tasks():
            for action in task.actions:
                self.requests.setdefault(task.task_id, []).append({
                    "action": action.action, "input": action.input, "item_id": action.item_id,
                    "delay": task.delay, "attempt": task.attempt, "route": task.route})
                self.outstanding.append((task, action))
            active = sum(1 for t, _a in self.outstanding if t.task_id == task.task_id)
            self.max_active[task.task_id] = max(self.max_active.get(task.task_id, 0), active)
        self.conductor = roundtrip(self.conductor)

    def step(self) -> None:
        task, action = self.outstanding.popleft()
        status, result = self.outcome(task.task_id, action)
        for event_status, event_result in (("running", None), (status, result)):
            self.conductor.update_task_state(TaskEvent(
                task.task_id, task.route, event_status, event_result, item_id=action.item_id,
                seq=task.seq, attempt=task.attempt))
            self.conductor = roundtrip(self.conductor)

    def run(self, steps: int | None = None) -> WorkflowConductor:
        self.collect()
        while self.outstanding and steps != 0:
            self.step()
            self.collect()
            steps = None if steps is None else steps - 1
        return self.conductor


def start(name: str, inputs: dict | None = None, context: dict | None = None) -> WorkflowConductor:
    conductor = WorkflowConductor(definition(name), inputs, context or {"st2": {"user": "stanley"}})
    conductor.request_workflow_status("running")
    return conductor


def sequence(conductor: WorkflowConductor) -> list[str]:
    return [e["id"] if e["route"] == 0 else f"{e['id']}|{e['route']}" for e in conductor.get_task_sequence()]


@pytest.mark.parametrize("workflow,case", CASES)
def test_rehearsal(workflow, case):
    # Given a fixture workflow and mocked child outcomes
    rehearsal_file = yaml.safe_load((FIXTURES / "rehearsals" / workflow).read_text())
    conductor = start(rehearsal_file["workflow"], case.get("inputs"), case.get("context"))
    # When the service plays every child to completion
    rehearsal = Rehearsal(conductor, case.get("mocks"))
    conductor = rehearsal.run()
    # Then the tasks, requests, final status, output and errors are the expected ones
    expected = case["expected"]
    assert sequence(conductor) == expected["sequence"]
    assert conductor.get_workflow_status() == expected["status"]
    if "output" in expected:
        assert conductor.get_workflow_output() == expected["output"]
    if "errors" in expected:
        assert conductor.errors == expected["errors"]
    for task_id, requests in expected.get("requests", {}).items():
        seen = rehearsal.requests[task_id]
        assert [{k: r[k] for k in want} for r, want in zip(seen, requests)] == requests
        assert len(seen) == len(requests)
    for task_id, count in expected.get("request_count", {}).items():
        assert len(rehearsal.requests[task_id]) == count
    for task_id, most in expected.get("max_active", {}).items():
        assert rehearsal.max_active[task_id] == most
    assert conductor.get_next_tasks() == []


def test_result_has_stackstorm_shape():
    succeeded = Rehearsal(start("chain10.yaml")).run()
    assert succeeded.result() == {"output": {"last": 10}}
    failed = Rehearsal(start("fail_fast.yaml"), {"bad": [{"status": "failed", "result": {"stderr": "x"}}]}).run()
    assert failed.result()["output"] == {"stderr": "x"}
    assert failed.result()["errors"][0]["task_id"] == "bad"


def test_pause_waits_for_running_tasks_then_resume_continues():
    # Given a sequential workflow whose first task is running
    rehearsal = Rehearsal(start("chain10.yaml"))
    rehearsal.collect()
    # When it is paused
    rehearsal.conductor.request_workflow_status("pausing")
    # Then it is pausing while task1 runs, and paused once it finished, with nothing new to run
    assert rehearsal.conductor.get_workflow_status() == "pausing"
    rehearsal.step()
    assert rehearsal.conductor.get_workflow_status() == "paused"
    assert rehearsal.conductor.get_next_tasks() == []
    # When it is resumed, Then the rest of the chain runs
    rehearsal.conductor.request_workflow_status("resuming")
    conductor = rehearsal.run()
    assert conductor.get_workflow_status() == "succeeded"
    assert len(sequence(conductor)) == 10


def test_pause_with_items_starts_no_new_items_and_resume_finishes_them():
    rehearsal = Rehearsal(start("with_items.yaml", {"members": ["a", "b", "c", "d"]}))
    rehearsal.collect()
    rehearsal.conductor.request_workflow_status("paused")
    rehearsal.step()
    rehearsal.step()
    assert rehearsal.conductor.get_workflow_status() == "paused"
    assert rehearsal.conductor.get_task("greet")["status"] == "paused"
    rehearsal.collect()
    assert not rehearsal.outstanding
    rehearsal.conductor.handle(WorkflowEvent("resuming"))
    conductor = rehearsal.run()
    assert conductor.get_workflow_status() == "succeeded"
    assert conductor.get_workflow_output() == {"replies": ["hi a", "hi b", "hi c", "hi d"]}


def test_cancel_lets_running_tasks_finish_and_renders_output():
    rehearsal = Rehearsal(start("sequential.yaml", {"who": "x"}))
    rehearsal.collect()
    rehearsal.conductor.request_workflow_status("canceling")
    assert rehearsal.conductor.get_workflow_status() == "canceling"
    rehearsal.step()
    rehearsal.collect()
    conductor = rehearsal.conductor
    # Then task1 finished but published nothing, nothing else ran, and the output
    # rendered what it could without turning canceled into failed
    assert conductor.get_workflow_status() == "canceled"
    assert sequence(conductor) == ["task1"]
    assert conductor.get_workflow_output() == {"count": 0, "user": "stanley"}
    assert [e["message"].split(":")[0] for e in conductor.errors] == ["YaqlEvaluationException"] * 2


def test_cancel_with_nothing_running_is_immediate():
    conductor = start("chain10.yaml")
    conductor.request_workflow_status("canceled")
    assert conductor.get_workflow_status() == "canceled"
    with pytest.raises(TransitionError):
        conductor.request_workflow_status("running")


def test_pending_task_pauses_workflow_until_answered():
    rehearsal = Rehearsal(start("chain10.yaml"))
    rehearsal.collect()
    task, _action = rehearsal.outstanding.popleft()
    rehearsal.conductor.update_task_state(TaskEvent("task1", 0, "pending", seq=task.seq))
    assert rehearsal.conductor.get_workflow_status() == "paused"
    rehearsal.conductor.update_task_state(TaskEvent("task1", 0, "succeeded", {"answer": 1}, seq=task.seq))
    rehearsal.conductor.request_workflow_status("resuming")
    assert rehearsal.run().get_workflow_status() == "succeeded"


def test_rerun_from_failed_task():
    # Given a workflow that failed at its second task
    mocks = {"task2": [{"status": "failed"}]}
    failed = Rehearsal(start("chain10.yaml"), mocks).run()
    assert failed.get_workflow_status() == "failed" and sequence(failed) == ["task1", "task2"]
    # When it is re-run from the failed task
    failed.request_rerun(["task2"])
    conductor = Rehearsal(failed).run()
    # Then the chain runs on from task2 and succeeds, errors cleared
    assert conductor.get_workflow_status() == "succeeded"
    assert sequence(conductor) == ["task1", "task2"] + [f"task{i}" for i in range(2, 11)]
    assert conductor.errors == [] and conductor.get_workflow_output() == {"last": 10}


def test_rerun_with_items_keeps_succeeded_items_unless_reset():
    mocks = {"greet": [{"result": {"stdout": "hi a"}}, {"status": "failed"}]}
    failed = Rehearsal(start("with_items.yaml", {"members": ["a", "b"]}), mocks).run()
    assert failed.get_workflow_status() == "failed"
    failed.request_rerun(["greet"])
    rehearsal = Rehearsal(failed)
    conductor = rehearsal.run()
    assert [r["item_id"] for r in rehearsal.requests["greet"]] == [1]
    assert conductor.get_workflow_output() == {"replies": ["hi a", "hi b"]}
    conductor.request_rerun(["greet"], reset_items=["greet"])
    rehearsal = Rehearsal(conductor)
    rehearsal.run()
    assert [r["item_id"] for r in rehearsal.requests["greet"]] == [0, 1]
    with pytest.raises(ValidationError):
        rehearsal.conductor.request_rerun(["nope"])


def test_expression_error_in_task_input_fails_with_stackstorm_message():
    wf = {"version": 1.0, "tasks": {"t1": {"action": "core.echo message=<% ctx(missing) %>"}},
          "output": [{"x": 1}]}
    conductor = WorkflowConductor(wf)
    conductor.request_workflow_status("running")
    assert conductor.get_next_tasks() == []
    assert conductor.get_workflow_status() == "failed"
    assert conductor.errors[0]["message"] == (
        "YaqlEvaluationException: Unable to evaluate expression '<% ctx(missing) %>'. "
        "VariableUndefinedError: The variable \"missing\" is undefined.")
    assert conductor.errors[0]["task_id"] == "t1"
    assert conductor.get_workflow_output() == {"x": 1}


def test_expression_error_in_transition_names_the_transition():
    wf = {"version": 1.0, "tasks": {
        "t1": {"action": "core.noop", "next": [{"when": "{{ ctx('nope') }}", "do": "t2"}]},
        "t2": {"action": "core.noop"}}}
    conductor = WorkflowConductor(wf)
    conductor.request_workflow_status("running")
    conductor = Rehearsal(conductor).run()
    assert conductor.get_workflow_status() == "failed"
    error = conductor.errors[0]
    assert error["message"].startswith("JinjaEvaluationException: Unable to evaluate expression")
    assert (error["task_id"], error["route"], error["task_transition_id"]) == ("t1", 0, "t2__t0")


def test_input_defaults_render_in_order_and_failures_fail_at_start():
    wf = {"version": 1.0, "input": ["x", {"y": "<% ctx(x) * 2 %>"}], "vars": [{"z": "<% ctx(y) + 1 %>"}],
          "tasks": {"t": {"action": "core.noop"}}, "output": [{"z": "<% ctx(z) %>"}]}
    conductor = WorkflowConductor(wf, {"x": 2})
    conductor.request_workflow_status("running")
    assert conductor.input == {"x": 2, "y": 4}
    assert Rehearsal(conductor).run().get_workflow_output() == {"z": 5}
    broken = WorkflowConductor(wf, {"x": None})
    broken.request_workflow_status("running")
    assert broken.get_workflow_status() == "failed"
    assert broken.errors[0]["message"].startswith("YaqlEvaluationException")


def test_unreachable_join_fails_the_workflow():
    wf = {"version": 1.0, "tasks": {
        "a": {"action": "core.noop", "next": [{"when": "<% succeeded() %>", "do": "j"}]},
        "b": {"action": "core.noop", "next": [{"when": "<% failed() %>", "do": "j"}]},
        "j": {"join": "all", "action": "core.noop"}}}
    conductor = WorkflowConductor(wf)
    conductor.request_workflow_status("running")
    conductor = Rehearsal(conductor).run()
    assert conductor.get_workflow_status() == "failed"
    assert conductor.errors[0]["message"].startswith("UnreachableJoinError")


def test_stale_and_repeated_events_change_nothing():
    rehearsal = Rehearsal(start("retry.yaml"), {"flaky": [{"status": "failed"}]})
    rehearsal.collect()
    rehearsal.step()
    conductor = rehearsal.conductor
    before = conductor.serialize()
    # a redelivered completion of the first attempt, and an unknown status jump
    assert conductor.update_task_state(TaskEvent("flaky", 0, "failed", attempt=0)) is False
    assert conductor.update_task_state(TaskEvent("flaky", 0, "succeeded", seq=0, attempt=0)) is False
    assert conductor.serialize() == before
    with pytest.raises(ValidationError):
        TaskEvent("flaky", 0, "exploded")


def test_st2kv_reads_through_the_injected_lookup():
    wf = {"version": 1.0, "tasks": {"t": {"action": "core.echo", "input": {
        "message": "<% st2kv('system.greeting') %> <% st2kv('name', default => 'nobody') %>"}}}}
    seen = []

    def lookup(name, scope, user, decrypt):
        from st2common.exceptions import NotFoundError
        seen.append((name, scope, user, decrypt))
        if name == "greeting":
            return "hello"
        raise NotFoundError("key", name)

    conductor = WorkflowConductor(wf, context={"st2": {"user": "stanley"}}, kv_lookup=lookup)
    conductor.request_workflow_status("running")
    [task] = conductor.get_next_tasks()
    assert task.actions[0].input == {"message": "hello nobody"}
    assert seen == [("greeting", "system", "stanley", False), ("name", "user", "stanley", False)]


def test_workflow_and_task_status_tables():
    from st2common import statuses
    assert set(statuses.WORKFLOW_TRANSITIONS) == set(statuses.WORKFLOW_STATUSES)
    assert set(statuses.TASK_TRANSITIONS) == set(statuses.TASK_STATUSES)
    for table, known in ((statuses.WORKFLOW_TRANSITIONS, statuses.WORKFLOW_STATUSES),
                         (statuses.TASK_TRANSITIONS, statuses.TASK_STATUSES)):
        for targets in table.values():
            assert targets <= set(known)
    assert statuses.is_transition_valid("workflow_execution", "succeeded", "failed")
    assert not statuses.is_transition_valid("workflow_execution", "failed", "running")
    assert statuses.is_transition_valid("task_execution", "failed", "retrying")
    assert statuses.is_transition_valid("task_execution", "retrying", "requested")
    with pytest.raises(TransitionError):
        statuses.check_transition("workflow_execution", "wf1", "canceled", "running")
