"""Workflow control through the API and both CLIs: pause, resume, cancel and re-run from chosen tasks.

Each test drives a workflow of wf_pack on the in-process platform (action runner and workflow
engine consuming here, the API in a green thread) with PUT /executions/{id}, DELETE and
POST /executions/{id}/re_run, through the project's `st2` and the official st2client 3.9.0.
"""

from __future__ import annotations

import requests

from st2common import statuses
from st2common.models.db.workflow import WorkflowExecutionDB
from st2common.persistence.access import Access
from tests.e2e.st2client_compat import official_st2, run_official  # noqa: F401 (session fixture)
from workflowsupport import api_url, embedded, st2  # noqa: F401 (fixtures)

STEPS = ["step1", "step2", "step3", "step4", "step5"]


def put_status(api_url: str, execution_id, status: str) -> requests.Response:
    return requests.put(f"{api_url}/executions/{execution_id}", json={"status": status})


def rerun_of(platform, old):
    """The execution that now carries the workflow old ran (its re-run)."""
    workflow = Access(WorkflowExecutionDB).get_by_id(old.workflow_execution)
    return platform.executions.get_by_id(workflow.action_execution)


def test_pause_then_resume_a_workflow_through_both_clis(embedded, api_url, official_st2):
    # Given a slow chain whose second step runs
    execution = embedded.request("wf_pack.slow_chain", {"pause": 0.5})
    embedded.wait_for_task(execution, "step2", statuses.RUNNING)
    # When the project's CLI pauses it
    paused = st2(api_url, "execution", "pause", str(execution.pk), "-j")
    # Then the answer shows it pausing, and once that step ends it is paused with nothing more started
    assert paused.exit_code == 0, paused.output
    assert '"status": "pausing"' in paused.output
    embedded.wait_for(execution.pk, statuses.PAUSED)
    assert embedded.task_names(execution) == ["step1", "step2"]
    workflow = Access(WorkflowExecutionDB).get(action_execution=str(execution.pk))
    assert workflow.status == statuses.PAUSED
    # When the official CLI resumes it
    resumed = run_official(["execution", "resume", str(execution.pk), "-j"], api_url)
    # Then it carries on from where it stopped and succeeds, each step once
    assert resumed.returncode == 0, resumed
    assert '"status": "resuming"' in resumed.stdout
    done = embedded.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert embedded.task_names(done) == STEPS
    assert [e["status"] for e in done.log][-5:] == ["pausing", "paused", "resuming", "running", "succeeded"]


def test_pausing_a_workflow_pauses_its_subworkflow_and_resume_runs_both_on(embedded, api_url, official_st2):
    # Given a workflow whose subworkflow's second step runs
    execution = embedded.request("wf_pack.subflow", {"pause": 0.5})
    inner = embedded.wait_for_task(execution, "inner", statuses.RUNNING)
    embedded.wait_for_task(inner, "step2", statuses.RUNNING)
    # When the project's CLI pauses the outer workflow
    paused = st2(api_url, "execution", "pause", str(execution.pk))
    assert paused.exit_code == 0, paused.output
    # Then the subworkflow pauses after its running step, and the outer workflow with it
    assert embedded.wait_for(inner.pk, statuses.PAUSED).status == statuses.PAUSED
    assert embedded.wait_for(execution.pk, statuses.PAUSED).status == statuses.PAUSED
    assert embedded.task_names(inner) == ["step1", "step2"]
    assert embedded.task_names(execution) == ["inner"]
    # When the official CLI resumes the outer workflow
    resumed = run_official(["execution", "resume", str(execution.pk)], api_url)
    assert resumed.returncode == 0, resumed
    # Then both carry on: the subworkflow's remaining steps, then the outer workflow's next task
    done = embedded.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert embedded.task_names(done) == ["inner", "after"]
    assert embedded.task_names(inner) == STEPS
    assert embedded.executions.get_by_id(inner.pk).status == statuses.SUCCEEDED


