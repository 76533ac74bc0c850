"""`st2 execution list/get/re-run/cancel/pause/resume/tail`, and how an execution
is waited for and printed (shared with `st2 run`).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import click

from st2client import formatting
from st2client.client import HTTPError
from st2client.commands import CommandError, Group, MultiOption, Session, resource_options, session

LIST_ATTRIBUTES = ["id", "action.ref", "context.user", "status", "start_timestamp", "end_timestamp"]
RUN_ATTRIBUTES = ["id", "action.ref", "context.user", "parameters", "status", "start_timestamp",
                  "end_timestamp", "result"]
GET_ATTRIBUTES = RUN_ATTRIBUTES[:-1] + ["log", "result"]
# What `execution get` always fetches besides the shown attributes (the runner type picks the layout).
GET_INCLUDE = ["action.ref", "action.runner_type", "start_timestamp", "end_timestamp", "log"]
WORKFLOW_ATTRIBUTES = ["id", "action.ref", "parameters", "status", "start_timestamp", "end_timestamp", "log"]
CHILD_COLUMNS = ["id", "status", "task", "action", "start_timestamp"]

PENDING_STATUSES = ("requested", "scheduled", "running", "canceling")
COMPLETED_STATUSES = formatting.COMPLETED_STATUSES
WORKFLOW_RUNNERS = ("action-chain", "orquesta")
MASKED_PARAMETERS = ("password", "private_key")
# `st2 run` exits 1 on these final statuses; StackStorm's CLI exits 0 on timeout, canceled, abandoned.
FAILED_EXIT_STATUSES = ("failed",)
# Seconds between polls while waiting: quick at first (most actions end in milliseconds), then 1 s.
POLL_INTERVALS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
POLL_MAX_INTERVAL = 1.0


def _mask_parameters(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {k: ("********" if k in MASKED_PARAMETERS else v) for k, v in value.items()}


def transforms(sess: Session) -> dict[str, Callable[[Any], Any]]:
    """How execution attributes are shown: local dates, masked passwords, coloured status."""
    tz, color = sess.timezone, sess.color
    return {
        "start_timestamp": lambda v: formatting.format_isodate(v, tz),
        "end_timestamp": lambda v: formatting.format_isodate(v, tz),
        "parameters": _mask_parameters,
        "status": lambda v: formatting.format_status(v, color),
    }


def display_options(attributes: list[str]) -> Callable:
    """The display options of run, execute, re-run and get."""
    def decorate(func: Callable) -> Callable:
        options = [
            click.option("--attr", cls=MultiOption, default=attributes, show_default=True,
                         help='Attributes to include in the output; "all" for every attribute.'),
            click.option("-d", "--detail", is_flag=True,
                         help="Display full detail of the execution in table format."),
            click.option("-k", "--key", help="Print only this key of the result (dot notation for nested keys)."),
            click.option("--raw", is_flag=True, help="Raw output, don't show sub-tasks for workflows."),
            click.option("--show-tasks", is_flag=True, help="Whether to show sub-tasks of an execution."),
            click.option("--depth", type=int, default=-1, help="Depth to which to show sub-tasks."),
            click.option("-w", "--width", cls=MultiOption, type=int, help="Set the width of columns in output."),
            click.option("--with-schema", is_flag=True, help="Show an output_schema suggestion with the result."),
        ]
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


def wait_for(sess: Session, execution: Any) -> Any:
    """Poll until the execution leaves requested/scheduled/running/canceling; a dot per poll."""
    dots = not (sess.json or sess.yaml)
    polls = 0
    while execution.status in PENDING_STATUSES:
        time.sleep(POLL_INTERVALS[polls] if polls < len(POLL_INTERVALS) else POLL_MAX_INTERVAL)
        polls += 1
        if dots:
            click.echo(".", nl=False)
        execution = sess.client.executions.get_by_id(execution.id)
        if execution is None:
            raise CommandError("The execution disappeared while waiting for it.")
    if dots:
        click.echo("")
    return execution


def _output_schema(result: Any) -> dict:
    names = {dict: "object", list: "array", int: "integer", str: "string", float: "number",
             bool: "boolean", type(None): "null"}
    if not isinstance(result, dict):
        return {}
    return {k: ({"type": "object", "parameters": _output_schema(v)} if isinstance(v, dict)
                else {"type": names.get(type(v), "string")}) for k, v in result.items()}


def _schema_note(sess: Session, doc: dict, with_schema: bool) -> str:
    if (doc.get("action") or {}).get("output_schema"):
        return ""
    if with_schema:
        import yaml
        schema = yaml.safe_dump({"output_schema": _output_schema(doc.get("result"))}, default_flow_style=False)
        lines = ("Based on the action output the following inferred schema was built:\n\n" + schema).split("\n")
        width = max(len(line) for line in lines) + 2
        box = ["", "+" + "-" * width + "+"] + ["| " + line.ljust(width - 2) + " |" for line in lines]
        return "\n".join(box + ["+" + "-" * width + "+"])
    if not sess.config["general"].get("silence_schema_output", True):
        return ("\n\n** This action does not have an output_schema. "
                "Run again with --with-schema to see a suggested schema.")
    return ""


def print_execution(sess: Session, execution: Any, opts: dict) -> None:
    """Print an execution as StackStorm's CLI does: attributes, a detail table, one result key or a workflow."""
    doc = execution.serialize()
    runner_type = (doc.get("action") or {}).get("runner_type", "unknown")
    is_workflow = runner_type in WORKFLOW_RUNNERS
    if opts.get("show_tasks") and not is_workflow:
        raise CommandError("--show-tasks option can only be used with workflow actions")
    if not opts.get("raw") and not opts.get("detail") and (opts.get("show_tasks") or is_workflow):
        _print_workflow(sess, doc, opts)
        return
    shown = transforms(sess)
    if opts.get("detail"):
        attributes = list(opts.get("display_attributes") or RUN_ATTRIBUTES)
        sess.print(doc, lambda: formatting.property_table(doc, attributes, attributes, shown), attributes)
    elif opts.get("key"):
        key = opts["key"]
        sess.print(doc, lambda: formatting.execution_result(doc, [], shown, key=key), [f"result.{key}"])
    else:
        attributes = list(opts.get("attr") or RUN_ATTRIBUTES)
        sess.print(doc, lambda: formatting.execution_result(doc, attributes, shown, color=sess.color)
                   + _schema_note(sess, doc, opts.get("with_schema", False)), attributes)


