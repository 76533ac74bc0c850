"""st2ctl: start, stop, restart, inspect and reload the platform on one machine.

    st2ctl [--config-file PATH] start|stop|restart [SERVICE ...]
    st2ctl [--config-file PATH] status
    st2ctl [--config-file PATH] reload [--register-all | --register-<kind> ...]

On the embedded default (``[database] embedded = True``) start first runs the
nx-27017 server on the SQLite file under var/, and stop stops it last.

Content is registered by ``start`` only on a fresh install (no pack registered
yet). Registration writes rules and actions back from their YAML files, so doing
it on every start would silently undo what operators changed through the API
(a rule disabled with ``st2 rule disable`` would come back on a restart);
``reload`` is the explicit way to apply pack changes, as in StackStorm.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Iterable, TextIO

from st2common import config, log, supervisor
from st2common.exceptions import (BusError, ConfigError, DatabaseError, ServiceError,
                                  StackStormBaseException)
from st2common.log import log_path
from st2common.persistence import db as database
from st2common.service import FAILED, WAITING
from st2common.transport import memfolder
from st2common.transport.connection import check_connection, make_connection, masked_url
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from st2common.services import users
from st2common.util import crypto

LOG = logging.getLogger(__name__)

# Registration flag suffixes, in StackStorm's --register-all order.
REGISTER_KINDS = ("triggers", "sensors", "runners", "actions", "rules", "aliases", "policies", "configs")
START_TIMEOUT = 30.0
STOP_GRACE = 10.0


class Console:
    """Where st2ctl prints: progress to out, problems to err."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def say(self, text: str) -> None:
        """One progress line."""
        print(text, file=self.out, flush=True)

    def error(self, text: str) -> None:
        """One problem line."""
        print(f"st2ctl: {text}", file=self.err, flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The st2ctl command line."""
    # --config-file is accepted before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config-file", default=argparse.SUPPRESS, metavar="PATH",
                        help=f"st2.conf to use (default: ${config.CONFIG_PATH_ENV} or conf/st2.conf)")
    parser = argparse.ArgumentParser(prog="st2ctl", parents=[common],
                                     description="Run the StackStorm-compatible platform on this machine.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = ", ".join(supervisor.SERVICES + (supervisor.DB_SERVER,))
    for name, text in (("start", "start the services (all by default)"),
                       ("stop", "stop the services (all by default)"),
                       ("restart", "stop, then start the services")):
        sub = commands.add_parser(name, parents=[common], help=text, description=text)
        sub.add_argument("services", nargs="*", metavar="SERVICE", help=f"one of: {names}")
        if name != "stop":
            sub.add_argument("--timeout", type=float, default=START_TIMEOUT,
                             help="seconds to wait for each service to report ready (default: %(default)s)")
        if name != "start":
            sub.add_argument("--grace", type=float, default=STOP_GRACE,
                             help="seconds between SIGTERM and SIGKILL (default: %(default)s)")
    commands.add_parser("status", parents=[common], help="show each process, its state and the dependencies")
    reload = commands.add_parser("reload", parents=[common], help="register pack content into the database")
    reload.add_argument("--register-all", action="store_true", help="register every kind of content")
    for kind in REGISTER_KINDS:
        reload.add_argument(f"--register-{kind}", dest="kinds", action="append_const", const=kind,
                            help=f"register {kind}")
    fail = reload.add_mutually_exclusive_group()
    fail.add_argument("--register-fail-on-failure", dest="fail_on_failure", action="store_true",
                      help="exit non-zero when some content fails to register (the default, as in StackStorm)")
    fail.add_argument("--register-no-fail-on-failure", dest="fail_on_failure", action="store_false",
                      help="report registration errors but exit 0")
    reload.set_defaults(fail_on_failure=True)
    return parser


def _config_error_line(exc: ConfigError) -> str:
    text = str(exc)
    if exc.section and f"[{exc.section}]" not in text:
        text = f"[{exc.section}]{' ' + exc.option if exc.option else ''}: {text}"
    return f"configuration error: {text}"


def _select(settings, requested: list[str]) -> list[str]:
    allowed = supervisor.SERVICES + ((supervisor.DB_SERVER,) if settings.database.embedded else ())
    unknown = [name for name in requested if name not in allowed]
    if unknown:
        raise ServiceError(f"unknown service {', '.join(unknown)}; known: {', '.join(allowed)}")
    return [name for name in supervisor.SERVICES if name in requested] if requested else list(supervisor.SERVICES)


# -- start / stop -----------------------------------------------------------------------

def start(settings, console: Console, requested: list[str], timeout: float = START_TIMEOUT) -> int:
    """Start the database (embedded default) and the services, and wait until each is ready."""
    services = _select(settings, requested)
    if settings.database.embedded:
        try:
            pid, started = supervisor.start_database(settings, timeout)
        except DatabaseError as exc:
            console.error(f"{supervisor.DB_SERVER} did not start: {exc}")
            return 1
        url = supervisor.embedded_server(settings).url
        console.say(f"{supervisor.DB_SERVER}: {'started' if started else 'already running'} (pid {pid}) on {url}")
    if requested and not services:
        return 0
    if not ensure_datastore_key(settings, console) or not ensure_admin_user(settings, console):
        return 1
    register_fresh_install(settings, console)
    if settings.messaging.url.startswith("filesystem:") and settings.messaging.filesystem_memory:
        memfolder.clear_orphans()
    processes: dict = {}
    for name in services:
        pid = supervisor.running_pid(settings, name)
        if pid is not None:
            console.say(f"{name}: already running (pid {pid})")
            processes[name] = pid
            continue
        if supervisor.remove_stale_pid_file(settings, name):
            console.say(f"{name}: removed a stale pid file")
        processes[name] = supervisor.launch(settings, name)
        console.say(f"{name}: started (pid {processes[name].pid}), log {log_path(settings, name)}")
    problems = supervisor.wait_ready(settings, processes, timeout)
    for name in services:
        if name not in problems:
            console.say(f"{name}: ready")
    for problem in problems.values():
        console.error(problem)
    if not problems:
        return 0
    # A service waiting for its database or bus keeps retrying; say so rather than kill it.
    waiting = [name for name in problems if supervisor.running_pid(settings, name) is not None]
    if waiting:
        console.error(f"still running and retrying: {', '.join(waiting)}; "
                      "see `st2ctl status`, stop everything with `st2ctl stop`")
    return 1


def ensure_datastore_key(settings, console: Console) -> bool:
    """Generate the datastore encryption key file (0600) when encryption is on and it is missing."""
    path = settings.keyvalue.encryption_key_path
    if not settings.keyvalue.enable_encryption or path is None:
        return True
    try:
        if crypto.write_key_file(path):
            console.say(f"datastore key: generated {path} (mode 0600)")
    except OSError as exc:
        console.error(f"cannot write the datastore key file {path}: {exc.strerror}")
        return False
    return True


def ensure_admin_user(settings, console: Console) -> bool:
    """Create st2admin on a fresh install (no users file yet) and say once how to log in."""
    if not settings.auth.enable:
        return True
    try:
        password = users.ensure_admin(settings)
    except (OSError, ConfigError) as exc:
        console.error(f"cannot create the admin user: {exc}")
        return False
    if password is not None:
        console.say(f"auth: created user {users.ADMIN_USER} with password {password} "
                    f"(kept in {users.admin_password_path(settings)}, mode 0600); "
                    f"log in with: st2 login {users.ADMIN_USER} -p '<password>'")
    return True


def stop(settings, console: Console, requested: list[str], grace: float = STOP_GRACE) -> int:
    """Stop the services, then (embedded default, whole platform) the database."""
    services = _select(settings, requested)
    names = list(reversed(services))
    stop_db = settings.database.embedded and (not requested or supervisor.DB_SERVER in requested)
    outcome = supervisor.stop(settings, names, grace) if names else {}
    if stop_db:
        outcome.update(supervisor.stop(settings, [supervisor.DB_SERVER], grace))
    for name in names + ([supervisor.DB_SERVER] if stop_db else []):
        console.say(f"{name}: {outcome[name]}")
    return 0


# -- status -----------------------------------------------------------------------------

def check_dependencies(settings) -> dict[str, str | None]:
    """{"database": problem or None, "bus": problem or None}, checked from here."""
    problems: dict[str, str | None] = {}
    try:
        database.check(settings, timeout_ms=1000)
        problems["database"] = None
    except DatabaseError as exc:
        problems["database"] = supervisor.brief(str(exc))
    try:
        check_connection(settings.messaging, timeout=2.0)
        problems["bus"] = None
    except BusError as exc:
        problems["bus"] = supervisor.brief(str(exc))
    return problems


def _unreachable(detail: str, down: Iterable[str]) -> list[str]:
    names = set(down)
    if detail.startswith((WAITING, FAILED)):
        lowered = detail.lower()
        if "database" in lowered:
            names.add("database")
        if "message bus" in lowered or "bus at" in lowered:
            names.add("bus")
    return sorted(names)


def status(settings, console: Console) -> int:
    """Print each process with pid and state, and whether the database and bus answer."""
    rows = [supervisor.database_state(settings)] if settings.database.embedded else []
    rows += [supervisor.service_state(settings, name) for name in supervisor.SERVICES]
    deps = check_dependencies(settings)
    down = [name for name, problem in deps.items() if problem]
    healthy = not down
    for row in rows:
        pid = f"pid {row.pid}" if row.pid else "-"
        line = f"{row.name:<20} {row.state:<8} {pid:<11}"
        if row.detail:
            line += f" {row.detail}"
        if row.state in ("ready", "running") and row.name != supervisor.DB_SERVER:
            unreachable = _unreachable(row.detail, down)
            if unreachable:
                line += f" (cannot reach {' and '.join(unreachable)})"
        healthy = healthy and row.state == "ready"
        console.say(line.rstrip())
    urls = {"database": masked_url(settings.database_url()), "bus": masked_url(settings.messaging.url)}
    for name, problem in deps.items():
        console.say(f"{name:<20} {'unreachable: ' + problem if problem else 'reachable ' + urls[name]}")
    return 0 if healthy else 1


# -- content ----------------------------------------------------------------------------

def _publisher(settings, console: Console) -> Publisher | None:
    try:
        check_connection(settings.messaging, timeout=2.0)
    except BusError as exc:
        console.error(f"warning: running services will not be told about new content: {exc}")
        return None
    return Publisher(make_connection(settings.messaging), Topology(settings.messaging.prefix))


def _register(settings, console: Console, kinds: list[str] | None):
    from st2common.content import bootstrap

    publisher = _publisher(settings, console)
    try:
        report = bootstrap.register(settings, kinds, publisher)
    finally:
        if publisher is not None:
            publisher.close()
    for line in report.summary().splitlines():
        console.say(line)
    return report


def register_fresh_install(settings, console: Console) -> None:
    """Register the default content kinds when no pack is registered yet; problems are warnings."""
    from st2common.models.db.pack import PackDB

    try:
        database.check(settings, timeout_ms=2000)
        database.connect(settings)
    except DatabaseError as exc:
        console.error(f"warning: content not registered: {supervisor.brief(str(exc))}")
        return
    try:
        if PackDB.objects.only("ref").first() is not None:
            return
        console.say("registering content (no pack registered yet)")
        report = _register(settings, console, None)
        for error in report.errors:
            console.error(f"warning: {error}")
    except Exception as exc:  # noqa: BLE001 - content must not keep the platform from starting
        console.error(f"warning: content registration failed ({type(exc).__name__}: {exc}); "
                      "the services start anyway, retry with `st2ctl reload`")
    finally:
        database.disconnect()


def reload(settings, console: Console, register_all: bool, kinds: list[str] | None,
           fail_on_failure: bool) -> int:
    """Register pack content (the default kinds, the chosen ones, or all); non-zero on errors if asked."""
    from st2common.content import bootstrap

    if register_all:
        chosen: list[str] | None = list(bootstrap.ALL_KINDS)
    elif kinds:
        chosen = [kind for kind in bootstrap.ALL_KINDS if kind in kinds]
        skipped = [kind for kind in kinds if kind not in bootstrap.ALL_KINDS]
        if skipped:
            console.say(f"not registered (this version does not load them yet): {', '.join(skipped)}")
        if not chosen:
            return 0
    else:
        chosen = None
    try:
        database.connect(settings, retry_for=3.0)
    except DatabaseError as exc:
        hint = "; is the platform started (st2ctl start)?" if settings.database.embedded else ""
        console.error(f"{supervisor.brief(str(exc))}{hint}")
        return 1
    try:
        report = _register(settings, console, chosen)
    except StackStormBaseException as exc:
        console.error(f"registration failed: {exc}")
        return 1
    finally:
        database.disconnect()
    for error in report.errors:
        console.error(f"error: {error}")
    if report.errors:
        console.say(f"{len(report.errors)} error(s) while registering content")
        return 1 if fail_on_failure else 0
    return 0


# -- entry point ------------------------------------------------------------------------

def _setup_logging(settings) -> None:
    # The console gets progress and problems from Console; the details (which file
    # failed to register and why, which pid was killed) go to var/log/st2ctl.log.
    path = log_path(settings, "st2ctl")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    except OSError:
        stream = None
    log.setup("st2ctl", settings, stream=stream or sys.stderr)
    if stream is None:
        logging.getLogger().setLevel(logging.WARNING)


def main(argv: list[str] | None = None, console: Console | None = None) -> int:
    """Run st2ctl; the exit code."""
    console = console or Console()
    args = build_parser().parse_args(argv)
    try:
        settings = config.load(getattr(args, "config_file", None))
        _setup_logging(settings)
        LOG.info("st2ctl %s (pid %d, config %s)", " ".join(argv if argv is not None else sys.argv[1:]),
                 os.getpid(), settings.path)
        if args.command == "start":
            return start(settings, console, args.services, args.timeout)
        if args.command == "stop":
            return stop(settings, console, args.services, args.grace)
        if args.command == "restart":
            stop(settings, console, args.services, args.grace)
            return start(settings, console, args.services, args.timeout)
        if args.command == "status":
            return status(settings, console)
        return reload(settings, console, args.register_all, args.kinds, args.fail_on_failure)
    except ConfigError as exc:
        console.error(_config_error_line(exc))
        return 1
    except ServiceError as exc:
        console.error(str(exc))
        return 2
    except KeyboardInterrupt:
        console.error("interrupted")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
