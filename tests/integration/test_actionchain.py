"""ActionChains end to end: the action-chain runner, the workflow engine's consumers and the action
runner, all consuming in this process, on the embedded database and both buses.

A chain action is requested like any other; its runner checks the definition and hands the chain
to the engine, which requests one child execution per node and moves on as each child completes,
until the chain's own execution ends with StackStorm's {tasks, published} result.
"""

from __future__ import annotations

import datetime
import json
import time

import pytest
import requests

from st2common import statuses
from st2common.models.db.actionchain import ActionChainExecutionDB
from st2common.models.db.execution import ExecutionDB
from st2common.persistence.access import Access
from st2common.services import executions, workflows
from st2common.services.keyvalues import Datastore
from st2common.transport.connection import make_connection
from st2workflowengine.actionchain import Child
from st2workflowengine.actionchain.service import ChainService
from tests.e2e.st2client_compat import official_st2, run_official  # noqa: F401 (session fixture)
from workflowsupport import DEADLINE, REPO, Platform, serve_api, st2, start_platform

CHAIN_PACK = REPO / "tests" / "fixtures" / "packs" / "chain_pack"


@pytest.fixture
def chains(bus_settings, tmp_path, embedded_mongo):
    """The platform on each bus in turn."""
    yield from start_platform(bus_settings.messaging.url, tmp_path, embedded_mongo, CHAIN_PACK)


@pytest.fixture
def embedded(tmp_path, embedded_mongo):
    """The platform on the embedded filesystem bus only."""
    yield from start_platform("filesystem://", tmp_path, embedded_mongo, CHAIN_PACK)


@pytest.fixture
def api_url(embedded):
    """The API of the embedded platform on a free port, served in a green thread."""
    yield from serve_api(embedded)


def nodes(platform: Platform, execution: ExecutionDB) -> list[str]:
    return [c.context["chain"]["name"] for c in platform.children(execution)]


def wait_for_node(platform: Platform, execution: ExecutionDB, name: str, status: str) -> ExecutionDB:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for child in platform.children(execution):
            if child.context["chain"]["name"] == name and child.status == status:
                return child
        time.sleep(0.01)
    raise AssertionError(f"node {name} of {execution.pk} never got {status}")


def test_a_chain_starts_and_runs_from_events_not_from_the_engines_sweep(chains):
    # Given a workflow engine whose periodic sweep would not come for an hour
    for engine in chains.engines:
        engine.stop()
    chains.engines.clear()
    chains.start_engine(sweep_interval=3600)
    # When a chain runs, it starts from its own execution's update and moves on from its children's
    execution = chains.run("chain_pack.straight", {"who": "ann"})
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert nodes(chains, execution) == ["greet", "shout", "finish"]


def test_straight_chain_publishes_through_its_nodes(chains):
    # When a three-node chain runs
    execution = chains.run("chain_pack.straight", {"who": "ann"})
    # Then it succeeded with StackStorm's result: one task entry per node and the published values
    assert execution.status == statuses.SUCCEEDED, execution.result
    result = execution.result
    assert [(t["name"], t["state"]) for t in result["tasks"]] == [
        ("greet", "succeeded"), ("shout", "succeeded"), ("finish", "succeeded")]
    assert result["published"] == {"greeting": "hello, ann", "count": "1",
                                   "shouted": f"HELLO, ANN (1) for {executions.SYSTEM_USER}"}
    # And each node ran once, as a child carrying the chain's context as StackStorm's children do
    children = chains.children(execution)
    assert nodes(chains, execution) == ["greet", "shout", "finish"]
    assert execution.children == [str(c.pk) for c in children]
    for child, task in zip(children, result["tasks"]):
        assert task["execution_id"] == str(child.pk) and task["result"] == child.result
        assert child.parent == str(execution.pk)
        assert child.context["parent"]["execution_id"] == str(execution.pk)
        assert child.context["parent"]["user"] == executions.SYSTEM_USER
        assert child.context["chain"]["ref"] == child.action_ref
    # And a node's own notify is put on its child
    assert children[1].notify["on-complete"]["routes"] == ["chatops"]


