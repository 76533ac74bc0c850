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
