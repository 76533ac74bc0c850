"""Rules engine benchmark: trigger instances matched per second, and dispatch -> rule enforcement latency.

Run from the repository root:

    .venv/bin/python bench/events.py [--bus filesystem|amqp] [--rules 100] [--instances 2000] [--pings 50]

Starts its own nx-27017 on a free port in a temporary folder, registers the
core pack and a trigger type ``bench.alert``, and stores --rules enabled rules
on it, each with two criteria (``trigger.count equals <n>``, ``trigger.severity
startswith crit``; with --scan in the other order, which the engine's equality
index cannot use) and a templated core.echo request. One rules engine
(st2rulesengine's RulesEngineService) runs in this process; no action runner
runs, so requested executions stay requested.

- matched/s: --instances are dispatched while no engine consumes (they wait
  on the queue), then the engine starts and drains them: each instance is
  evaluated against every rule and enforced by exactly one (an enforcement,
  an execution request, trace links). Time from the engine's start to the
  last instance processed.
- evaluated/s: the same with payloads no rule matches (all rules evaluated,
  nothing enforced).
- dispatch/s: the rate of triggers.dispatch while nobody consumes.
- CPU ms per instance: what this process (the engine, plus a cheap poll) and
  the nx-27017 server burned per instance while draining; on a busy machine
  these say more than the rates, which depend on the CPU left over.
- latency: one instance at a time with the engine idle: from just before
  dispatch() to its rule enforcement being stored; median and p95 over --pings.
"""

from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from st2common import config, statuses  # noqa: E402
from st2common.content import bootstrap  # noqa: E402
from st2common.models.db.enforcement import RuleEnforcementDB  # noqa: E402
from st2common.models.db.rule import RuleDB  # noqa: E402
from st2common.models.db.trigger import TriggerInstanceDB, TriggerTypeDB  # noqa: E402
from st2common.persistence import db as database  # noqa: E402
from st2common.persistence.access import Access  # noqa: E402
from st2common.persistence.embedded import EmbeddedMongo  # noqa: E402
from st2common.services import triggers  # noqa: E402
from st2common.transport.connection import make_connection  # noqa: E402
from st2common.transport.publisher import Publisher  # noqa: E402
from st2common.transport.topology import Topology  # noqa: E402
from st2rulesengine.cmd import RulesEngineService  # noqa: E402

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
ALERT = "bench.alert"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    })


def criteria(number: int, scan: bool) -> dict:
    """The two criteria of rule number; with scan, the equals comes second, out of the index's reach."""
    equals = ("trigger.count", {"type": "equals", "pattern": number})
    prefix = ("trigger.severity", {"type": "startswith", "pattern": "crit"})
    return dict([prefix, equals] if scan else [equals, prefix])


def prepare(settings, publisher: Publisher, rules: int, scan: bool) -> None:
    """The core pack, the bench.alert trigger type and the rules."""
    bootstrap.register(settings, kinds=["runners", "actions"])
    triggers.register_system_trigger_types(publisher)
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


class Drain:
    """What one drain measured: rates, and CPU ms per instance of this process and of the database."""

    def __init__(self, dispatched: float, processed: float, engine_cpu: float, db_cpu: float) -> None:
        self.dispatched, self.processed, self.engine_cpu, self.db_cpu = dispatched, processed, engine_cpu, db_cpu


def drain(settings, publisher: Publisher, instances: int, rules: int, matching: bool, db_pid: int) -> Drain:
    """Dispatch instances with nobody consuming, then time one engine draining them."""
    Access(TriggerInstanceDB).delete_by({})
    severity = "critical" if matching else "info"
    start = time.perf_counter()
    for i in range(instances):
        triggers.dispatch(publisher, ALERT, {"count": i % rules, "severity": severity, "host": f"h{i}"})
    dispatch_rate = instances / (time.perf_counter() - start)
    engine = RulesEngineService(settings, publisher)
    start = time.perf_counter()
    cpu, db_cpu = cpu_seconds(os.getpid()), cpu_seconds(db_pid)
    engine.start()
    try:
        while not all_processed():
            eventlet.sleep(0.05)
        rate = instances / (time.perf_counter() - start)
        cpu, db_cpu = cpu_seconds(os.getpid()) - cpu, cpu_seconds(db_pid) - db_cpu
    finally:
        engine.stop()
    if matching:
        enforced = Access(RuleEnforcementDB).count({"status": statuses.ENFORCEMENT_SUCCEEDED})
        assert enforced >= instances, f"only {enforced} of {instances} instances were enforced"
    return Drain(dispatch_rate, rate, cpu * 1000 / instances, db_cpu * 1000 / instances)


def latency(settings, publisher: Publisher, pings: int, rules: int) -> list[float]:
    """ms from dispatch to the enforcement stored, one instance at a time."""
    engine = RulesEngineService(settings, publisher)
    engine.start()
    enforcements = Access(RuleEnforcementDB)
    samples = []
    try:
        for i in range(pings):
            eventlet.sleep(0.02)
            start = time.perf_counter()
            instance = triggers.dispatch(publisher, ALERT, {"count": i % rules, "severity": "critical",
                                                            "host": f"p{i}"})
            while enforcements.get(trigger_instance_id=str(instance.pk)) is None:
                eventlet.sleep(0.0005)
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        engine.stop()
    return samples


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bus", choices=("filesystem", "amqp"), default="filesystem")
    parser.add_argument("--amqp-url", default=os.environ.get("ST2_TEST_RABBITMQ_URL", DEFAULT_AMQP_URL))
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--pings", type=int, default=50)
    parser.add_argument("--scan", action="store_true",
                        help="put the equals criterion second, so every rule is evaluated for every instance")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
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
            samples = latency(settings, publisher, args.pings, args.rules)
            order = "startswith first (every rule evaluated)" if args.scan else "equals first (indexed)"
            print(f"bus {args.bus}, {args.rules} rules with 2 criteria each, {order}, {args.instances} instances")
            print(f"dispatch/s (nobody consuming)          {matched.dispatched:8.0f}")
            for name, result in (("matched/s (1 enforcement + request)", matched),
                                 ("evaluated/s (no rule matches)", evaluated)):
                print(f"{name:38} {result.processed:8.0f}   CPU ms per instance: engine "
                      f"{result.engine_cpu:5.2f}, database {result.db_cpu:5.2f}")
            print(f"dispatch -> enforcement stored, ms     median {statistics.median(samples):6.2f}"
                  f"  p95 {p95(samples):6.2f}  (n={len(samples)})")
        finally:
            if args.bus == "amqp":
                with make_connection(settings.messaging) as connection:
                    topology.delete(connection.default_channel)
            publisher.close()
            client.drop_database(settings.database.db_name)
            database.disconnect()
            mongo.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
