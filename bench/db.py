"""Database latency: insert, get by id, conditional update, filtered query, count.

    .venv/bin/python bench/db.py                 # its own nx-27017 on a free port, in a temp dir
    .venv/bin/python bench/db.py --url mongodb://127.0.0.1:27017/st2bench --ops 500

Goes through the same Access class the services use, on ExecutionDB records
shaped like real ones, and prints median and p95 per operation. The database
named in --url (default st2bench) is dropped before and after.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mongoengine as me  # noqa: E402

from st2common.models.db.base import utcnow  # noqa: E402
from st2common.models.db.execution import ExecutionDB  # noqa: E402
from st2common.persistence.access import Access  # noqa: E402
from st2common.persistence.embedded import EmbeddedMongo  # noqa: E402

STATUSES = ("requested", "scheduled", "running", "succeeded")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def execution(i: int) -> ExecutionDB:
    """A record the size of a typical local-shell-cmd execution."""
    return ExecutionDB(
        status=STATUSES[i % len(STATUSES)],
        action_ref=f"core.act{i % 20}",
        action={"ref": f"core.act{i % 20}", "pack": "core", "runner_type": "local-shell-cmd"},
        runner={"name": "local-shell-cmd", "runner_parameters": {"cmd": {"type": "string"}}},
        parameters={"cmd": f"echo {i}", "env": {"A.B": "1"}},
        context={"user": "stanley", "trace_context": {"trace_tag": f"t{i}"}},
        result={"stdout": "x" * 200, "stderr": "", "return_code": 0, "succeeded": True},
        log=[{"status": "requested", "timestamp": utcnow()}],
    )


def timed(samples: list[float], fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    samples.append((time.perf_counter() - start) * 1000)
    return value


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def run(url: str, db_name: str, ops: int, background: int) -> list[tuple[str, list[float]]]:
    me.connect(db=db_name, host=url, tz_aware=True, uuidRepresentation="standard")
    client = me.get_connection()
    client.drop_database(db_name)
    ExecutionDB.ensure_indexes()
    access = Access(ExecutionDB)
    try:
        # Background records, so queries and counts have something to wade through.
        access.insert_many([execution(i) for i in range(background)])
        inserts, gets, updates, queries, counts = [], [], [], [], []
        docs = [timed(inserts, access.add_or_update, execution(i * 4)) for i in range(ops)]
        for doc in docs:
            timed(gets, access.get_by_id, doc.pk)
        for doc in docs:
            moved = timed(updates, access.update_if, doc.pk, {"status": "requested"}, {"status": "scheduled"})
            assert moved is not None, "every conditional update in the bench should win"
        for i in range(ops):
            page = timed(queries, access.query, {"status": "running", "action_ref": f"core.act{(4 * i + 2) % 20}"},
                         order_by=["-start_timestamp"], limit=50)
            assert page, "the bench query should match records"
        for i in range(max(ops // 5, 20)):
            timed(counts, access.count, {"status": "running"})
        return [
            ("insert (add_or_update)", inserts),
            ("get by id", gets),
            ("conditional update (update_if)", updates),
            ("query: filter, sort, limit 50", queries),
            ("count (filtered)", counts),
        ]
    finally:
        client.drop_database(db_name)
        me.disconnect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a MongoDB URL; default: start an embedded nx-27017")
    parser.add_argument("--db", default="st2bench", help="database name (dropped before and after)")
    parser.add_argument("--ops", type=int, default=300, help="operations per measurement")
    parser.add_argument("--background", type=int, default=2000, help="records stored before measuring")
    args = parser.parse_args(argv)

    server = None
    url = args.url
    with tempfile.TemporaryDirectory(prefix="st2bench-") as tmp:
        if url is None:
            server = EmbeddedMongo(Path(tmp) / "bench.sqlite", free_port(), Path(tmp))
            server.start()
            url = server.url
        try:
            rows = run(url, args.db, args.ops, args.background)
        finally:
            if server is not None:
                server.stop()
    target = "nx-27017 (embedded)" if server is not None else url.rsplit("@", 1)[-1]
    print(f"database: {target}; {args.ops} ops each, {args.background} background records")
    print(f"{'operation':34} {'median ms':>10} {'p95 ms':>10} {'ops/s':>9}")
    for name, samples in rows:
        median = statistics.median(samples)
        print(f"{name:34} {median:10.2f} {p95(samples):10.2f} {1000 / statistics.mean(samples):9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
