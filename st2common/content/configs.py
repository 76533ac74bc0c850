"""Pack config registration: ``config.schema.yaml`` of each pack and ``<configs_path>/<pack>.yaml``.

StackStorm's rules (ConfigsRegistrar, ``validate_configs=True``):

- ``config.schema.yaml`` maps each config option to a definition with the
  attributes of an action parameter (type, description, required, default,
  secret, properties ...). It is stored as the pack's ConfigSchemaDB. A file
  that exists but is empty is an error.
- The values live outside the pack, in ``[content] configs_path``, one file
  per pack. They are validated against the schema, defaults counting as
  given, and stored as the pack's ConfigDB with Jinja templates unrendered
  (``{{ st2kv.system.api_token }}`` is resolved when an action runs, see
  st2common.services.configs); a templated value is not type-checked here.

A config that violates its schema does not stop the pack: the pack
registers, the error (naming pack, option and file) is reported, and the
config is stored with that error, so every action of the pack fails with it
until the file is fixed and registered again. A config file that has gone
is forgotten; so is a schema.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import jsonschema
from jsonschema.exceptions import best_match

from st2common.content import schemas
from st2common.content.loader import PackDir, YamlDocument, load_yaml
from st2common.exceptions import ContentError
from st2common.models.db.pack import ConfigDB, ConfigSchemaDB
from st2common.runners import registry
from st2common.templating import contains_template

if TYPE_CHECKING:
    from st2common.content.bootstrap import Registration

LOG = logging.getLogger(__name__)

KIND = "configs"
SCHEMA_FILE = "config.schema.yaml"
# Removed in StackStorm 2.4; a pack that still has one is told so.
LEGACY_CONFIG_FILE = "config.yaml"

# StackStorm's ConfigSchemaAPI: every option is an action-parameter definition.
CONFIG_SCHEMA_SCHEMA: dict[str, Any] = {**schemas.PARAMETERS, "definitions": schemas.DEFINITIONS}


def config_file(configs_path: Path | str, pack: str) -> Path:
    """Where a pack's config values live: ``<configs_path>/<pack>.yaml``."""
    return Path(configs_path) / f"{pack}.yaml"


def parse_schema(pack: PackDir) -> dict[str, dict[str, Any]] | None:
    """The pack's config schema (option -> definition), None when it has none; ContentError when invalid."""
    path = pack.path / SCHEMA_FILE
    if not path.is_file():
        return None
    document = load_yaml(path, pack=pack.ref)
    if document.data is None:
        raise ContentError("the config schema is empty; define at least one option or remove the file",
                           pack=pack.ref, path=str(path), line=1)
    if not isinstance(document.data, dict):
        raise ContentError(f"expected a mapping of config options, the file is a {type(document.data).__name__}",
                           pack=pack.ref, path=str(path), line=1)
    schemas.validate(CONFIG_SCHEMA_SCHEMA, document.data, path=str(path), pack=pack.ref,
                     line_of=document.line_of)
    return {name: dict(spec or {}) for name, spec in document.data.items()}


