"""`st2 auth`, `st2 login` and `st2 whoami`: getting a token and seeing who you are.

`auth` and `login` take the user's password (prompted for when -p is absent)
and POST it to the auth service with HTTP Basic; they never log in from the
config first. `login` also caches the token in ~/.st2/token-<user> and writes
`[credentials] username` into the CLI config, so that later commands use that
token (credentials.py) until it expires.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import click
import requests

from st2client import formatting
from st2client.client import St2ClientError
from st2client.commands import Command, CommandError, output_options, resource_options, session
from st2client.credentials import cache_token

TOKEN_ATTRIBUTES = ["user", "token", "expiry"]
# The client cannot ask the server for its configured token TTL; StackStorm's CLI states the default.
DEFAULT_TOKEN_TTL_HOURS = 24
NOT_WRITTEN_NOTE = (
    "Note: You didn't use --write-password option so the password hasn't been stored in the client config "
    "and you will need to login again in {hours} hours when the auth token expires.\n"
    'As an alternative, you can run st2 login command with the "--write-password" flag, but keep it mind '
    "this will cause it to store the password in plain-text in the client config file (~/.st2/config).")
PASSWORD_HELP = "Password for the user. If password is not provided, it will be prompted for."
TTL_HELP = "The life span of the token in seconds. Max TTL configured by the admin supersedes this."


def _password(given: str | None) -> str:
    if given:
        return given
    # On stderr, like getpass: -t and -j output stays clean for pipes.
    return click.prompt("Password", hide_input=True, default="", show_default=False, err=True)


@click.command("auth", cls=Command, help="Authenticate user and acquire access token.")
@click.argument("username")
@click.option("-p", "--password", help=PASSWORD_HELP)
@click.option("-l", "--ttl", type=int, help=TTL_HELP)
@click.option("-t", "--only-token", is_flag=True,
              help="On successful authentication, print only token to the console.")
@output_options
def auth(username: str, password: str | None, ttl: int | None, only_token: bool) -> None:
    sess = session()
    document = sess.new_client().create_token(username, _password(password), ttl)
    if only_token:
        click.echo(document["token"])
        return
    sess.print(document, lambda: formatting.property_table(document, TOKEN_ATTRIBUTES, ()), TOKEN_ATTRIBUTES)


@click.command("login", cls=Command,
               help="Authenticate user, acquire access token, and update CLI config directory")
@click.argument("username")
@click.option("-p", "--password", help=PASSWORD_HELP)
@click.option("-l", "--ttl", type=int, help=TTL_HELP)
@click.option("-w", "--write-password", is_flag=True,
              help="Write the password in plain text to the config file (default is to omit it)")
@output_options
def login(username: str, password: str | None, ttl: int | None, write_password: bool) -> None:
    sess = session()
    config_file = Path(sess.config_file())
    password = _password(password)
    try:
        document = sess.new_client().create_token(username, password, ttl)
        cache_token(document)
        write_credentials(config_file, username, password if write_password else None)
    except (St2ClientError, requests.RequestException, OSError, configparser.Error) as error:
        raise CommandError(f"Failed to log in as {username}: {error}") from error
    click.echo(f"Logged in as {username}")
    if not write_password:
        click.echo("")
        click.echo(NOT_WRITTEN_NOTE.format(hours=DEFAULT_TOKEN_TTL_HOURS))


def write_credentials(path: Path, username: str, password: str | None = None) -> None:
    """Set [credentials] username in the CLI config at path (and password, or remove a stored one)."""
    parser = configparser.ConfigParser(interpolation=None)
    if path.is_file():
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    if not parser.has_section("credentials"):
        parser.add_section("credentials")
    parser.set("credentials", "username", username)
    if password is None:
        parser.remove_option("credentials", "password")
    else:
        parser.set("credentials", "password", password)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A new config may come to hold a password: create it readable by its owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        parser.write(handle)


@click.command("whoami", cls=Command, help="Display the currently authenticated user")
@resource_options
def whoami() -> None:
    sess = session()
    client = sess.client
    try:
        info = client.get_user_info()
    except (St2ClientError, requests.RequestException):
        # StackStorm's CLI says only this, and exits 0, whatever the cause (401 included).
        click.echo("Unable to retrieve currently logged-in user")
        if client.settings.debug:
            raise
        return
    authentication, rbac = info["authentication"], info["rbac"]
    click.echo(f'Currently logged in as "{info["username"]}".')
    click.echo("")
    click.echo(f"Authentication method: {authentication['method']}")
    if authentication["method"] == "authentication token":
        click.echo(f"Authentication token expire time: {authentication['token_expire']}")
    click.echo("")
    click.echo("RBAC:")
    click.echo(f" - Enabled: {rbac['enabled']}")
    click.echo(f" - Roles: {', '.join(rbac['roles'])}")
