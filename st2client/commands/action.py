"""`st2 action list/get/create/update/delete/enable/disable/execute` and `st2 run`,
with StackStorm's parsing of `key=value` action parameters.
"""

from __future__ import annotations

import json
import os
import textwrap
from typing import Any, Callable, Mapping

import click

from st2client import formatting
from st2client.commands import (Command, CommandError, Group, MultiOption, Session, load_meta_file,
                                resource_options, session)
from st2client.commands.execution import RUN_ATTRIBUTES, display_options, finish

LIST_ATTRIBUTES = ["ref", "pack", "description"]
DISPLAY_ORDER = ["id", "uid", "ref", "pack", "name", "description", "enabled", "entry_point", "runner_type",
                 "parameters"]
BOOLEAN_ERROR = "Invalid value for boolean parameter. Valid values are: true, false"
# Never passed on by --inherit-env: they describe the CLI's own shell, not the action's.
ENV_BLACKLIST = ("pwd", "mail", "username", "user", "path", "home", "ps1", "shell", "pythonpath", "ssh_tty",
                 "ssh_connection", "lang", "ls_colors", "logname", "oldpwd", "term", "xdg_session_id")


def _to_boolean(value: str) -> bool:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise CommandError(BOOLEAN_ERROR)


def _to_object(value: str) -> dict:
    if value.startswith("{"):
        return json.loads(value)
    pairs = (pair.split("=", 1) for pair in value.split(","))
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


def _to_array(value: str, schema: Mapping | None = None, auto_dict: bool = False) -> list:
    # A bare integer is one item, not the JSON number it also is.
    if value.strip().lstrip("-").isdigit():
        return [int(value)]
    try:
        result = json.loads(value)
    except ValueError:
        result = None
    if not isinstance(result, list):
        result = [item.strip() for item in value.split(",")]
    if auto_dict and result and all(isinstance(item, str) and ":" in item for item in result):
        properties = (schema or {}).get("properties") or {}
        converted = {}
        for item in result:
            key, _, raw = item.partition(":")
            converted[key] = _cast(key, raw, properties.get(key))
        return [converted]
    return result


def _cast(name: str, value: str, schema: Mapping | None, auto_dict: bool = False) -> Any:
    kind = (schema or {}).get("type")
    try:
        if kind == "array":
            return _to_array(value, schema, auto_dict)
        if kind == "boolean":
            return _to_boolean(value)
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
        if kind == "object":
            return _to_object(value)
    except ValueError as error:
        raise CommandError(f'Invalid value "{value}" for parameter "{name}" of type {kind}: {error}') from error
    return value


def inherited_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CLI's environment minus the variables that describe its own shell."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if k.lower() not in ENV_BLACKLIST}


def _read_file(path: str) -> str:
    if not os.path.exists(path):
        raise CommandError(f'File "{path}" doesn\'t exist')
    if not os.path.isfile(path):
        raise CommandError(f'"{path}" is not a file')
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8")


def parse_parameters(args: list[str], action: Mapping, runner: Mapping, *, auto_dict: bool = False,
                     inherit_env: bool = False, env: Mapping[str, str] | None = None,
                     cwd: str | None = None) -> dict[str, Any]:
    """Action parameters from `k=v` arguments, cast by the runner's then the action's schema.

    `@k=path` reads a file into k; the first argument without "=" starts a `cmd`
    made of it and everything after it; a repeated array parameter accumulates.
    """
    runner_params = runner.get("runner_parameters") or {}
    action_params = action.get("parameters") or {}
    result: dict[str, Any] = {}
    if inherit_env:
        result["env"] = inherited_env(env)
    for index, arg in enumerate(args):
        if "=" not in arg:
            result["cmd"] = " ".join(args[index:])
            break
        key, value = arg.split("=", 1)
        if key.startswith("@"):
            path = os.path.normpath(os.path.join(cwd or os.getcwd(), value))
            content = _read_file(path)
            if action.get("ref") == "core.http":
                result["file_content"] = content
                result.setdefault("method", "POST")
                result.setdefault("file_name", os.path.basename(path))
            else:
                result[key[1:]] = content
            continue
        schema = runner_params.get(key) or action_params.get(key)
        value = _cast(key, value, schema, auto_dict)
        if (schema or {}).get("type") == "array" and isinstance(result.get(key), list):
            result[key] = result[key] + value
        else:
            result[key] = value
    return result


def _position(schema: Mapping) -> tuple:
    position = schema.get("position")
    return (0, position, "") if isinstance(position, int) else (1, 0, "")


