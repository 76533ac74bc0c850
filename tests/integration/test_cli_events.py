"""The event-side st2 commands (rule, rule-enforcement, trigger, trigger-instance, trace,
webhook, timer) against the real API: st2api in a green thread on the embedded
database and bus, the shipped packs and tests/fixtures/packs/events_pack
registered, and a trigger instance -> enforcement -> execution chain on record.
Our CLI runs through click's CliRunner; the official st2client 3.9.0 runs the
same commands against the same server and must not crash on our answers."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import eventlet
import pytest
from click.testing import CliRunner
from eventlet import wsgi

from testsupport import api_app
from st2client.cli import cli
from st2client.client import Client
from st2common import statuses
from st2common.content import register
from st2common.models.db.enforcement import RuleEnforcementDB
from st2common.models.db.rule import RuleDB
from st2common.models.db.trace import TraceComponentDB, TraceDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from testsupport import make_settings
from e2e.st2client_compat import official_st2, run_official  # noqa: F401 (session fixture)

REPO = Path(__file__).resolve().parents[2]
EVENTS_PACK = REPO / "tests" / "fixtures" / "packs" / "events_pack"
RULES = {"events_pack.on_metric", "events_pack.on_deploy_hook", "events_pack.every_minute",
         "events_pack.heartbeat_fallback"}


@pytest.fixture
def settings(tmp_path, embedded_mongo):
    """Settings searching the shipped packs and a folder holding a copy of events_pack."""
    shutil.copytree(EVENTS_PACK, tmp_path / "packs" / "events_pack")
    return make_settings(tmp_path, embedded_mongo, extra={
        "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(REPO / "contrib" / "packs"),
        "ST2_CONTENT__PACKS_BASE_PATHS": str(tmp_path / "packs"),
    })


@pytest.fixture
def api_url(settings, db):
    """The API on a free port (eventlet WSGI in a green thread), with core and events_pack registered."""
    publisher = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
    publisher.declare_work_queues()
    report = register(settings, publisher=publisher)
    assert report.ok, report.errors
    sock = eventlet.listen(("127.0.0.1", 0))
    server = eventlet.spawn(wsgi.server, sock, api_app(settings, publisher), log_output=False)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server.kill()
    sock.close()
    publisher.close()


@pytest.fixture
def chain(api_url) -> dict:
    """A metric trigger instance that made events_pack.on_metric request an execution, traced together."""
    execution = Client(api_url=api_url, env={}, config={}).executions.create({"action": "core.noop"})
    instance = TriggerInstanceDB(trigger="events_pack.metric", payload={"value": 95, "host": "web1"},
                                 status=statuses.TRIGGER_INSTANCE_PROCESSED).save()
    rule = RuleDB.objects.get(ref="events_pack.on_metric")
    rule_part = {"ref": rule.ref, "id": str(rule.pk), "uid": rule.uid}
    enforcement = RuleEnforcementDB(trigger_instance_id=str(instance.pk), execution_id=execution.id,
                                    rule=rule_part).save()
    trace = TraceDB(trace_tag="metric-web1").save()
    for kind, object_id, ref, cause in (
            ("trigger_instance", str(instance.pk), instance.trigger, (None, None)),
            ("rule", str(rule.pk), rule.ref, ("trigger_instance", str(instance.pk))),
            ("action_execution", execution.id, "core.noop", ("rule", f"{rule.pk}:{instance.pk}"))):
        TraceComponentDB(trace_id=str(trace.pk), component_type=kind, object_id=object_id, ref=ref,
                         caused_by_type=cause[0], caused_by_id=cause[1]).save()
    return {"instance": str(instance.pk), "enforcement": str(enforcement.pk), "execution": execution.id,
            "trace": str(trace.pk), "rule": str(rule.pk)}


def st2(api_url: str, *args: str):
    """`st2 <args>` through click's CliRunner, against api_url, with no user config."""
    return CliRunner().invoke(cli, ["--api-url", api_url, "--skip-config", *args], catch_exceptions=False,
                              env={"COLUMNS": "240"})


