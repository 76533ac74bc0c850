"""`st2 policy list/get/create/update/delete` and `st2 policy-type list/get`."""

from __future__ import annotations

import click

from st2client.commands import CommandError, Group, load_meta_file, resource_options, session
from st2client.commands.rule import (attr_option, fetch_each, include_params, print_listing, show_each,
                                     width_option)
from st2client import formatting

LIST_ATTRIBUTES = ["ref", "resource_ref", "policy_type", "enabled"]
GET_ORDER = ["id", "uid", "ref", "pack", "name", "description", "enabled", "resource_ref", "policy_type",
             "parameters"]
TYPE_LIST_ATTRIBUTES = ["id", "resource_type", "name", "description"]
TYPE_GET_ORDER = ["id", "uid", "ref", "resource_type", "name", "description", "enabled", "module", "parameters"]


@click.group("policy", cls=Group, help="Policy that is enforced on a resource.")
def policy_group() -> None:
    """st2 policy ..."""


@policy_group.command("list", help="Get the list of policies.")
@click.option("-p", "--pack", help="Only return resources belonging to the provided pack")
@click.option("-r", "--resource-ref", help="Resource reference to filter the list.")
@click.option("-pt", "--policy-type", help="Policy type to filter the list.")
@attr_option(LIST_ATTRIBUTES)
@width_option
@resource_options
def list_policies(pack: str | None, resource_ref: str | None, policy_type: str | None, attr: tuple,
                  width: tuple) -> None:
    sess = session()
    attributes = list(attr)
    found = sess.client.policies.query(params=include_params(attributes), pack=pack, resource_ref=resource_ref,
                                       policy_type=policy_type)
    print_listing(sess, [p.serialize() for p in found], attributes, width)


@policy_group.command("get", help="Get individual policy.")
@click.argument("refs", nargs=-1, required=True, metavar="REF-OR-ID...")
@attr_option(["all"], 'Attributes to include in the output; "all" or unspecified for every attribute.')
@resource_options
def get_policies(refs: tuple, attr: tuple) -> None:
    sess = session()
    show_each(sess, fetch_each(sess.client.policies, refs, "Policy"), list(attr), GET_ORDER)


def _print_policy(doc: dict) -> None:
    session().print(doc, lambda: formatting.property_table(doc, ["all"], GET_ORDER), ["all"])


@policy_group.command("create", help="Create a new policy.")
@click.argument("file", metavar="FILE")
@resource_options
def create_policy(file: str) -> None:
    sess = session()
    try:
        created = sess.client.policies.create(load_meta_file(file))
    except Exception as error:
        raise CommandError(str(error), exit_code=2) from error
    _print_policy(created.serialize())


@policy_group.command("update", help="Updating an existing policy.")
@click.argument("ref_or_id", metavar="REF-OR-ID")
@click.argument("file", metavar="FILE")
@resource_options
def update_policy(ref_or_id: str, file: str) -> None:
    sess = session()
    manager = sess.client.policies
    existing = manager.get_by_ref_or_id(ref_or_id)
    if existing is None:
        raise CommandError(f'Resource with id or reference "{ref_or_id}" doesn\'t exist.')
    data = load_meta_file(file)
    data.setdefault("id", existing.id)
    if data["id"] != existing.id:
        raise CommandError("The value for the policy id in the JSON/YAML file does not match the ID provided "
                           "in the command line arguments.")
    _print_policy(manager.update(manager.resource(**data)).serialize())


@policy_group.command("delete", help="Delete an existing policy.")
@click.argument("ref_or_id", metavar="REF-OR-ID")
@resource_options
def delete_policy(ref_or_id: str) -> None:
    sess = session()
    policy = sess.client.policies.get_by_ref_or_id(ref_or_id)
    if policy is None:
        click.echo(f'Policy "{ref_or_id}" is not found.\n')
        raise CommandError(f"Resource {ref_or_id} not found.", exit_code=2)
    sess.client.policies.delete(policy)
    click.echo(f'Resource with id "{ref_or_id}" has been successfully deleted.')


@click.group("policy-type", cls=Group, help="Type of policy that can be applied to resources.")
def policy_type_group() -> None:
    """st2 policy-type ..."""


@policy_type_group.command("list", help="Get the list of policy types.")
@click.option("-r", "--resource-type", help="Return policy types for the resource type.")
@attr_option(TYPE_LIST_ATTRIBUTES)
@width_option
@resource_options
def list_policy_types(resource_type: str | None, attr: tuple, width: tuple) -> None:
    sess = session()
    attributes = list(attr)
    found = sess.client.policytypes.get_all(params=include_params(attributes), resource_type=resource_type)
    print_listing(sess, [t.serialize() for t in found], attributes, width)


@policy_type_group.command("get", help="Get individual policy type.")
@click.argument("refs", nargs=-1, required=True, metavar="REF-OR-ID...")
@attr_option(["all"], 'Attributes to include in the output; "all" or unspecified for every attribute.')
@resource_options
def get_policy_types(refs: tuple, attr: tuple) -> None:
    sess = session()
    show_each(sess, fetch_each(sess.client.policytypes, refs, "Policy type"), list(attr), TYPE_GET_ORDER)