def _task_name(child: dict) -> Any:
    context = child.get("context") or {}
    if "chain" in context:
        return formatting.get_value(context, "chain.name")
    return formatting.get_value(context, "orquesta.task_name")


def _child_rows(children: list[dict], parent_id: str, elapsed: bool = True) -> list[dict]:
    nested = any(child.get("children") for child in children)
    depth = {parent_id: 0}
    by_id = {child["id"]: child for child in children}
    rows = []
    for child in children:
        parent = child.get("parent")
        if parent not in depth:
            grand = (by_id.get(parent) or {}).get("parent")
            depth[parent] = depth[grand] + 1 if grand in depth else 0
        prefix = ("+ " if child.get("children") else "  ") if nested else ""
        row = {"id": " " * depth[parent] + prefix + child["id"], "status": child.get("status"),
               "task": _task_name(child), "action": (child.get("action") or {}).get("ref"),
               "start_timestamp": child.get("start_timestamp"), "end_timestamp": child.get("end_timestamp")}
        rows.append(formatting.with_elapsed(row) if elapsed else row)
    return rows


def _print_workflow(sess: Session, doc: dict, opts: dict) -> None:
    attributes = list(WORKFLOW_ATTRIBUTES)
    children = sess.client.executions.get_property(doc["id"], "children", depth=opts.get("depth", -1)) or []
    # StackStorm's CLI shows the tasks' elapsed time in every format, JSON and YAML included.
    rows = _child_rows([c.serialize() for c in children], doc["id"])
    if not rows:
        attributes.append("result")
    at = attributes.index("status") + 1
    result = doc.get("result")
    tasks = result.get("tasks", []) if isinstance(result, dict) else []
    if doc.get("status") == "failed":
        error = (result.get("error"), result.get("traceback")) if isinstance(result, dict) else ("See result",) * 2
        last = tasks[-1] if tasks else {}
        last_result = last.get("result") if isinstance(last.get("result"), dict) else {}
        if error[0]:
            doc.update(error=error[0], traceback=error[1], result="See error and traceback.")
            attributes[at:at] = ["error", "traceback"]
        elif last_result.get("error") or last_result.get("stderr"):
            doc.update(error=last_result.get("error") or last_result.get("stderr"),
                       traceback=last_result.get("traceback"), result="See error and traceback.",
                       failed_on=last.get("name", "unknown"))
            attributes[at:at] = ["error", "traceback", "failed_on"]
    if tasks and tasks[-1].get("result"):
        doc.update(result_task=tasks[-1].get("name", "unknown"), result=tasks[-1]["result"])
        attributes[at:at] = ["result_task", "result"]
    elif "result" not in attributes:
        attributes.append("result")
    shown = transforms(sess)
    sess.print(doc, lambda: formatting.execution_result(doc, attributes, shown, color=sess.color), attributes)
    if rows:
        widths = list(opts.get("width") or [])
        sess.print(rows, lambda: formatting.table(rows, CHILD_COLUMNS, widths, shown), CHILD_COLUMNS)


