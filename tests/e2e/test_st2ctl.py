"""st2ctl as operators use it: start, status, stop, bad configs, RabbitMQ, a dead database.

Each test writes its own config in a temporary folder (free ports, its own var/)
and runs st2ctl as a subprocess with the interpreter running the tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pymongo
import pytest

from e2e.conftest import (DB_SERVER, RABBITMQ_URL, REPO, SERVICES, Platform, delete_topology, listening,
                          rabbitmq_or_skip)
from st2common.supervisor import stop_families
from st2common.util.process import pid_alive

pytestmark = pytest.mark.e2e


@pytest.fixture
def make_platform(tmp_path):
    """Build platforms; each is stopped at teardown, and nothing of it may survive."""
    made: list[Platform] = []

    def make(**kwargs) -> Platform:
        platform = Platform(tmp_path / f"p{len(made)}", **kwargs)
        made.append(platform)
        return platform

    yield make
    for platform in made:
        pids = {name: platform.pid(name) for name in SERVICES + (DB_SERVER,)}
        platform.st2ctl("stop")
        leftover = {name: pid for name, pid in pids.items() if pid and pid_alive(pid)}
        stop_families(leftover, grace=1.0)
        assert not leftover, f"st2ctl stop left {leftover} running"


def assert_all_up(platform: Platform) -> None:
    code, states, output = platform.states()
    assert code == 0, output
    for name in SERVICES + (DB_SERVER,):
        assert states.get(name) in ("running", "ready"), output
    for name in SERVICES:
        status = platform.status_file(name)
        assert status["state"] == "ready", status
        assert status["pid"] == platform.pid(name)


def assert_all_gone(platform: Platform, pids: dict[str, int]) -> None:
    for name, pid in pids.items():
        assert not pid_alive(pid), f"{name} (pid {pid}) is still alive"
        assert platform.pid(name) is None, f"{name} left its pid file"
    assert not listening(platform.db_port)
    assert not listening(platform.api_port)


def test_start_status_stop_on_the_embedded_default(make_platform):
    # Given a config on the embedded database and the filesystem bus, and a stale pid file
    platform = make_platform()
    run = platform.root / "var" / "run"
    run.mkdir(parents=True)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True)
    (run / "st2api.pid").write_text(finished.stdout)

    # When the platform is started
    started = platform.st2ctl("start")

    # Then every process runs and reports ready, the API answers, and content is registered
    assert started.returncode == 0, started.stderr
    assert_all_up(platform)
    with urllib.request.urlopen(f"http://127.0.0.1:{platform.api_port}/", timeout=5) as response:
        assert response.status == 200
        assert "version" in json.loads(response.read())
    client = pymongo.MongoClient("127.0.0.1", platform.db_port, serverSelectionTimeoutMS=3000)
    try:
        assert client.st2.runner_type_d_b.count_documents({}) > 0
        if any((REPO / "contrib" / "packs").glob("*/pack.yaml")):
            assert client.st2.pack_d_b.count_documents({}) > 0
    finally:
        client.close()

    # When start is run again, Then it is harmless: same processes, still ready
    pids = {name: platform.pid(name) for name in SERVICES + (DB_SERVER,)}
    again = platform.st2ctl("start")
    assert again.returncode == 0, again.stderr
    assert {name: platform.pid(name) for name in pids} == pids

    # When the platform is stopped, Then no process of it is left and nothing listens
    stopped = platform.st2ctl("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert_all_gone(platform, pids)
    code, states, output = platform.states()
    assert code != 0
    assert all(states[name] == "stopped" for name in SERVICES + (DB_SERVER,)), output


@pytest.mark.parametrize("options,named", [
    ({"bus_url": "amqp//x"}, "[messaging] url"),
    ({"extra": "[actionrunner]\nstream_ouptut = True\n"}, "stream_ouptut"),
])
def test_bad_config_fails_start_with_one_line(make_platform, options, named):
    # Given a config with a malformed URL or a misspelt option
    platform = make_platform(**options)

    # When st2ctl start runs
    result = platform.st2ctl("start")

    # Then it fails at once with one line naming the option, and starts nothing
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert not list(platform.root.glob("var/run/*.pid"))


@pytest.mark.rabbitmq
def test_same_services_start_on_rabbitmq_by_config_alone(make_platform):
    # Given RabbitMQ, and a config that differs from the embedded one only in [messaging]
    rabbitmq_or_skip()
    platform = make_platform(bus_url=RABBITMQ_URL)
    try:
        # When the platform is started
        started = platform.st2ctl("start")
        # Then every service reports ready on the broker, and stop leaves nothing behind
        assert started.returncode == 0, started.stderr
        assert_all_up(platform)
        pids = {name: platform.pid(name) for name in SERVICES + (DB_SERVER,)}
        assert platform.st2ctl("stop").returncode == 0
        assert_all_gone(platform, pids)
    finally:
        delete_topology(platform.prefix)


def test_status_names_the_database_when_its_server_dies(make_platform):
    # Given a running platform
    platform = make_platform()
    started = platform.st2ctl("start")
    assert started.returncode == 0, started.stderr

    # When the database server is killed
    db_pid = platform.pid(DB_SERVER)
    os.kill(db_pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(db_pid) and time.monotonic() < deadline:
        time.sleep(0.02)

    # Then status fails, shows the server dead and names the database as unreachable
    code, states, output = platform.states()
    assert code != 0
    assert states[DB_SERVER] == "dead", output
    assert states["database"] == "unreachable:", output
    assert f"127.0.0.1:{platform.db_port}" in output.splitlines()[-2]
    for name in SERVICES:
        line = next(line for line in output.splitlines() if line.startswith(name + " "))
        assert "cannot reach database" in line, output

    # And stop still stops everything it started
    pids = {name: platform.pid(name) for name in SERVICES}
    assert platform.st2ctl("stop").returncode == 0
    assert_all_gone(platform, pids)


def test_stop_kills_the_whole_family(tmp_path):
    # Given a leader in its own session whose children outlive it: one ignores SIGTERM,
    # one moved to a session of its own
    children = tmp_path / "children"
    leader = subprocess.Popen([sys.executable, "-c", f"""
import signal, subprocess, sys, time
stubborn = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"],
    stdout=subprocess.PIPE, text=True)
stubborn.stdout.readline()
detached = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
open({str(children)!r}, "w").write(f"{{stubborn.pid}} {{detached.pid}}")
time.sleep(60)
"""], start_new_session=True)
    deadline = time.monotonic() + 10
    while not (children.exists() and children.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = [leader.pid] + [int(pid) for pid in children.read_text().split()]

    # When its family is stopped with a short grace period
    killed = stop_families({"leader": leader.pid}, grace=0.5)
    leader.wait(timeout=5)

    # Then every member is gone, the stubborn one by SIGKILL
    assert killed == ["leader"]
    assert [pid for pid in pids if pid_alive(pid)] == []
