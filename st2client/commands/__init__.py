"""What every command shares: the session (config, credentials, client), the
per-command options StackStorm's CLI accepts (-t, --api-key, -j, -y), options
that take several values like argparse's nargs="+", and printing.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable

import click
import yaml

from st2client import formatting
from st2client.client import Client, St2ClientError, config_path, default_config, read_config
from st2client.credentials import token_from_config

LOG = logging.getLogger(__name__)

NO_MATCH = "No matching items found"


class CommandError(St2ClientError):
    """A command could not do what was asked; exit_code is what the process returns."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class Session:
    """One CLI invocation: global options, the parsed config and a lazily built client."""

    def __init__(self, options: dict[str, Any], env: dict[str, str] | None = None):
        self.options = options
        self.env = os.environ if env is None else env
        self.token: str | None = None
        self.api_key: str | None = None
        self.json = False
        self.yaml = False
        self._config: dict | None = None
        self._client: Client | None = None

    @property
    def skip_config(self) -> bool:
        skip = str(self.env.get("ST2_CLI_SKIP_CONFIG", "0")).strip() not in ("", "0")
        return bool(self.options.get("skip_config")) or skip

    def config_file(self) -> str:
        """The config file this run reads; an explicit one must exist."""
        explicit = self.options.get("config_file")
        if explicit:
            path = os.path.abspath(os.path.expanduser(explicit))
            if not os.path.isfile(path):
                raise CommandError(f'Config "{path}" not found')
            return path
        return config_path(self.env)

    @property
    def config(self) -> dict:
        """The CLI config (all defaults when skipped)."""
        if self._config is None:
            self._config = default_config() if self.skip_config else read_config(self.config_file())
        return self._config

    @property
    def timezone(self) -> str:
        return self.config["cli"].get("timezone") or "UTC"

    @property
    def color(self) -> bool:
        return formatting.colors_enabled()

    def new_client(self) -> Client:
        """A client for this run's endpoints and given credentials, without logging in from the config."""
        names = ("base_url", "api_url", "auth_url", "stream_url", "api_version", "cacert", "basic_auth")
        kwargs = {name: self.options.get(name) for name in names}
        return Client(debug=bool(self.options.get("debug")), token=self.token, api_key=self.api_key,
                      env=self.env, config={} if self.skip_config else self.config, **kwargs)

    @property
    def client(self) -> Client:
        """The API client; with no token or API key given, logged in as the config's user (credentials.py)."""
        if self._client is None:
            client = self.new_client()
            if not (client.token or client.api_key) and not self.skip_config:
                try:
                    client.token = token_from_config(client, self.config)
                except St2ClientError:
                    click.echo("Failed to authenticate with credentials provided in the config.")
                    raise
            self._client = client
        return self._client

    def print(self, subject: Any, render: Callable[[], str], attributes: list[str] | None = None) -> None:
        """Print subject as JSON or YAML when asked, else render()'s text; a note when empty."""
        if not subject:
            click.echo(NO_MATCH)
        elif self.json:
            click.echo(formatting.to_json(subject, attributes))
        elif self.yaml:
            click.echo(formatting.to_yaml(subject, attributes))
        else:
            click.echo(render())


def session(ctx: click.Context | None = None) -> Session:
    """The Session of the running command."""
    ctx = ctx or click.get_current_context()
    return ctx.find_object(Session)


def _store(name: str) -> Callable:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value:
            setattr(session(ctx), name, value)
        return value
    return callback


def output_options(func: Callable) -> Callable:
    """-j/--json and -y/--yaml."""
    func = click.option("-y", "--yaml", is_flag=True, expose_value=False, callback=_store("yaml"),
                        help="Print output in YAML format.")(func)
    return click.option("-j", "--json", is_flag=True, expose_value=False, callback=_store("json"),
                        help="Print output in JSON format.")(func)


def auth_options(func: Callable) -> Callable:
    """-t/--token and --api-key, which beat the environment and the config."""
    func = click.option("--api-key", expose_value=False, callback=_store("api_key"), is_eager=True,
                        help="Api Key for user authentication. Get ST2_API_KEY from the environment "
                             "variables by default.")(func)
    return click.option("-t", "--token", expose_value=False, callback=_store("token"), is_eager=True,
                        help="Access token for user authentication. Get ST2_AUTH_TOKEN from the "
                             "environment variables by default.")(func)


def resource_options(func: Callable) -> Callable:
    """The options every resource command takes."""
    return auth_options(output_options(func))


class MultiOption(click.Option):
    """An option taking one or more values, like argparse's nargs="+": `-a ref pack`."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("multiple", True)
        super().__init__(*args, **kwargs)


class Command(click.Command):
    """A command whose MultiOptions consume every following value up to the next option."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        names = {opt for param in self.params if isinstance(param, MultiOption) for opt in param.opts}
        rewritten: list[str] = []
        filling, first = None, False
        for index, arg in enumerate(args):
            if arg == "--":
                rewritten.extend(args[index:])
                break
            if arg in names:
                filling, first = arg, True
                rewritten.append(arg)
            elif filling and not arg.startswith("-"):
                # "-a ref pack" becomes "-a ref -a pack", which click understands.
                rewritten.extend([arg] if first else [filling, arg])
                first = False
            else:
                filling = None
                rewritten.append(arg)
        return super().parse_args(ctx, rewritten)


class Group(click.Group):
    """A command group whose commands accept MultiOptions."""

    command_class = Command
    group_class = type


def load_meta_file(path: str) -> dict:
    """A resource document from a .json, .yaml or .yml file."""
    loaders = {".json": json.load, ".yaml": yaml.safe_load, ".yml": yaml.safe_load}
    if not os.path.isfile(path):
        raise CommandError(f'File "{path}" does not exist.')
    ext = os.path.splitext(path)[1]
    if ext not in loaders:
        raise CommandError(f"Unsupported meta type {ext}, file {path}. Allowed: {sorted(loaders)}")
    with open(path, encoding="utf-8") as handle:
        try:
            return loaders[ext](handle)
        except (ValueError, yaml.YAMLError) as error:
            raise CommandError(f'File "{path}" is not valid {ext[1:].upper()}: {error}') from error
