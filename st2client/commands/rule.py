"""`st2 rule list/get/create/update/delete/enable/disable/test`, and the listing and showing
helpers the other event-side commands (trigger, trace, webhook, timer ...) share.

`rule test` asks the API's rule tester (POST /rules/test) whether a rule would
match a stored trigger instance or a given one, which criteria held and what
action parameters it would render; nothing runs. It exits 0 on a match, 1 otherwise.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable

import click

from st2client import formatting
from st2client.commands import (CommandError, Group, MultiOption, Session, load_meta_file, resource_options,
                                session)

LIST_ATTRIBUTES = ["ref", "pack", "description", "enabled"]
IFTT_ATTRIBUTES = ["ref", "trigger.ref", "action.ref", "enabled"]
GET_ORDER = ["id", "uid", "ref", "pack", "name", "description", "enabled"]
ENABLE_ORDER = ["id", "ref", "pack", "name", "enabled", "description"]
CRITERIA_COLUMNS = ["key", "type", "pattern", "value", "result"]
DEFAULT_LIMIT = 50
META_EXTENSIONS = (".json", ".yaml", ".yml")


# -- shared by the event-side commands ----------------------------------------------------------

def include_params(attributes: Iterable[str]) -> dict | None:
    """?include_attributes for the shown columns; None (everything) when "all" is asked for."""
    attributes = list(attributes)
    if "all" in attributes:
        return None
    return {"include_attributes": ",".join(dict.fromkeys(attributes))}


def date_transforms(sess: Session, *names: str) -> dict[str, Callable[[Any], Any]]:
    """Show these timestamp attributes in the CLI's time zone, as StackStorm's CLI does."""
    tz = sess.timezone
    return {name: (lambda value: formatting.format_isodate(value, tz)) for name in names}


def print_listing(sess: Session, rows: list[dict], attributes: list[str], widths: Iterable[int] = (),
                  transforms: dict | None = None, entity: str = "", last: int | None = None,
                  count: int | None = None) -> None:
    """A table of rows (JSON/YAML when asked), and the "Only first N" note when the server has more."""
    if sess.json or sess.yaml:
        sess.print(rows, str, attributes)
        return
    text = formatting.table(rows, attributes, list(widths), transforms)
    sess.print(rows, lambda: text, attributes)
    if entity and last and count and count > last:
        click.echo(formatting.note_box(entity, last, len(text.split("\n")[0]) if text else 0), err=True)


def fetch_each(manager: Any, keys: Iterable[str], display_name: str) -> list[dict]:
    """GET each key; a missing one is noted, and fails the command when it was the only one asked for."""
    keys = list(keys)
    found = []
    for key in keys:
        instance = manager.get_by_id(key)
        if instance is None:
            click.echo(f'{display_name} "{key}" is not found.\n')
            if len(keys) == 1:
                raise CommandError(f"Resource {key} not found.")
            continue
        found.append(instance.serialize())
    return found


def show_each(sess: Session, docs: list[dict], attributes: list[str], order: Iterable[str],
              transforms: dict | None = None) -> None:
    """A Property/Value table (or JSON/YAML) per document."""
    order = list(order)
    for doc in docs:
        sess.print(doc, lambda doc=doc: formatting.property_table(doc, attributes, order, transforms), attributes)


def attr_option(default: list[str], help_text: str = 'Attributes to include in the output; "all" for every '
                                                     "attribute.") -> Callable:
    """-a/--attr taking one or more attribute names."""
    return click.option("-a", "--attr", cls=MultiOption, default=default, show_default=True, help=help_text)


def width_option(func: Callable) -> Callable:
    """-w/--width taking one or more column widths."""
    return click.option("-w", "--width", cls=MultiOption, type=int, help="Set the width of columns in output.")(func)


def last_option(entity: str) -> Callable:
    """-n/--last N, StackStorm's page size for the most recent records."""
    return click.option("-n", "--last", type=int, default=DEFAULT_LIMIT, show_default=True,
                        help=f"List N most recent {entity}. Use -n -1 to fetch the full result set.")


# -- st2 rule ---------------------------------------------------------------------------------

@click.group("rule", cls=Group,
             help='A specification to invoke an "action" on a "trigger" selectively based on some criteria.')
def rule_group() -> None:
    """st2 rule ..."""


