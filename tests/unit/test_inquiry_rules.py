"""The inquiry rules on records in memory: who may answer, what a valid answer is, which inquiries are
open; and the CLI's interactive form, fed through click's test runner."""

from __future__ import annotations

import click
import pytest
from bson import ObjectId
from click.testing import CliRunner

from st2client.commands.inquiry import ask
from st2common import statuses
from st2common.exceptions import AccessDeniedError, ValidationError
from st2common.models.db.execution import ExecutionDB
from st2common.services import inquiries

SCHEMA = {"type": "object", "properties": {
    "approved": {"type": "boolean", "required": True},
    "count": {"type": "integer", "default": 3},
}}


def inquiry(users=(), roles=(), status=statuses.PENDING, runner="inquirer") -> ExecutionDB:
    return ExecutionDB(id=ObjectId(), status=status, action_ref="core.ask", action={}, runner={"name": runner},
                       result={"schema": SCHEMA, "users": list(users), "roles": list(roles), "route": "r",
                               "ttl": 1440})


@pytest.mark.parametrize("users, roles, user, user_roles, allowed", [
    ((), (), "anyone", [], True),
    (("alice",), (), "alice", [], True),
    (("alice",), (), "bob", [], False),
    ((), ("approvers",), "bob", ["approvers"], True),
    ((), ("approvers",), "bob", ["observer"], False),
    (("alice",), ("approvers",), "alice", [], False),
    (("alice",), ("approvers",), "alice", ["approvers"], True),
])
def test_users_and_roles_both_apply_when_set(users, roles, user, user_roles, allowed):
    record = inquiry(users, roles)
    if allowed:
        inquiries.check_permission(record, user, user_roles)
    else:
        with pytest.raises(AccessDeniedError, match=f'User "{user}" does not have permission'):
            inquiries.check_permission(record, user, user_roles)


def test_admins_may_always_answer():
    inquiries.check_permission(inquiry(users=["alice"], roles=["approvers"]), "root", [], is_admin=True)


def test_a_valid_answer_gets_the_schema_defaults():
    assert inquiries.validate_response(inquiry(), {"approved": False}) == {"approved": False, "count": 3}


@pytest.mark.parametrize("response, named", [
    ({}, '"approved" is a required property'),
    ({"approved": "yes"}, "response.approved: 'yes' is not of type 'boolean'"),
    ({"approved": True, "count": "many"}, "response.count"),
    (["approved"], "response: must be an object"),
])
def test_an_invalid_answer_names_the_problem(response, named):
    record = inquiry()
    with pytest.raises(ValidationError) as refused:
        inquiries.validate_response(record, response)
    assert str(refused.value).startswith(f'Response for inquiry "{record.pk}" did not pass schema validation.')
    assert named in str(refused.value)


@pytest.mark.parametrize("record, message", [
    (inquiry(runner="local-shell-cmd"), 'Action execution "{id}" is not an inquiry.'),
    (inquiry(status=statuses.TIMED_OUT), 'Inquiry "{id}" timed out and cannot be responded to.'),
    (inquiry(status=statuses.SUCCEEDED), 'Inquiry "{id}" has already been responded to.'),
])
def test_only_pending_inquiries_are_open(record, message):
    with pytest.raises(ValidationError) as refused:
        inquiries.check_open(record)
    assert str(refused.value) == message.format(id=record.pk)


def test_api_shape_is_the_question():
    record = inquiry(users=["alice"])
    assert inquiries.to_api(record) == {"id": str(record.pk), "route": "r", "ttl": 1440, "users": ["alice"],
                                        "roles": [], "schema": SCHEMA}


def fill(properties: dict, typed: str):
    """Run the interactive form with typed as the keyboard input; (answer, what was printed)."""
    answers = {}

    @click.command()
    def form():
        answers.update(ask(properties))

    result = CliRunner().invoke(form, input=typed, catch_exceptions=False)
    return answers, result.output


def test_form_reads_each_type_and_takes_defaults():
    properties = {
        "approved": {"type": "boolean"},
        "size": {"type": "integer", "default": 2},
        "ratio": {"type": "number"},
        "colour": {"enum": ["red", "green"], "default": "green"},
        "tags": {"type": "array"},
        "owner": {"type": "object", "properties": {"name": {"type": "string", "default": "ops"}}},
    }
    answer, shown = fill(properties, "yes\n\n0.5\n0\na, b\n\n")
    assert answer == {"approved": True, "size": 2, "ratio": 0.5, "colour": "red", "tags": ["a", "b"],
                      "owner": {"name": "ops"}}
    assert "size (integer) [2]: " in shown and "owner.name [ops]: " in shown and "Choose from 0, 1 [1]: " in shown


def test_form_asks_again_until_a_value_fits():
    answer, shown = fill({"count": {"type": "integer", "required": True}}, "\nmany\n7\n")
    assert answer == {"count": 7}
    assert "A value is required." in shown and "invalid literal" in shown
