"""Database commands and bus messages per execution, counted in one process.

Run from the repository root:

    .venv/bin/python bench/roundtrips.py [--runs 30] [--bus filesystem://|amqp://...] [--action core.noop]

It starts an embedded database in a temporary folder, registers the core pack
and dummy_pack, and runs in this one process (green threads, as the services
run) the REST API (through WSGI calls, no socket), an action runner, a rules
engine and a workflow engine. Every database command is counted by pymongo's
command monitoring and every message by the publisher, and each is charged to
the component whose code issued it: the innermost frame of a service module
(st2api, the scheduler, the dispatcher, the notifier, the rules engine, the
workflow engine) names the component, the innermost st2common.services module
(or policy edge) names what it was doing.

Each run POSTs one execution (with --burst: all --runs of them back to back,
so the services handle many at once), waits for its terminal status, then for the
platform to go quiet (no command for QUIET seconds: the notifier, the rules
engine and the workflow engine have dealt with it). Heartbeats and sweeps are
left out. The figures are per execution, after WARM_UP runs that fill caches.
"""

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from pymongo import monitoring  # noqa: E402

# Components by module, innermost match first.
COMPONENTS = (
    ("st2api", "api"),
    ("st2actionrunner.scheduler", "scheduler"),
    ("st2actionrunner.dispatcher", "dispatcher"),
    ("st2actionrunner.notifier", "notifier"),
    ("st2actionrunner.actiontriggers", "notifier"),
    ("st2rulesengine.batches", "rules engine"),
    ("st2common.persistence.batches", "batched reads (scheduler, notifier)"),
    ("st2rulesengine", "rules engine"),
    ("st2workflowengine", "workflow engine"),
    ("st2common.services.workers", "heartbeat"),
    ("st2common.services.sweep", "sweep"),
    ("bench.roundtrips", "bench"),
    ("__main__", "bench"),
)
BACKGROUND = {"heartbeat", "sweep", "bench"}
WARM_UP = 3
QUIET = 0.15
TERMINAL = {"succeeded", "failed", "timeout", "canceled", "abandoned"}


def _component(frame) -> tuple[str, str]:
    """(component, use) of the code that issued a call, from its stack."""
    use = ""
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not use and (module.startswith("st2common.services.") or module == "st2actionrunner.policies"):
            use = module.rsplit(".", 1)[1]
        for prefix, name in COMPONENTS:
            if module == prefix or module.startswith(prefix + "."):
                return name, use
        frame = frame.f_back
    return "other", use