def test_on_failure_node_handles_a_failure_and_the_chain_succeeds(chains):
    # When a node fails and its on-failure node runs
    execution = chains.run("chain_pack.on_failure")
    # Then the chain succeeded (the last node's status), the failed node's result is kept,
    # and the handler saw what the failed node published and returned
    assert execution.status == statuses.SUCCEEDED, execution.result
    tasks = execution.result["tasks"]
    assert [(t["name"], t["state"]) for t in tasks] == [("break", "failed"), ("repair", "succeeded")]
    assert tasks[0]["result"]["return_code"] == 3
    assert tasks[1]["result"]["stdout"] == "repaired after 3: broken"
    assert execution.result["published"] == {"code": "3"}
    assert nodes(chains, execution) == ["break", "repair"]


def test_a_failure_with_no_on_failure_fails_the_chain(embedded):
    execution = embedded.run("chain_pack.failing")
    assert execution.status == statuses.FAILED
    assert [(t["name"], t["state"]) for t in execution.result["tasks"]] == [("fine", "succeeded"), ("boom", "failed")]
    assert "error" not in execution.result
    assert nodes(embedded, execution) == ["fine", "boom"]


def test_vars_render_from_parameters_and_the_datastore(embedded):
    # Given a datastore item the chain's vars read
    Datastore(embedded.settings).set("chain_suffix", "prod")
    # When the chain runs
    execution = embedded.run("chain_pack.vars", {"name": "web"})
    # Then the nodes saw the vars, and a publish overrode one for the nodes after it
    assert execution.status == statuses.SUCCEEDED, execution.result
    stdout = [t["result"]["stdout"] for t in execution.result["tasks"]]
    assert stdout == ["web-prod x4 fixed=7 tags=web,static", "now WEB-PROD"]


def test_a_chain_runs_an_orquesta_workflow_and_another_chain_as_nodes(embedded):
    execution = embedded.run("chain_pack.nested")
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert execution.result["published"] == {"from_workflow": "hi orquesta",
                                             "from_chain": "HELLO, HI ORQUESTA (1) for stanley"}
    workflow, subchain = embedded.children(execution)
    assert workflow.result["output"] == {"greeting": "hi orquesta"}
    assert [c.context["orquesta"]["task_name"] for c in embedded.children(workflow)] == ["greet"]
    assert nodes(embedded, subchain) == ["greet", "shout", "finish"]
    # The inner chain's children point at the inner chain, whose context points at the outer one
    assert subchain.context["parent"]["execution_id"] == str(execution.pk)


def test_an_orquesta_workflow_runs_a_chain_as_a_task(embedded):
    execution = embedded.run("chain_pack.wf_runs_chain")
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert execution.result["output"] == {"shouted": "HELLO, WORKFLOW (1) for stanley"}
    (chain,) = embedded.children(execution)
    assert chain.context["orquesta"]["task_name"] == "chain" and nodes(embedded, chain) == ["greet", "shout", "finish"]


def test_a_question_pauses_the_chain_and_the_answer_carries_it_on(embedded, api_url):
    # Given a chain whose first node asks a question
    execution = embedded.request("chain_pack.ask_chain")
    question = wait_for_node(embedded, execution, "ask", statuses.PENDING)
    # Then the chain pauses while the question waits
    paused = embedded.wait_for(execution.pk, statuses.PAUSED)
    assert paused.result["tasks"] == []
    # When the question is answered through the API
    answered = requests.put(f"{api_url}/inquiries/{question.pk}",
                            json={"id": str(question.pk), "response": {"color": "blue"}})
    assert answered.status_code == 200, answered.text
    # Then the chain carries on with the answer and succeeds
    done = embedded.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert done.result["published"] == {"color": "blue"}
    assert done.result["tasks"][-1]["result"]["stdout"] == "the answer was blue"


def test_an_unknown_action_fails_the_chain_with_a_top_level_error(embedded):
    execution = embedded.run("chain_pack.bad_ref")
    assert execution.status == statuses.FAILED
    assert execution.result["error"] == (
        'Failed to run task "missing". Action with reference "chain_pack.no_such_action" doesn\'t exist')
    assert [t["name"] for t in execution.result["tasks"]] == ["first"]


