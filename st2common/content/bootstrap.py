"""Content registration: the entry point behind ``st2ctl reload`` (StackStorm's st2-register-content).

``register(settings, kinds)`` runs one registrar per content kind, in
StackStorm's ``--register-all`` order. Every record is upserted by its ref and
written only when something changed, so running it twice changes nothing and
publishes nothing the second time. A file that fails validation is reported
(path, field, line) and skipped; the rest still registers. The database must
already be connected (mongoengine default alias).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import mongoengine as me

from st2common.content.loader import YamlDocument, load_mapping, search_paths
from st2common.content.packs import PackCatalog
from st2common.exceptions import ConflictError, ContentError, ValidationError
from st2common.persistence.access import Access

LOG = logging.getLogger(__name__)

# kind -> "module:function", in StackStorm's --register-all order
# (triggers, sensors, runners, actions, rules, aliases, policies, configs).
REGISTRARS: dict[str, str] = {
    "triggers": "st2common.content.triggers:register_triggers",
    "sensors": "st2common.content.sensors:register_sensors",
    "runners": "st2common.content.runners:register_runners",
    "actions": "st2common.content.actions:register_actions",
    "rules": "st2common.content.rules:register_rules",
    "policies": "st2common.content.policies:register_policies",
    "configs": "st2common.content.configs:register_configs",
}

ALL_KINDS: tuple[str, ...] = tuple(REGISTRARS)

# `st2ctl reload` with no flags registers everything but policies.
DEFAULT_KINDS: tuple[str, ...] = tuple(kind for kind in ALL_KINDS if kind != "policies")

# Kinds that need others registered first, whether asked for or not.
REQUIRES: dict[str, tuple[str, ...]] = {
    "actions": ("runners",),
    "sensors": ("triggers",),
    # Listed in full: resolve_kinds expands one level only.
    "rules": ("triggers", "runners", "actions"),
    "policies": ("runners", "actions"),
}

PACKS = "packs"


@dataclass
class RegistrationReport:
    """What one registration run did: counts per kind, and every file it had to skip."""

    registered: dict[str, int] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    errors: list[ContentError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def start(self, kind: str) -> None:
        """Make kind appear in the report even when nothing of it exists."""
        for counts in (self.registered, self.changed, self.failed):
            counts.setdefault(kind, 0)

    def count(self, kind: str, changed: bool) -> None:
        """One record of kind registered; changed when it was written."""
        self.start(kind)
        self.registered[kind] += 1
        if changed:
            self.changed[kind] += 1

    def fail(self, kind: str, error: ContentError) -> None:
        """One file of kind skipped because of error."""
        self.start(kind)
        self.failed[kind] += 1
        error.kind = kind
        self.errors.append(error)
        LOG.error("cannot register %s: %s", kind, error)

    @property
    def ok(self) -> bool:
        """True when nothing was skipped."""
        return not self.errors

    def summary(self) -> str:
        """One line per kind, e.g. ``Registered 14 actions (2 changed, 1 failed).``"""
        lines = []
        for kind, total in self.registered.items():
            line = f"Registered {total} {kind} ({self.changed.get(kind, 0)} changed"
            failed = self.failed.get(kind, 0)
            lines.append(line + (f", {failed} failed)." if failed else ")."))
        return "\n".join(lines)


class Registration:
    """One registration run: settings, the publisher, the report and the packs found."""

    def __init__(self, settings, publisher=None, report: RegistrationReport | None = None) -> None:
        self.settings = settings
        self.publisher = publisher
        self.report = report or RegistrationReport()
        self._access: dict[type, Access] = {}
        self._catalog: PackCatalog | None = None

    def register_file(self, kind: str, pack, path, register: Callable[[YamlDocument], tuple[bool, str]]) -> None:
        """Load one metadata file of pack and register it with register (-> (changed, ref));
        a file that fails is reported and the run goes on."""
        try:
            changed, ref = register(load_mapping(path, pack=pack.ref))
        except ContentError as exc:
            self.report.fail(kind, exc)
            return
        except me.ValidationError as exc:
            self.report.fail(kind, ContentError(f"cannot be stored: {exc}", pack=pack.ref, path=str(path)))
            return
        self.report.count(kind, changed)
        if changed:
            LOG.info("%s %s registered from %s", kind, ref, path)

    def access(self, model: type[me.Document]) -> Access:
        """The access object for model, publishing through this run's publisher."""
        if model not in self._access:
            self._access[model] = Access(model, self.publisher)
        return self._access[model]

    def packs(self) -> PackCatalog:
        """The packs on the search path, each registered once per run on first use."""
        if self._catalog is None:
            self._catalog = PackCatalog(self, search_paths(self.settings))
        return self._catalog

    def upsert(self, model: type[me.Document], key: Mapping[str, Any], fields: Mapping[str, Any]) -> tuple[Any, bool]:
        """Create or update the record matching key with fields; (record, whether it was written)."""
        access = self.access(model)
        doc = access.get(**key)
        if doc is None:
            doc = model(**key, **fields)
            doc.set_identity()
            try:
                return access.add_or_update(doc), True
            except ConflictError:
                # Another copy of the registrar created it between our read and write.
                doc = access.get(**key)
                if doc is None:
                    raise
        changes = {name: value for name, value in fields.items() if _stored(doc, name) != value}
        if not changes:
            return doc, False
        for name, value in changes.items():
            setattr(doc, name, value)
        doc.set_identity()
        LOG.debug("%s %s changed: %s", access.resource_type, dict(key), sorted(changes))
        return access.add_or_update(doc), True


def _stored(doc: me.Document, name: str) -> Any:
    value = getattr(doc, name, None)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


def _registrar(kind: str) -> Callable[[Registration], None]:
    module_name, _, function_name = REGISTRARS[kind].partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def resolve_kinds(kinds: Iterable[str] | None) -> list[str]:
    """The kinds to run, with their prerequisites, in registration order."""
    wanted = set(DEFAULT_KINDS if kinds is None else kinds)
    unknown = sorted(wanted - set(REGISTRARS))
    if unknown:
        raise ValidationError(
            f'unknown content kind(s) {", ".join(unknown)}; valid kinds are: {", ".join(ALL_KINDS)}',
            field="kinds")
    for kind in list(wanted):
        wanted.update(REQUIRES.get(kind, ()))
    return [kind for kind in ALL_KINDS if kind in wanted]


def register(settings, kinds: Iterable[str] | None = None, publisher=None) -> RegistrationReport:
    """Register content of the given kinds (None: `st2ctl reload`'s default set) from every pack path."""
    run = Registration(settings, publisher)
    for kind in resolve_kinds(kinds):
        _registrar(kind)(run)
        run.report.start(kind)
    for line in run.report.summary().splitlines():
        LOG.info("%s", line)
    return run.report
