"""Message bus benchmark: publish -> consume round trip and messages/s, raw kombu against our layer.

Run from the repository root:

    .venv/bin/python bench/bus.py [--transport filesystem|amqp|all] [--intervals 0.002,0.005,0.01]
        [--watch on|off|both] [--layers raw,st2] [--messages 2000] [--pings 200] [--repeat 3]
        [--idle-seconds 3] [--bystander 1000] [--amqp-url amqp://guest:guest@127.0.0.1:5672//]

It prints a Markdown table (docs/benchmarks.md keeps the figures). Everything runs
in one eventlet-patched process, as the services do: the consumer waits for
messages in its own green thread, the publisher is the main green thread.

- round trip: one message at a time, each at a random moment (so the filesystem
  poll phase is random), from just before publish to the start of the handler;
  median and p95 over --pings x --repeat messages.
- publish/s: --messages published back to back, nobody consuming.
- consume/s: a consumer then drains that backlog (ack after each handler).
  Rates are the median of --repeat runs.
- idle CPU: CPU time per wall second of a consumer with nothing to do, for
  1 queue and for 5 (the action runner consumes 5), over --idle-seconds.
- bystander: CPU milliseconds a consumer in another process spends while
  --bystander messages for a queue it does not consume are published and
  consumed (every platform process is such a bystander for most messages),
  with its idle CPU over the same wall time subtracted. Our layer only.

"raw" is plain kombu (its stock filesystem transport, one kombu.Consumer that
acks in its callback); "st2" is st2common.transport (Publisher, Consumer with a
Handler, our filesystem channel). Filesystem rows: "poll N ms" polls every N ms
(--intervals, default the configured one; our layer with inotify switched off),
"inotify" is our layer's default on Linux. Queues and exchanges are deleted
afterwards.
"""

from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import kombu  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from st2common import config  # noqa: E402
from st2common.transport.connection import filesystem_folders, make_connection  # noqa: E402
from st2common.transport.consumer import Consumer, Handler, run_in_background  # noqa: E402
from st2common.transport.publisher import Publisher  # noqa: E402
from st2common.transport.topology import Topology  # noqa: E402

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
IDLE_QUEUES = ("actionrunner.req", "actionrunner.work", "actionrunner.cancel", "actionrunner.pause",
               "actionrunner.resume")


