"""`st2 trace list/get`: the chains trigger instance -> rule -> executions.

A single trace prints as its header (id, trace tag, start) then one table of
its components sorted by time. `trace get` can narrow that to the causation
chain of one component (walking each ``caused_by`` up to the start) and to
some component kinds.
"""

from __future__ import annotations

from typing import Any, Iterable

import click

from st2client import formatting
from st2client.commands import Group, Session, resource_options, session
from st2client.commands.rule import attr_option, date_transforms, fetch_each, last_option, print_listing, width_option

LIST_ATTRIBUTES = ["id", "uid", "trace_tag", "start_timestamp"]
DETAIL_ATTRIBUTES = ["id", "trace_tag", "action_executions", "rules", "trigger_instances", "start_timestamp"]
HEADER_ATTRIBUTES = ["id", "trace_tag", "start_timestamp"]
COMPONENT_COLUMNS = ["id", "type", "ref", "updated_at"]

# Component list -> (the type caused_by names, the label in the components table, --attr values that show it).
COMPONENTS = {
    "trigger_instances": ("trigger_instance", "trigger-instance",
                          ("all", "trigger-instances", "trigger_instances", "triggerinstances", "triggers")),
    "rules": ("rule", "rule", ("all", "rules")),
    "action_executions": ("action_execution", "execution",
                          ("all", "executions", "action-executions", "action_executions", "actionexecutions",
                           "actions")),
}
LIST_BY_TYPE = {kind: name for name, (kind, _, _) in COMPONENTS.items()}


def causation_chain(trace: dict, component_type: str, component_id: str) -> dict:
    """The trace reduced to the component and what caused it, up to the start of the chain.

    An execution is caused by ``<rule id>:<trigger instance id>``: the same rule
    can appear once per trigger instance, so the second half picks which one.
    """
    chain: dict[str, list] = {name: [] for name in COMPONENTS}
    wanted_cause: str | None = None
    while component_type in LIST_BY_TYPE and component_id:
        name = LIST_BY_TYPE[component_type]
        found = next((c for c in trace.get(name) or [] if c.get("object_id") == component_id
                      and (not wanted_cause or (c.get("caused_by") or {}).get("id") == wanted_cause)), None)
        if found is None:
            break
        chain[name].append(found)
        cause = found.get("caused_by") or {}
        component_type, component_id, wanted_cause = cause.get("type"), cause.get("id"), None
        if component_id and ":" in component_id:
            component_id, wanted_cause = component_id.split(":", 1)
    return dict(trace, **chain)


def display_filter(trace: dict, show: Iterable[str] = (), hide_noop_triggers: bool = False) -> dict:
    """The trace with only the component lists asked for; optionally without trigger instances no rule used."""
    show = set(show)
    trace = dict(trace)
    if hide_noop_triggers and (not show or "trigger_instances" in show):
        used = {(rule.get("caused_by") or {}).get("id") for rule in trace.get("rules") or []}
        trace["trigger_instances"] = [t for t in trace.get("trigger_instances") or [] if t.get("object_id") in used]
    if show:
        for name in COMPONENTS:
            if name not in show:
                trace[name] = []
    return trace


def component_rows(trace: dict, attributes: Iterable[str]) -> list[dict]:
    """One row per component whose kind the attributes ask for, oldest first."""
    attributes = set(attributes)
    rows = []
    for name, (_, label, selectors) in COMPONENTS.items():
        if attributes & set(selectors):
            rows += [{"id": c.get("object_id"), "type": label, "ref": c.get("ref"), "updated_at": c.get("updated_at")}
                     for c in trace.get(name) or []]
    return sorted(rows, key=lambda row: str(row["updated_at"] or ""))


def print_trace(sess: Session, trace: dict, attributes: list[str]) -> None:
    """Header lines then the components table; JSON shows the whole trace (YAML only the header, as st2's)."""
    shown = date_transforms(sess, "start_timestamp")
    if sess.json or sess.yaml:
        sess.print(trace, str, DETAIL_ATTRIBUTES if sess.json else HEADER_ATTRIBUTES)
        return
    click.echo(formatting.execution_result(trace, HEADER_ATTRIBUTES, shown))
    rows = component_rows(trace, attributes)
    if rows:
        click.echo(formatting.table(rows, COMPONENT_COLUMNS))


