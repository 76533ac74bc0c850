"""Orquesta workflows end to end: the orquesta runner, the workflow engine's consumers and the
action runner, all consuming in this process, on both buses and the embedded database.

A workflow action is requested like any other; its runner inspects it and hands it to the
engine, which requests one child execution per task (or item) and moves on as each child
completes, until the workflow's own execution ends with {output, errors}.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import requests

from st2common import statuses
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.workflow import TaskExecutionDB, WorkflowExecutionDB
from st2common.persistence.access import Access
from st2common.services import executions, workflows
from st2common.services.workflows import WorkflowService
from st2common.transport.connection import make_connection
from tests.e2e.st2client_compat import official_st2, run_official  # noqa: F401 (session fixture)
from workflowsupport import (FIXTURE_PACK, Platform, api_url, embedded, platform,  # noqa: F401 (fixtures)
                             st2, start_platform)


def test_sequential_workflow_publishes_through_its_tasks(platform):
    # When a three-task workflow runs
    execution = platform.run("wf_pack.sequential", {"who": "world"})
    # Then it succeeded with the output rendered from what each task published
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert execution.result == {"output": {
        "first": "hello, world", "second": "HELLO, WORLD", "count": 3, "user": executions.SYSTEM_USER,
        "execution": str(execution.pk)}}
    # And each task ran once, as a child execution of the workflow, in order
    children = platform.children(execution)
    assert [c.context["orquesta"]["task_name"] for c in children] == ["task1", "task2", "task3"]
    assert [c.action_ref for c in children] == ["core.echo", "core.echo", "core.noop"]
    assert all(c.status == statuses.SUCCEEDED for c in children)
    assert execution.children == [str(c.pk) for c in children]


def test_children_carry_the_orquesta_and_parent_context(embedded):
    # When a workflow runs
    execution = embedded.run("wf_pack.sequential", {"who": "ctx"})
    workflow = Access(WorkflowExecutionDB).get(action_execution=str(execution.pk))
    # Then the workflow execution is recorded, and the execution points at it
    assert workflow.status == statuses.SUCCEEDED and workflow.output == execution.result["output"]
    assert execution.context["workflow_execution"] == str(workflow.pk)
    assert workflow.context["st2"]["workflow_execution_id"] == str(workflow.pk)
    assert workflow.context["st2"]["api_url"] == "http://127.0.0.1:9101/v1"
    # And each child says which workflow, task execution and task it belongs to, as StackStorm's do
    tasks = {str(t.pk): t for t in Access(TaskExecutionDB).query({"workflow_execution": str(workflow.pk)})}
    for child in embedded.children(execution):
        orquesta = child.context["orquesta"]
        task = tasks[orquesta["task_execution_id"]]
        assert orquesta == {"workflow_execution_id": str(workflow.pk), "task_execution_id": str(task.pk),
                            "task_name": task.task_name, "task_id": task.task_id, "task_route": 0}
        assert child.context["parent"]["execution_id"] == str(execution.pk)
        assert child.context["parent"]["user"] == executions.SYSTEM_USER
        assert child.context["pack"] == "wf_pack" and child.parent == str(execution.pk)
        assert task.status == statuses.SUCCEEDED and task.result == child.result
    assert sorted(t.task_name for t in tasks.values()) == ["task1", "task2", "task3"]


def test_parallel_branches_join(embedded):
    # When a workflow splits into three branches and joins two of them
    execution = embedded.run("wf_pack.parallel")
    # Then the join ran once, after both its branches, and the output has every branch's data
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert execution.result == {"output": {"total": 3, "c": 3}}
    children = embedded.children(execution)
    names = Counter(c.context["orquesta"]["task_name"] for c in children)
    assert names == Counter(["parallel1", "parallel2", "parallel3", "intermediate", "barrier"])
    by_name = {c.context["orquesta"]["task_name"]: c for c in children}
    assert by_name["barrier"].start_timestamp >= max(by_name["parallel1"].end_timestamp,
                                                     by_name["intermediate"].end_timestamp)


def test_failing_task_fails_the_workflow_with_errors_and_output(embedded):
    # When a task fails and nothing remediates it
    execution = embedded.run("wf_pack.failing")
    # Then the workflow failed, with StackStorm's error for the task and the output still rendered
    assert execution.status == statuses.FAILED
    errors = execution.result["errors"]
    assert [(e["type"], e["message"], e["task_id"], e["route"]) for e in errors] == [
        ("error", "Execution failed. See result for details.", "task1", 0)]
    assert errors[0]["result"]["return_code"] == 3 and errors[0]["result"]["stderr"] == "oops"
    assert execution.result["output"] == {"stderr": "oops", "after": None}
    # And nothing ran after the failed task
    assert [c.context["orquesta"]["task_name"] for c in embedded.children(execution)] == ["task1"]


def test_with_items_runs_one_child_per_item_within_the_concurrency(platform):
    # When a task runs over three items, two at a time
    execution = platform.run("wf_pack.items", {"members": ["ann", "bob", "cid"]})
    # Then each item ran once, as its own child, and the results come back in item order
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert execution.result == {"output": {"replies": ["hi ann", "hi bob", "hi cid"]}}
    children = platform.children(execution)
    assert sorted(c.context["orquesta"]["item_id"] for c in children) == [0, 1, 2]
    assert {c.context["orquesta"]["item_id"]: c.parameters["message"] for c in children} == {
        0: "hi ann", 1: "hi bob", 2: "hi cid"}
    # And never more than two ran at the same time
    spans = [(c.start_timestamp, c.end_timestamp) for c in children]
    assert max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans) <= 2


def test_two_engines_share_one_workflow_and_run_each_item_once(platform):
    # Given a second workflow engine consuming beside the first (each keeps its own conductors in memory)
    platform.start_engine()
    # When a task runs over 20 items, 10 at a time, and a 22-task fan-out runs beside it
    items = platform.request("wf_pack.items100", {"count": 20})
    fanout = platform.request("wf_pack.fanout20")
    done = [platform.wait_for(e.pk, statuses.COMPLETED, timeout=60) for e in (items, fanout)]
    # Then both succeeded, every item and every branch having run exactly once
    assert [d.status for d in done] == [statuses.SUCCEEDED] * 2, [d.result for d in done]
    item_ids = [c.context["orquesta"]["item_id"] for c in platform.children(done[0])]
    assert sorted(item_ids) == list(range(20))
    tasks = Counter(platform.task_names(done[1]))
    assert len(tasks) == 22 and set(tasks.values()) == {1}
    assert done[1].result == {"output": {"branch20": "done"}}


def test_ten_task_chain(platform, capsys):
    # When ten core.noop tasks run in a row (once to warm up, then timed)
    platform.run("wf_pack.chain10")
    started = time.monotonic()
    execution = platform.run("wf_pack.chain10")
    elapsed = time.monotonic() - started
    # Then every task ran once, in order, and the output is the last one's
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert execution.result == {"output": {"last": 10}}
    assert [c.context["orquesta"]["task_name"] for c in platform.children(execution)] == [
        f"task{i}" for i in range(1, 11)]
    with capsys.disabled():
        print(f"\n10-task chain on {platform.settings.messaging.url.split(':')[0]}: {elapsed * 1000:.0f} ms")


def test_invalid_workflow_fails_at_once_with_every_error(embedded):
    # When a workflow that fails inspection is run
    execution = embedded.run("wf_pack.invalid")
    # Then it failed with every problem listed, and nothing was scheduled
    assert execution.status == statuses.FAILED
    assert execution.result["output"] is None
    found = {(e["type"], e["spec_path"]) for e in execution.result["errors"]}
    assert found == {("content", "tasks.task1.action"), ("semantics", "tasks.task1.next[0].do"),
                     ("context", "tasks.task2.action")}
    assert embedded.children(execution) == []
    assert Access(WorkflowExecutionDB).get(action_execution=str(execution.pk)) is None


def test_subworkflow_result_reaches_the_parent(embedded):
    # When a workflow runs another workflow as a task
    execution = embedded.run("wf_pack.nested")
    # Then the inner workflow is a child whose own tasks are its children, and its output flows up
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert execution.result == {"output": {"inner_first": "hello, nested"}}
    [inner] = embedded.children(execution)
    assert inner.action_ref == "wf_pack.sequential" and inner.status == statuses.SUCCEEDED
    assert inner.context["orquesta"]["task_name"] == "inner"
    assert len(embedded.children(inner)) == 3


def test_cancel_lets_the_running_task_finish_and_starts_nothing_more(platform):
    # Given a slow chain whose second step runs
    execution = platform.request("wf_pack.slow_chain", {"pause": 0.3})
    step = wait_for_task(platform, execution, "step2", statuses.RUNNING)
    # When the workflow is canceled
    executions.cancel(platform.publisher, str(execution.pk))
    # Then it is canceling until that step ends, then canceled, and no later step started
    assert platform.executions.get_by_id(execution.pk).status == statuses.CANCELING
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.CANCELED
    assert platform.executions.get_by_id(step.pk).status == statuses.SUCCEEDED
    assert [c.context["orquesta"]["task_name"] for c in platform.children(done)] == ["step1", "step2"]


def wait_for_task(platform, execution, task_name: str, status: str) -> ExecutionDB:
    return platform.wait_for_task(execution, task_name, status)


def test_engine_restart_mid_workflow_runs_each_task_once(platform):
    # Given a slow chain whose second step runs
    execution = platform.request("wf_pack.slow_chain", {"pause": 0.3})
    step = wait_for_task(platform, execution, "step2", statuses.RUNNING)
    # When the engine stops, the step completes while no engine listens, and a new engine starts
    platform.engines.pop().stop()
    platform.wait_for(step.pk, statuses.COMPLETED)
    assert platform.executions.get_by_id(execution.pk).status == statuses.RUNNING
    platform.start_engine()
    # Then the workflow completes, every step having run exactly once
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    names = [c.context["orquesta"]["task_name"] for c in platform.children(done)]
    assert names == ["step1", "step2", "step3", "step4", "step5"]


def purge_updates(platform) -> None:
    """Drop the queued execution updates, as the embedded bus loses what a killed consumer held."""
    with make_connection(platform.settings.messaging) as conn:
        platform.publisher.topology.work_queue("workflow.action.update")(conn.channel()).purge()


def stop_engine_after_task(platform, execution, task_name: str) -> ExecutionDB:
    """Stop the engine while task_name runs; return its child once it completed with no engine listening."""
    step = wait_for_task(platform, execution, task_name, statuses.RUNNING)
    platform.engines.pop().stop()
    return platform.wait_for(step.pk, statuses.COMPLETED)


def test_sweep_applies_child_updates_the_bus_lost(platform):
    # Given a workflow whose engine stopped while a step ran, and the step's update lost
    execution = platform.request("wf_pack.slow_chain", {"pause": 0.2})
    stop_engine_after_task(platform, execution, "step2")
    purge_updates(platform)
    # When a new engine starts (sweeping often, so the test need not wait)
    platform.start_engine(sweep_interval=0.1, idle_after=1.0, startup_idle_after=0.05)
    # Then its sweep catches the workflow up and it completes, each step once
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    names = [c.context["orquesta"]["task_name"] for c in platform.children(done)]
    assert names == ["step1", "step2", "step3", "step4", "step5"]


def test_sweep_requests_children_a_crash_kept_from_being_requested(platform):
    # Given an engine that stored the next step as requested, then died before requesting it
    execution = platform.request("wf_pack.slow_chain", {"pause": 0.2})
    step = stop_engine_after_task(platform, execution, "step2")
    purge_updates(platform)
    crashed = WorkflowService(platform.settings, platform.publisher)
    orquesta = step.context["orquesta"]
    task = crashed.task(orquesta["task_execution_id"], orquesta["workflow_execution_id"])
    event = crashed.event(step, task)
    outcome = crashed.mutate(task.workflow_execution, lambda _w, conductor: conductor.update_task_state(event),
                             before_write=crashed.recording([(task, step)]))
    assert [t.task_id for t in outcome.next_tasks] == ["step3"]
    assert [c.context["orquesta"]["task_name"] for c in platform.children(execution)] == ["step1", "step2"]
    # When a new engine starts
    platform.start_engine(sweep_interval=0.1, idle_after=1.0, startup_idle_after=0.05)
    # Then the lost step is requested once and the workflow completes
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    names = [c.context["orquesta"]["task_name"] for c in platform.children(done)]
    assert names == ["step1", "step2", "step3", "step4", "step5"]

def test_inspect_endpoint_and_cli(api_url, tmp_path):
    invalid = (FIXTURE_PACK / "actions" / "workflows" / "invalid.yaml").read_text()
    valid = (FIXTURE_PACK / "actions" / "workflows" / "sequential.yaml").read_text()
    # When a definition that fails inspection is posted as text, as StackStorm's client does
    response = requests.post(f"{api_url}/workflows/inspect", data=invalid, headers={"Content-Type": "text/plain"})
    # Then the answer is 200 with every problem, in StackStorm's shape
    assert response.status_code == 200
    errors = response.json()
    assert {(e["type"], e["spec_path"]) for e in errors} == {
        ("content", "tasks.task1.action"), ("semantics", "tasks.task1.next[0].do"), ("context", "tasks.task2.action")}
    assert all({"type", "message", "spec_path", "schema_path"} <= set(e) for e in errors)
    context = next(e for e in errors if e["type"] == "context")
    assert context["language"] == "yaql" and "undefined_var" in context["message"]
    # And a valid definition gets an empty list
    assert requests.post(f"{api_url}/workflows/inspect", data=valid,
                         headers={"Content-Type": "text/plain"}).json() == []
    # When the CLI inspects a file or a registered action
    path = tmp_path / "invalid.yaml"
    path.write_text(invalid)
    bad = st2(api_url, "workflow", "inspect", "--file", str(path))
    good = st2(api_url, "workflow", "inspect", "--action", "wf_pack.sequential")
    # Then it prints the errors, or says there are none (exit 0 either way, as StackStorm's CLI)
    assert bad.exit_code == 0 and "not registered in the database" in bad.output and "task9" in bad.output
    assert good.exit_code == 0 and "No errors found in workflow definition." in good.output
    as_json = st2(api_url, "workflow", "inspect", "--file", str(path), "-j")
    assert as_json.exit_code == 0 and len(json.loads(as_json.output)) == 3


def test_execution_list_shows_children_under_their_parent(embedded, api_url):
    # Given a finished workflow
    execution = embedded.run("wf_pack.sequential", {"who": "list"})
    # When the children of the workflow are listed through the API and the CLI
    children = requests.get(f"{api_url}/executions", params={"parent": str(execution.pk)}).json()
    listed = st2(api_url, "execution", "list", "--parent", str(execution.pk), "-j")
    top = st2(api_url, "execution", "list", "-j")
    tree = requests.get(f"{api_url}/executions/{execution.pk}/children").json()
    # Then they are the three task executions; the plain listing shows only the workflow
    expected = {str(c.pk) for c in embedded.children(execution)}
    assert len(expected) == 3
    assert {c["id"] for c in children} == expected
    assert all(c["context"]["orquesta"]["workflow_execution_id"] for c in children)
    assert {c["id"] for c in json.loads(listed.output)} == expected
    assert [e["id"] for e in json.loads(top.output)] == [str(execution.pk)]
    assert {c["id"] for c in tree} == expected


def test_pause_waits_for_the_running_task_then_resume_carries_on(platform):
    # Given a slow chain whose second step runs
    execution = platform.request("wf_pack.slow_chain", {"pause": 0.3})
    wait_for_task(platform, execution, "step2", statuses.RUNNING)
    # When its execution is asked to pause (what PUT /executions/{id} {status: pausing} does)
    workflows.pause(platform.publisher, str(execution.pk))
    # Then it is paused once that step ends, and no later step starts
    paused = platform.wait_for(execution.pk, statuses.PAUSED)
    assert [c.context["orquesta"]["task_name"] for c in platform.children(paused)] == ["step1", "step2"]
    assert Access(WorkflowExecutionDB).get(action_execution=str(execution.pk)).status == statuses.PAUSED
    # When it is resumed
    workflows.resume(platform.publisher, str(paused.pk))
    # Then it runs the remaining steps and succeeds
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert [c.context["orquesta"]["task_name"] for c in platform.children(done)] == [
        "step1", "step2", "step3", "step4", "step5"]
    assert [e["status"] for e in done.log][-5:] == ["pausing", "paused", "resuming", "running", "succeeded"]


def test_rerun_from_the_failed_task_continues_the_same_workflow(embedded, tmp_path):
    # Given a workflow that failed because a file was missing
    flag = tmp_path / "flag"
    failed = embedded.run("wf_pack.failing", {"cmd": f"test -f {flag}"})
    assert failed.status == statuses.FAILED
    workflow = Access(WorkflowExecutionDB).get(action_execution=str(failed.pk))
    # When the file exists and the workflow is re-run from the failed task
    flag.write_text("")
    rerun = executions.re_run(embedded.publisher, str(failed.pk), tasks=["task1"])
    done = embedded.wait_for(rerun.pk, statuses.COMPLETED)
    # Then the same workflow execution carries on under the new execution, past the failed task
    assert done.status == statuses.SUCCEEDED, done.result
    assert done.result["output"]["after"] == "yes" and "errors" not in done.result
    assert [c.context["orquesta"]["task_name"] for c in embedded.children(done)] == ["task1", "task2"]
    again = Access(WorkflowExecutionDB).get_by_id(workflow.pk)
    assert again.action_execution == str(done.pk) and again.status == statuses.SUCCEEDED


def test_official_st2client_inspects_a_workflow(embedded, api_url, official_st2, tmp_path):
    # Given the official StackStorm CLI 3.9.0 and a workflow file with problems
    path = tmp_path / "invalid.yaml"
    path.write_text((FIXTURE_PACK / "actions" / "workflows" / "invalid.yaml").read_text())
    good_path = tmp_path / "sequential.yaml"
    good_path.write_text((FIXTURE_PACK / "actions" / "workflows" / "sequential.yaml").read_text())
    # When it inspects them
    bad = run_official(["workflow", "inspect", "--file", str(path)], api_url)
    good = run_official(["workflow", "inspect", "--file", str(good_path)], api_url)
    # Then it lists the errors of the first, and reports none for the second
    assert bad.returncode == 0 and "not registered in the database" in bad.stdout and "task9" in bad.stdout, bad
    assert good.returncode == 0 and "No errors found in workflow definition." in good.stdout, good
