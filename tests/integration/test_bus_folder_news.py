"""The embedded bus lists only the queue folders its folder watch saw a message land in.

A consumer of several queues (the action runner consumes seven) asks the watch
which folders have news since its last look. These tests pin the orderings
where that could leave a ready message unseen: a message landing just after a
look, or between the wake-up and the look, events lost to an overflow, a
folder watched anew, and writers inotify cannot see. Each test that must not
lean on the safety look switches it off (a WATCHED_POLL_INTERVAL of an hour),
so a message that arrives at all arrived through the watch.
"""

from __future__ import annotations

import os
import select
import time
import uuid
from pathlib import Path

import eventlet
import kombu
import pytest
from testsupport import make_settings
from test_bus import wait_until

from st2common.transport import filesystem
from st2common.transport.connection import filesystem_folders, make_connection
from st2common.transport.consumer import Consumer, Handler, run_in_background
from st2common.transport.folderwatch import FolderWatch
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology

# Queues of the action runner's connection, on the exchanges their routing keys below reach.
QUEUES = {"actionrunner.req": "requested", "actionrunner.work": "scheduled", "actionrunner.cancel": "canceling"}


class Recorder(Handler):
    """Records the ids it handles."""

    def __init__(self, queue) -> None:
        self.queue = queue
        self.ids: list[str] = []

    def handle(self, body):
        self.ids.append(body["id"])


class Runner:
    """One consumer of the QUEUES on one connection, a publisher, and the bus folder."""

    def __init__(self, tmp_path: Path, **options) -> None:
        self.settings = make_settings(tmp_path, None)
        self.topology = Topology(self.settings.messaging.prefix)
        self.publisher = Publisher(make_connection(self.settings.messaging), self.topology)
        self.publisher.declare_work_queues()
        self.handlers = {name: Recorder(self.topology.work_queue(name)) for name in QUEUES}
        self.consumer = Consumer(make_connection(self.settings.messaging), self.publisher,
                                 list(self.handlers.values()), **options)
        self.thread = None

    def start(self) -> None:
        self.thread = run_in_background(self.consumer)
        assert self.consumer.wait_ready(10)
        wait_until(lambda: self.watch is not None and len(self.watch.folders) == len(QUEUES), "the folder watch")

    @property
    def watch(self) -> FolderWatch | None:
        return self.consumer.connection.transport._watch

    def folder(self, name: str) -> Path:
        return self.data / self.topology.work_queue(name).name

    @property
    def data(self) -> Path:
        return Path(filesystem_folders(Path(self.settings.messaging.filesystem_path))["data_folder_in"])

    def publish(self, name: str, id_: str) -> None:
        self.publisher.publish("liveaction.status", QUEUES[name], {"id": id_})

    def got(self, name: str) -> list[str]:
        return self.handlers[name].ids

    def close(self) -> None:
        if self.thread is not None:
            self.consumer.stop()
            self.thread.wait()
        self.publisher.close()


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """A Runner whose safety look never comes (within a test)."""
    monkeypatch.setattr(filesystem, "WATCHED_POLL_INTERVAL", 3600.0)
    runner = Runner(tmp_path)
    yield runner
    runner.close()


def listed_folders(monkeypatch) -> list[list[str]]:
    """Record, per look, the folders a channel lists."""
    looks: list[list[str]] = []
    choose = filesystem.Channel._folders_to_list

    def recording(self, folders):
        chosen = list(choose(self, folders))
        looks.append(sorted(Path(folder).name.rpartition(".")[2] for folder in chosen))
        return chosen

    monkeypatch.setattr(filesystem.Channel, "_folders_to_list", recording)
    return looks


def unseen_by_inotify(runner: Runner, name: str, id_: str):
    """A message for a queue, published now; call what this returns to put it in place unseen by inotify."""
    # Published before the consumer watches, then set aside on the same file system (the work folder,
    # which nobody watches); a hard link back raises IN_CREATE only, which the watch does not ask
    # for: no event, as for a writer on another host over NFS.
    runner.publish(name, id_)
    [file] = [path for path in runner.folder(name).iterdir() if path.name.endswith(".msg")]
    aside = runner.data / filesystem.WORK_FOLDER / f".aside-{file.name}"
    aside.parent.mkdir(exist_ok=True)
    file.rename(aside)

    def slip_in() -> None:
        os.link(aside, file)
        aside.unlink()

    return slip_in


