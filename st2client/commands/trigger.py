"""`st2 trigger list/get/getspecs` (trigger types, as in StackStorm's CLI) and
`st2 trigger-instance list/get/re-emit` (the stored occurrences)."""

from __future__ import annotations

import click

from st2client.client import HTTPError
from st2client.commands import CommandError, Group, resource_options, session
from st2client.commands.rule import (attr_option, date_transforms, fetch_each, include_params, last_option,
                                     print_listing, show_each, width_option)

TYPE_LIST_ATTRIBUTES = ["ref", "pack", "description"]
TYPE_GET_ORDER = ["id", "ref", "pack", "name", "description", "parameters_schema", "payload_schema"]
INSTANCE_LIST_ATTRIBUTES = ["id", "trigger", "occurrence_time", "status"]
INSTANCE_GET_ORDER = ["id", "trigger", "occurrence_time", "payload"]
INSTANCE_STATUSES = ("pending", "processing", "processed", "processing_failed")


@click.group("trigger", cls=Group, help="An external event that is mapped to a st2 input. It is the st2 "
                                        "invocation point.")
def trigger_group() -> None:
    """st2 trigger ..."""


@trigger_group.command("list", help="Get the list of triggers.")
@click.option("-p", "--pack", help="Only return resources belonging to the provided pack")
@attr_option(TYPE_LIST_ATTRIBUTES)
@width_option
@resource_options
def list_trigger_types(pack: str | None, attr: tuple, width: tuple) -> None:
    sess = session()
    attributes = list(attr)
    found = sess.client.triggertypes.get_all(pack=pack, params=include_params(attributes))
    print_listing(sess, [t.serialize() for t in found], attributes, width)


@trigger_group.command("get", help="Get individual trigger.")
@click.argument("refs", nargs=-1, required=True, metavar="REF-OR-ID...")
@attr_option(["all"], 'Attributes to include in the output; "all" or unspecified for every attribute.')
@resource_options
def get_trigger_types(refs: tuple, attr: tuple) -> None:
    sess = session()
    show_each(sess, fetch_each(sess.client.triggertypes, refs, "Trigger"), list(attr), TYPE_GET_ORDER)


@trigger_group.command("getspecs", help="Return Trigger Specifications of a Trigger.")
@click.argument("ref", metavar="REF")
@resource_options
def get_trigger_specs(ref: str) -> None:
    sess = session()
    rows = [t.serialize() for t in sess.client.triggers.query(type=ref)]
    # The server may list every trigger (the type filter is not part of StackStorm's API).
    rows = [row for row in rows if row.get("type") == ref]
    print_listing(sess, rows, ["all"])


@click.group("trigger-instance", cls=Group, help="Actual instances of triggers received by st2.")
def trigger_instance_group() -> None:
    """st2 trigger-instance ..."""


@trigger_instance_group.command("list", help="Get the list of the 50 most recent triggerinstances.")
@last_option("triggerinstances")
@click.option("--trigger", help="Trigger reference to filter the list.")
@click.option("-tg", "--timestamp-gt", help="Only return trigger instances with occurrence_time greater than "
                                            "the one provided. Use time in the format 2000-01-01T12:00:00.000Z")
@click.option("-tl", "--timestamp-lt", help="Only return trigger instances with timestamp lower than the one "
                                            "provided. Use time in the format 2000-01-01T12:00:00.000Z")
@click.option("--status", type=click.Choice(INSTANCE_STATUSES), help="Only return trigger instances in this "
                                                                      "status.")
@attr_option(INSTANCE_LIST_ATTRIBUTES)
@width_option
@resource_options
def list_trigger_instances(last: int, trigger: str | None, timestamp_gt: str | None, timestamp_lt: str | None,
                           status: str | None, attr: tuple, width: tuple) -> None:
    sess = session()
    attributes = list(attr)
    found, count = sess.client.triggerinstances.query_with_count(
        params=include_params(attributes), limit=last, trigger=trigger, timestamp_gt=timestamp_gt,
        timestamp_lt=timestamp_lt, status=status)
    # Newest first from the server; shown oldest first, like StackStorm's CLI.
    rows = [i.serialize() for i in reversed(found)]
    print_listing(sess, rows, attributes, width, date_transforms(sess, "occurrence_time"),
                  entity="triggerinstances", last=last, count=count)


@trigger_instance_group.command("get", help="Get individual trigger instance.")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@attr_option(["all"], 'Attributes to include in the output; "all" or unspecified for every attribute.')
@resource_options
def get_trigger_instances(ids: tuple, attr: tuple) -> None:
    sess = session()
    docs = fetch_each(sess.client.triggerinstances, ids, "Trigger Instance")
    show_each(sess, docs, list(attr), INSTANCE_GET_ORDER, date_transforms(sess, "occurrence_time"))


@trigger_instance_group.command("re-emit", help="Re-emit a particular trigger instance.")
@click.argument("instance_id", metavar="ID")
@resource_options
def re_emit(instance_id: str) -> None:
    sess = session()
    try:
        answer = sess.client.triggerinstances.re_emit(instance_id)
    except HTTPError as error:
        if error.status_code != 404:
            raise
        raise CommandError(f'Trigger Instance "{instance_id}" is not found.') from error
    if sess.json or sess.yaml:
        sess.print(answer, str, ["all"])
    elif isinstance(answer, dict) and "message" in answer:
        click.echo(answer["message"])
