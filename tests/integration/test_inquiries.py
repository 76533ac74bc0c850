"""Inquiries end to end: an Orquesta workflow whose core.ask task waits for a person, answered through
the API, the project's CLI and the official st2client, or timed out; on the embedded database and bus,
with the action runner, the workflow engine and the API all in this process.
"""

from __future__ import annotations

import datetime
import json

import pytest
import requests
from click.testing import CliRunner

from st2client.cli import cli
from st2common import statuses
from st2common.exceptions import AccessDeniedError
from st2common.models.db.base import utcnow
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.models.db.workflow import WorkflowExecutionDB
from st2common.persistence.access import Access
from st2common.services import inquiries, tokens
from st2common.services.workflows import WorkflowService
from tests.e2e.st2client_compat import official_st2, run_official, side_by_side  # noqa: F401 (session fixture)
from workflowsupport import REPO, serve_api, st2, start_platform

FIXTURE_PACK = REPO / "tests" / "fixtures" / "packs" / "inquiry_pack"
WORKFLOW = "inquiry_pack.approval"


@pytest.fixture
def platform(tmp_path, embedded_mongo):
    """inquiry_pack and core registered; an action runner and a workflow engine consuming here."""
    yield from start_platform("filesystem://", tmp_path, embedded_mongo, FIXTURE_PACK)


@pytest.fixture
def api_url(platform):
    """The API on a free port, served in a green thread (requests without credentials act as the admin)."""
    yield from serve_api(platform)


def ask(platform, **parameters):
    """Start the approval workflow and return (workflow execution, its pending core.ask child)."""
    execution = platform.request(WORKFLOW, parameters)
    paused = platform.wait_for(execution.pk, statuses.PAUSED)
    [question] = [c for c in platform.children(paused) if c.action_ref == "core.ask"]
    return paused, question


def test_ask_pauses_the_workflow_and_a_valid_answer_resumes_it(platform, api_url):
    # When the workflow reaches its core.ask task
    execution, question = ask(platform)
    # Then the ask is pending with the question, and the workflow paused as nothing else is active
    assert question.status == statuses.PENDING
    assert question.result == {
        "schema": question.parameters["schema"], "roles": [], "users": [], "route": "approvals", "ttl": 1440}
    workflow = Access(WorkflowExecutionDB).get(action_execution=str(execution.pk))
    assert workflow.status == statuses.PAUSED
    # And the inquiry trigger was dispatched for rules to notify people
    [instance] = Access(TriggerInstanceDB).query({"trigger": "core.st2.generic.inquiry"})
    assert instance.payload == {"id": str(question.pk), "route": "approvals"}
    # And the API lists the inquiry in StackStorm's shape
    listed = requests.get(f"{api_url}/inquiries")
    expected = {"id": str(question.pk), "route": "approvals", "ttl": 1440, "users": [], "roles": [],
                "schema": question.result["schema"]}
    assert listed.status_code == 200 and listed.json() == [expected]
    assert listed.headers["X-Total-Count"] == "1"
    assert requests.get(f"{api_url}/inquiries/{question.pk}").json() == expected

    # When a response of the wrong type, then one missing the required field, is sent
    wrong = requests.put(f"{api_url}/inquiries/{question.pk}", json={"id": str(question.pk),
                                                                     "response": {"approved": "yes"}})
    missing = requests.put(f"{api_url}/inquiries/{question.pk}", json={"id": str(question.pk), "response": {}})
    # Then both are refused with the schema error naming the field, and nothing moved
    assert wrong.status_code == 400 and missing.status_code == 400
    assert "did not pass schema validation" in wrong.json()["faultstring"]
    assert "approved" in wrong.json()["faultstring"] and "boolean" in wrong.json()["faultstring"]
    assert '"approved" is a required property' in missing.json()["faultstring"]
    assert platform.executions.get_by_id(question.pk).status == statuses.PENDING

    # When a valid response is sent
    answered = requests.put(f"{api_url}/inquiries/{question.pk}",
                            json={"id": str(question.pk), "response": {"approved": True}})
    # Then it is accepted (defaults filled in), and the workflow carries on to success with the answer
    assert answered.status_code == 200
    assert answered.json() == {"id": str(question.pk), "response": {"approved": True, "note": "none given"}}
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert done.result["output"] == {"approved": True, "note": "none given"}
    assert platform.task_names(done) == ["start", "get_approval", "finish"]
    question = platform.executions.get_by_id(question.pk)
    assert question.status == statuses.SUCCEEDED
    assert question.result["response"] == {"approved": True, "note": "none given"}
    # And the inquiry is no longer listed, and cannot be answered twice
    assert requests.get(f"{api_url}/inquiries").json() == []
    again = requests.put(f"{api_url}/inquiries/{question.pk}", json={"response": {"approved": False}})
    assert again.status_code == 400
    assert again.json()["faultstring"] == f'Inquiry "{question.pk}" has already been responded to.'
    assert requests.get(f"{api_url}/inquiries/{question.pk}").status_code == 400