def test_a_look_after_a_delivery_lists_only_folders_with_news(runner, monkeypatch):
    # Given an idle consumer of three queues, recording which folders each look lists
    runner.start()
    eventlet.sleep(0.3)
    looks = listed_folders(monkeypatch)
    # When a message comes for one of them
    runner.publish("actionrunner.work", "ex1")
    wait_until(lambda: runner.got("actionrunner.work"), "the message")
    eventlet.sleep(0.3)
    # Then the looks listed that queue's folder alone, and the look after the delivery none
    assert looks and all(folders in (["work"], []) for folders in looks)
    assert ["work"] in looks and [] in looks


def test_message_landing_just_after_a_look_in_another_queue_is_delivered(runner, monkeypatch):
    # Given a consumer of three queues, and a message for a second queue that lands right after the
    # look that finds the first queue's message (before the consumer waits again)
    runner.start()
    choose, landed = filesystem.Channel._ready_news, []

    def look_then_land(self, folders):
        found = choose(self, folders)
        if found and not landed:
            landed.append(1)
            runner.publish("actionrunner.cancel", "late")
        return found

    monkeypatch.setattr(filesystem.Channel, "_ready_news", look_then_land)
    # When the first message is published
    runner.publish("actionrunner.req", "ex1")
    # Then both arrive, with no safety look to fall back on
    wait_until(lambda: runner.got("actionrunner.req") == ["ex1"], "the first message")
    wait_until(lambda: runner.got("actionrunner.cancel") == ["late"], "the message that landed after the look")


def test_message_landing_between_the_wake_up_and_the_look_is_delivered(runner, monkeypatch):
    # Given a consumer of three queues, and a message for a second queue that lands after the watch
    # read the first message's event, before the channel looks
    runner.start()
    read, landed = FolderWatch._read, []

    def read_then_land(self):
        arrived = read(self)
        if arrived and not landed:
            landed.append(1)
            runner.publish("actionrunner.cancel", "late")
        return arrived

    monkeypatch.setattr(FolderWatch, "_read", read_then_land)
    # When the first message is published
    runner.publish("actionrunner.req", "ex1")
    # Then both arrive, with no safety look to fall back on
    wait_until(lambda: runner.got("actionrunner.req") == ["ex1"], "the first message")
    wait_until(lambda: runner.got("actionrunner.cancel") == ["late"], "the message that landed before the look")


def test_what_a_look_left_beyond_the_prefetch_is_delivered(tmp_path, monkeypatch):
    # Given a consumer of three queues that takes two messages at a time
    monkeypatch.setattr(filesystem, "WATCHED_POLL_INTERVAL", 3600.0)
    runner = Runner(tmp_path, pool_size=2)
    try:
        runner.start()
        # When ten messages land in two of its queues at once
        for i in range(5):
            runner.publish("actionrunner.req", f"r{i}")
            runner.publish("actionrunner.work", f"w{i}")
        # Then every one is delivered, though each look could hand out only two
        wait_until(lambda: len(runner.got("actionrunner.req")) + len(runner.got("actionrunner.work")) == 10,
                   "ten messages")
        assert sorted(runner.got("actionrunner.req")) == [f"r{i}" for i in range(5)]
    finally:
        runner.close()


def test_lost_events_make_the_next_look_list_every_folder(runner):
    # Given an idle consumer of three queues, and a message in one folder that inotify did not report
    slip_in = unseen_by_inotify(runner, "actionrunner.cancel", "unseen")
    runner.start()
    eventlet.sleep(0.3)
    slip_in()
    # When so many files land in another folder that the kernel's event queue overflows
    # (names starting with a dot are never messages, so nothing is delivered from there)
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 100_000:
        pytest.skip(f"inotify queues {limit} events before it overflows")
    folder = runner.folder("actionrunner.req")
    for i in range(limit + 10):
        (folder / f".flood{i}").write_bytes(b"")
    # Then the consumer, told events were lost, lists every folder and finds the unseen message
    wait_until(lambda: runner.got("actionrunner.cancel") == ["unseen"], "the message inotify did not report")


def test_busy_consumer_still_lists_every_folder_every_safety_interval(tmp_path):
    # Given a consumer of three queues with the real safety interval, and a message inotify did not report
    runner = Runner(tmp_path)
    try:
        slip_in = unseen_by_inotify(runner, "actionrunner.cancel", "unseen")
        runner.start()
        slip_in()
        # When messages keep coming for another queue, so that the consumer is never idle for long
        sent = 0
        deadline = time.monotonic() + 10 * filesystem.WATCHED_POLL_INTERVAL
        while not runner.got("actionrunner.cancel") and time.monotonic() < deadline:
            runner.publish("actionrunner.req", f"ex{sent}")
            sent += 1
            wait_until(lambda: len(runner.got("actionrunner.req")) == sent, "a busy message")
            eventlet.sleep(0.01)
        # Then the unseen message is found all the same, by a look at every folder
        assert runner.got("actionrunner.cancel") == ["unseen"]
    finally:
        runner.close()


