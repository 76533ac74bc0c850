"""CPU cost of the API's common requests, served in-process (WSGI calls, no sockets), or by a real st2api.

    .venv/bin/python bench/api.py                         # this tree only
    .venv/bin/python bench/api.py --baseline HEAD~1       # interleaved with the tree of a commit
    .venv/bin/python bench/api.py --baseline /tmp/other   # ... or with another checkout
    .venv/bin/python bench/api.py --profile /tmp/api.prof # a cProfile of this tree's requests
    .venv/bin/python bench/api.py --served [--baseline ...]  # st2api processes over HTTP

Times, with a token (cached after the first request), POST /v1/executions of
core.noop, GET /v1/executions/<id>, GET /v1/executions?limit=50 and
GET /v1/actions. Each variant (this tree, and the baseline commit exported with
``git archive``) runs in a worker process of its own against one embedded
database; the workers take turns, a few rounds at a time, and the kinds
alternate within a round, so load elsewhere on the shared machine hits all
alike. Each request's wall time and the worker's CPU time for it (the database's
own work is the nx-27017 process's, not counted) are kept; the CPU figure moves
less with the machine's load. Nothing consumes the bus: posted executions stay ``requested``, so only
the API's own work is measured.

--served measures what the in-process figures leave out: the HTTP server,
the sockets, eventlet's hub, the group commit of POSTs arriving together, the
service's logging. Each variant starts a platform of its own with st2ctl (as
bench/executions.py does) and stops all its services but st2api (SIGSTOP, so
nothing competes for the CPU and posted executions stay ``requested``); a
client of --threads threads with keep-alive sessions then sends each turn's
POSTs of core.noop, then as many GETs of one execution, and the st2api
process's CPU time (from /proc) per request is kept per turn, with the rate.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("POST /v1/executions (core.noop)", "GET /v1/executions/<id>", "GET /v1/executions?limit=50",
         "GET /v1/actions")


# Key suffix of a kind's CPU time samples (the process's, per request).
CPU = " cpu"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- worker: one tree's API app, timed on demand ------------------------------------------


def worker(tree: Path, host: str, port: int, db_name: str, folder: Path, profile: str | None) -> None:
    """Serve `rounds` lines from stdin with a JSON line of samples each; the API code comes from tree."""
    sys.path.insert(0, str(tree))
    import webob

    from st2api.app import setup_app
    from st2common import config
    from st2common.content import register
    from st2common.persistence import db as database
    from st2common.services import tokens

    env = {"ST2_SYSTEM__BASE_PATH": str(folder), "ST2_MESSAGING__URL": "filesystem://",
           "ST2_MESSAGING__FILESYSTEM_PATH": str(folder / "bus"), "ST2_DATABASE__HOST": host,
           "ST2_DATABASE__PORT": str(port), "ST2_DATABASE__DB_NAME": db_name,
           "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(tree / "contrib" / "packs")}
    settings = config.load(path=None, env=env)
    database.connect(settings)
    register(settings, kinds=["runners", "actions"])
    headers = {"X-Auth-Token": tokens.issue(settings, settings.system_user.user)[1]}
    app = setup_app(settings)
    body = json.dumps({"action": "core.noop"}).encode()
    post_headers = {**headers, "Content-Type": "application/json"}
    first = webob.Request.blank("/v1/executions", method="POST", body=body, headers=post_headers)
    execution_id = first.get_response(app).json["id"]
    makers = dict(zip(KINDS, (
        lambda: webob.Request.blank("/v1/executions", method="POST", body=body, headers=post_headers),
        lambda: webob.Request.blank(f"/v1/executions/{execution_id}", headers=headers),
        lambda: webob.Request.blank("/v1/executions?limit=50", headers=headers),
        lambda: webob.Request.blank("/v1/actions", headers=headers),
    )))

    def rounds(count: int) -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {key: [] for name in KINDS for key in (name, name + CPU)}
        for _ in range(count):
            for name, make in makers.items():
                request = make()
                started, cpu_started = time.perf_counter(), time.process_time()
                response = request.get_response(app)
                samples[name + CPU].append((time.process_time() - cpu_started) * 1000)
                samples[name].append((time.perf_counter() - started) * 1000)
                assert response.status_int < 300, (name, response.status, response.text[:200])
        return samples

    rounds(20)  # warm: token cache, action lookups, connections
    print("ready", flush=True)
    # CPU time: the database's answers are waited for, not spent, in this process.
    profiler = cProfile.Profile(time.process_time) if profile else None
    for line in sys.stdin:
        count = int(line)
        if profiler:
            profiler.enable()
        samples = rounds(count)
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        print(json.dumps(samples), flush=True)
    database.connect(settings).drop_database(db_name)
    database.disconnect()


# -- served: a real st2api process ---------------------------------------------------------

SERVED_KINDS = ("POST /v1/executions (core.noop)", "GET /v1/executions/<id>")
# Key suffix of a kind's rate samples (requests per second over a turn).
RATE = " rate"


def served_worker(tree: Path, threads: int) -> None:
    """Serve stdin lines (requests per kind for a turn) with a JSON line of CPU ms per request and rates."""
    import shutil
    import signal
    from concurrent.futures import ThreadPoolExecutor

    sys.path[:0] = [str(tree), str(tree / "tests")]
    import requests
    from e2e.conftest import SERVICES, Platform

    root = Path(tempfile.mkdtemp(prefix="st2bench-api-"))
    platform = Platform(root)
    stopped: list[int] = []
    try:
        started = platform.st2ctl("start", timeout=120)
        if started.returncode != 0:
            raise RuntimeError(f"st2ctl start failed:\n{started.stdout}\n{started.stderr}")
        api = platform.pid("st2api")
        sessions = [requests.Session() for _ in range(threads)]
        for session in sessions:
            session.headers.update(platform.auth_headers())
        url = f"{platform.api_url}/v1/executions"
        execution_id = sessions[0].post(url, json={"action": "core.noop"}, timeout=30).json()["id"]
        time.sleep(1.0)  # the services settle before they are stopped
        for name in SERVICES:
            pid = platform.pid(name)
            if name != "st2api" and pid:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)

        def post(index: int) -> None:
            response = sessions[index % threads].post(url, json={"action": "core.noop", "parameters": {}}, timeout=30)
            assert response.status_code == 201, response.text[:200]

        def get(index: int) -> None:
            response = sessions[index % threads].get(f"{url}/{execution_id}", timeout=30)
            assert response.status_code == 200, response.text[:200]

        def cpu() -> float:
            fields = Path(f"/proc/{api}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        with ThreadPoolExecutor(threads) as pool:
            for send in (post, get):
                list(pool.map(send, range(200)))  # warm: token cache, action lookups, connections
            print("ready", flush=True)
            for line in sys.stdin:
                count = int(line)
                samples: dict[str, list[float]] = {}
                for name, send in zip(SERVED_KINDS, (post, get)):
                    cpu_started, started = cpu(), time.perf_counter()
                    list(pool.map(send, range(count)))
                    elapsed = time.perf_counter() - started
                    samples[name + CPU] = [(cpu() - cpu_started) * 1000 / count]
                    samples[name + RATE] = [count / elapsed]
                print(json.dumps(samples), flush=True)
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        platform.stop_and_check()
        from st2common.transport import memfolder

        memfolder.clear_under(root)
        shutil.rmtree(root, ignore_errors=True)


def served(trees: dict[str, Path], requests: int, turn: int, threads: int) -> int:
    """Alternate turns of st2api processes of each tree; print their CPU per request and rates."""
    workers = {}
    try:
        for name, tree in trees.items():
            process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--served-worker", str(tree),
                                        "--threads", str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True)
            workers[name] = process
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError(f"served worker for {tree} failed to start")
        samples = {name: {} for name in workers}
        done = 0
        while done < requests:
            count = min(turn, requests - done)
            for name, process in workers.items():
                process.stdin.write(f"{count}\n")
                process.stdin.flush()
                for key, values in json.loads(process.stdout.readline()).items():
                    samples[name].setdefault(key, []).extend(values)
            done += count
    finally:
        for process in workers.values():
            process.stdin.close()
            process.wait(timeout=120)
    variants = list(samples)
    print("| request | " + " | ".join(f"{v} st2api CPU ms | {v} requests/s" for v in variants) + " |")
    print("| ------- |" + " ---: | ---: |" * len(variants))
    for kind in SERVED_KINDS:
        cells = [f"{statistics.median(samples[v][kind + CPU]):.2f} | {statistics.median(samples[v][kind + RATE]):.0f}"
                 for v in variants]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    print(f"\n{requests} requests of each kind per variant in turns of {turn}, {threads} client threads, "
          f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} (medians of the turns)")
    return 0


# -- driver ---------------------------------------------------------------------------------


def export(ref: str, into: Path) -> Path:
    """The tracked files of commit ref, unpacked under into."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def start_worker(tree: Path, host: str, port: int, name: str, folder: Path, profile: str | None):
    folder.mkdir()
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tree), "--db-host", host,
               "--db-port", str(port), "--db-name", name, "--folder", str(folder)]
    if profile:
        command += ["--profile", profile]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"worker for {tree} failed to start")
    return process