def print_action_help(sess: Session, ref_or_id: str) -> None:
    """The action's description and its required and optional parameters, by position."""
    action = sess.client.actions.get_by_ref_or_id(ref_or_id)
    if action is None:
        click.echo(f'Action "{ref_or_id}" is not found. '
                   'Use "st2 action list" to see the list of available actions.')
        return
    runner = sess.client.runners.get_by_name(action.runner_type)
    runner_params = (runner.serialize() if runner else {}).get("runner_parameters") or {}
    action_params = getattr(action, "parameters", None) or {}
    merged = dict(runner_params, **action_params)
    immutable = {n for n in merged if (runner_params.get(n) or {}).get("immutable")
                 or (action_params.get(n) or {}).get("immutable")}
    required = {n for n, s in merged.items() if s.get("required")} - immutable
    optional = set(merged) - required - immutable
    click.echo("")
    click.echo(textwrap.fill(getattr(action, "description", "") or ""))
    click.echo("")
    for title, names in (("Required Parameters:", required), ("Optional Parameters:", optional)):
        if not names:
            continue
        click.echo(title)
        for name in sorted(names, key=lambda n: _position(merged[n]) + (n,)):
            _print_parameter(name, merged[name])


def _print_parameter(name: str, schema: Mapping) -> None:
    outer = textwrap.TextWrapper(width=78, initial_indent=" " * 4, subsequent_indent=" " * 4)
    inner = textwrap.TextWrapper(width=78, initial_indent=" " * 8, subsequent_indent=" " * 8)
    click.echo(outer.fill(name))
    if schema.get("description"):
        click.echo(inner.fill(schema["description"]))
    if schema.get("type"):
        click.echo(inner.fill(f"Type: {schema['type']}"))
    if schema.get("enum"):
        click.echo(inner.fill("Enum: " + ", ".join(str(v) for v in schema["enum"])))
    if schema.get("default") is not None:
        click.echo(inner.fill(f"Default: {schema['default']}"))
    click.echo("")


def _get_action(sess: Session, ref_or_id: str) -> Any:
    action = sess.client.actions.get_by_ref_or_id(ref_or_id)
    if action is None:
        raise CommandError(f'Resource with id or reference "{ref_or_id}" doesn\'t exist.')
    return action


def _print_action(sess: Session, action: Any) -> None:
    doc = action.serialize()
    sess.print(doc, lambda: formatting.property_table(doc, ["all"], DISPLAY_ORDER), ["all"])


def _run_command(name: str, always_async: bool) -> Callable:
    """`st2 run` (waits) and `st2 action execute` (returns at once): same options, same request."""

    @click.command(name, cls=Command, context_settings={"help_option_names": []},
                   help="Invoke an action manually." if always_async else "Run an action and wait for its result.")
    @click.argument("ref_or_id", required=False, metavar="REF-OR-ID")
    @click.argument("parameters", nargs=-1)
    @click.option("-h", "--help", "show_help", is_flag=True, help="Print usage for the given action.")
    @click.option("-a", "--async", "action_async", is_flag=True, help="Do not wait for action to finish.")
    @click.option("-e", "--inherit-env", is_flag=True,
                  help='Pass the environment variables accessible to the CLI as the "env" parameter.')
    @click.option("-u", "--user", help="User under which to run the action (admins only).")
    @click.option("--trace-tag", "--trace_tag", "trace_tag", help="A trace tag string to track execution later.")
    @click.option("--trace-id", help="Existing trace id for this execution.")
    @click.option("--delay", type=int, help="How long (in milliseconds) to delay the execution before scheduling.")
    @click.option("--tail", is_flag=True, help="Print the output of the execution while it runs.")
    @click.option("--auto-dict", is_flag=True, help="Convert list items with colons to dictionaries.")
    @display_options(RUN_ATTRIBUTES)
    @resource_options
    def command(ref_or_id: str | None, parameters: tuple, show_help: bool, user: str | None,
                trace_tag: str | None, trace_id: str | None, delay: int | None, **opts: Any) -> None:
        sess, ctx = session(), click.get_current_context()
        if show_help or not ref_or_id:
            if ref_or_id:
                print_action_help(sess, ref_or_id)
            elif show_help:
                click.echo(ctx.get_help())
            else:
                raise click.UsageError("Missing action reference or id", ctx)
            return
        client = sess.client
        action = _get_action(sess, ref_or_id)
        runner = client.runners.get_by_name(action.runner_type)
        if runner is None:
            raise CommandError(f'Runner type "{action.runner_type}" for action "{action.name}" cannot be found.')
        body: dict[str, Any] = {
            "action": f"{action.pack}.{action.name}",
            "parameters": parse_parameters(list(parameters), action.serialize(), runner.serialize(),
                                           auto_dict=opts["auto_dict"], inherit_env=opts["inherit_env"]),
            "user": user,
        }
        if delay:
            body["delay"] = delay
        if trace_id:
            body["context"] = {"trace_context": {"id_": trace_id}}
        elif trace_tag:
            body["context"] = {"trace_context": {"trace_tag": trace_tag}}
        execution = client.executions.create(body)
        finish(sess, execution, dict(opts, action_async=always_async or opts["action_async"]))

    return command