def finish(sess: Session, execution: Any, opts: dict) -> None:
    """After a request: print the follow-up hint (async) or wait and print; exit 1 when it failed."""
    if opts.get("action_async"):
        click.echo(f"To get the results, execute:\n st2 execution get {execution.id}")
        click.echo(f"\nTo view output in real-time, execute:\n st2 execution tail {execution.id}")
    else:
        if opts.get("tail"):
            tail(sess, execution)
        execution = wait_for(sess, execution)
        print_execution(sess, execution, opts)
    if execution.status in FAILED_EXIT_STATUSES:
        raise click.exceptions.Exit(1)


def tail(sess: Session, execution: Any, output_type: str | None = None) -> Any:
    """Print an execution's output as it is stored, until it completes."""
    executions = sess.client.executions
    if execution.status in COMPLETED_STATUSES:
        click.echo(executions.get_output(execution.id, output_type))
        click.echo(f"Execution {execution.id} has completed (status={execution.status}).")
        return execution
    shown, polls = 0, 0
    while True:
        text = executions.get_output(execution.id, output_type)
        if len(text) > shown:
            click.echo(text[shown:], nl=False)
            shown = len(text)
        if execution.status in COMPLETED_STATUSES:
            break
        time.sleep(POLL_INTERVALS[polls] if polls < len(POLL_INTERVALS) else POLL_MAX_INTERVAL)
        polls += 1
        execution = executions.get_by_id(execution.id, params={"include_attributes": "id,status"})
    click.echo(f"\nExecution {execution.id} has completed (status={execution.status}).")
    return execution


@click.group("execution", cls=Group, help="An invocation of an action.")
def execution_group() -> None:
    """st2 execution ..."""


@execution_group.command("list", help="Get the list of the 50 most recent action executions.")
@click.option("-n", "--last", type=int, default=50, show_default=True,
              help="List N most recent action executions. Use -n -1 to fetch the full result set.")
@click.option("-s", "--sort", "sort_order", default="descending",
              help="Sort by start timestamp, asc|ascending (earliest first) or desc|descending (latest first).")
@click.option("--action", help="Action reference to filter the list.")
@click.option("--status", help="Only return executions with the provided status.")
@click.option("--user", help="Only return executions created by the provided user.")
@click.option("--trigger_instance", "--trigger-instance", "trigger_instance",
              help="Trigger instance id to filter the list.")
