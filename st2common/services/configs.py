"""Pack configs at run time: load a pack's config for a run, and save one written through the API.

What ``load(pack, user, settings)`` gives (StackStorm's ContentPackConfigLoader):

| step                      | from                                                                    |
| ------------------------- | ----------------------------------------------------------------------- |
| values                    | the pack's registered ConfigDB; when none is registered, the file      |
|                           | ``<configs_path>/<pack>.yaml`` itself (checked against the schema)      |
| a config that failed      | ValidationError with the registration's message (pack, option, file):  |
| validation                | every action of the pack fails with it until the config is fixed       |
| defaults                  | the ConfigSchemaDB's ``default`` of every unset option (and nested     |
|                           | property), also when the pack has no config file at all                |
| ``{{ st2kv.system.x }}``, | rendered now, for the run's user, through the datastore; an option the |
| ``{{ st2kv.user.x }}``    | schema marks ``secret`` reads secret items decrypted (as StackStorm    |
|                           | does), others see ciphertext unless the template uses ``decrypt_kv``;  |
|                           | a missing item gives None; the text is cast to the option's type       |

The result knows which options are secret: ``masked()`` for showing it,
``secret_values()`` for scrubbing clear values out of anything recorded.

Every run loads its pack's config, so the stored part (schema, values with
defaults, where they come from) is kept in ``STORED`` (a RecordCache): it is
forgotten on a config or schema write through Access in this process, and read
again after STORED_TTL seconds, which bounds how long a change made by another
process (``st2ctl reload``, the API) goes unseen. A config with an error is
never kept. Runs that find the entry expired at the same moment (a burst)
share one read of it. Datastore references are rendered on every load, for
its user.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml
from eventlet.event import Event

from st2common import parameters
from st2common.content.configs import config_file, secret_options, validate_values, with_defaults
from st2common.content.loader import load_yaml
from st2common.exceptions import ConflictError, ContentError, NotFoundError, ValidationError
from st2common.models.api.base import MASKED as MASK
from st2common.models.api.base import mask_value
from st2common.models.db.keyvalue import FULL_USER_SCOPE
from st2common.models.db.pack import ConfigDB, ConfigSchemaDB, PackDB
from st2common.persistence.access import Access
from st2common.persistence.cache import RecordCache
from st2common.services.keyvalues import Datastore
from st2common.templating import contains_template, render_value, st2kv_context

LOG = logging.getLogger(__name__)

_SAVE_ATTEMPTS = 5
STORED_TTL = 1.0
STORED = RecordCache("configs", (ConfigDB, ConfigSchemaDB), STORED_TTL)
# (pack, configs path) -> the read of it in progress, which callers arriving meanwhile wait for.
_READING: dict[tuple[str, str | None], Event] = {}


@dataclass(frozen=True)
class PackConfig:
    """A pack's resolved config for one run, with its schema so secrets can be told apart."""

    pack: str
    values: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    @property
    def secret_names(self) -> frozenset[str]:
        """Options the schema marks secret."""
        return secret_options(self.attributes)

    def masked(self) -> dict[str, Any]:
        """The values with every secret option (nested ones too) shown as ********."""
        return mask_value(dict(self.values), object_spec(self.attributes))

    def secret_values(self) -> list[str]:
        """The clear text of every secret option's value, for scrubbing it from records and logs."""
        found: list[str] = []
        _collect_secrets(self.values, object_spec(self.attributes), False, found)
        return found


