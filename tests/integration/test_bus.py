"""The message bus contract, written once and run on both transports.

Every test in TestBus runs on the embedded filesystem bus and on RabbitMQ (the
``bus_settings`` fixture). Where the two differ by design (what a killed
consumer held), the test says so. The filesystem-only tests at the end cover
what only the embedded bus has: a folder per queue, bindings that outlive
processes and are cached, wake-ups per queue, polling without inotify.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import eventlet
import eventlet.event
import kombu
import pytest

from st2common.transport.connection import filesystem_folders, make_connection
from st2common.transport.consumer import Consumer, Handler, run_in_background
from st2common.transport.filesystem import WORK_FOLDER, ready_files
from st2common.transport.filesystem import Channel as FilesystemChannel
from st2common.transport.folderwatch import FolderWatch
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology

REPO_ROOT = Path(__file__).resolve().parents[2]
ACTIONRUNNER_QUEUES = {
    "requested": "actionrunner.req",
    "scheduled": "actionrunner.work",
    "canceling": "actionrunner.cancel",
    "pausing": "actionrunner.pause",
    "resuming": "actionrunner.resume",
}

# A consumer in its own process, killed by the tests: "work" takes a scheduled execution and
# never finishes it; "broadcast" listens on its own broadcast queue and names it in the marker.
OTHER_PROCESS = """
import eventlet
eventlet.monkey_patch()
import sys
from st2common import config
from st2common.transport.connection import make_connection
from st2common.transport.consumer import Consumer, Handler
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology

mode, marker = sys.argv[1:3]
settings = config.load()
topology = Topology(settings.messaging.prefix)


class Stuck(Handler):
    queue = topology.work_queue("actionrunner.work")

    def handle(self, body):
        with open(marker, "w") as handle:
            handle.write(body["id"])
        eventlet.sleep(3600)


handler = Stuck() if mode == "work" else Handler()
if mode == "broadcast":
    handler.queue = topology.broadcast_queue("execution")
publisher = Publisher(make_connection(settings.messaging), topology)
consumer = Consumer(make_connection(settings.messaging), publisher, [handler])
thread = eventlet.spawn(consumer.run)
if mode == "broadcast":
    consumer.wait_ready(10)
    with open(marker, "w") as handle:
        handle.write(handler.queue.name)
