"""A workflow child's completion event carries its small result, so the workflow engine need not read it back."""

from __future__ import annotations

import datetime

from test_api_support import api_settings, drain, publisher, settings  # noqa: F401 (fixtures)

from st2common import statuses
from st2common.models.db.execution import ExecutionDB
from st2common.services import executions
from st2workflowengine.handler import _completed_child


def stored_execution(publisher, parent: str | None) -> ExecutionDB:
    access = executions.access(publisher)
    return access.add_or_update(ExecutionDB(status=statuses.RUNNING, action_ref="core.noop", action={"ref": "core.noop"},
                                            runner={"name": "noop"}, parent=parent), publish=False)


def finish(settings, publisher, execution: ExecutionDB, result, size: int) -> dict:
    """Complete execution the way the action runner does; the workflow engine's copy of its update event."""
    executions.update_status(executions.access(publisher), execution, statuses.SUCCEEDED, publish_work=False,
                             result=result, result_size=size)
    [event] = drain(settings, "workflow.action.update")
    return event


def test_a_childs_completion_event_carries_its_small_result_and_end(api_settings, db, publisher):
    # Given a workflow child that finishes with a small result
    child = stored_execution(publisher, parent="5f0000000000000000000001")
    event = finish(api_settings, publisher, child, {"out": "a.b", "n": 1}, 20)
    # Then its update event carries the result and the end time
    assert event["status"] == "succeeded" and event["result"] == {"out": "a.b", "n": 1}
    ended = datetime.datetime.fromisoformat(event["end_timestamp"])
    # And the engine builds from it the child as it would read it back
    rebuilt = _completed_child(event)
    stored = executions.access(None).get_by_id(child.pk)
    assert (str(rebuilt.pk), rebuilt.status, rebuilt.result) == (str(stored.pk), stored.status, stored.result)
    assert rebuilt.end_timestamp == stored.end_timestamp == ended


def test_a_large_result_or_a_top_level_execution_is_read_instead(api_settings, db, publisher):
    # Given a child whose result is over the inline limit, and an execution outside any workflow
    big = stored_execution(publisher, parent="5f0000000000000000000001")
    event = finish(api_settings, publisher, big, {"out": "x" * 5000}, executions.INLINE_RESULT_LIMIT + 10)
    # Then its event names the status alone, and the engine reads the child
    assert "result" not in event and _completed_child(event) is None
    # And an execution outside any workflow reaches the notifier alone, its status without its result
    top = stored_execution(publisher, parent=None)
    executions.update_status(executions.access(publisher), top, statuses.SUCCEEDED, publish_work=False,
                             result={"a": 1}, result_size=8)
    assert drain(api_settings, "workflow.action.update", timeout=0.5) == []
    notified = drain(api_settings, "notifiers.execution.work", expect=2)
    assert [event["id"] for event in notified] == [str(big.pk), str(top.pk)]
    assert notified[-1]["status"] == "succeeded" and "result" not in notified[-1]
