"""The sensor container on the real embedded database and buses: pack sensors written the StackStorm
way (tests/fixtures/packs/sensor_pack) run as subprocesses, dispatch trigger instances, get their
triggers, are respawned when killed, stopped when disabled, and a sensor that cannot import is
reported while the others keep running."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import webtest

from testsupport import api_app
from st2common.content import register
from st2common.exceptions import ValidationError
from st2common.models.db.trace import TraceDB
from st2common.models.db.trigger import TriggerDB, TriggerInstanceDB
from st2common.persistence.access import Access
from st2common.services import triggers, triggertypes
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from st2common.util.process import pid_alive
from st2sensorcontainer.container import FAILED, RUNNING, STOPPED, SensorContainer
from st2sensorcontainer.sensor_service import SensorService
from testsupport import make_settings

REPO = Path(__file__).resolve().parents[2]
SENSOR_PACK = REPO / "tests" / "fixtures" / "packs" / "sensor_pack"
TICKER = "sensor_pack.TickerSensor"
POLLER = "sensor_pack.PollerSensor"
BROKEN = "sensor_pack.BrokenSensor"
DEADLINE = 15.0


@pytest.fixture
def settings(request, tmp_path, embedded_mongo):
    """The fixture pack in this test's packs folder, its config pointing at a marker folder; the bus of
    bus_settings when the test asks for it, else the filesystem bus."""
    bus_url = "filesystem://"
    if "bus_settings" in request.fixturenames:
        bus_url = request.getfixturevalue("bus_settings").messaging.url
    shutil.copytree(SENSOR_PACK, tmp_path / "packs" / "sensor_pack")
    (tmp_path / "markers").mkdir()
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "sensor_pack.yaml").write_text(f"marker_dir: {tmp_path / 'markers'}\n")
    return make_settings(tmp_path, embedded_mongo, bus_url, extra={
        "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(REPO / "contrib" / "packs"),
        "ST2_CONTENT__PACKS_BASE_PATHS": str(tmp_path / "packs"),
        "ST2_CONTENT__CONFIGS_PATH": str(configs),
    })


@pytest.fixture
def publisher(settings, db):
    publisher = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
    publisher.declare_work_queues()
    report = register(settings, kinds=["triggers", "sensors"], publisher=publisher)
    assert report.ok, report.errors
    yield publisher
    publisher.close()


@pytest.fixture
def container(settings, publisher, caplog):
    """The container with short respawn delays, started on the registered sensors."""
    caplog.set_level(logging.INFO, logger="st2sensorcontainer.container")
    container = SensorContainer(settings, publisher, respawn_delay=0.2, max_respawns=2, reset_after=10.0,
                                stop_grace=3.0)
    container.start()
    yield container
    container.stop()


def wait_for(predicate, what: str, timeout: float = DEADLINE):
    """predicate()'s first truthy value, polling until timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def instances(trigger: str, **payload) -> list[TriggerInstanceDB]:
    """The stored instances of trigger whose payload has these values, oldest first."""
    raw = {"trigger": trigger, **{f"payload.{k}": v for k, v in payload.items()}}
    return Access(TriggerInstanceDB).query(raw=raw, order_by=("occurrence_time",))


def ticks_from(pid: int) -> list[TriggerInstanceDB]:
    return instances("sensor_pack.tick", pid=pid)


