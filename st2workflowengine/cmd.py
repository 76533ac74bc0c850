"""Console script st2workflowengine: run Orquesta workflows until SIGTERM.

Start-up: consume workflow requests and execution updates (st2workflowengine.handler),
then sweep once for workflows that moved on while no engine listened: children
that completed (their update lost with a killed consumer), children a crash
kept from being requested; and build the expression engines (YAQL, Jinja), which the
first workflow would otherwise wait for. Then every SWEEP_INTERVAL seconds: the same sweep
over workflows unchanged for IDLE_AFTER seconds, which a healthy engine
never leaves that long with work undone. Stop: stop sweeping, let the
messages in hand finish, stop consuming; running workflows stay as stored
and the next engine to start carries on.
"""

import eventlet

eventlet.monkey_patch()

import logging  # noqa: E402
import threading  # noqa: E402

from st2common import expressions  # noqa: E402
from st2common.exceptions import StackStormBaseException  # noqa: E402
from st2common.service import Service  # noqa: E402
from st2common.services import inquiries  # noqa: E402
from st2common.services.workflows import WorkflowService  # noqa: E402
from st2common.transport.connection import make_connection  # noqa: E402
from st2common.transport.consumer import Consumer, run_in_background  # noqa: E402
from st2workflowengine.handler import WorkflowSweep, handlers  # noqa: E402

LOG = logging.getLogger(__name__)

SERVICE = "st2workflowengine"
READY_TIMEOUT = 30.0
SWEEP_INTERVAL = 10.0
# A workflow whose record changed more recently may have its next children being
# requested right now by another engine copy: the sweep leaves it alone.
IDLE_AFTER = 5.0
STARTUP_IDLE_AFTER = 1.0


class WorkflowEngineService:
    """The workflow engine of one process: its consumers and its sweep."""

    def __init__(self, settings, publisher, sweep_interval: float = SWEEP_INTERVAL,
                 idle_after: float = IDLE_AFTER, startup_idle_after: float = STARTUP_IDLE_AFTER) -> None:
        self.settings = settings
        self.publisher = publisher
        self.sweep_interval = sweep_interval
        self.idle_after = idle_after
        self.startup_idle_after = startup_idle_after
        self.workflows = WorkflowService(settings, publisher)
        self.sweeper = WorkflowSweep(self.workflows)
        self.consumer = Consumer(make_connection(settings.messaging), publisher, handlers(self.workflows),
                                 max_redeliveries=settings.messaging.max_redeliveries,
                                 pool_size=settings.messaging.prefetch_count)
        self._stopping = threading.Event()
        self._thread = None
        self._sweep_thread = None
        self._stopped = False

    def start(self) -> None:
        """Consume, then sweep in the background; returns once the consumers are registered with the broker."""
        self._thread = run_in_background(self.consumer)
        if not self.consumer.wait_ready(READY_TIMEOUT):
            LOG.warning("%s: consumers not ready after %.0f s; continuing", SERVICE, READY_TIMEOUT)
        self._sweep_thread = eventlet.spawn(self._sweep_forever)
        eventlet.spawn_n(_warm_up)

    def sweep(self, idle_after: float | None = None) -> int:
        """One sweep over the workflows unchanged for idle_after seconds; how many were looked at."""
        count = self.sweeper.run(self.idle_after if idle_after is None else idle_after)
        # Overdue inquiries time out here too, so their workflows move on (st2common.services.inquiries).
        inquiries.expire(self.workflows)
        return count

    def _sweep_forever(self) -> None:
        idle_after = self.startup_idle_after
        while True:
            try:
                count = self.sweep(idle_after)
                if count:
                    LOG.info("%s: swept %d active workflow executions", SERVICE, count)
            except StackStormBaseException as exc:
                # Database or bus briefly away: the next round retries.
                LOG.warning("%s sweep failed: %s", SERVICE, exc)
            idle_after = self.idle_after
            if self._stopping.wait(self.sweep_interval):
                return

    def stop(self) -> None:
        """Stop sweeping and consuming; returns once the messages in hand are done (once)."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._sweep_thread is not None:
            self._sweep_thread.wait()
        self.consumer.stop()
        if self._thread is not None:
            self._thread.wait()
        # Task executions left to store (the next write of any engine would store them from their entries).
        self.workflows.flush_all()


def _warm_up() -> None:
    """Build the expression engines now: the first workflow would otherwise wait for them (a second or so)."""
    runtime = expressions.Runtime()
    for expression in ("<% true %>", "{{ true }}"):
        try:
            expressions.evaluate(expression, runtime)
        except expressions.ExpressionEvaluationException as exc:
            LOG.warning("%s: expression engine warm-up failed: %s", SERVICE, exc)


def _serve(service: Service) -> None:
    engine = WorkflowEngineService(service.settings, service.publisher)
    try:
        engine.start()
        service.ready()
        service.wait()
    finally:
        engine.stop()


def main(argv: list[str] | None = None) -> int:
    """Run st2workflowengine."""
    return Service.from_argv(SERVICE, argv).run(_serve)
