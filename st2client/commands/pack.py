"""`st2 pack list/get/register/config`: the installed packs and their configs."""

from __future__ import annotations

import click
import yaml

from st2client import formatting
from st2client.commands import CommandError, Group, MultiOption, load_meta_file, resource_options, session

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


_TRUE, _FALSE = ("true", "yes", "y", "1", "on"), ("false", "no", "n", "0", "off")


def _cast_option(name: str, text: str, spec: dict) -> object:
    """A k=v value as the option's schema type says (the server validates the result)."""
    kind = spec.get("type")
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
        if kind == "boolean":
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(text)
            return text.lower() in _TRUE
        if kind in ("array", "object"):
            decoded = yaml.safe_load(text)
            if kind == "array" and not isinstance(decoded, list):
                decoded = [part.strip() for part in text.split(",") if part.strip()]
            return decoded
    except (ValueError, yaml.YAMLError) as error:
        raise CommandError(f'Option "{name}": "{text}" is not of type {kind} ({error})') from error
    return text


def _set_option(values: dict, attributes: dict, assignment: str) -> None:
    """Apply one ``name=value`` (``parent.child=value`` for a nested option) to values."""
    name, sep, text = assignment.partition("=")
    if not sep or not name:
        raise CommandError(f'"{assignment}" is not of the form name=value')
    *parents, leaf = name.split(".")
    target, specs = values, attributes
    for part in parents:
        specs = ((specs or {}).get(part) or {}).get("properties") or {}
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise CommandError(f'Option "{part}" is not an object, "{name}" cannot be set')
    target[leaf] = _cast_option(name, text, (specs or {}).get(leaf) or {})


def _ask(attributes: dict) -> dict:
    """StackStorm's interactive form: one prompt per option, the schema default offered."""
    values: dict = {}
    for name, spec in attributes.items():
        spec = spec or {}
        label = f"{name} ({spec.get('description')})" if spec.get("description") else name
        default = spec.get("default")
        answer = click.prompt(label, default="" if default is None else str(default),
                              hide_input=bool(spec.get("secret")), show_default=not spec.get("secret"))
        if answer != "" or spec.get("required"):
            values[name] = _cast_option(name, answer, spec) if isinstance(answer, str) else answer
    return values


@pack_group.command("config", help="Configure a pack based on config schema: name=value pairs, a YAML file, "
                                   "or (with neither) answer a prompt per option.")
@click.argument("name", metavar="PACK")
@click.argument("assignments", nargs=-1, metavar="[NAME=VALUE]...")
@click.option("-f", "--file", "values_file", help="A YAML or JSON file with the whole config; NAME=VALUE "
                                                  "pairs are applied on top of it.")
@click.option("--yes", is_flag=True, help="Save without asking (the interactive form asks).")
@resource_options
def config_pack(name: str, assignments: tuple, values_file: str | None, yes: bool) -> None:
    sess = session()
    client = sess.client
    schema = client.request("GET", f"/config_schemas/{name}", missing_ok=True)
    if schema.status_code == 404:
        raise CommandError(f'Pack "{name}" doesn\'t exist or doesn\'t have a config schema defined.')
    attributes = schema.json().get("attributes") or {}
    if values_file:
        values = load_meta_file(values_file) or {}
        if not isinstance(values, dict):
            raise CommandError(f'File "{values_file}" must hold a mapping of config options')
    elif assignments:
        # Options not named keep their stored values (secrets included, so they are not overwritten by masks).
        current = client.request("GET", f"/configs/{name}", params={"show_secrets": "true"}, missing_ok=True)
        values = (current.json().get("values") or {}) if current.status_code != 404 else {}
    else:
        values = _ask(attributes)
        if not yes and not click.confirm("---\nDo you want me to save it?", default=True):
            raise CommandError("Interrupted", exit_code=2)
    for assignment in assignments:
        _set_option(values, attributes, assignment)
    saved = client.request("PUT", f"/configs/{name}", json=values).json()
    sess.print(saved, lambda: formatting.property_table(saved, ["all"], ()), ["all"])
