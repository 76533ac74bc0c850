"""`st2 runner list/get/enable/disable`: the runner types actions run with."""

from __future__ import annotations

import click

from st2client import formatting
from st2client.commands import CommandError, Group, MultiOption, resource_options, session

LIST_ATTRIBUTES = ["id", "name", "description"]
DISPLAY_ORDER = ["id", "name", "description"]


@click.group("runner", cls=Group, help="Runner is a type of handler for a specific class of actions.")
def runner_group() -> None:
    """st2 runner ..."""


@runner_group.command("list", help="Get the list of runners.")
@click.option("-a", "--attr", cls=MultiOption, default=LIST_ATTRIBUTES, show_default=True,
              help='Attributes to include in the output; "all" for every attribute.')
@click.option("-w", "--width", cls=MultiOption, type=int, help="Set the width of columns in output.")
@resource_options
def list_runners(attr: tuple, width: tuple) -> None:
    sess = session()
    attributes = list(attr)
    params = None if "all" in attributes else {"include_attributes": ",".join(dict.fromkeys(attributes))}
    rows = [r.serialize() for r in sess.client.runners.get_all(params=params)]
    sess.print(rows, lambda: formatting.table(rows, attributes, list(width)), attributes)


def _get_runner(name_or_id: str):
    runner = session().client.runners.get_by_name_or_id(name_or_id)
    if runner is None:
        raise CommandError(f'Resource with id or name "{name_or_id}" doesn\'t exist.')
    return runner


@runner_group.command("get", help="Get individual runner.")
@click.argument("names", nargs=-1, required=True, metavar="NAME-OR-ID...")
@click.option("-a", "--attr", cls=MultiOption, default=["all"],
              help='Attributes to include in the output; "all" or unspecified for every attribute.')
@resource_options
def get_runners(names: tuple, attr: tuple) -> None:
    sess = session()
    attributes = list(attr)
    found = []
    for name in names:
        runner = sess.client.runners.get_by_name_or_id(name)
        if runner is None:
            click.echo(f'Runner "{name}" is not found.\n')
            if len(names) == 1:
                raise CommandError(f"Resource {name} not found.")
            continue
        found.append(runner.serialize())
    for doc in found:
        sess.print(doc, lambda: formatting.property_table(doc, attributes, DISPLAY_ORDER), attributes)


def _set_enabled(name_or_id: str, enabled: bool) -> None:
    sess = session()
    doc = _get_runner(name_or_id).serialize()
    doc.pop("ref", None)
    doc["enabled"] = enabled
    manager = sess.client.runners
    updated = manager.update(manager.resource(**doc)).serialize()
    sess.print(updated, lambda: formatting.property_table(updated, ["all"], DISPLAY_ORDER), ["all"])


@runner_group.command("enable", help="Enable an existing runner.")
@click.argument("name_or_id", metavar="NAME-OR-ID")
@resource_options
def enable_runner(name_or_id: str) -> None:
    _set_enabled(name_or_id, True)


@runner_group.command("disable", help="Disable an existing runner.")
@click.argument("name_or_id", metavar="NAME-OR-ID")
@resource_options
def disable_runner(name_or_id: str) -> None:
    _set_enabled(name_or_id, False)