@click.option("--parent", help="Only return the children of this execution id.")
@click.option("-tg", "--timestamp-gt", help='Only executions started after this time (2000-01-01T12:00:00.000Z).')
@click.option("-tl", "--timestamp-lt", help='Only executions started before this time (2000-01-01T12:00:00.000Z).')
@click.option("-l", "--showall", is_flag=True, help="Include child executions of workflows.")
@click.option("-a", "--attr", cls=MultiOption, default=LIST_ATTRIBUTES, show_default=True,
              help='Attributes to include in the output; "all" for every attribute.')
@click.option("-w", "--width", cls=MultiOption, type=int, help="Set the width of columns in output.")
@resource_options
def list_executions(last: int, sort_order: str, action: str | None, status: str | None, user: str | None,
                    trigger_instance: str | None, parent: str | None, timestamp_gt: str | None,
                    timestamp_lt: str | None, showall: bool, attr: tuple, width: tuple) -> None:
    sess = session()
    attributes = list(attr)
    filters: dict[str, Any] = {"limit": last, "action": action, "status": status, "user": user,
                               "trigger_instance": trigger_instance, "timestamp_gt": timestamp_gt,
                               "timestamp_lt": timestamp_lt}
    if parent or not showall:
        filters["parent"] = parent or "null"
    if sort_order in ("asc", "ascending"):
        filters["sort_asc"] = True
    elif sort_order in ("desc", "descending"):
        filters["sort_desc"] = True
    if "all" not in attributes:
        filters["include_attributes"] = ",".join(dict.fromkeys(attributes))
    found, count = sess.client.executions.query_with_count(**filters)
    rows = [e.serialize() for e in reversed(found)]
    if any(row.get("children") for row in rows):
        for row in rows:
            row["id"] = ("+ " if row.get("children") else "  ") + row["id"]
    if sess.json or sess.yaml:
        sess.print(rows, str, attributes)
        return
    rows = [formatting.with_elapsed(row) for row in rows]
    text = formatting.table(rows, attributes, list(width), transforms(sess))
    sess.print(rows, lambda: text, attributes)
    if last and count and count > last:
        width_of_table = len(text.split("\n")[0]) if text else 0
        click.echo(formatting.note_box("action executions", last, width_of_table), err=True)


@execution_group.command("get", help="Get individual action execution.")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.option("-x", "--exclude-result", is_flag=True, help="Don't retrieve and display the result field.")
@display_options(GET_ATTRIBUTES)
@resource_options
def get_executions(ids: tuple, exclude_result: bool, **opts: Any) -> None:
    sess = session()
    attributes = list(opts["attr"])
    if exclude_result:
        params = {"exclude_attributes": "result"}
    elif "all" in attributes:
        params = None
    else:
        params = {"include_attributes": ",".join(dict.fromkeys(GET_INCLUDE + attributes))}
    found = []
    for execution_id in ids:
        execution = sess.client.executions.get_by_id(execution_id, params=params)
        if execution is None:
            click.echo(f'Action Execution "{execution_id}" is not found.\n')
            if len(ids) == 1:
                raise CommandError(f"Resource {execution_id} not found.")
            continue
        found.append(execution)
    for execution in found:
        if not (sess.json or sess.yaml):
            execution = type(execution)(**formatting.with_elapsed(execution.serialize()))
        print_execution(sess, execution, dict(opts, display_attributes=GET_ATTRIBUTES))


@execution_group.command("re-run", context_settings={"help_option_names": []},
                         help="Re-run a particular action.")
