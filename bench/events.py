"""Events benchmark: the rules engine in this process (rates, latency, database commands), then a webhook
through a whole platform to its core.noop execution's end.

    .venv/bin/python bench/events.py [--bus filesystem|amqp] [--rules 100] [--instances 2000] [--pings 50]
                                     [--webhooks 50] [--skip-engine | --skip-platform]

Part 1: its own nx-27017 in a temporary folder, the core pack, a trigger type
``bench.alert`` and --rules enabled rules on it, each with two criteria
(``trigger.count equals <n>``, ``trigger.severity startswith crit``; --scan
swaps them, out of the equality index's reach) and a templated core.echo
request; one rules engine (RulesEngineService) in this process, no action
runner (requested executions stay requested).

- matched/s: --instances dispatched while no engine consumes, then drained by
  the engine, each enforced by exactly one rule; from the engine's start to
  the last instance processed. evaluated/s: the same, no rule matching. "once
  started": the same count over the time after the engine's start() returned
  (its rule index loaded, its consumer up: about 130 ms, paid once per
  process), the rate a running engine sustains.
  Before the engine starts, what this process has loaded is frozen out of
  the garbage collector (gc.freeze), as st2rulesengine's process does once
  started.
- dispatch/s: triggerinstances.dispatch while nobody consumes.
- CPU ms per instance of this process (engine plus a cheap poll) and of
  nx-27017 while draining: steadier than the rates on a busy machine.
- commands per instance (pymongo command monitoring) of dispatch, and of the
  engine while draining (its start included); the bench's polls are not counted.
- dispatch -> enforcement stored, one instance at a time: "polled" reads the
  enforcement every 0.5 ms (taking turns with the engine in this process);
  "unwatched" sleeps 0.2 s, then takes the enforcement's enforced_at (set just
  before it is stored; ms resolution). Median and p95 of --pings each.

Part 2 (not with --skip-platform): a platform started by st2ctl in a temporary
folder (tests/e2e/conftest.py's Platform), a rule on the webhook ``bench/noop``
running core.noop, and --webhooks POSTs one at a time after 3 warm-up posts.
"unwatched": POST, sleep 0.3 s, read the execution: end_timestamp minus the
wall clock before the POST, split at the instance's occurrence_time and the
execution's start_timestamp into the API, the rules engine (with the trace
writes and the bus hop) and the action runner; "polled": GET the newest
core.noop every 1 ms until it is terminal (the loop competes for the CPU).
"""

from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import greenlet  # noqa: E402
import requests  # noqa: E402
from pymongo import monitoring  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from e2e.conftest import Platform, delete_topology, free_port  # noqa: E402
from st2common import config, statuses  # noqa: E402
from st2common.content import bootstrap  # noqa: E402
from st2common.models.db.enforcement import RuleEnforcementDB  # noqa: E402
from st2common.models.db.rule import RuleDB  # noqa: E402
from st2common.models.db.trigger import TriggerInstanceDB, TriggerTypeDB  # noqa: E402
from st2common.persistence import db as database  # noqa: E402
from st2common.persistence.access import Access  # noqa: E402
from st2common.persistence.embedded import EmbeddedMongo  # noqa: E402
from st2common.services import triggerinstances, triggers, triggertypes  # noqa: E402
from st2common.transport import memfolder  # noqa: E402
from st2common.transport.connection import make_connection  # noqa: E402
from st2common.transport.publisher import Publisher  # noqa: E402
from st2common.transport.topology import Topology  # noqa: E402
from st2rulesengine.cmd import RulesEngineService  # noqa: E402

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
ALERT = "bench.alert"
HOOK = "bench/noop"
TERMINAL = {"succeeded", "failed", "timeout", "canceled", "abandoned"}
WARM_UP = 3


class Commands(monitoring.CommandListener):
    """Counts database commands by (command, collection), except those of the bench's own green thread."""

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.bench = greenlet.getcurrent()

    def started(self, event) -> None:
        if greenlet.getcurrent() is self.bench:
            return
        target = event.command.get(event.command_name)
        self.counts[(event.command_name, target if isinstance(target, str) else "")] += 1

    def succeeded(self, event) -> None:
        """Nothing to count."""

    failed = succeeded

    def take(self) -> collections.Counter:
        """The counts so far, starting again from zero."""
        counts, self.counts = self.counts, collections.Counter()
        return counts


COMMANDS = Commands()
monitoring.register(COMMANDS)


