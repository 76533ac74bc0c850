"""Orquesta workflow latency through the REST API of a platform this script starts.

Run from the repository root:

    .venv/bin/python bench/workflows.py [--bus embedded|amqp|all] [--runs 5] [--poll 0.1] [--workflow chain10]
    .venv/bin/python bench/workflows.py --profile [--bus embedded|amqp]

Three workflows of tests/fixtures/packs/wf_pack, each core.noop tasks:

- chain10: ten tasks in a row, each publishing a variable (StackStorm on the same
  2-core machine: 3.41 s);
- items100: one task over 100 items, 10 at a time;
- fanout20: one task forking into 20 parallel branches, joined by a last task.

Platform mode (the default) writes a config in a temporary folder (free ports, its
own var/, embedded database; the filesystem bus, or RabbitMQ at --amqp-url with a
unique prefix deleted afterwards), copies wf_pack in, runs `st2ctl start` and, per
workflow, one warm-up run then --runs runs one after the other: POST /executions,
then GET it every --poll seconds until it is terminal. "client" is POST ->
terminal seen (so it is rounded up to the poll); "server" is the workflow
execution's end_timestamp - start_timestamp (request stored -> result stored);
the median of the runs is the figure. The official `st2 run` polls every 2 s;
the default poll, 0.1 s, is already 20 times heavier, and a 20 ms poll (the
default before 2026-11-21) took about a tenth of the platform's CPU during a
chain10 and made its server time ~15% longer on this 2-core machine. The CPU each
process spent over the measured runs, per child execution, shows where the time goes.

Profile mode (--profile) runs the action runner and the workflow engine in this
process instead (as tests/workflowsupport.py does), runs chain10 once to warm
up and once measured, and prints, per task: the database commands by command and
collection (a pymongo command listener), the messages published by exchange and
routing key, and the functions that took the most time (cProfile over every green
thread, which all share this OS thread).
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import eventlet

# Profile mode runs the services here, as their processes do: patched before anything opens a socket.
eventlet.monkey_patch()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import requests  # noqa: E402

from e2e.conftest import RABBITMQ_URL, Platform, delete_topology  # noqa: E402
from executions import TERMINAL, cpu_seconds, cpu_spent, machine, stamp  # noqa: E402

WORKFLOWS = (
    ("wf_pack.chain10", "10 tasks in a row", 10),
    ("wf_pack.items100", "100 items, concurrency 10", 100),
    ("wf_pack.fanout20", "20 branches and a join", 22),
)
POLL = 0.1
TIMEOUT = 300.0


class Api:
    """POST an execution, and GET it until it is terminal, on one keep-alive session."""

    def __init__(self, platform: Platform) -> None:
        self.url = f"{platform.api_url}/v1/executions"
        self.session = requests.Session()
        self.session.headers.update(platform.auth_headers())

    def run(self, action: str) -> tuple[float, dict]:
        """(client ms, the terminal execution) of one run of action."""
        started = time.perf_counter()
        response = self.session.post(self.url, json={"action": action, "parameters": {}}, timeout=30)
        if response.status_code != 201:
            raise RuntimeError(f"POST {action}: {response.status_code} {response.text}")
        ident = response.json()["id"]
        deadline = time.monotonic() + TIMEOUT
        while True:
            execution = self.session.get(f"{self.url}/{ident}", timeout=30, params={
                "include_attributes": "status,start_timestamp,end_timestamp,children"}).json()
            if execution["status"] in TERMINAL:
                return (time.perf_counter() - started) * 1000, execution
            if time.monotonic() > deadline:
                raise RuntimeError(f"{action} {ident} still {execution['status']} after {TIMEOUT} s")
            time.sleep(POLL)


def server_ms(execution: dict) -> float:
    """end_timestamp - start_timestamp of an execution, in ms."""
    return (stamp(execution["end_timestamp"]) - stamp(execution["start_timestamp"])) * 1000


def measure(platform: Platform, runs: int, only: list[str] | None = None) -> list[dict]:
    """One warm-up and runs measured runs of each workflow (or those named in only), with each process's CPU."""
    api = Api(platform)
    results = []
    for action, label, children in WORKFLOWS:
        if only and action.split(".", 1)[1] not in only:
            continue
        api.run(action)
        client, server = [], []
        cpu_before = cpu_seconds(platform)
        for _ in range(runs):
            ms, execution = api.run(action)
            if execution["status"] != "succeeded" or len(execution.get("children") or []) != children:
                raise RuntimeError(f"{action}: {execution['status']} with "
                                   f"{len(execution.get('children') or [])} children")
            client.append(ms)
            server.append(server_ms(execution))
        cpu = {name: spent * 1000 / (runs * children)
               for name, spent in cpu_spent(cpu_before, cpu_seconds(platform)).items()}
        results.append({"action": action, "label": label, "children": children, "client": client,
                        "server": server, "cpu_ms_per_task": cpu})
    return results