def as_json(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def cells(output: str) -> list[list[str]]:
    """The rows of a prettytable (header included) as stripped cells; a wrapped cell is joined back."""
    rows: list[list[str]] = []
    for line in output.splitlines():
        if not line.startswith("|"):
            continue
        row = [c.strip() for c in line.split("|")[1:-1]]
        if rows and len(rows) > 1 and not row[0]:
            rows[-1] = [" ".join(filter(None, pair)) for pair in zip(rows[-1], row)]
        else:
            rows.append(row)
    return rows


def test_rule_list_get_enable_disable_create_update_delete(api_url, tmp_path):
    # Given events_pack registered; When rules are listed; Then the table has StackStorm's columns
    listed = st2(api_url, "rule", "list")
    assert listed.exit_code == 0, listed.output
    table = cells(listed.output)
    assert table[0] == ["ref", "pack", "description", "enabled"]
    assert {row[0] for row in table[1:]} >= RULES
    assert as_json(st2(api_url, "rule", "list", "-p", "events_pack", "-j")) and \
        {r["ref"] for r in as_json(st2(api_url, "rule", "list", "-p", "events_pack", "-j"))} == RULES
    enabled = {r["ref"] for r in as_json(st2(api_url, "rule", "list", "-p", "events_pack", "--enabled", "-j"))}
    assert enabled == RULES - {"events_pack.every_minute"}
    assert [r["ref"] for r in as_json(st2(api_url, "rule", "list", "--disabled", "-p", "events_pack", "-j"))] == [
        "events_pack.every_minute"]
    assert [r["ref"] for r in as_json(st2(api_url, "rule", "list", "-g", "events_pack.metric", "-j"))] == [
        "events_pack.on_metric"]
    iftt = cells(st2(api_url, "rule", "list", "--iftt", "-c", "core.local").output)
    assert iftt[0] == ["ref", "trigger.ref", "action.ref", "enabled"]
    assert sorted(row[0] for row in iftt[1:]) == ["events_pack.on_deploy_hook", "events_pack.on_metric"]
    limited = st2(api_url, "rule", "list", "-n", "1", "-p", "events_pack")
    assert len(cells(limited.stdout)) == 2 and "Only one rule is displayed" in limited.stderr

    # When one is shown; Then all its fields come, id/uid/ref first
    rule = as_json(st2(api_url, "rule", "get", "events_pack.on_metric", "-j"))
    assert rule["trigger"]["type"] == "events_pack.metric"
    assert rule["criteria"]["trigger.value"] == {"type": "greaterthan", "pattern": 90}
    shown = cells(st2(api_url, "rule", "get", "events_pack.on_metric").output)
    assert [row[0] for row in shown[1:4]] == ["id", "uid", "ref"] and shown[3][1] == "events_pack.on_metric"
    missing = st2(api_url, "rule", "get", "events_pack.nope")
    assert missing.exit_code == 1 and 'Rule "events_pack.nope" is not found.' in missing.output

    # When it is disabled and enabled again; Then the stored rule follows
    assert as_json(st2(api_url, "rule", "disable", "events_pack.on_metric", "-j"))["enabled"] is False
    assert as_json(st2(api_url, "rule", "get", rule["id"], "-j"))["enabled"] is False
    enabled_again = st2(api_url, "rule", "enable", "events_pack.on_metric")
    assert enabled_again.exit_code == 0 and ["enabled", "True"] in cells(enabled_again.output)

    # When a rule file is created, updated and deleted; Then each step shows
    meta = tmp_path / "on_hook.yaml"
    meta.write_text("name: on_hook\npack: default\ndescription: first\ntrigger:\n  type: core.st2.webhook\n"
                    "  parameters:\n    url: cli/hook\naction:\n  ref: core.noop\n")
    created = as_json(st2(api_url, "rule", "create", str(meta), "-j"))
    assert created["ref"] == "default.on_hook" and created["enabled"] is False
    assert st2(api_url, "rule", "create", str(meta)).exit_code == 2  # a duplicate: StackStorm's operation failure
    meta.write_text(meta.read_text().replace("first", "second") + "enabled: true\n")
    updated = as_json(st2(api_url, "rule", "update", "default.on_hook", str(meta), "-j"))
    assert (updated["id"], updated["description"], updated["enabled"]) == (created["id"], "second", True)
    deleted = st2(api_url, "rule", "delete", "default.on_hook")
    assert deleted.exit_code == 0 and 'Resource with id "default.on_hook" has been successfully deleted.' in \
        deleted.output
    assert st2(api_url, "rule", "get", "default.on_hook").exit_code == 1
    assert st2(api_url, "rule", "delete", "default.on_hook").exit_code == 2


def test_enforcements_triggers_instances_traces_webhooks_timers(api_url, chain):
    # Given a trigger instance -> enforcement -> execution chain on record
    # When enforcements are listed and shown; Then the rule, instance and execution ids appear
    table = cells(st2(api_url, "rule-enforcement", "list").output)
    assert table[0] == ["id", "rule.ref", "trigger_instance_id", "execution_id", "enforced_at"]
    assert table[1][:4] == [chain["enforcement"], "events_pack.on_metric", chain["instance"], chain["execution"]]
    assert [e["id"] for e in as_json(st2(api_url, "rule-enforcement", "list", "--rule", "events_pack.on_metric",
                                         "-j"))] == [chain["enforcement"]]
    none = st2(api_url, "rule-enforcement", "list", "--rule", "events_pack.on_deploy_hook", "-j")
    assert none.exit_code == 0 and none.output.strip() == "No matching items found"  # as StackStorm's CLI, -j or not
    assert as_json(st2(api_url, "rule-enforcement", "list", "--execution", chain["execution"], "-j"))[0][
        "trigger_instance_id"] == chain["instance"]
    got = as_json(st2(api_url, "rule-enforcement", "get", chain["enforcement"], "-j"))
    assert got == {"id": chain["enforcement"], "rule": {"ref": "events_pack.on_metric"},
                   "trigger_instance_id": chain["instance"], "execution_id": chain["execution"],
                   "enforced_at": got["enforced_at"]}

    # Trigger types (StackStorm's `st2 trigger` is about types), system ones and the pack's
    types = {t["ref"]: t for t in as_json(st2(api_url, "trigger", "list", "-j"))}
    assert {"core.st2.webhook", "core.st2.IntervalTimer", "events_pack.metric"} <= set(types)
    assert set(types["events_pack.metric"]) == {"ref", "pack", "description"}
    assert cells(st2(api_url, "trigger", "list", "-p", "events_pack").output)[1:] == [
        ["events_pack.heartbeat", "events_pack", "The sensor is alive."],
        ["events_pack.metric", "events_pack", "A measured value crossed into view."]]
    metric = as_json(st2(api_url, "trigger", "get", "events_pack.metric", "-j"))
    assert metric["payload_schema"]["properties"]["value"]["type"] == "number"
    specs = as_json(st2(api_url, "trigger", "getspecs", "core.st2.webhook", "-j"))
    assert [s["parameters"] for s in specs] == [{"url": "events/deploy"}]

    # Trigger instances: listed oldest first with their status, shown with the payload
    instances = cells(st2(api_url, "trigger-instance", "list").output)
    assert instances[0] == ["id", "trigger", "occurrence_time", "status"]
    assert [chain["instance"], "events_pack.metric"] == instances[-1][:2] and instances[-1][3] == "processed"
    shown = as_json(st2(api_url, "trigger-instance", "get", chain["instance"], "-j"))
    assert shown["payload"] == {"value": 95, "host": "web1"} and shown["status"] == "processed"
    assert [i["id"] for i in as_json(st2(api_url, "trigger-instance", "list", "--trigger", "events_pack.metric",
                                         "-j"))] == [chain["instance"]]
    assert st2(api_url, "trigger-instance", "get", "5f0000000000000000000000").exit_code == 1

    # Traces: one trace prints whole (header, then its components in order)
    listed = st2(api_url, "trace", "list")
    assert listed.exit_code == 0, listed.output
    assert f"id: {chain['trace']}" in listed.output and "trace_tag: metric-web1" in listed.output
    assert [row[:3] for row in cells(listed.output)[1:]] == [
        [chain["instance"], "trigger-instance", "events_pack.metric"],
        [chain["rule"], "rule", "events_pack.on_metric"],
        [chain["execution"], "execution", "core.noop"]]
    trace = as_json(st2(api_url, "trace", "get", chain["trace"], "-j"))
    assert [c["object_id"] for c in trace["action_executions"]] == [chain["execution"]]
    only_rules = st2(api_url, "trace", "get", chain["trace"], "--show-rules")
    assert [row[1] for row in cells(only_rules.output)[1:]] == ["rule"]
    by_execution = as_json(st2(api_url, "trace", "list", "-e", chain["execution"], "-j"))
    assert by_execution["id"] == chain["trace"]
    assert as_json(st2(api_url, "trace", "list", "-c", "metric-web1", "-j"))["trace_tag"] == "metric-web1"

    # Webhooks: the url a rule declared
    hooks = st2(api_url, "webhook", "list")
    assert hooks.exit_code == 0, hooks.output
    assert cells(hooks.output)[0] == ["url", "type", "description"]
    assert cells(hooks.output)[1][:2] == ["events/deploy", "core.st2.webhook"]
    assert as_json(st2(api_url, "webhook", "get", "events/deploy", "-j"))["parameters"] == {"url": "events/deploy"}

    # Timers: the timer trigger a rule declared (enabled or not)
    timers = as_json(st2(api_url, "timer", "list", "-j"))
    assert [(t["type"], t["parameters"]) for t in timers] == [("core.st2.IntervalTimer",
                                                               {"unit": "minutes", "delta": 1})]
    assert cells(st2(api_url, "timer", "list").output)[0] == ["id", "uid", "pack", "name", "type", "parameters"]
    assert st2(api_url, "timer", "list", "-ty", "core.st2.CronTimer").output.strip() == "No matching items found"
    assert as_json(st2(api_url, "timer", "get", timers[0]["id"], "-j"))["type"] == "core.st2.IntervalTimer"


def test_trigger_instance_re_emit(api_url, chain):
    # Given a stored trigger instance; When it is re-emitted; Then the server's message is printed
    result = st2(api_url, "trigger-instance", "re-emit", chain["instance"])
    assert result.exit_code == 0, result.output
    assert chain["instance"] in result.output and "re-sent" in result.output
    assert st2(api_url, "trigger-instance", "re-emit", "5f0000000000000000000000").exit_code == 1


def test_rule_test_evaluates_a_rule_file_without_running_anything(api_url, chain, tmp_path):
    # Given the on_metric rule file and the stored metric instance (value 95, host web1)
    rule_file = tmp_path / "packs" / "events_pack" / "rules" / "on_metric.yaml"
    client = Client(api_url=api_url, env={}, config={})
    before = len(client.executions.query(limit=100))

    # When it is tested against the instance; Then it matches, shows each criterion and the rendered command
    matched = st2(api_url, "rule", "test", str(rule_file), "-i", chain["instance"])
    assert matched.exit_code == 0, matched.output
    assert 'Rule "events_pack.on_metric" matches' in matched.output
    assert {row[0]: row[4] for row in cells(matched.output)[1:]} == {"trigger.value": "matched",
                                                                   "trigger.host": "matched"}
    assert "action.ref: core.local" in matched.output and "cmd: echo web1 95" in matched.output

    # When tested against payload files; Then a low value does not match (exit 1), naming the criterion
    low = tmp_path / "low.json"
    low.write_text(json.dumps({"value": 5, "host": "web1"}))
    missed = st2(api_url, "rule", "test", str(rule_file), "--payload", str(low))
    assert missed.exit_code == 1, missed.output
    assert 'does not match' in missed.output and ["trigger.value", "greaterthan", "90", "5", "not matched"] in \
        cells(missed.output)
    answer = json.loads(st2(api_url, "rule", "test", "events_pack.on_metric", "-p", str(low), "-j").output)
    assert answer["matched"] is False

    # And nothing ran
    assert len(client.executions.query(limit=100)) == before


def test_official_st2client_reads_our_event_side(api_url, chain, official_st2):
    # Given the official StackStorm CLI 3.9.0; When its event-side commands run; Then none crashes
    # and each shows the key values. The read-only ones run side by side (each is a ~1 s process).
    reads = {
        "rules": ["rule", "list"], "iftt": ["rule", "list", "--iftt"],
        "rule_json": ["rule", "get", "events_pack.on_metric", "-j"], "rule": ["rule", "get", "events_pack.on_metric"],
        "enforcements": ["rule-enforcement", "list"], "enforcement": ["rule-enforcement", "get", chain["enforcement"]],
        "types": ["trigger", "list"], "type": ["trigger", "get", "events_pack.metric"],
        "instances": ["trigger-instance", "list"], "instance": ["trigger-instance", "get", chain["instance"]],
        "traces": ["trace", "list"], "chain": ["trace", "get", chain["trace"], "-e", chain["execution"]],
        "webhooks": ["webhook", "list"], "webhook": ["webhook", "get", "events/deploy"], "timers": ["timer", "list"],
    }
    pool = eventlet.GreenPool(4)
    runs = dict(zip(reads, pool.imap(lambda args: run_official(args, api_url), reads.values())))
    for name, done in runs.items():
        assert done.returncode == 0 and "ERROR" not in done.stdout, (reads[name], done.stdout, done.stderr)
    out = {name: done.stdout for name, done in runs.items()}

    assert "events_pack.on_metric" in out["rules"] and "events_pack.on_metric" in out["iftt"]
    rule = json.loads(out["rule_json"])
    assert rule["ref"] == "events_pack.on_metric" and rule["enabled"] is True
    assert "events_pack.on_metric" in out["rule"]
    assert chain["enforcement"] in out["enforcements"] and chain["execution"] in out["enforcements"]
    assert chain["instance"] in out["enforcement"]
    assert "events_pack.metric" in out["types"] and "payload_schema" in out["type"]
    assert chain["instance"] in out["instances"] and "processed" in out["instances"]
    assert "web1" in out["instance"]
    assert chain["trace"] in out["traces"] and chain["execution"] in out["traces"]
    assert chain["rule"] in out["chain"]
    assert re.search(r"events/deploy\s*\|\s*core\.st2\.webhook", out["webhooks"])
    assert "events/deploy" in out["webhook"] and "core.st2.IntervalTimer" in out["timers"]

    # When it disables and enables a rule, and re-emits an instance; Then the server accepts its requests
    for args, check in ((["rule", "disable", "events_pack.on_metric", "-j"], lambda o: not json.loads(o)["enabled"]),
                        (["rule", "enable", "events_pack.on_metric", "-j"], lambda o: json.loads(o)["enabled"]),
                        (["trigger-instance", "re-emit", chain["instance"]], lambda o: "re-sent" in o)):
        done = run_official(args, api_url)
        assert done.returncode == 0 and check(done.stdout), (args, done.stdout, done.stderr)
