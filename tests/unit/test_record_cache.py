"""RecordCache: what it keeps, what makes it forget, and a read that raced with a change."""

from __future__ import annotations

import mongoengine as me

from st2common.persistence.access import _written, on_write
from st2common.persistence.cache import Forget, RecordCache


class Thing(me.Document):
    """A model nobody stores: only its write listeners matter here."""

    name = me.StringField()


class Loads:
    """A loader that counts its calls and returns what it is told to."""

    def __init__(self, value) -> None:
        self.value = value
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.value


def test_a_fresh_value_is_loaded_once_and_a_forget_loads_it_again():
    cache = RecordCache("things", (), ttl=60.0)
    load = Loads("v1")
    assert cache.get("k", load) == "v1" and cache.get("k", load) == "v1"
    assert load.calls == 1
    cache.forget()
    load.value = "v2"
    assert cache.get("k", load) == "v2" and load.calls == 2


def test_an_expired_value_is_loaded_again():
    cache = RecordCache("things", (), ttl=0.0)
    load = Loads("v")
    cache.get("k", load)
    cache.get("k", load)
    assert load.calls == 2


def test_a_write_of_a_watched_model_in_this_process_forgets():
    cache = RecordCache("things", (Thing,), ttl=60.0)
    load = Loads("old")
    cache.get("k", load)
    # What Access does after each write of a Thing
    _written(Thing)
    load.value = "new"
    assert cache.get("k", load) == "new"


def test_a_load_that_raced_with_a_change_is_not_kept():
    cache = RecordCache("things", (), ttl=60.0)
    seen = []

    def racing_load():
        # The record changes while it is being read: what was read may be stale
        cache.forget()
        seen.append("read")
        return "maybe stale"

    assert cache.get("k", racing_load) == "maybe stale"
    assert cache.get("k", Loads("fresh")) == "fresh"
    assert cache.peek("k") == "fresh" and seen == ["read"]


def test_a_failed_load_keeps_nothing():
    cache = RecordCache("things", (), ttl=60.0)

    def missing():
        raise LookupError("no such record")

    for _ in range(2):
        try:
            cache.get("k", missing)
        except LookupError:
            pass
    assert cache.peek("k") is None


def test_an_event_handler_forgets_every_cache_it_serves():
    first, second = RecordCache("a", (), ttl=60.0), RecordCache("b", (), ttl=60.0)
    first.put("k", 1)
    second.put("k", 2)
    Forget(None, first, second).handle({"id": "x"})
    assert first.peek("k") is None and second.peek("k") is None


def test_a_listener_is_registered_once():
    calls = []
    listener = calls.append
    on_write(Thing, listener)
    on_write(Thing, listener)
    _written(Thing)
    assert calls == [Thing]


def test_green_threads_missing_the_same_key_at_once_share_one_read():
    import eventlet

    cache = RecordCache("things", (), ttl=60.0)
    calls = []

    def slow_load():
        calls.append(1)
        eventlet.sleep(0.05)  # the database's round trip: others miss meanwhile
        return "v1"

    # When ten green threads miss the key while the first read is in flight
    threads = [eventlet.spawn(cache.get, "k", slow_load) for _ in range(10)]
    # Then all get its value, and the database was read once
    assert [thread.wait() for thread in threads] == ["v1"] * 10
    assert len(calls) == 1


def test_a_shared_read_that_fails_fails_every_waiter_and_is_not_kept():
    import eventlet

    cache = RecordCache("things", (), ttl=60.0)

    def failing_load():
        eventlet.sleep(0.05)
        raise LookupError("the database is away")

    threads = [eventlet.spawn(cache.get, "k", failing_load) for _ in range(3)]
    for thread in threads:
        try:
            thread.wait()
        except LookupError as exc:
            assert "away" in str(exc)
        else:
            raise AssertionError("a waiter got a value from a failed read")
    # And the next miss reads again
    assert cache.get("k", Loads("v2")) == "v2"