def report(bus: str, info: dict, results: list[dict], load_end: float) -> None:
    """The figures as Markdown, for docs/benchmarks.md."""
    print(f"bus {bus}, poll {POLL} s; {time.strftime('%Y-%m-%d')}, commit `{info['commit']}`; nproc {info['nproc']}, "
          f"{info['cpu']}, {info['ram_mb']} MB RAM; load average {info['load']:.1f} at start, {load_end:.1f} at end")
    print()
    names = list(results[0]["cpu_ms_per_task"])
    print("| workflow | tasks | server ms median [min-max] | client ms median | ms per task | "
          + " | ".join(f"{name} CPU ms/task" for name in names) + " |")
    print("| --- | --- | --- | --- | --- |" + " --- |" * len(names))
    for result in results:
        server = statistics.median(result["server"])
        cpu = result["cpu_ms_per_task"]
        print(f"| {result['action']} ({result['label']}) | {result['children']} | {server:.0f} "
              f"[{min(result['server']):.0f}-{max(result['server']):.0f}] | "
              f"{statistics.median(result['client']):.0f} | {server / result['children']:.1f} | "
              + " | ".join(f"{cpu.get(name, 0):.1f}" for name in names) + " |")
    print()


def platform_mode(bus: str, amqp_url: str, runs: int, only: list[str] | None = None) -> None:
    """Start a platform on bus, measure, report, stop."""
    root = Path(tempfile.mkdtemp(prefix="st2bench-wf-"))
    platform = Platform(root, bus_url=amqp_url if bus == "amqp" else "filesystem://", packs=("wf_pack",))
    try:
        started = platform.st2ctl("start")
        if started.returncode != 0:
            raise RuntimeError(started.stdout + started.stderr)
        info = machine()
        results = measure(platform, runs, only)
        report(bus, info, results, os.getloadavg()[0])
    finally:
        platform.stop_and_check()
        if bus == "amqp":
            delete_topology(platform.prefix, amqp_url)
    shutil.rmtree(root, ignore_errors=True)


# -- profile mode ------------------------------------------------------------------------------

def caller() -> str:
    """The innermost function of the platform's services on the stack, outside persistence and models."""
    frame = sys._getframe(2)
    skipped = ("st2common/persistence/", "st2common/models/", "site-packages", "/lib/python3")
    # A batch (st2common/persistence/batches) runs in a green thread of its own: named by its function.
    outermost = "?"
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(str(REPO)) and not any(part in path for part in skipped):
            return f"{Path(path).relative_to(REPO)}:{frame.f_code.co_name}"
        if path.startswith(str(REPO / "st2common" / "persistence")):
            outermost = f"{Path(path).relative_to(REPO)}:{frame.f_code.co_name}"
        frame = frame.f_back
    return outermost


