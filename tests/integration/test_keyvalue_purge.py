"""Expired datastore items: deleted without a key_value_pair.delete trigger (as in StackStorm, where
MongoDB's TTL index deletes them), and st2api's periodic purge as the fallback deleter.

Expiry is set in the past directly on the stored items, so the tests need not
wait for a TTL to run out.
"""

from __future__ import annotations

import datetime
import time

import pytest

from st2common.models.db.base import utcnow
from st2common.models.db.keyvalue import FULL_SYSTEM_SCOPE, KeyValuePairDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.persistence.access import Access
from st2common.services import keyvalues, triggertypes
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology


@pytest.fixture
def store(settings, db):
    """The datastore publishing its triggers, the key_value_pair trigger types registered."""
    publisher = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
    publisher.declare_work_queues()
    triggertypes.register_system_trigger_types(publisher)
    yield keyvalues.Datastore(settings, publisher)
    publisher.close()


def expire(name: str) -> None:
    """Move an item's expiry into the past, as if its TTL had run out."""
    doc = Access(KeyValuePairDB).get(scope=FULL_SYSTEM_SCOPE, user="", name=name)
    Access(KeyValuePairDB).update_if(doc.pk, {"value": doc.value},
                                     {"expire_timestamp": utcnow() - datetime.timedelta(seconds=1)})


def deleted_names() -> list[str]:
    ref = triggertypes.KEY_VALUE_PAIR_DELETE_TRIGGER_REF
    return [i.payload["object"]["name"] for i in Access(TriggerInstanceDB).query({"trigger": ref})]


def names() -> list[str]:
    return sorted(doc.name for doc in Access(KeyValuePairDB).query())


def test_expired_items_are_deleted_without_a_delete_trigger_as_in_stackstorm(store):
    # Given two items past their expiry, one expiring later, one without a TTL, and one deleted by hand
    for name in ("gone.a", "gone.b"):
        store.set(name, "x", ttl=60)
        expire(name)
    store.set("later", "y", ttl=3600)
    store.set("kept", "z")
    store.set("removed", "w")
    store.delete("removed")
    # When the purge has run (on the embedded server the TTL index deletes at the next read already)
    store.purge_expired()
    # Then only the expired items are gone from the database
    assert names() == ["kept", "later"]
    # And only the item deleted by hand announced its deletion
    assert deleted_names() == ["removed"]


def test_the_periodic_purge_is_off_at_an_interval_of_zero_and_runs_otherwise(store):
    # Given an expired item
    store.set("tick", "v", ttl=60)
    expire("tick")
    # When the purge is configured off, Then it does not run
    off = keyvalues.PeriodicPurge(store, interval=0).start()
    assert not off.running
    off.stop()
    # When it runs every 50 ms, Then the item is gone (waiting with a deadline) until it is stopped
    purge = keyvalues.PeriodicPurge(store, interval=0.05).start()
    assert purge.running
    try:
        deadline = time.monotonic() + 5
        while names() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert names() == []
    finally:
        purge.stop()
    assert not purge.running
