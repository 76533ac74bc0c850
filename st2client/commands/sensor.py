"""`st2 sensor list/get/enable/disable`: the sensor types the sensor container runs."""

from __future__ import annotations

from typing import Any

import click

from st2client import formatting
from st2client.commands import CommandError, Group, Session, resource_options, session
from st2client.commands.rule import attr_option, fetch_each, include_params, print_listing, show_each, width_option

LIST_ATTRIBUTES = ["ref", "pack", "description", "enabled"]
GET_ORDER = ["id", "uid", "ref", "pack", "name", "enabled", "entry_point", "artifact_uri", "trigger_types"]
ENABLE_ORDER = ["id", "ref", "pack", "name", "enabled", "poll_interval", "entry_point", "artifact_uri",
                "trigger_types"]


@click.group("sensor", cls=Group, help="An adapter which allows you to integrate StackStorm with external system.")
def sensor_group() -> None:
    """st2 sensor ..."""


@sensor_group.command("list", help="Get the list of sensors.")
@click.option("-p", "--pack", help="Only return resources belonging to the provided pack")
@attr_option(LIST_ATTRIBUTES)
@width_option
@resource_options
def list_sensors(pack: str | None, attr: tuple, width: tuple) -> None:
    sess = session()
    attributes = list(attr)
    found = sess.client.sensors.get_all(pack=pack, params=include_params(attributes))
    print_listing(sess, [s.serialize() for s in found], attributes, width)


@sensor_group.command("get", help="Get individual sensor.")
@click.argument("refs", nargs=-1, required=True, metavar="REF-OR-ID...")
@attr_option(["all"], 'Attributes to include in the output; "all" or unspecified for every attribute.')
@resource_options
def get_sensors(refs: tuple, attr: tuple) -> None:
    sess = session()
    show_each(sess, fetch_each(sess.client.sensors, refs, "Sensor"), list(attr), GET_ORDER)


def _get_sensor(sess: Session, ref_or_id: str) -> Any:
    sensor = sess.client.sensors.get_by_ref_or_id(ref_or_id)
    if sensor is None:
        raise CommandError(f'Resource with id or reference "{ref_or_id}" doesn\'t exist.')
    return sensor


def _set_enabled(ref_or_id: str, enabled: bool) -> None:
    sess = session()
    # The whole stored sensor goes back, minus its computed ref, as StackStorm's CLI sends it.
    doc = _get_sensor(sess, ref_or_id).serialize()
    doc.pop("ref", None)
    doc["enabled"] = enabled
    manager = sess.client.sensors
    updated = manager.update(manager.resource(**doc)).serialize()
    sess.print(updated, lambda: formatting.property_table(updated, ["all"], ENABLE_ORDER), ["all"])


@sensor_group.command("enable", help="Enable an existing sensor.")
@click.argument("ref_or_id", metavar="REF-OR-ID")
@resource_options
def enable_sensor(ref_or_id: str) -> None:
    _set_enabled(ref_or_id, True)


@sensor_group.command("disable", help="Disable an existing sensor.")
@click.argument("ref_or_id", metavar="REF-OR-ID")
@resource_options
def disable_sensor(ref_or_id: str) -> None:
    _set_enabled(ref_or_id, False)
