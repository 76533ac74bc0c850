"""Console script st2actionrunner: the scheduler and the runners, until SIGTERM.

Start-up: register this worker (heartbeats keep it alive in the registry),
sweep once for what a crash left behind (stuck requests re-published, runs of
dead workers abandoned), then consume requests, scheduled work, cancels and
the updates of completed executions (the notifier), and sweep periodically.
A broadcast queue on the policy exchange keeps the in-memory policy index
(st2common.services.policies.INDEX) current: any policy event forgets it.
Stop: stop consuming, abandon the runs still going (StackStorm's graceful
shutdown), deregister.
"""

import eventlet

eventlet.monkey_patch()

import logging  # noqa: E402

from st2common.models.db.worker import WorkerDB  # noqa: E402
from st2common.persistence.access import Access  # noqa: E402
from st2common.service import Service  # noqa: E402
from st2common.persistence.cache import Forget  # noqa: E402
from st2common.services import executions, sweep, triggers  # noqa: E402
from st2common.services import policies as policy_service  # noqa: E402
from st2common.services.workers import WorkerRegistry  # noqa: E402
from st2common.transport.connection import make_connection  # noqa: E402
from st2common.transport.consumer import Consumer, run_in_background  # noqa: E402
from st2actionrunner.dispatcher import Dispatcher  # noqa: E402
from st2actionrunner.notifier import Notifier  # noqa: E402
from st2actionrunner.scheduler import Scheduler  # noqa: E402

LOG = logging.getLogger(__name__)

SERVICE = "st2actionrunner"
READY_TIMEOUT = 30.0


class ActionRunnerService:
    """The scheduler and dispatcher of one process, on one consumer connection."""

    def __init__(self, settings, publisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self.workers = WorkerRegistry(Access(WorkerDB), settings)
        self.worker_id = self.workers.register(SERVICE)
        self.notifier = Notifier(settings, publisher)
        # The records runs end with go straight to the notifier of this process.
        self.dispatcher = Dispatcher(settings, publisher, self.worker_id, owner_alive=self._owner_alive,
                                     completed=self.notifier.hand_over)
        self.scheduler = Scheduler(publisher, dispatcher=self.dispatcher)
        self.policy_events = Forget(publisher.topology.broadcast_queue("policy"), policy_service.INDEX)
        # The notifier skips the rules engines for a trigger no rule is on (st2actionrunner.actiontriggers).
        rule_events = triggers.rule_handlers(publisher.topology)
        self.consumer = Consumer(make_connection(settings.messaging), publisher,
                                 [self.scheduler, *self.dispatcher.handlers(), self.notifier, self.policy_events,
                                  *rule_events],
                                 max_redeliveries=settings.messaging.max_redeliveries,
                                 pool_size=settings.messaging.prefetch_count)
        self.sweeper: sweep.PeriodicSweep | None = None
        self._thread = None
        self._stopped = False

    def _owner_alive(self, info: dict) -> bool:
        return not self.workers.dead_among({info["worker_id"]})

    def _others_alive(self) -> bool:
        mine = set(self.workers.worker_ids)
        alive = Access(WorkerDB).query({"service": SERVICE})
        others = {w.worker_id for w in alive} - mine
        return bool(others - self.workers.dead_among(others))

    def start(self) -> None:
        """Sweep, then consume; returns once the consumers are registered with the broker."""
        access = executions.access(self.publisher)
        self.notifier.start()
        sweep.sweep_executions(access, self.publisher, self.settings, self.workers)
        self.scheduler.resume_delayed()
        self._thread = run_in_background(self.consumer)
        if not self.consumer.wait_ready(READY_TIMEOUT):
            LOG.warning("%s: consumers not ready after %.0f s; continuing", SERVICE, READY_TIMEOUT)
        else:
            # From here every policy and rule change reaches these caches as an event.
            policy_service.INDEX.watch()
            triggers.RULED.watch()
        self.sweeper = sweep.periodic(access, self.publisher, self.settings, self.workers,
                                      interval=self.settings.scheduler.gc_interval)

    def stop(self) -> None:
        """Stop consuming, abandon what still runs, deregister (once)."""
        if self._stopped:
            return
        self._stopped = True
        if self.sweeper is not None:
            self.sweeper.stop()
        self.consumer.stop()
        self.scheduler.stop()
        abandoned = self.dispatcher.shutdown(others_alive=self._others_alive)
        if abandoned:
            LOG.warning("%s abandoned %d executions on stop", SERVICE, len(abandoned))
        if self._thread is not None:
            self._thread.wait()
        self.workers.deregister()


def _serve(service: Service) -> None:
    runner = ActionRunnerService(service.settings, service.publisher)
    try:
        runner.start()
        service.ready()
        service.wait()
    finally:
        runner.stop()


def main(argv: list[str] | None = None) -> int:
    """Run st2actionrunner."""
    return Service.from_argv(SERVICE, argv).run(_serve)
