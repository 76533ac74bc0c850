"""What the action runner skips on its hot path still behaves as if it read every record.

A request whose message names its action, delay and time is claimed without
a read, on the revision it was stored with; the record a run ends with goes
to the notifier of the same process without a read. Each test holds a
request's message back (a real publisher that keeps it), changes the record
the way another writer would, then lets the message go, and checks what a
user sees. Runs on both buses with the action runner consuming in this
process (test_lifecycle's fixture).
"""

from __future__ import annotations

import pytest

from st2common import statuses
from st2common.exceptions import ConflictError
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.persistence.access import Access
from st2common.services import executions, triggertypes
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from test_hot_path import action_triggers, wait_until
from test_lifecycle import start_platform  # noqa: F401 (fixture)


class HoldingPublisher(Publisher):
    """A publisher on the test's bus that keeps requested messages back until the test releases them."""

    def __init__(self, settings) -> None:
        super().__init__(make_connection(settings.messaging), Topology(settings.messaging.prefix))
        self.held: list[dict] = []

    def publish(self, exchange, routing_key, body, headers=None) -> None:
        if exchange == executions.WORK_EXCHANGE and routing_key == statuses.REQUESTED:
            self.held.append(dict(body))
            return
        super().publish(exchange, routing_key, body, headers)


@pytest.fixture
def platform(start_platform):
    platform = start_platform()
    triggertypes.register_system_trigger_types(platform.publisher)
    platform.holding = HoldingPublisher(platform.settings)
    yield platform
    platform.holding.close()


def held_request(platform, ref: str = "core.noop", parameters: dict | None = None) -> tuple[ExecutionDB, dict]:
    """An execution stored as requested, and the message the scheduler has not been given yet."""
    execution = executions.request(platform.holding, ref, parameters or {})
    [message] = platform.holding.held
    platform.holding.held.clear()
    return execution, message


def release(platform, message: dict) -> None:
    platform.publisher.publish(executions.WORK_EXCHANGE, statuses.REQUESTED, message)


def log_statuses(execution: ExecutionDB) -> list[str]:
    return [entry["status"] for entry in execution.log]


def test_a_request_claimed_unread_keeps_the_log_its_request_stored(platform):
    # Given a request whose message says all the scheduler needs (action, no delay, when it was stored)
    execution, message = held_request(platform)
    assert {"action_ref", "delay", "start_timestamp"} <= set(message)
    # When the scheduler gets it
    release(platform, message)
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    # Then it ran once, and its log starts with the entry the request stored, at the time it was stored
    assert done.status == statuses.SUCCEEDED
    assert log_statuses(done) == ["requested", "scheduled", "running", "succeeded"]
    assert done.log[0]["timestamp"] == done.start_timestamp
    assert done.runner_info["worker_id"] == platform.service.worker_id


def test_a_request_canceled_before_its_message_arrives_never_runs(platform):
    # Given a request canceled while its message was on the way
    execution, message = held_request(platform)
    executions.cancel(platform.publisher, str(execution.pk))
    # When the scheduler gets the message, and a marker request after it
    release(platform, message)
    marker = platform.run("core.noop")
    assert marker.status == statuses.SUCCEEDED
    # Then the canceled one never ran: canceled, as the cancel left it, with no runner
    record = Access(ExecutionDB).get_by_id(execution.pk)
    assert record.status == statuses.CANCELED
    assert log_statuses(record) == ["requested", "canceled"]
    assert not record.runner_info


def test_a_request_written_since_it_was_stored_is_read_and_runs_with_what_was_written(platform):
    # Given a request that another writer changed (still requested) while its message was on the way
    execution, message = held_request(platform, "core.local", {"cmd": "echo hi"})
    context = {**dict(execution.context), "note": "written meanwhile"}
    assert Access(ExecutionDB).update_if(execution.pk, {"status": statuses.REQUESTED}, {"context": context})
    # When the scheduler gets the message
    release(platform, message)
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    # Then it ran once, its log has each step once, and the other writer's change is kept
    assert done.status == statuses.SUCCEEDED and done.result["stdout"] == "hi"
    assert log_statuses(done) == ["requested", "scheduled", "running", "succeeded"]
    assert done.context["note"] == "written meanwhile"


def test_a_request_message_delivered_twice_runs_once_with_one_action_trigger(platform):
    # Given a request whose message arrives twice (a redelivery)
    execution, message = held_request(platform)
    # When both copies reach the scheduler
    release(platform, message)
    release(platform, message)
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    marker = platform.run("core.noop")
    wait_until(lambda: str(marker.pk) in action_triggers(), "the marker's action trigger")
    # Then it ran once, and the notifier dispatched its action trigger once
    record = Access(ExecutionDB).get_by_id(done.pk)
    assert log_statuses(record) == ["requested", "scheduled", "running", "succeeded"]
    assert len(action_triggers()[str(execution.pk)]) == 1


def test_a_request_message_without_its_details_is_read_and_runs(platform):
    # Given a request re-published with its id alone (as the sweep and freed concurrency slots do)
    execution, _ = held_request(platform)
    # When the scheduler gets it
    release(platform, {"id": str(execution.pk)})
    done = platform.wait_for(execution.pk, statuses.COMPLETED)
    # Then it runs as any other
    assert done.status == statuses.SUCCEEDED
    assert log_statuses(done) == ["requested", "scheduled", "running", "succeeded"]


def test_a_completed_run_handed_to_the_notifier_dispatches_what_a_read_one_does(platform):
    # Given a run of core.local that fails (its end goes straight to this process's notifier)
    failed = platform.run("core.local", {"cmd": "echo out; exit 3"})
    assert failed.status == statuses.FAILED
    # Then its action trigger carries the stored record's status, parameters and result
    [instance] = wait_until(lambda: action_triggers().get(str(failed.pk)), "its action trigger")
    payload = instance.payload
    assert payload["status"] == statuses.FAILED and payload["action_ref"] == "core.local"
    assert payload["parameters"] == {"cmd": "echo out; exit 3"}
    assert payload["result"]["return_code"] == 3 and payload["result"]["stdout"] == "out"
    # When its completion is delivered again (nothing handed over this time: it is read)
    platform.publisher.publish("execution", "update", {"id": str(failed.pk), "status": statuses.FAILED})
    marker = platform.run("core.noop")
    wait_until(lambda: str(marker.pk) in action_triggers(), "the marker's action trigger")
    # Then nothing is added
    assert len(action_triggers()[str(failed.pk)]) == 1


def test_action_triggers_stored_together_with_a_repeat_among_them_is_a_conflict(platform):
    # Given an action trigger instance already stored
    stored = TriggerInstanceDB(trigger=triggertypes.ACTION_TRIGGER_REF, payload={"n": 1}, status="pending")
    Access(TriggerInstanceDB).insert_many([stored], reload=False)
    # When a batch holding it again and a new one is inserted (the notifier's batch of completions)
    again = TriggerInstanceDB(id=stored.pk, trigger=triggertypes.ACTION_TRIGGER_REF, payload={"n": 1},
                              status="pending")
    new = TriggerInstanceDB(trigger=triggertypes.ACTION_TRIGGER_REF, payload={"n": 2}, status="pending")
    # Then it is a ConflictError (the notifier then goes one by one), not a database failure
    with pytest.raises(ConflictError):
        Access(TriggerInstanceDB).insert_many([again, new], reload=False)
