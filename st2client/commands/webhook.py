"""`st2 webhook list/get`: the webhook triggers rules registered (core.st2.webhook with a url)."""

from __future__ import annotations

import click

from st2client.commands import Group, resource_options, session
from st2client.commands.rule import attr_option, fetch_each, include_params, print_listing, show_each, width_option

LIST_ATTRIBUTES = ["url", "type", "description"]
GET_ORDER = ["type", "description"]


@click.group("webhook", cls=Group, help="Webhooks.")
def webhook_group() -> None:
    """st2 webhook ..."""


@webhook_group.command("list", help="Get the list of webhooks.")
@click.option("-p", "--pack", help="Only return resources belonging to the provided pack")
@attr_option(LIST_ATTRIBUTES)
@width_option
@resource_options
def list_webhooks(pack: str | None, attr: tuple, width: tuple) -> None:
    sess = session()
    attributes = list(attr)
    found = sess.client.webhooks.get_all(pack=pack, params=include_params(attributes))
    # The hook's url lives in the trigger's parameters; StackStorm's CLI lifts it into a column.
    rows = [dict(w.serialize(), url=(getattr(w, "parameters", None) or {}).get("url")) for w in found]
    rows.sort(key=lambda row: str(row["url"] or ""))
    print_listing(sess, rows, attributes, width)


@webhook_group.command("get", help="Get individual webhook.")
@click.argument("urls", nargs=-1, required=True, metavar="URL...")
@attr_option(["all"], 'Attributes to include in the output; "all" or unspecified for every attribute.')
@resource_options
def get_webhooks(urls: tuple, attr: tuple) -> None:
    sess = session()
    docs = fetch_each(sess.client.webhooks, [url.strip("/") for url in urls], "Webhook")
    show_each(sess, docs, list(attr), GET_ORDER)