def test_unknown_inquiry_and_other_executions(platform, api_url):
    # Given a finished execution that is not an inquiry
    echo = platform.run("core.echo", {"message": "hi"})
    # When it, and an id that names nothing, are asked for as inquiries
    other = requests.get(f"{api_url}/inquiries/{echo.pk}")
    unknown = requests.put(f"{api_url}/inquiries/5f0000000000000000000000", json={"response": {}})
    # Then the first is a 400 saying so, the second a 404
    assert other.status_code == 400
    assert other.json()["faultstring"] == f'Action execution "{echo.pk}" is not an inquiry.'
    assert unknown.status_code == 404


def test_callers_not_allowed_are_refused_and_admins_always_answer(platform, api_url):
    # Given an inquiry only alice may answer
    execution, question = ask(platform, approvers=["alice"])
    # When bob, a user without a role, answers through the API
    bob = tokens.issue(platform.settings, "bob")[1]
    refused = requests.put(f"{api_url}/inquiries/{question.pk}", json={"response": {"approved": True}},
                           headers={"X-Auth-Token": bob})
    # Then he is refused and the inquiry still waits
    assert refused.status_code == 403
    assert platform.executions.get_by_id(question.pk).status == statuses.PENDING
    # And the users/roles rule itself refuses anyone but alice who is not an admin
    service = WorkflowService(platform.settings, platform.publisher)
    with pytest.raises(AccessDeniedError) as denied:
        inquiries.respond(service, str(question.pk), {"approved": True}, "bob", roles=["observer"])
    assert str(denied.value) == f'User "bob" does not have permission to respond to inquiry "{question.pk}".'
    # When the admin (the system user) answers instead
    answered = requests.put(f"{api_url}/inquiries/{question.pk}", json={"response": {"approved": False}})
    # Then the answer is taken and the workflow finishes with it
    assert answered.status_code == 200
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED and done.result["output"]["approved"] is False


def test_cli_lists_gets_and_answers_interactively(platform, api_url):
    # Given a pending inquiry
    execution, question = ask(platform)
    # When the project's CLI lists it and shows it
    listed = st2(api_url, "inquiry", "list", "-j")
    table = st2(api_url, "inquiry", "list")
    shown = st2(api_url, "inquiry", "get", str(question.pk), "-j")
    # Then both show the inquiry
    assert listed.exit_code == 0 and [i["id"] for i in json.loads(listed.output)] == [str(question.pk)]
    assert table.exit_code == 0 and str(question.pk) in table.output and "approvals" in table.output
    assert shown.exit_code == 0 and json.loads(shown.output)["schema"]["properties"]["approved"]["type"] == "boolean"
    # When it is answered interactively: "n" for approved, the default for note
    answered = CliRunner().invoke(cli, ["--api-url", api_url, "--skip-config", "inquiry", "respond",
                                        str(question.pk)], input="maybe\nn\n\n", catch_exceptions=False)
    # Then each field was asked for (a bad boolean asked again), the answer accepted and the workflow done
    assert answered.exit_code == 0, answered.output
    assert "approved (boolean): " in answered.output and "Does not look like boolean" in answered.output
    assert "note [none given]: " in answered.output
    assert f"Response accepted for inquiry {question.pk}." in answered.output
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.result["output"] == {"approved": False, "note": "none given"}
    # And answering again is an error naming why
    again = st2(api_url, "inquiry", "respond", str(question.pk), "-r", '{"approved": true}')
    assert again.exit_code == 1 and "has already been responded to" in again.output


def test_cli_respond_with_json_refused_then_accepted(platform, api_url):
    # Given a pending inquiry
    execution, question = ask(platform)
    # When the project's CLI sends an invalid, then a valid, JSON response
    bad = st2(api_url, "inquiry", "respond", str(question.pk), "-r", '{"note": "x"}')
    good = st2(api_url, "inquiry", "respond", str(question.pk), "-r", '{"approved": true, "note": "ship it"}')
    # Then the first fails with the schema error, the second resumes the workflow with the answer
    assert bad.exit_code == 1 and '"approved" is a required property' in bad.output
    assert good.exit_code == 0 and f"Response accepted for inquiry {question.pk}." in good.output
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED and done.result["output"] == {"approved": True, "note": "ship it"}


