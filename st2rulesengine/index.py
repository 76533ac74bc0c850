"""The rule index: the enabled rules of this process, by trigger type, never queried per instance.

Loaded whole at start and by every sweep (a safety net for a lost event),
and kept current between loads by the rule create/update/delete events
(``refresh`` of one rule). Within one trigger type, rules whose first
criterion is a plain ``equals`` are found by the value at its path instead
of being evaluated one by one (TypeRules).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Mapping

from st2common import templating
from st2common.exceptions import StackStormBaseException
from st2common.models.db.rule import RuleDB
from st2common.persistence.access import Access, to_object_id
from st2rulesengine import matcher

LOG = logging.getLogger(__name__)

Entry = tuple[matcher.Rule, RuleDB]


class TypeRules:
    """The enabled rules of one trigger type, in order, with the equality index that narrows them.

    A rule whose first criterion is ``equals`` with a plain (not templated,
    hashable) pattern cannot match an instance whose value at that path is
    different, and the matcher, which checks criteria in order, would stop
    at that first criterion without an error; so such rules are looked up
    by (path, pattern) instead of being evaluated one by one. The others are
    always candidates. Candidates keep the rules' order.
    """

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self._scan: list[tuple[int, Entry]] = []
        self._keyed: dict[tuple, dict[Any, list[tuple[int, Entry]]]] = {}
        for position, entry in enumerate(entries):
            first = entry[0].criteria[0] if entry[0].criteria else None
            if first is not None and first.operator == "equals" and _indexable(first.pattern):
                self._keyed.setdefault(first.path, {}).setdefault(first.pattern, []).append((position, entry))
            else:
                self._scan.append((position, entry))

    def candidates(self, scope: Mapping[str, Any]) -> list[Entry]:
        """The rules that may match an instance with this scope (``trigger`` = its payload)."""
        if not self._keyed:
            return self.entries
        found = list(self._scan)
        for path, by_pattern in self._keyed.items():
            value = matcher.lookup(path, scope)
            try:
                found.extend(by_pattern.get(value, ()))
            except TypeError:
                # An unhashable value (dict, list) equals no plain pattern.
                continue
        found.sort(key=lambda item: item[0])
        return [entry for _, entry in found]


def _indexable(pattern: Any) -> bool:
    if pattern is None or isinstance(pattern, (bytes, dict, list)) or templating.is_template(pattern):
        return False
    if isinstance(pattern, float) and math.isnan(pattern):
        return False
    try:
        hash(pattern)
    except TypeError:
        return False
    return True


class RuleIndex:
    """The enabled rules of this process, by trigger type, each with its stored document."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_type: dict[str, dict[str, Entry]] = {}
        self._type_of: dict[str, str] = {}
        self._compiled: dict[str, TypeRules] = {}
        # Rules refreshed while a load's query runs: its snapshot may predate their change.
        self._changed_during_load: set[str] | None = None
        self.version = 0

    def load(self) -> int:
        """Replace the index with every enabled rule in the database; how many there are."""
        with self._lock:
            self._changed_during_load = set()
        by_type: dict[str, dict[str, Entry]] = {}
        type_of: dict[str, str] = {}
        for doc in Access(RuleDB).query({"enabled": True}):
            entry = _parse(doc)
            if entry is not None:
                by_type.setdefault(entry[0].trigger_type, {})[str(doc.pk)] = entry
                type_of[str(doc.pk)] = entry[0].trigger_type
        with self._lock:
            self._by_type, self._type_of, self._compiled = by_type, type_of, {}
            changed, self._changed_during_load = self._changed_during_load or set(), None
            self.version += 1
        for rule_id in changed:
            self.refresh(rule_id)
        return len(self._type_of)

    def refresh(self, rule_id: str) -> None:
        """Take a rule's stored state (gone, disabled, changed) into the index."""
        oid = to_object_id(rule_id)
        doc = Access(RuleDB).get(id=oid) if oid is not None else None
        entry = _parse(doc) if doc is not None and doc.enabled else None
        with self._lock:
            if self._changed_during_load is not None:
                self._changed_during_load.add(rule_id)
            old_type = self._type_of.pop(rule_id, None)
            if old_type is not None:
                self._by_type.get(old_type, {}).pop(rule_id, None)
                self._compiled.pop(old_type, None)
            if entry is not None:
                self._by_type.setdefault(entry[0].trigger_type, {})[rule_id] = entry
                self._type_of[rule_id] = entry[0].trigger_type
                self._compiled.pop(entry[0].trigger_type, None)
            self.version += 1
        LOG.debug("rule index: rule %s %s", rule_id, "enabled" if entry else "dropped")

    def rules_for(self, trigger_type: str) -> TypeRules:
        """The enabled rules on a trigger type."""
        compiled = self._compiled.get(trigger_type)
        if compiled is None:
            with self._lock:
                compiled = TypeRules(list(self._by_type.get(trigger_type, {}).values()))
                self._compiled[trigger_type] = compiled
        return compiled

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._type_of

    def __len__(self) -> int:
        return len(self._type_of)


def _parse(doc: RuleDB) -> tuple[matcher.Rule, RuleDB] | None:
    try:
        return matcher.Rule.from_db(doc), doc
    except StackStormBaseException as exc:
        # Registration and the API refuse such rules; one written around them must not stop the others.
        LOG.error("rule %s is left out of matching: %s", doc.ref, exc)
        return None
