"""Status changes' filters and updates built directly are the ones mongoengine's transform builds."""

from __future__ import annotations

import contextlib
import datetime

import mongoengine as me
import pytest
from bson import ObjectId
from mongoengine.base.fields import ComplexBaseField
from mongoengine.queryset import transform

from st2common.models.db.base import WholeDictField, WholeListField
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.models.db.workflow import WorkflowExecutionDB
from st2common.persistence.access import equality_filter, set_update

STAMP = datetime.datetime(2026, 11, 22, 6, 0, 0, 123000, tzinfo=datetime.timezone.utc)
OID = ObjectId()


@contextlib.contextmanager
def mongoengine_own():
    """mongoengine's own conversions of whole list and dict fields, for the reference."""
    saved = {cls: (cls.to_mongo, cls.prepare_query_value) for cls in (WholeDictField, WholeListField)}
    WholeDictField.to_mongo, WholeDictField.prepare_query_value = me.DictField.to_mongo, me.DictField.prepare_query_value
    WholeListField.to_mongo, WholeListField.prepare_query_value = me.ListField.to_mongo, me.ListField.prepare_query_value
    try:
        yield
    finally:
        for cls, (to_mongo, prepare) in saved.items():
            cls.to_mongo, cls.prepare_query_value = to_mongo, prepare


def transformed(model, changes: dict) -> dict:
    """The update Access built before: mongoengine's transform of set__/unset__/inc__ keys, its own conversions."""
    update = {f"set__{name}": value for name, value in changes.items() if value is not None}
    update.update({f"unset__{name}": True for name, value in changes.items() if value is None})
    if "revision" in model._fields:
        update["inc__revision"] = 1
    with mongoengine_own():
        return transform.update(model, **update)


CHANGES = [
    (ExecutionDB, {"status": "running", "runner_info": {"hostname": "h", "pid": 7, "worker_id": "w"},
                   "log": [{"status": "requested", "timestamp": STAMP}, {"status": "running", "timestamp": STAMP}]}),
    (ExecutionDB, {"status": "succeeded", "end_timestamp": STAMP, "result": {"a.b": {"$c": [1, None]}},
                   "result_size": 12, "children": ["x", "y"], "context": {"k.1": OID}}),
    (ExecutionDB, {"delay": None, "result": None, "parameters": {"cmd": "true"}}),
    (ExecutionDB, {}),
    (TriggerInstanceDB, {"status": "processed", "payload": {"body": [1, 2]}}),
    (WorkflowExecutionDB, {"status": "running", "state": {"sequence": [{"id": "t1", "meta": {}}]},
                           "updated_at": STAMP, "errors": None, "pending": [{"task_id": "t2", "item_id": None}]}),
    # names transform.update parses itself
    (ExecutionDB, {"context__user": "stanley", "status": "running"}),
]


@pytest.mark.parametrize("model,changes", CHANGES)
def test_an_update_is_the_one_mongoengine_builds(model, changes):
    assert set_update(model, changes) == transformed(model, changes)


@pytest.mark.parametrize("changes", [{"status": 5}, {"revision": 2, "start_timestamp": "yesterday"}])
def test_a_value_a_field_refuses_is_refused_alike(changes):
    for build in (set_update, transformed):
        with pytest.raises((me.ValidationError, ValueError)):
            build(ExecutionDB, changes)


@pytest.mark.parametrize("values", [
    {"id": OID, "status": "requested", "revision": 1},
    {"id": str(OID)},  # an id as text becomes an ObjectId
    {"status": "running", "revision": "3"},  # an IntField casts
    {"status__in": ["a", "b"], "parent": "p"},  # an operator: transform.query's own
])
def test_a_filter_is_the_one_mongoengine_builds(values):
    assert equality_filter(ExecutionDB, values) == transform.query(ExecutionDB, **values)


def outcome(call, *args):
    """What call returns, or the text of the error it raises."""
    try:
        return call(*args)
    except me.ValidationError as exc:
        return str(exc)


def test_a_filter_of_many_ids_is_the_one_mongoengine_builds():
    oids = [ObjectId(), ObjectId()]
    assert {"_id": {"$in": oids}, **equality_filter(TriggerInstanceDB, {"status": "pending"})} == \
        transform.query(TriggerInstanceDB, id__in=oids, status="pending")


class Plain(me.Document):
    items = WholeListField(me.DictField())
    names = WholeListField(me.StringField())
    anything = WholeListField()
    info = WholeDictField()


class Embedded(me.EmbeddedDocument):
    n = me.IntField()


@pytest.mark.parametrize("name,value", [
    ("items", [{"status": "x", "at": STAMP, "ids": [OID, {"deep": [1.5, True, None]}]}]),
    ("names", ["a", "b"]),
    ("anything", [1, "a", {"b": [STAMP]}]),
    ("info", {"hostname": "h", "pid": 3, "nested": {"list": [{"a": 1}]}}),
    ("anything", [(1, 2)]),  # a tuple: mongoengine makes it a list
    ("anything", [Embedded(n=1)]),  # a document: mongoengine's own conversion
    ("info", {"e": Embedded(n=2)}),
    ("names", [OID]),  # not a string
])
def test_a_whole_field_stores_what_mongoengine_stores(name, value):
    field = Plain._fields[name]
    lean, lean_set = field.to_mongo(value), outcome(field.prepare_query_value, "set", value)
    with mongoengine_own():
        assert lean == field.to_mongo(value) == ComplexBaseField.to_mongo(field, value)
        assert lean_set == outcome(field.prepare_query_value, "set", value)
    # A copy: what is stored never shares a list or dict with the document's value
    if isinstance(value, list) and value and isinstance(value[0], dict):
        assert lean[0] is not value[0]
