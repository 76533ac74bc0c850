"""`st2 apikey create/list/get/delete/enable/disable/load`: API keys, as StackStorm's CLI manages them.

The key itself is shown once, by `create`; afterwards the server shows only
its hash (masked unless an admin asks for --show-secrets). `enable` and
`disable` send back the whole stored document with `enabled` flipped, and
`load` re-creates keys from a file of exported documents (their hashes):
PUT at the id, or POST when the server does not have it.
"""

from __future__ import annotations

import json
from typing import Any

import click

from st2client import formatting
from st2client.client import HTTPError
from st2client.commands import CommandError, Group, load_meta_file, resource_options, session
from st2client.commands.rule import attr_option, fetch_each, print_listing, show_each, width_option

DISPLAY_NAME = "API Key"
LIST_ATTRIBUTES = ["id", "user", "metadata"]
GET_ORDER = ["id", "user", "metadata"]


@click.group("apikey", cls=Group, help="API Keys.")
def apikey_group() -> None:
    """st2 apikey ..."""


def _print_key(doc: dict) -> None:
    session().print(doc, lambda: formatting.property_table(doc, ["all"]), ["all"])


def _metadata(ctx: click.Context, param: click.Parameter, value: str | None) -> dict:
    if not value:
        return {}
    try:
        return json.loads(value)
    except ValueError as error:
        raise click.BadParameter(f"invalid JSON: {error}", ctx, param) from error


@apikey_group.command("create", help="Create a new api key.")
@click.option("-u", "--user", default="", help="User for which to create API Keys.")
@click.option("-m", "--metadata", callback=_metadata, help="Optional metadata to associate with the API Keys.")
@click.option("-k", "--only-key", is_flag=True, help="Only print API Key to the console on creation.")
@resource_options
def create_key(user: str, metadata: dict, only_key: bool) -> None:
    sess = session()
    body: dict[str, Any] = {}
    if user:
        body["user"] = user
    if metadata:
        body["metadata"] = metadata
    try:
        created = sess.client.apikeys.create(body)
    except Exception as error:
        # StackStorm's create reports the server's refusal as an operation failure (exit 2).
        raise CommandError(str(error), exit_code=2) from error
    if only_key:
        click.echo(created.key)
        return
    _print_key(created.serialize())


@apikey_group.command("list", help="Get the list of api keys.")
@click.option("-u", "--user", help="Only return ApiKeys belonging to the provided user")
@click.option("-d", "--detail", is_flag=True, help="Full list of attributes.")
@click.option("--show-secrets", is_flag=True, help="Show the key hashes (admins only).")
@click.option("-n", "--last", type=int, help="List at most N api keys (the server's default page otherwise).")
@attr_option(LIST_ATTRIBUTES)
@width_option
@resource_options
def list_keys(user: str | None, detail: bool, show_secrets: bool, last: int | None, attr: tuple,
              width: tuple) -> None:
    sess = session()
    params = {"show_secrets": True} if show_secrets else None
    found = sess.client.apikeys.get_all(limit=last, params=params, user=user)
    print_listing(sess, [key.serialize() for key in found], ["all"] if detail else list(attr), width)


@apikey_group.command("get", help="Get individual api key.")
@click.argument("keys_or_ids", nargs=-1, required=True, metavar="KEY-OR-ID...")
@attr_option(["all"], 'Attributes to include in the output; "all" or unspecified for every attribute.')
@resource_options
def get_keys(keys_or_ids: tuple, attr: tuple) -> None:
    sess = session()
    show_each(sess, fetch_each(sess.client.apikeys, keys_or_ids, DISPLAY_NAME), list(attr), GET_ORDER)


def _get_key(key_or_id: str) -> Any:
    found = session().client.apikeys.get_by_id(key_or_id)
    if found is None:
        raise CommandError(f'Resource with id "{key_or_id}" doesn\'t exist.')
    return found


@apikey_group.command("delete", help="Delete an existing api key.")
@click.argument("key_or_id", metavar="KEY-OR-ID")
@resource_options
def delete_key(key_or_id: str) -> None:
    manager = session().client.apikeys
    found = manager.get_by_id(key_or_id)
    if found is None:
        click.echo(f'{DISPLAY_NAME} "{key_or_id}" is not found.\n')
        raise CommandError(f"Resource {key_or_id} not found.", exit_code=2)
    manager.delete(found)
    click.echo(f'Resource with id "{key_or_id}" has been successfully deleted.')


def _set_enabled(key_or_id: str, enabled: bool) -> None:
    manager = session().client.apikeys
    doc = _get_key(key_or_id).serialize()
    doc["enabled"] = enabled
    _print_key(manager.update(manager.resource(**doc)).serialize())


@apikey_group.command("enable", help="Enable an existing api key.")
@click.argument("key_or_id", metavar="KEY-OR-ID")
@resource_options
def enable_key(key_or_id: str) -> None:
    _set_enabled(key_or_id, True)


@apikey_group.command("disable", help="Disable an existing api key.")
@click.argument("key_or_id", metavar="KEY-OR-ID")
@resource_options
def disable_key(key_or_id: str) -> None:
    _set_enabled(key_or_id, False)


def _loaded(item: Any, path: str) -> dict:
    if not isinstance(item, dict) or "user" not in item or "key_hash" not in item:
        raise CommandError(f'Every API key in "{path}" needs "user" and "key_hash".')
    doc = {"user": item["user"], "key_hash": item["key_hash"], "metadata": item.get("metadata") or {},
           "enabled": item.get("enabled", False)}
    if "id" in item:
        doc["id"] = item["id"]
    return doc


@apikey_group.command("load", help="Load api key from a file.")
@click.argument("file", metavar="FILE")
@width_option
@resource_options
def load_keys(file: str, width: tuple) -> None:
    sess = session()
    manager = sess.client.apikeys
    items = load_meta_file(file)
    if not items:
        click.echo(f"No api key found in {file}.")
        return
    loaded = []
    for item in items if isinstance(items, list) else [items]:
        doc = _loaded(item, file)
        instance = manager.resource(**doc)
        try:
            # An exported key goes back at its id; one the server lacks is created with the same hash.
            saved = manager.update(instance) if "id" in doc else manager.create(instance)
        except HTTPError as error:
            if error.status_code != 404:
                raise
            saved = manager.create(manager.resource(**doc))
        loaded.append(saved.serialize())
    print_listing(sess, loaded, LIST_ATTRIBUTES, width)