@click.argument("execution_id", required=False, metavar="ID")
@click.argument("parameters", nargs=-1)
@click.option("-h", "--help", "show_help", is_flag=True, help="Print usage for the given action.")
@click.option("--tasks", cls=MultiOption, help="Name of the workflow tasks to re-run.")
@click.option("--no-reset", cls=MultiOption, help="Name of the with-items tasks to not reset.")
@click.option("-a", "--async", "action_async", is_flag=True, help="Do not wait for action to finish.")
@click.option("-e", "--inherit-env", is_flag=True, help='Pass the environment variables as the "env" parameter.')
@click.option("--delay", type=int, help="How long (in milliseconds) to delay the execution before scheduling.")
@click.option("--tail", is_flag=True, help="Print the output of the new execution while it runs.")
@click.option("--auto-dict", is_flag=True, help="Convert list items with colons to dictionaries.")
@display_options(RUN_ATTRIBUTES)
@resource_options
def re_run(execution_id: str | None, parameters: tuple, show_help: bool, tasks: tuple, no_reset: tuple,
           delay: int | None, **opts: Any) -> None:
    from st2client.commands.action import parse_parameters, print_action_help

    sess = session()
    ctx = click.get_current_context()
    if show_help or not execution_id:
        if execution_id:
            existing = sess.client.executions.get_by_id(execution_id)
            if existing is not None:
                print_action_help(sess, existing.action["ref"])
                return
        click.echo(ctx.get_help())
        return
    client = sess.client
    existing = client.executions.get_by_id(execution_id)
    if existing is None:
        raise CommandError(f'Action execution with id "{execution_id}" cannot be found.')
    action = client.actions.get_by_ref_or_id(existing.action["ref"])
    if action is None:
        raise CommandError(f'Resource with id or reference "{existing.action["ref"]}" doesn\'t exist.')
    runner = client.runners.get_by_name(action.runner_type)
    if runner is None:
        raise CommandError(f'Runner type "{action.runner_type}" for action "{action.name}" cannot be found.')
    values = parse_parameters(list(parameters), action.serialize(), runner.serialize(),
                              auto_dict=opts["auto_dict"], inherit_env=opts["inherit_env"])
    execution = client.executions.re_run(execution_id, values, tasks=list(tasks), no_reset=list(no_reset),
                                         delay=delay or 0)
    finish(sess, execution, opts)


@execution_group.command("cancel", help="Cancel action executions.")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@resource_options
def cancel_executions(ids: tuple) -> None:
    sess = session()
    for execution_id in ids:
        try:
            response = sess.client.executions.cancel(execution_id)
        except HTTPError as error:
            if error.status_code != 404:
                raise
            raise CommandError(f'Action Execution "{execution_id}" is not found.') from error
        if isinstance(response, dict) and "faultstring" in response:
            click.echo(response["faultstring"])
        elif response:
            click.echo(f"action execution with id {execution_id} canceled.")
        else:
            click.echo(f"Cannot cancel action execution with id {execution_id}.")


def _set_status(ids: tuple, opts: dict, pause: bool) -> None:
    sess = session()
    for execution_id in ids:
        manager = sess.client.executions
        execution = manager.pause(execution_id) if pause else manager.resume(execution_id)
        if not (sess.json or sess.yaml):
            execution = type(execution)(**formatting.with_elapsed(execution.serialize()))
        print_execution(sess, execution, opts)


@execution_group.command("pause", help="Pause action executions (workflow executions only).")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@display_options(RUN_ATTRIBUTES)
@resource_options
def pause_executions(ids: tuple, **opts: Any) -> None:
    _set_status(ids, opts, pause=True)


@execution_group.command("resume", help="Resume action executions (workflow executions only).")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@display_options(RUN_ATTRIBUTES)
@resource_options
def resume_executions(ids: tuple, **opts: Any) -> None:
    _set_status(ids, opts, pause=False)


@execution_group.command("tail", help="Tail output of a particular execution.")
@click.argument("execution_id", default="last", metavar="[ID]")
@click.option("--type", "output_type", type=click.Choice(["stdout", "stderr"]),
              help="Type of output to tail for. If not provided, defaults to all.")
@resource_options
def tail_execution(execution_id: str, output_type: str | None) -> None:
    sess = session()
    if execution_id == "last":
        found = sess.client.executions.query(limit=1)
        if not found:
            click.echo("No executions found in db.")
            return
        execution = found[0]
    else:
        execution = sess.client.executions.get_by_id(execution_id)
    if execution is None:
        raise CommandError(f"Execution  with id {execution_id} not found.")
    tail(sess, execution, output_type)
    sys.stdout.flush()
