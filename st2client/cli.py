"""The `st2` command: global options like StackStorm's CLI, then a group per resource.

Exit codes follow StackStorm's: 0 on success, 1 on an error (printed as
"ERROR: <message>"), 2 on a usage error or an operation failure; `st2 run`
exits 1 when the execution failed.
"""

from __future__ import annotations

import logging
import platform
import sys
from importlib import metadata

import click
import requests

from st2client.client import St2ClientError
from st2client.commands import CommandError, Group, Session
from st2client.commands.action import action_group, run
from st2client.commands.apikey import apikey_group
from st2client.commands.auth import auth, login, whoami
from st2client.commands.execution import execution_group
from st2client.commands.inquiry import inquiry_group
from st2client.commands.key import key_group
from st2client.commands.pack import pack_group
from st2client.commands.policy import policy_group, policy_type_group
from st2client.commands.runner import runner_group
from st2client.commands.rule import rule_group
from st2client.commands.rule_enforcement import rule_enforcement_group
from st2client.commands.sensor import sensor_group
from st2client.commands.timer import timer_group
from st2client.commands.trace import trace_group
from st2client.commands.trigger import trigger_group, trigger_instance_group
from st2client.commands.webhook import webhook_group
from st2client.commands.workflow import workflow_group

LOG = logging.getLogger(__name__)


def _version() -> str:
    try:
        version = metadata.version("st2-reimpl")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"st2 {version}, on Python {platform.python_version()}"


def _print_config(sess: Session) -> None:
    for section, options in sess.config.items():
        click.echo(f"[{section}]")
        for name, value in options.items():
            click.echo(f"{name} = {value}")


class Root(Group):
    """The root group: turns the client's errors into "ERROR: ..." and StackStorm's exit codes."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CommandError as error:
            click.echo(f"ERROR: {error}\n")
            raise click.exceptions.Exit(error.exit_code) from error
        except (St2ClientError, requests.RequestException) as error:
            click.echo(f"ERROR: {error}\n")
            raise click.exceptions.Exit(1) from error


@click.group("st2", cls=Root, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]},
             help="CLI for StackStorm event-driven automation platform.")
@click.version_option(message=_version(), package_name=None, version="", prog_name="st2")
@click.option("--url", "base_url", help="Base URL for the API servers (ST2_BASE_URL); default ports are assumed.")
@click.option("--auth-url", help="URL for the authentication service (ST2_AUTH_URL).")
@click.option("--api-url", help="URL for the API server (ST2_API_URL).")
@click.option("--stream-url", help="URL for the stream endpoint (ST2_STREAM_URL).")
@click.option("--api-version", help="API version to use (ST2_API_VERSION).")
@click.option("--cacert", help="Path to the CA cert bundle for the SSL endpoints (ST2_CACERT).")
@click.option("--basic-auth", help="Additional HTTP basic auth credentials as username:password.")
@click.option("--config-file", help="Path to the CLI config file (ST2_CONFIG_FILE, default ~/.st2/config).")
@click.option("--print-config", is_flag=True, help="Parse the config file and print the values.")
@click.option("--skip-config", is_flag=True, help="Don't parse and use the CLI config file (ST2_CLI_SKIP_CONFIG).")
@click.option("--debug", is_flag=True, help="Print each request as a curl command and its raw response.")
@click.pass_context
def cli(ctx: click.Context, print_config: bool, **options: object) -> None:
    sess = ctx.obj = Session(options)
    if options.get("debug"):
        logging.getLogger("st2client").setLevel(logging.DEBUG)
    if print_config:
        _print_config(sess)
        ctx.exit(3)
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(2)


cli.add_command(run)
cli.add_command(action_group)
cli.add_command(execution_group)
cli.add_command(runner_group)
cli.add_command(pack_group)
cli.add_command(sensor_group)
cli.add_command(rule_group)
cli.add_command(rule_enforcement_group)
cli.add_command(trigger_group)
cli.add_command(trigger_instance_group)
cli.add_command(trace_group)
cli.add_command(webhook_group)
cli.add_command(timer_group)
cli.add_command(key_group)
cli.add_command(policy_group)
cli.add_command(policy_type_group)
cli.add_command(workflow_group)
cli.add_command(inquiry_group)
cli.add_command(auth)
cli.add_command(login)
cli.add_command(whoami)
cli.add_command(apikey_group)


def main(argv: list[str] | None = None) -> int:
    """Console script `st2`."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s  %(levelname)s - %(message)s")
    try:
        cli.main(args=argv, prog_name="st2", standalone_mode=True)
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
