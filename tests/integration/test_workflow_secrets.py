"""Datastore secrets decrypted by Orquesta expressions reach the child actions, and nothing else:
not the stored child, workflow or task execution records, the workflow's result, the API nor the logs.
"""

from __future__ import annotations

import logging

import requests
import yaml

from st2common import statuses
from st2common.content import bootstrap
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.workflow import TaskExecutionDB, WorkflowExecutionDB
from st2common.persistence.access import Access
from st2common.services import executions, keyvalues, workflows
from st2common.util import crypto
from testsupport import PLANTED_SECRETS
from workflowsupport import api_url, embedded  # noqa: F401 (fixtures)

SYSTEM_SECRET = "db-Pa55w0rd-7f3a"
USER_SECRET = "own-Tok3n-91c2"
PLANTED_SECRETS.update({SYSTEM_SECRET, USER_SECRET})


def _install_workflow(platform, out_dir) -> None:
    """wf_pack.secret_kv: a task input and a publish read encrypted items with decrypt."""
    actions = platform.settings.content.packs_base_paths[0] / "wf_pack" / "actions"
    definition = {
        "version": 1.0,
        "input": ["out_dir"],
        "tasks": {
            "direct": {
                "action": "core.local",
                "input": {"cmd": "printf '%s|%s' \"<% st2kv('system.db_pw', decrypt=>true) %>\" "
                                 "\"<% st2kv('own_token', decrypt=>true) %>\" > <% ctx(out_dir) %>/direct.txt"},
                "next": [{"when": "<% succeeded() %>",
                          "publish": [{"pw": "{{ st2kv('system.db_pw', decrypt=true) }}"}],
                          "do": "published"}],
            },
            "published": {
                "action": "core.local",
                "input": {"cmd": "printf '%s' '<% ctx(pw) %>' > <% ctx(out_dir) %>/published.txt; "
                                 "echo \"the password is <% ctx(pw) %>\""},
            },
        },
        "output": [{"pw": "<% ctx(pw) %>"}, {"sentence": "pw=<% ctx(pw) %>"}],
    }
    (actions / "workflows" / "secret_kv.yaml").write_text(yaml.safe_dump(definition))
    (actions / "secret_kv.yaml").write_text(yaml.safe_dump({
        "name": "secret_kv", "pack": "wf_pack", "runner_type": "orquesta", "enabled": True,
        "entry_point": "workflows/secret_kv.yaml", "parameters": {"out_dir": {"type": "string", "required": True}}}))
    report = bootstrap.register(platform.settings, kinds=["actions"])
    assert not report.errors, report.errors


def _assert_clean(what: str, text: str) -> None:
    for secret in (SYSTEM_SECRET, USER_SECRET):
        assert secret not in text, f"{what} holds the clear secret: {text[:2000]}"


def test_decrypted_items_reach_children_but_no_record_result_api_or_log(embedded, api_url, tmp_path,  # noqa: F811
                                                                         caplog):
    # Given an encrypted system item and an encrypted item of the workflow's user
    caplog.set_level(logging.DEBUG)
    crypto.write_key_file(embedded.settings.keyvalue.encryption_key_path)
    store = keyvalues.Datastore(embedded.settings)
    store.set("db_pw", SYSTEM_SECRET, secret=True)
    store.set("own_token", USER_SECRET, scope="user", user=executions.SYSTEM_USER, secret=True)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _install_workflow(embedded, out_dir)

    # When a workflow decrypts them in a task's input and in a publish the next task reads
    execution = embedded.run("wf_pack.secret_kv", {"out_dir": str(out_dir)})

    # Then both children got the clear values
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert (out_dir / "direct.txt").read_text() == f"{SYSTEM_SECRET}|{USER_SECRET}"
    assert (out_dir / "published.txt").read_text() == SYSTEM_SECRET
    # And the workflow's output shows the published value masked
    assert execution.result["output"] == {"pw": "********", "sentence": "pw=********"}
    children = embedded.children(execution)
    assert [c.status for c in children] == [statuses.SUCCEEDED, statuses.SUCCEEDED]
    assert children[1].result["stdout"] == "the password is ********"
    # And the children's stored parameters name the items, not their values
    assert 'st2kv.system["db_pw"] | decrypt_kv' in children[0].parameters["cmd"]
    assert 'st2kv.user["own_token"] | decrypt_kv' in children[0].parameters["cmd"]

    # And no stored document holds a clear value
    for child in children:
        _assert_clean(f"child {child.pk}", str(Access(ExecutionDB).get_by_id(child.pk).to_mongo()))
    _assert_clean("the workflow's execution", str(Access(ExecutionDB).get_by_id(execution.pk).to_mongo()))
    workflow = Access(WorkflowExecutionDB).get(action_execution=str(execution.pk))
    _assert_clean("the workflow execution", str(workflow.to_mongo()))
    # (the published variable is stored as the item's template: a conductor read back after an
    # engine restart hands a later task the item to decrypt, never the clear value)
    published = [c["vars"]["pw"] for c in workflow.state["contexts"] if "pw" in c["vars"]]
    assert published == ['{{ st2kv.system["db_pw"] | decrypt_kv }}']
    tasks = Access(TaskExecutionDB).query({"workflow_execution": str(workflow.pk)})
    assert len(tasks) == 2
    for task in tasks:
        _assert_clean(f"task execution {task.task_id}", str(task.to_mongo()))

    # And the API shows none (api_app's guard checks every response for the planted values too)
    for path in (f"/executions/{execution.pk}", f"/executions/{execution.pk}/children",
                 f"/executions/{children[1].pk}", "/executions?limit=50"):
        response = requests.get(api_url + path, timeout=10)
        assert response.status_code == 200, response.text
        _assert_clean(f"GET {path}", response.text)

    # And no log line of the run holds one
    for record in caplog.records:
        _assert_clean(f"log line {record.name}", record.getMessage() + (record.exc_text or ""))