def test_resuming_a_paused_subworkflow_resumes_the_workflow_above_it(embedded, api_url):
    # Given a workflow whose subworkflow was paused on its own, through the API
    execution = embedded.request("wf_pack.subflow", {"pause": 0.2})
    inner = embedded.wait_for_task(execution, "inner", statuses.RUNNING)
    embedded.wait_for_task(inner, "step1", statuses.RUNNING)
    response = put_status(api_url, inner.pk, statuses.PAUSING)
    assert response.status_code == 200 and response.json()["status"] == statuses.PAUSING
    # Then the outer workflow, whose only task waits, is paused too
    embedded.wait_for(inner.pk, statuses.PAUSED)
    assert embedded.wait_for(execution.pk, statuses.PAUSED).status == statuses.PAUSED
    # When the subworkflow is resumed
    response = put_status(api_url, inner.pk, statuses.RESUMING)
    assert response.status_code == 200 and response.json()["status"] == statuses.RESUMING
    # Then the outer workflow resumes with it, and both succeed
    done = embedded.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert embedded.task_names(done) == ["inner", "after"]
    assert embedded.task_names(inner) == STEPS


def test_cancel_cascades_to_the_subworkflow_and_the_delayed_task(embedded, api_url):
    # Given a workflow with a subworkflow running in one branch and a task delayed a minute in the other
    execution = embedded.request("wf_pack.delayed_branch", {"pause": 0.5})
    inner = embedded.wait_for_task(execution, "inner", statuses.RUNNING)
    step = embedded.wait_for_task(inner, "step2", statuses.RUNNING)
    later = embedded.wait_for_task(execution, "later", statuses.DELAYED)
    # When the workflow is canceled through the API
    response = put_status(api_url, execution.pk, statuses.CANCELING)
    # Then it is canceling until the subworkflow's running step ends
    assert response.status_code == 200 and response.json()["status"] == statuses.CANCELING
    done = embedded.wait_for(execution.pk, statuses.COMPLETED)
    assert [e["status"] for e in done.log][-2:] == [statuses.CANCELING, statuses.CANCELED]
    # And then everything is canceled: the subworkflow after its running step, the delayed task before it ran
    assert embedded.executions.get_by_id(inner.pk).status == statuses.CANCELED
    assert embedded.executions.get_by_id(later.pk).status == statuses.CANCELED
    assert embedded.executions.get_by_id(step.pk).status == statuses.SUCCEEDED
    assert embedded.task_names(inner) == ["step1", "step2"]


def test_official_cli_cancels_a_paused_workflow(embedded, api_url, official_st2):
    # Given a paused workflow
    execution = embedded.request("wf_pack.slow_chain", {"pause": 0.1})
    embedded.wait_for_task(execution, "step1", statuses.RUNNING)
    assert put_status(api_url, execution.pk, statuses.PAUSING).status_code == 200
    embedded.wait_for(execution.pk, statuses.PAUSED)
    # When the official CLI cancels it
    canceled = run_official(["execution", "cancel", str(execution.pk)], api_url)
    # Then it says so, and the workflow is canceled: nothing was running, nothing more starts
    assert canceled.returncode == 0 and f"action execution with id {execution.pk} canceled." in canceled.stdout, \
        canceled
    done = embedded.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.CANCELED
    assert [e["status"] for e in done.log][-2:] == [statuses.CANCELING, statuses.CANCELED]
    assert embedded.task_names(execution) == ["step1"]