thread.wait()
"""


def start_other_process(settings, mode: str, marker: Path) -> subprocess.Popen:
    """Run OTHER_PROCESS on the test's bus."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), ST2_MESSAGING__URL=settings.messaging.url,
               ST2_MESSAGING__PREFIX=settings.messaging.prefix,
               ST2_MESSAGING__FILESYSTEM_PATH=str(settings.messaging.filesystem_path))
    return subprocess.Popen([sys.executable, "-W", "ignore", "-c", OTHER_PROCESS, mode, str(marker)],
                            env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()


def wait_until(predicate, what: str, timeout: float = 10.0) -> None:
    """Poll predicate until it holds; fail naming what did not happen."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        eventlet.sleep(0.005)


class Recorder(Handler):
    """Records every call; work(body) runs first and may raise or block."""

    def __init__(self, queue: kombu.Queue, work=None) -> None:
        self.queue = queue
        self.work = work
        self.attempts: list[dict] = []
        self.bodies: list[dict] = []
        self.given_up: list[tuple[dict, BaseException]] = []

    def handle(self, body):
        self.attempts.append(body)
        if self.work is not None:
            self.work(body)
        self.bodies.append(body)

    def give_up(self, body, error):
        self.given_up.append((body, error))

    def ids(self) -> list[str]:
        return [body["id"] for body in self.bodies]


class Bus:
    """One test's bus: topology under its own prefix, a publisher, consumers stopped at the end."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.topology = Topology(settings.messaging.prefix)
        self.publisher = Publisher(make_connection(settings.messaging), self.topology)
        self.publisher.declare_work_queues()
        self.filesystem = settings.messaging.url.startswith("filesystem")
        self._running: list[tuple[Consumer, eventlet.greenthread.GreenThread]] = []

    def consume(self, *handlers: Handler, folder_watch: bool = True, **options) -> Consumer:
        """Start a consumer in a green thread and wait until it listens."""
        connection = make_connection(self.settings.messaging)
        if not folder_watch:
            connection.transport_options["folder_watch"] = False
        consumer = Consumer(connection, self.publisher, handlers, **options)
        self._running.append((consumer, run_in_background(consumer)))
        assert consumer.wait_ready(10)
        return consumer

    def stop(self, consumer: Consumer) -> None:
        """Stop consumer and wait until it has cleaned up."""
        for running, thread in list(self._running):
            if running is consumer:
                consumer.stop()
                thread.wait()
                self._running.remove((running, thread))

    def ready(self, queue_name: str) -> int:
        """How many messages wait in a queue (not counting unacked ones)."""
        with make_connection(self.settings.messaging) as conn:
            return conn.channel().queue_declare(queue=queue_name, passive=True).message_count

    def exists(self, queue_name: str) -> bool:
        """Whether the broker still has the queue (or, on the filesystem, some exchange binds it)."""
        with make_connection(self.settings.messaging) as conn:
            try:
                conn.channel().queue_declare(queue=queue_name, passive=True)
            except conn.channel_errors as exc:
                # An exclusive queue of another connection answers RESOURCE_LOCKED: it exists.
                return "NOT_FOUND" not in str(exc)
            return True

    def close(self) -> None:
        for consumer, _thread in list(self._running):
            self.stop(consumer)
        if not self.filesystem:
            # Leave nothing behind on the shared broker (the filesystem bus is in tmp_path).
            with make_connection(self.settings.messaging) as conn:
                self.topology.delete(conn.channel())
        self.publisher.close()


@pytest.fixture
def bus(bus_settings):
    """A Bus on each transport in turn."""
    bus = Bus(bus_settings)
    yield bus
    bus.close()


class TestBus:
    """The bus contract; every test runs on filesystem:// and on amqp://."""

    def test_json_message_with_id_reaches_its_handler(self, bus):
        # Given a consumer on the scheduler's queue
        handler = Recorder(bus.topology.work_queue("actionrunner.req"))
        bus.consume(handler)
        # When an execution request is published
        bus.publisher.publish("liveaction.status", "requested", {"id": "5f1d0c", "action": "core.local"})
        # Then the handler gets the JSON document as published
        wait_until(lambda: handler.bodies, "the message")
        assert handler.bodies == [{"id": "5f1d0c", "action": "core.local"}]

    def test_status_routing_key_reaches_only_its_work_queue(self, bus):
        # Given a consumer on each of the action runner's work queues
        handlers = {status: Recorder(bus.topology.work_queue(name)) for status, name in ACTIONRUNNER_QUEUES.items()}
        bus.consume(*handlers.values())
        # When statuses nobody works on are published, then one id per worked-on status
        for status in ("running", "succeeded", "delayed"):
            bus.publisher.publish("liveaction.status", status, {"id": f"stray-{status}"})
        for status in handlers:
            bus.publisher.publish("liveaction.status", status, {"id": f"id-{status}"})
        # Then each queue got exactly its own status, and nothing else
        wait_until(lambda: all(h.bodies for h in handlers.values()), "one message per queue")
        assert {status: h.ids() for status, h in handlers.items()} == {
            status: [f"id-{status}"] for status in handlers}
        assert all(bus.ready(bus.topology.work_queue(name).name) == 0 for name in ACTIONRUNNER_QUEUES.values())

    def test_competing_consumers_handle_each_message_once(self, bus):
        # Given two copies of a service on one work queue, each taking one message at a time
        queue = bus.topology.work_queue("actionrunner.work")
        first = Recorder(queue, work=lambda body: eventlet.sleep(0.01))
        second = Recorder(queue, work=lambda body: eventlet.sleep(0.01))
        consumers = [bus.consume(first, pool_size=1), bus.consume(second, pool_size=1)]
        # When 20 executions are scheduled
        sent = [f"ex{i}" for i in range(20)]
        for execution_id in sent:
            bus.publisher.publish("liveaction.status", "scheduled", {"id": execution_id})
        # Then every one is handled exactly once (stopping waits for any handler still running),
        # and both copies did work
        wait_until(lambda: len(first.bodies) + len(second.bodies) >= len(sent), "all 20 messages")
        for consumer in consumers:
            bus.stop(consumer)
        assert sorted(first.ids() + second.ids()) == sorted(sent)
        assert first.bodies and second.bodies

    def test_broadcast_reaches_every_consumer_and_stop_unbinds(self, bus):
        # Given two processes' worth of broadcast consumers on the execution exchange
        first = Recorder(bus.topology.broadcast_queue("execution"))
        second = Recorder(bus.topology.broadcast_queue("execution", routing_key="update"))
        consumers = [bus.consume(first), bus.consume(second)]
        assert bus.exists(first.queue.name) and bus.exists(second.queue.name)
        # When three execution updates are published
        for i in range(3):
            bus.publisher.publish("execution", "update", {"id": f"ex{i}"})
        # Then each consumer sees all three
        wait_until(lambda: len(first.bodies) == 3 and len(second.bodies) == 3, "3 messages on each")
        assert sorted(first.ids()) == sorted(second.ids()) == ["ex0", "ex1", "ex2"]
        # And once stopped, their queues are gone: nothing collects messages for dead consumers
        for consumer in consumers:
            bus.stop(consumer)
        assert not bus.exists(first.queue.name)
        assert not bus.exists(second.queue.name)

    def test_message_of_a_consumer_killed_mid_handler(self, bus, tmp_path):
        # Given a consumer process whose handler has taken a message and not finished
        marker = tmp_path / "taken"
        process = start_other_process(bus.settings, "work", marker)
        try:
            bus.publisher.publish("liveaction.status", "scheduled", {"id": "ex-killed"})
            wait_until(lambda: marker.exists() or process.poll() is not None, "the handler to start", 30)
            assert marker.read_text() == "ex-killed", process.stderr.read().decode()
        finally:
            # When the process dies before its handler returned (so before any ack)
            kill(process)
        queue = bus.topology.work_queue("actionrunner.work")
        if bus.filesystem:
            # Then the embedded bus has lost it: it lived only in the dead consumer's memory
            # (the services' start-up sweeps re-publish records stuck in their status).
            assert bus.ready(queue.name) == 0
            return
        # Then RabbitMQ, never having had an ack, hands it to the next consumer
        wait_until(lambda: bus.ready(queue.name) == 1, "RabbitMQ to requeue the message")
        handler = Recorder(queue)
        bus.consume(handler)
        wait_until(lambda: handler.bodies, "the redelivered message")
        assert handler.ids() == ["ex-killed"]

    def test_failing_handler_is_retried_then_given_up_once(self, bus):
        # Given a handler that always fails on one record and fails once on another
        failures: dict[str, int] = {}

        def work(body):
            if body["id"] == "bad" or (body["id"] == "flaky" and not failures.get("flaky")):
                failures[body["id"]] = failures.get(body["id"], 0) + 1
                raise RuntimeError(f"boom {failures[body['id']]}")

        handler = Recorder(bus.topology.work_queue("actionrunner.req"), work=work)
        bus.consume(handler, max_redeliveries=2, redelivery_delay=0.01)
        # When both are published
        bus.publisher.publish("liveaction.status", "requested", {"id": "bad"})
        bus.publisher.publish("liveaction.status", "requested", {"id": "flaky"})
        # Then the flaky one succeeds on its second delivery
        wait_until(lambda: handler.bodies, "the flaky message to succeed")
        assert handler.ids() == ["flaky"]
        # And the bad one is delivered 1 + max_redeliveries times, then given up on once, with its error
        wait_until(lambda: handler.given_up, "give_up")
        bus.publisher.publish("liveaction.status", "requested", {"id": "after"})
        wait_until(lambda: "after" in handler.ids(), "a later message")
        assert [body["id"] for body in handler.attempts].count("bad") == 3
        assert len(handler.given_up) == 1
        body, error = handler.given_up[0]
        assert body == {"id": "bad"}
        assert isinstance(error, RuntimeError) and str(error) == "boom 3"
        assert bus.ready(handler.queue.name) == 0

    def test_publisher_reconnects_after_its_connection_is_lost(self, bus):
        handler = Recorder(bus.topology.work_queue("actionrunner.req"))
        bus.consume(handler)
        bus.publisher.publish("liveaction.status", "requested", {"id": "before"})
        # When the publisher's connection is closed under it
        bus.publisher.connection.close()
        bus.publisher.publish("liveaction.status", "requested", {"id": "after-close"})
        expected = ["before", "after-close"]
        if not bus.filesystem:
            # And when its socket breaks
            bus.publisher.connection.connection.sock.shutdown(socket.SHUT_RDWR)
            bus.publisher.publish("liveaction.status", "requested", {"id": "after-break"})
            expected.append("after-break")
        # Then every message still arrives
        wait_until(lambda: len(handler.bodies) == len(expected), f"{len(expected)} messages")
        assert sorted(handler.ids()) == sorted(expected)

    def test_consumer_reconnects_after_its_connection_breaks(self, bus):
        if bus.filesystem:
            pytest.skip("the filesystem bus has no connection to break")
        handler = Recorder(bus.topology.work_queue("actionrunner.req"))
        consumer = bus.consume(handler)
        bus.publisher.publish("liveaction.status", "requested", {"id": "before"})
        wait_until(lambda: handler.bodies, "the first message")
        # When the consumer's socket breaks
        consumer.connection.connection.sock.shutdown(socket.SHUT_RDWR)
        # Then it reconnects and later messages still arrive
        bus.publisher.publish("liveaction.status", "requested", {"id": "after"})
        wait_until(lambda: len(handler.bodies) == 2, "the message after the break")
        assert handler.ids() == ["before", "after"]

    def test_messages_published_before_any_consumer_wait_for_it(self, bus):
        # Given no consumer yet (the publisher declared the work queues up front)
        bus.publisher.publish("liveaction.status", "requested", {"id": "ex1"})
        bus.publisher.publish("liveaction.status", "scheduled", {"id": "ex2"})
        bus.publisher.publish("trigger_instances_dispatch", "core.st2.webhook", {"id": "ti1"})
        bus.publisher.publish("execution", "update", {"id": "ex3"})
        bus.publisher.publish("execution", "update.workflow", {"id": "ex4"})
        # When the services start
        names = ["actionrunner.req", "actionrunner.work", "trigger_instances_dispatch.rules_engine",
                 "notifiers.execution.work", "workflow.action.update"]
        handlers = {name: Recorder(bus.topology.work_queue(name)) for name in names}
        bus.consume(*handlers.values())
        # Then each finds its message waiting
        wait_until(lambda: all(h.bodies for h in handlers.values())
                   and len(handlers["notifiers.execution.work"].bodies) == 2, "every queue's messages")
        assert {name: sorted(h.ids()) for name, h in handlers.items()} == {
            "actionrunner.req": ["ex1"], "actionrunner.work": ["ex2"],
            "trigger_instances_dispatch.rules_engine": ["ti1"],
            # The notifier follows every execution, the workflow engine only workflows and their children
            "notifiers.execution.work": ["ex3", "ex4"], "workflow.action.update": ["ex4"]}

    def test_bodies_that_are_not_json_objects_are_dropped_without_stopping_the_consumer(self, bus):
        handler = Recorder(bus.topology.work_queue("actionrunner.req"))
        bus.consume(handler)
        exchange = bus.topology.exchange("liveaction.status")
        # When garbage arrives: plain text, broken JSON, a pickle, a JSON list and a JSON string
        with make_connection(bus.settings.messaging) as conn:
            producer = kombu.Producer(conn.channel())
            publish = lambda body, **kw: producer.publish(  # noqa: E731
                body, exchange=exchange, routing_key="requested", declare=[exchange], **kw)
            publish("plain text", content_type="text/plain", content_encoding="utf-8")
            publish('{"id": "x"', content_type="application/json", content_encoding="utf-8")
            publish({"id": "pickled"}, serializer="pickle")
            publish(["id", "list"], serializer="json")
            publish("just a string", serializer="json")
        bus.publisher.publish("liveaction.status", "requested", {"id": "good"})
        # Then the handler only ever sees the JSON object, and the garbage is not left queued
        wait_until(lambda: handler.bodies, "the good message")
        wait_until(lambda: bus.ready(handler.queue.name) == 0, "the queue to be empty")
        # And the consumer keeps going
        bus.publisher.publish("liveaction.status", "requested", {"id": "still-alive"})
        wait_until(lambda: len(handler.bodies) == 2, "the next message")
        assert handler.ids() == ["good", "still-alive"]
        assert handler.given_up == []


# -- the embedded bus only ----------------------------------------------------------------------


@pytest.fixture
def fs_bus(settings):
    """A Bus on the filesystem transport."""
    bus = Bus(settings)
    yield bus
    bus.close()


def data_folder(bus: Bus) -> Path:
    """The bus's data folder (one subfolder per queue)."""
    return Path(filesystem_folders(Path(bus.settings.messaging.filesystem_path))["data_folder_in"])


def data_files(bus: Bus, queue_name: str) -> list[str]:
    """The message files waiting in queue_name's folder, oldest first."""
    return ready_files(str(data_folder(bus)), queue_name)


def message_name() -> str:
    """A ready message's file name, as a publisher makes it."""
    return f"{time.monotonic_ns():019d}_{uuid.uuid4()}.msg"


def test_filesystem_sweep_unbinds_broadcast_queues_of_dead_processes(fs_bus, tmp_path):
    # Given a living broadcast consumer, and a process that consumed a broadcast queue and was
    # killed, so never unbound it
    living = Recorder(fs_bus.topology.broadcast_queue("execution"))
    fs_bus.consume(living)
    marker = tmp_path / "queue"
    process = start_other_process(fs_bus.settings, "broadcast", marker)
    try:
        wait_until(lambda: marker.exists() or process.poll() is not None, "the other consumer", 30)
        assert marker.exists(), process.stderr.read().decode()
    finally:
        kill(process)
    orphan = marker.read_text()
    # Then messages pile up for the dead one
    fs_bus.publisher.publish("execution", "update", {"id": "ex1"})
    wait_until(lambda: living.bodies, "the living consumer's copy")
    assert fs_bus.exists(orphan) and data_files(fs_bus, orphan)
    # When the next consumer starts, it sweeps: the dead queue is unbound, its messages and folder deleted
    fs_bus.consume(Recorder(fs_bus.topology.work_queue("actionrunner.req")))
    assert not fs_bus.exists(orphan)
    assert data_files(fs_bus, orphan) == []
    assert not (data_folder(fs_bus) / orphan).exists()
    # And the living one is untouched
    fs_bus.publisher.publish("execution", "update", {"id": "ex2"})
    wait_until(lambda: len(living.bodies) == 2, "the living consumer's second copy")


@pytest.mark.parametrize("where", [WORK_FOLDER, "."], ids=["work folder", "data folder (older layout)"])
def test_filesystem_sweep_puts_back_what_a_dead_process_left_half_done(fs_bus, where):
    # Given a message a consumer renamed to read and then died, and a file a publisher died writing
    dead = subprocess.Popen(["true"])
    dead.wait()
    queue = fs_bus.topology.work_queue("actionrunner.req")
    fs_bus.publisher.publish("liveaction.status", "requested", {"id": "half-claimed"})
    [name] = data_files(fs_bus, queue.name)
    folder = data_folder(fs_bus)
    (folder / where).mkdir(exist_ok=True)
    # Leftover names carry the queue, so that the sweep knows which folder to put them back in.
    flat = f"{name[:-len('.msg')]}.{queue.name}.msg"
    (folder / queue.name / name).rename(folder / where / f".{flat}.{dead.pid}.claim")
    partial = folder / where / f".9{flat}.{dead.pid}.tmp"
    partial.write_text('{"body": "trunc')
    # When a consumer starts
    handler = Recorder(queue)
    fs_bus.consume(handler)
    # Then the claimed message is delivered after all, and the partial file is gone
    wait_until(lambda: handler.bodies, "the message put back")
    assert handler.ids() == ["half-claimed"]
    assert not partial.exists()


def test_filesystem_messages_are_written_and_claimed_outside_the_watched_folder(fs_bus, tmp_path):
    # Given a watch on a queue's folder, as every consumer of the queue has
    queue = fs_bus.topology.work_queue("actionrunner.req")
    fs_bus.publisher.publish("liveaction.status", "requested", {"id": "warm-up"})  # declares and binds
    handler = Recorder(queue)
    fs_bus.consume(handler)
    wait_until(lambda: handler.bodies, "the first message")
    watch = FolderWatch()
    try:
        watch.follow([str(data_folder(fs_bus) / queue.name)])
        # When one message is published and consumed
        fs_bus.publisher.publish("liveaction.status", "requested", {"id": "ex1"})
        wait_until(lambda: len(handler.bodies) == 2, "the message")
        # Then the folder saw one event: the message's arrival (no temporary or claim file)
        events = os.read(watch.fd, 65536)
        names = []
        while events:
            _wd, _mask, _cookie, length = struct.unpack_from("iIII", events)
            names.append(events[16:16 + length].rstrip(b"\0"))
            events = events[16 + length:]
        assert len(names) == 1 and names[0].endswith(b".msg") and not names[0].startswith(b".")
    finally:
        watch.close()


def test_filesystem_unreadable_message_file_is_dropped(fs_bus):
    handler = Recorder(fs_bus.topology.work_queue("actionrunner.req"))
    # Given a corrupt file where a message should be
    corrupt = data_folder(fs_bus) / handler.queue.name / message_name()
    corrupt.write_text("this is not a kombu message")
    fs_bus.consume(handler)
    # When a good message follows
    fs_bus.publisher.publish("liveaction.status", "requested", {"id": "good"})
    # Then the consumer skips the corrupt file and carries on
    wait_until(lambda: handler.bodies, "the good message")
    assert handler.ids() == ["good"]
    assert not corrupt.exists()


def test_filesystem_without_inotify_polls(fs_bus):
    # Given a consumer that may not use inotify
    handler = Recorder(fs_bus.topology.work_queue("actionrunner.req"))
    fs_bus.consume(handler, folder_watch=False)
    # Then messages still arrive, by polling
    for i in range(3):
        fs_bus.publisher.publish("liveaction.status", "requested", {"id": f"ex{i}"})
    wait_until(lambda: len(handler.bodies) == 3, "3 messages")
    assert sorted(handler.ids()) == ["ex0", "ex1", "ex2"]


def test_filesystem_clean_close_hands_unacked_message_back_to_its_own_queue_only(fs_bus):
    # Given a workflow child's update, routed to the notifier's and the workflow engine's queues
    notifier = fs_bus.topology.work_queue("notifiers.execution.work")
    workflow = fs_bus.topology.work_queue("workflow.action.update")
    fs_bus.publisher.publish("execution", "update.workflow", {"id": "ex1"})
    # When the notifier takes its copy and closes its channel without acking
    with make_connection(fs_bus.settings.messaging) as conn:
        message = notifier(conn.channel()).get(no_ack=False)
        assert message.payload == {"id": "ex1"}
        assert fs_bus.ready(notifier.name) == 0
    # Then the copy is back in the notifier's queue, and the workflow engine still has one copy
    assert fs_bus.ready(notifier.name) == 1
    assert fs_bus.ready(workflow.name) == 1


def test_filesystem_bindings_file_caught_half_made_by_another_process(fs_bus):
    # Given a bindings file another process has just created and not yet filled (stock kombu
    # creates it, then locks and writes, so a second service starting at once can read it empty)
    topology = Topology(f"{fs_bus.topology.prefix}x")
    publisher = Publisher(make_connection(fs_bus.settings.messaging), topology)
    queue = topology.work_queue("workflow.work")
    control = Path(filesystem_folders(Path(fs_bus.settings.messaging.filesystem_path))["control_folder"])
    table = control / f"{queue.exchange.name}.exchange"
    table.write_text("")
    try:
        # When a service publishes to it, then declares its queues
        publisher.publish("workflow.status", "requested", {"id": "too-early"})
        publisher.declare_work_queues()
        # Then neither fails: the early message had nowhere to go, and the binding is in place
        assert queue.name in table.read_text()
        publisher.publish("workflow.status", "requested", {"id": "bound"})
        assert fs_bus.ready(queue.name) == 1
    finally:
        publisher.close()


def readable(watch: FolderWatch) -> bool:
    """Whether the kernel would wake a process waiting on watch now."""
    return bool(select.select([watch.fd], [], [], 0)[0])


def test_filesystem_folder_watch_wakes_only_for_the_folders_it_follows(tmp_path):
    # Given a watch that follows one consumer's queue
    watch = FolderWatch()
    mine, other = tmp_path / "st2.actionrunner.req", tmp_path / "st2.workflow.work"
    try:
        assert watch.follow([str(mine)])
        assert not watch.follow([str(mine)])
        other.mkdir()
        # When a message for another process's queue lands, the kernel does not wake it
        (other / message_name()).write_text("{}")
        assert not readable(watch)
        # Nor does a message being written, or claimed, in the work folder
        (tmp_path / WORK_FOLDER).mkdir()
        (tmp_path / WORK_FOLDER / ".0_x.st2.actionrunner.req.msg.1.tmp").write_text("{}")
        assert not readable(watch)
        # But a message for its own queue wakes it
        (mine / message_name()).write_text("{}")
        assert readable(watch) and watch._read()
        # And when the consumer's queues change, so do the folders that wake it
        assert watch.follow([str(other)])
        watch._read()  # the kernel's notice that the old watch is gone
        (mine / message_name()).write_text("{}")
        assert not readable(watch)
        (other / message_name()).write_text("{}")
        assert readable(watch) and watch._read()
    finally:
        watch.close()


def test_filesystem_folder_watch_notices_its_queue_folder_removed_and_watches_it_again(tmp_path):
    # Given a watch on a queue's folder
    watch = FolderWatch()
    try:
        watch.follow([str(tmp_path / "st2.exec.broadcast.x")])
        # When the folder is removed (the queue deleted, or swept by another process)
        (tmp_path / "st2.exec.broadcast.x").rmdir()
        # Then the waiter is woken to look again, and the next follow watches it anew
        assert readable(watch) and watch._read()
        assert watch.follow([str(tmp_path / "st2.exec.broadcast.x")])
        (tmp_path / "st2.exec.broadcast.x" / message_name()).write_text("{}")
        assert readable(watch) and watch._read()
    finally:
        watch.close()


def test_filesystem_consumer_is_not_woken_by_other_queues_messages(fs_bus, monkeypatch):
    # Given an idle consumer of the action runner's cancel queue, and a busy one of its request queue,
    # counting every time each is woken to read inotify events
    woken: list[FolderWatch] = []
    read = FolderWatch._read
    monkeypatch.setattr(FolderWatch, "_read", lambda self: woken.append(self) or read(self))
    idle = Recorder(fs_bus.topology.work_queue("actionrunner.cancel"))
    busy = Recorder(fs_bus.topology.work_queue("actionrunner.req"))
    idle_consumer = fs_bus.consume(idle)
    busy_consumer = fs_bus.consume(busy)
    wait_until(lambda: getattr(idle_consumer.connection.transport._watch, "folders", None),
               "the idle consumer's watch")
    # When 20 execution requests are published and handled
    for i in range(20):
        fs_bus.publisher.publish("liveaction.status", "requested", {"id": f"ex{i}"})
    wait_until(lambda: len(busy.bodies) == 20, "20 messages")
    # Then the busy consumer was woken, the idle one never
    assert busy_consumer.connection.transport._watch in woken
    assert idle_consumer.connection.transport._watch not in woken
    # And the idle one still gets its own message
    fs_bus.publisher.publish("liveaction.status", "canceling", {"id": "ex0"})
    wait_until(lambda: idle.bodies, "the cancel message", 2)
    assert idle_consumer.connection.transport._watch in woken


def test_filesystem_consumer_of_several_queues_is_woken_for_each(fs_bus):
    # Given one consumer of two queues, idle long enough to be waiting on its watch
    first = Recorder(fs_bus.topology.work_queue("actionrunner.req"))
    second = Recorder(fs_bus.topology.work_queue("actionrunner.work"))
    fs_bus.consume(first, second)
    eventlet.sleep(0.2)
    # When a message comes for each, one after the other, then both arrive
    fs_bus.publisher.publish("liveaction.status", "scheduled", {"id": "ex1"})
    wait_until(lambda: second.bodies, "the second queue's message", 2)
    fs_bus.publisher.publish("liveaction.status", "requested", {"id": "ex2"})
    wait_until(lambda: first.bodies, "the first queue's message", 2)
    assert (first.ids(), second.ids()) == (["ex2"], ["ex1"])


def test_filesystem_messages_of_the_older_flat_layout_are_moved_and_delivered(fs_bus):
    # Given messages an older version left flat in the data folder (<ms>_<uuid>.<queue>.msg), one
    # named as stock kombu names them (no zero padding), and one it had claimed and then died
    queue = fs_bus.topology.work_queue("actionrunner.req")
    folder = data_folder(fs_bus)
    flat = []
    for i in range(3):
        fs_bus.publisher.publish("liveaction.status", "requested", {"id": f"old{i}"})
        [name] = data_files(fs_bus, queue.name)
        flat.append(f"{name[:-len('.msg')]}.{queue.name}.msg")
        (folder / queue.name / name).rename(folder / flat[-1])
    stock = flat[1].lstrip("0")
    (folder / flat[1]).rename(folder / stock)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (folder / flat[2]).rename(folder / f".{flat[2]}.{dead.pid}.claim")
    # When a consumer of the queue starts
    handler = Recorder(queue)
    fs_bus.consume(handler)
    # Then every one is delivered, and nothing is left in the flat layout
    wait_until(lambda: len(handler.bodies) == 3, "the 3 old messages")
    assert sorted(handler.ids()) == ["old0", "old1", "old2"]
    assert [name for name in os.listdir(folder) if name.endswith(".msg")] == []


def age(path: Path, seconds: float) -> None:
    """Make a file look as if last written seconds ago."""
    written = path.stat().st_mtime_ns - int(seconds * 1e9)
    os.utime(path, ns=(written, written))


def test_filesystem_publisher_sees_a_binding_another_process_added(fs_bus):
    # Given a publisher that has routed through a settled (long unchanged) bindings file, so keeps it
    fs_bus.publisher.publish("liveaction.status", "requested", {"id": "warm-up"})
    exchange = fs_bus.topology.exchange("liveaction.status")
    control = Path(filesystem_folders(Path(fs_bus.settings.messaging.filesystem_path))["control_folder"])
    age(control / f"{exchange.name}.exchange", 60)
    fs_bus.publisher.publish("liveaction.status", "requested", {"id": "cached"})
    # When another process binds a new queue to that exchange
    extra = kombu.Queue(f"{fs_bus.topology.prefix}.extra", exchange, routing_key="requested", durable=True)
    with make_connection(fs_bus.settings.messaging) as conn:
        extra(conn.channel()).declare()
    # Then the publisher's next message reaches it too
    fs_bus.publisher.publish("liveaction.status", "requested", {"id": "after-bind"})
    assert fs_bus.ready(extra.name) == 1
    assert fs_bus.ready(fs_bus.topology.work_queue("actionrunner.req").name) == 3


def test_filesystem_bindings_changed_within_one_clock_tick_are_read_again(fs_bus):
    # Given a publisher that routed through a bindings file just written
    exchange = kombu.Exchange(f"{fs_bus.topology.prefix}.tick", type="topic", durable=True)
    first = kombu.Queue(f"{fs_bus.topology.prefix}.q1", exchange, routing_key="k", durable=True)
    second = kombu.Queue(f"{fs_bus.topology.prefix}.q2", exchange, routing_key="k", durable=True)
    control = Path(filesystem_folders(Path(fs_bus.settings.messaging.filesystem_path))["control_folder"])
    table = control / f"{exchange.name}.exchange"
    with make_connection(fs_bus.settings.messaging) as conn:
        channel = conn.channel()
        first(channel).declare()
        producer = kombu.Producer(channel, exchange=exchange, serializer="json")
        producer.publish({"id": "one"}, routing_key="k")
        [first_message] = data_files(fs_bus, first.name)
        # When another process rebinds it to a queue of the same name length, in the same mtime tick
        stat = table.stat()
        table.write_text(table.read_text().replace(first.name, second.name))
        os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert (table.stat().st_size, table.stat().st_ino) == (stat.st_size, stat.st_ino)
        second(channel).declare()  # the folder only; the binding is already written
        # Then the next message follows the new binding
        producer.publish({"id": "two"}, routing_key="k")
    assert (data_files(fs_bus, first.name), len(data_files(fs_bus, second.name))) == ([first_message], 1)


def test_filesystem_idle_consumer_does_not_keep_listing_the_folder(fs_bus, monkeypatch):
    # Given a consumer with nothing to do, counting each look at the bus folder
    looks = []
    ready = FilesystemChannel._ready_news
    monkeypatch.setattr(FilesystemChannel, "_ready_news", lambda self, folders: looks.append(1) or ready(self, folders))
    handler = Recorder(fs_bus.topology.work_queue("actionrunner.req"))
    fs_bus.consume(handler)
    eventlet.sleep(0.3)
    # When it idles for a second (its loop wakes every STOP_CHECK_INTERVAL)
    before = len(looks)
    eventlet.sleep(1.0)
    # Then it looked about once (the safety poll), not twice per wake-up
    assert len(looks) - before <= 3
    # And a message still reaches it at once, and the next one too
    fs_bus.publisher.publish("liveaction.status", "requested", {"id": "ex1"})
    wait_until(lambda: handler.bodies, "the message", 2)
    fs_bus.publisher.publish("liveaction.status", "requested", {"id": "ex2"})
    wait_until(lambda: len(handler.bodies) == 2, "the second message", 2)


def test_filesystem_backlog_is_listed_once_and_handed_out_oldest_first(fs_bus, monkeypatch):
    # Given 300 execution requests waiting before anyone consumes, counting each look at the folder
    for i in range(300):
        fs_bus.publisher.publish("liveaction.status", "requested", {"id": f"ex{i}"})
    looks = []
    ready = FilesystemChannel._ready_news
    monkeypatch.setattr(FilesystemChannel, "_ready_news", lambda self, folders: looks.append(1) or ready(self, folders))
    # When a consumer taking 10 at a time drains them
    handler = Recorder(fs_bus.topology.work_queue("actionrunner.req"), work=lambda body: eventlet.sleep(0.001))
    fs_bus.consume(handler, pool_size=10)
    wait_until(lambda: len(handler.bodies) == 300, "300 messages")
    # Then it took them in the order they were published, after one look (not one per batch of 10)
    assert [body["id"] for body in handler.attempts] == [f"ex{i}" for i in range(300)]
    assert len(looks) <= 3
    # And a message published after the drain still reaches it
    fs_bus.publisher.publish("liveaction.status", "requested", {"id": "late"})
    wait_until(lambda: handler.ids()[-1:] == ["late"], "the later message", 2)


def test_filesystem_backlog_skips_what_another_consumer_took_since_the_look(fs_bus):
    # Given 40 waiting requests and a consumer that holds 5 at a time, the rest known from its look
    for i in range(40):
        fs_bus.publisher.publish("liveaction.status", "requested", {"id": f"ex{i}"})
    release = eventlet.event.Event()
    handler = Recorder(fs_bus.topology.work_queue("actionrunner.req"), work=lambda body: release.wait())
    fs_bus.consume(handler, pool_size=5)
    wait_until(lambda: len(handler.attempts) == 5, "the first five")
    # When another consumer takes the next 20 meanwhile
    with make_connection(fs_bus.settings.messaging) as conn:
        queue = fs_bus.topology.work_queue("actionrunner.req")(conn.channel())
        taken = []
        for _ in range(20):
            message = queue.get(no_ack=True)
            taken.append(message.decode()["id"])
    release.send()
    # Then the first consumer gets every other one exactly once, in order
    wait_until(lambda: len(handler.bodies) == 20, "the other twenty")
    eventlet.sleep(0.1)
    assert taken == [f"ex{i}" for i in range(5, 25)]
    assert [body["id"] for body in handler.attempts] == [f"ex{i}" for i in range(5)] + [f"ex{i}" for i in range(25, 40)]


def test_filesystem_published_message_is_what_kombu_would_write(fs_bus):
    # Given a queue bound on a topic exchange, and kombu's Producer publishing to it once
    queue_name = fs_bus.topology.work_queue("actionrunner.req").name
    with make_connection(fs_bus.settings.messaging) as conn:
        producer = kombu.Producer(conn.channel(), serializer="json")
        producer.publish({"id": "a", "n": [1, 2]}, exchange=fs_bus.topology.exchange("liveaction.status"),
                         routing_key="requested", headers={"x-st2-redeliveries": 2}, delivery_mode=2,
                         declare=[fs_bus.topology.exchange("liveaction.status")])
    # When the Publisher publishes the same body twice (the first declares the exchange, the second
    # goes straight to the channel)
    for _ in range(2):
        fs_bus.publisher.publish("liveaction.status", "requested", {"id": "a", "n": [1, 2]},
                                 {"x-st2-redeliveries": 2})
    # Then the three files hold the same message but for its delivery tag
    shapes = []
    for name in data_files(fs_bus, queue_name):
        message = json.loads((data_folder(fs_bus) / queue_name / name).read_text())
        message["properties"].pop("delivery_tag")
        shapes.append(message)
    assert len(shapes) == 3 and shapes[0] == shapes[1] == shapes[2]
    # And a consumer reads its body and headers
    handler = Recorder(fs_bus.topology.work_queue("actionrunner.req"))
    fs_bus.consume(handler)
    wait_until(lambda: len(handler.bodies) == 3, "three messages")
    assert handler.bodies == [{"id": "a", "n": [1, 2]}] * 3