class Probe:
    """What a consumer reports: when each message arrived, and how many so far."""

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self.event = eventlet.event.Event()

    def hit(self) -> None:
        self.last = time.perf_counter()
        self.count += 1
        if not self.event.ready():
            self.event.send(self.last)

    def wait(self) -> float:
        with eventlet.Timeout(30, SystemExit("a message did not arrive within 30 s")):
            arrived = self.event.wait()
        self.event.reset()
        return arrived

    def wait_for(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.count < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {self.count} of {count} messages arrived")
            eventlet.sleep(0.001)


class BenchSettings:
    """The loaded settings plus whether the filesystem bus may use inotify."""

    def __init__(self, settings, folder_watch: bool) -> None:
        self.messaging = settings.messaging
        self.folder_watch = folder_watch


def settings_for(url: str, folder: Path, interval: float | None, watch: bool) -> BenchSettings:
    env = {"ST2_MESSAGING__URL": url, "ST2_MESSAGING__PREFIX": f"bench{uuid.uuid4().hex[:8]}",
           "ST2_MESSAGING__FILESYSTEM_PATH": str(folder)}
    if interval is not None:
        env["ST2_MESSAGING__FILESYSTEM_POLLING_INTERVAL"] = str(interval)
    return BenchSettings(config.load(env=env), watch)


# -- raw kombu --------------------------------------------------------------------------------


class Raw:
    """Plain kombu on the same broker: the floor our layer is compared with."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.prefix = settings.messaging.prefix
        self.exchange = kombu.Exchange(f"{self.prefix}.raw", type="topic", durable=True)

    def connection(self) -> kombu.Connection:
        messaging = self.settings.messaging
        if messaging.url.startswith("filesystem:"):
            options = filesystem_folders(Path(messaging.filesystem_path))
            options["polling_interval"] = messaging.filesystem_polling_interval
            return kombu.Connection("filesystem://", transport_options=options)
        return kombu.Connection(messaging.url)

    def queue(self, name: str) -> kombu.Queue:
        return kombu.Queue(f"{self.prefix}.raw.{name}", self.exchange, routing_key=name, durable=True)

    def start_consumer(self, names, probe: Probe):
        conn = self.connection()
        channel = conn.channel()
        channel.basic_qos(0, 64, False)

        def on_message(body, message):
            probe.hit()
            message.ack()

        consumer = kombu.Consumer(channel, [self.queue(n) for n in names], callbacks=[on_message],
                                  accept=["json"])
        consumer.consume()
        stop = []

        def loop():
            while not stop:
                try:
                    conn.drain_events(timeout=0.1)
                except TimeoutError:
                    pass
            consumer.cancel()
            conn.release()

        thread = eventlet.spawn(loop)
        return lambda: (stop.append(1), thread.wait())

    def publisher(self):
        conn = self.connection()
        producer = kombu.Producer(conn.channel(), serializer="json")
        producer.publish({}, exchange=self.exchange, routing_key="none", declare=[self.exchange])
        return conn, lambda body, key: producer.publish(body, exchange=self.exchange, routing_key=key)

    def declare(self, names) -> None:
        with self.connection() as conn:
            channel = conn.channel()
            for name in names:
                self.queue(name)(channel).declare()

    def cleanup(self, names) -> None:
        with self.connection() as conn:
            channel = conn.channel()
            for name in names:
                self.queue(name)(channel).delete()
            self.exchange(channel).delete()


def bench_raw(settings, messages: int, pings: int, idle_seconds: float, repeat: int, gap: float) -> dict:
    raw = Raw(settings)
    names = ["bench"] + list(IDLE_QUEUES)
    raw.declare(names)
    pub_conn, publish = raw.publisher()
    try:
        result = {"rtt": [], "publish": [], "consume": []}
        for _ in range(repeat):
            probe = Probe()
            stop = raw.start_consumer(["bench"], probe)
            result["rtt"] += round_trips(lambda i: publish({"id": str(i)}, "bench"), probe, pings, gap)
            stop()
            result["publish"].append(rate(lambda i: publish({"id": str(i)}, "bench"), messages))
            probe = Probe()
            started = time.perf_counter()
            stop = raw.start_consumer(["bench"], probe)
            probe.wait_for(messages)
            result["consume"].append(messages / (probe.last - started))
            stop()
        result["idle1"] = idle_cpu(lambda: raw.start_consumer(["bench"], Probe()), idle_seconds)
        result["idle5"] = idle_cpu(lambda: raw.start_consumer(IDLE_QUEUES, Probe()), idle_seconds)
        return result
    finally:
        pub_conn.release()
        raw.cleanup(names)


# -- our layer --------------------------------------------------------------------------------


class ProbeHandler(Handler):
    """Counts its messages."""

    def __init__(self, queue: kombu.Queue, probe: Probe) -> None:
        self.queue = queue
        self.probe = probe

    def handle(self, body):
        self.probe.hit()


def connect(settings) -> kombu.Connection:
    """Our connection; without folder_watch the filesystem bus polls instead of using inotify."""
    conn = make_connection(settings.messaging)
    if not settings.folder_watch:
        conn.transport_options["folder_watch"] = False
    return conn


def start_layer(settings, topology: Topology, publisher: Publisher, names, probe: Probe):
    consumer = Consumer(connect(settings), publisher,
                        [ProbeHandler(topology.work_queue(name), probe) for name in names])
    thread = run_in_background(consumer)
    consumer.wait_ready(10)
    return lambda: (consumer.stop(), thread.wait())


def bench_layer(settings, messages: int, pings: int, idle_seconds: float, repeat: int, gap: float,
                bystander: int = 0) -> dict:
    topology = Topology(settings.messaging.prefix)
    publisher = Publisher(connect(settings), topology)
    publisher.declare_work_queues()
    try:
        publish = lambda i: publisher.publish("liveaction.status", "requested", {"id": str(i)})  # noqa: E731
        result = {"rtt": [], "publish": [], "consume": []}
        for _ in range(repeat):
            probe = Probe()
            stop = start_layer(settings, topology, publisher, ["actionrunner.req"], probe)
            result["rtt"] += round_trips(publish, probe, pings, gap)
            stop()
            result["publish"].append(rate(publish, messages))
            probe = Probe()
            started = time.perf_counter()
            stop = start_layer(settings, topology, publisher, ["actionrunner.req"], probe)
            probe.wait_for(messages)
            result["consume"].append(messages / (probe.last - started))
            stop()
        result["idle1"] = idle_cpu(lambda: start_layer(settings, topology, publisher, ["actionrunner.req"],
                                                       Probe()), idle_seconds)
        result["idle5"] = idle_cpu(lambda: start_layer(settings, topology, publisher, IDLE_QUEUES, Probe()),
                                   idle_seconds)
        if bystander:
            result["bystander"] = bystander_cpu(settings, topology, publisher, publish, bystander)
        return result
    finally:
        with make_connection(settings.messaging) as conn:
            topology.delete(conn.channel())
        publisher.close()


# -- measurements -----------------------------------------------------------------------------


def round_trips(publish, probe: Probe, pings: int, gap: float) -> list[float]:
    """Seconds from publish to handler, one message at a time, each at a random moment."""
    publish(-1)
    probe.wait()
    samples = []
    for i in range(pings):
        # A pause as long as a poll makes the moment of publishing random against the poll cycle.
        eventlet.sleep(random.uniform(0, gap))
        started = time.perf_counter()
        publish(i)
        samples.append(probe.wait() - started)
    return samples


def rate(publish, messages: int) -> float:
    started = time.perf_counter()
    for i in range(messages):
        publish(i)
    return messages / (time.perf_counter() - started)


def idle_cpu(start, seconds: float) -> float:
    """Percent of one core an idle consumer uses."""
    stop = start()
    eventlet.sleep(0.2)
    cpu, wall = time.process_time(), time.perf_counter()
    eventlet.sleep(seconds)
    used = (time.process_time() - cpu) / (time.perf_counter() - wall) * 100
    stop()
    return used


# The bystander: a consumer process on queues nobody publishes to in this benchmark. It prints
# "ready", then its CPU seconds for every line it reads, and stops at end of input.
BYSTANDER = """
import eventlet
eventlet.monkey_patch()
import os, sys, time, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
from st2common import config
from st2common.transport.connection import make_connection
from st2common.transport.consumer import Consumer, Handler, run_in_background
from st2common.transport.topology import Topology
settings = config.load()
topology = Topology(settings.messaging.prefix)
handlers = []
for name in sys.argv[2:]:
    handler = Handler()
    handler.queue = topology.work_queue(name)
    handlers.append(handler)
connection = make_connection(settings.messaging)
if not %(watch)r:
    connection.transport_options["folder_watch"] = False
consumer = Consumer(connection, None, handlers)
thread = run_in_background(consumer)
consumer.wait_ready(10)
print("ready", flush=True)
# os.read is green once patched (sys.stdin is not): the consumer runs while this waits.
while True:
    data = os.read(0, 64)
    if not data:
        break
    for _ in range(data.count(b"\\n")):
        print(time.process_time(), flush=True)
consumer.stop()
thread.wait()
"""


def bystander_cpu(settings, topology: Topology, publisher: Publisher, publish, messages: int) -> float:
    """CPU ms another process's idle consumer spends while messages for a queue it does not consume flow."""
    import os
    import subprocess

    env = dict(os.environ, ST2_MESSAGING__URL=settings.messaging.url,
               ST2_MESSAGING__PREFIX=settings.messaging.prefix,
               ST2_MESSAGING__FILESYSTEM_PATH=str(settings.messaging.filesystem_path),
               ST2_MESSAGING__FILESYSTEM_POLLING_INTERVAL=str(settings.messaging.filesystem_polling_interval))
    root = str(Path(__file__).resolve().parent.parent)
    # The action runner's other four queues: the bystander shares the folder, not the queue.
    child = subprocess.Popen([sys.executable, "-c", BYSTANDER % {"watch": settings.folder_watch}, root,
                              *IDLE_QUEUES[1:]],
                             env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("the bystander consumer did not start")

        def cpu() -> float:
            child.stdin.write("\n")
            child.stdin.flush()
            return float(child.stdout.readline())

        probe = Probe()
        stop = start_layer(settings, topology, publisher, ["actionrunner.req"], probe)
        try:
            eventlet.sleep(0.3)
            before, started = cpu(), time.perf_counter()
            for i in range(messages):
                publish(i)
            probe.wait_for(messages)
            eventlet.sleep(0.05)
            busy, wall = cpu() - before, time.perf_counter() - started
        finally:
            stop()
        # The same wall time with nothing flowing: what the bystander costs anyway.
        before = cpu()
        eventlet.sleep(wall)
        idle = cpu() - before
        return max(0.0, busy - idle) * 1000
    finally:
        child.stdin.close()
        child.wait(30)


# -- table ------------------------------------------------------------------------------------


COLUMNS = ("transport", "code", "rtt median ms", "rtt p95 ms", "publish/s", "consume/s", "idle CPU% 1 queue",
           "idle CPU% 5 queues", "bystander CPU ms")
WIDTHS = (20, 4, 13, 10, 9, 9, 17, 18, 16)
HEADER = "\n".join(("| " + " | ".join(f"{c:<{w}}" for c, w in zip(COLUMNS, WIDTHS)) + " |",
                     "| " + " | ".join("-" * w for w in WIDTHS) + " |"))


def row(transport: str, layer: str, result: dict) -> str:
    """One Markdown table row."""
    rtt = sorted(result["rtt"])
    p95 = rtt[min(len(rtt) - 1, int(len(rtt) * 0.95))]
    cells = (transport, layer, f"{statistics.median(rtt) * 1000:.3f}", f"{p95 * 1000:.3f}",
             f"{statistics.median(result['publish']):.0f}", f"{statistics.median(result['consume']):.0f}",
             f"{result['idle1']:.1f}", f"{result['idle5']:.1f}",
             f"{result['bystander']:.0f}" if "bystander" in result else "-")
    return "| " + " | ".join(f"{c:>{w}}" if i > 1 else f"{c:<{w}}"
                             for i, (c, w) in enumerate(zip(cells, WIDTHS))) + " |"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=("filesystem", "amqp", "all"), default="all")
    parser.add_argument("--messages", type=int, default=2000, help="backlog size for publish/consume rates")
    parser.add_argument("--pings", type=int, default=200, help="round trips measured per run")
    parser.add_argument("--intervals", default="",
                        help="comma-separated filesystem polling intervals (default: the configured one)")
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (rates: median; rtt: all samples)")
    parser.add_argument("--bystander", type=int, default=1000,
                        help="messages flowing past another process's idle consumer (0: skip)")
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--layers", default="raw,st2", help="raw, st2 or both")
    parser.add_argument("--watch", choices=("on", "off", "both"), default="both",
                        help="filesystem: inotify wake-ups (st2 only), polling, or both")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    runs = []  # (url, polling interval, inotify, layers)
    layers = args.layers.split(",")
    if args.transport in ("filesystem", "all"):
        intervals = [float(v) for v in args.intervals.split(",") if v] or [None]
        if args.watch in ("off", "both"):
            runs += [("filesystem://", interval, False, layers) for interval in intervals]
        if args.watch in ("on", "both") and "st2" in layers:
            runs.append(("filesystem://", None, True, ["st2"]))
    if args.transport in ("amqp", "all"):
        runs.append((args.amqp_url, None, False, layers))

    print(HEADER)
    for url, interval, watch, run_layers in runs:
        folder = Path(tempfile.mkdtemp(prefix="st2bench"))
        try:
            settings = settings_for(url, folder / "bus", interval, watch)
            polling = settings.messaging.filesystem_polling_interval
            if url.startswith("amqp"):
                name, gap = "amqp (RabbitMQ)", 0.002
            elif watch:
                name, gap = "filesystem inotify", 0.002
            else:
                name, gap = f"filesystem poll {polling * 1000:g} ms", polling
            for layer in run_layers:
                if layer == "raw":
                    result = bench_raw(settings, args.messages, args.pings, args.idle_seconds, args.repeat, gap)
                else:
                    result = bench_layer(settings, args.messages, args.pings, args.idle_seconds, args.repeat, gap,
                                         args.bystander)
                print(row(name, layer, result), flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
