"""`st2 inquiry list/get/respond`: the workflow steps waiting for a person, and answering one.

`respond` reads the inquiry first (GET /inquiries/<id> must succeed), then PUTs
``{id, response}``. The response is ``-r/--response '<json>'``, or else asked
for field by field from the inquiry's ``schema.properties``, as StackStorm's
interactive form does: booleans as y/n, numbers and integers parsed, enums by
index, arrays comma-separated, objects field by field, secrets hidden; an
empty answer takes the field's default.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import click

from st2client import formatting
from st2client.commands import CommandError, Group, resource_options, session
from st2client.commands.rule import attr_option, fetch_each, show_each, width_option

DEFAULT_LIMIT = 50
LIST_ATTRIBUTES = ["id", "roles", "users", "route", "ttl"]
GET_ATTRIBUTES = ["id", "roles", "users", "route", "ttl", "schema"]
POSITIVE_BOOLEAN = {"1", "y", "yes", "true"}
NEGATIVE_BOOLEAN = {"0", "n", "no", "nope", "nah", "false"}


@click.group("inquiry", cls=Group, help="Inquiries provide an opportunity to ask a question and wait for a "
                                        "response in a workflow.")
def inquiry_group() -> None:
    """st2 inquiry ..."""


@inquiry_group.command("list", help=f"Get the list of the {DEFAULT_LIMIT} most recent inquiries.")
@click.option("-n", "--last", type=int, default=DEFAULT_LIMIT, show_default=True,
              help="List N most recent inquiries. Use -n -1 to fetch the full result set.")
@attr_option(LIST_ATTRIBUTES)
@width_option
@resource_options
def list_inquiries(last: int, attr: tuple, width: tuple) -> None:
    sess = session()
    found, count = sess.client.inquiries.query_with_count(limit=last)
    # Oldest first, as StackStorm's CLI prints them; an empty list is an empty table, not a note.
    rows = [inquiry.serialize() for inquiry in reversed(found)]
    attributes = list(attr)
    if sess.json:
        click.echo(formatting.to_json(rows, attributes))
    elif sess.yaml:
        click.echo(formatting.to_yaml(rows, attributes))
    else:
        text = formatting.table(rows, attributes, list(width or ()))
        click.echo(text)
        if last and count and count > last:
            click.echo(formatting.note_box("inquiries", last, len(text.split("\n")[0]) if text else 0), err=True)


@inquiry_group.command("get", help="Get individual inquiry.")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@attr_option(GET_ATTRIBUTES)
@resource_options
def get_inquiries(ids: tuple, attr: tuple) -> None:
    sess = session()
    show_each(sess, fetch_each(sess.client.inquiries, ids, "Inquiry"), list(attr), GET_ATTRIBUTES)


@inquiry_group.command("respond", help="Respond to an inquiry.")
@click.argument("inquiry_id", metavar="ID")
@click.option("-r", "--response", help="Entire response payload as JSON string (bypass interactive mode)")
@resource_options
def respond(inquiry_id: str, response: str | None) -> None:
    sess = session()
    manager = sess.client.inquiries
    inquiry = manager.get_by_id(inquiry_id)
    if inquiry is None:
        raise CommandError(f'Resource with id "{inquiry_id}" doesn\'t exist.')
    if response is not None:
        try:
            answer = json.loads(response)
        except ValueError as error:
            raise CommandError(f"--response is not valid JSON: {error}") from error
    else:
        answer = ask((getattr(inquiry, "schema", None) or {}).get("properties") or {})
    accepted = manager.respond(inquiry_id, answer)
    click.echo(f"\nResponse accepted for inquiry {accepted.id}.")


# -- the interactive form -------------------------------------------------------------------------

def ask(properties: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Prompt for each property in turn; {name: value}."""
    answer: dict[str, Any] = {}
    for name, spec in properties.items():
        spec = spec if isinstance(spec, Mapping) else {}
        if spec.get("type") == "object" and not spec.get("enum"):
            answer[name] = ask(spec.get("properties") or {}, f"{prefix}{name}.")
            continue
        answer[name] = _ask_field(prefix + name, spec)
    return answer


def _ask_field(label: str, spec: Mapping[str, Any]) -> Any:
    message, parse = _reader(label, spec)
    while True:
        text = click.prompt(message, default="", show_default=False, prompt_suffix="",
                            hide_input=bool(spec.get("secret")))
        if not text:
            if spec.get("required") and "default" not in spec:
                click.echo("A value is required.")
                continue
            return spec.get("default")
        try:
            return parse(text)
        except (ValueError, IndexError) as error:
            click.echo(str(error) or "Invalid value.")


def _reader(label: str, spec: Mapping[str, Any]):
    """(prompt text, parser) for one field, worded as StackStorm's readers word them."""
    kind = spec.get("type")
    has_default = "default" in spec
    default = spec.get("default")
    if spec.get("enum"):
        choices = list(spec["enum"])
        shown = "".join(f"\n {i} - {value}" for i, value in enumerate(choices))
        first = ", ".join(str(i) for i in range(min(len(choices), 3))) + ("..." if len(choices) > 3 else "")
        suffix = f" [{choices.index(default)}]: " if has_default and default in choices else ": "
        return f"{label}: {shown}\nChoose from {first}{suffix}", lambda text: choices[_index(text)]
    if kind == "boolean":
        suffix = f" [{'y' if default else 'n'}]: " if has_default else ": "
        return f"{label} (boolean){suffix}", _boolean
    if kind in ("number", "integer"):
        cast = float if kind == "number" else int
        suffix = f" [{default}]: " if has_default else ": "
        return f"{label} ({'float' if kind == 'number' else 'integer'}){suffix}", cast
    if kind == "array":
        suffix = f" [{','.join(str(v) for v in default or [])}]: " if has_default else ": "
        return f"{label} (comma-separated list){suffix}", lambda text: [item.strip() for item in text.split(",")]
    tag = " (secret)" if spec.get("secret") else ""
    return f"{label}{tag}" + (f" [{default}]: " if has_default else ": "), str


def _index(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError("Not a number")
    return int(text)


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in POSITIVE_BOOLEAN:
        return True
    if lowered in NEGATIVE_BOOLEAN:
        return False
    choices = ", ".join(sorted(POSITIVE_BOOLEAN | NEGATIVE_BOOLEAN))
    raise ValueError(f"Does not look like boolean. Pick from [{choices}]")
