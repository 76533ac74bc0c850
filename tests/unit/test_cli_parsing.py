"""The st2 CLI's pure parts: action parameters from k=v, attribute selection,
output formats, and where endpoints and credentials come from."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import yaml
from click.testing import CliRunner

from st2client import formatting
from st2client.cli import cli
from st2client.client import Client, St2ClientError, read_config, resolve_settings
from st2client.commands import CommandError
from st2client.commands.action import inherited_env, parse_parameters
from st2client.commands.execution import _child_rows

RUNNER = {"runner_parameters": {"cmd": {"type": "string"}, "timeout": {"type": "integer"},
                                "sudo": {"type": "boolean"}, "env": {"type": "object"}}}
ACTION = {"ref": "core.local", "parameters": {
    "flag": {"type": "boolean"}, "items": {"type": "array"}, "obj": {"type": "object"},
    "num": {"type": "number"}, "timeout": {"type": "string"}, "pairs": {"type": "array"}}}


@pytest.mark.parametrize("args, expected", [
    # The reference's verified example of StackStorm's client.
    (["cmd=date", "timeout=5", "flag=true", "items=a,b", "obj=x=1,y=2", "num=1.5", "sudo=false"],
     {"cmd": "date", "timeout": 5, "flag": True, "items": ["a", "b"], "obj": {"x": "1", "y": "2"},
      "num": 1.5, "sudo": False}),
    (["items=[1, 2, 3]"], {"items": [1, 2, 3]}),
    (["items=51"], {"items": [51]}),
    (["items=a", "items=b,c"], {"items": ["a", "b", "c"]}),
    (['obj={"a": {"b": [1]}}'], {"obj": {"a": {"b": [1]}}}),
    (["flag=False"], {"flag": False}),
    (["unknown=5"], {"unknown": "5"}),
    (["cmd=echo a=b"], {"cmd": "echo a=b"}),
    (["timeout=7"], {"timeout": 7}),  # runner parameters win over the action's
    (["echo", "hello", "world"], {"cmd": "echo hello world"}),
    (["sudo=true", "ls", "-la"], {"sudo": True, "cmd": "ls -la"}),
    ([], {}),
])
def test_parameters_are_cast_like_stackstorm(args, expected):
    # Given k=v arguments / When they are parsed against the runner and action schemas / Then typed values come out
    assert parse_parameters(args, ACTION, RUNNER) == expected


@pytest.mark.parametrize("args, message", [
    (["flag=yes"], "Valid values are: true, false"),
    (["timeout=abc"], 'parameter "timeout" of type integer'),
    (["num=x"], 'parameter "num" of type number'),
    (["@cmd=/does/not/exist"], "doesn't exist"),
])
def test_bad_parameter_values_name_the_problem(args, message):
    with pytest.raises(CommandError, match=message):
        parse_parameters(args, ACTION, RUNNER)


def test_auto_dict_and_files(tmp_path):
    (tmp_path / "body.txt").write_text("payload\n")
    assert parse_parameters(["pairs=a:1,b:2"], ACTION, RUNNER, auto_dict=True) == {"pairs": [{"a": "1", "b": "2"}]}
    assert parse_parameters(["@cmd=body.txt"], ACTION, RUNNER, cwd=str(tmp_path)) == {"cmd": "payload\n"}
    http = dict(ACTION, ref="core.http")
    assert parse_parameters(["@body=body.txt"], http, RUNNER, cwd=str(tmp_path)) == {
        "file_content": "payload\n", "method": "POST", "file_name": "body.txt"}


def test_inherit_env_drops_the_shell_variables():
    env = {"PATH": "/bin", "HOME": "/root", "MY_VAR": "1", "user": "x"}
    assert inherited_env(env) == {"MY_VAR": "1"}
    assert parse_parameters(["cmd=true"], ACTION, RUNNER, inherit_env=True, env=env)["env"] == {"MY_VAR": "1"}


DOC = {"id": "5f00000000000000000000a1", "status": "succeeded",
       "action": {"ref": "core.local", "runner_type": "local-shell-cmd"}, "context": {"user": "stanley"},
       "parameters": {"cmd": "echo hi"}, "result": {"stdout": "hi", "return_code": 0},
       "start_timestamp": "2024-01-01T00:00:00.000000Z", "end_timestamp": "2024-01-01T00:00:03.200000Z"}


@pytest.mark.parametrize("keys, expected", [
    (["id"], {"id": DOC["id"]}),
    (["action.ref", "context.user"], {"action": {"ref": "core.local"}, "context": {"user": "stanley"}}),
    (["result.stdout", "missing", "action.missing"], {"result": {"stdout": "hi"}}),
])
def test_attribute_selection_keeps_the_nesting(keys, expected):
    assert formatting.select(DOC, keys) == expected


@pytest.mark.parametrize("value, tz, expected", [
    ("2024-01-01T00:00:00.000000Z", "UTC", "Mon, 01 Jan 2024 00:00:00 UTC"),
    ("2024-01-01T00:00:00Z", "Europe/Paris", "Mon, 01 Jan 2024 01:00:00 CET"),
    ("2024-07-04 12:30:00", "UTC", "Thu, 04 Jul 2024 12:30:00 UTC"),
    (None, "UTC", ""),
])
def test_dates_are_shown_in_the_configured_zone(value, tz, expected):
    assert formatting.format_isodate(value, tz) == expected


@pytest.mark.parametrize("doc, expected", [
    (DOC, "succeeded (3s elapsed)"),
    (dict(DOC, status="running", end_timestamp=None), "running (10s elapsed)"),
    (dict(DOC, status="requested"), "requested"),
])
def test_status_carries_the_elapsed_time(doc, expected):
    now = datetime(2024, 1, 1, 0, 0, 10, tzinfo=timezone.utc)
    assert formatting.with_elapsed(doc, now)["status"] == expected


def test_execution_result_lines_render_dicts_as_yaml():
    text = formatting.execution_result(DOC, ["id", "status", "result"])
    assert text.splitlines() == [f"id: {DOC['id']}", "status: succeeded", "result: ",
                                 "  return_code: 0", "  stdout: hi"]
    assert formatting.execution_result(DOC, [], key="stdout") == "hi"


def test_tables_and_formats():
    doc = dict(DOC, description="a long description that wraps")
    lines = formatting.table([doc], ["id", "description", "status"], [26, 12, 24]).splitlines()
    assert [cell.strip() for cell in lines[1].split("|")[1:4]] == ["id", "description", "status"]
    # A value wider than its column wraps onto the next lines instead of widening the table.
    assert [[cell.strip() for cell in line.split("|")[1:4]] for line in lines[3:6]] == [
        [DOC["id"], "a long", "succeeded"], ["", "description", ""], ["", "that wraps", ""]]
    detail = formatting.property_table(DOC, ["status", "id", "result"])
    assert [line.split("|")[1].strip() for line in detail.splitlines()[3:5]] == ["id", "status"]
    assert json.loads(formatting.to_json([DOC], ["id", "action.ref"])) == [
        {"id": DOC["id"], "action": {"ref": "core.local"}}]
    assert yaml.safe_load(formatting.to_yaml(DOC, ["all"])) == DOC
    assert formatting.format_status("failed (1s elapsed)", color=True).startswith(formatting.RED + "failed")
    assert formatting.format_status("failed", color=False) == "failed"


CONFIG = """
[general]
base_url = http://config-host
api_version = v9
[credentials]
api_key = config-key
[api]
url = http://config-api:1/v1
[cli]
timezone = Europe/Paris
debug = true
"""


@pytest.mark.parametrize("options, env, use_config, expected", [
    ({}, {}, False, {"api_url": "http://127.0.0.1:9101/v1", "auth_url": "http://127.0.0.1:9100",
                     "stream_url": "http://127.0.0.1:9102/v1", "api_key": None, "token": None}),
    ({}, {"ST2_BASE_URL": "http://env-host"}, False,
     {"api_url": "http://env-host:9101/v1", "auth_url": "http://env-host:9100"}),
    ({}, {}, True, {"api_url": "http://config-api:1/v1", "auth_url": "http://config-host:9100",
                    "stream_url": "http://config-host:9102/v9", "api_key": "config-key", "debug": True}),
    ({}, {"ST2_API_URL": "http://env-api/v1", "ST2_API_KEY": "env-key", "ST2_AUTH_TOKEN": "env-token"}, True,
     {"api_url": "http://env-api/v1", "api_key": "env-key", "token": "env-token"}),
    ({"api_url": "http://opt/v1/", "api_key": "opt-key", "token": "opt-token"},
     {"ST2_API_URL": "http://env-api/v1", "ST2_API_KEY": "env-key", "ST2_AUTH_TOKEN": "env-token"}, True,
     {"api_url": "http://opt/v1", "api_key": "opt-key", "token": "opt-token"}),
    ({"base_url": "http://opt-host"}, {"ST2_BASE_URL": "http://env-host"}, True,
     {"base_url": "http://opt-host", "api_url": "http://config-api:1/v1", "auth_url": "http://opt-host:9100"}),
    ({}, {"ST2_API_VERSION": "v2", "ST2_BASE_URL": "https://h"}, False, {"api_url": "https://h:9101/v2"}),
])
def test_settings_precedence_option_env_config_default(tmp_path, options, env, use_config, expected):
    # Given options, environment variables and a config file / When settings resolve / Then each option
    # comes from the first place that has it
    path = tmp_path / "config"
    path.write_text(CONFIG)
    settings = resolve_settings(options, env, read_config(str(path)) if use_config else {})
    assert {name: getattr(settings, name) for name in expected} == expected


def test_config_file_values_are_typed_and_defaulted(tmp_path):
    path = tmp_path / "config"
    path.write_text(CONFIG)
    config = read_config(str(path))
    assert config["cli"] == {"debug": True, "cache_token": True, "timezone": "Europe/Paris"}
    assert read_config(str(tmp_path / "absent"))["general"]["silence_schema_output"] is True
    path.write_text("[cli]\ndebug = maybe\n")
    with pytest.raises(St2ClientError, match="debug"):
        read_config(str(path))


def test_client_reads_st2_config_file_from_env(tmp_path):
    path = tmp_path / "config"
    path.write_text(CONFIG)
    client = Client(env={"ST2_CONFIG_FILE": str(path)})
    assert client.endpoints["api"] == "http://config-api:1/v1" and client.api_key == "config-key"
    assert Client(env={"ST2_CONFIG_FILE": str(path), "ST2_CLI_SKIP_CONFIG": "1"}).api_key is None
    with pytest.raises(St2ClientError, match="does not exist"):
        Client(cacert=str(tmp_path / "missing.pem"), env={})


def test_cli_global_options(tmp_path):
    path = tmp_path / "config"
    path.write_text(CONFIG)
    runner = CliRunner()
    result = runner.invoke(cli, ["--config-file", str(path), "--print-config"])
    assert result.exit_code == 3 and "timezone = Europe/Paris" in result.output
    result = runner.invoke(cli, ["--config-file", str(tmp_path / "nope"), "action", "list"])
    assert result.exit_code == 1 and "not found" in result.output
    result = runner.invoke(cli, ["execution", "list", "-a"])
    assert result.exit_code == 2
    assert runner.invoke(cli, ["--version"]).output.startswith("st2 ")


def test_workflow_children_are_indented_under_their_parent():
    # Given a workflow's descendants depth-first, one of them a sub-workflow
    children = [
        {"id": "c1", "parent": "p", "status": "succeeded", "action": {"ref": "core.noop"},
         "context": {"orquesta": {"task_name": "t1"}}, "children": ["g1"]},
        {"id": "g1", "parent": "c1", "status": "succeeded", "action": {"ref": "core.local"},
         "context": {"orquesta": {"task_name": "t1a"}}},
        {"id": "c2", "parent": "p", "status": "failed", "action": {"ref": "core.local"},
         "context": {"chain": {"name": "t2"}}},
    ]
    # When they become table rows; Then ids are prefixed and indented as StackStorm's CLI does
    rows = _child_rows(children, "p", elapsed=False)
    assert [(r["id"], r["task"], r["action"]) for r in rows] == [
        ("+ c1", "t1", "core.noop"), ("   g1", "t1a", "core.local"), ("  c2", "t2", "core.local")]
