"""`st2 timer list/get`: the timer triggers rules registered (interval, date and cron timers)."""

from __future__ import annotations

import click

from st2client.commands import Group, resource_options, session
from st2client.commands.rule import attr_option, fetch_each, include_params, print_listing, show_each, width_option

LIST_ATTRIBUTES = ["id", "uid", "pack", "name", "type", "parameters"]
GET_ORDER = ["type", "pack", "name", "description", "parameters"]
TIMER_TYPES = ("core.st2.IntervalTimer", "core.st2.DateTimer", "core.st2.CronTimer")


@click.group("timer", cls=Group, help="Timers.")
def timer_group() -> None:
    """st2 timer ..."""


@timer_group.command("list", help="Get the list of timers.")
@click.option("-ty", "--timer-type", type=click.Choice(TIMER_TYPES),
              help="List timers of one type: core.st2.IntervalTimer, core.st2.DateTimer or core.st2.CronTimer.")
@attr_option(LIST_ATTRIBUTES)
@width_option
@resource_options
def list_timers(timer_type: str | None, attr: tuple, width: tuple) -> None:
    sess = session()
    attributes = list(attr)
    manager = sess.client.timers
    if timer_type:
        found = manager.query(timer_type=timer_type)
    else:
        found = manager.get_all(params=include_params(attributes))
    print_listing(sess, [t.serialize() for t in found], attributes, width)


@timer_group.command("get", help="Get individual timer.")
@click.argument("refs", nargs=-1, required=True, metavar="REF-OR-ID...")
@attr_option(["all"], 'Attributes to include in the output; "all" or unspecified for every attribute.')
@resource_options
def get_timers(refs: tuple, attr: tuple) -> None:
    sess = session()
    show_each(sess, fetch_each(sess.client.timers, refs, "Timer"), list(attr), GET_ORDER)
