"""Execution requests POSTed at the same time are stored together (st2api/batching.py), each answered as alone."""

from __future__ import annotations

import json
import threading

import webob
from test_api_support import api, api_settings, drain, publisher, settings  # noqa: F401 (fixtures)

from st2api.batching import RequestBatcher
from st2common.models.db.execution import ExecutionDB
from st2common.services import executions
from testsupport import api_app

POSTERS = 30


def test_requests_posted_at_once_are_each_stored_answered_and_announced(api, api_settings, publisher):
    # Given the API app called from many threads at once (an eventlet server runs one greenthread a request)
    app = api_app(api_settings, publisher)
    start = threading.Barrier(POSTERS)
    answers: list[webob.Response] = [None] * POSTERS

    def post(index: int) -> None:
        body = {"action": "core.noop"} if index % 3 else {"action": "core.local", "parameters": {"cmd": "x"}}
        bad = index % 10 == 7
        if bad:
            body = {"action": "core.local", "parameters": {"nope": 1}}
        request = webob.Request.blank("/v1/executions", method="POST", body=json.dumps(body).encode(),
                                      headers={"Content-Type": "application/json"})
        start.wait()
        answers[index] = request.get_response(app)

    threads = [threading.Thread(target=post, args=(index,)) for index in range(POSTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Then each valid request got its own execution, stored as answered
    good = [answer for index, answer in enumerate(answers) if index % 10 != 7]
    assert all(answer.status_int == 201 for answer in good), [a.text for a in good if a.status_int != 201]
    ids = {answer.json["id"] for answer in good}
    assert len(ids) == len(good)
    stored = {str(doc.pk): doc for doc in ExecutionDB.objects(id__in=list(ids))}
    assert set(stored) == ids
    for answer in good:
        assert stored[answer.json["id"]].action_ref == answer.json["action"]["ref"]
        assert answer.json["status"] == "requested"
    # And each invalid one its own 400, naming its parameter, nothing stored for it
    bad = [answer for index, answer in enumerate(answers) if index % 10 == 7]
    assert all(answer.status_int == 400 and "nope" in answer.json["faultstring"] for answer in bad)
    assert ExecutionDB.objects.count() == len(good)
    # And the scheduler was told of each stored one
    messages = drain(api_settings, "actionrunner.req", expect=len(good), timeout=20)
    assert {message["id"] for message in messages} == ids


def test_an_error_of_the_write_reaches_every_request_of_its_batch_and_the_next_batch_is_written(api, publisher,
                                                                                                monkeypatch):
    batcher = RequestBatcher(publisher)
    first = executions.prepare("core.noop", {})
    failing = {"on": True}
    original = executions.request_many

    def request_many(pub, prepared):
        if failing["on"]:
            failing["on"] = False
            raise RuntimeError("database went away")
        return original(pub, prepared)

    monkeypatch.setattr(executions, "request_many", request_many)
    try:
        batcher.store(first)
    except RuntimeError as exc:
        assert "went away" in str(exc)
    else:
        raise AssertionError("the write's error was not raised")
    # The writing was handed on: the next request is stored
    second = batcher.store(executions.prepare("core.noop", {}))
    assert ExecutionDB.objects(id=second.pk).first() is not None


def test_children_of_a_held_parent_are_announced_then_listed(api, api_settings, publisher):
    # Given a parent execution and two children prepared for it (a workflow engine's request)
    parent = executions.request(publisher, "core.noop", {})
    children = [executions.prepare("core.noop", {}, parent=str(parent.pk)) for _ in range(2)]
    # When they are requested with the parent vouched for
    outcomes = executions.request_many(publisher, children, parents_held=True)
    # Then both are stored, announced to the scheduler, and listed among the parent's children
    assert outcomes == children
    announced = {body["id"] for body in drain(api_settings, "actionrunner.req", expect=3)}
    assert {str(child.pk) for child in children} <= announced
    assert ExecutionDB.objects(id=parent.pk).first().children == [str(child.pk) for child in children]


def test_a_child_whose_held_parent_is_gone_still_runs_and_a_plain_request_is_refused(api, api_settings,
                                                                                        publisher, caplog):
    gone = "5f0000000000000000000000"
    # A child vouched for: stored and announced, the missing parent only logged
    vouched = executions.prepare("core.noop", {}, parent=gone, parent_user="st2admin")
    assert executions.request_many(publisher, [vouched], parents_held=True) == [vouched]
    assert ExecutionDB.objects(id=vouched.pk).first() is not None
    assert str(vouched.pk) in {body["id"] for body in drain(api_settings, "actionrunner.req")}
    assert f"their parent {gone} is gone" in caplog.text
    # A child not vouched for: refused and not kept
    plain = executions.prepare("core.noop", {}, parent=gone, parent_user="st2admin")
    [outcome] = executions.request_many(publisher, [plain])
    assert "cannot be found" in str(outcome)
    assert ExecutionDB.objects(id=plain.pk).first() is None
