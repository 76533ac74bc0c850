"""/v1/traces through the REST API: the chain trigger instance -> rule -> execution, listed and shown.

Traces are built the way the platform builds them: a webhook POST (or a
dispatch) starts one; the links a rules engine and a runner add are written
with the trace service.
"""

from __future__ import annotations

import re

from test_api_support import api, api_settings, publisher, settings  # noqa: F401 (fixtures)
from test_api_triggers import events_api, make_rule  # noqa: F401 (fixture)

from st2common.models.db.trace import TraceDB
from st2common.services import executions
from st2common.services import trace as trace_service
from st2common.services import triggerinstances

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def chain(api, publisher, tag: str) -> dict:
    """A webhook call matched by a rule that requested an execution: ids of each member."""
    rule = api.get("/v1/rules/apitest.on_hook").json
    api.post_json("/v1/webhooks/deploy", {"n": tag}, headers={"St2-Trace-Tag": tag})
    trace = TraceDB.objects.get(trace_tag=tag)
    instance_id = api.get(f"/v1/traces/{trace.pk}").json["trigger_instances"][0]["object_id"]
    trace_service.add_rule(trace, rule["id"], rule["ref"], instance_id)
    execution = executions.request(publisher, "core.noop", {})
    trace_service.add_execution(trace, execution.pk, "core.noop", rule_id=rule["id"], instance_id=instance_id)
    return {"trace": str(trace.pk), "rule": rule, "instance": instance_id, "execution": str(execution.pk)}


def test_a_trace_links_instance_rule_and_execution(events_api, publisher):
    # Given a webhook call that a rule turned into an execution
    make_rule(events_api)
    ids = chain(events_api, publisher, "release-1")
    # When its trace is shown
    trace = events_api.get(f"/v1/traces/{ids['trace']}").json
    # Then it is in StackStorm's shape, each list with one member pointing at its cause
    assert trace["trace_tag"] == "release-1" and trace["uid"] == f"trace:{ids['trace']}"
    assert ISO.match(trace["start_timestamp"])
    [instance] = trace["trigger_instances"]
    [rule] = trace["rules"]
    [execution] = trace["action_executions"]
    assert instance["object_id"] == ids["instance"] and instance["caused_by"] == {}
    assert instance["ref"] == ids["rule"]["trigger"]["ref"] and ISO.match(instance["updated_at"])
    assert rule == {"object_id": ids["rule"]["id"], "ref": "apitest.on_hook", "updated_at": rule["updated_at"],
                    "caused_by": {"type": "trigger_instance", "id": ids["instance"]}}
    assert execution["object_id"] == ids["execution"] and execution["ref"] == "core.noop"
    assert execution["caused_by"] == {"type": "rule", "id": f"{ids['rule']['id']}:{ids['instance']}"}
    events_api.get("/v1/traces/000000000000000000000000", status=404)


def test_trace_list_as_the_cli_asks_with_filters(events_api, publisher):
    make_rule(events_api)
    first = chain(events_api, publisher, "release-1")
    second = chain(events_api, publisher, "release-2")
    lone = triggerinstances.dispatch(publisher, "core.st2.sensor.process_exit", {"id": "s"})
    # When traces are listed the way `st2 trace list` does
    response = events_api.get("/v1/traces/?limit=50&sort_desc=True")
    rows = response.json
    # Then they come newest first, each with its three lists
    assert [row["trace_tag"] for row in rows] == [f"trigger_instance-{lone.pk}", "release-2", "release-1"]
    assert [len(rows[1][name]) for name in ("trigger_instances", "rules", "action_executions")] == [1, 1, 1]
    assert rows[0]["rules"] == [] and rows[0]["trigger_instances"][0]["object_id"] == str(lone.pk)
    assert response.headers["X-Total-Count"] == "3"
    # And sort_asc=True turns the order around
    ascending = events_api.get("/v1/traces/?sort_asc=True").json
    assert [row["trace_tag"] for row in ascending] == ["release-1", "release-2", f"trigger_instance-{lone.pk}"]

    def tags(query):
        return [row["trace_tag"] for row in events_api.get(f"/v1/traces?{query}").json]

    # And each filter finds the trace holding that member
    assert tags("trace_tag=release-2") == ["release-2"]
    assert tags(f"execution={first['execution']}") == ["release-1"]
    assert tags(f"trigger_instance={second['instance']}") == ["release-2"]
    assert tags(f"rule={first['rule']['id']}") == ["release-2", "release-1"]
    assert tags("rule=apitest.on_hook") == ["release-2", "release-1"]
    assert tags(f"rule={first['rule']['id']}&execution={second['execution']}") == ["release-2"]
    assert tags("execution=000000000000000000000000") == []
    # And a page holds only what was asked for
    page = events_api.get("/v1/traces?limit=1&offset=1")
    assert [row["trace_tag"] for row in page.json] == ["release-2"] and page.headers["X-Total-Count"] == "3"
