"""Execution latency and throughput through the REST API of a platform this script starts.

Run from the repository root:

    .venv/bin/python bench/executions.py [--bus embedded|amqp] [--runs 20] [--burst 200] [--threads 20]

It writes a config in a temporary folder (free ports, its own var/, embedded
database; the filesystem bus, or RabbitMQ at --amqp-url with a unique prefix whose
queues and exchanges are deleted afterwards), copies dummy_pack in, runs
`st2ctl start`, measures, and stops everything (the same Platform the e2e tests
use, tests/e2e/conftest.py).

- latency: --runs sequential executions of core.noop, core.local cmd=true and
  dummy_pack.return_dict (a python-script action that returns at once), after
  two warm-up runs each (the first python run starts the pack's worker; it is
  reported apart). Two clocks: "client" is POST -> terminal status seen by a
  GET loop (1 ms pause between GETs); "server" is the execution's
  end_timestamp - start_timestamp (start is when the request was stored). The
  phases of the unwatched runs split it with the status log: requested ->
  scheduled -> running -> terminal. Timestamps are stored in whole milliseconds. The GET
  loop competes with the platform for the CPU, so --runs more are left
  unwatched for 0.3 s before one GET: "unwatched" is their server clock.
- throughput: --burst core.noop POSTed at once from --threads threads, then
  watched (the last one POSTed, every 50 ms; then all of them in one list
  request) until all are terminal.
  executions/s = burst / (last end_timestamp - first start_timestamp) on the server clock, and
  burst / (all seen terminal - first POST) on the client's. The CPU time each
  process of the platform spent during the burst (from /proc), per execution,
  shows where the time goes.
- idle CPU of each process over 3 s, right after start and after the runs, and
  the messages left in each queue with no consumer (they pile up).

It prints Markdown tables for docs/benchmarks.md (--json keeps the raw samples).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import requests  # noqa: E402

from e2e.conftest import RABBITMQ_URL, Platform, delete_topology  # noqa: E402
from st2common.transport.filesystem import ready_files  # noqa: E402
from st2common.transport.topology import WORK_QUEUES  # noqa: E402

TERMINAL = {"succeeded", "failed", "timeout", "canceled", "abandoned"}
ACTIONS = (
    ("core.noop", {}),
    ("core.local cmd=true", {"cmd": "true"}),
    ("dummy_pack.return_dict", {}),
)
WARM_UP = 2
PROCESSES = ("st2api", "st2actionrunner", "st2rulesengine", "st2sensorcontainer", "st2workflowengine", "nx-27017")
IDLE_SECONDS = 3.0
UNWATCHED_PAUSE = 0.3
BURST_POLL = 0.05


def stamp(text: str) -> float:
    """Seconds since the epoch of an API timestamp (2026-11-21T07:01:03.123000Z)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Api:
    """The few REST calls the bench makes, on one keep-alive session per thread."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        self.url = f"{base_url}/v1/executions"
        self.session = requests.Session()
        self.session.headers.update(headers or {})

    def request(self, action: str, parameters: dict) -> str:
        response = self.session.post(self.url, json={"action": action, "parameters": parameters}, timeout=30)
        if response.status_code != 201:
            raise RuntimeError(f"POST {action}: {response.status_code} {response.text}")
        return response.json()["id"]

    def get(self, ident: str) -> dict:
        response = self.session.get(f"{self.url}/{ident}", timeout=30,
                                    params={"include_attributes": "status,start_timestamp,end_timestamp,log"})
        response.raise_for_status()
        return response.json()

    def newest(self, count: int) -> list[dict]:
        """The count newest executions, with the fields the burst reads."""
        response = self.session.get(self.url, timeout=60, params={
            "limit": count, "include_attributes": "id,status,start_timestamp,end_timestamp"})
        response.raise_for_status()
        return response.json()

    def wait(self, ident: str, pause: float = 0.001, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            execution = self.get(ident)
            if execution["status"] in TERMINAL:
                return execution
            if time.monotonic() > deadline:
                raise RuntimeError(f"execution {ident} still {execution['status']} after {timeout} s")
            time.sleep(pause)


def phases(execution: dict) -> dict[str, float]:
    """ms spent in each status before the next, from the execution's status log."""
    log = [(entry["status"], stamp(entry["timestamp"])) for entry in execution["log"]]
    return {f"{a}->{b}": (tb - ta) * 1000 for (a, ta), (b, tb) in zip(log, log[1:])}


