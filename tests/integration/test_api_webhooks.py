"""/v1/webhooks through the REST API: hooks declared by rules, /webhooks/st2, bodies, errors.

No rules engine runs here: a POST is checked by the trigger instance it
stores, its trace, and the message it leaves for the rules engines.
"""

from __future__ import annotations

from testsupport import admin_token
from test_api_support import api, api_settings, drain, publisher, settings  # noqa: F401 (fixtures)
from test_api_triggers import DISPATCH_QUEUE, METRIC_TYPE, events_api, make_rule  # noqa: F401 (fixture)

from st2common.models.db.trace import TraceComponentDB, TraceDB
from st2common.models.db.trigger import TriggerDB, TriggerInstanceDB, parameters_hash


def instances() -> list[TriggerInstanceDB]:
    return list(TriggerInstanceDB.objects.order_by("occurrence_time", "id"))


def test_a_post_to_a_rule_hook_stores_an_instance_with_body_and_headers(events_api, api_settings):
    # Given a rule on the hook "ci/deploy" (declared with slashes around it)
    rule = make_rule(events_api, trigger={"type": "core.st2.webhook", "parameters": {"url": "/ci/deploy/"}})
    # When JSON is posted to it with auth headers, a cookie and a custom header
    body = {"env": "prod", "build": 42, "tags": ["a", "b"]}
    token = admin_token(api_settings)
    response = events_api.post_json("/v1/webhooks/ci/deploy", body, status=202, headers={
        "X-Auth-Token": token, "St2-Api-Key": "key-456", "Cookie": f"auth-token={token}",
        "X-Github-Event": "push"})
    # Then the answer is 202 echoing the body
    assert response.json == body
    # And one instance of the rule's trigger is stored, pending, with StackStorm's payload
    [instance] = instances()
    assert instance.trigger == rule["trigger"]["ref"] and instance.status == "pending"
    payload = instance.payload
    assert payload["body"] == body
    assert payload["headers"]["X-Github-Event"] == "push"
    assert payload["headers_lower"]["x-github-event"] == "push"
    assert payload["headers"]["Content-Type"] == "application/json"
    # And no credential reached the payload
    flat = repr(payload)
    assert token not in flat and "key-456" not in flat
    # And the rules engines got its id
    assert [message["id"] for message in drain(api_settings, DISPATCH_QUEUE)] == [str(instance.pk)]


def test_form_bodies_become_dicts_of_lists(events_api):
    make_rule(events_api)
    # When a form is posted, urlencoded and multipart
    urlencoded = events_api.post("/v1/webhooks/deploy", "env=prod&tag=a&tag=b",
                                 content_type="application/x-www-form-urlencoded", status=202)
    multipart = events_api.post("/v1/webhooks/deploy", {"env": "stage"}, content_type="multipart/form-data",
                                status=202)
    # Then each body is read as StackStorm reads a form: every field a list
    assert urlencoded.json == {"env": ["prod"], "tag": ["a", "b"]}
    assert multipart.json == {"env": ["stage"]}
    assert [i.payload["body"] for i in instances()] == [{"env": ["prod"], "tag": ["a", "b"]}, {"env": ["stage"]}]


def test_a_json_array_body_is_accepted(events_api):
    make_rule(events_api)
    assert events_api.post_json("/v1/webhooks/deploy", [1, 2], status=202).json == [1, 2]
    assert instances()[0].payload["body"] == [1, 2]


def test_a_body_invalid_for_the_payload_schema_is_a_400_naming_the_field(events_api):
    make_rule(events_api)
    # The webhook payload's body must be an object or an array
    text = events_api.post("/v1/webhooks/deploy", "just text", content_type="text/plain", status=400)
    assert text.json["faultstring"].startswith("payload.body:")
    # A custom trigger's payload is checked against its schema, through /webhooks/st2
    events_api.post_json("/v1/triggertypes", METRIC_TYPE)
    wrong = events_api.post_json("/v1/webhooks/st2", {"trigger": "apitest.metric",
                                                      "payload": {"value": "high"}}, status=400)
    assert wrong.json["faultstring"].startswith("payload.value:")
    missing = events_api.post_json("/v1/webhooks/st2", {"trigger": "apitest.metric", "payload": {}}, status=400)
    assert missing.json["faultstring"] == 'payload.value: "value" is a required property'
    # And nothing was stored for any of them
    assert instances() == []