class Tally:
    """Counts charged to (component, use, what), switched on and off by the bench."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.on = False
        self.last = time.monotonic()
        # --timeline: (seconds, component, use, what) of each command and message, in order.
        self.events: list[tuple[float, str, str, str]] | None = None

    def add(self, what: str) -> None:
        self.last = time.monotonic()
        if not self.on:
            return
        component, use = _component(sys._getframe(2))
        self.counts[(component, use, what)] += 1
        if self.events is not None:
            self.events.append((time.perf_counter(), component, use, what))


TALLY = Tally()


class CommandCounter(monitoring.CommandListener):
    """Counts every database command with its collection."""

    def started(self, event) -> None:
        if event.command_name in ("ping", "hello", "isMaster", "ismaster", "endSessions"):
            return
        collection = event.command.get(event.command_name)
        TALLY.add(f"db {event.command_name} {collection if isinstance(collection, str) else ''}".strip())

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


monitoring.register(CommandCounter())

from webtest import TestApp  # noqa: E402

from e2e.conftest import install_pack  # noqa: E402
from st2actionrunner.cmd import ActionRunnerService  # noqa: E402
from st2common import config  # noqa: E402
from st2common.content import bootstrap  # noqa: E402
from st2common.models.db.execution import ExecutionDB  # noqa: E402
from st2common.persistence import db as database  # noqa: E402
from st2common.persistence.access import Access  # noqa: E402
from st2common.persistence.embedded import EmbeddedMongo  # noqa: E402
from st2common.transport.connection import make_connection  # noqa: E402
from st2common.transport.publisher import Publisher  # noqa: E402
from st2common.transport.topology import Topology  # noqa: E402
from st2rulesengine.cmd import RulesEngineService  # noqa: E402
from st2workflowengine.cmd import WorkflowEngineService  # noqa: E402
from testsupport import api_app, free_port  # noqa: E402


class CountingPublisher(Publisher):
    """The publisher, counting each message by exchange and routing key."""

    def publish_to(self, exchange, routing_key, body, headers=None) -> None:
        TALLY.add(f"bus {exchange.name.split('.', 1)[-1] or 'queue'} {routing_key}")
        super().publish_to(exchange, routing_key, body, headers)


def wait_quiet(deadline: float) -> None:
    """Until no command was issued for QUIET seconds."""
    while time.monotonic() - TALLY.last < QUIET and time.monotonic() < deadline:
        eventlet.sleep(0.02)


def run_together(api: TestApp, action: str, parameters: dict, count: int = 1) -> None:
    """POST count executions, wait for each to reach a terminal status, then for the platform to go quiet."""
    ids = [api.post_json("/v1/executions", {"action": action, "parameters": parameters}, status=201).json["id"]
           for _ in range(count)]
    deadline = time.monotonic() + 30 + count * 0.2
    executions = Access(ExecutionDB)
    for ident in ids:
        while True:
            # Read here, not through the API: charged to the bench, which is left out.
            status = executions.get_by_id(ident).status
            if status in TERMINAL:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"execution {ident} still {status}")
            eventlet.sleep(0.005)
        if status != "succeeded":
            raise RuntimeError(f"{action}: {status}")
    wait_quiet(deadline)


def report(counts: Counter, runs: int, action: str) -> None:
    """Markdown tables: per component, and per component, use and command."""
    per = Counter()
    for (component, _, what), count in counts.items():
        if component not in BACKGROUND:
            per[(component, what.split()[0])] += count
    components = sorted({component for component, _ in per})
    print(f"{action}, {runs} runs, per execution:")
    print()
    print("| component | db commands | bus messages |")
    print("| --- | --- | --- |")
    for component in components:
        print(f"| {component} | {per[(component, 'db')] / runs:.1f} | {per[(component, 'bus')] / runs:.1f} |")
    db = sum(count for (_, kind), count in per.items() if kind == "db") / runs
    bus = sum(count for (_, kind), count in per.items() if kind == "bus") / runs
    print(f"| **total** | **{db:.1f}** | **{bus:.1f}** |")
    print()
    print("| component | use | command or message | per execution |")
    print("| --- | --- | --- | --- |")
    for (component, use, what), count in sorted(counts.items()):
        if component not in BACKGROUND:
            print(f"| {component} | {use} | {what} | {count / runs:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--bus", default="filesystem://", help="bus URL (filesystem:// or amqp://...)")
    parser.add_argument("--action", default=["core.noop"], help="action ref, then k=v parameters",
                        nargs="+")
    parser.add_argument("--burst", action="store_true",
                        help="POST the --runs executions back to back instead of one at a time")
    parser.add_argument("--profile", metavar="PATH", help="also write a cProfile of the counted runs to PATH")
    parser.add_argument("--timeline", action="store_true",
                        help="print when each command and message of the last run was issued, in ms from its POST")
    args = parser.parse_args(argv)
    action, parameters = args.action[0], dict(item.split("=", 1) for item in args.action[1:])

    root = Path(tempfile.mkdtemp(prefix="st2rt-"))
    mongo = EmbeddedMongo(root / "db" / "st2.sqlite", free_port(), root / "run")
    mongo.start(die_with_parent=True)
    services = []
    prefix = f"st2rt{uuid.uuid4().hex[:8]}"
    try:
        for pack in ("dummy_pack", "wf_pack"):
            install_pack(pack, root / "packs")
        settings = config.load(path=None, env={
            "ST2_SYSTEM__BASE_PATH": str(root),
            "ST2_MESSAGING__URL": args.bus,
            "ST2_MESSAGING__PREFIX": prefix,
            "ST2_MESSAGING__FILESYSTEM_PATH": str(root / "var" / "bus"),
            "ST2_DATABASE__HOST": mongo.host, "ST2_DATABASE__PORT": str(mongo.port),
            "ST2_DATABASE__DB_NAME": "st2",
            "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(REPO / "contrib" / "packs"),
            "ST2_CONTENT__PACKS_BASE_PATHS": str(root / "packs"),
        })
        database.connect(settings)
        publisher = CountingPublisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))
        publisher.declare_work_queues()
        bootstrap.register(settings, kinds=["runners", "actions", "configs"])
        for cls in (ActionRunnerService, RulesEngineService, WorkflowEngineService):
            services.append(cls(settings, publisher))
            services[-1].start()
        api = TestApp(api_app(settings, publisher))
        for _ in range(WARM_UP):
            run_together(api, action, parameters)
        TALLY.counts.clear()
        TALLY.on = True
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        if args.burst:
            run_together(api, action, parameters, args.runs)
        else:
            for run in range(args.runs):
                if args.timeline and run == args.runs - 1:
                    TALLY.events = [(time.perf_counter(), "bench", "", "POST")]
                run_together(api, action, parameters)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        TALLY.on = False
        report(TALLY.counts, args.runs, " ".join(args.action) + (" (POSTed back to back)" if args.burst else ""))
        if TALLY.events:
            print()
            print("| ms after POST | component | use | command or message |")
            print("| ---: | --- | --- | --- |")
            start = TALLY.events[0][0]
            for stamp, component, use, what in TALLY.events[1:]:
                if component not in BACKGROUND:
                    print(f"| {(stamp - start) * 1000:.1f} | {component} | {use} | {what} |")
    finally:
        for service in reversed(services):
            service.stop()
        if args.bus.startswith("amqp"):
            from e2e.conftest import delete_topology

            delete_topology(prefix, args.bus)
        mongo.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    os.environ.pop("ST2_CONFIG_PATH", None)
    raise SystemExit(main())