@rule_group.command("list", help="Get the list of the 50 most recent rules.")
@last_option("rules")
@click.option("--iftt", is_flag=True, help="Show trigger and action in display list.")
@click.option("-p", "--pack", help="Only return resources belonging to the provided pack")
@click.option("-c", "--action", help="Action reference to filter the list.")
@click.option("-g", "--trigger", help="Trigger type reference to filter the list.")
@click.option("--enabled/--disabled", "enabled", default=None, help="Show rules that are enabled / disabled.")
@attr_option(LIST_ATTRIBUTES)
@width_option
@resource_options
def list_rules(last: int, iftt: bool, pack: str | None, action: str | None, trigger: str | None,
               enabled: bool | None, attr: tuple, width: tuple) -> None:
    sess = session()
    attributes = IFTT_ATTRIBUTES if iftt else list(attr)
    filters: dict[str, Any] = {"pack": pack, "action": action, "trigger": trigger, "limit": last}
    if enabled is not None:
        filters["enabled"] = enabled
    found, count = sess.client.rules.query_with_count(params=include_params(attributes), **filters)
    print_listing(sess, [r.serialize() for r in found], attributes, width, entity="rules", last=last,
                  count=count)


@rule_group.command("get", help="Get individual rule.")
@click.argument("refs", nargs=-1, required=True, metavar="REF-OR-ID...")
@attr_option(["all"], 'Attributes to include in the output; "all" or unspecified for every attribute.')
@resource_options
def get_rules(refs: tuple, attr: tuple) -> None:
    sess = session()
    show_each(sess, fetch_each(sess.client.rules, refs, "Rule"), list(attr), GET_ORDER)


def _get_rule(sess: Session, ref_or_id: str) -> Any:
    rule = sess.client.rules.get_by_ref_or_id(ref_or_id)
    if rule is None:
        raise CommandError(f'Resource with id or reference "{ref_or_id}" doesn\'t exist.')
    return rule


def _print_rule(sess: Session, doc: dict, order: Iterable[str] = formatting.DEFAULT_DISPLAY_ORDER) -> None:
    sess.print(doc, lambda: formatting.property_table(doc, ["all"], order), ["all"])


@rule_group.command("create", help="Create a new rule.")
@click.argument("file", metavar="FILE")
@resource_options
def create_rule(file: str) -> None:
    sess = session()
    data = load_meta_file(file)
    try:
        created = sess.client.rules.create(data)
    except Exception as error:
        # StackStorm's create reports the server's refusal as an operation failure (exit 2).
        raise CommandError(str(error), exit_code=2) from error
    _print_rule(sess, created.serialize())


@rule_group.command("update", help="Updating an existing rule.")
@click.argument("ref_or_id", metavar="REF-OR-ID")
@click.argument("file", metavar="FILE")
@resource_options
def update_rule(ref_or_id: str, file: str) -> None:
    sess = session()
    existing = _get_rule(sess, ref_or_id)
    data = load_meta_file(file)
    if not data.get("id"):
        data["id"] = existing.id
    elif data["id"] != existing.id:
        raise CommandError("The value for the rule id in the JSON/YAML file does not match the ID provided "
                           "in the command line arguments.")
    manager = sess.client.rules
    _print_rule(sess, manager.update(manager.resource(**data)).serialize())


@rule_group.command("delete", help="Delete an existing rule.")
@click.argument("ref_or_id", metavar="REF-OR-ID")
@resource_options
def delete_rule(ref_or_id: str) -> None:
    sess = session()
    rule = sess.client.rules.get_by_ref_or_id(ref_or_id)
    if rule is None:
        click.echo(f'Rule "{ref_or_id}" is not found.\n')
        raise CommandError(f"Resource {ref_or_id} not found.", exit_code=2)
    sess.client.rules.delete(rule)
    click.echo(f'Resource with id "{ref_or_id}" has been successfully deleted.')


def _set_enabled(ref_or_id: str, enabled: bool) -> None:
    sess = session()
    # The whole stored rule goes back, minus its computed ref: the server recomputes it.
    doc = _get_rule(sess, ref_or_id).serialize()
    doc.pop("ref", None)
    doc["enabled"] = enabled
    manager = sess.client.rules
    _print_rule(sess, manager.update(manager.resource(**doc)).serialize(), ENABLE_ORDER)


@rule_group.command("enable", help="Enable an existing rule.")
@click.argument("ref_or_id", metavar="REF-OR-ID")
@resource_options
def enable_rule(ref_or_id: str) -> None:
    _set_enabled(ref_or_id, True)


@rule_group.command("disable", help="Disable an existing rule.")
@click.argument("ref_or_id", metavar="REF-OR-ID")
@resource_options
def disable_rule(ref_or_id: str) -> None:
    _set_enabled(ref_or_id, False)