@click.group("trace", cls=Group, help="A group of executions, rules and triggerinstances that are related.")
def trace_group() -> None:
    """st2 trace ..."""


@trace_group.command("list", help="Get the list of the 50 most recent traces.")
@last_option("traces")
@click.option("-s", "--sort", "sort_order", default="descending",
              help="Sort traces by start timestamp, asc|ascending (earliest first) or desc|descending "
                   "(latest first)")
@click.option("-c", "--trace-tag", help="Trace-tag to filter the list.")
@click.option("-e", "--execution", help="Execution to filter the list.")
@click.option("-r", "--rule", help="Rule to filter the list.")
@click.option("-g", "--trigger-instance", help="TriggerInstance to filter the list.")
@attr_option(LIST_ATTRIBUTES)
@width_option
@resource_options
def list_traces(last: int, sort_order: str, trace_tag: str | None, execution: str | None, rule: str | None,
                trigger_instance: str | None, attr: tuple, width: tuple) -> None:
    sess = session()
    filters: dict[str, Any] = {"limit": last, "trace_tag": trace_tag, "execution": execution, "rule": rule,
                               "trigger_instance": trigger_instance}
    if len([v for v in (trace_tag, execution, rule, trigger_instance) if v]) > 1:
        raise click.UsageError("Give at most one of -c/--trace-tag, -e/--execution, -r/--rule, "
                               "-g/--trigger-instance.")
    if sort_order in ("asc", "ascending"):
        filters["sort_asc"] = True
    elif sort_order in ("desc", "descending"):
        filters["sort_desc"] = True
    found, count = sess.client.trace.query_with_count(**filters)
    rows = [t.serialize() for t in found]
    attributes = list(attr)
    if len(rows) == 1:
        # One trace is shown whole, components included, unless other columns were asked for.
        print_trace(sess, rows[0], ["all"] if attributes == LIST_ATTRIBUTES else attributes)
        if not (sess.json or sess.yaml) and last and count and count > last:
            click.echo(formatting.note_box("traces", 1), err=True)
        return
    print_listing(sess, rows, attributes, width, date_transforms(sess, "start_timestamp"), entity="traces",
                  last=last, count=count)


@trace_group.command("get", help="Get individual trace.")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.option("-e", "--execution", help="Execution to show causation chain.")
@click.option("-r", "--rule", help="Rule to show causation chain.")
@click.option("-g", "--trigger-instance", help="TriggerInstance to show causation chain.")
@click.option("--show-executions", is_flag=True, help="Only show executions.")
@click.option("--show-rules", is_flag=True, help="Only show rules.")
@click.option("--show-trigger-instances", is_flag=True, help="Only show trigger instances.")
@click.option("-n", "--hide-noop-triggers", is_flag=True, help="Hide noop trigger instances.")
@attr_option(["all"], 'Attributes to include in the output; "all" or unspecified for every attribute.')
@resource_options
def get_traces(ids: tuple, execution: str | None, rule: str | None, trigger_instance: str | None,
               show_executions: bool, show_rules: bool, show_trigger_instances: bool, hide_noop_triggers: bool,
               attr: tuple) -> None:
    sess = session()
    origins = [(t, i) for t, i in (("action_execution", execution), ("rule", rule),
                                   ("trigger_instance", trigger_instance)) if i]
    if len(origins) > 1:
        raise click.UsageError("Give at most one of -e/--execution, -r/--rule, -g/--trigger-instance.")
    show = [name for name, flag in (("action_executions", show_executions), ("rules", show_rules),
                                    ("trigger_instances", show_trigger_instances)) if flag]
    for trace in fetch_each(sess.client.trace, ids, "Trace"):
        if origins:
            trace = causation_chain(trace, *origins[0])
        print_trace(sess, display_filter(trace, show, hide_noop_triggers), list(attr))