def profile_mode(bus: str, amqp_url: str, top: int) -> None:
    """chain10 in this process: database commands, messages and the hottest functions, per task."""
    from pymongo import monitoring

    from st2common.persistence.embedded import EmbeddedMongo
    from st2common.transport.publisher import Publisher
    from testsupport import free_port
    from workflowsupport import start_platform

    class CommandCounter(monitoring.CommandListener):
        """How many of each (command, collection) were sent."""

        def __init__(self) -> None:
            self.counts: Counter = Counter()
            self.callers: Counter = Counter()

        def started(self, event) -> None:
            collection = event.command.get(event.command_name)
            self.counts[(event.command_name, collection if isinstance(collection, str) else "")] += 1
            self.callers[caller()] += 1

        def succeeded(self, event) -> None:
            """Nothing to count on success."""

        def failed(self, event) -> None:
            """Nothing to count on failure."""

    counter = CommandCounter()
    monitoring.register(counter)
    messages: Counter = Counter()
    publish_to = Publisher.publish_to

    def counted(self, exchange, routing_key, body, *args, **kwargs):
        messages[(exchange.name.split(".", 1)[1], routing_key)] += 1
        return publish_to(self, exchange, routing_key, body, *args, **kwargs)

    Publisher.publish_to = counted
    root = Path(tempfile.mkdtemp(prefix="st2bench-wfprof-"))
    mongo = EmbeddedMongo(root / "st2.sqlite", free_port(), root)
    mongo.start(die_with_parent=True)
    harness = start_platform(amqp_url if bus == "amqp" else "filesystem://", root, mongo)
    prefix = None
    try:
        platform = next(harness)
        prefix = platform.settings.messaging.prefix
        platform.run("wf_pack.chain10")
        counter.counts.clear()
        counter.callers.clear()
        messages.clear()
        started = time.perf_counter()
        execution = platform.run("wf_pack.chain10")
        elapsed = (time.perf_counter() - started) * 1000
        profiler = cProfile.Profile()
        profiler.enable()
        platform.run("wf_pack.chain10")
        profiler.disable()
        tasks = 2 * 10
        print(f"chain10 on {bus}, in one process: {execution.status} in {elapsed:.0f} ms (the unprofiled run)")
        print("\ndatabase commands per task (the bench's own polling included, as tests/workflowsupport.py):")
        for (command, collection), count in counter.counts.most_common():
            print(f"  {count / tasks:6.1f}  {command} {collection}")
        print(f"  {sum(counter.counts.values()) / tasks:6.1f}  in all")
        print("\ndatabase commands per task, by the function of the platform that sent them:")
        for where, count in counter.callers.most_common():
            print(f"  {count / tasks:6.1f}  {where}")
        print("\nmessages published per task:")
        for (exchange, key), count in messages.most_common():
            print(f"  {count / tasks:6.1f}  {exchange} {key}")
        print(f"  {sum(messages.values()) / tasks:6.1f}  in all")
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(r"st2workflowengine|services/workflow|services/executions", top)
        print(out.getvalue())
    finally:
        next(harness, None)  # the harness's clean-up, after its yield
        mongo.stop()
        if bus == "amqp" and prefix:
            delete_topology(prefix, amqp_url)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    global POLL
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bus", choices=("embedded", "amqp", "all"), default="all")
    parser.add_argument("--amqp-url", default=RABBITMQ_URL)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="count and profile chain10 in this process")
    parser.add_argument("--top", type=int, default=30, help="functions shown by --profile")
    parser.add_argument("--poll", type=float, default=POLL, help="seconds between a run's GETs")
    parser.add_argument("--workflow", action="append", choices=[ref.split(".", 1)[1] for ref, _, _ in WORKFLOWS],
                        help="measure only this workflow (repeatable; default: all three)")
    args = parser.parse_args(argv)
    POLL = args.poll
    buses = ("embedded", "amqp") if args.bus == "all" else (args.bus,)
    for bus in buses:
        if args.profile:
            profile_mode(bus, args.amqp_url, args.top)
        else:
            platform_mode(bus, args.amqp_url, args.runs, args.workflow)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
