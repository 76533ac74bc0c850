"""`st2 key list/get/set/delete/load/delete_by_prefix`: the datastore, with StackStorm's options.

Scopes default as in StackStorm's CLI: ``list`` shows ``all`` (system items,
then your own), the others work on ``system``. Secrets show as ciphertext
unless ``-d/--decrypt`` is given.
"""

from __future__ import annotations

import json
import os

import click

from st2client import formatting
from st2client.commands import CommandError, Group, MultiOption, load_meta_file, resource_options, session

DEFAULT_LIST_SCOPE = "all"
DEFAULT_SCOPE = "system"
DEFAULT_LIMIT = 50
LIST_ATTRIBUTES = ["name", "value", "secret", "encrypted", "scope", "user", "expire_timestamp"]
GET_ATTRIBUTES = ["name", "value", "secret", "encrypted", "scope", "expire_timestamp"]
SET_ATTRIBUTES = ["name", "value", "scope", "expire_timestamp"]
LOAD_ATTRIBUTES = ["name", "value", "secret", "scope", "user", "ttl"]
DISPLAY_ORDER = ["id", "name", "description"]
DISPLAY_NAME = "Key Value Pair"


def _when(sess):
    return {"expire_timestamp": lambda value: formatting.format_isodate(value, sess.timezone) if value else ""}


@click.group("key", cls=Group, help="Key value pair is used to store commonly used configuration for reuse in "
                                    "sensors, actions, and rules.")
def key_group() -> None:
    """st2 key ..."""


@key_group.command("list", help=f"Get the list of the {DEFAULT_LIMIT} most recent key value pairs.")
@click.option("--prefix", help="Only return values with names starting with the provided prefix.")
@click.option("-d", "--decrypt", is_flag=True, help="Decrypt secrets and displays plain text.")
@click.option("-s", "--scope", default=DEFAULT_LIST_SCOPE, show_default=True,
              help='Scope item is under. Example: "user".')
@click.option("-u", "--user", help="User for user scoped items (admin only).")
@click.option("-n", "--last", type=int, default=DEFAULT_LIMIT, show_default=True,
              help="List N most recent key value pairs. Use -n -1 to fetch the full result set.")
@click.option("-a", "--attr", cls=MultiOption, default=LIST_ATTRIBUTES,
              help='Attributes to include in the output; "all" for every attribute.')
@click.option("-w", "--width", cls=MultiOption, type=int, help="Set the width of columns in output.")
@resource_options
def list_keys(prefix: str | None, decrypt: bool, scope: str, user: str | None, last: int, attr: tuple,
              width: tuple) -> None:
    sess = session()
    params = {"decrypt": str(decrypt).lower(), "scope": scope, "limit": last}
    if user:
        params["user"] = user
    items, _ = sess.client.keys.query_with_count(params=params, prefix=prefix)
    rows = [item.serialize() for item in items]
    attributes = list(attr)
    # StackStorm's CLI prints JSON and YAML lists in reverse.
    shown = list(reversed(rows)) if sess.json or sess.yaml else rows
    sess.print(shown, lambda: formatting.table(rows, attributes, list(width), _when(sess)), attributes)


def _get_key(sess, name: str, params: dict):
    return sess.client.keys.get_by_name(name, **{k: v for k, v in params.items() if v is not None})


@key_group.command("get", help="Get individual key value pair.")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("-d", "--decrypt", is_flag=True, help="Decrypt secret if encrypted and show plain text.")
@click.option("-s", "--scope", default=DEFAULT_SCOPE, show_default=True, help='Scope item is under. Example: "user".')
@click.option("-a", "--attr", cls=MultiOption, default=GET_ATTRIBUTES,
              help='Attributes to include in the output; "all" for every attribute.')
@resource_options
def get_keys(names: tuple, decrypt: bool, scope: str, attr: tuple) -> None:
    sess = session()
    attributes = list(attr)
    found = []
    for name in names:
        item = _get_key(sess, name, {"decrypt": str(decrypt).lower(), "scope": scope})
        if item is None:
            click.echo(f'{DISPLAY_NAME} "{name}" is not found.\n')
            if len(names) == 1:
                raise CommandError(f"Resource {name} not found.")
            continue
        found.append(item.serialize())
    for doc in found:
        sess.print(doc, lambda: formatting.property_table(doc, attributes, DISPLAY_ORDER, _when(sess)), attributes)


def _put(sess, name: str, body: dict) -> dict:
    manager = sess.client.keys
    return manager.update(manager.resource(**body)).serialize()