@pytest.mark.usefixtures("bus_settings")
def test_sensors_run_as_processes_and_a_broken_one_does_not_stop_the_others(settings, publisher, container,
                                                                            caplog):
    # Given the fixture pack's three sensors are registered and the container started
    # Then the passive and the polling sensor each run in a process of their own
    ticker_pid = wait_for(lambda: container.pid(TICKER), "the ticker process")
    poller_pid = wait_for(lambda: container.pid(POLLER), "the poller process")
    assert ticker_pid != poller_pid and pid_alive(ticker_pid) and pid_alive(poller_pid)
    assert os.getpid() not in (ticker_pid, poller_pid)
    # And their trigger instances are stored, with the payload the sensor built
    ticks = wait_for(lambda: [t for t in ticks_from(ticker_pid)] if len(ticks_from(ticker_pid)) >= 3 else None,
                     "three ticks")
    assert [t.payload["count"] for t in ticks[:3]] == [1, 2, 3]
    assert ticks[0].payload["watched"] == []
    polled = wait_for(lambda: instances("sensor_pack.polled", count=1), "the first poll")
    # And a trace tag given to dispatch names the instance's trace
    assert TraceDB.objects(trace_tag="poller-1").count() == 1, polled
    # And the polling sensor's datastore item is local to it
    assert int(SensorService(settings, publisher, "sensor_pack", "PollerSensor").get_value("polls")) >= 1
    # And each start was announced with its pid and command line
    for ref, pid in ((TICKER, ticker_pid), (POLLER, poller_pid)):
        spawn = wait_for(lambda ref=ref, pid=pid: instances(triggertypes.SENSOR_SPAWN_TRIGGER_REF, id=ref, pid=pid),
                         f"process_spawn of {ref}")
        assert "st2sensorcontainer.wrapper" in spawn[0].payload["cmd"]
        assert isinstance(spawn[0].payload["timestamp"], int)

    # And the sensor that cannot import is reported with its pack, file and error, and not respawned
    wait_for(lambda: container.state(BROKEN) == FAILED, "the broken sensor to be given up")
    reports = [r.getMessage() for r in caplog.records
               if r.name == "st2sensorcontainer.container" and r.levelno == logging.ERROR]
    assert any("sensor_pack" in m and "broken_sensor.py" in m and "sensor_pack_missing_dependency" in m
               for m in reports), reports
    exits = instances(triggertypes.SENSOR_EXIT_TRIGGER_REF, id=BROKEN)
    assert [e.payload["exit_code"] for e in exits] == [3]
    assert len(instances(triggertypes.SENSOR_SPAWN_TRIGGER_REF, id=BROKEN)) == 1
    # And the others keep running
    seen = len(ticks_from(ticker_pid))
    wait_for(lambda: len(ticks_from(ticker_pid)) > seen + 2, "more ticks after the broken sensor failed")
    assert container.state(TICKER) == RUNNING and container.pid(TICKER) == ticker_pid


def test_a_killed_sensor_is_respawned_until_the_limit(container):
    # Given the ticker runs
    first = wait_for(lambda: container.pid(TICKER), "the ticker process")
    wait_for(lambda: ticks_from(first), "a tick")
    pids = [first]
    # When its process is killed, twice
    for attempt in (1, 2):
        os.kill(pids[-1], signal.SIGKILL)
        # Then the container respawns it, and the new process ticks
        pid = wait_for(lambda: (p := container.pid(TICKER)) not in (None, *pids) and p, f"respawn {attempt}")
        wait_for(lambda: ticks_from(pid), f"a tick from respawn {attempt}")
        pids.append(pid)
    # And every exit and start is on record: exit code -9, then the new pid
    exits = wait_for(lambda: (e := instances(triggertypes.SENSOR_EXIT_TRIGGER_REF, id=TICKER)) and len(e) == 2 and e,
                     "two process_exit instances")
    assert [e.payload["exit_code"] for e in exits] == [-signal.SIGKILL] * 2
    spawns = instances(triggertypes.SENSOR_SPAWN_TRIGGER_REF, id=TICKER)
    assert [s.payload["pid"] for s in spawns] == pids
    # When it is killed once more than the respawn limit allows
    os.kill(pids[-1], signal.SIGKILL)
    # Then the container gives up on it, and the polling sensor is untouched
    wait_for(lambda: container.state(TICKER) == FAILED, "the container to give up")
    assert container.pid(TICKER) is None
    assert len(instances(triggertypes.SENSOR_SPAWN_TRIGGER_REF, id=TICKER)) == 3
    assert container.state(POLLER) == RUNNING


def test_trigger_changes_reach_add_update_and_remove_trigger(settings, publisher, caplog):
    # Given a watch trigger that exists before the sensor starts
    watch = triggertypes.get_trigger_type("sensor_pack.watch")
    before, _ = triggers.get_or_create_trigger(watch, {"path": "/var/log/before"}, publisher)
    container = SensorContainer(settings, publisher, respawn_delay=0.2, stop_grace=3.0)
    container.start()
    try:
        pid = wait_for(lambda: container.pid(TICKER), "the ticker process")

        def latest_watched():
            ticks = ticks_from(pid)
            return ticks[-1].payload["watched"] if ticks else None

        # Then the sensor is given it at start
        wait_for(lambda: latest_watched() == ["/var/log/before"], "add_trigger of the existing trigger")
        # When another is created, one is updated and the first deleted
        after, _ = triggers.get_or_create_trigger(watch, {"path": "/var/log/after"}, publisher)
        wait_for(lambda: latest_watched() == ["/var/log/after", "/var/log/before"], "add_trigger")
        after.parameters = {"path": "/var/log/changed"}
        after.set_identity()
        Access(TriggerDB, publisher).add_or_update(after)
        wait_for(lambda: latest_watched() == ["/var/log/before", "/var/log/changed"], "update_trigger")
        Access(TriggerDB, publisher).delete(before)
        # Then each change reaches the sensor's add_trigger, update_trigger and remove_trigger
        wait_for(lambda: latest_watched() == ["/var/log/changed"], "remove_trigger")
        assert container.pid(TICKER) == pid
    finally:
        container.stop()