def test_a_node_refused_by_its_action_fails_and_its_on_failure_runs(embedded):
    execution = embedded.run("chain_pack.bad_param")
    assert execution.status == statuses.SUCCEEDED, execution.result
    refused, cleanup = execution.result["tasks"]
    assert refused["state"] == statuses.FAILED and refused["execution_id"] is None
    assert "not_a_parameter" in refused["result"]["error"]
    assert nodes(embedded, execution) == ["cleanup"]


def test_an_invalid_definition_fails_at_once_and_runs_nothing(embedded):
    execution = embedded.run("chain_pack.invalid")
    assert execution.status == statuses.FAILED
    error = execution.result["error"]
    assert "chain.0" in error and "retries" in error
    assert embedded.children(execution) == []


def test_pause_at_a_node_boundary_then_resume(chains):
    # Given a slow chain whose second node runs
    execution = chains.request("chain_pack.slow", {"pause": 0.3})
    wait_for_node(chains, execution, "step2", statuses.RUNNING)
    # When it is asked to pause (what PUT /executions/{id} {status: pausing} does)
    workflows.pause(chains.publisher, str(execution.pk))
    # Then it is paused once that node ends, with no later node started, and its result so far
    paused = chains.wait_for(execution.pk, statuses.PAUSED)
    assert nodes(chains, paused) == ["step1", "step2"]
    assert [t["name"] for t in paused.result["tasks"]] == ["step1", "step2"]
    # When it is resumed
    workflows.resume(chains.publisher, str(execution.pk))
    # Then the remaining nodes run and it succeeds, each node once
    done = chains.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert nodes(chains, done) == ["step1", "step2", "step3", "step4"]
    assert [e["status"] for e in done.log][-5:] == ["pausing", "paused", "resuming", "running", "succeeded"]


def test_cancel_lets_the_running_node_finish_and_starts_nothing_more(chains):
    execution = chains.request("chain_pack.slow", {"pause": 0.3})
    step = wait_for_node(chains, execution, "step2", statuses.RUNNING)
    executions.cancel(chains.publisher, str(execution.pk))
    assert chains.executions.get_by_id(execution.pk).status == statuses.CANCELING
    done = chains.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.CANCELED
    assert chains.executions.get_by_id(step.pk).status == statuses.SUCCEEDED
    assert nodes(chains, done) == ["step1", "step2"]
    assert [t["name"] for t in done.result["tasks"]] == ["step1", "step2"]


def test_pausing_a_chain_pauses_its_workflow_node_and_resume_runs_both_on(embedded):
    # Given a chain whose first node is a workflow, in its second task
    execution = embedded.request("chain_pack.slow_outer", {"pause": 0.3})
    inner = wait_for_node(embedded, execution, "inner", statuses.RUNNING)
    embedded.wait_for_task(inner, "two", statuses.RUNNING)
    # When the chain is paused, the workflow is asked to pause too, and both end paused
    workflows.pause(embedded.publisher, str(execution.pk))
    embedded.wait_for(inner.pk, statuses.PAUSED)
    embedded.wait_for(execution.pk, statuses.PAUSED)
    # When the chain is resumed, the workflow resumes and then the chain's last node runs
    workflows.resume(embedded.publisher, str(execution.pk))
    done = embedded.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert nodes(embedded, done) == ["inner", "last"]
    assert embedded.task_names(embedded.executions.get_by_id(inner.pk)) == ["one", "two", "three"]


def test_engine_restart_mid_chain_runs_each_node_once(chains):
    # Given a slow chain whose second node runs while the engine stops
    execution = chains.request("chain_pack.slow", {"pause": 0.3})
    step = wait_for_node(chains, execution, "step2", statuses.RUNNING)
    chains.engines.pop().stop()
    chains.wait_for(step.pk, statuses.COMPLETED)
    # When a new engine starts
    chains.start_engine()
    # Then the chain completes, every node having run exactly once
    done = chains.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert nodes(chains, done) == ["step1", "step2", "step3", "step4"]


