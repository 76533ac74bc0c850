"""Documents loaded without mongoengine's constructor are the documents its own path loads."""

from __future__ import annotations

import datetime

import mongoengine as me
import pytest
from bson import ObjectId

from st2common.models.db.base import LeanLoad, _load_plan
from st2common.models.db.execution import ExecutionDB
from testsupport import freed_at_once

STAMP = datetime.datetime(2026, 11, 21, 22, 0, 0, 123000)


def stored_execution(**extra) -> dict:
    son = {
        "_id": ObjectId(), "status": "running", "action_ref": "core.local",
        "action": {"ref": "core.local", "parameters": {"cmd": {"type": "string"}}},
        "runner": {"name": "local-shell-cmd"},
        "parameters": {"cmd": "echo hi", "key\uff0ewith\uff0edots": 1},  # stored escaped
        "context": {"user": "stanley", "parent": {"execution_id": "x"}},
        "children": ["a", "b"], "log": [{"status": "requested", "timestamp": STAMP}],
        "result": {"stdout": "hi", "nested": [{"a\uff04b": 2}]},
        "start_timestamp": STAMP, "parent": None, "revision": 3,
    }
    son.update(extra)
    return son


def mongoengine_load(cls, son):
    return me.Document._from_son.__func__(cls, son)


@pytest.mark.parametrize("extra", [{}, {"delay": None, "end_timestamp": STAMP, "result": None},
                                   {"revision": None, "notify": {"on-complete": {"routes": ["x"]}}}])
def test_an_execution_loads_as_mongoengine_loads_it(extra):
    son = stored_execution(**extra)
    lean, slow = ExecutionDB._from_son(dict(son)), mongoengine_load(ExecutionDB, dict(son))
    assert lean._data == slow._data
    assert lean.parameters == {"cmd": "echo hi", "key.with.dots": 1}
    assert lean.revision == slow.revision  # None stored: the field's default, as the setter gives
    assert (lean._created, lean._changed_fields) == (slow._created, slow._changed_fields) == (False, [])
    assert lean.get_status_display() == "running"


def test_a_loaded_execution_tracks_its_changes():
    execution = ExecutionDB._from_son(stored_execution())
    execution.status = "succeeded"
    execution.context["user"] = "someone"
    assert set(execution._changed_fields) == {"status", "context"}


def test_a_field_it_does_not_declare_takes_mongoengine_path_and_its_error():
    with pytest.raises(me.errors.FieldDoesNotExist):
        ExecutionDB._from_son(stored_execution(no_such_field=1))


def test_documents_with_fields_mongoengine_must_resolve_load_its_way():
    class Inner(me.EmbeddedDocument):
        name = me.StringField()

    class Holder(LeanLoad, me.Document):
        inner = me.EmbeddedDocumentField(Inner)
        meta = {"collection": "lean_load_holder"}

    assert _load_plan(Holder) is False
    holder = Holder._from_son({"_id": ObjectId(), "inner": {"name": "x"}})
    assert isinstance(holder.inner, Inner) and holder.inner.name == "x"


def test_a_loaded_execution_is_freed_without_the_collector():
    assert freed_at_once(lambda: ExecutionDB._from_son(stored_execution()))