def settings_for(folder: Path, mongo: EmbeddedMongo, bus_url: str):
    return config.load(path=None, env={
        "ST2_SYSTEM__BASE_PATH": str(folder),
        "ST2_DATABASE__HOST": mongo.host,
        "ST2_DATABASE__PORT": str(mongo.port),
        "ST2_DATABASE__DB_NAME": "st2bench",
        "ST2_MESSAGING__URL": bus_url,
        "ST2_MESSAGING__PREFIX": f"st2bench{uuid.uuid4().hex[:8]}",
        "ST2_MESSAGING__FILESYSTEM_PATH": str(folder / "bus"),
        "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(REPO / "contrib" / "packs"),
        "ST2_CONTENT__PACKS_BASE_PATHS": str(folder / "packs"),
        "ST2_LOG__LEVEL": "WARNING",
        # Settings to try (ST2_MESSAGING__PREFETCH_COUNT=128, say) come from this process's environment.
        **{name: value for name, value in os.environ.items() if name.startswith("ST2_")},
    })


def criteria(number: int, scan: bool) -> dict:
    """The two criteria of rule number; with scan, the equals comes second, out of the index's reach."""
    equals = ("trigger.count", {"type": "equals", "pattern": number})
    prefix = ("trigger.severity", {"type": "startswith", "pattern": "crit"})
    return dict([prefix, equals] if scan else [equals, prefix])


def prepare(settings, publisher: Publisher, rules: int, scan: bool) -> None:
    """The core pack, the bench.alert trigger type and the rules."""
    bootstrap.register(settings, kinds=["runners", "actions"])
    triggertypes.register_system_trigger_types(publisher)
    alert = TriggerTypeDB(name="alert", pack="bench", parameters_schema={}, payload_schema={
        "type": "object", "properties": {"count": {"type": "integer"}, "severity": {"type": "string"}}})
    alert.set_identity()
    Access(TriggerTypeDB).add_or_update(alert)
    trigger, _ = triggers.get_or_create_trigger(alert, {}, publisher)
    access = Access(RuleDB, publisher)
    for number in range(rules):
        rule = RuleDB(name=f"r{number}", pack="bench", enabled=True,
                      trigger={"type": ALERT, "parameters": {}, "ref": trigger.ref},
                      criteria=criteria(number, scan),
                      action={"ref": "core.echo", "parameters": {"message": "{{ trigger.host }} #" + str(number)}})
        rule.set_identity()
        access.add_or_update(rule)


def all_processed() -> bool:
    """True when no instance is left pending or processing (an indexed query, unlike a count)."""
    waiting = (statuses.TRIGGER_INSTANCE_PENDING, statuses.TRIGGER_INSTANCE_PROCESSING)
    return Access(TriggerInstanceDB).get(status__in=waiting) is None


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Drain:
    """What one drain measured: rates, CPU ms per instance of this process and of the database, commands."""

    dispatched: float
    processed: float
    # The rate over the time after the engine's start() returned.
    processed_once_started: float
    engine_cpu: float
    db_cpu: float
    dispatch_commands: collections.Counter
    engine_commands: collections.Counter


def drain(settings, publisher: Publisher, instances: int, rules: int, matching: bool, db_pid: int) -> Drain:
    """Dispatch instances with nobody consuming, then time one engine draining them."""
    Access(TriggerInstanceDB).delete_by({})
    severity = "critical" if matching else "info"
    COMMANDS.bench = None  # dispatch is what is measured here
    start = time.perf_counter()
    for i in range(instances):
        triggerinstances.dispatch(publisher, ALERT, {"count": i % rules, "severity": severity, "host": f"h{i}"})
    dispatch_rate = instances / (time.perf_counter() - start)
    COMMANDS.bench = greenlet.getcurrent()
    dispatch_commands = COMMANDS.take()
    engine = RulesEngineService(settings, publisher)
    # As st2rulesengine's process does once started: what is loaded so far stays out of full collections.
    gc.freeze()
    start = time.perf_counter()
    cpu, db_cpu = cpu_seconds(os.getpid()), cpu_seconds(db_pid)
    engine.start()
    started = time.perf_counter()
    try:
        while not all_processed():
            eventlet.sleep(0.05)
        end = time.perf_counter()
        rate, rate_once_started = instances / (end - start), instances / (end - started)
        cpu, db_cpu = cpu_seconds(os.getpid()) - cpu, cpu_seconds(db_pid) - db_cpu
    finally:
        engine.stop()
    engine_commands = COMMANDS.take()
    if matching:
        enforced = Access(RuleEnforcementDB).count({"status": statuses.ENFORCEMENT_SUCCEEDED})
        assert enforced >= instances, f"only {enforced} of {instances} instances were enforced"
    return Drain(dispatch_rate, rate, rate_once_started, cpu * 1000 / instances, db_cpu * 1000 / instances,
                 dispatch_commands, engine_commands)


