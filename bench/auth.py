"""Authentication overhead per API request: a token or an API key checked, cached or not.

    .venv/bin/python bench/auth.py                # its own nx-27017 on a free port, in a temp dir
    .venv/bin/python bench/auth.py --requests 2000

Serves the real API app in-process (WSGI calls, no sockets, so only the app's
own work is measured) and times GET /v1/runnertypes/noop, a cheap read:
without authentication ([auth] enable = false), with a token and with an API
key (the cache warm after the first request), and with the cache off (a
database read per request). The overhead is the difference of the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import webob  # noqa: E402

from st2api.app import setup_app  # noqa: E402
from st2common import config  # noqa: E402
from st2common.content import register  # noqa: E402
from st2common.persistence import db as database  # noqa: E402
from st2common.persistence.embedded import EmbeddedMongo  # noqa: E402
from st2common.services import apikeys, tokens  # noqa: E402

PATH = "/v1/runnertypes/noop"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_for(folder: Path, mongo: EmbeddedMongo, **extra: str):
    env = {"ST2_SYSTEM__BASE_PATH": str(folder), "ST2_MESSAGING__URL": "filesystem://",
           "ST2_MESSAGING__FILESYSTEM_PATH": str(folder / "bus"), "ST2_DATABASE__HOST": mongo.host,
           "ST2_DATABASE__PORT": str(mongo.port), "ST2_DATABASE__DB_NAME": "st2bench_auth",
           "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(Path(__file__).resolve().parent.parent / "contrib" / "packs"),
           **extra}
    return config.load(path=None, env=env)


def timed(variants: dict[str, tuple], count: int) -> dict[str, list[float]]:
    """Milliseconds per request for each (app, headers), interleaved so that load elsewhere hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for app, headers in variants.values():
        assert webob.Request.blank(PATH, headers=headers).get_response(app).status_int == 200
    for _ in range(count):
        for name, (app, headers) in variants.items():
            request = webob.Request.blank(PATH, headers=headers)
            started = time.perf_counter()
            request.get_response(app)
            samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def report(name: str, samples: list[float], base: float | None) -> float:
    median = statistics.median(samples)
    p95 = sorted(samples)[int(len(samples) * 0.95) - 1]
    extra = f"  overhead {median - base:+.3f} ms" if base is not None else ""
    print(f"{name:<34} median {median:.3f} ms  p95 {p95:.3f} ms{extra}")
    return median


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as raw:
        folder = Path(raw)
        mongo = EmbeddedMongo(folder / "db.sqlite", free_port(), folder)
        mongo.start(die_with_parent=True)
        try:
            open_settings = settings_for(folder, mongo, ST2_AUTH__ENABLE="false")
            database.connect(open_settings)
            register(open_settings, kinds=["runners"])
            token = tokens.issue(open_settings, "stanley")[1]
            key = apikeys.create("stanley")[1]
            cached = setup_app(settings_for(folder, mongo))
            uncached = setup_app(settings_for(folder, mongo, ST2_AUTH__CREDENTIAL_CACHE_TTL="0"))
            samples = timed({
                "no authentication": (setup_app(open_settings), {}),
                "token (cached)": (cached, {"X-Auth-Token": token}),
                "API key (cached)": (cached, {"St2-Api-Key": key}),
                "token (no cache: a db read each)": (uncached, {"X-Auth-Token": token}),
            }, args.requests)
            base = None
            for name, values in samples.items():
                median = report(name, values, base)
                base = median if base is None else base
            database.connect(open_settings).drop_database("st2bench_auth")
        finally:
            database.disconnect()
            mongo.stop()
    print(f"{args.requests} requests each, {os.cpu_count()} cpus")
    return 0


if __name__ == "__main__":
    sys.exit(main())