def test_an_unknown_hook_is_a_404(events_api):
    make_rule(events_api)
    response = events_api.post_json("/v1/webhooks/nothing/here", {"a": 1}, status=404)
    assert response.json == {"faultstring": "Webhook nothing/here not registered with st2"}
    events_api.get("/v1/webhooks/nothing", status=404)
    # And a hook whose last rule was deleted is unknown again at once, though it was just posted to
    events_api.post_json("/v1/webhooks/deploy", {"a": 1}, status=202)
    events_api.delete("/v1/rules/apitest.on_hook", status=204)
    events_api.post_json("/v1/webhooks/deploy", {"a": 1}, status=404)


def test_a_hook_registered_by_another_process_answers_at_once(events_api):
    # Given a hook nobody registered yet, posted to in vain
    events_api.post_json("/v1/webhooks/late", {"a": 1}, status=404)
    # When another process stores its trigger (straight to the database: no event, nothing of this process)
    TriggerDB(name="late-hook", pack="core", ref="core.late-hook", uid="trigger:core:late-hook", type="core.st2.webhook",
              parameters={"url": "late"},
              parameters_hash=parameters_hash({"url": "late"})).save()
    # Then the next post finds it: a hook not found is not remembered
    events_api.post_json("/v1/webhooks/late", {"a": 1}, status=202)
    assert [instance.trigger for instance in instances()] == ["core.late-hook"]


def test_st2_hook_dispatches_a_registered_custom_trigger(events_api, api_settings):
    # Given a custom trigger type
    events_api.post_json("/v1/triggertypes", METRIC_TYPE)
    # When its instance is posted to /webhooks/st2, as core.inject_trigger does, with a trace tag
    body = {"trigger": "apitest.metric", "payload": {"value": 99.5, "host": "db1"}, "trace_tag": "incident-7"}
    response = events_api.post_json("/v1/webhooks/st2", body, status=202)
    # Then the body is echoed and the instance is stored with that payload, in a trace with that tag
    assert response.json == body
    [instance] = instances()
    assert instance.trigger == "apitest.metric" and instance.payload == {"value": 99.5, "host": "db1"}
    trace = TraceDB.objects.get(trace_tag="incident-7")
    link = TraceComponentDB.objects.get(trace_id=str(trace.pk))
    assert (link.component_type, link.object_id) == ("trigger_instance", str(instance.pk))
    assert [m["id"] for m in drain(api_settings, DISPATCH_QUEUE)] == [str(instance.pk)]


def test_st2_hook_bad_bodies(events_api):
    no_trigger = events_api.post_json("/v1/webhooks/st2", {"payload": {}}, status=400)
    assert no_trigger.json["faultstring"] == "Trigger not specified."
    not_object = events_api.post_json("/v1/webhooks/st2", [1], status=400)
    assert not_object.json["faultstring"] == "Webhook body needs to be an object, got: array"
    unknown = events_api.post_json("/v1/webhooks/st2", {"trigger": "nope.nothing", "payload": {}}, status=400)
    assert "nope.nothing" in unknown.json["faultstring"]


def test_trace_tag_header_and_default_tag(events_api):
    make_rule(events_api)
    events_api.post_json("/v1/webhooks/deploy", {"a": 1}, headers={"St2-Trace-Tag": "release-1.2"})
    events_api.post_json("/v1/webhooks/deploy/", {"a": 2})
    tags = [t.trace_tag for t in TraceDB.objects.order_by("start_timestamp", "id")]
    assert tags[0] == "release-1.2"
    assert tags[1].startswith("webhook-deploy-") and len(tags[1]) == len("webhook-deploy-") + 32
    # And the trace tag header is not part of the payload
    assert "St2-Trace-Tag" not in instances()[0].payload["headers"]


def test_webhook_list_and_get(events_api):
    first = make_rule(events_api, "first", trigger={"type": "core.st2.webhook", "parameters": {"url": "deploy"}})
    make_rule(events_api, "second", trigger={"type": "core.st2.webhook", "parameters": {"url": "ci/build"}})
    make_rule(events_api, "timer", trigger={"type": "core.st2.IntervalTimer",
                                             "parameters": {"unit": "seconds", "delta": 9}})
    # When hooks are listed the way `st2 webhook list` does (include_attributes is ignored)
    rows = events_api.get("/v1/webhooks?include_attributes=url,type,description").json
    # Then each webhook trigger comes back whole, with parameters.url
    assert sorted(row["parameters"]["url"] for row in rows) == ["ci/build", "deploy"]
    assert all(row["type"] == "core.st2.webhook" and isinstance(row["id"], str) for row in rows)
    # And one hook answers by its url, "/" included
    assert events_api.get("/v1/webhooks/ci/build").json["parameters"] == {"url": "ci/build"}
    assert events_api.get("/v1/webhooks/deploy").json["ref"] == first["trigger"]["ref"]