def latency(api: Api, label: str, parameters: dict, runs: int) -> dict:
    """Sequential runs of one action, polled (client and server clocks, phases), then unwatched."""
    action = label.split()[0]
    warm = []
    for _ in range(WARM_UP):
        started = time.perf_counter()
        execution = api.wait(api.request(action, parameters))
        warm.append((time.perf_counter() - started) * 1000)
    client, server, split = [], [], {}
    for _ in range(runs):
        started = time.perf_counter()
        execution = api.wait(api.request(action, parameters))
        client.append((time.perf_counter() - started) * 1000)
        if execution["status"] != "succeeded":
            raise RuntimeError(f"{label}: {execution['status']}")
        server.append(elapsed_ms(execution))
    # The GET loop competes for the same 2 cores; left alone, a run shows the platform's own speed.
    unwatched = []
    for _ in range(runs):
        ident = api.request(action, parameters)
        time.sleep(UNWATCHED_PAUSE)
        execution = api.wait(ident)
        unwatched.append(elapsed_ms(execution))
        for phase, ms in phases(execution).items():
            split.setdefault(phase, []).append(ms)
    return {"label": label, "first_ms": warm[0], "client": client, "server": server, "phases": split,
            "unwatched": unwatched}


def elapsed_ms(execution: dict) -> float:
    """end_timestamp - start_timestamp: from the request stored to the terminal status stored."""
    return (stamp(execution["end_timestamp"]) - stamp(execution["start_timestamp"])) * 1000


