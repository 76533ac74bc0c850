"""/sensortypes on the real embedded database and bus: list, filters, get, enable/disable (only
`enabled` applies, and the sensor containers hear of it), and the `st2 sensor` commands of our CLI
and of the official st2client 3.9.0 against a served API."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import eventlet
import pytest
from click.testing import CliRunner
from eventlet import wsgi

from testsupport import api_app
from st2client.cli import cli
from st2common.content import register
from st2common.models.db.sensor import SensorTypeDB
from st2common.transport.connection import make_connection
from st2common.transport.topology import Topology
from e2e.st2client_compat import official_st2, run_official, side_by_side  # noqa: F401 (session fixture)
from test_api_support import GuardedApp, api_settings, publisher, settings  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]
SENSOR_PACK = REPO / "tests" / "fixtures" / "packs" / "sensor_pack"
REFS = ["sensor_pack.BrokenSensor", "sensor_pack.PollerSensor", "sensor_pack.TickerSensor"]
FIELDS = {"id", "uid", "ref", "name", "class_name", "pack", "description", "artifact_uri", "entry_point",
          "enabled", "trigger_types", "metadata_file"}


@pytest.fixture
def registered(api_settings, db, publisher):
    """The fixture sensor pack copied into the test's packs folder, its triggers and sensors registered."""
    shutil.copytree(SENSOR_PACK, Path(api_settings.content.packs_base_paths[0]) / "sensor_pack")
    report = register(api_settings, kinds=["triggers", "sensors"], publisher=publisher)
    assert report.ok, report.errors
    return api_settings


@pytest.fixture
def api(registered, publisher) -> GuardedApp:
    return GuardedApp(api_app(registered, publisher))


@pytest.fixture
def api_url(registered, publisher):
    """The API on a free port, served by eventlet's WSGI server in a green thread."""
    sock = eventlet.listen(("127.0.0.1", 0))
    server = eventlet.spawn(wsgi.server, sock, api_app(registered, publisher), log_output=False)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server.kill()
    sock.close()


def test_list_shows_every_sensor_type_with_stackstorm_fields_and_no_default_limit(api):
    # When the sensor types are listed
    response = api.get("/v1/sensortypes")
    # Then every registered sensor is there, with no paging limit applied
    assert sorted(s["ref"] for s in response.json) == REFS
    assert "X-Limit" not in response.headers and response.headers["X-Total-Count"] == "3"
    poller = next(s for s in response.json if s["ref"] == "sensor_pack.PollerSensor")
    # And each has StackStorm's fields
    assert set(poller) == FIELDS | {"poll_interval"}
    assert (poller["name"], poller["class_name"], poller["pack"]) == ("PollerSensor", "PollerSensor", "sensor_pack")
    assert poller["uid"] == "sensor_type:sensor_pack:PollerSensor"
    assert poller["entry_point"] == "poller_sensor.py" and poller["poll_interval"] == 4
    assert poller["artifact_uri"].startswith("file://") and poller["artifact_uri"].endswith("poller_sensor.py")
    assert poller["trigger_types"] == ["sensor_pack.polled"] and poller["enabled"] is True
    # And the CLI's listing asks only for its columns
    listed = api.get("/v1/sensortypes?include_attributes=ref,pack,description,enabled").json
    assert all(set(s) == {"id", "ref", "pack", "description", "enabled"} for s in listed)


def test_list_filters(api):
    # Given one sensor disabled
    ticker = api.get("/v1/sensortypes/sensor_pack.TickerSensor").json
    api.put_json(f"/v1/sensortypes/{ticker['id']}", {"enabled": False})
    # Then the filters StackStorm declares select by pack, name, trigger type and enabled
    assert len(api.get("/v1/sensortypes?pack=sensor_pack").json) == 3
    assert api.get("/v1/sensortypes?pack=core").json == []
    assert [s["ref"] for s in api.get("/v1/sensortypes?name=PollerSensor").json] == ["sensor_pack.PollerSensor"]
    assert [s["ref"] for s in api.get("/v1/sensortypes?trigger=sensor_pack.watch").json] == [ticker["ref"]]
    assert [s["ref"] for s in api.get("/v1/sensortypes?enabled=false").json] == [ticker["ref"]]
    assert len(api.get("/v1/sensortypes?enabled=true").json) == 2
    assert [s["ref"] for s in api.get(f"/v1/sensortypes?id={ticker['id']}").json] == [ticker["ref"]]
    # And an explicit limit pages
    page = api.get("/v1/sensortypes?limit=1")
    assert len(page.json) == 1 and page.headers["X-Limit"] == "1"


def test_get_by_ref_or_id_and_404(api):
    # When a sensor type is asked for by ref, then by id
    by_ref = api.get("/v1/sensortypes/sensor_pack.TickerSensor").json
    by_id = api.get(f"/v1/sensortypes/{by_ref['id']}").json
    # Then both give it, with all its trigger types
    assert by_ref == by_id
    assert by_ref["trigger_types"] == ["sensor_pack.tick", "sensor_pack.watch"]
    # And an unknown one is StackStorm's 404
    missing = api.get("/v1/sensortypes/sensor_pack.Nothing", status=404)
    assert missing.json["faultstring"] == 'Resource with a reference or id "sensor_pack.Nothing" not found'
    api.get("/v1/sensortypes/5f0000000000000000000000", status=404)