def latency(settings, publisher: Publisher, pings: int, rules: int) -> tuple[list[float], list[float]]:
    """ms from dispatch to the enforcement stored, one instance at a time: (polled, unwatched)."""
    engine = RulesEngineService(settings, publisher)
    engine.start()
    enforcements = Access(RuleEnforcementDB)
    polled, unwatched = [], []
    try:
        for i in range(2 * pings):
            eventlet.sleep(0.02)
            payload = {"count": i % rules, "severity": "critical", "host": f"p{i}"}
            start, wall = time.perf_counter(), time.time()
            instance = triggerinstances.dispatch(publisher, ALERT, payload)
            if i % 2 == 0:
                while enforcements.get(trigger_instance_id=str(instance.pk)) is None:
                    eventlet.sleep(0.0005)
                polled.append((time.perf_counter() - start) * 1000)
                continue
            eventlet.sleep(0.2)
            enforcement = enforcements.get(trigger_instance_id=str(instance.pk))
            assert enforcement is not None, f"trigger instance {instance.pk} not enforced after 0.2 s"
            unwatched.append((enforcement.enforced_at.timestamp() - wall) * 1000)
    finally:
        engine.stop()
    return polled, unwatched


def spread(samples: list[float]) -> str:
    """median and p95 of ms samples."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return f"median {statistics.median(samples):6.2f}  p95 {p95:6.2f}  (n={len(samples)})"


def per_instance(counts: collections.Counter, instances: int) -> str:
    """Commands per instance, in all and by (command collection), biggest first."""
    total = sum(counts.values()) / instances
    parts = [f"{command} {collection} {n / instances:.2f}" for (command, collection), n in counts.most_common()
             if n / instances >= 0.005]
    return f"{total:.2f}: " + ", ".join(parts)


def engine_part(args) -> None:
    """Part 1: the rules engine in this process."""
    with tempfile.TemporaryDirectory(prefix="st2bench-events-") as tmp:
        folder = Path(tmp)
        mongo = EmbeddedMongo(folder / "st2.sqlite", free_port(), folder)
        mongo.start()
        settings = settings_for(folder, mongo, "filesystem://" if args.bus == "filesystem" else args.amqp_url)
        client = database.connect(settings)
        topology = Topology(settings.messaging.prefix)
        publisher = Publisher(make_connection(settings.messaging), topology)
        try:
            publisher.declare_work_queues()
            prepare(settings, publisher, args.rules, args.scan)
            matched = drain(settings, publisher, args.instances, args.rules, True, mongo.process.pid)
            evaluated = drain(settings, publisher, args.instances, args.rules, False, mongo.process.pid)
            polled, unwatched = latency(settings, publisher, args.pings, args.rules)
            order = "startswith first (every rule evaluated)" if args.scan else "equals first (indexed)"
            print(f"bus {args.bus}, {args.rules} rules with 2 criteria each, {order}, {args.instances} instances")
            print(f"dispatch/s (nobody consuming)          {matched.dispatched:8.0f}")
            print(f"  commands per dispatch {per_instance(matched.dispatch_commands, args.instances)}")
            for name, result in (("matched/s (1 enforcement + request)", matched),
                                 ("evaluated/s (no rule matches)", evaluated)):
                print(f"{name:38} {result.processed:8.0f}   CPU ms per instance: engine "
                      f"{result.engine_cpu:5.2f}, database {result.db_cpu:5.2f}")
                print(f"  once started {result.processed_once_started:8.0f}/s")
                print(f"  engine commands per instance {per_instance(result.engine_commands, args.instances)}")
            print(f"dispatch -> enforcement stored, ms, polled     {spread(polled)}")
            print(f"dispatch -> enforcement stored, ms, unwatched  {spread(unwatched)}")
        finally:
            if args.bus == "amqp":
                with make_connection(settings.messaging) as connection:
                    topology.delete(connection.default_channel)
            publisher.close()
            client.drop_database(settings.database.db_name)
            database.disconnect()
            mongo.stop()
            # The filesystem bus keeps its messages in shared memory, outside the temporary folder.
            memfolder.clear_under(folder)


# -- part 2: a webhook through a whole platform -----------------------------------------------------

def stamp(text: str) -> float:
    """Seconds since the epoch of an API timestamp (2026-11-21T07:01:03.123000Z)."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Hook:
    """The REST calls of part 2, on one keep-alive session with the platform admin's credentials."""

    def __init__(self, platform: Platform) -> None:
        self.url = f"{platform.api_url}/v1"
        self.session = requests.Session()
        self.session.headers.update(platform.auth_headers())

    def call(self, method: str, path: str, expect: int, **kwargs) -> dict | list:
        response = self.session.request(method, f"{self.url}/{path}", timeout=30, **kwargs)
        if response.status_code != expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    def newest(self) -> dict | None:
        """The newest core.noop execution."""
        found = self.call("GET", "executions", 200, params={
            "action": "core.noop", "limit": 1, "include_attributes": "id,status,start_timestamp,end_timestamp,context"})
        return found[0] if found else None

    def post(self, n: int) -> None:
        """POST {"n": n} to the hook."""
        self.call("POST", f"webhooks/{HOOK}", 202, json={"n": n})

    def next_terminal(self, after: str | None, pause: float, timeout: float = 30.0) -> dict:
        """The first core.noop execution newer than after, once terminal."""
        deadline = time.monotonic() + timeout
        while True:
            execution = self.newest()
            if execution is not None and execution["id"] != after and execution["status"] in TERMINAL:
                return execution
            if time.monotonic() > deadline:
                raise RuntimeError(f"no new terminal core.noop execution after {timeout} s: {execution}")
            time.sleep(pause)