def cpu_seconds(platform: Platform) -> dict[str, float]:
    """CPU time (user + system) each process of the platform has used so far, children not included."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for name in PROCESSES:
        pid = platform.pid(name)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, TypeError):
            continue
        used[name] = (int(fields[11]) + int(fields[12])) / ticks
    return used


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after if name in before}


def idle_cpu(platform: Platform) -> dict[str, float]:
    """ms of CPU per second each process burns with nothing to do."""
    before = cpu_seconds(platform)
    time.sleep(IDLE_SECONDS)
    return {name: spent * 1000 / IDLE_SECONDS for name, spent in cpu_spent(before, cpu_seconds(platform)).items()}


def backlog(platform: Platform, bus: str, amqp_url: str) -> dict[str, int]:
    """Messages waiting in each work queue (nobody consumes some of them yet)."""
    if bus == "amqp":
        import kombu

        counts = {}
        with kombu.Connection(amqp_url, connect_timeout=2) as conn:
            channel = conn.default_channel
            for name in WORK_QUEUES:
                counts[name] = channel.queue_declare(f"{platform.prefix}.{name}", passive=True).message_count
        return {name: count for name, count in counts.items() if count}
    counts: dict[str, int] = {}
    data = platform.root / "var" / "bus" / "data"
    for folder in data.glob(f"{platform.prefix}.*"):
        count = len(ready_files(str(data), folder.name))
        if count:
            counts[folder.name[len(platform.prefix) + 1:]] = count
    return counts


def throughput(platform: Platform, burst: int, threads: int) -> dict:
    """burst core.noop POSTed at once from threads threads; executions/s on both clocks, CPU per process."""
    base_url, headers = platform.api_url, platform.auth_headers()
    apis = [Api(base_url, headers) for _ in range(threads)]
    cpu_before = cpu_seconds(platform)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        ids = list(pool.map(lambda i: apis[i % threads].request("core.noop", {}), range(burst)))
    posted = time.perf_counter() - started
    # Watch the last one POSTed, every BURST_POLL, then read them all in one list request: the
    # platform gets the CPU. (Reading each one as it ended, as the bench did until 2026-11-22, was
    # a GET per execution in the middle of the burst: about a quarter of the machine.)
    watcher, last, posted_ids, done = Api(base_url, headers), ids[-1], set(ids), {}
    while True:
        if watcher.get(last)["status"] in TERMINAL:
            cpu_after = cpu_seconds(platform)
            done = {e["id"]: e for e in watcher.newest(burst) if e["id"] in posted_ids and e["status"] in TERMINAL}
            if len(done) == burst:
                break
        if time.perf_counter() - started > 120:
            raise RuntimeError(f"{burst - len(done)} of {burst} executions not terminal after 120 s")
        time.sleep(BURST_POLL)
    wall = time.perf_counter() - started
    cpu = {name: spent * 1000 / burst for name, spent in cpu_spent(cpu_before, cpu_after).items()}
    first = min(stamp(e["start_timestamp"]) for e in done.values())
    last = max(stamp(e["end_timestamp"]) for e in done.values())
    failed = sum(1 for e in done.values() if e["status"] != "succeeded")
    return {"burst": burst, "threads": threads, "post_seconds": posted, "client_seconds": wall,
            "server_seconds": last - first, "client_rate": burst / wall, "server_rate": burst / (last - first),
            "not_succeeded": failed, "cpu_ms_per_execution": cpu}


def machine(commit: str | None = None) -> dict:
    """nproc, CPU model, RAM, load average and the commit the figures are for."""
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    ram = next(int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    if commit is None:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=REPO).stdout.strip() or "not a git checkout"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=REPO).stdout.strip()
        commit += "+dirty" if dirty else ""
    return {"nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
            "cpu": model, "ram_mb": ram, "commit": commit, "load": os.getloadavg()[0]}


def span(samples: list[float]) -> str:
    """median [min-max], ms."""
    return f"{statistics.median(samples):.1f} [{min(samples):.0f}-{max(samples):.0f}]"


def report(bus: str, info: dict, results: list[dict], rate: dict, idle: dict, left: dict) -> None:
    """The figures as Markdown, for docs/benchmarks.md."""
    print(f"bus {bus}; {time.strftime('%Y-%m-%d')}, commit `{info['commit']}`; nproc {info['nproc']}, "
          f"{info['cpu']}, {info['ram_mb']} MB RAM; load average {info['load']:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end")
    print()
    print("| action | client ms | server ms | unwatched ms | unwatched p90 | requested->scheduled | "
          "running->done | first run ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for result in results:
        split = {phase.split("->")[0]: statistics.median(ms) for phase, ms in result["phases"].items()}
        p90 = sorted(result["unwatched"])[round(0.9 * (len(result["unwatched"]) - 1))]
        print(f"| {result['label']} | {span(result['client'])} | {span(result['server'])} | "
              f"{span(result['unwatched'])} | {p90:.0f} | {split.get('requested', 0):.1f} | "
              f"{split.get('running', 0):.1f} | {result['first_ms']:.0f} |")
    print()
    print(f"{rate['burst']} core.noop from {rate['threads']} threads: **{rate['server_rate']:.0f}/s** on the "
          f"server clock ({rate['server_seconds']:.2f} s), {rate['client_rate']:.0f}/s on the client's "
          f"({rate['client_seconds']:.2f} s; the POSTs took {rate['post_seconds']:.2f} s); "
          f"not succeeded: {rate['not_succeeded']}.")
    print()
    names = list(rate["cpu_ms_per_execution"])
    print("| process | " + " | ".join(names) + " | total |")
    print("| --- |" + " --- |" * (len(names) + 1))
    cpu = rate["cpu_ms_per_execution"]
    print("| CPU ms per execution (burst) | " + " | ".join(f"{cpu[name]:.1f}" for name in names)
          + f" | {sum(cpu.values()):.1f} |")
    for when, figures in idle.items():
        print(f"| idle CPU ms/s, {when} | " + " | ".join(f"{figures.get(name, 0):.0f}" for name in names)
              + f" | {sum(figures.values()):.0f} |")
    print()
    print("Messages left in work queues: " + (", ".join(f"{name} {count}" for name, count in left.items())
                                             or "none") + ".")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bus", choices=("embedded", "amqp"), default="embedded")
    parser.add_argument("--amqp-url", default=RABBITMQ_URL)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--threads", type=int, default=20)
    parser.add_argument("--json", metavar="PATH", help="also write the raw figures to this file")
    parser.add_argument("--commit", help="the commit measured, when this is not a git checkout")
    parser.add_argument("--keep", action="store_true",
                        help="leave the platform running after the run (for profiling); prints its config")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="st2bench-"))
    platform = Platform(root, bus_url=args.amqp_url if args.bus == "amqp" else "filesystem://",
                        packs=("dummy_pack",))
    try:
        started = platform.st2ctl("start")
        if started.returncode != 0:
            print(started.stdout + started.stderr, file=sys.stderr)
            return 1
        api = Api(platform.api_url, platform.auth_headers())
        info = machine(args.commit)
        idle = {"after start": idle_cpu(platform)}
        results = [latency(api, label, parameters, args.runs) for label, parameters in ACTIONS]
        rate = throughput(platform, args.burst, args.threads)
        idle["after the runs"] = idle_cpu(platform)
        left = backlog(platform, args.bus, args.amqp_url)
        report(args.bus, info, results, rate, idle, left)
        if args.json:
            Path(args.json).write_text(json.dumps({"bus": args.bus, "machine": info, "latency": results,
                                                   "throughput": rate, "idle_cpu": idle, "backlog": left},
                                                  indent=1))
        if args.keep:
            print(f"platform left running: st2ctl --config-file {platform.conf} stop")
    finally:
        if not args.keep:
            platform.stop_and_check()
            if args.bus == "amqp":
                delete_topology(platform.prefix, args.amqp_url)
    if not args.keep:
        # Kept when the run failed: the services' logs are in var/log.
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
