"""The execution state machine as a table."""

import pytest

from st2common import statuses
from st2common.exceptions import TransitionError


@pytest.mark.parametrize("old,new", [
    ("requested", "scheduled"),
    ("requested", "delayed"),
    ("delayed", "scheduled"),
    ("scheduled", "running"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "timeout"),
    ("running", "canceling"),
    ("canceling", "canceled"),
    ("running", "abandoned"),
    ("requested", "canceled"),
])
def test_allowed_transitions(old, new):
    # Given the table, When a service moves an execution along the normal path, Then it is allowed
    statuses.check_transition("execution", "x", old, new)


@pytest.mark.parametrize("old,new", [
    ("succeeded", "running"),
    ("failed", "succeeded"),
    ("canceled", "running"),
    ("requested", "succeeded"),
    ("scheduled", "succeeded"),
    ("abandoned", "running"),
])
def test_refused_transitions_name_the_record(old, new):
    with pytest.raises(TransitionError) as info:
        statuses.check_transition("execution", "abc", old, new)
    assert info.value.old == old and info.value.new == new and "abc" in str(info.value)


def test_completed_statuses_are_terminal():
    for status in statuses.COMPLETED:
        assert statuses.EXECUTION_TRANSITIONS[status] == frozenset()


def test_every_status_has_a_row():
    assert set(statuses.EXECUTION_TRANSITIONS) == set(statuses.EXECUTION_STATUSES)
    for targets in statuses.EXECUTION_TRANSITIONS.values():
        assert targets <= set(statuses.EXECUTION_STATUSES)


def test_trigger_instance_can_be_reprocessed():
    assert statuses.is_transition_valid("trigger_instance", "processed", "processing")
    assert statuses.is_transition_valid("trigger_instance", "pending", "processed")  # no rule matched
    assert not statuses.is_transition_valid("trigger_instance", "processed", "pending")