def object_spec(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config schema as one object definition (what mask_value walks)."""
    return {"type": "object", "properties": dict(attributes or {})}


def _collect_secrets(value: Any, spec: Any, secret: bool, found: list[str]) -> None:
    spec = spec if isinstance(spec, Mapping) else {}
    secret = secret or spec.get("secret") is True
    if isinstance(value, dict):
        properties = spec.get("properties") or {}
        extra = spec.get("additionalProperties")
        for key, item in value.items():
            _collect_secrets(item, properties.get(key, extra), secret, found)
    elif isinstance(value, list):
        for item in value:
            _collect_secrets(item, spec.get("items"), secret, found)
    elif secret and value not in (None, ""):
        found.append(str(value))


# -- reading ------------------------------------------------------------------------------------

def get_schema(pack: str) -> dict[str, Any] | None:
    """The registered config schema of pack (option -> definition), or None."""
    doc = Access(ConfigSchemaDB).get(pack=pack)
    return dict(doc.attributes or {}) if doc is not None else None


def _stored_values(pack: str, attributes: Mapping[str, Any] | None, settings) -> tuple[dict[str, Any], str | None]:
    """The pack's unrendered values and where they come from; ValidationError when they do not fit."""
    record = Access(ConfigDB).get(pack=pack)
    if record is not None:
        if record.error:
            raise ValidationError(record.error, field="config")
        return dict(record.values or {}), record.path
    if settings is None:
        return {}, None
    path = config_file(settings.content.configs_path, pack)
    if not path.is_file():
        return {}, None
    # Not registered (yet): the file is read as registration would read it.
    try:
        document = load_yaml(path, pack=pack)
        values = document.data if document.data is not None else {}
        validate_values(pack, attributes, values, str(path), document.line_of)
    except ContentError as exc:
        raise ValidationError(str(exc), field="config") from None
    return dict(values), str(path)


def _read_unresolved(pack: str, settings) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    attributes = get_schema(pack) or {}
    values, path = _stored_values(pack, attributes, settings)
    return attributes, with_defaults(attributes, values), path


def _read_shared(key: tuple[str, str | None], pack: str, settings) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """_read_unresolved, once for the callers that need it at the same moment."""
    reading = _READING.get(key)
    if reading is not None:
        shared = reading.wait()
        # None: that read failed; this caller reads (and fails) on its own.
        return shared if shared is not None else _read_unresolved(pack, settings)
    reading = _READING[key] = Event()
    value = None
    try:
        value = _read_unresolved(pack, settings)
        return value
    finally:
        del _READING[key]
        reading.send(value)


def _unresolved(pack: str, settings) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(schema attributes, values with defaults but templates unrendered, where the values come from)."""
    configs_path = str(settings.content.configs_path) if settings is not None else None
    key = (pack, configs_path)
    attributes, values, path = STORED.get(key, lambda: _read_shared(key, pack, settings))
    # Shared with later loads: each caller gets its own copy.
    return copy.deepcopy(attributes), copy.deepcopy(values), path


def load(pack: str, user: str | None = None, settings=None, datastore=None) -> PackConfig:
    """The pack's config for a run by user: values, schema defaults, datastore references rendered."""
    attributes, values, path = _unresolved(pack, settings)
    if contains_template(values):
        resolver = _Resolver(pack, user, datastore or _datastore(settings))
        values = {name: resolver.resolve(name, value, attributes.get(name)) for name, value in values.items()}
    return PackConfig(pack, values, attributes, path)


def _datastore(settings) -> Datastore:
    return Datastore(settings)


class _Resolver:
    """Renders the templates of one config for one user, option by option."""

    def __init__(self, pack: str, user: str | None, datastore) -> None:
        self.pack = pack
        self.user = user
        self.datastore = datastore
        self._contexts: dict[bool, dict[str, Any]] = {}

    def _context(self, secret: bool) -> dict[str, Any]:
        if secret not in self._contexts:
            store = _DecryptingDatastore(self.datastore) if secret else self.datastore
            self._contexts[secret] = st2kv_context(store, self.user)
        return self._contexts[secret]

    def resolve(self, key: str, value: Any, spec: Any, secret: bool = False) -> Any:
        """value with its templates rendered (and cast to spec's type); key names it in errors."""
        spec = spec if isinstance(spec, Mapping) else {}
        secret = secret or spec.get("secret") is True
        if isinstance(value, dict):
            properties = spec.get("properties") or {}
            extra = spec.get("additionalProperties")
            return {k: self.resolve(f"{key}.{k}", v, properties.get(k, extra), secret) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(f"{key}.{i}", v, spec.get("items"), secret) for i, v in enumerate(value)]
        if not contains_template(value):
            return value
        rendered = None
        try:
            rendered = render_value(value, self._context(secret), native=True)
            if rendered in (None, ""):
                # StackStorm's rule: a reference to nothing (a missing item) is no value.
                return None
            return parameters.cast(key, rendered, spec)
        except ValidationError as exc:
            reason = str(exc)
            if secret and rendered not in (None, ""):
                reason = reason.replace(str(rendered), parameters.MASK)
            raise ValidationError(f'Failed to render dynamic configuration value for key "{key}" with value '
                                  f'"{value}" for pack "{self.pack}" config: {reason}', field=key) from None


class _DecryptingDatastore:
    """The datastore as a secret option reads it: secret items come back in clear."""

    def __init__(self, datastore) -> None:
        self._datastore = datastore
        self._clear: set[str] = set()

    def lookup(self, name: str, scope: str, user: str | None = None) -> str | None:
        owner = (user or self._datastore.system_user) if scope == FULL_USER_SCOPE else ""
        doc = self._datastore.find(name, scope, owner)
        if doc is None:
            return None
        if not doc.secret:
            return doc.value
        clear = self._datastore.decrypt(doc.value, name)
        self._clear.add(clear)
        return clear

    def decrypt(self, value: str, name: str = "") -> str:
        # ``| decrypt_kv`` on what lookup already decrypted is a no-op, not an error.
        return value if value in self._clear else self._datastore.decrypt(value, name)


class LazyConfig(Mapping):
    """``config_context`` for a render whose caller loaded no config: read when a template first touches it,
    and each option rendered only when read (a secret option nobody reads is never decrypted)."""

    def __init__(self, pack: str | None, user: str | None = None, settings=None) -> None:
        self.pack = pack
        self.user = user
        self.settings = settings
        self._attributes: dict[str, Any] = {}
        self._values: dict[str, Any] | None = None
        self._resolved: dict[str, Any] = {}
        self._resolver: _Resolver | None = None

    def _loaded(self) -> dict[str, Any]:
        if self._values is None:
            if self.pack:
                self._attributes, self._values, _ = _unresolved(self.pack, self.settings)
            else:
                self._values = {}
        return self._values

    def __getitem__(self, key: str) -> Any:
        value = self._loaded()[key]
        if key not in self._resolved:
            if contains_template(value):
                if self._resolver is None:
                    self._resolver = _Resolver(self.pack, self.user, _datastore(self.settings))
                value = self._resolver.resolve(key, value, self._attributes.get(key))
            self._resolved[key] = value
        return self._resolved[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def __repr__(self) -> str:
        return f"<config of pack {self.pack}>"


# -- writing ------------------------------------------------------------------------------------

def save(settings, pack: str, values: Any, publisher=None) -> ConfigDB:
    """Validate values against the pack's schema, write ``<configs_path>/<pack>.yaml`` and store them."""
    if Access(PackDB).get(ref=pack) is None:
        raise NotFoundError("pack", pack, f'Unable to identify resource with pack_ref "{pack}".')
    path = config_file(settings.content.configs_path, pack)
    attributes = get_schema(pack) or {}
    access = Access(ConfigDB, publisher)
    stored = access.get(pack=pack)
    if isinstance(values, dict) and stored is not None:
        # A client that sends back what GET showed sends ******** for secrets: keep the stored ones.
        values = restore_masked(values, dict(stored.values or {}), object_spec(attributes))
    try:
        validate_values(pack, attributes, values, str(path))
    except ContentError as exc:
        raise ValidationError(exc.reason, field=exc.field) from None
    _write_file(path, values)
    for _ in range(_SAVE_ATTEMPTS):
        record = access.get(pack=pack)
        if record is None:
            record = ConfigDB(pack=pack)
        record.values, record.path, record.error = dict(values), str(path), None
        try:
            saved = access.add_or_update(record)
        except ConflictError:
            continue  # created by someone else between our read and write: update theirs
        LOG.info("config of pack %s saved to %s", pack, path)
        return saved
    raise ConflictError(f"config of pack {pack} is being changed by others; try again")


def restore_masked(values: Any, stored: Any, spec: Any) -> Any:
    """values with every masked secret (``********``) replaced by the stored value it stands for."""
    spec = spec if isinstance(spec, Mapping) else {}
    if spec.get("secret") is True:
        return stored if values == MASK and stored is not None else values
    if isinstance(values, dict) and isinstance(stored, dict):
        properties = spec.get("properties") or {}
        extra = spec.get("additionalProperties")
        return {k: restore_masked(v, stored.get(k), properties.get(k, extra)) for k, v in values.items()}
    return values


def _write_file(path: Path, values: dict[str, Any]) -> None:
    """Replace the file in one rename, readable by its owner only (it may hold secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yaml.safe_dump(values, handle, default_flow_style=False, sort_keys=False)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