def decided_not_requested(platform: Platform):
    """A slow chain whose engine stopped while step2 ran, then step3 decided and stored, not requested.

    Returns the chain's execution, the ChainService that wrote the decision, and its outcome.
    """
    execution = platform.request("chain_pack.slow", {"pause": 0.2})
    step = wait_for_node(platform, execution, "step2", statuses.RUNNING)
    platform.engines.pop().stop()
    step = platform.wait_for(step.pk, statuses.COMPLETED)
    with make_connection(platform.settings.messaging) as conn:
        platform.publisher.topology.work_queue("workflow.action.update")(conn.channel()).purge()
    chains = ChainService(platform.settings, platform.publisher)
    ended = Child(str(step.pk), "step2", step.status, step.result, step.start_timestamp, step.end_timestamp)
    outcome = chains.mutate(str(execution.pk), lambda c, control, now: c.node_ended(ended, control, now))
    return execution, chains, outcome


def test_sweep_requests_a_node_a_crash_kept_from_being_requested(embedded):
    # Given a chain whose engine stopped while a node ran, and whose next node was decided
    # and stored but never requested (the engine died in between)
    execution, _, outcome = decided_not_requested(embedded)
    assert outcome.step.request[0].name == "step3"
    assert nodes(embedded, execution) == ["step1", "step2"]
    # When a new engine starts, sweeping often
    embedded.start_engine(sweep_interval=0.1, idle_after=0.5, startup_idle_after=0.05)
    # Then the lost node is requested once and the chain completes
    done = embedded.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert nodes(embedded, done) == ["step1", "step2", "step3", "step4"]
    record = Access(ActionChainExecutionDB).get(action_execution=str(execution.pk))
    assert record.status == statuses.SUCCEEDED


def test_a_sweep_leaves_alone_a_chain_written_since_it_began(embedded):
    # Given a chain whose next node was just decided and not requested yet (its engine is about to)
    execution, chains, _ = decided_not_requested(embedded)
    record = Access(ActionChainExecutionDB).get(action_execution=str(execution.pk))
    # When a sweep that began before that write reaches it
    chains.reconcile(record, idle_since=record.updated_at - datetime.timedelta(seconds=1))
    # Then it requests nothing (the engine that wrote it would request the node a second time)
    assert nodes(embedded, execution) == ["step1", "step2"]
    # But a sweep that began after it requests the node its engine never did, once
    chains.reconcile(record, idle_since=record.updated_at + datetime.timedelta(seconds=1))
    assert nodes(embedded, execution) == ["step1", "step2", "step3"]
    embedded.start_engine()
    done = embedded.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert nodes(embedded, done) == ["step1", "step2", "step3", "step4"]


def test_children_are_listed_under_the_chain_through_the_api_and_both_clis(embedded, api_url, official_st2):
    # Given a finished chain
    execution = embedded.run("chain_pack.straight")
    expected = {str(c.pk) for c in embedded.children(execution)}
    assert len(expected) == 3
    # When its children are listed through the API and the project's CLI
    listed = requests.get(f"{api_url}/executions", params={"parent": str(execution.pk)}).json()
    ours = st2(api_url, "execution", "list", "--parent", str(execution.pk), "-j")
    # Then each shows the three node executions, with their chain context
    assert {c["id"] for c in listed} == expected
    assert {c["context"]["chain"]["name"] for c in listed} == {"greet", "shout", "finish"}
    assert ours.exit_code == 0 and {c["id"] for c in json.loads(ours.output)} == expected
    # And `st2 execution get` of both CLIs shows the chain with its tasks by node name
    shown = st2(api_url, "execution", "get", str(execution.pk))
    assert shown.exit_code == 0, shown.output
    assert all(name in shown.output for name in ("greet", "shout", "finish")) and "succeeded" in shown.output
    official = run_official(["execution", "get", str(execution.pk)], api_url)
    assert official.returncode == 0 and all(name in official.stdout for name in ("greet", "shout", "finish"))
