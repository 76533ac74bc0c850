"""Records read on the hot path that rarely change (actions, runner types, policies, pack configs), kept in
the memory of the process that reads them.

| an entry is forgotten                       | how                                                    |
| ------------------------------------------- | ------------------------------------------------------ |
| at once, on a write through Access in this  | access.on_write: every entry of the cache goes         |
| process                                     |                                                        |
| when the bus says a record changed          | in a process that consumes the model's exchange (a     |
|                                             | ``Forget`` handler on a broadcast queue); once it      |
|                                             | consumes, it calls ``watch`` and entries live for      |
|                                             | ``watched_ttl``                                        |
| otherwise, after its time-to-live           | bounds how long a write by another process that        |
|                                             | publishes nothing (or one this process does not watch) |
|                                             | goes unseen                                            |

A read that raced with a write is not kept: ``get`` stores what it loaded
only when nothing was forgotten meanwhile. Green threads that miss the same
key while it is being read wait for that read instead of sending their own
(an entry expiring under load made every request in flight read it). Entries are per database, so one
process that moves between databases (the tests do) never sees another's
records. Values are shared between callers: treat them as read-only.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, TypeVar

from eventlet import patcher
from eventlet.event import Event
from mongoengine.connection import ConnectionFailure, get_db

from st2common.exceptions import DatabaseError

from st2common.persistence.access import on_write
from st2common.transport.consumer import Handler

V = TypeVar("V")

# Past this many entries a cache starts again empty (it holds content records and recent traces).
MAX_ENTRIES = 4096


def _database() -> tuple[int, str] | None:
    """The database this process is connected to now (entries are kept per database)."""
    try:
        db = get_db()
    except ConnectionFailure:
        return None
    return id(db.client), db.name


class RecordCache:
    """Values derived from records of some models, by key, per database."""

    def __init__(self, name: str, models: Iterable[type], ttl: float, watched_ttl: float | None = None) -> None:
        self.name = name
        self.ttl = ttl
        self.watched_ttl = watched_ttl if watched_ttl is not None else ttl
        self.watched = False
        self._entries: dict[tuple, tuple[float, Any]] = {}
        # Reads in flight by key, for green threads missing the same key meanwhile.
        self._loading: dict[tuple, Event] = {}
        self._generation = 0
        for model in models:
            on_write(model, self.forget)

    def get(self, key: Any, load: Callable[[], V]) -> V:
        """The value for key, from memory while it is fresh, else from load() (which may raise)."""
        scoped = (_database(), key)
        now = time.monotonic()
        entry = self._entries.get(scoped)
        if entry is not None and entry[0] > now:
            return entry[1]
        if not patcher.is_monkey_patched("thread"):
            # Real threads cannot wait on a green event: each reads for itself.
            return self._load(key, scoped, load)
        reading = self._loading.get(scoped)
        if reading is not None:
            return reading.wait()
        reading = self._loading[scoped] = Event()
        try:
            value = self._load(key, scoped, load)
        except BaseException as exc:
            # Waiters fail alike; a kill of this green thread must not leave them waiting.
            reading.send_exception(exc if isinstance(exc, Exception)
                                   else DatabaseError(f"{self.name}: the read of {key!r} was interrupted"))
            raise
        finally:
            del self._loading[scoped]
        reading.send(value)
        return value

    def _load(self, key: Any, scoped: tuple, load: Callable[[], V]) -> V:
        generation = self._generation
        value = load()
        if generation == self._generation:
            self.put(key, value, scoped)
        return value

    def put(self, key: Any, value: Any, scoped: tuple | None = None) -> None:
        """Remember value for key (a record this process just wrote, say)."""
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        ttl = self.watched_ttl if self.watched else self.ttl
        self._entries[scoped or (_database(), key)] = (time.monotonic() + ttl, value)

    def peek(self, key: Any) -> Any:
        """The fresh value for key, or None."""
        entry = self._entries.get((_database(), key))
        return entry[1] if entry is not None and entry[0] > time.monotonic() else None

    def forget(self, *_: Any) -> None:
        """Drop every entry (a record of one of the models changed)."""
        self._generation += 1
        self._entries.clear()

    def watch(self) -> None:
        """This process now hears of every change on the bus: keep entries for watched_ttl."""
        self.watched = True
        self.forget()


class Forget(Handler):
    """The handler of a broadcast queue on a resource exchange: every event there makes caches forget."""

    def __init__(self, queue, *caches: RecordCache) -> None:
        self.queue = queue
        self.caches = caches

    def handle(self, body: dict[str, Any]) -> None:
        """Any create, update or delete: drop what the caches hold."""
        for cache in self.caches:
            cache.forget()