def _install_subworkflow(platform) -> None:
    """wf_pack.secret_parent hands a decrypted item to wf_pack.secret_child, which writes it out."""
    actions = platform.settings.content.packs_base_paths[0] / "wf_pack" / "actions"
    child = {"version": 1.0, "input": ["pw", "out_dir"],
             "tasks": {"write": {"action": "core.local",
                                 "input": {"cmd": "printf '%s' '<% ctx(pw) %>' > <% ctx(out_dir) %>/sub.txt"}}},
             "output": [{"got": "<% ctx(pw) %>"}]}
    parent = {"version": 1.0, "input": ["out_dir"],
              "tasks": {"sub": {"action": "wf_pack.secret_child",
                                "input": {"pw": "<% st2kv('system.db_pw', decrypt=>true) %>",
                                          "out_dir": "<% ctx(out_dir) %>"}}}}
    for name, definition, parameters in (
            ("secret_child", child, {"pw": {"type": "string"}, "out_dir": {"type": "string"}}),
            ("secret_parent", parent, {"out_dir": {"type": "string", "required": True}})):
        (actions / "workflows" / f"{name}.yaml").write_text(yaml.safe_dump(definition))
        (actions / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "pack": "wf_pack", "runner_type": "orquesta", "enabled": True,
            "entry_point": f"workflows/{name}.yaml", "parameters": parameters}))
    report = bootstrap.register(platform.settings, kinds=["actions"])
    assert not report.errors, report.errors


def test_a_subworkflow_given_a_decrypted_item_stores_only_its_reference(embedded, tmp_path):  # noqa: F811
    # Given an encrypted item, and a workflow handing it decrypted to a subworkflow
    crypto.write_key_file(embedded.settings.keyvalue.encryption_key_path)
    keyvalues.Datastore(embedded.settings).set("db_pw", SYSTEM_SECRET, secret=True)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _install_subworkflow(embedded)
    # When it runs
    execution = embedded.run("wf_pack.secret_parent", {"out_dir": str(out_dir)})
    # Then the subworkflow's task got the clear value
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert (out_dir / "sub.txt").read_text() == SYSTEM_SECRET
    # And neither workflow's records, executions nor task executions hold it
    for workflow in Access(WorkflowExecutionDB).query():
        _assert_clean(f"workflow execution {workflow.pk}", str(workflow.to_mongo()))
    for stored in Access(ExecutionDB).query():
        _assert_clean(f"execution {stored.pk} ({stored.action_ref})", str(stored.to_mongo()))
    for task in Access(TaskExecutionDB).query():
        _assert_clean(f"task execution {task.task_id}", str(task.to_mongo()))


def test_a_workflow_stores_an_input_the_action_runner_decrypted_as_its_reference(embedded):  # noqa: F811
    # Given a subworkflow's execution whose stored parameter decrypts an item (a sealed task input),
    # which the action runner (another process, in production) rendered to the clear value
    from st2workflowengine.orquesta import inspection

    reference = '{{ st2kv.system["db_pw"] | decrypt_kv }}'
    execution = Access(ExecutionDB).add_or_update(ExecutionDB(
        status=statuses.RUNNING, action_ref="wf_pack.secret_child", action={"ref": "wf_pack.secret_child"},
        runner={"name": "orquesta"}, parameters={"pw": reference, "out_dir": "/tmp"},
        context={"user": executions.SYSTEM_USER}))
    spec = inspection.check("version: 1.0\ninput: [pw, out_dir]\ntasks:\n  t:\n    action: core.noop\n",
                            workflows.action_lookup())
    # When the orquesta runner hands the workflow to the engine with the rendered input
    handed = []
    workflow = workflows.request(lambda *message: handed.append(message), str(execution.pk), spec,
                                 {"pw": SYSTEM_SECRET, "out_dir": "/tmp"})
    # Then the stored workflow keeps the reference, and the other inputs as given
    stored = Access(WorkflowExecutionDB).get_by_id(workflow.pk)
    assert stored.input == {"pw": reference, "out_dir": "/tmp"}
    assert len(handed) == 1
