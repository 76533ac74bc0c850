"""The workflow tests' platform: wf_pack registered, an action runner and a workflow engine consuming
in the test's process, the API served in a green thread, and the CLI invoked in-process.

    from workflowsupport import api_url, embedded, platform  # noqa: F401 (fixtures)
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import eventlet
import pytest
from click.testing import CliRunner
from eventlet import wsgi

from st2actionrunner.cmd import ActionRunnerService
from st2client.cli import cli
from st2common import statuses
from st2common.content import bootstrap
from st2common.models.db.execution import ExecutionDB
from st2common.persistence import db as database
from st2common.persistence.access import Access
from st2common.services import executions
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from st2workflowengine.cmd import WorkflowEngineService
from testsupport import api_app, make_settings

REPO = Path(__file__).resolve().parents[1]
FIXTURE_PACK = REPO / "tests" / "fixtures" / "packs" / "wf_pack"
DEADLINE = 20.0


class Platform:
    """The action runner and the workflow engine of this test, and a caller of the use-cases."""

    def __init__(self, settings, publisher: Publisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self.runner = ActionRunnerService(settings, publisher)
        self.engines: list[WorkflowEngineService] = []
        self.executions = Access(ExecutionDB)

    def start_engine(self, **options) -> WorkflowEngineService:
        """One more workflow engine consuming in this process."""
        engine = WorkflowEngineService(self.settings, self.publisher, **options)
        engine.start()
        self.engines.append(engine)
        return engine

    def request(self, ref: str, parameters: dict | None = None) -> ExecutionDB:
        """Request an action as the API would."""
        return executions.request(self.publisher, ref, parameters or {})

    def wait_for(self, execution_id, wanted, timeout: float = DEADLINE) -> ExecutionDB:
        """Poll the record until its status is one of wanted (a deadline, not a sleep)."""
        wanted = {wanted} if isinstance(wanted, str) else set(wanted)
        deadline = time.monotonic() + timeout
        while True:
            execution = self.executions.get_by_id(execution_id)
            if execution.status in wanted:
                return execution
            if time.monotonic() > deadline:
                raise AssertionError(f"execution {execution_id} is {execution.status}, not {sorted(wanted)}")
            time.sleep(0.005)

    def run(self, ref: str, parameters: dict | None = None, timeout: float = DEADLINE) -> ExecutionDB:
        """Request an action and wait until it completes."""
        return self.wait_for(self.request(ref, parameters).pk, statuses.COMPLETED, timeout)

    def children(self, execution: ExecutionDB) -> list[ExecutionDB]:
        """The execution's children, oldest first."""
        return self.executions.query({"parent": str(execution.pk)}, order_by=["start_timestamp"])

    def task_names(self, execution: ExecutionDB) -> list[str]:
        """The task names of the execution's children, oldest first."""
        return [c.context["orquesta"]["task_name"] for c in self.children(execution)]

    def wait_for_task(self, execution: ExecutionDB, task_name: str, status: str) -> ExecutionDB:
        """The child of task_name once it has status (a deadline, not a sleep)."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            for child in self.children(execution):
                if child.context["orquesta"]["task_name"] == task_name and child.status == status:
                    return child
            time.sleep(0.01)
        raise AssertionError(f"task {task_name} of {execution.pk} never got {status}")


def start_platform(bus_url: str, tmp_path: Path, embedded_mongo, pack: Path | None = FIXTURE_PACK):
    """pack (wf_pack by default) and the shipped packs registered, cleanly; an action runner and a
    workflow engine consuming here."""
    packs = tmp_path / "packs"
    packs.mkdir(exist_ok=True)
    if pack is not None:
        shutil.copytree(pack, packs / pack.name)
    settings = make_settings(tmp_path, embedded_mongo, bus_url, {
        "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(REPO / "contrib" / "packs"),
        "ST2_CONTENT__PACKS_BASE_PATHS": str(packs),
    })
    client = database.connect(settings)
    publisher = Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
    publisher.declare_work_queues()
    report = bootstrap.register(settings, kinds=["runners", "actions"])
    assert not report.errors, report.errors
    platform = Platform(settings, publisher)
    platform.runner.start()
    platform.start_engine()
    yield platform
    for engine in platform.engines:
        engine.stop()
    platform.runner.stop()
    publisher.close()
    client.drop_database(settings.database.db_name)
    database.disconnect()


@pytest.fixture
def platform(bus_settings, tmp_path, embedded_mongo):
    """The platform on each bus in turn: for what the bus changes (hops, lost messages, restarts)."""
    yield from start_platform(bus_settings.messaging.url, tmp_path, embedded_mongo)


@pytest.fixture
def embedded(tmp_path, embedded_mongo):
    """The platform on the embedded filesystem bus only: for what does not depend on the bus."""
    yield from start_platform("filesystem://", tmp_path, embedded_mongo)


def serve_api(platform: Platform):
    """The platform's API on a free port, served in a green thread, until the generator is closed."""
    sock = eventlet.listen(("127.0.0.1", 0))
    server = eventlet.spawn(wsgi.server, sock, api_app(platform.settings, platform.publisher), log_output=False)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server.kill()
    sock.close()


@pytest.fixture
def api_url(embedded):
    """The API of the embedded platform on a free port, served in a green thread."""
    yield from serve_api(embedded)


def st2(api_url: str, *args: str):
    """Run the project's `st2` CLI in-process against api_url, on a terminal as wide as the official one's."""
    return CliRunner().invoke(cli, ["--api-url", api_url, "--skip-config", *args], catch_exceptions=False,
                              env={"COLUMNS": "200"})