@key_group.command("set", help="Set an existing key value pair.")
@click.argument("name")
@click.argument("value", required=False)
@click.option("-e", "--encrypt", "secret", is_flag=True, help="Encrypt value before saving.")
@click.option("--encrypted", is_flag=True,
              help="Value provided is already encrypted with the instance crypto key and should be stored as-is.")
@click.option("-l", "--ttl", type=int, help="TTL (in seconds) for this value.")
@click.option("-s", "--scope", default=DEFAULT_SCOPE, show_default=True,
              help="Specify the scope under which you want to place the item.")
@click.option("-u", "--user", help="User for user scoped items (admin only).")
@resource_options
def set_key(name: str, value: str | None, secret: bool, encrypted: bool, ttl: int | None, scope: str,
            user: str | None) -> None:
    if secret and encrypted:
        raise click.UsageError("argument --encrypted: not allowed with argument -e/--encrypt")
    sess = session()
    if not value:
        value = click.prompt("Please insert value for key", prompt_suffix=": ", default="", show_default=False)
    body = {"name": name, "scope": scope, "user": user, "value": value}
    if secret:
        body["secret"] = True
    if encrypted:
        body["encrypted"] = True
    if ttl:
        body["ttl"] = ttl
    stored = _put(sess, name, body)
    sess.print(stored, lambda: formatting.property_table(stored, SET_ATTRIBUTES, DISPLAY_ORDER, _when(sess)),
               SET_ATTRIBUTES)


@key_group.command("delete", help="Delete an existing key value pair.")
@click.argument("name")
@click.option("-s", "--scope", default=DEFAULT_SCOPE, show_default=True,
              help="Specify the scope under which you want to place the item.")
@click.option("-u", "--user", help="User for user scoped items (admin only).")
@resource_options
def delete_key(name: str, scope: str, user: str | None) -> None:
    sess = session()
    params = {k: v for k, v in (("scope", scope), ("user", user)) if v}
    item = _get_key(sess, name, params)
    if item is None:
        click.echo(f'{DISPLAY_NAME} "{name}" is not found.\n')
        raise CommandError(f"Resource {name} not found.", exit_code=2)
    sess.client.keys.delete(item, params=params)
    click.echo(f'Resource with id "{name}" has been successfully deleted.')


@key_group.command("delete_by_prefix", help="Delete KeyValue pairs which match the provided prefix")
@click.option("-p", "--prefix", required=True, help="Name prefix (e.g. twitter.TwitterSensor:)")
@resource_options
def delete_keys_by_prefix(prefix: str) -> None:
    sess = session()
    items = sess.client.keys.get_all(prefix=prefix)
    for item in items:
        sess.client.keys.delete(item)
    click.echo(f"Deleted {len(items)} keys")
    click.echo(f"Deleted key ids: {', '.join(item.name for item in items)}")


def _load_items(path: str, convert: bool) -> list[dict]:
    data = load_meta_file(os.path.normpath(os.path.join(os.getcwd(), path)))
    if not data:
        return []
    items = data if isinstance(data, list) else [data]
    bodies = []
    for item in items:
        if not isinstance(item, dict) or "name" not in item or "value" not in item:
            raise CommandError(f"Every item in {path} needs a name and a value, got: {item!r}")
        value = item["value"]
        if not isinstance(value, str):
            if not convert:
                raise CommandError(f"Item '{item['name']}' has a value that is not a string. Either pass in the "
                                   "-c/--convert option to convert non-string types to JSON strings automatically, "
                                   "or convert the data to a string in the file")
            value = json.dumps(value)
        body = {"name": item["name"], "value": value, "scope": item.get("scope", DEFAULT_SCOPE)}
        for option in ("user", "secret", "encrypted", "ttl"):
            if item.get(option):
                body[option] = item[option]
        bodies.append(body)
    return bodies


@key_group.command("load", help="Load a list of key value pairs from file.")
@click.argument("file")
@click.option("-c", "--convert", is_flag=True,
              help="Convert non-string types (hash, array, boolean, int, float) to a JSON string before loading "
                   "it into the datastore.")
@resource_options
def load_keys(file: str, convert: bool) -> None:
    sess = session()
    bodies = _load_items(file, convert)
    for body in bodies:
        _put(sess, body["name"], body)
    sess.print(bodies, lambda: formatting.table(bodies, LOAD_ATTRIBUTES), LOAD_ATTRIBUTES)
