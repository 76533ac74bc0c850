"""`st2 pack list/get/register`: the installed packs."""

from __future__ import annotations

import click

from st2client import formatting
from st2client.commands import CommandError, Group, MultiOption, resource_options, session

LIST_ATTRIBUTES = ["ref", "name", "description", "version", "author"]
GET_ATTRIBUTES = ["name", "version", "author", "email", "keywords", "description"]


@click.group("pack", cls=Group, help="A group of related integration resources: actions, rules, and sensors.")
def pack_group() -> None:
    """st2 pack ..."""


@pack_group.command("list", help="Get the list of packs.")
@click.option("-a", "--attr", cls=MultiOption, default=LIST_ATTRIBUTES, show_default=True,
              help='Attributes to include in the output; "all" for every attribute.')
@click.option("-w", "--width", cls=MultiOption, type=int, help="Set the width of columns in output.")
@resource_options
def list_packs(attr: tuple, width: tuple) -> None:
    sess = session()
    attributes = list(attr)
    params = None if "all" in attributes else {"include_attributes": ",".join(dict.fromkeys(attributes))}
    rows = [p.serialize() for p in sess.client.packs.get_all(params=params)]
    sess.print(rows, lambda: formatting.table(rows, attributes, list(width)), attributes)


@pack_group.command("get", help="Get information about an installed pack.")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.option("-a", "--attr", cls=MultiOption, default=GET_ATTRIBUTES, show_default=True,
              help='Attributes to include in the output; "all" for every attribute.')
@resource_options
def get_packs(refs: tuple, attr: tuple) -> None:
    sess = session()
    attributes = list(attr)
    found = []
    for ref in refs:
        pack = sess.client.packs.get_by_id(ref)
        if pack is None:
            click.echo(f'Pack "{ref}" is not found.\n')
            if len(refs) == 1:
                raise CommandError(f"Resource {ref} not found.")
            continue
        found.append(pack.serialize())
    for doc in found:
        sess.print(doc, lambda: formatting.property_table(doc, attributes, GET_ATTRIBUTES), attributes)


@pack_group.command("register", help="Register pack(s): sync all file changes with DB.")
@click.argument("packs", nargs=-1, metavar="[PACK]...")
@click.option("--types", cls=MultiOption, help="Types of content to register.")
@resource_options
def register_packs(packs: tuple, types: tuple) -> None:
    sess = session()
    counts = sess.client.packs.register(list(packs), list(types))
    if not isinstance(counts, dict) or not counts:
        click.echo("No matching items found")
        return
    sess.print(counts, lambda: formatting.property_table(counts, ["all"], ()), ["all"])
