"""Datastore secrets that workflow expressions decrypt: kept out of what the engine stores.

``st2kv('system.db_pw', decrypt=true)`` in a workflow hands the clear value to
the expression, and from there it can reach a child's parameters, the context
(publish), the output and error messages. The engine process records every
clear value it decrypted, with the item it came from (``record``), and then:

| where the value goes                         | what is stored instead                          |
| -------------------------------------------- | ----------------------------------------------- |
| a child execution's parameters               | a ``decrypt_kv`` template naming the same item  |
| (rendering.action: ``seal``)                 | (the action runner decrypts it at run time, and |
|                                              | masks it in what the run records)               |
| the conductor's stored state: contexts       | the same template, so a conductor read back     |
| (published variables), items                 | after a restart still hands the child the item  |
| (workflow_records.state_fields: ``stored``)  | to decrypt, never the clear value               |
| output, errors, the rendered input, a task   | ``********``                                    |
| execution's context (``mask``)               |                                                 |
| the engine's log lines                       | ``********`` (masking's log filter)             |

The conductor held in memory keeps the clear value: later expressions in the
same process compute with it as with any value. A conductor read back from its
record sees the template instead (``ctx('pw')`` is then the template text): a
child given it still receives the clear value, but an expression that computes
with it (``ctx('pw').len()``) computes with the template. A value an expression
derived from a secret (upper-cased, hashed, sliced) is no longer the recorded
value and is not recognised.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections import OrderedDict
from typing import Any, Iterable

from st2common import masking

_KEPT = 10000
_SEALERS_KEPT = 100
# The engine's log filter entry in masking's registry of runs (not an execution id).
_LOG_KEY = "__workflow_expressions__"


class Ledger:
    """The clear values this process decrypted for expressions, each with its item (scope, name, user)."""

    def __init__(self, kept: int = _KEPT) -> None:
        # (clear value, owner: None for a system item) -> (scope, name): two users' items may hold the same value.
        self._items: OrderedDict[tuple[str, str | None], tuple[str, str]] = OrderedDict()
        self._kept = kept
        self._lock = threading.Lock()
        self._scrubber = masking.Scrubber()
        self._sealers: dict[str | None, _Sealer | None] = {}

    def record(self, clear: Any, scope: str, name: str, user: str | None) -> None:
        """Remember that clear is the value of one decrypted item."""
        if not isinstance(clear, str) or not clear:
            return
        key, item = (clear, user if scope == "user" else None), (scope, name)
        with self._lock:
            if self._items.get(key) == item:
                self._items.move_to_end(key)
                return
            self._items[key] = item
            while len(self._items) > self._kept:
                self._items.popitem(last=False)
            self._scrubber = masking.Scrubber(clear for clear, _owner in self._items)
            self._sealers = {}
            masking.keep(_LOG_KEY, self._scrubber)

    def scrubber(self) -> masking.Scrubber:
        """A Scrubber of every recorded clear value."""
        return self._scrubber

    def sealer(self, user: str | None) -> "_Sealer | None":
        """The sealer of the items a run of user may name (system ones and user's own); None when none."""
        with self._lock:
            if user not in self._sealers:
                found = {clear: item for (clear, owner), item in self._items.items() if owner in (None, user)}
                self._sealers[user] = _Sealer(found) if found else None
                while len(self._sealers) > _SEALERS_KEPT:
                    self._sealers.pop(next(iter(self._sealers)))
            return self._sealers[user]

    def clear(self) -> None:
        """Forget every recorded value."""
        with self._lock:
            self._items.clear()
            self._sealers = {}
            self._scrubber = masking.Scrubber()
            masking.keep(_LOG_KEY, None)


LEDGER = Ledger()


def record(clear: Any, scope: str, name: str, user: str | None) -> None:
    """Remember a clear value st2kv decrypted (see Ledger.record)."""
    LEDGER.record(clear, scope, name, user)


def mask(value: Any) -> Any:
    """value with every recorded clear value replaced by ********."""
    return LEDGER.scrubber().value(value)


def _reference(scope: str, name: str) -> str:
    return "{{ st2kv.%s[%s] | decrypt_kv }}" % (scope, json.dumps(name))


def _literal(text: str) -> str:
    if not text:
        return ""
    if "endraw" in text:
        # Text that would close a raw block early is given as a string expression instead.
        return "{{ %s }}" % json.dumps(text)
    return "{% raw %}" + text + "{% endraw %}"


# What an earlier seal wrote (kept in the context the conductor stored): passed on as it is, so a
# value read back after a restart and joined to a newly decrypted one still renders to clear text.
_SEALED = r'\{\{ st2kv\.(?:system|user)\["(?:[^"\\]|\\.)*"\] \| decrypt_kv \}\}|\{% raw %\}.*?\{% endraw %\}'


def _seal_text(text: str, found: dict[str, tuple[str, str]], pattern: re.Pattern | None) -> str:
    if text in found:
        return _reference(*found[text])
    if pattern is None or not any(True for m in pattern.finditer(text) if m.group(0) in found):
        return text
    parts, last = [], 0
    for match in pattern.finditer(text):
        parts.append(_literal(text[last:match.start()]))
        token = match.group(0)
        parts.append(_reference(*found[token]) if token in found else token)
        last = match.end()
    parts.append(_literal(text[last:]))
    return "".join(parts)


class _Sealer:
    """The patterns that seal the values of the items one user may name (built once per ledger change)."""

    def __init__(self, found: dict[str, tuple[str, str]]) -> None:
        self.found = found
        # Longest first, so a value is sealed whole rather than around a shorter one inside it.
        needles = sorted((clear for clear in found if len(clear) >= masking.MIN_LENGTH), key=len, reverse=True)
        escaped = "|".join(re.escape(n) for n in needles)
        self.clear = re.compile(escaped) if needles else None
        self.passing = re.compile(f"{_SEALED}|{escaped}", re.DOTALL) if needles else None

    def seal(self, value: Any) -> Any:
        sealed = _walk(value, self.found, self.passing)
        if self.clear is not None and any(self.clear.search(text) for text in _texts(sealed)):
            # A clear value inside what looked like sealed text (a raw block an expression built):
            # seal everything again, that text included.
            sealed = _walk(value, self.found, self.clear)
        return sealed


def seal(value: Any, user: str | None) -> Any:
    """value with each string holding a recorded clear value turned into a template decrypting its item.

    A string equal to a clear value becomes ``{{ st2kv.system["db_pw"] | decrypt_kv }}``; one
    holding it among other text keeps that text verbatim inside ``{% raw %}`` blocks. Only
    items a run of user can read are named (system items, and user's own).
    """
    sealer = LEDGER.sealer(user)
    return sealer.seal(value) if sealer is not None else value


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _texts(item)


def _walk(value: Any, found: dict[str, tuple[str, str]], pattern: re.Pattern | None) -> Any:
    if isinstance(value, str):
        return _seal_text(value, found, pattern)
    if isinstance(value, dict):
        return {key: _walk(item, found, pattern) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(item, found, pattern) for item in value]
    return value


def stored(fields: dict[str, Any], user: str | None, sealed: Iterable[str] = ("state",)) -> dict[str, Any]:
    """A workflow execution's fields as written: sealed fields (the conductor's state) hold templates,
    the others (output, errors, input) ********."""
    if not LEDGER.scrubber():
        return fields
    # Sealed values are masked too: a value no item of user's holds cannot be named, only hidden.
    return {name: mask(seal(value, user) if name in sealed else value) for name, value in fields.items()}


def recorded_task(task: Any) -> Any:
    """A NextTask as its task execution records it: its context masked (the conductor keeps task)."""
    if not LEDGER.scrubber() or not getattr(task, "context", None):
        return task
    return dataclasses.replace(task, context=mask(task.context))