def test_disable_through_the_api_stops_the_sensor_and_enable_starts_it(settings, publisher, container, tmp_path):
    # Given the ticker runs
    pid = wait_for(lambda: container.pid(TICKER), "the ticker process")
    wait_for(lambda: ticks_from(pid), "a tick")
    api = webtest.TestApp(api_app(settings, publisher))
    # When it is disabled through the API
    body = api.get(f"/v1/sensortypes/{TICKER}").json
    body.pop("ref")
    answer = api.put_json(f"/v1/sensortypes/{body['id']}", dict(body, enabled=False)).json
    assert answer["enabled"] is False
    # Then its process is stopped with SIGTERM, which calls its cleanup()
    wait_for(lambda: container.state(TICKER) == STOPPED and not pid_alive(pid), "the ticker to stop")
    marker = tmp_path / "markers" / "TickerSensor.cleanup"
    assert marker.read_text() == str(pid)
    assert [e.payload["exit_code"] for e in instances(triggertypes.SENSOR_EXIT_TRIGGER_REF, id=TICKER)] == [0]
    # And it ticks no more
    count = len(ticks_from(pid))
    time.sleep(0.5)
    assert len(ticks_from(pid)) == count
    # When it is enabled again
    api.put_json(f"/v1/sensortypes/{TICKER}", dict(body, enabled=True))
    # Then a new process runs it
    new_pid = wait_for(lambda: (p := container.pid(TICKER)) not in (None, pid) and p, "the ticker to restart")
    wait_for(lambda: ticks_from(new_pid), "a tick from the re-enabled ticker")
    # When the container stops, every sensor is terminated through cleanup()
    poller_pid = container.pid(POLLER)
    container.stop()
    assert not pid_alive(new_pid) and not pid_alive(poller_pid)
    assert (tmp_path / "markers" / "PollerSensor.cleanup").read_text() == str(poller_pid)
    assert marker.read_text() == str(new_pid)


def test_sensor_service_dispatch_and_datastore(settings, publisher, caplog):
    # Given the service a TickerSensor gets
    service = SensorService(settings, publisher, "sensor_pack", "TickerSensor")
    # When it dispatches a valid payload with a trace tag
    service.dispatch("sensor_pack.tick", {"count": 1, "pid": 1, "watched": []}, trace_tag="tick-trace")
    # Then the instance is stored, pending, on that trace
    stored = instances("sensor_pack.tick")
    assert len(stored) == 1 and stored[0].status == "pending"
    assert TraceDB.objects(trace_tag="tick-trace").count() == 1
    # When the payload does not match the trigger type, or the trigger is unknown
    service.dispatch("sensor_pack.tick", {"count": "one"})
    service.dispatch("sensor_pack.nothing", {})
    # Then nothing is stored, and the sensor is told why in the log
    assert len(instances("sensor_pack.tick")) == 1 and not instances("sensor_pack.nothing")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("sensor_pack.tick" in m and "payload" in m for m in warnings), warnings
    assert any("sensor_pack.nothing" in m for m in warnings), warnings

    # When it keeps values, local to the sensor and global
    assert service.set_value("cursor", 42) is True
    assert service.set_value("shared", "x", local=False) is True
    # Then local names carry the sensor's prefix, values come back as strings
    assert service.get_value("cursor") == "42"
    assert service.get_value("sensor_pack.TickerSensor:cursor", local=False) == "42"
    assert service.get_value("shared") is None and service.get_value("shared", local=False) == "x"
    assert [kv.name for kv in service.list_values()] == ["sensor_pack.TickerSensor:cursor"]
    assert [kv.value for kv in service.list_values(local=False, prefix="sha")] == ["x"]
    assert service.datastore_service.get_value("cursor") == "42"
    # And deleting says whether there was something to delete
    assert service.delete_value("cursor") is True
    assert service.delete_value("cursor") is False and service.get_value("cursor") is None
    # And only the system scope is open to sensors
    with pytest.raises(ValidationError):
        service.get_value("cursor", scope="user")