def test_official_client_lists_and_answers(platform, api_url, official_st2):
    # Given a pending inquiry
    execution, question = ask(platform)
    # When StackStorm's own CLI lists it, shows it and answers it
    # (list and get side by side: both only read, and each is a ~1 s process)
    listed, shown = side_by_side([lambda: run_official(["inquiry", "list", "-j"], api_url),
                                  lambda: run_official(["inquiry", "get", str(question.pk), "-j"], api_url)])
    answered = run_official(["inquiry", "respond", str(question.pk), "-r", '{"approved": true}'], api_url)
    # Then it sees the inquiry, its answer is accepted and the workflow finishes with it
    assert listed.returncode == 0, listed.stderr
    assert [i["id"] for i in json.loads(listed.stdout)] == [str(question.pk)]
    assert shown.returncode == 0 and json.loads(shown.stdout)["route"] == "approvals"
    assert answered.returncode == 0, answered.stdout + answered.stderr
    assert f"Response accepted for inquiry {question.pk}." in answered.stdout
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED and done.result["output"]["approved"] is True
    # And an empty list is an empty table, as StackStorm prints it
    empty = run_official(["inquiry", "list"], api_url)
    assert empty.returncode == 0 and "No matching items found" not in empty.stdout


def test_overdue_inquiry_times_out_and_the_workflow_moves_on(platform, api_url):
    # Given two pending inquiries: one with a ttl of one minute, one that never expires
    execution, question = ask(platform, ttl=1)
    _, endless = ask(platform, ttl=0)
    engine = platform.engines[0]
    # When the engine's periodic sweep runs before the minute is over, nothing happens
    engine.sweep()
    assert platform.executions.get_by_id(question.pk).status == statuses.PENDING
    # When both were asked two minutes ago and the sweep runs again
    two_minutes_ago = utcnow() - datetime.timedelta(minutes=2)
    for asked in (question, endless):
        platform.executions.update_if(asked.pk, {}, {"start_timestamp": two_minutes_ago}, publish=False)
    engine.sweep()
    # Then only the first timed out, and its workflow took the branch for no answer
    assert platform.executions.get_by_id(question.pk).status == statuses.TIMED_OUT
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert done.result["output"] == {"approved": None, "note": "no answer in time"}
    assert sorted(platform.task_names(done)) == ["expired", "get_approval", "start"]
    # And answering it now says it timed out; the other still waits
    late = requests.put(f"{api_url}/inquiries/{question.pk}", json={"response": {"approved": True}})
    assert late.status_code == 400
    assert late.json()["faultstring"] == f'Inquiry "{question.pk}" timed out and cannot be responded to.'
    assert platform.executions.get_by_id(endless.pk).status == statuses.PENDING


def test_answer_at_once_while_the_engine_is_still_pausing(platform):
    # Given an inquiry answered the moment it is pending, racing the engine that pauses its workflow
    service = WorkflowService(platform.settings, platform.publisher)
    for _ in range(3):
        execution = platform.request(WORKFLOW)
        question = platform.wait_for_task(execution, "get_approval", statuses.PENDING)
        inquiries.respond(service, str(question.pk), {"approved": True}, "stanley", is_admin=True)
        # Then however the two interleave, the workflow finishes with the answer
        done = platform.wait_for(execution.pk, statuses.COMPLETED)
        assert done.status == statuses.SUCCEEDED, done.result
        assert done.result["output"]["approved"] is True


def test_an_answer_moves_the_workflow_on_at_once_not_at_the_engines_next_sweep(platform, api_url):
    # Given a workflow engine whose periodic sweep would not come for an hour
    for engine in platform.engines:
        engine.stop()
    platform.engines.clear()
    platform.start_engine(sweep_interval=3600)
    execution, question = ask(platform)
    # When the inquiry is answered through the API (a process other than the engine)
    answered = requests.put(f"{api_url}/inquiries/{question.pk}",
                            json={"id": str(question.pk), "response": {"approved": True}})
    assert answered.status_code == 200
    # Then the engine runs the task after it and finishes the workflow from the events alone
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    assert done.status == statuses.SUCCEEDED, done.result
    assert platform.task_names(done) == ["start", "get_approval", "finish"]
