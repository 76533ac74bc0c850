"""The platform as processes: a config in a temporary folder, driven through st2ctl.

Platform writes an st2.conf with free ports and its own var/, and runs st2ctl as
a subprocess with the interpreter running the tests. Every process it starts
(services, database server, runners' children) inherits a unique environment
mark, so a test can find what is left of it in /proc whatever session or parent
it ended up in. The session fixture `platform` is one started platform with the
shipped packs and dummy_pack registered; `api_url` is its REST API.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import kombu
import pytest
import requests

from st2common.supervisor import stop_families
from st2common.transport.topology import EXCHANGES, WORK_QUEUES
from st2common.util.process import pid_alive, processes_with_env, read_pid

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("st2api", "st2sensorcontainer", "st2rulesengine", "st2actionrunner", "st2workflowengine")
DB_SERVER = "nx-27017"
RABBITMQ_URL = os.environ.get("ST2_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
REQUIRE_RABBITMQ = os.environ.get("ST2_TEST_REQUIRE_RABBITMQ") == "1"
TEST_PACKS = REPO / "tests" / "fixtures" / "packs"
MARK_VARIABLE = "E2E_PLATFORM_MARK"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def install_pack(name: str, packs_path: Path) -> Path:
    """Copy tests/fixtures/packs/<name> into a packs folder; its path there."""
    return Path(shutil.copytree(TEST_PACKS / name, packs_path / name))


class Platform:
    """One platform's config in a temporary folder, driven through st2ctl."""

    def __init__(self, root: Path, bus_url: str = "filesystem://", extra: str = "",
                 packs: tuple[str, ...] = ()) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.db_port, self.api_port, self.auth_port = free_port(), free_port(), free_port()
        self.admin_password = f"e2e-{uuid.uuid4().hex[:12]}"
        self._token: str | None = None
        self.prefix = f"st2e{uuid.uuid4().hex[:10]}"
        self.mark = uuid.uuid4().hex
        for pack in packs:
            install_pack(pack, root / "var" / "packs")
        self.conf = root / "st2.conf"
        self.conf.write_text(f"""
[system]
base_path = {root}
[database]
embedded = True
port = {self.db_port}
db_name = st2
[messaging]
url = {bus_url}
prefix = {self.prefix}
[api]
port = {self.api_port}
[auth]
port = {self.auth_port}
[stream]
port = {free_port()}
[content]
system_packs_base_path = {REPO / "contrib" / "packs"}
{extra}
""")

    @property
    def api_url(self) -> str:
        """The REST API's base URL (no version suffix)."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def auth_url(self) -> str:
        """The auth endpoint's base URL."""
        return f"http://127.0.0.1:{self.auth_port}"

    def token(self) -> str:
        """A token of st2admin (whose password st2ctl set from ST2_ADMIN_PASSWORD), fetched once."""
        if self._token is None:
            response = requests.post(f"{self.auth_url}/tokens", json={}, timeout=10,
                                     auth=("st2admin", self.admin_password))
            assert response.status_code == 201, response.text
            self._token = response.json()["token"]
        return self._token

    def auth_env(self) -> dict[str, str]:
        """Environment variables that give a CLI the platform admin's credentials."""
        return {"ST2_AUTH_TOKEN": self.token(), "ST2_AUTH_URL": self.auth_url}

    def auth_headers(self) -> dict[str, str]:
        """HTTP headers that carry the platform admin's credentials."""
        return {"X-Auth-Token": self.token()}

    def st2ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run st2ctl with this config, in an environment free of ST2_* overrides."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("ST2_")}
        env[MARK_VARIABLE] = self.mark
        if self.admin_password is not None:
            env["ST2_ADMIN_PASSWORD"] = self.admin_password
        return subprocess.run([sys.executable, "-m", "st2common.ctl", "--config-file", str(self.conf), *args],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)

    def pid(self, name: str) -> int | None:
        return read_pid(self.root / "var" / "run" / f"{name}.pid")

    def status_file(self, name: str) -> dict:
        return json.loads((self.root / "var" / "run" / f"{name}.status").read_text())

    def states(self) -> tuple[int, dict[str, str], str]:
        """st2ctl status: (exit code, {process: state}, the whole output)."""
        result = self.st2ctl("status")
        states = {}
        for line in result.stdout.splitlines():
            name, _, rest = line.partition(" ")
            states[name] = rest.split()[0] if rest.split() else ""
        return result.returncode, states, result.stdout

    def processes(self) -> dict[int, str]:
        """{pid: command line} of every live process started by this platform, wherever it went."""
        return processes_with_env(MARK_VARIABLE, self.mark)

    def stop_and_check(self) -> None:
        """st2ctl stop, then fail if any process of this platform survived it (killing the survivors)."""
        pids = {name: self.pid(name) for name in SERVICES + (DB_SERVER,)}
        self.st2ctl("stop")
        leftover = {name: pid for name, pid in pids.items() if pid and pid_alive(pid)}
        stop_families(leftover, grace=1.0)
        strays = self.processes()
        for pid in strays:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        assert not leftover, f"st2ctl stop left {leftover} running"
        assert not strays, f"processes of the platform outlived st2ctl stop: {strays}"


def rabbitmq_or_skip() -> None:
    """Skip (or fail under ST2_TEST_REQUIRE_RABBITMQ=1) when no broker answers."""
    conn = kombu.Connection(RABBITMQ_URL, connect_timeout=2)
    try:
        conn.ensure_connection(max_retries=1, timeout=2)
    except Exception:
        if REQUIRE_RABBITMQ:
            pytest.fail(f"RabbitMQ is required (ST2_TEST_REQUIRE_RABBITMQ=1) but {RABBITMQ_URL} does not answer")
        pytest.skip("RabbitMQ does not answer at 127.0.0.1:5672")
    finally:
        conn.release()


def delete_topology(prefix: str, url: str = RABBITMQ_URL) -> None:
    """Remove this test's durable queues and exchanges from the broker."""
    with kombu.Connection(url, connect_timeout=2) as conn:
        channel = conn.default_channel
        for name in WORK_QUEUES:
            channel.queue_delete(f"{prefix}.{name}")
        for name in EXCHANGES:
            channel.exchange_delete(f"{prefix}.{name}")


def wait_for(predicate, timeout: float, interval: float = 0.02):
    """Poll predicate until it returns something truthy; that value, or the last one at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


@pytest.fixture(scope="session")
def platform(tmp_path_factory) -> Platform:
    """The whole platform started by st2ctl, shipped packs and dummy_pack registered; stopped at the end."""
    started = Platform(tmp_path_factory.mktemp("platform"), packs=("dummy_pack",))
    try:
        result = started.st2ctl("start")
        assert result.returncode == 0, result.stdout + result.stderr
        yield started
    finally:
        started.stop_and_check()


@pytest.fixture(scope="session")
def api_url(platform) -> str:
    """The running platform's REST API base URL."""
    return platform.api_url


@pytest.fixture(scope="module")
def events_platform(tmp_path_factory) -> Platform:
    """A platform of the module's own with sensor_pack and e2e_events registered (their sensors and timers run)."""
    started = Platform(tmp_path_factory.mktemp("events"), packs=("sensor_pack", "e2e_events"))
    try:
        result = started.st2ctl("start")
        assert result.returncode == 0, result.stdout + result.stderr
        yield started
    finally:
        started.stop_and_check()
