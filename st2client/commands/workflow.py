"""`st2 workflow inspect`: run the checks a workflow goes through before it starts, on a file or an action.

As StackStorm's CLI: "No errors found in workflow definition.", or the list of
errors as YAML (JSON with -j); either way the exit code is 0, as there. With
--action the definition comes from the API (the action's entry point), where
StackStorm's CLI reads it under /opt/stackstorm/packs on the local machine.
"""

from __future__ import annotations

import json
import os

import click
import yaml

from st2client.commands import CommandError, Group, auth_options, session


@click.group("workflow", cls=Group, help="Commands for workflow authoring related operations.")
def workflow_group() -> None:
    """st2 workflow ..."""


@workflow_group.command("inspect", help="Inspect workflow definition and return the list of errors if any.")
@click.option("--file", "path", help="Local file path to the workflow definition.")
@click.option("--action", "action_ref", help="Reference name for the registered action. This option works only "
                                             "if the file referenced by the entry point is installed locally.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the errors in JSON format.")
@auth_options
def inspect_workflow(path: str | None, action_ref: str | None, as_json: bool) -> None:
    sess = session()
    if bool(path) == bool(action_ref):
        raise CommandError("Provide either --file or --action, not both.", exit_code=2)
    if path:
        if not os.path.isfile(path):
            raise CommandError(f'File "{path}" does not exist.')
        with open(path, encoding="utf-8") as handle:
            definition = handle.read()
    else:
        definition = sess.client.actions.get_entrypoint(action_ref)
    # The definition travels as a JSON string; the API takes that as well as text/plain.
    errors = sess.client.request("POST", "/workflows/inspect", json=definition).json()
    if not isinstance(errors, list):
        raise CommandError(f"The inspection result is not type of list: {errors}")
    if not errors:
        click.echo("No errors found in workflow definition.")
        return
    click.echo(json.dumps(errors, indent=2) if as_json else
               yaml.safe_dump(errors, default_flow_style=False, allow_unicode=True))
