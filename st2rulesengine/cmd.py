"""Console script st2rulesengine: match trigger instances against rules until SIGTERM.

Start-up: register the system trigger types, load the rule index, consume
trigger instances (and the rule / trigger events that keep the index
current), load the index again (a rule written while the consumers were
starting), re-publish the trigger instances a previous run left pending, and
start the timers (st2rulesengine.timers) when [timersengine] enable is set.
Then, every SWEEP_INTERVAL seconds (st2rulesengine.sweep): reload the index
whole, re-publish instances pending for longer than STUCK_AFTER (the embedded
bus loses the messages a killed consumer held), and finish instances left
processing for that long by an engine that died.
"""

import eventlet

eventlet.monkey_patch()

import logging  # noqa: E402
import threading  # noqa: E402

from st2common import templating  # noqa: E402
from st2common.exceptions import StackStormBaseException  # noqa: E402
from st2common.service import Service  # noqa: E402
from st2common.services import triggerinstances, triggers, triggertypes  # noqa: E402
from st2common.services.keyvalues import Datastore  # noqa: E402
from st2common.transport.connection import make_connection  # noqa: E402
from st2common.transport.consumer import Consumer, run_in_background  # noqa: E402
from st2rulesengine.enforcer import Enforcer  # noqa: E402
from st2rulesengine.sweep import Sweep  # noqa: E402
from st2rulesengine.timers import TimerEngine  # noqa: E402
from st2rulesengine.worker import RulesEngine  # noqa: E402

LOG = logging.getLogger(__name__)

SERVICE = "st2rulesengine"
READY_TIMEOUT = 30.0
SWEEP_INTERVAL = 10.0
# Longer than a healthy engine takes to pick an instance up, so the sweep rarely duplicates a nudge.
STUCK_AFTER = 30.0


class RulesEngineService:
    """The rules engine of one process: its consumer, rule index and sweep."""

    def __init__(self, settings, publisher, sweep_interval: float = SWEEP_INTERVAL,
                 stuck_after: float = STUCK_AFTER) -> None:
        self.settings = settings
        self.publisher = publisher
        self.sweep_interval = sweep_interval
        self.stuck_after = stuck_after
        datastore = Datastore(settings)
        user = settings.system_user.user

        def lookups() -> dict:
            # Fresh per trigger instance: each render reads a datastore item at most once.
            return templating.st2kv_context(datastore, user)

        prefetch = settings.rulesengine.prefetch_count
        # A quarter of what is in hand to a batch: while one batch waits on the database, the next is matched.
        batch_size = max(1, prefetch // 4)
        self.engine = RulesEngine(publisher, Enforcer(publisher, user=user, lookups=lookups, batch_size=batch_size),
                                  lookups=lookups, batch_size=batch_size)
        self.sweeper = Sweep(self.engine)
        # [timersengine] enable: the timers run in the rules engine (StackStorm's st2timersengine).
        self.timers = (TimerEngine(publisher, settings.timersengine.local_timezone)
                       if settings.timersengine.enable else None)
        handlers = self.engine.handlers() + (self.timers.handlers() if self.timers else [])
        self.consumer = Consumer(make_connection(settings.messaging), publisher, handlers,
                                 max_redeliveries=settings.messaging.max_redeliveries,
                                 pool_size=prefetch)
        self._stopping = threading.Event()
        self._thread = None
        self._sweeping = None
        self._stopped = False

    def start(self) -> None:
        """Load the rules, consume, sweep once; returns once the consumers are registered with the broker."""
        triggerinstances.configure(self.settings)
        triggertypes.register_system_trigger_types(self.publisher)
        self.engine.rules.load()
        self._thread = run_in_background(self.consumer)
        if not self.consumer.wait_ready(READY_TIMEOUT):
            LOG.warning("%s: consumers not ready after %.0f s; continuing", SERVICE, READY_TIMEOUT)
        else:
            # From here every trigger and trigger type change reaches the lookups as an event.
            triggers.LOOKUPS.watch()
        count = self.engine.rules.load()
        LOG.info("%s: %d enabled rules", SERVICE, count)
        self.sweeper.republish_pending()
        if self.timers is not None:
            self.timers.start()
        self._sweeping = eventlet.spawn(self._sweep_forever)

    def sweep(self) -> list[str]:
        """One sweep: reload the rule index, re-publish instances stuck pending, finish those stuck processing.

        The ids of the instances re-published and finished.
        """
        self.engine.rules.load()
        return self.sweeper.republish_pending(self.stuck_after) + self.sweeper.recover_processing(self.stuck_after)

    def _sweep_forever(self) -> None:
        while not self._stopping.wait(self.sweep_interval):
            try:
                self.sweep()
            except StackStormBaseException as exc:
                # Database or bus briefly away: the next round retries.
                LOG.warning("%s sweep failed: %s", SERVICE, exc)

    def stop(self) -> None:
        """Stop sweeping and consuming; returns once the messages in hand are done (once)."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._sweeping is not None:
            self._sweeping.wait()
        if self.timers is not None:
            self.timers.stop()
        self.consumer.stop()
        if self._thread is not None:
            self._thread.wait()


def _serve(service: Service) -> None:
    engine = RulesEngineService(service.settings, service.publisher)
    try:
        engine.start()
        service.ready()
        service.wait()
    finally:
        engine.stop()


def main(argv: list[str] | None = None) -> int:
    """Run st2rulesengine."""
    return Service.from_argv(SERVICE, argv).run(_serve)
