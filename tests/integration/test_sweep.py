"""The worker registry and the execution sweep, on the embedded database and the real buses."""

from __future__ import annotations

import datetime
import socket
import subprocess
import time

import eventlet
import pytest

from st2common import statuses
from st2common.models.db.base import utcnow
from st2common.models.db.execution import ExecutionDB
from st2common.models.db.policy import ConcurrencySlotDB, PolicyDB
from st2common.models.db.worker import WorkerDB
from st2common.persistence import db as database
from st2common.persistence.access import Access
from st2common.services.sweep import periodic, sweep_executions
from st2common.services.workers import WorkerRegistry
from st2common.transport.connection import make_connection
from st2common.transport.consumer import Consumer, Handler, run_in_background
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from st2actionrunner.scheduler import Scheduler


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Poll predicate until it is truthy or the deadline passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        eventlet.sleep(interval)


def ago(seconds: float) -> datetime.datetime:
    return utcnow() - datetime.timedelta(seconds=seconds)


class Recorder(Handler):
    """Keeps the ids that arrive on one work queue."""

    def __init__(self, queue) -> None:
        self.queue = queue
        self.ids: list[str] = []

    def handle(self, body: dict) -> None:
        self.ids.append(body["id"])


class Platform:
    """What a service holds: the db, a publisher, execution and worker access, a registry."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.client = database.connect(settings)
        self.topology = Topology(settings.messaging.prefix)
        self.publisher = Publisher(make_connection(settings.messaging), self.topology)
        self.publisher.declare_work_queues()
        self.executions = Access(ExecutionDB, self.publisher)
        self.workers = Access(WorkerDB)
        self.registry = WorkerRegistry(self.workers, settings, heartbeat_interval=0.05)
        self.queues = {name: Recorder(self.topology.work_queue(name))
                       for name in ("actionrunner.req", "actionrunner.work")}
        self.consumer: Consumer | None = None

    def consume(self) -> None:
        """Start consuming the requested and scheduled work queues."""
        self.consumer = Consumer(make_connection(self.settings.messaging), self.publisher, self.queues.values())
        self.thread = run_in_background(self.consumer)
        assert self.consumer.wait_ready(10)

    def execution(self, status: str, **fields) -> ExecutionDB:
        values = {"status": status, "action_ref": "core.local", "action": {"ref": "core.local"},
                  "runner": {"name": "local-shell-cmd"}, "parameters": {"cmd": "true"},
                  "log": [{"status": status, "timestamp": fields.get("start_timestamp") or utcnow()}]}
        values.update(fields)
        return self.executions.add_or_update(ExecutionDB(**values), publish=False)

    def worker(self, worker_id: str, heartbeat: datetime.datetime, pid: int = 1,
               hostname: str = "elsewhere") -> WorkerDB:
        return self.workers.add_or_update(WorkerDB(worker_id=worker_id, service="actionrunner", hostname=hostname,
                                                   pid=pid, heartbeat=heartbeat), publish=False)

    def sweep(self, stuck_after: float = 0.0):
        return sweep_executions(self.executions, self.publisher, self.settings, self.registry, stuck_after)

    def close(self) -> None:
        self.registry.deregister()
        if self.consumer is not None:
            self.consumer.stop()
            self.thread.wait()
        self.publisher.close()
        self.client.drop_database(self.settings.database.db_name)
        database.disconnect()


@pytest.fixture
def platform(bus_settings):
    platform = Platform(bus_settings)
    yield platform
    platform.close()


@pytest.fixture
def platform_db(settings):
    """The same, on the filesystem bus only, for tests about records rather than delivery."""
    platform = Platform(settings)
    yield platform
    platform.close()


# -- the registry -----------------------------------------------------------------------


def test_registry_heartbeats_until_deregistered(platform_db):
    # Given a service registered by this process
    registry = platform_db.registry
    worker_id = registry.register("actionrunner")
    record = platform_db.workers.get(worker_id=worker_id)
    assert (record.service, record.hostname, record.pid) == ("actionrunner", socket.gethostname(),
                                                              registry.pid)
    assert worker_id.startswith(f"actionrunner@{socket.gethostname()}:{registry.pid}:")
    # Then its heartbeat moves forward on its own
    first = record.heartbeat
    assert wait_for(lambda: platform_db.workers.get(worker_id=worker_id).heartbeat > first)
    assert registry.dead_among({worker_id}) == set()
    # And a clean stop removes it
    registry.deregister()
    assert platform_db.workers.get(worker_id=worker_id) is None
    assert registry.dead_among({worker_id}) == {worker_id}


def test_registry_finds_and_purges_dead_workers(platform_db):
    platform_db.worker("old", ago(120))
    platform_db.worker("fresh", ago(2))
    registry = platform_db.registry
    assert [w.worker_id for w in registry.dead_workers()] == ["old"]
    assert [w.worker_id for w in registry.dead_workers(older_than=1)] == ["old", "fresh"]
    assert registry.purge() == 1
    assert [w.worker_id for w in platform_db.workers.query()] == ["fresh"]


def test_purged_worker_registers_again_on_its_next_heartbeat(platform_db):
    registry = platform_db.registry
    worker_id = registry.register("scheduler")
    platform_db.workers.delete_by({"worker_id": worker_id})
    assert wait_for(lambda: platform_db.workers.get(worker_id=worker_id))
    assert registry.dead_among({worker_id}) == set()


# -- the sweep --------------------------------------------------------------------------


def test_stuck_work_is_republished_and_consumed(platform):
    # Given executions whose messages were lost, and some that need nothing
    requested = [platform.execution(statuses.REQUESTED) for _ in range(2)]
    scheduled = platform.execution(statuses.SCHEDULED)
    delayed_due = platform.execution(statuses.DELAYED, delay=1000, start_timestamp=ago(5))
    delayed_later = platform.execution(statuses.DELAYED, delay=600_000)
    untouched = [platform.execution(statuses.RUNNING), platform.execution(statuses.SUCCEEDED)]
    platform.consume()
    # When a service sweeps at start
    report = platform.sweep()
    # Then each stuck one reaches its work queue again, and is consumed
    req, work = platform.queues["actionrunner.req"], platform.queues["actionrunner.work"]
    expected_req = sorted(str(e.pk) for e in requested + [delayed_due])
    assert wait_for(lambda: sorted(req.ids) == expected_req and work.ids == [str(scheduled.pk)]), (req.ids, work.ids)
    assert sorted(report.republished) == sorted(str(e.pk) for e in requested + [scheduled])
    assert report.requeued == [str(delayed_due.pk)] and report.abandoned == []
    # The due delayed one went back to requested; the rest kept their status
    assert platform.executions.get_by_id(delayed_due.pk).status == statuses.REQUESTED
    assert platform.executions.get_by_id(delayed_later.pk).status == statuses.DELAYED
    assert [platform.executions.get_by_id(e.pk).status for e in untouched] == [statuses.RUNNING,
                                                                               statuses.SUCCEEDED]


def test_periodic_sweep_leaves_fresh_work_alone(platform):
    # Given one request just made and one left behind a minute ago
    fresh = platform.execution(statuses.REQUESTED)
    stale = platform.execution(statuses.REQUESTED, start_timestamp=ago(60))
    platform.consume()
    # When the periodic sweep runs a few rounds
    sweeper = periodic(platform.executions, platform.publisher, platform.settings, platform.registry,
                       interval=0.05, stuck_after=30)
    try:
        assert wait_for(lambda: sweeper.rounds >= 3)
    finally:
        sweeper.stop()
    # Then only the stale one was nudged (once per round), never the fresh one
    ids = platform.queues["actionrunner.req"].ids
    assert wait_for(lambda: len(platform.queues["actionrunner.req"].ids) >= sweeper.rounds)
    assert set(ids) == {str(stale.pk)} and str(fresh.pk) not in ids


def test_running_work_of_dead_workers_is_abandoned(platform_db):
    # Given running executions owned by workers in every state
    registry = platform_db.registry
    live_id = registry.register("actionrunner")
    platform_db.worker("silent", ago(120))
    exited = subprocess.Popen(["true"])
    exited.wait()
    platform_db.worker("exited", utcnow(), pid=exited.pid, hostname=socket.gethostname())
    platform_db.worker("remote-alive", utcnow(), pid=exited.pid, hostname="another-host")

    def owned_by(worker_id, status=statuses.RUNNING):
        return platform_db.execution(status, runner_info={"worker_id": worker_id, "hostname": "h", "pid": 1})

    doomed = {"silent": owned_by("silent"), "unknown": owned_by("never-registered"),
              "exited": owned_by("exited"), "canceling": owned_by("silent", statuses.CANCELING)}
    alive = [owned_by(live_id), owned_by("remote-alive"), platform_db.execution(statuses.RUNNING)]
    # When the sweep runs
    report = platform_db.sweep()
    # Then the dead workers' executions are abandoned, with the reason and a log entry
    assert sorted(report.abandoned) == sorted(str(e.pk) for e in doomed.values())
    for name, execution in doomed.items():
        after = platform_db.executions.get_by_id(execution.pk)
        assert after.status == statuses.ABANDONED, name
        assert "worker" in after.result["error"] and "died" in after.result["error"]
        assert after.runner_info["worker_id"] in after.result["error"]
        assert after.log[-1]["status"] == statuses.ABANDONED and after.end_timestamp is not None
    # And the live ones are left alone
    assert [platform_db.executions.get_by_id(e.pk).status for e in alive] == [statuses.RUNNING] * 3


def test_sweeping_twice_or_at_once_is_harmless(platform_db):
    # Given running executions of a dead worker and a stuck request
    platform_db.worker("silent", ago(120))
    doomed = [platform_db.execution(statuses.RUNNING, runner_info={"worker_id": "silent"}) for _ in range(5)]
    requested = platform_db.execution(statuses.REQUESTED)
    # When two services sweep at the same moment, and then one sweeps again
    start = eventlet.event.Event()

    def sweep():
        start.wait()
        return platform_db.sweep()

    pool = eventlet.GreenPool()
    racing = [pool.spawn(sweep) for _ in range(2)]
    eventlet.sleep(0)
    start.send()
    reports = [r.wait() for r in racing]
    again = platform_db.sweep()
    # Then each execution was abandoned exactly once, and the second pass changed nothing
    abandoned = [pk for report in reports for pk in report.abandoned]
    assert sorted(abandoned) == sorted(str(e.pk) for e in doomed)
    assert again.abandoned == [] and again.requeued == []
    for execution in doomed:
        log = platform_db.executions.get_by_id(execution.pk).log
        assert [e["status"] for e in log] == [statuses.RUNNING, statuses.ABANDONED]
    assert platform_db.executions.get_by_id(requested.pk).status == statuses.REQUESTED
    assert again.republished == [str(requested.pk)]


# -- executions delayed by a concurrency policy ------------------------------------------


def limit_core_local(platform, holder: ExecutionDB) -> None:
    """A concurrency policy of 1 on core.local, its slot held by holder."""
    policy = PolicyDB(name="one_at_a_time", pack="tests", resource_ref="core.local",
                      policy_type="action.concurrency", parameters={"threshold": 1, "action": "delay"})
    policy.set_identity()
    Access(PolicyDB).add_or_update(policy, publish=False)
    Access(ConcurrencySlotDB).add_or_update(ConcurrencySlotDB(key=policy.ref, slot=0, execution_id=str(holder.pk),
                                                              action_ref="core.local"), publish=False)


def delayed_by_policy(platform) -> ExecutionDB:
    """An execution the policy has kept delayed for a minute (no delay of its own)."""
    started = ago(60)
    return platform.execution(statuses.DELAYED, start_timestamp=started,
                              log=[{"status": statuses.REQUESTED, "timestamp": started},
                                   {"status": statuses.DELAYED, "timestamp": started}])


def test_the_sweep_leaves_an_execution_delayed_by_a_policy_to_the_scheduler_while_its_slot_is_held(platform):
    # Given an execution delayed for a minute by a concurrency policy whose slot a running execution holds
    holder = platform.execution(statuses.RUNNING)
    limit_core_local(platform, holder)
    waiting = delayed_by_policy(platform)
    platform.consume()
    # When the periodic sweep runs three rounds
    sweeper = periodic(platform.executions, platform.publisher, platform.settings, platform.registry,
                       interval=0.05, stuck_after=30)
    try:
        assert wait_for(lambda: sweeper.rounds >= 3)
    finally:
        sweeper.stop()
    # Then the delayed execution was neither moved nor nudged: same status, same log, no message
    after = platform.executions.get_by_id(waiting.pk)
    assert after.status == statuses.DELAYED and len(after.log) == 2
    assert platform.queues["actionrunner.req"].ids == []
    report = platform.sweep(stuck_after=30)
    assert report.requeued == [] and report.nudged == [] and report.republished == []


def test_an_execution_delayed_by_a_policy_whose_slot_holder_ended_unnoticed_is_nudged_and_scheduled(platform):
    # Given an execution delayed by a concurrency policy whose slot holder has finished, the
    # end's nudge lost (the slot is still on record), and a scheduler consuming requests
    holder = platform.execution(statuses.SUCCEEDED)
    limit_core_local(platform, holder)
    waiting = delayed_by_policy(platform)
    scheduled = Recorder(platform.topology.work_queue("actionrunner.work"))
    consumer = Consumer(make_connection(platform.settings.messaging), platform.publisher,
                        [Scheduler(platform.publisher), scheduled])
    thread = run_in_background(consumer)
    try:
        assert consumer.wait_ready(10)
        # When the sweep runs
        report = platform.sweep(stuck_after=30)
        # Then it nudged the delayed execution without changing it
        assert report.nudged == [str(waiting.pk)] and report.requeued == []
        # And the scheduler, nudged, freed the stale slot and scheduled it
        assert wait_for(lambda: scheduled.ids == [str(waiting.pk)]), scheduled.ids
        after = platform.executions.get_by_id(waiting.pk)
        assert [entry["status"] for entry in after.log] == [statuses.REQUESTED, statuses.DELAYED,
                                                            statuses.SCHEDULED]
        assert [slot.execution_id for slot in Access(ConcurrencySlotDB).query()] == [str(waiting.pk)]
    finally:
        consumer.stop()
        thread.wait()
