"""The embedded bus's message folder in shared memory: linked, moved, switched off, cleared."""

from __future__ import annotations

import os
import time
from pathlib import Path

import kombu

from st2common.transport import memfolder
from st2common.transport.connection import filesystem_folders


def _shm(tmp_path: Path) -> str:
    # A stand-in for /dev/shm, so tests see exactly which folders appear.
    root = tmp_path / "shm"
    root.mkdir(exist_ok=True)
    return str(root)


def test_data_is_a_link_to_a_memory_folder_made_once(tmp_path):
    bus, shm = tmp_path / "bus", _shm(tmp_path)
    data = memfolder.data_folder(bus, True, shm)
    target = memfolder.memory_folder(bus, shm)
    assert data.is_symlink() and os.readlink(data) == str(target)
    assert (target / memfolder.OWNER_FILE).read_text() == str(bus.resolve())
    (data / "m.q.msg").write_text("{}")
    assert memfolder.data_folder(bus, True, shm) == data
    assert (target / "m.q.msg").exists()


def test_messages_already_on_disk_move_into_memory_and_back(tmp_path):
    bus, shm = tmp_path / "bus", _shm(tmp_path)
    (bus / "data" / "queue.a").mkdir(parents=True)
    (bus / "data" / "1_x.queue.b.msg").write_text('{"b": 1}')
    (bus / "data" / "queue.a" / "2_y.msg").write_text('{"a": 2}')
    data = memfolder.data_folder(bus, True, shm)
    target = memfolder.memory_folder(bus, shm)
    assert data.is_symlink()
    assert (target / "1_x.queue.b.msg").read_text() == '{"b": 1}'
    assert (target / "queue.a" / "2_y.msg").read_text() == '{"a": 2}'
    assert [path.name for path in bus.iterdir() if path.name.startswith("data")] == ["data"]

    data = memfolder.data_folder(bus, False, shm)
    assert not data.is_symlink() and data.is_dir()
    assert (data / "1_x.queue.b.msg").read_text() == '{"b": 1}'
    assert (data / "queue.a" / "2_y.msg").read_text() == '{"a": 2}'
    assert not target.exists()


def test_a_memory_folder_lost_with_a_reboot_is_made_again(tmp_path):
    bus, shm = tmp_path / "bus", _shm(tmp_path)
    data = memfolder.data_folder(bus, True, shm)
    target = memfolder.memory_folder(bus, shm)
    for path in target.iterdir():
        path.unlink()
    target.rmdir()
    assert memfolder.data_folder(bus, True, shm) == data
    assert target.is_dir() and data.resolve() == target


def test_folders_of_deleted_bus_folders_are_cleared_once_stale(tmp_path):
    shm = _shm(tmp_path)
    gone, fresh_gone, alive = tmp_path / "gone", tmp_path / "fresh", tmp_path / "alive"
    memfolder.data_folder(gone, True, shm)
    memfolder.data_folder(fresh_gone, True, shm)
    memfolder.data_folder(alive, True, shm)
    old = time.time() - memfolder.STALE_AFTER - 5
    for bus in (gone, alive):
        os.utime(memfolder.memory_folder(bus, shm), (old, old))
    for bus in (gone, fresh_gone):
        (bus / "data").unlink()
    memfolder.clear_orphans(shm)
    assert not memfolder.memory_folder(gone, shm).exists()
    assert memfolder.memory_folder(fresh_gone, shm).exists()  # too recent: may be in the making
    assert memfolder.memory_folder(alive, shm).exists()  # still linked


def test_no_tmpfs_or_too_little_room_keeps_the_folder_on_disk(tmp_path):
    assert memfolder.shm_root((str(tmp_path / "missing"),)) is None
    assert memfolder.shm_root((str(tmp_path),), min_free=1 << 62) is None
    assert memfolder.shm_root((str(tmp_path),), min_free=0) == str(tmp_path)


def test_the_bus_carries_messages_through_the_linked_folder(tmp_path):
    folders = filesystem_folders(tmp_path / "bus")
    data = Path(folders["data_folder_in"])
    if memfolder.shm_root() is not None:
        assert data.is_symlink()
    exchange = kombu.Exchange("memtest", type="topic")
    queue = kombu.Queue("memtest.q", exchange, routing_key="k")
    with kombu.Connection("filesystem://", transport_options=folders) as connection:
        channel = connection.default_channel
        queue(channel).declare()
        kombu.Producer(channel, exchange=exchange, serializer="json").publish({"n": 1}, routing_key="k")
        message = queue(channel).get(no_ack=True)
        assert message is not None and message.payload == {"n": 1}
    memfolder.data_folder(tmp_path / "bus", False)  # back on disk: nothing left in /dev/shm


def test_a_finished_runs_folders_are_cleared_and_others_kept(tmp_path):
    shm = _shm(tmp_path)
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    memfolder.data_folder(run / "a" / "bus", True, shm)
    memfolder.data_folder(run / "b" / "bus", True, shm)
    memfolder.data_folder(elsewhere / "bus", True, shm)
    assert memfolder.clear_under(run, shm) == 2
    assert [path.name for path in Path(shm).iterdir()] == [memfolder.memory_folder(elsewhere / "bus", shm).name]
