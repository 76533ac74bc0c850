"""A workflow's tasks in its trace: every child execution and the action trigger it caused join the
trace of the workflow's execution, subworkflows' children too, as in StackStorm."""

from __future__ import annotations

import time

import pytest

from st2common.exceptions import NotFoundError
from st2common.models.db.execution import ExecutionDB
from st2common.persistence.access import Access
from st2common.services import executions
from st2common.services import trace as trace_service
from workflowsupport import embedded  # noqa: F401 (fixture)


def _eventually(check, what: str, timeout: float = 20.0):
    """check() once it is truthy (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _descendants(embedded, execution: ExecutionDB) -> list[ExecutionDB]:
    found = []
    for child in embedded.children(execution):
        found += [child, *_descendants(embedded, child)]
    return found


def _links(trace) -> dict[tuple[str, str], tuple[str | None, str | None]]:
    return {(c.component_type, c.object_id): (c.caused_by_type, c.caused_by_id)
            for c in trace_service.components(trace)}


def test_a_workflows_tasks_and_their_action_triggers_are_in_its_trace(embedded):
    # When a workflow with a subworkflow runs
    execution = embedded.run("wf_pack.nested")
    descendants = _descendants(embedded, execution)
    assert len(descendants) >= 3
    # Then one trace, tagged after the workflow's execution, holds it
    trace = _eventually(lambda: trace_service.trace_of("action_execution", execution.pk), "the workflow's trace")
    assert trace.trace_tag == f"execution-{execution.pk}"
    # And every execution under it, caused by its parent, with the action trigger each caused
    expected = len(descendants) * 2 + 2
    links = _eventually(lambda: (lambda found: found if len(found) >= expected else None)(_links(trace)),
                        f"{expected} links in the trace")
    instances = {cause_id: object_id for (kind, object_id), (_, cause_id) in links.items()
                 if kind == "trigger_instance"}
    for child in descendants:
        assert links[("action_execution", str(child.pk))] == ("action_execution", child.parent)
        assert str(child.pk) in instances
        assert child.context["trace_context"] == {"id_": str(trace.pk), "trace_tag": trace.trace_tag}
    assert str(execution.pk) in instances


def test_a_child_of_a_missing_parent_is_refused_and_not_stored(embedded):
    # When a caller that holds a parent's context requests a child of an execution that does not exist
    missing = "5f0000000000000000000000"
    with pytest.raises(NotFoundError):
        executions.request(embedded.publisher, "core.noop", {}, parent=missing, parent_user="stanley")
    # Then no execution points at it
    assert Access(ExecutionDB).count({"parent": missing}) == 0