def webhook_part(args) -> None:
    """Part 2: webhook POST -> core.noop terminal, through a platform started by st2ctl."""
    root = Path(tempfile.mkdtemp(prefix="st2bench-webhook-"))
    platform = Platform(root, bus_url=args.amqp_url if args.bus == "amqp" else "filesystem://")
    try:
        started = platform.st2ctl("start")
        if started.returncode != 0:
            raise RuntimeError(started.stdout + started.stderr)
        hook = Hook(platform)
        hook.call("POST", "rules", 201, json={
            "name": "bench_noop", "pack": "default", "enabled": True,
            "trigger": {"type": "core.st2.webhook", "parameters": {"url": HOOK}},
            "action": {"ref": "core.noop"}})
        time.sleep(1.0)  # the rules engines take the new rule from its event
        last = None
        for n in range(WARM_UP):
            hook.post(n)
            last = hook.next_terminal(last and last["id"], 0.01)
        unwatched, polled, phases = [], [], {"API": [], "rules engine": [], "action runner": []}
        for n in range(args.webhooks):
            time.sleep(0.05)
            wall = time.time()
            hook.post(n)
            time.sleep(0.3)
            last = hook.next_terminal(last["id"], 0.01)
            instance = hook.call("GET", f"triggerinstances/{last['context']['trigger_instance']['id']}", 200)
            stored, requested, ended = (stamp(instance["occurrence_time"]), stamp(last["start_timestamp"]),
                                        stamp(last["end_timestamp"]))
            unwatched.append((ended - wall) * 1000)
            for name, (a, b) in zip(phases, ((wall, stored), (stored, requested), (requested, ended))):
                phases[name].append((b - a) * 1000)
        for n in range(args.webhooks):
            time.sleep(0.05)
            start = time.perf_counter()
            hook.post(n)
            last = hook.next_terminal(last["id"], 0.001)
            polled.append((time.perf_counter() - start) * 1000)
        print(f"webhook POST -> core.noop terminal, bus {args.bus}, ms")
        print(f"  unwatched  {spread(unwatched)}")
        print("    split (medians): " + ", ".join(f"{name} {statistics.median(ms):.1f}"
                                             for name, ms in phases.items()))
        print(f"  polled     {spread(polled)}")
    finally:
        platform.stop_and_check()
        if args.bus == "amqp":
            delete_topology(platform.prefix, args.amqp_url)
    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bus", choices=("filesystem", "amqp"), default="filesystem")
    parser.add_argument("--amqp-url", default=os.environ.get("ST2_TEST_RABBITMQ_URL", DEFAULT_AMQP_URL))
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--pings", type=int, default=50)
    parser.add_argument("--webhooks", type=int, default=50)
    parser.add_argument("--scan", action="store_true",
                        help="put the equals criterion second, so every rule is evaluated for every instance")
    parser.add_argument("--skip-engine", action="store_true", help="only part 2 (the webhook)")
    parser.add_argument("--skip-platform", action="store_true", help="only part 1 (the engine in this process)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f} at start")
    if not args.skip_engine:
        engine_part(args)
    if not args.skip_platform:
        webhook_part(args)
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