def report(samples: dict[str, dict[str, list[float]]]) -> None:
    variants = list(samples)
    print("| request | " + " | ".join(f"{v} median ms | {v} p95 ms | {v} CPU ms" for v in variants) + " |")
    print("| ------- |" + " ---: | ---: | ---: |" * len(variants))
    for kind in KINDS:
        cells = []
        for variant in variants:
            ordered = sorted(samples[variant][kind])
            p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
            cpu = statistics.median(samples[variant].get(kind + CPU) or [float("nan")])
            cells.append(f"{statistics.median(ordered):.2f} | {p95:.2f} | {cpu:.2f}")
        print(f"| {kind} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, help="requests of each kind per variant (300; --served 3000)")
    parser.add_argument("--turn", type=int,
                        help="rounds (requests, --served) a worker runs before the other's turn (10; --served 500)")
    parser.add_argument("--baseline", help="a folder holding another tree, or a git commit (exported), to compare with")
    parser.add_argument("--profile", help="write a cProfile of this tree's requests here")
    parser.add_argument("--served", action="store_true", help="measure st2api processes over HTTP instead")
    parser.add_argument("--threads", type=int, default=20, help="client threads (--served)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--served-worker", help=argparse.SUPPRESS)
    parser.add_argument("--db-host", help=argparse.SUPPRESS)
    parser.add_argument("--db-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db-name", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.served_worker:
        served_worker(Path(args.served_worker), args.threads)
        return 0
    if args.worker:
        worker(Path(args.worker), args.db_host, args.db_port, args.db_name, Path(args.folder), args.profile)
        return 0

    sys.path.insert(0, str(ROOT))
    from st2common.persistence.embedded import EmbeddedMongo

    with tempfile.TemporaryDirectory() as raw:
        folder = Path(raw)
        trees = {"this tree": ROOT}
        if args.baseline and Path(args.baseline).is_dir():
            trees = {"baseline": Path(args.baseline).resolve(), **trees}
        elif args.baseline:
            trees = {args.baseline: export(args.baseline, Path(tempfile.mkdtemp(dir=folder))), **trees}
        if args.served:
            return served(trees, args.requests or 3000, args.turn or 500, args.threads)
        args.requests, args.turn = args.requests or 300, args.turn or 10
        mongo = EmbeddedMongo(folder / "db.sqlite", free_port(), folder)
        mongo.start(die_with_parent=True)
        workers = {}
        try:
            for index, (name, tree) in enumerate(trees.items()):
                profile = args.profile if tree == ROOT else None
                workers[name] = start_worker(tree, mongo.host, mongo.port, f"st2bench_api_{index}",
                                             folder / f"worker{index}", profile)
            samples = {name: {key: [] for kind in KINDS for key in (kind, kind + CPU)} for name in workers}
            done = 0
            while done < args.requests:
                turn = min(args.turn, args.requests - done)
                for name, process in workers.items():
                    process.stdin.write(f"{turn}\n")
                    process.stdin.flush()
                    for kind, values in json.loads(process.stdout.readline()).items():
                        samples[name][kind].extend(values)
                done += turn
        finally:
            for process in workers.values():
                process.stdin.close()
                process.wait(timeout=60)
            mongo.stop()
    report(samples)
    print(f"\n{args.requests} requests of each kind per variant, {os.cpu_count()} cpus, "
          f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