def test_control_errors_are_stackstorms(embedded, api_url, official_st2):
    # Given a plain action running, a workflow running and a finished execution
    plain = embedded.request("core.local", {"cmd": "sleep 2"})
    embedded.wait_for(plain.pk, statuses.RUNNING)
    flow = embedded.request("wf_pack.slow_chain", {"pause": 0.3})
    embedded.wait_for_task(flow, "step1", statuses.RUNNING)
    finished = embedded.run("core.noop")
    # When each is asked to pause or resume
    not_workflow = put_status(api_url, plain.pk, statuses.PAUSING)
    not_paused = put_status(api_url, flow.pk, statuses.RESUMING)
    completed = put_status(api_url, finished.pk, statuses.PAUSING)
    bad_status = put_status(api_url, flow.pk, "sleeping")
    official = run_official(["execution", "pause", str(finished.pk)], api_url)
    # Then a plain action cannot pause, resuming a running workflow changes nothing, a finished one refuses
    assert not_workflow.status_code == 400
    assert not_workflow.json()["faultstring"] == (
        f'Failed updating execution. Unable to pause liveaction "{plain.pk}" because it is not supported by '
        f'the "local-shell-cmd" runner.')
    assert not_paused.status_code == 200 and not_paused.json()["status"] == statuses.RUNNING
    assert completed.status_code == 400
    assert completed.json()["faultstring"] == "Execution is already in completed state."
    assert bad_status.status_code == 400 and "sleeping" in bad_status.json()["faultstring"]
    # And the official CLI reports the refusal and exits 1
    assert official.returncode == 1 and "Execution is already in completed state." in official.stdout, official
    # And the plain action still finishes, the workflow still runs to the end
    assert embedded.wait_for(plain.pk, statuses.COMPLETED).status == statuses.SUCCEEDED
    assert embedded.wait_for(flow.pk, statuses.COMPLETED, timeout=30).status == statuses.SUCCEEDED


def test_rerun_from_the_failed_task_through_both_clis(embedded, api_url, official_st2, tmp_path):
    # Given two runs of a workflow that failed because a file was missing
    flag = tmp_path / "flag"
    first = embedded.run("wf_pack.failing", {"cmd": f"test -f {flag}"})
    second = embedded.run("wf_pack.failing", {"cmd": f"test -f {flag}"})
    assert first.status == second.status == statuses.FAILED
    # When the file exists and each is re-run from its failed task, one with each CLI
    flag.write_text("")
    ours = st2(api_url, "execution", "re-run", str(first.pk), "--tasks", "task1", "-j")
    theirs = run_official(["execution", "re-run", str(second.pk), "--tasks", "task1", "-j"], api_url)
    # Then both waited for the new execution and it succeeded, past the failed task
    assert ours.exit_code == 0, ours.output
    assert theirs.returncode == 0, theirs
    for old in (first, second):
        rerun = rerun_of(embedded, old)
        assert rerun.pk != old.pk and rerun.context["re-run"] == {"ref": str(old.pk), "tasks": ["task1"],
                                                                  "reset": ["task1"]}
        assert rerun.status == statuses.SUCCEEDED, rerun.result
        assert rerun.result["output"]["after"] == "yes"
        assert embedded.task_names(rerun) == ["task1", "task2"]


def test_rerun_of_items_resets_them_unless_told_not_to(embedded, api_url, tmp_path):
    # Given two runs over items a, b, c that failed because file b was missing
    (tmp_path / "a").write_text("")
    (tmp_path / "c").write_text("")
    first = embedded.run("wf_pack.items_files", {"folder": str(tmp_path)})
    second = embedded.run("wf_pack.items_files", {"folder": str(tmp_path)})
    assert first.status == second.status == statuses.FAILED
    # When file b exists and both are re-run from the items task, the second with --no-reset
    (tmp_path / "b").write_text("")
    reset = st2(api_url, "execution", "re-run", str(first.pk), "--tasks", "check", "-j")
    kept = st2(api_url, "execution", "re-run", str(second.pk), "--tasks", "check", "--no-reset", "check", "-j")
    assert reset.exit_code == 0 and kept.exit_code == 0, reset.output + kept.output
    # Then both succeed with every item's result, in item order
    reruns = [rerun_of(embedded, old) for old in (first, second)]
    for rerun in reruns:
        assert rerun.status == statuses.SUCCEEDED, rerun.result
        assert rerun.result["output"]["found"] == ["a", "b", "c"]
    # And the reset re-ran all three items, while --no-reset re-ran only the one that failed
    items = [sorted(c.context["orquesta"]["item_id"] for c in embedded.children(r)
                    if c.context["orquesta"]["task_name"] == "check") for r in reruns]
    assert items == [[0, 1, 2], [1]]