run = _run_command("run", always_async=False)


@click.group("action", cls=Group, help="An activity that happens as a response to the external event.")
def action_group() -> None:
    """st2 action ..."""


action_group.add_command(_run_command("execute", always_async=True))


@action_group.command("list", help="Get the list of actions.")
@click.option("-p", "--pack", help="Only return resources belonging to the provided pack")
@click.option("-a", "--attr", cls=MultiOption, default=LIST_ATTRIBUTES, show_default=True,
              help='Attributes to include in the output; "all" for every attribute.')
@click.option("-w", "--width", cls=MultiOption, type=int, help="Set the width of columns in output.")
@resource_options
def list_actions(pack: str | None, attr: tuple, width: tuple) -> None:
    sess = session()
    attributes = list(attr)
    params = None if "all" in attributes else {"include_attributes": ",".join(dict.fromkeys(attributes))}
    rows = [a.serialize() for a in sess.client.actions.get_all(pack=pack, params=params)]
    sess.print(rows, lambda: formatting.table(rows, attributes, list(width)), attributes)


@action_group.command("get", help="Get individual action.")
@click.argument("refs", nargs=-1, required=True, metavar="REF-OR-ID...")
@click.option("-a", "--attr", cls=MultiOption, default=["all"],
              help='Attributes to include in the output; "all" or unspecified for every attribute.')
@resource_options
def get_actions(refs: tuple, attr: tuple) -> None:
    sess = session()
    attributes = list(attr)
    found = []
    for ref in refs:
        action = sess.client.actions.get_by_id(ref)
        if action is None:
            click.echo(f'Action "{ref}" is not found.\n')
            if len(refs) == 1:
                raise CommandError(f"Resource {ref} not found.")
            continue
        found.append(action.serialize())
    for doc in found:
        sess.print(doc, lambda: formatting.property_table(doc, attributes, DISPLAY_ORDER), attributes)


def _guard(func: Callable[[], Any]) -> Any:
    # StackStorm's create/update print the error and exit 2 (an operation failure).
    try:
        return func()
    except CommandError:
        raise
    except Exception as error:
        raise CommandError(str(error), exit_code=2) from error


@action_group.command("create", help="Create a new action.")
@click.argument("file", metavar="FILE")
@resource_options
def create_action(file: str) -> None:
    sess = session()
    data = load_meta_file(file)
    _print_action(sess, _guard(lambda: sess.client.actions.create(data)))


@action_group.command("update", help="Updating an existing action.")
@click.argument("ref_or_id", metavar="REF-OR-ID")
@click.argument("file", metavar="FILE")
@resource_options
def update_action(ref_or_id: str, file: str) -> None:
    sess = session()
    existing = _get_action(sess, ref_or_id)
    data = load_meta_file(file)
    if not data.get("id"):
        data["id"] = existing.id
    elif data["id"] != existing.id:
        raise CommandError("The value for the action id in the JSON/YAML file does not match the ID provided "
                           "in the command line arguments.")
    manager = sess.client.actions
    _print_action(sess, _guard(lambda: manager.update(manager.resource(**data))))


@action_group.command("delete", help="Delete an existing action.")
@click.argument("ref_or_id", metavar="REF-OR-ID")
@click.option("-r", "--remove-files", is_flag=True, help="Remove action files from disk.")
@resource_options
def delete_action(ref_or_id: str, remove_files: bool) -> None:
    sess = session()
    action = sess.client.actions.get_by_ref_or_id(ref_or_id)
    if action is None:
        click.echo(f'Action "{ref_or_id}" is not found.\n')
        return
    sess.client.actions.delete_action(action, remove_files)
    click.echo(f'Resource with id "{ref_or_id}" has been successfully deleted.')


def _set_enabled(ref_or_id: str, enabled: bool) -> None:
    sess = session()
    doc = _get_action(sess, ref_or_id).serialize()
    doc.pop("ref", None)
    doc["enabled"] = enabled
    manager = sess.client.actions
    _print_action(sess, manager.update(manager.resource(**doc)))


@action_group.command("enable", help="Enable an existing action.")
@click.argument("ref_or_id", metavar="REF-OR-ID")
@resource_options
def enable_action(ref_or_id: str) -> None:
    _set_enabled(ref_or_id, True)


@action_group.command("disable", help="Disable an existing action.")
@click.argument("ref_or_id", metavar="REF-OR-ID")
@resource_options
def disable_action(ref_or_id: str) -> None:
    _set_enabled(ref_or_id, False)