def test_folder_removed_and_made_again_is_listed_once_watched_anew(runner):
    # Given an idle consumer of three queues
    runner.start()
    folder = runner.folder("actionrunner.cancel")
    # When one queue's folder is removed (swept, say) and a message then lands in it made anew
    folder.rmdir()
    wait_until(lambda: str(folder) not in runner.watch.folders or folder.exists(), "the watch to notice")
    runner.publish("actionrunner.cancel", "after")
    # Then it is delivered, with no safety look to fall back on
    wait_until(lambda: runner.got("actionrunner.cancel") == ["after"], "the message in the folder made anew")


def test_folder_watch_names_the_folders_with_news_since_a_count(tmp_path):
    # Given a watch on two folders, and the count of arrivals as a look begins
    one, two, other = (str(tmp_path / name) for name in ("q.one", "q.two", "q.other"))
    watch = FolderWatch()
    try:
        assert watch.follow([one, two])
        since = watch.arrivals
        assert watch.changed([one, two], since) == []
        # When a message lands in one of them
        Path(one, f"{time.monotonic_ns():019d}_{uuid.uuid4()}.msg").write_text("{}")
        assert select.select([watch.fd], [], [], 5)[0] and watch._read()
        # Then only that folder has news since the count, and neither since the next count
        assert watch.changed([one, two], since) == [one]
        assert watch.changed([one, two], watch.arrivals) == []
        # And a folder it does not watch is never vouched for
        assert watch.changed([two, other], watch.arrivals) == [other]
        # And a folder watched anew counts as news, since a file may have landed before its watch stood
        since = watch.arrivals
        assert watch.follow([one, two, other])
        assert watch.changed([one, two, other], since) == [other]
        # And a removed folder is news until it is watched again
        since = watch.arrivals
        os.rmdir(two)
        assert select.select([watch.fd], [], [], 5)[0] and watch._read()
        assert watch.changed([one, two, other], since) == [two]
        assert watch.changed([one, two, other], watch.arrivals) == [two]
        # And a read that finds no event says so instead of waiting
        assert not watch._read()
    finally:
        watch.close()


def test_events_one_channel_reads_during_its_look_reach_the_other_channels(tmp_path, monkeypatch):
    # Given one connection with two channels, each consuming one queue, and no safety look
    monkeypatch.setattr(filesystem, "WATCHED_POLL_INTERVAL", 3600.0)
    runner = Runner(tmp_path)
    names = {runner.topology.work_queue(name).name: name for name in ("actionrunner.req", "actionrunner.cancel")}
    got: list[str] = []
    armed: list[str] = []

    def on_message(body, message):
        got.append(body["id"])
        message.ack()
        if body["id"].startswith("ex"):
            armed.append(f"late{body['id'][2:]}")

    connection = make_connection(runner.settings.messaging)
    consumers = [kombu.Consumer(connection.channel(), queues=[runner.topology.work_queue(name)], accept=["json"],
                                callbacks=[on_message]) for name in names.values()]
    for consumer in consumers:
        consumer.consume()
    stop: list[int] = []

    def drain() -> None:
        while not stop:
            try:
                connection.drain_events(timeout=0.1)
            except TimeoutError:
                pass

    thread = eventlet.spawn(drain)
    # And, once a message is delivered, one for the queue of the channel that looks first next, landing
    # just after its look: the other channel, looking next in the same round, reads its event
    look = filesystem.Channel._ready_news

    def look_then_land(self, folders):
        found = look(self, folders)
        if armed:
            runner.publish(names[next(iter(folders.values()))], armed.pop())
        return found

    monkeypatch.setattr(filesystem.Channel, "_ready_news", look_then_land)
    try:
        eventlet.sleep(0.3)
        for i in range(4):
            # When a message comes for one of the queues
            runner.publish(list(names.values())[i % 2], f"ex{i}")
            # Then it is delivered, and so is the one that landed during the looks after it
            wait_until(lambda: f"ex{i}" in got and f"late{i}" in got, f"round {i}'s two messages")
    finally:
        stop.append(1)
        thread.wait()
        for consumer in consumers:
            consumer.cancel()
        connection.release()
        runner.close()