def with_defaults(attributes: Mapping[str, Any], values: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of values with the schema's defaults filled in where an option (or a nested property) is unset."""
    result = copy.deepcopy(dict(values or {}))
    for name, spec in (attributes or {}).items():
        if not isinstance(spec, Mapping):
            continue
        if name not in result and "default" in spec:
            result[name] = copy.deepcopy(spec["default"])
        properties = spec.get("properties")
        if spec.get("type") == "object" and isinstance(properties, Mapping):
            # As StackStorm: an unset object with properties becomes {} so its properties' defaults apply.
            if not result.get(name):
                result[name] = {}
            if isinstance(result[name], dict):
                result[name] = with_defaults(properties, result[name])
    return result


def secret_options(attributes: Mapping[str, Any]) -> frozenset[str]:
    """Top-level options the schema marks secret."""
    return frozenset(name for name, spec in (attributes or {}).items()
                     if isinstance(spec, Mapping) and spec.get("secret") is True)


def _offending(error: jsonschema.ValidationError) -> tuple[list[Any], str]:
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        if missing:
            return path + [missing[0]], f'"{missing[0]}" is a required option and has no value'
    return path, error.message


def validate_values(pack: str, attributes: Mapping[str, Any] | None, values: Any, path: str | None,
                    line_of: Callable[[list[Any]], int | None] | None = None) -> None:
    """Check config values against the pack's schema; ContentError naming pack, option and file.

    Defaults count as given; a value holding a template is resolved at run
    time, so only its presence is checked here.
    """
    if not isinstance(values, dict):
        raise ContentError(f'config for pack "{pack}" must be a mapping of options, got '
                           f"{type(values).__name__}", pack=pack, path=path, line=1)
    if not attributes:
        return
    schema = registry.parameters_schema(dict(attributes))
    schema["additionalProperties"] = True
    templated = {name for name, value in values.items() if contains_template(value)}
    for name in templated & set(schema.get("properties", {})):
        schema["properties"][name] = {}
    error = best_match(jsonschema.Draft4Validator(schema).iter_errors(with_defaults(attributes, values)))
    if error is None:
        return
    where, message = _offending(error)
    key = ".".join(str(part) for part in where) or "?"
    if where and str(where[0]) in secret_options(attributes):
        message = "the value does not fit the schema (the option is secret, so it is not shown)"
    raise ContentError(f'Failed validating attribute "{key}" in config for pack "{pack}": {message}',
                       pack=pack, path=path, line=line_of(where) if line_of and where else None, field=key)


def _read_config(pack: str, path: Path) -> YamlDocument:
    document = load_yaml(path, pack=pack)
    if document.data is None:
        # An empty file is an empty config, not a broken one.
        return YamlDocument(path=path, data={}, lines=document.lines)
    return document


def register_pack_config(run: "Registration", pack: PackDir) -> None:
    """Register one pack's config schema and config values, reporting what does not fit."""
    report = run.report
    schema_access, config_access = run.access(ConfigSchemaDB), run.access(ConfigDB)
    if (pack.path / LEGACY_CONFIG_FILE).is_file():
        message = (f'pack "{pack.ref}" has a {LEGACY_CONFIG_FILE}, which is no longer read; move its values '
                   f"to {config_file(run.settings.content.configs_path, pack.ref)}")
        LOG.warning("%s", message)
        report.warnings.append(message)
    schema_error: ContentError | None = None
    try:
        attributes = parse_schema(pack)
    except ContentError as exc:
        schema_error, attributes = exc, None
        report.fail(KIND, exc)
    if schema_error is None:
        if attributes is None:
            schema_access.delete_by({"pack": pack.ref})
        else:
            run.upsert(ConfigSchemaDB, {"pack": pack.ref}, {"attributes": attributes})

    path = config_file(run.settings.content.configs_path, pack.ref)
    if not path.is_file():
        config_access.delete_by({"pack": pack.ref})
        return
    values: Any = {}
    try:
        document = _read_config(pack.ref, path)
        values = document.data
        if schema_error is not None:
            raise ContentError(f'config for pack "{pack.ref}" cannot be checked: its {SCHEMA_FILE} is invalid '
                               f"({schema_error.reason})", pack=pack.ref, path=str(path))
        validate_values(pack.ref, attributes, values, str(path), document.line_of)
        error = None
    except ContentError as exc:
        error = str(exc)
        if schema_error is None:
            report.fail(KIND, exc)
    values = values if isinstance(values, dict) else {}
    _, changed = run.upsert(ConfigDB, {"pack": pack.ref}, {"values": values, "path": str(path), "error": error})
    if error is None:
        report.count(KIND, changed)
        if changed:
            LOG.info("config of pack %s registered from %s", pack.ref, path)


def register_configs(run: "Registration") -> None:
    """Register config schemas and configs of every pack on the search path (StackStorm's --register-configs)."""
    packs = run.packs().all()
    run.report.start(KIND)
    for pack in packs:
        register_pack_config(run, pack)
