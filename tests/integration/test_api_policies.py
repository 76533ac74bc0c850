"""/v1/policies and /v1/policytypes through the REST API, and `st2 policy` / `st2 policy-type`
(ours through click's CliRunner, the official st2client 3.9.0 against the same server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import eventlet
import pytest
from click.testing import CliRunner
from eventlet import wsgi
from test_api_support import GuardedApp, write

from testsupport import api_app
from st2client.cli import cli
from st2common.content import register
from st2common.models.db.policy import PolicyDB
from st2common.persistence.access import Access
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from testsupport import make_settings
from e2e.st2client_compat import official_st2, run_official, side_by_side  # noqa: F401 (session fixture)

REPO = Path(__file__).resolve().parents[2]
POLICY_PACK = REPO / "tests" / "fixtures" / "packs" / "policy_pack"
NEW_POLICY = {"name": "echo.retry", "pack": "policy_pack", "resource_ref": "core.echo",
              "policy_type": "action.retry", "parameters": {"retry_on": "timeout"}}


@pytest.fixture
def settings(tmp_path, embedded_mongo):
    shutil.copytree(POLICY_PACK, tmp_path / "packs" / "policy_pack")
    return make_settings(tmp_path, embedded_mongo, extra={
        "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(REPO / "contrib" / "packs"),
        "ST2_CONTENT__PACKS_BASE_PATHS": str(tmp_path / "packs"),
    })


@pytest.fixture
def publisher(settings, db):
    pub = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
    pub.declare_work_queues()
    report = register(settings, kinds=["actions", "policies"], publisher=pub)
    assert report.ok, report.errors
    yield pub
    pub.close()


@pytest.fixture
def api(settings, publisher) -> GuardedApp:
    return GuardedApp(api_app(settings, publisher))


def test_policy_types_are_listed_and_got_by_ref(api):
    types = api.get("/v1/policytypes").json
    assert [t["ref"] for t in types] == ["action.concurrency", "action.concurrency.attr", "action.retry"]
    retry = api.get("/v1/policytypes/action.retry").json
    assert set(retry) == {"id", "uid", "ref", "name", "resource_type", "enabled", "module", "parameters",
                          "description"}
    assert retry["uid"] == "policy_type:action:retry" and retry["parameters"]["max_retry_count"]["maximum"] == 5
    assert api.get(f"/v1/policytypes/{retry['id']}").json == retry
    assert [t["name"] for t in api.get("/v1/policytypes?resource_type=action&name=retry").json] == ["retry"]
    api.get("/v1/policytypes/action.nope", status=404)


def test_policies_are_listed_filtered_and_got(api):
    listed = api.get("/v1/policies").json
    assert {p["ref"] for p in listed} == {"policy_pack.sleepy.concurrency", "policy_pack.guarded.concurrency",
                                          "policy_pack.grouped.concurrency_by_group", "policy_pack.flaky.retry"}
    one = api.get("/v1/policies/policy_pack.flaky.retry").json
    assert set(one) == {"id", "uid", "ref", "name", "pack", "enabled", "resource_ref", "policy_type",
                        "parameters", "description", "metadata_file"}
    assert one["uid"] == "policy:policy_pack:flaky.retry"
    assert one["parameters"] == {"retry_on": "failure", "max_retry_count": 2}
    assert [p["ref"] for p in api.get("/v1/policies?policy_type=action.retry").json] == ["policy_pack.flaky.retry"]
    assert len(api.get("/v1/policies?resource_ref=policy_pack.sleepy").json) == 1
    assert api.get("/v1/policies/policy_pack.nope", status=404).json["faultstring"] == \
        'Resource with a reference or id "policy_pack.nope" not found'


def test_a_policy_is_created_updated_and_deleted(api):
    # When a policy is created; Then it is stored with the type's defaults
    created = api.post_json("/v1/policies", NEW_POLICY, status=201).json
    assert created["ref"] == "policy_pack.echo.retry" and created["parameters"]["max_retry_count"] == 2
    # And creating it again is a conflict, as is a second retry policy for the same action
    api.post_json("/v1/policies", NEW_POLICY, status=409)
    other = dict(NEW_POLICY, name="echo.retry2")
    assert "already has a action.retry policy" in api.post_json("/v1/policies", other, status=409).json[
        "faultstring"]
    # When it is updated with what GET shows, changed
    body = dict(api.get(f"/v1/policies/{created['id']}").json, parameters={"retry_on": "failure", "delay": 3})
    updated = api.put_json("/v1/policies/policy_pack.echo.retry", body).json
    assert updated["parameters"] == {"retry_on": "failure", "delay": 3, "max_retry_count": 2}
    assert updated["id"] == created["id"]
    # When it is deleted; Then it is gone
    api.delete("/v1/policies/policy_pack.echo.retry", status=204)
    api.get("/v1/policies/policy_pack.echo.retry", status=404)


@pytest.mark.parametrize("change, fault", [
    ({"resource_ref": "core.nope"}, 'action "core.nope" referenced by resource_ref is not registered'),
    ({"policy_type": "action.throttle"}, 'policy type "action.throttle" is not known'),
    ({"parameters": {"retry_on": "sometimes"}}, "parameters.retry_on: 'sometimes' is not one of"),
    ({"resource_ref": None}, "resource_ref"),
    ({"shape": "round"}, 'unknown field "shape"'),
])
def test_a_bad_policy_is_a_400_naming_the_problem(api, change, fault):
    body = {k: v for k, v in dict(NEW_POLICY, **change).items() if v is not None}
    response = api.post_json("/v1/policies", body, status=400)
    assert fault in response.json["faultstring"]
    assert Access(PolicyDB).get(name="echo.retry") is None


# -- the CLIs ------------------------------------------------------------------------------------


@pytest.fixture
def api_url(settings, publisher):
    sock = eventlet.listen(("127.0.0.1", 0))
    server = eventlet.spawn(wsgi.server, sock, api_app(settings, publisher), log_output=False)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server.kill()
    sock.close()


def st2(api_url: str, *args: str):
    return CliRunner().invoke(cli, ["--api-url", api_url, "--skip-config", *args], catch_exceptions=False,
                              env={"COLUMNS": "240"})


def test_st2_policy_and_policy_type_commands(api_url, tmp_path):
    listed = st2(api_url, "policy", "list", "-j")
    assert listed.exit_code == 0, listed.output
    assert {p["ref"] for p in json.loads(listed.output)} >= {"policy_pack.flaky.retry"}
    assert set(json.loads(listed.output)[0]) == {"ref", "resource_ref", "policy_type", "enabled"}
    filtered = json.loads(st2(api_url, "policy", "list", "-r", "policy_pack.sleepy", "-j").output)
    assert [p["ref"] for p in filtered] == ["policy_pack.sleepy.concurrency"]
    shown = json.loads(st2(api_url, "policy", "get", "policy_pack.sleepy.concurrency", "-j").output)
    assert shown["parameters"] == {"threshold": 2, "action": "delay"}
    table = st2(api_url, "policy", "list").output
    assert "policy_pack.guarded.concurrency" in table and "resource_ref" in table
    # create / delete
    created = st2(api_url, "policy", "create", str(write(tmp_path / "p.yaml", json.dumps(NEW_POLICY))), "-j")
    assert created.exit_code == 0, created.output
    assert json.loads(created.output)["ref"] == "policy_pack.echo.retry"
    refused = st2(api_url, "policy", "create", str(write(tmp_path / "bad.json", json.dumps(
        dict(NEW_POLICY, name="x", resource_ref="core.nope")))))
    assert refused.exit_code == 2 and "core.nope" in refused.output
    deleted = st2(api_url, "policy", "delete", "policy_pack.echo.retry")
    assert deleted.exit_code == 0 and "successfully deleted" in deleted.output
    # policy types
    types = json.loads(st2(api_url, "policy-type", "list", "-j").output)
    assert [t["name"] for t in types] == ["concurrency", "concurrency.attr", "retry"]
    assert set(types[0]) == {"id", "resource_type", "name", "description"}
    assert json.loads(st2(api_url, "policy-type", "get", "action.retry", "-j").output)["ref"] == "action.retry"


def test_the_official_client_lists_and_gets_policies(api_url, official_st2):
    commands = (["policy", "list"], ["policy", "get", "policy_pack.flaky.retry"], ["policy-type", "list"],
                ["policy-type", "get", "action.concurrency"], ["policy", "list", "-j"])
    # Read-only, so side by side (each is a ~1 s process).
    results = side_by_side([lambda args=args: run_official(args, api_url) for args in commands])
    for args, result in zip(commands, results):
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    assert "policy_pack.sleepy.concurrency" in results[0].stdout