# -- st2 rule test ----------------------------------------------------------------------------

def _load_mapping(path: str, what: str) -> dict:
    doc = load_meta_file(path)
    if not isinstance(doc, dict):
        raise CommandError(f'File "{path}" does not hold a {what} (a mapping).')
    return doc


def rule_test_request(rule: str, trigger_instance_id: str | None, trigger_instance: str | None,
                      payload: str | None) -> dict:
    """The rule tester's request body: the rule file's document (or a stored rule's ref or id) and the
    trigger instance (a stored one's id, a {trigger, payload} file, or a payload file)."""
    given = [v for v in (trigger_instance_id, trigger_instance, payload) if v]
    if len(given) != 1:
        raise click.UsageError("Give exactly one of --trigger-instance-id, --trigger-instance or --payload.")
    if os.path.exists(rule) or rule.endswith(META_EXTENSIONS):
        doc = _load_mapping(rule, "rule")
        folder = os.path.dirname(os.path.abspath(rule))
        if "pack" not in doc and os.path.basename(folder) == "rules":
            # A file inside <pack>/rules/ belongs to that pack, as registration reads it.
            doc["pack"] = os.path.basename(os.path.dirname(folder))
        body: dict[str, Any] = {"rule": doc}
    else:
        body = {"rule_ref": rule}
    if trigger_instance_id:
        body["trigger_instance_id"] = trigger_instance_id
    elif trigger_instance:
        instance = _load_mapping(trigger_instance, "trigger instance")
        if "payload" not in instance:
            raise CommandError(f'File "{trigger_instance}" is not a trigger instance: it has no "payload".')
        body["trigger_instance"] = {k: instance[k] for k in ("trigger", "payload") if k in instance}
    else:
        body["trigger_instance"] = {"payload": _load_mapping(payload, "payload")}
    return body


def _criterion_row(item: dict) -> dict:
    if item.get("error"):
        result = f"error: {item['error']}"
    elif item.get("evaluated") is False:
        result = "not evaluated"
    else:
        result = "matched" if item.get("matched") else "not matched"
    pattern = item.get("rendered", item.get("pattern"))
    return {"key": item.get("key"), "type": item.get("type") or item.get("operator"),
            "pattern": _literal(pattern), "value": _literal(item.get("value")), "result": result}


def _literal(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def format_test_result(answer: dict, rule_ref: str) -> str:
    """The rule tester's answer as text: verdict, the criteria table, the action it would run."""
    matched = bool(answer.get("matched"))
    lines = [f'Rule "{rule_ref}" {"matches" if matched else "does not match"}'
             + (f": {answer['reason']}" if answer.get("reason") else ".")]
    if answer.get("error"):
        lines.append(f"Error: {answer['error']}")
    criteria = [_criterion_row(item) for item in answer.get("criteria") or []]
    if criteria:
        lines += ["", "Criteria:", formatting.table(criteria, CRITERIA_COLUMNS, [30, 14, 30, 30, 30])]
    action = answer.get("action") or {}
    if matched and action:
        lines += ["", formatting.execution_result({"action": action}, ["action.ref", "action.parameters"])]
    elif action.get("error") and action["error"] != answer.get("error"):
        lines += ["", f"Action parameters: {action['error']}"]
    return "\n".join(lines)


@rule_group.command("test", help="Test a rule against a trigger instance: which criteria match and what "
                                 "action parameters would be rendered. Nothing is run. Exits 0 on a match, "
                                 "1 otherwise.")
@click.argument("rule", metavar="RULE-FILE-OR-REF")
@click.option("-i", "--trigger-instance-id", help="Id of a stored trigger instance to test against.")
@click.option("-f", "--trigger-instance", type=click.Path(dir_okay=False),
              help='JSON/YAML file with a trigger instance: {"trigger": <ref>, "payload": {...}}.')
@click.option("-p", "--payload", type=click.Path(dir_okay=False),
              help="JSON/YAML file with a payload of the rule's trigger.")
@resource_options
def run_rule_test(rule: str, trigger_instance_id: str | None, trigger_instance: str | None,
                  payload: str | None) -> None:
    sess = session()
    answer = sess.client.rules.test(**rule_test_request(rule, trigger_instance_id, trigger_instance, payload))
    if sess.json or sess.yaml:
        sess.print(answer, str, ["all"])
    else:
        click.echo(format_test_result(answer, (answer.get("rule") or {}).get("ref") or rule))
    if not answer.get("matched"):
        raise click.exceptions.Exit(1)
