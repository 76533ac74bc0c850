"""Where each process of a running platform spends its CPU, sampled with py-spy under load.

Run from the repository root (py-spy is not a dependency of the project):

    .venv/bin/pip install py-spy
    .venv/bin/python bench/spy.py [--load noop|chain10|webhook] [--bus embedded|amqp] [--seconds 10]

It starts a platform as bench/executions.py does (`st2ctl start` on a config in
a temporary folder, dummy_pack and wf_pack installed), warms it up, then keeps
the load going for --seconds while `py-spy record` samples every process of the
platform (the services and the embedded database, not the sensor
subprocesses). The processes are real ones, so the profile shows what a
one-process profile cannot: each service's own share, its bus consumer loop
and its idle wake-ups.

Loads: noop, core.noop POSTed back to back by 10 threads; local, the same
with core.local cmd=true; chain10, the
10-task wf_pack.chain10 workflow one after the other; webhook, POSTs to
/webhooks/st2 of a core.st2.webhook trigger that a rule turns into core.noop.

The report gives, per process, its CPU over the load (from /proc) and the
functions where its samples were (self time) and, for --inclusive, the
functions under which they were, as percentages of that process's samples.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

import requests  # noqa: E402

from e2e.conftest import RABBITMQ_URL, Platform, delete_topology  # noqa: E402
from executions import PROCESSES, TERMINAL, cpu_seconds, cpu_spent, machine  # noqa: E402

RATE = 200
WEBHOOK_RULE = {
    "name": "spy_webhook", "pack": "dummy_pack", "enabled": True,
    "trigger": {"type": "core.st2.webhook", "parameters": {"url": "spy"}},
    "criteria": {"trigger.body.go": {"type": "equals", "pattern": "yes"}},
    "action": {"ref": "core.noop", "parameters": {}},
}


def py_spy() -> str:
    """The py-spy command, or exit with how to get it."""
    found = shutil.which("py-spy") or (str(Path(sys.executable).parent / "py-spy")
                                       if (Path(sys.executable).parent / "py-spy").exists() else None)
    if not found:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    return found


class Load:
    """Keeps one kind of load going on the platform until stopped; counts what it completed."""

    def __init__(self, platform: Platform, kind: str) -> None:
        self.platform = platform
        self.kind = kind
        self.done = 0
        self.stop = threading.Event()
        self.session = requests.Session()
        self.session.headers.update(platform.auth_headers())
        self.url = f"{platform.api_url}/v1"

    def setup(self) -> None:
        if self.kind == "webhook":
            response = self.session.post(f"{self.url}/rules", json=WEBHOOK_RULE, timeout=30)
            if response.status_code != 201:
                raise RuntimeError(f"rule: {response.status_code} {response.text}")
            time.sleep(1.0)  # the rules engine and the API learn of the rule from its event

    def run(self, until: float | None = None, count: int | None = None) -> None:
        """Repeat the load until the time (or count of units) is reached or stop is set."""
        units = 0
        while not self.stop.is_set() and (until is None or time.monotonic() < until) and (
                count is None or units < count):
            {"noop": self._noop, "local": self._local, "chain10": self._chain, "webhook": self._webhook}[self.kind]()
            units += 1

    def _wait(self, ident: str, session: requests.Session) -> None:
        while True:
            status = session.get(f"{self.url}/executions/{ident}", params={"include_attributes": "status"},
                                 timeout=30).json()["status"]
            if status in TERMINAL:
                return
            time.sleep(0.05)

    def _noop(self, action: str = "core.noop", parameters: dict | None = None) -> None:
        sessions = [requests.Session() for _ in range(10)]
        for session in sessions:
            session.headers.update(self.session.headers)

        def post(index: int) -> str:
            return sessions[index % 10].post(f"{self.url}/executions", json={"action": action, "parameters": parameters or {}}, timeout=30).json()["id"]

        with ThreadPoolExecutor(10) as pool:
            ids = list(pool.map(post, range(50)))
        for ident in ids:
            self._wait(ident, self.session)
        self.done += len(ids)

    def _local(self) -> None:
        self._noop("core.local", {"cmd": "true"})

    def _chain(self) -> None:
        response = self.session.post(f"{self.url}/executions", json={"action": "wf_pack.chain10"}, timeout=30)
        self._wait(response.json()["id"], self.session)
        self.done += 10

    def _webhook(self) -> None:
        before = self.session.get(f"{self.url}/executions", params={"action": "core.noop", "limit": 1},
                                  timeout=30).headers.get("X-Total-Count")
        for _ in range(20):
            self.session.post(f"{self.url}/webhooks/spy", json={"go": "yes"}, timeout=30)
        target = int(before or 0) + 20
        while int(self.session.get(f"{self.url}/executions", params={"action": "core.noop", "limit": 1},
                                   timeout=30).headers.get("X-Total-Count") or 0) < target:
            time.sleep(0.05)
        self.done += 20


def fold(raw: Path) -> tuple[int, Counter, Counter]:
    """(samples, self counts by function, inclusive counts by function) of a py-spy raw file."""
    total, own, under = 0, Counter(), Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [frame for frame in stack.split(";") if frame and not frame.startswith("process ")
                  and not frame.startswith("thread ")]
        if not frames:
            continue
        total += samples
        own[short(frames[-1])] += samples
        for frame in set(short(frame) for frame in frames):
            under[frame] += samples
    return total, own, under


def short(frame: str) -> str:
    """'function (path:line)' -> 'function (file:line)' relative to the repo or site-packages."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for root in (str(REPO) + "/", "site-packages/", "lib/python3.11/"):
        if root in where:
            where = where.split(root, 1)[1]
            break
    path, _, _line = where.rpartition(":")
    return f"{name} ({path or where})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load", choices=("noop", "local", "chain10", "webhook"), default="noop")
    parser.add_argument("--bus", choices=("embedded", "amqp"), default="embedded")
    parser.add_argument("--amqp-url", default=RABBITMQ_URL)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--inclusive", action="store_true", help="also list functions by inclusive samples")
    parser.add_argument("--only", nargs="*", default=None, help="processes to sample (default: all)")
    args = parser.parse_args(argv)
    spy = py_spy()
    root = Path(tempfile.mkdtemp(prefix="st2spy-"))
    platform = Platform(root, bus_url=args.amqp_url if args.bus == "amqp" else "filesystem://",
                        packs=("dummy_pack", "wf_pack"))
    try:
        started = platform.st2ctl("start", timeout=120)
        if started.returncode != 0:
            raise SystemExit(f"st2ctl start failed:\n{started.stdout}\n{started.stderr}")
        load = Load(platform, args.load)
        load.setup()
        load.run(count=2)
        names = [name for name in PROCESSES if args.only is None or name in args.only]
        pids = {name: platform.pid(name) for name in names}
        info = machine()
        recorders = {}
        for name, pid in pids.items():
            if pid:
                recorders[name] = subprocess.Popen(
                    [spy, "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw", "--nonblocking",
                     "--duration", str(int(args.seconds)), "--output", str(root / f"{name}.raw")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # py-spy attaches
        cpu_before = cpu_seconds(platform)
        load.done = 0
        load.run(until=time.monotonic() + args.seconds)
        cpu = cpu_spent(cpu_before, cpu_seconds(platform))
        for recorder in recorders.values():
            recorder.wait(timeout=60)
        unit = {"noop": "execution", "local": "execution", "chain10": "task", "webhook": "webhook"}[args.load]
        print(f"load {args.load} on the {args.bus} bus for {args.seconds:.0f} s: {load.done} {unit}s; "
              f"commit `{info['commit']}`, {info['cpu']}, load average {info['load']:.1f}")
        for name in recorders:
            raw = root / f"{name}.raw"
            if not raw.exists():
                print(f"\n## {name}: no samples")
                continue
            total, own, under = fold(raw)
            per_unit = cpu.get(name, 0) * 1000 / max(load.done, 1)
            print(f"\n## {name}: {per_unit:.2f} ms CPU per {unit}, {total} samples")
            for function, count in own.most_common(args.top):
                print(f"  {count * 100 / total:5.1f}%  {function}")
            if args.inclusive:
                print("  -- inclusive:")
                for function, count in under.most_common(args.top * 2):
                    print(f"  {count * 100 / total:5.1f}%  {function}")
    finally:
        platform.stop_and_check()
        if args.bus == "amqp":
            delete_topology(platform.prefix, args.amqp_url)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.pop("ST2_CONFIG_PATH", None)
    raise SystemExit(main())