def test_put_applies_only_enabled_and_tells_the_sensor_containers(api, registered):
    # Given a queue bound to the sensor exchange, as every sensor container has
    topology = Topology(registered.messaging.prefix)
    with make_connection(registered.messaging) as conn:
        queue = topology.broadcast_queue("sensor")(conn.default_channel)
        queue.declare()
        # When the CLI's disable round-trip is sent: the GET body minus ref, enabled false, other fields changed
        body = api.get("/v1/sensortypes/sensor_pack.TickerSensor").json
        body.pop("ref")
        sent = dict(body, enabled=False, description="changed", poll_interval=30)
        answer = api.put_json(f"/v1/sensortypes/{body['id']}", sent).json
        # Then only enabled is applied, and stored
        assert answer == dict(body, ref="sensor_pack.TickerSensor", enabled=False)
        assert SensorTypeDB.objects.get(ref="sensor_pack.TickerSensor").enabled is False
        # And an update event names the sensor type
        message = None
        for _ in range(200):
            message = queue.get(no_ack=True)
            if message is not None:
                break
            eventlet.sleep(0.01)
        assert message is not None and message.payload == {"id": body["id"]}
        assert message.delivery_info["routing_key"] == "update"
        queue.delete()
    # And a body without enabled enables it, as StackStorm's schema default does
    assert api.put_json("/v1/sensortypes/sensor_pack.TickerSensor", {}).json["enabled"] is True


def test_put_rejects_bad_bodies_and_system_pack_sensors(api):
    # When the body is not a sensor type
    bad_type = api.put_json("/v1/sensortypes/sensor_pack.TickerSensor", {"enabled": "no"}, status=400)
    unknown = api.put_json("/v1/sensortypes/sensor_pack.TickerSensor", {"enabled": False, "bogus": 1},
                           status=400)
    # Then it is a 400 naming the problem, and nothing changes
    assert "enabled" in bad_type.json["faultstring"] and "bogus" in unknown.json["faultstring"]
    assert api.get("/v1/sensortypes/sensor_pack.TickerSensor").json["enabled"] is True
    # When a sensor of a system pack is changed
    system = SensorTypeDB(name="FileWatchSensor", pack="linux", class_name="FileWatchSensor",
                          entry_point="file_watch_sensor.py", ref="linux.FileWatchSensor",
                          uid="sensor_type:linux:FileWatchSensor")
    system.save()
    refused = api.put_json("/v1/sensortypes/linux.FileWatchSensor", {"enabled": False}, status=400)
    # Then StackStorm's refusal comes back
    assert refused.json["faultstring"] == "Resources belonging to system level packs can't be manipulated"
    # And an unknown sensor is a 404
    api.put_json("/v1/sensortypes/sensor_pack.Nothing", {"enabled": False}, status=404)


def st2(api_url: str, *args: str):
    """`st2 <args>` through click's CliRunner, against api_url, with no user config."""
    return CliRunner().invoke(cli, ["--api-url", api_url, "--skip-config", *args], catch_exceptions=False)


def test_st2_sensor_commands(api_url):
    # When the sensors are listed
    listed = st2(api_url, "sensor", "list")
    # Then StackStorm's columns show every sensor
    assert listed.exit_code == 0, listed.output
    assert re.search(r"\|\s*ref\s*\|\s*pack\s*\|\s*description\s*\|\s*enabled\s*\|", listed.output)
    assert re.search(r"\|\s*sensor_pack\.TickerSensor\s*\|\s*sensor_pack\s*\|", listed.output)
    assert {s["ref"] for s in json.loads(st2(api_url, "sensor", "list", "-p", "sensor_pack", "-j").output)} == set(REFS)
    # And one is shown in detail, first rows in StackStorm's order
    shown = st2(api_url, "sensor", "get", "sensor_pack.PollerSensor")
    assert shown.exit_code == 0
    assert [line.split("|")[1].strip() for line in shown.output.splitlines()[3:6]] == ["id", "uid", "ref"]
    # When it is disabled, then enabled
    disabled = json.loads(st2(api_url, "sensor", "disable", "sensor_pack.PollerSensor", "-j").output)
    assert disabled["enabled"] is False
    assert SensorTypeDB.objects.get(ref="sensor_pack.PollerSensor").enabled is False
    enabled = st2(api_url, "sensor", "enable", "sensor_pack.PollerSensor")
    # Then each is applied and shown
    assert enabled.exit_code == 0 and re.search(r"\|\s*enabled\s*\|\s*True\s*\|", enabled.output)
    # And an unknown sensor is an error
    missing = st2(api_url, "sensor", "get", "sensor_pack.Nothing")
    assert missing.exit_code == 1 and "not found" in missing.output


def test_official_st2client_sensor_commands(api_url, official_st2):
    # Given the official StackStorm CLI 3.9.0; When its sensor commands run; Then each succeeds
    # (the reads side by side: each is a ~1 s process)
    listed, table, got = side_by_side([lambda args=args: run_official(args, api_url) for args in (
        ["sensor", "list", "-j"], ["sensor", "list"], ["sensor", "get", "sensor_pack.TickerSensor", "-j"])])
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert {s["ref"] for s in json.loads(listed.stdout)} == set(REFS)
    assert table.returncode == 0 and "sensor_pack.TickerSensor" in table.stdout, table.stdout + table.stderr
    assert got.returncode == 0 and json.loads(got.stdout)["class_name"] == "TickerSensor", got.stderr
    disabled = run_official(["sensor", "disable", "sensor_pack.TickerSensor", "-j"], api_url)
    assert disabled.returncode == 0, disabled.stdout + disabled.stderr
    assert json.loads(disabled.stdout)["enabled"] is False
    assert SensorTypeDB.objects.get(ref="sensor_pack.TickerSensor").enabled is False
    enabled = run_official(["sensor", "enable", "sensor_pack.TickerSensor"], api_url)
    assert enabled.returncode == 0 and "ERROR" not in enabled.stdout, enabled.stdout + enabled.stderr
    assert SensorTypeDB.objects.get(ref="sensor_pack.TickerSensor").enabled is True
