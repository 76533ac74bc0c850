"""`st2 rule-enforcement list/get`: the records of rules matching trigger instances."""

from __future__ import annotations

import click

from st2client.commands import Group, resource_options, session
from st2client.commands.rule import (attr_option, date_transforms, fetch_each, last_option, print_listing,
                                     show_each, width_option)

LIST_ATTRIBUTES = ["id", "rule.ref", "trigger_instance_id", "execution_id", "enforced_at"]
GET_ATTRIBUTES = ["id", "rule.ref", "trigger_instance_id", "execution_id", "failure_reason", "enforced_at"]


@click.group("rule-enforcement", cls=Group, help="Models that represent enforcement of rules.")
def rule_enforcement_group() -> None:
    """st2 rule-enforcement ..."""


@rule_enforcement_group.command("list", help="Get the list of the 50 most recent rule enforcements.")
@last_option("rule enforcements")
@click.option("--trigger-instance", help="Trigger instance id to filter the list.")
@click.option("--execution", help="Execution id to filter the list.")
@click.option("--rule", help="Rule ref to filter the list.")
@click.option("-tg", "--timestamp-gt", help="Only return enforcements with enforced_at greater than the one "
                                            "provided. Use time in the format 2000-01-01T12:00:00.000Z")
@click.option("-tl", "--timestamp-lt", help="Only return enforcements with enforced_at lower than the one "
                                            "provided. Use time in the format 2000-01-01T12:00:00.000Z")
@attr_option(LIST_ATTRIBUTES)
@width_option
@resource_options
def list_enforcements(last: int, trigger_instance: str | None, execution: str | None, rule: str | None,
                      timestamp_gt: str | None, timestamp_lt: str | None, attr: tuple, width: tuple) -> None:
    sess = session()
    found, count = sess.client.ruleenforcements.query_with_count(
        limit=last, trigger_instance=trigger_instance, execution=execution, rule_ref=rule,
        enforced_at_gt=timestamp_gt, enforced_at_lt=timestamp_lt)
    rows = [e.serialize() for e in found]
    # As StackStorm's CLI: JSON/YAML oldest first, the table as the server sorts it (newest first).
    if sess.json or sess.yaml:
        rows.reverse()
    print_listing(sess, rows, list(attr), width, date_transforms(sess, "enforced_at"),
                  entity="rule enforcements", last=last, count=count)


@rule_enforcement_group.command("get", help="Get individual rule enforcement.")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@attr_option(GET_ATTRIBUTES)
@resource_options
def get_enforcements(ids: tuple, attr: tuple) -> None:
    sess = session()
    docs = fetch_each(sess.client.ruleenforcements, ids, "Rule Enforcement")
    show_each(sess, docs, list(attr), GET_ATTRIBUTES, date_transforms(sess, "enforced_at"))
