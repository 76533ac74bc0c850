"""Clear values decrypted by workflow expressions: sealed into decrypt_kv templates for children and
the stored state, masked in output and errors, still clear in the conductor's memory."""

from __future__ import annotations

import jinja2
import pytest
import yaml

from st2common.expressions import secrets
from st2common.services.workflow_records import state_fields
from st2workflowengine.orquesta import TaskEvent, WorkflowConductor

CLEAR = {("system", "db_pw", None): "Pa55-{{w0rd}}", ("user", "token", "alice"): "alice-T0ken"}
WORKFLOW = yaml.safe_dump({
    "version": 1.0,
    "tasks": {
        "first": {"action": "core.local", "input": {"cmd": "login <% st2kv('system.db_pw', decrypt=>true) %>"},
                  "next": [{"publish": [{"pw": "{{ st2kv('system.db_pw', decrypt=true) }}"}], "do": "second"}]},
        "second": {"action": "core.local",
                   "input": {"cmd": "use <% ctx(pw) %> and <% st2kv('token', decrypt=>true) %>"}},
    },
    "output": [{"said": "pw=<% ctx(pw) %>"}],
})


def kv_lookup(name, scope, user, decrypt):
    """The datastore as the engine reads it: encrypted items are ciphertext unless decrypted."""
    clear = CLEAR.get((scope, name, user if scope == "user" else None))
    if clear is None:
        return "plain"
    return clear if decrypt else "AES:" + clear[::-1]


@pytest.fixture(autouse=True)
def ledger():
    secrets.LEDGER.clear()
    yield secrets.LEDGER
    secrets.LEDGER.clear()


def render(template: str) -> str:
    """A sealed value rendered as the action runner would: st2kv items decrypted."""
    env = jinja2.Environment()
    env.filters["decrypt_kv"] = lambda value: value
    st2kv = {"system": {"db_pw": CLEAR[("system", "db_pw", None)]},
             "user": {"token": CLEAR[("user", "token", "alice")]}}
    return env.from_string(template).render(st2kv=st2kv)


def test_a_sealed_string_names_the_item_and_renders_back_to_the_same_text():
    secrets.record("Pa55-{{w0rd}}", "system", "db_pw", None)
    sealed = secrets.seal({"cmd": "a {{ b }} Pa55-{{w0rd}} {% endraw %} end", "pw": "Pa55-{{w0rd}}"}, "alice")
    assert "Pa55" not in str(sealed)
    assert sealed["pw"] == '{{ st2kv.system["db_pw"] | decrypt_kv }}'
    assert render(sealed["cmd"]) == "a {{ b }} Pa55-{{w0rd}} {% endraw %} end"


def test_user_items_are_sealed_only_for_their_owner():
    secrets.record("alice-T0ken", "user", "token", "alice")
    assert secrets.seal("x alice-T0ken", "alice") == '{% raw %}x {% endraw %}{{ st2kv.user["token"] | decrypt_kv }}'
    assert secrets.seal("x alice-T0ken", "bob") == "x alice-T0ken"
    assert secrets.mask("x alice-T0ken") == "x ********"


def test_children_get_templates_the_output_is_masked_and_a_reloaded_conductor_still_seals():
    # Given a workflow whose first task decrypts an item in its input, and publishes it
    conductor = WorkflowConductor(WORKFLOW, {}, {"st2": {"user": "alice"}}, kv_lookup=kv_lookup)
    conductor.request_workflow_status("running")
    [first] = conductor.get_next_tasks()
    # Then the child's input names the item
    assert render(first.actions[0].input["cmd"]) == "login Pa55-{{w0rd}}"
    assert "Pa55" not in str(first.actions[0].input)
    # When it succeeds, the publish puts the clear value in the conductor's memory only
    finish(conductor, first)
    fields = state_fields(conductor)
    assert "Pa55" not in str(fields)
    assert any(c["vars"].get("pw") == "Pa55-{{w0rd}}" for c in conductor.state.contexts)
    # And a conductor read back from the stored fields (an engine restart) hands the next child
    # the item to decrypt, never the clear value
    again = WorkflowConductor(WORKFLOW, fields["input"], {"st2": {"user": "alice"}}, state=fields["state"],
                              errors=fields["errors"], output=fields["output"], kv_lookup=kv_lookup)
    [second] = again.get_next_tasks()
    cmd = second.actions[0].input["cmd"]
    assert "Pa55" not in cmd and "alice-T0ken" not in cmd
    assert render(cmd) == "use Pa55-{{w0rd}} and alice-T0ken"
    # And its output, rendered from the stored context, names the item rather than show its value
    finish(again, second)
    assert again.result() == {"output": {"said": 'pw={{ st2kv.system["db_pw"] | decrypt_kv }}'}}


def finish(conductor: WorkflowConductor, task) -> None:
    for status in ("running", "succeeded"):
        conductor.update_task_state(TaskEvent(task.task_id, 0, status, {}, seq=task.seq, attempt=task.attempt))


def test_the_output_of_a_conductor_kept_in_memory_is_masked():
    conductor = WorkflowConductor(WORKFLOW, {}, {"st2": {"user": "alice"}}, kv_lookup=kv_lookup)
    conductor.request_workflow_status("running")
    [first] = conductor.get_next_tasks()
    finish(conductor, first)
    [second] = conductor.get_next_tasks()
    finish(conductor, second)
    assert conductor.result() == {"output": {"said": "pw=********"}}
    assert state_fields(conductor)["output"] == {"said": "pw=********"}


def test_a_clear_value_inside_a_raw_block_is_sealed_too():
    secrets.record("Pa55-{{w0rd}}", "system", "db_pw", None)
    sealed = secrets.seal("{% raw %}x Pa55-{{w0rd}}{% endraw %}", None)
    assert "Pa55" not in sealed
    assert render(sealed) == "{% raw %}x Pa55-{{w0rd}}{% endraw %}"


def test_two_users_items_holding_the_same_value_are_each_named_for_their_owner():
    secrets.record("shared-V4lue", "user", "token", "alice")
    secrets.record("shared-V4lue", "user", "key", "bob")
    assert secrets.seal("shared-V4lue", "alice") == '{{ st2kv.user["token"] | decrypt_kv }}'
    assert secrets.seal("shared-V4lue", "bob") == '{{ st2kv.user["key"] | decrypt_kv }}'
    assert secrets.stored({"state": {"v": "shared-V4lue"}}, "carol") == {"state": {"v": "********"}}
